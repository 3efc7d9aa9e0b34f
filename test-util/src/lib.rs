//! Helpers shared by the mesh's tests: real upstream servers on 127.0.0.1:0
//! that record what they receive and fail, stall or reset on command, a
//! launcher for the real Envoy, and waits that retry an assertion.
