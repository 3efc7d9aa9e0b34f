//! One ADS stream: identify the proxy, answer its subscriptions, push changes,
//! and record ACKs and NACKs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use mesh_ca::{AuthError, IssuedIdentity, SpiffeId};
use prost::Message;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::sds::{SecretCache, renew_at, secrets_for};
use super::status::{Nack, ProxyStatus, TypeStatus};
use super::{AdsContext, XdsType};
use crate::metrics::TypeLabel;
use crate::node::ProxyNode;
use crate::source::Snapshot;
use crate::translate::{XdsResources, translate};

type Responses = mpsc::Sender<Result<DiscoveryResponse, Status>>;

/// Who a stream is, as far as secrets go.
pub(super) enum StreamAuth {
    /// The plaintext port: never gets secrets.
    Plaintext,
    /// The TLS port: the outcome of authenticating the stream's credentials.
    Secure {
        identity: Result<SpiffeId, AuthError>,
        cache: Arc<SecretCache>,
    },
}

impl StreamAuth {
    fn port(&self) -> &'static str {
        match self {
            StreamAuth::Plaintext => "plaintext",
            StreamAuth::Secure { .. } => "secure",
        }
    }

    fn identity(&self) -> Option<String> {
        match self {
            StreamAuth::Secure {
                identity: Ok(id), ..
            } => Some(id.to_string()),
            _ => None,
        }
    }
}

/// What a stream serves: the translated configuration and its secrets.
#[derive(Clone, Default)]
struct Served {
    xds: Arc<XdsResources>,
    secrets: Arc<BTreeMap<String, Secret>>,
}

/// Why a stream ended.
enum End {
    /// The proxy's side is gone.
    Gone,
    /// The control plane refused the stream (the status went to the proxy).
    Refused(String),
}

/// Which resources of a type the proxy asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Subscription {
    All,
    Names(BTreeSet<String>),
}

impl Subscription {
    fn of(t: XdsType, names: &[String]) -> Subscription {
        if t.is_wildcard() && (names.is_empty() || names.iter().any(|n| n == "*")) {
            Subscription::All
        } else {
            Subscription::Names(names.iter().filter(|n| *n != "*").cloned().collect())
        }
    }

    fn names(&self) -> Vec<String> {
        match self {
            Subscription::All => Vec::new(),
            Subscription::Names(n) => n.iter().cloned().collect(),
        }
    }

    fn pick<'a, T>(&self, map: &'a BTreeMap<String, T>) -> Vec<(&'a String, &'a T)> {
        match self {
            Subscription::All => map.iter().collect(),
            Subscription::Names(names) => {
                names.iter().filter_map(|n| map.get_key_value(n)).collect()
            }
        }
    }
}

/// What was last sent of one type.
struct Sent {
    nonce: String,
    resources: Served,
    subscription: Subscription,
}

/// One subscribed type.
struct Watched {
    subscription: Subscription,
    sent: Option<Sent>,
    status: TypeStatus,
}

struct Connection {
    ctx: Arc<AdsContext>,
    id: String,
    /// Connection number, the prefix of every nonce on this stream.
    seq: u64,
    proxy: ProxyNode,
    tx: Responses,
    nonce_seq: u64,
    snapshot: Arc<Snapshot>,
    resources: Served,
    watched: BTreeMap<XdsType, Watched>,
    auth: StreamAuth,
    /// The certificate behind the secrets, once the stream asked for them.
    issued: Option<Arc<IssuedIdentity>>,
    /// When to fetch a fresh certificate (half its life).
    renew: Option<tokio::time::Instant>,
}

/// Ends a stream whose requests do not decode (garbage bytes, a length
/// prefix over the limit, a compressed message without an encoding): the
/// proxy gets tonic's status as the stream's end, never a `grpc-status: 0`
/// that would read as a clean close, and the control plane says so at warn.
async fn refuse_stream(tx: &Responses, peer: &str, connection: &str, e: Status) {
    tracing::warn!(%peer, connection, code = ?e.code(), "ADS request stream refused: {}", e.message());
    let _ = tx
        .send(Err(Status::new(
            e.code(),
            capped(format!("ADS request stream: {}", e.message())),
        )))
        .await;
}

/// The longest `grpc-message` the control plane sends: errors may quote what
/// a client sent, and gRPC carries them in a header.
const MAX_STATUS_MESSAGE: usize = 1024;

