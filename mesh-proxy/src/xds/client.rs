//! The connection loop: connect, stream, apply, and reconnect with backoff.
//! The runtime is never touched when the stream breaks, so the proxy keeps
//! serving what it has.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::{Channel, Endpoint};

use super::state::XdsState;
use super::{AdsClientConfig, AdsStatus, Backoff, ConfigSink, XdsTransport};
use crate::identity::CERTIFICATE_SECRET;
use crate::model::{TlsCertificateSource, UpstreamTls};
use crate::tls::{TlsContexts, UpstreamTransport};

/// HTTP/2 PINGs so that a control plane that vanished without closing the
/// connection is noticed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// A stream that lasted this long was healthy: the next reconnect starts
/// from the initial backoff again.
const HEALTHY_STREAM: Duration = Duration::from_secs(5);
/// xDS responses of a large mesh exceed gRPC's 4 MiB default.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("connect {cluster} at {addr}: {}", error_chain(.source))]
    Connect {
        cluster: String,
        addr: SocketAddr,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("connect {cluster} at {addr}: {source}")]
    Tcp {
        cluster: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed: the reason names the certificate problem
    /// (unknown root, identity not accepted, missing secret, ...).
    #[error("connect {cluster} at {addr}: TLS handshake failed: {reason}")]
    Handshake {
        cluster: String,
        addr: SocketAddr,
        reason: String,
    },
    #[error("ADS stream to {addr}: {} ({:?})", .status.message(), .status.code())]
    Status {
        addr: SocketAddr,
        status: tonic::Status,
    },
    #[error("ADS stream to {addr} closed by the server")]
    Closed { addr: SocketAddr },
    #[error("initial_metadata {key:?} cannot be sent as gRPC metadata")]
    Metadata { key: String },
}

impl StreamError {
    /// The control plane refused who the stream is (bad token, wrong
    /// identity): retrying helps only once the credentials change.
    pub fn is_refusal(&self) -> bool {
        matches!(self, StreamError::Status { status, .. }
            if matches!(status.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied))
    }
}

/// `error: cause: cause`, as tonic's transport errors say little on top.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Runs until the task is aborted.
pub async fn run<S: ConfigSink>(
    config: AdsClientConfig,
    sink: S,
    status: watch::Sender<AdsStatus>,
) {
    let mut state = XdsState::new(
        config.static_snapshot.clone(),
        config.cds,
        config.lds,
        config.warming_timeout,
    );
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    // One cache of TLS configurations for the client's life: rebuilt when a
    // secret (the workload certificate) changes.
    let contexts = Arc::new(TlsContexts::new(config.secrets.clone()));
    let mut server = 0usize;
    loop {
        let addr = config.servers[server % config.servers.len()];
        let started = Instant::now();
        let err = match stream_once(&config, &contexts, addr, &mut state, &sink, &status).await {
            Ok(never) => match never {},
            Err(e) => e,
        };
        status.send_modify(|s| {
            s.connected = false;
            s.last_error = Some(err.to_string());
        });
        if started.elapsed() >= HEALTHY_STREAM {
            backoff.reset();
        }
        if matches!(
            err,
            StreamError::Connect { .. } | StreamError::Tcp { .. } | StreamError::Handshake { .. }
        ) {
            server = server.wrapping_add(1);
        }
        let delay = backoff.next_delay();
        if err.is_refusal() {
            tracing::warn!(cluster = %config.cluster, error = %err, retry_in = ?delay, "xDS: the control plane refused the stream's credentials; serving the last configuration");
        } else {
            tracing::warn!(cluster = %config.cluster, error = %err, retry_in = ?delay, "xDS: control plane unreachable; serving the last configuration");
        }
        tokio::time::sleep(delay).await;
    }
}

