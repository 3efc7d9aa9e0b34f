//! mesh-ca's integration tests, in one binary (one link, not one per file): the authority on
//! disk and the CSR service over real mTLS. Run one topic with `cargo test -p mesh-ca --test it authority::`.

mod common;

mod authority;
mod csr_service;
