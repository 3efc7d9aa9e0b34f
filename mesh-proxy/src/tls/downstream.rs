//! Terminating TLS on an accepted connection whose filter chain has a
//! `DownstreamTlsContext`: handshake with the secrets in force, count and
//! log failures with their reason, and describe the verified peer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::TlsContexts;
use super::stream::{DownstreamIo, MaybeTls};
use super::verify::{FailureKind, cert_names, classify};
use crate::model::DownstreamTls;
use crate::stats::{Scope, Stats};

/// How long a downstream TLS handshake may take.
pub const DOWNSTREAM_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The verified client certificate of a connection.
#[derive(Debug, Clone, Default)]
pub struct PeerCertificate {
    /// The first URI SAN (the SPIFFE ID in a mesh).
    pub uri: Option<String>,
    pub dns: Vec<String>,
    pub subject: String,
    /// SHA-256 of the leaf's DER, lower-case hex (XFCC `Hash=`).
    pub sha256_hex: String,
}

/// What TLS said about a downstream connection.
#[derive(Debug, Clone, Default)]
pub struct DownstreamTlsInfo {
    pub peer: Option<PeerCertificate>,
    /// Our own URI SAN on this connection (XFCC `By=`).
    pub local_uri: Option<String>,
    pub alpn: Option<String>,
    pub server_name: Option<String>,
    /// `TLSv1.2` / `TLSv1.3`, as Envoy's `%DOWNSTREAM_TLS_VERSION%` prints it.
    pub version: Option<&'static str>,
    /// The suite by its OpenSSL name, as Envoy's `%DOWNSTREAM_TLS_CIPHER%`
    /// prints it (`TLS_AES_128_GCM_SHA256`, `ECDHE-ECDSA-AES128-GCM-SHA256`).
    pub cipher: Option<&'static str>,
}

/// A downstream connection after its transport socket.
#[derive(Debug)]
pub struct DownstreamStream {
    pub io: DownstreamIo,
    pub tls: Option<Arc<DownstreamTlsInfo>>,
}

impl DownstreamStream {
    pub fn plain(stream: TcpStream) -> DownstreamStream {
        DownstreamStream {
            io: MaybeTls::Plain(stream),
            tls: None,
        }
    }
}

/// Where a handshake happens, for its stats and log lines.
pub struct HandshakeSite<'a> {
    pub stats: &'a Stats,
    /// The listener's bound address (Envoy's `listener.<addr>.` scope).
    pub listener_addr: &'a str,
    pub listener_name: &'a str,
    pub peer: SocketAddr,
}

/// Runs the server handshake; `None` when it failed (the connection is
/// dropped, which closes it, after the failure is logged and counted).
pub async fn terminate(
    contexts: &TlsContexts,
    site: &HandshakeSite<'_>,
    tls: &DownstreamTls,
    offered_alpn: &[String],
    stream: TcpStream,
) -> Option<DownstreamStream> {
    let scope = Scope::listener(site.listener_addr);
    let fail = |kind: FailureKind, reason: &str| {
        site.stats.counter(&scope, "ssl.connection_error").inc();
        if let Some(stat) = kind.stat() {
            site.stats.counter(&scope, stat).inc();
        }
        tracing::info!(
            listener = %site.listener_name,
            peer = %site.peer,
            %reason,
            "downstream TLS handshake failed"
        );
    };
    let context = match contexts.server(tls) {
        Ok(c) => c,
        Err(e) => {
            fail(FailureKind::Other, &e.to_string());
            return None;
        }
    };
    let mut config = context.config.clone();
    // rustls refuses a hello whose ALPN offer shares nothing with ours
    // (RFC 7301); Envoy carries on without ALPN, so do the same: Istio
    // clients offer `istio-peer-exchange`/`istio` only to HTTP/1.1 servers.
    if !config.alpn_protocols.is_empty()
        && !offered_alpn.is_empty()
        && !config
            .alpn_protocols
            .iter()
            .any(|p| offered_alpn.iter().any(|o| o.as_bytes() == p.as_slice()))
    {
        let mut c = (*config).clone();
        c.alpn_protocols.clear();
        config = Arc::new(c);
    }
    let accepted = tokio::time::timeout(
        DOWNSTREAM_HANDSHAKE_TIMEOUT,
        TlsAcceptor::from(config).accept(stream),
    )
    .await;
    let tls_stream = match accepted {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let failure = classify(&e);
            fail(failure.kind, &failure.reason);
            return None;
        }
        Err(_) => {
            fail(
                FailureKind::Other,
                &format!("handshake not done within {DOWNSTREAM_HANDSHAKE_TIMEOUT:?}"),
            );
            return None;
        }
    };
    site.stats.counter(&scope, "ssl.handshake").inc();
    let (_, conn) = tls_stream.get_ref();
    let peer = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|leaf| {
            let names = cert_names(leaf);
            PeerCertificate {
                uri: names.uris.into_iter().next(),
                dns: names.dns,
                subject: names.subject,
                sha256_hex: super::sha256_hex(leaf.as_ref()),
            }
        });
    if peer.is_none() {
        // TLS without a client certificate (allowed when not required).
        site.stats.counter(&scope, "ssl.no_certificate").inc();
    }
    let info = DownstreamTlsInfo {
        peer,
        local_uri: context.local_uri.clone(),
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        server_name: conn.server_name().map(str::to_string),
        version: conn.protocol_version().map(super::version_name),
        cipher: conn
            .negotiated_cipher_suite()
            .map(|s| super::cipher_name(s.suite())),
    };
    super::count_session(site.stats, &scope, conn);
    tracing::debug!(
        listener = %site.listener_name,
        peer = %site.peer,
        peer_identity = info.peer.as_ref().and_then(|p| p.uri.as_deref()).unwrap_or("-"),
        alpn = info.alpn.as_deref().unwrap_or("-"),
        "downstream TLS established"
    );
    Some(DownstreamStream {
        io: MaybeTls::Tls(Box::new(tls_stream)),
        tls: Some(Arc::new(info)),
    })
}
