//! helloworld's integration tests, in one binary (one link, not one per file): the server
//! in process and the built binary. Run one topic with `cargo test -p helloworld --test it server::`.

mod binary;
mod server;
