//! `request_headers_timeout` for connections that never start a request.
//! hyper times an HTTP/1 request head once it starts reading one, but with
//! the protocol detected from the first bytes (HTTP/1 or h2), a connection
//! that sends nothing never reaches hyper's timer: it would be held for the
//! hour of the idle timeout, a file descriptor each. [`FirstByte`] marks the
//! first byte read from the client; the connection manager closes a
//! connection whose first byte did not come within the timeout.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Set once the client sent its first byte.
#[derive(Debug, Default)]
pub struct FirstByteSeen {
    seen: AtomicBool,
    notify: Notify,
}

impl FirstByteSeen {
    fn mark(&self) {
        if !self.seen.swap(true, Ordering::AcqRel) {
            self.notify.notify_one();
        }
    }

    /// Resolves when no byte came within `timeout`; never resolves once one
    /// did (or without a timeout).
    pub async fn missed(&self, timeout: Option<Duration>) {
        let Some(timeout) = timeout else {
            return std::future::pending().await;
        };
        let first = async {
            if !self.seen.load(Ordering::Acquire) {
                self.notify.notified().await;
            }
        };
        if tokio::time::timeout(timeout, first).await.is_ok() {
            std::future::pending::<()>().await;
        }
    }
}

/// The client's stream, marking [`FirstByteSeen`] on the first byte read.
pub struct FirstByte<S> {
    inner: S,
    seen: Arc<FirstByteSeen>,
}

impl<S> FirstByte<S> {
    pub fn new(inner: S) -> (FirstByte<S>, Arc<FirstByteSeen>) {
        let seen = Arc::new(FirstByteSeen::default());
        (
            FirstByte {
                inner,
                seen: seen.clone(),
            },
            seen,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstByte<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.seen.mark();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstByte<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_silent_client_misses_and_a_talking_one_does_not() {
        let (client, server) = tokio::io::duplex(64);
        let (mut server, seen) = FirstByte::new(server);
        let timeout = Some(Duration::from_millis(50));
        tokio::time::timeout(Duration::from_secs(5), seen.missed(timeout))
            .await
            .expect("no byte: missed");

        let mut client = client;
        client.write_all(b"G").await.unwrap();
        let mut b = [0u8; 1];
        server.read_exact(&mut b).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(200), seen.missed(timeout)).await;
        assert!(waited.is_err(), "a byte came: never missed");
    }
}
