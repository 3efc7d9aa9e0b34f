//! mesh-ca's integration tests, in one binary (one link, not one per file): the authority on
//! disk and the CSR service over real mTLS. Run one topic with `cargo test -p mesh-ca --test it authority::`.

// Helpers outside #[test] functions unwrap too: a failed setup is a failed test.
#![expect(clippy::unwrap_used, reason = "a failed setup is a failed test")]

mod common;

mod authority;
mod csr_service;