fn capped(mut message: String) -> String {
    if message.len() > MAX_STATUS_MESSAGE {
        let mut end = MAX_STATUS_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    message
}

/// Runs a stream to its end.
pub(super) async fn run(
    ctx: Arc<AdsContext>,
    peer: String,
    auth: StreamAuth,
    mut requests: Streaming<DiscoveryRequest>,
    tx: Responses,
) {
    let first = match requests.message().await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            refuse_stream(&tx, &peer, "", e).await;
            return;
        }
    };
    let proxy = match first.node.as_ref().map(ProxyNode::from_node) {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            tracing::warn!(%peer, "ADS stream refused: bad node: {e}");
            let _ = tx
                .send(Err(Status::invalid_argument(capped(format!(
                    "bad node: {e}"
                )))))
                .await;
            return;
        }
        None => {
            tracing::warn!(%peer, "ADS stream refused: first request has no node");
            let _ = tx
                .send(Err(Status::invalid_argument(
                    "the first DiscoveryRequest of a stream must carry the node",
                )))
                .await;
            return;
        }
    };
    let seq = ctx.next_connection.fetch_add(1, Ordering::Relaxed) + 1;
    let id = format!("{}-{seq}", proxy.id);
    let mut snapshots = ctx.snapshots.clone();
    let snapshot = snapshots.borrow_and_update().clone();
    let Some(resources) = translate_blocking(&snapshot, &proxy).await else {
        return;
    };
    ctx.sync.insert(ProxyStatus {
        proxy: proxy.id.clone(),
        connection_id: id.clone(),
        kind: proxy.kind.as_str(),
        namespace: proxy.namespace.clone(),
        pod: proxy.pod_name.clone(),
        ip: proxy.ip.clone(),
        cluster_id: proxy.cluster_id.clone(),
        peer: peer.clone(),
        port: auth.port(),
        identity: auth.identity(),
        connected_since: Some(SystemTime::now()),
        generation: snapshot.generation,
        types: XdsType::CONFIG
            .into_iter()
            .map(|t| (t.label(), TypeStatus::new(t)))
            .collect(),
    });
    ctx.metrics.connected.inc();
    match &auth {
        StreamAuth::Plaintext => {
            tracing::info!(connection = %id, %peer, port = "plaintext", "proxy connected")
        }
        StreamAuth::Secure {
            identity: Ok(identity),
            ..
        } => tracing::info!(connection = %id, %peer, port = "secure", %identity, "proxy connected"),
        StreamAuth::Secure {
            identity: Err(e), ..
        } => {
            tracing::info!(connection = %id, %peer, port = "secure", "proxy connected without an identity ({e}): configuration only, no secrets")
        }
    }

    let mut conn = Connection {
        ctx: ctx.clone(),
        id: id.clone(),
        seq,
        proxy,
        tx,
        nonce_seq: 0,
        snapshot,
        resources: Served {
            xds: resources,
            secrets: Arc::default(),
        },
        watched: BTreeMap::new(),
        auth,
        issued: None,
        renew: None,
    };
    let mut shutdown = ctx.shutdown.clone();
    let ended = |e: End| match e {
        End::Gone => "client gone".to_string(),
        End::Refused(why) => format!("refused: {why}"),
    };
    let end: String = async {
        if let Err(e) = conn.on_request(first).await {
            return ended(e);
        }
        loop {
            tokio::select! {
                r = requests.message() => match r {
                    Ok(Some(req)) => if let Err(e) = conn.on_request(req).await { return ended(e) },
                    Ok(None) => return "stream closed by the proxy".to_string(),
                    Err(e) => {
                        let why = format!("bad request stream: {}", e.message());
                        refuse_stream(&conn.tx, &peer, &conn.id, e).await;
                        return why;
                    }
                },
                changed = snapshots.changed() => {
                    if changed.is_err() { return "configuration store stopped".to_string() }
                    let snapshot = snapshots.borrow_and_update().clone();
                    if !conn.on_snapshot(snapshot).await { return ended(End::Gone) }
                },
                () = until(conn.renew) => {
                    if let Err(e) = conn.renew_secrets().await { return ended(e) }
                },
                _ = crate::server::until_shutdown(&mut shutdown) => return "control plane shutting down".to_string(),
            }
        }
    }
    .await;
    ctx.sync.remove(&id);
    ctx.metrics.connected.dec();
    tracing::info!(connection = %id, "proxy disconnected: {end}");
}

