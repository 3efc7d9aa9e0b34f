//! mesh-api's integration tests, in one binary (one link, not one per file): the analyzers,
//! the loader's answers to bad input, Istio's samples and its CRD schemas. Run one topic with
//! `cargo test -p mesh-api --test it analysis::`.

// Helpers outside #[test] functions unwrap too: a failed setup is a failed test.
#![expect(clippy::unwrap_used, reason = "a failed setup is a failed test")]

mod common;

mod analysis;
mod analyzer_inputs;
mod bad_input;
mod samples;
mod schema_matches_istio;
