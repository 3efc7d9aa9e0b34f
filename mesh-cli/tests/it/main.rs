//! meshctl's integration tests, in one binary (one link, not one per file): the real `meshctl`
//! on real files, and end to end with `meshctl up` starting real processes. Run one topic with
//! `cargo test -p mesh-cli --test it explain::`.

// Helpers outside #[test] functions unwrap too: a failed setup is a failed test.
#![expect(clippy::unwrap_used, reason = "a failed setup is a failed test")]

mod analyze;
mod cli_analyze_mesh_dir;
mod examples_e2e;
mod explain;
mod kubernetes;
mod proxy_status;
mod readme_literal;
mod up_bootstrap;
mod up_e2e;
