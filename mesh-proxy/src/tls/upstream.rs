//! Originating TLS to an upstream host for a cluster (or a
//! `transport_socket_matches` entry) with an `UpstreamTlsContext`.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::TlsContexts;
use super::verify::classify;
use crate::model::UpstreamTls;
use crate::stats::{Counter, Scope, Stats};

/// `cluster.<name>.ssl.*` counters.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTlsStats {
    pub handshake: Counter,
    pub connection_error: Counter,
    pub fail_verify_san: Counter,
    pub fail_verify_error: Counter,
    pub fail_verify_no_cert: Counter,
    /// For the counters named as sessions are made (`ssl.versions.*`).
    registry: Stats,
    scope: Option<Scope>,
}

impl UpstreamTlsStats {
    pub fn new(stats: &Stats, cluster: &str) -> UpstreamTlsStats {
        let s = Scope::cluster(cluster);
        UpstreamTlsStats {
            handshake: stats.counter(&s, "ssl.handshake"),
            connection_error: stats.counter(&s, "ssl.connection_error"),
            fail_verify_san: stats.counter(&s, "ssl.fail_verify_san"),
            fail_verify_error: stats.counter(&s, "ssl.fail_verify_error"),
            fail_verify_no_cert: stats.counter(&s, "ssl.fail_verify_no_cert"),
            registry: stats.clone(),
            scope: Some(s),
        }
    }
}

/// How one endpoint's connections are secured: its pool owns one, so TLS
/// and plaintext connections to one address never share a pool.
#[derive(Debug)]
pub struct UpstreamTransport {
    pub tls: UpstreamTls,
    fingerprint: String,
    contexts: Arc<TlsContexts>,
    stats: UpstreamTlsStats,
}

impl PartialEq for UpstreamTransport {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for UpstreamTransport {}

impl UpstreamTransport {
    pub fn new(tls: UpstreamTls, contexts: Arc<TlsContexts>, stats: UpstreamTlsStats) -> Self {
        UpstreamTransport {
            fingerprint: format!("{tls:?}"),
            tls,
            contexts,
            stats,
        }
    }

    /// The TLS handshake over a connected socket, within `timeout` (the
    /// cluster's `connect_timeout`: Envoy counts a TLS connection as
    /// connected once its handshake is done). `http2` says which HTTP the
    /// pool will speak, so ALPN never offers the other one. The error is a
    /// reason for logs and local replies.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        address: SocketAddr,
        http2: Option<bool>,
        timeout: std::time::Duration,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let default_alpn: &[&str] = match http2 {
            Some(true) => &["h2"],
            Some(false) => &["http/1.1"],
            None => &[],
        };
        let mut tls = self.tls.clone();
        if http2 == Some(false) {
            tls.alpn_protocols.retain(|p| p != "h2");
        }
        let config = self.contexts.client(&tls, default_alpn).map_err(|e| {
            self.stats.connection_error.inc();
            tracing::info!(%address, reason = %e, "upstream TLS not possible");
            e.to_string()
        })?;
        // No SNI configured (or not a DNS name): connect by IP address, for
        // which rustls sends no SNI, as Envoy without `sni` does.
        let name = self
            .tls
            .sni
            .as_ref()
            .and_then(|sni| ServerName::try_from(sni.clone()).ok())
            .unwrap_or_else(|| ServerName::IpAddress(address.ip().into()));
        let connecting = TlsConnector::from(config).connect(name, tcp);
        let Ok(result) = tokio::time::timeout(timeout, connecting).await else {
            self.stats.connection_error.inc();
            let reason = format!("handshake not done within {timeout:?}");
            tracing::info!(%address, %reason, "upstream TLS handshake failed");
            return Err(reason);
        };
        match result {
            Ok(s) => {
                self.stats.handshake.inc();
                if let Some(scope) = &self.stats.scope {
                    super::count_session(&self.stats.registry, scope, s.get_ref().1);
                }
                Ok(s)
            }
            Err(e) => {
                let failure = classify(&e);
                self.stats.connection_error.inc();
                match failure.kind {
                    super::verify::FailureKind::SanMismatch => self.stats.fail_verify_san.inc(),
                    super::verify::FailureKind::VerifyError => self.stats.fail_verify_error.inc(),
                    super::verify::FailureKind::NoCertificate => {
                        self.stats.fail_verify_no_cert.inc()
                    }
                    super::verify::FailureKind::Other => {}
                }
                tracing::info!(%address, reason = %failure.reason, "upstream TLS handshake failed");
                Err(failure.reason)
            }
        }
    }
}