/// [`translate`] on the blocking pool: a big configuration takes long enough
/// to translate that, on a runtime thread, it would stall the other streams,
/// `/ready` and the debug endpoints. `None` when the runtime is shutting down.
async fn translate_blocking(
    snapshot: &Arc<Snapshot>,
    proxy: &ProxyNode,
) -> Option<Arc<XdsResources>> {
    let (snapshot, proxy) = (snapshot.clone(), proxy.clone());
    match tokio::task::spawn_blocking(move || translate(&snapshot.state, &proxy)).await {
        Ok(resources) => Some(Arc::new(resources)),
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => None,
        },
    }
}

impl Connection {
    /// Handles one request.
    async fn on_request(&mut self, req: DiscoveryRequest) -> Result<(), End> {
        let Some(t) = XdsType::from_type_url(&req.type_url) else {
            tracing::debug!(connection = %self.id, type_url = %req.type_url, "request for an unserved type ignored");
            return Ok(());
        };
        let subscription = Subscription::of(t, &req.resource_names);
        if t == XdsType::Secret {
            self.admit_secrets(&subscription).await?;
        }
        let watched = self.watched.entry(t).or_insert_with(|| Watched {
            subscription: subscription.clone(),
            sent: None,
            status: TypeStatus::new(t),
        });
        if !req.response_nonce.is_empty() {
            let latest = watched.sent.as_ref().map(|s| s.nonce.as_str());
            if latest != Some(req.response_nonce.as_str()) {
                // An answer to an older response: a newer one is on its way.
                tracing::debug!(connection = %self.id, type = t.label(), nonce = %req.response_nonce, "stale nonce ignored");
                self.publish(t);
                return Ok(());
            }
            watched.status.requested = subscription.names();
            if let Some(err) = &req.error_detail {
                tracing::warn!(
                    connection = %self.id, type = t.label(), nonce = %req.response_nonce,
                    "proxy rejected the configuration (NACK): {}", err.message
                );
                self.ctx
                    .metrics
                    .rejects
                    .get_or_create(&TypeLabel::new(t.label()))
                    .inc();
                watched.status.last_nack = Some(Nack {
                    nonce: req.response_nonce.clone(),
                    version: req.version_info.clone(),
                    error: err.message.clone(),
                    code: err.code,
                    at: Some(SystemTime::now()),
                });
                watched.status.refresh();
                self.publish(t);
                // The proxy keeps its previous version; resending the same
                // content would be rejected again.
                return Ok(());
            }
            watched.status.acked_nonce = req.response_nonce.clone();
            watched.status.acked_version = req.version_info.clone();
            watched.status.acked_at = Some(SystemTime::now());
            watched.status.last_nack = None;
            watched.status.refresh();
            if watched.subscription == subscription {
                self.publish(t);
                return Ok(());
            }
            // Same nonce, new names: Envoy widening or narrowing EDS/RDS
            // after a CDS/LDS update; answer with the new set.
        }
        watched.status.requested = subscription.names();
        watched.subscription = subscription;
        let sent = self.send(t, true).await;
        self.publish(t);
        sent.map(|_| ()).map_err(|Gone| End::Gone)
    }

    /// Whether this stream may have secrets: the secure port, an
    /// authenticated caller whose node claims the same namespace and service
    /// account. Issues (or takes from the cache) its certificate. A refusal
    /// ends the stream with a status naming the reason.
    async fn admit_secrets(&mut self, subscription: &Subscription) -> Result<(), End> {
        if let Subscription::Names(names) = subscription {
            for unknown in names
                .iter()
                .filter(|n| *n != super::sds::DEFAULT_SECRET && *n != super::sds::ROOTCA_SECRET)
            {
                tracing::warn!(
                    connection = %self.id, secret = %unknown,
                    "secret not served (only \"default\" and \"ROOTCA\" are): the proxy keeps waiting for it"
                );
            }
        }
        if self.issued.is_some() {
            return Ok(());
        }
        let refusal = match self.issue() {
            Ok(issued) => {
                self.install(issued);
                return Ok(());
            }
            Err(refusal) => refusal,
        };
        tracing::warn!(connection = %self.id, code = ?refusal.code(), "ADS stream refused: {}", refusal.message());
        self.ctx.metrics.sds_refusals.inc();
        let why = refusal.message().to_string();
        let _ = self.tx.send(Err(refusal)).await;
        Err(End::Refused(why))
    }

