//! helloworld's integration tests, in one binary (one link, not one per file): the server
//! in process and the built binary. Run one topic with `cargo test -p helloworld --test it server::`.

// Helpers outside #[test] functions unwrap too: a failed setup is a failed test.
#![expect(clippy::unwrap_used, reason = "a failed setup is a failed test")]

mod binary;
mod server;
