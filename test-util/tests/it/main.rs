//! The test helpers' own tests, in one binary (one link, not one per file): the Envoy runner
//! and the upstreams. Run one topic with `cargo test -p mesh-test-util --test it upstream::`.

mod envoy;
mod upstream;