    /// The certificate of this stream's identity, or why it may have none.
    fn issue(&self) -> Result<Arc<IssuedIdentity>, Status> {
        let (identity, cache) = match &self.auth {
            StreamAuth::Plaintext => {
                return Err(Status::permission_denied(
                    "secrets (SDS) are served only on the secure xDS port (TLS, 15012 by default) \
                     to a stream authenticated by a bearer token or a mesh client certificate",
                ));
            }
            StreamAuth::Secure {
                identity: Err(e), ..
            } => {
                return Err(Status::unauthenticated(format!(
                    "secrets (SDS) refused: {e}"
                )));
            }
            StreamAuth::Secure {
                identity: Ok(identity),
                cache,
            } => (identity, cache),
        };
        // The node's claims must agree with the credentials, so that the
        // configuration (translated for the node) and the certificate
        // (issued for the credentials) describe the same workload.
        if identity.namespace() != self.proxy.namespace
            || identity.service_account() != self.proxy.service_account
        {
            return Err(Status::permission_denied(format!(
                "secrets (SDS) refused: the stream is authenticated as {identity} \
                 but its node claims namespace {:?} and service account {:?}",
                self.proxy.namespace, self.proxy.service_account
            )));
        }
        cache.identity(identity).map_err(|e| {
            Status::internal(format!("cannot issue a certificate for {identity}: {e}"))
        })
    }

    /// Serves the secrets of `issued` from now on.
    fn install(&mut self, issued: Arc<IssuedIdentity>) {
        self.resources.secrets = Arc::new(secrets_for(&issued));
        let left = renew_at(&issued)
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        self.renew = Some(tokio::time::Instant::now() + left);
        self.issued = Some(issued);
    }

    /// Half the certificate's life has passed: take the fresh one and push it.
    async fn renew_secrets(&mut self) -> Result<(), End> {
        if self.issued.is_none() {
            self.renew = None;
            return Ok(());
        }
        match self.issue() {
            Ok(issued) => self.install(issued),
            Err(e) => {
                tracing::error!(connection = %self.id, "cannot renew the workload certificate (retrying in {RENEW_RETRY:?}): {}", e.message());
                self.renew = Some(tokio::time::Instant::now() + RENEW_RETRY);
                return Ok(());
            }
        }
        let sent = self.send(XdsType::Secret, false).await;
        self.publish(XdsType::Secret);
        match sent {
            Ok(true) => {
                tracing::info!(connection = %self.id, "pushed a renewed workload certificate");
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(Gone) => Err(End::Gone),
        }
    }

    /// A new configuration generation: push the types whose content changed.
    async fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> bool {
        let started = Instant::now();
        let Some(resources) = translate_blocking(&snapshot, &self.proxy).await else {
            return false;
        };
        self.snapshot = snapshot;
        self.resources.xds = resources;
        let mut pushed = Vec::new();
        for t in XdsType::PUSH_ORDER {
            // Envoy keeps an updated cluster warming until it gets its
            // endpoints, and an updated listener until it gets its routes:
            // follow CDS with EDS and LDS with RDS even when those are unchanged.
            let forced = match t {
                XdsType::Endpoint => pushed.contains(&XdsType::Cluster),
                XdsType::Route => pushed.contains(&XdsType::Listener),
                _ => false,
            };
            if self.watched.contains_key(&t) {
                match self.send(t, forced).await {
                    Ok(true) => pushed.push(t),
                    Ok(false) => {}
                    Err(Gone) => return false,
                }
            }
        }
        if !pushed.is_empty() {
            self.ctx
                .metrics
                .push_time
                .observe(started.elapsed().as_secs_f64());
            self.ctx
                .metrics
                .convergence_time
                .observe(self.snapshot.changed_at.elapsed().as_secs_f64());
            tracing::debug!(connection = %self.id, generation = self.snapshot.generation, types = ?pushed, "pushed");
        }
        for t in XdsType::PUSH_ORDER {
            if self.watched.contains_key(&t) {
                self.publish(t);
            }
        }
        // After the types: a reader that sees this generation sees what it pushed.
        let generation = self.snapshot.generation;
        self.ctx
            .sync
            .update(&self.id, |p| p.generation = generation);
        true
    }
}

/// The proxy's stream is gone.
struct Gone;

/// Retry delay when a certificate cannot be renewed.
const RENEW_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// Resolves at `at`, never when `None`.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Connection {
    /// Sends the subscribed resources of `t` if they differ from what was last
    /// sent, or always when `force`. Ok(true) when a response went out.
    async fn send(&mut self, t: XdsType, force: bool) -> Result<bool, Gone> {
        let Some(watched) = self.watched.get_mut(&t) else {
            return Ok(false);
        };
        if !force
            && let Some(sent) = &watched.sent
            && same_content(
                t,
                &sent.resources,
                &sent.subscription,
                &self.resources,
                &watched.subscription,
            )
        {
            return Ok(false);
        }
        let (any, version) = encode(t, &self.resources, &watched.subscription);
        self.nonce_seq += 1;
        let nonce = format!("{}-{}", self.seq, self.nonce_seq);
        let count = any.len();
        let response = DiscoveryResponse {
            version_info: version.clone(),
            resources: any,
            type_url: t.type_url().to_string(),
            nonce: nonce.clone(),
            ..DiscoveryResponse::default()
        };
        watched.sent = Some(Sent {
            nonce: nonce.clone(),
            resources: self.resources.clone(),
            subscription: watched.subscription.clone(),
        });
        watched.status.sent_nonce = nonce;
        watched.status.sent_version = version;
        watched.status.sent_at = Some(SystemTime::now());
        watched.status.sent_resources = count;
        watched.status.refresh();
        self.ctx
            .metrics
            .pushes
            .get_or_create(&TypeLabel::new(t.label()))
            .inc();
        tracing::debug!(connection = %self.id, type = t.label(), resources = count, "response sent");
        self.tx.send(Ok(response)).await.map_err(|_| Gone)?;
        Ok(true)
    }

