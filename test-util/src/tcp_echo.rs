use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::upstream::echo;

/// A TCP server on 127.0.0.1:0 that writes back every byte it reads, and closes its side
/// when the client closes its own. Stops with every connection on drop.
#[derive(Debug)]
pub struct TcpEchoUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl TcpEchoUpstream {
    pub async fn start() -> anyhow::Result<TcpEchoUpstream> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let connections = connections.clone();
            let bytes = bytes.clone();
            async move {
                let mut open = JoinSet::new();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            connections.fetch_add(1, Ordering::SeqCst);
                            let bytes = bytes.clone();
                            open.spawn(async move {
                                if let Ok(n) = echo(stream).await {
                                    bytes.fetch_add(n, Ordering::SeqCst);
                                }
                            });
                        }
                        Some(_) = open.join_next(), if !open.is_empty() => {}
                    }
                }
            }
        });
        Ok(TcpEchoUpstream {
            addr,
            connections,
            bytes,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections_total(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Bytes echoed on connections that have finished cleanly.
    pub fn bytes_echoed(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }
}

impl Drop for TcpEchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
