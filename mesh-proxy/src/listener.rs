//! Accept loops: each accepted connection gets the listener configuration
//! in force at that moment, is handed to the listener owning its original
//! destination when `use_original_dst` says so, is inspected (TLS hello or
//! plaintext, SNI, ALPN; HTTP version), and runs the network filter of the
//! filter chain that matches it, behind TLS when the chain terminates it.
//! A connection no chain matches is closed and counted
//! (`listener.<addr>.no_filter_chain_match`), as Envoy does: that is how a
//! STRICT inbound listener refuses plaintext.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::filter_chain::{self, ConnectionFacts};
use crate::model::{ListenerConfig, NetworkFilter, Snapshot};
use crate::server::Shared;
use crate::stats::Scope;

/// How long the HTTP inspector waits for the first bytes of a connection.
pub const HTTP_INSPECTOR_TIMEOUT: Duration = Duration::from_millis(500);

pub async fn accept_loop(shared: Arc<Shared>, name: String, listener: TcpListener) {
    let mut shutdown = shared.shutdown.subscribe();
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let cx_total = shared
        .stats
        .counter(&Scope::listener(&local), "downstream_cx_total");
    let cx_overflow = shared
        .stats
        .counter(&Scope::listener(&local), "downstream_global_cx_overflow");
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = crate::server::stopped(&mut shutdown) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                cx_total.inc();
                let permit = match &shared.connection_limit {
                    Some(limit) if !ignores_global_limit(&shared, &name) => {
                        match limit.try_acquire() {
                            Some(p) => Some(p),
                            None => {
                                // Closed at once, as Envoy does past the limit.
                                cx_overflow.inc();
                                tracing::debug!(listener = %name, %peer, max = limit.max(), "global downstream connection limit reached: connection closed");
                                drop(stream);
                                continue;
                            }
                        }
                    }
                    _ => None,
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    handle_connection(shared, name, stream, peer).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off a little
                // rather than spin.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn ignores_global_limit(shared: &Shared, name: &str) -> bool {
    shared
        .active
        .load()
        .snapshot
        .listeners
        .get(name)
        .is_some_and(|l| l.ignore_global_conn_limit)
}

async fn handle_connection(shared: Arc<Shared>, name: String, stream: TcpStream, peer: SocketAddr) {
    let active = shared.active.load_full();
    let Some(mut listener) = active.snapshot.listeners.get(&name).cloned() else {
        return;
    };
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let mut destination = local;
    if listener.use_original_dst
        && let Some(original) = crate::original_dst::original_destination(&stream)
        && original != local
    {
        destination = original;
        if let Some(owner) = listener_for(&active.snapshot, original, &name) {
            tracing::debug!(from = %name, to = %owner.name, %original, "handing connection to original destination listener");
            listener = owner;
        }
    }
    // tls_inspector first: TLS or plaintext, SNI and ALPN offer.
    let hello = if listener.inspect_tls {
        crate::tls::hello::inspect(&stream).await
    } else {
        crate::tls::hello::Inspected::default()
    };
    let alpn = if hello.is_tls {
        hello.alpn.clone()
    } else if listener.inspect_http {
        inspect_http(&stream).await
    } else {
        Vec::new()
    };
    let facts = ConnectionFacts {
        destination,
        source: peer,
        server_name: hello.server_name.as_deref(),
        transport_protocol: if hello.is_tls { "tls" } else { "raw_buffer" },
        application_protocols: &alpn,
    };
    let local_scope = local.to_string();
    let Some(chain) = filter_chain::select(&listener, &facts) else {
        shared
            .stats
            .counter(&Scope::listener(&local_scope), "no_filter_chain_match")
            .inc();
        let requires_tls = !hello.is_tls
            && !listener.filter_chains.is_empty()
            && listener
                .filter_chains
                .iter()
                .all(|c| c.tls.is_some() || c.matcher.transport_protocol.as_deref() == Some("tls"));
        if requires_tls {
            tracing::info!(
                listener = %listener.name, %peer, %destination,
                "plaintext connection refused: listener {} requires TLS (STRICT)",
                listener.name
            );
        } else {
            tracing::info!(
                listener = %listener.name, %peer, %destination,
                transport = facts.transport_protocol,
                sni = hello.server_name.as_deref().unwrap_or("-"),
                alpn = ?alpn,
                "no filter chain matches; closing"
            );
        }
        return;
    };
    let stream = match &chain.tls {
        Some(tls) => {
            let site = crate::tls::downstream::HandshakeSite {
                stats: &shared.stats,
                listener_addr: &local_scope,
                listener_name: &listener.name,
                peer,
            };
            match crate::tls::downstream::terminate(&shared.tls, &site, tls, &alpn, stream).await {
                Some(s) => s,
                None => return,
            }
        }
        None => crate::tls::DownstreamStream::plain(stream),
    };
    match &chain.filter {
        NetworkFilter::Http(hcm) => {
            crate::http::conn_manager::serve(
                shared.clone(),
                hcm.clone(),
                stream,
                peer,
                destination,
            )
            .await;
        }
        NetworkFilter::Tcp(tcp) => {
            crate::tcp_proxy::serve(shared.clone(), tcp.clone(), stream, peer, destination).await;
        }
    }
}

/// The listener owning `destination`: exact address first, then a wildcard
/// address on the same port.
fn listener_for(
    snapshot: &Snapshot,
    destination: SocketAddr,
    except: &str,
) -> Option<Arc<ListenerConfig>> {
    let candidates = || snapshot.listeners.values().filter(|l| l.name != except);
    candidates()
        .find(|l| l.address == destination)
        .or_else(|| {
            candidates()
                .find(|l| l.address.ip().is_unspecified() && l.address.port() == destination.port())
        })
        .cloned()
}

/// Envoy's HTTP inspector: `h2c` for the HTTP/2 preface, `http/1.1` for a
/// request line, nothing otherwise (or when the client stays silent).
async fn inspect_http(stream: &TcpStream) -> Vec<String> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; 64];
    let deadline = tokio::time::Instant::now() + HTTP_INSPECTOR_TIMEOUT;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return Vec::new(),
        };
        let seen = &buf[..n];
        if n == 0 {
            return Vec::new();
        }
        if seen.starts_with(PREFACE) {
            return vec!["h2c".into()];
        }
        if !PREFACE.starts_with(seen) {
            if let Some(sp) = seen.iter().position(|b| *b == b' ') {
                let method = &seen[..sp];
                let is_token = !method.is_empty() && method.iter().all(|b| b.is_ascii_uppercase());
                return if is_token {
                    vec!["http/1.1".into()]
                } else {
                    Vec::new()
                };
            }
            if n == buf.len() {
                return Vec::new();
            }
        }
        // Too few bytes to decide: peek again once more may have arrived.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
