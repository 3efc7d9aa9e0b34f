//! xtask's integration tests, one binary: the chaos round and the CRDs it writes.

mod chaos;
mod crds;