async fn connect(
    config: &AdsClientConfig,
    contexts: &Arc<TlsContexts>,
    addr: SocketAddr,
) -> Result<Channel, StreamError> {
    let err = |source| StreamError::Connect {
        cluster: config.cluster.clone(),
        addr,
        source,
    };
    // An IP address always makes a valid URI; with TLS the scheme only
    // shapes the `:scheme` header (the connector below does the TLS).
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(err)?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    match &config.transport {
        XdsTransport::Plaintext => endpoint.connect().await.map_err(err),
        XdsTransport::Tls(tls) => {
            // The handshake is done here rather than inside tonic's
            // connector, so that its failure reaches the log with its reason.
            let io = tls_connect(config, contexts, tls, addr).await?;
            let slot = Arc::new(Mutex::new(Some(io)));
            let connector = tower::service_fn(move |_: http::Uri| {
                let io = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                async move {
                    // A channel whose connection broke would reconnect here;
                    // the stream has failed by then and `run` reconnects.
                    io.ok_or_else(|| std::io::Error::other("the ADS connection is gone"))
                }
            });
            endpoint
                .connect_with_connector(connector)
                .await
                .map_err(err)
        }
    }
}

/// TCP, then TLS as the ADS cluster's context says, through the proxy's
/// TLS layer (the same verifier and counters as any upstream cluster).
async fn tls_connect(
    config: &AdsClientConfig,
    contexts: &Arc<TlsContexts>,
    tls: &UpstreamTls,
    addr: SocketAddr,
) -> Result<hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, StreamError> {
    let tcp_err = |source| StreamError::Tcp {
        cluster: config.cluster.clone(),
        addr,
        source,
    };
    let tcp = tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| {
            tcp_err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("not connected within {:?}", config.connect_timeout),
            ))
        })?
        .map_err(tcp_err)?;
    tcp.set_nodelay(true).map_err(tcp_err)?;
    let transport = UpstreamTransport::new(
        with_workload_certificate(tls, config),
        contexts.clone(),
        config.tls_stats.clone(),
    );
    let stream = transport
        .handshake(tcp, addr, Some(true), config.connect_timeout)
        .await
        .map_err(|reason| StreamError::Handshake {
            cluster: config.cluster.clone(),
            addr,
            reason,
        })?;
    Ok(hyper_util::rt::TokioIo::new(stream))
}

/// The context as configured, plus the proxy's workload certificate when
/// the context names none and the identity manager installed one: the
/// control plane then authenticates the stream by certificate too (Envoy
/// cannot do this, as it receives its certificate over this very stream).
/// Only a local `default` counts: a static one (bench, interop tests) may
/// come from another CA, which the control plane would refuse.
fn with_workload_certificate(tls: &UpstreamTls, config: &AdsClientConfig) -> UpstreamTls {
    let mut tls = tls.clone();
    if tls.certificate.is_none()
        && config
            .secrets
            .local_names()
            .iter()
            .any(|n| n == CERTIFICATE_SECRET)
    {
        tls.certificate = Some(TlsCertificateSource::Sds(CERTIFICATE_SECRET.to_string()));
    }
    tls
}

/// The bootstrap's `initial_metadata` on the stream's request.
fn with_metadata<T>(
    config: &AdsClientConfig,
    message: T,
) -> Result<tonic::Request<T>, StreamError> {
    let mut request = tonic::Request::new(message);
    for m in &config.initial_metadata {
        let bad = || StreamError::Metadata { key: m.key.clone() };
        let key = AsciiMetadataKey::from_bytes(m.key.as_bytes()).map_err(|_| bad())?;
        let mut value = AsciiMetadataValue::try_from(m.value.as_str()).map_err(|_| bad())?;
        // Kept out of HPACK's dynamic table, as for any credential.
        value.set_sensitive(true);
        request.metadata_mut().append(key, value);
    }
    Ok(request)
}

enum Never {}