    /// Copies a type's status into the registry read by `/debug/syncz`.
    fn publish(&self, t: XdsType) {
        if let Some(w) = self.watched.get(&t) {
            let status = w.status.clone();
            self.ctx.sync.update(&self.id, |p| {
                p.types.insert(t.label(), status);
            });
        }
    }
}

fn same_content(
    t: XdsType,
    a: &Served,
    a_sub: &Subscription,
    b: &Served,
    b_sub: &Subscription,
) -> bool {
    let (a, b, sa, sb) = (&a.xds, &b.xds, &a.secrets, &b.secrets);
    match t {
        XdsType::Cluster => a_sub.pick(&a.clusters) == b_sub.pick(&b.clusters),
        XdsType::Endpoint => a_sub.pick(&a.endpoints) == b_sub.pick(&b.endpoints),
        XdsType::Listener => a_sub.pick(&a.listeners) == b_sub.pick(&b.listeners),
        XdsType::Route => a_sub.pick(&a.routes) == b_sub.pick(&b.routes),
        XdsType::Secret => a_sub.pick(sa) == b_sub.pick(sb),
    }
}

/// The resources as `Any`s, and a version: a hash of their names and bytes.
fn encode(t: XdsType, served: &Served, sub: &Subscription) -> (Vec<Any>, String) {
    fn pack<T: Message>(
        t: XdsType,
        items: Vec<(&String, &T)>,
        hasher: &mut xxhash_rust::xxh64::Xxh64,
    ) -> Vec<Any> {
        items
            .into_iter()
            .map(|(name, m)| {
                let value = m.encode_to_vec();
                hasher.update(name.as_bytes());
                hasher.update(&[0]);
                hasher.update(&value);
                Any {
                    type_url: t.type_url().to_string(),
                    value,
                }
            })
            .collect()
    }
    let mut hasher = xxhash_rust::xxh64::Xxh64::new(0);
    let res = &served.xds;
    let any = match t {
        XdsType::Cluster => pack(t, sub.pick(&res.clusters), &mut hasher),
        XdsType::Endpoint => pack(t, sub.pick(&res.endpoints), &mut hasher),
        XdsType::Listener => pack(t, sub.pick(&res.listeners), &mut hasher),
        XdsType::Route => pack(t, sub.pick(&res.routes), &mut hasher),
        XdsType::Secret => pack(t, sub.pick(&served.secrets), &mut hasher),
    };
    (any, format!("{:016x}", hasher.digest()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions() {
        assert_eq!(Subscription::of(XdsType::Cluster, &[]), Subscription::All);
        assert_eq!(
            Subscription::of(XdsType::Listener, &["*".to_string()]),
            Subscription::All
        );
        assert_eq!(
            Subscription::of(XdsType::Endpoint, &[]),
            Subscription::Names(BTreeSet::new())
        );
        let mut m = BTreeMap::new();
        m.insert("a".to_string(), 1);
        m.insert("b".to_string(), 2);
        let s = Subscription::of(XdsType::Route, &["b".to_string(), "zz".to_string()]);
        assert_eq!(s.pick(&m), vec![(&"b".to_string(), &2)]);
    }
}
