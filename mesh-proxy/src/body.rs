//! The one body type that flows through the proxy, in both directions.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Request and response bodies after they enter the proxy: a downstream or
/// upstream `Incoming`, or a locally generated one.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn boxed<B>(body: B) -> ProxyBody
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// A failure reading the downstream request body (a malformed chunked
/// encoding, a client that went away mid-body). It travels inside the
/// upstream client's error when the body was streaming, so that the attempt
/// can tell a client's fault from the upstream's: it must never count
/// against the host (outlier detection, `rq_error`).
#[derive(Debug, thiserror::Error)]
#[error("downstream request body: {source}")]
pub struct DownstreamBodyError {
    #[source]
    pub source: hyper::Error,
}

impl DownstreamBodyError {
    /// The client closed its connection before the body ended (Envoy's
    /// `DC`), as opposed to sending bytes that are not HTTP (`DPE`).
    pub fn client_gone(&self) -> bool {
        self.source.is_incomplete_message() || self.source.is_canceled()
    }

    /// The first `DownstreamBodyError` in `error`'s source chain.
    pub fn find<'a>(
        error: &'a (dyn std::error::Error + 'static),
    ) -> Option<&'a DownstreamBodyError> {
        let mut e = Some(error);
        while let Some(err) = e {
            if let Some(found) = err.downcast_ref::<DownstreamBodyError>() {
                return Some(found);
            }
            e = err.source();
        }
        None
    }
}

/// The downstream request body, its errors marked as the client's.
pub fn downstream(body: hyper::body::Incoming) -> ProxyBody {
    body.map_err(|source| -> BoxError { Box::new(DownstreamBodyError { source }) })
        .boxed()
}