/// One stream, from connect to its end (always an error: the server does
/// not end ADS streams on its own).
async fn stream_once<S: ConfigSink>(
    config: &AdsClientConfig,
    contexts: &Arc<TlsContexts>,
    addr: SocketAddr,
    state: &mut XdsState,
    sink: &S,
    status: &watch::Sender<AdsStatus>,
) -> Result<Never, StreamError> {
    let channel = connect(config, contexts, addr).await?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::unbounded_channel::<DiscoveryRequest>();
    let mut out = Outbox {
        tx,
        node: &config.node,
        node_sent: false,
        every_message: !config.set_node_on_first_message_only,
    };
    // The opening requests are queued before the call, so the first
    // message of the stream carries the node.
    for req in state.initial_requests() {
        out.send(req);
    }
    let status_err = |status| StreamError::Status { addr, status };
    let request = with_metadata(config, UnboundedReceiverStream::new(rx))?;
    let mut inbound = client
        .stream_aggregated_resources(request)
        .await
        .map_err(status_err)?
        .into_inner();
    tracing::info!(
        cluster = %config.cluster,
        %addr,
        tls = config.transport.is_tls(),
        "xDS: stream open"
    );
    status.send_modify(|s| {
        s.connected = true;
        s.streams += 1;
        s.last_error = None;
    });
    loop {
        let deadline = state.next_warming_deadline();
        let msg = tokio::select! {
            msg = inbound.message() => msg,
            () = sleep_until(deadline) => {
                rewarm(state, sink, status).await;
                continue;
            }
        };
        match msg {
            Ok(Some(resp)) => handle_response(state, sink, status, &mut out, resp).await,
            Ok(None) => return Err(StreamError::Closed { addr }),
            Err(e) => return Err(status_err(e)),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Sends requests; the node goes on the first one (or on each).
struct Outbox<'a> {
    tx: mpsc::UnboundedSender<DiscoveryRequest>,
    node: &'a Node,
    node_sent: bool,
    every_message: bool,
}

impl Outbox<'_> {
    fn node(&self) -> Option<&Node> {
        (!self.node_sent || self.every_message).then_some(self.node)
    }

    fn send(&mut self, mut req: DiscoveryRequest) {
        req.node = self.node().cloned();
        self.node_sent = true;
        // The receiver lives as long as the stream; a send after it ended
        // is moot (the stream's error ends the loop).
        let _ = self.tx.send(req);
    }
}

async fn handle_response<S: ConfigSink>(
    state: &mut XdsState,
    sink: &S,
    status: &watch::Sender<AdsStatus>,
    out: &mut Outbox<'_>,
    resp: DiscoveryResponse,
) {
    let (type_url, version_info) = (resp.type_url.clone(), resp.version_info.clone());
    let nonce = resp.nonce.clone();
    let rejection = match state.prepare(resp) {
        Err(r) => r,
        Ok(candidate) => {
            let ty = candidate.ty;
            let applied = match state.servable(&candidate.resources, Instant::now()) {
                Ok(servable) => {
                    let warming = servable.warming.clone();
                    let resources = servable.resources.clone();
                    sink.apply(servable.snapshot, resources.to_xds_resources())
                        .await
                        .map(|()| (resources, warming))
                        .map_err(|reason| format!("{}: {reason}", ty.short()))
                }
                Err(e) => Err(e.to_string()),
            };
            match applied {
                Ok((active, warming)) => {
                    let version = candidate.version_info.clone();
                    let ack = state.commit(candidate, active, None);
                    tracing::info!(
                        xds = ty.short(),
                        version = %version,
                        resources = state.accepted().names(ty).len(),
                        "xDS: applied"
                    );
                    out.send(ack);
                    for req in state.subscription_updates(None) {
                        out.send(req);
                    }
                    status.send_modify(|s| {
                        s.acks += 1;
                        s.applied += 1;
                        s.versions.insert(ty.short(), version);
                        s.warming = warming;
                    });
                    return;
                }
                Err(reason) => super::state::Rejection {
                    ty: Some(ty),
                    type_url,
                    nonce,
                    reason,
                },
            }
        }
    };
    tracing::warn!(
        type_url = %rejection.type_url,
        version = %version_info,
        reason = %rejection.reason,
        "xDS: rejected; keeping the configuration in force"
    );
    let nack = state.nack(&rejection, None);
    out.send(nack);
    status.send_modify(|s| {
        s.nacks += 1;
        s.last_nack = Some(rejection.reason.clone());
    });
}

/// A warming resource timed out: serve what is there.
async fn rewarm<S: ConfigSink>(state: &mut XdsState, sink: &S, status: &watch::Sender<AdsStatus>) {
    let accepted = state.accepted().clone();
    match state.servable(&accepted, Instant::now()) {
        Ok(servable) => {
            tracing::warn!(warming = ?servable.warming, "xDS: warming timed out; serving without");
            let resources = servable.resources;
            match sink
                .apply(servable.snapshot, resources.to_xds_resources())
                .await
            {
                Ok(()) => {
                    state.set_active(resources);
                    status.send_modify(|s| {
                        s.applied += 1;
                        s.warming = servable.warming;
                    });
                }
                Err(e) => tracing::warn!(error = %e, "xDS: applying after warming timeout failed"),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "xDS: warming timeout: configuration does not compile")
        }
    }
}
