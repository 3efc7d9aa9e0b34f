//! Helpers shared by the mesh's tests: real upstream servers on 127.0.0.1:0
//! that record what they receive and fail, stall or reset on command, a
//! launcher for the real Envoy, and waits that retry an assertion.
//!
//! - [`HttpUpstream`]: HTTP/1.1 and h2 (prior knowledge) server; records requests, counts
//!   connections, behaviour switchable at runtime ([`Behavior`]); accepts
//!   `Upgrade: websocket` and then echoes raw bytes.
//! - [`TcpEchoUpstream`]: echoes every byte, counts connections.
//! - [`HttpClient`] (pooled, HTTP/1 or h2) and [`send`]/[`send_h2`] (one fresh connection,
//!   request sent exactly as given) returning a collected [`Response`].
//! - [`wait_until`] (async) and [`block_until`] (blocking): retry a check until it passes or a
//!   timeout expires.
//! - [`MeshCtl`]: a local mesh run by the real `meshctl` in a state directory of its own.
//! - [`envoy_binary`], [`EnvoyProcess`]: run the real Envoy from a bootstrap string.
//! - [`AdsBootstrap`]: the bootstrap of a proxy served by one ADS server (mesh-proxy or Envoy);
//!   [`StaticBootstrap`]: one with a static listener and clusters, for interop tests.
//! - [`kube::KubeApiServer`]: a real kube-apiserver and etcd on 127.0.0.1; [`kubelet::Kubelet`]:
//!   the kubelet's port-forward endpoint it calls, for `kubectl port-forward`-style tests.
//! - [`free_port`]: a port that was free a moment ago, for config files that cannot say
//!   "port 0".
//!
//! Everything here shuts down on drop, so a failing test never leaks a server or a process.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup is a failed test"
)]

mod bootstrap;
mod client;
mod envoy;
pub mod kube;
pub mod kubelet;
mod meshctl;
mod ports;
mod static_bootstrap;
mod tcp_echo;
mod upstream;
mod wait;

pub use bootstrap::AdsBootstrap;
pub use client::{HttpClient, Response, send, send_h2};
pub use envoy::{EnvoyProcess, REQUIRE_ENVOY_VAR, envoy_binary};
pub use meshctl::MeshCtl;
pub use ports::free_port;
pub use static_bootstrap::StaticBootstrap;
pub use tcp_echo::TcpEchoUpstream;
pub use upstream::{Behavior, HttpUpstream, RecordedRequest};
pub use wait::{Outcome, block_until, wait_until};
