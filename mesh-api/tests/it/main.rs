//! mesh-api's integration tests, in one binary (one link, not one per file): the analyzers,
//! the loader's answers to bad input, Istio's samples and its CRD schemas. Run one topic with
//! `cargo test -p mesh-api --test it analysis::`.

mod common;

mod analysis;
mod analyzer_inputs;
mod bad_input;
mod samples;
mod schema_matches_istio;
