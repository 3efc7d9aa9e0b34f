//! The mesh's sample app, modelled on Istio's helloworld sample: a small HTTP/1.1 and h2
//! (prior knowledge, detected per connection) server whose answers say which version and
//! instance served them, so traffic splits are visible from the client. It can also be told
//! to be slow or to fail a share of requests, giving the resilience examples (timeouts,
//! retries, outlier detection) something to act on.
//!
//! Endpoints: `GET /istio` and `GET /hello` answer `Hello version: V, instance: I`;
//! `GET /headers` echoes the request headers sorted, one `name: value` per line;
//! `GET /healthz` is always 200 (neither delayed nor failed). Anything else is 404.
//!
//! [`build`] binds (port 0 allowed) and returns a [`Bound`] server holding its real address;
//! [`Bound::run`] serves until a shutdown signal, then drains open connections.

mod config;
mod server;

pub use config::{
    Args, Config, ConfigError, DEFAULT_ADDRESS, DEFAULT_PORT, DEFAULT_VERSION, parse_duration,
};
pub use server::{Bound, build};
