//! The HTTP side of the proxy: the connection manager and the stages a
//! request passes through, one module each.
//!
//! ```text
//! conn_manager (hyper server; connection_lifetime: idle, max duration)
//!   --> request_check (Envoy's codec checks: method, Host; 400 DPE)
//!   --> stream_timeout (stream idle 408/504 SI, request_timeout 408)
//!   --> router::select (virtual host, route)
//!   --> headers (request id, forwarding, mutations)
//!   --> fault (delay DI, abort FI; before anything goes upstream)
//!   --> forward (cluster choice, request hash, rewrites, mirror copies)
//!     --> timeout (route timeout, 504 UT)
//!       --> retry (per-try timeout, backoff, budget, URX)
//!         --> attempt (pick avoiding ejected/previous hosts, 503 UH;
//!             circuit breaker 503 UO; connection pool, 503 UF/UC)
//! ```

pub mod attempt;
pub mod conn_manager;
pub mod connection_lifetime;
pub mod explain;
pub mod fault;
pub mod forward;
pub mod headers;
pub mod headers_timeout;
pub mod local_reply;
pub mod matcher;
pub mod mirror;
pub mod reason_header;
pub mod request_check;
pub mod retry;
pub mod router;
pub mod stream_timeout;
pub mod timeout;
