//! A body wrapper that counts the bytes passing through and runs a
//! completion hook when the body is dropped (fully sent, or abandoned).
//! The access log and per-request gauges hang off it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody};

type Hook = Box<dyn FnOnce(u64) + Send + Sync>;

pub struct ObservedBody {
    inner: ProxyBody,
    bytes: Arc<AtomicU64>,
    on_done: Option<Hook>,
}

impl ObservedBody {
    pub fn new(inner: ProxyBody, bytes: Arc<AtomicU64>) -> ObservedBody {
        ObservedBody {
            inner,
            bytes,
            on_done: None,
        }
    }

    /// `hook` receives the byte count when the body is dropped.
    pub fn on_done(mut self, hook: impl FnOnce(u64) + Send + Sync + 'static) -> ObservedBody {
        self.on_done = Some(Box::new(hook));
        self
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        if let Some(hook) = self.on_done.take() {
            hook(self.bytes.load(Ordering::Relaxed));
        }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
