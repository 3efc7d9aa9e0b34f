//! The CA's side of Kubernetes mode, as istiod's:
//! - its root lives in a Secret of the control plane's namespace, so that every replica and
//!   every restart signs with the same root: `cacerts` (Istio's plugged-in layout: an
//!   intermediate under the user's root) when the user created one, else `istio-ca-secret`
//!   (a self-signed root, generated and stored by the first replica to start);
//! - that root is published to every namespace as the ConfigMap `istio-ca-root-cert`
//!   (`root-cert.pem`), which sidecars mount to verify the control plane and their peers:
//!   created for new namespaces, put back when deleted or edited.
//!
//! Only the replica holding the Lease `mesh-control-leader` writes the ConfigMaps (every
//! replica serves xDS and signs); a replica that stops renewing loses it after the lease
//! duration and another takes over.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use mesh_ca::{CaConfig, CaError, CaPems, CertificateAuthority};
use tokio::sync::watch;

/// Istio's plugged-in CA Secret.
pub const PLUGGED_IN_SECRET: &str = "cacerts";
/// Istio's Secret for a self-signed root it generated.
pub const SELF_SIGNED_SECRET: &str = "istio-ca-secret";
/// The ConfigMap every namespace gets, and its key.
pub const ROOT_CONFIGMAP: &str = "istio-ca-root-cert";
pub const ROOT_CONFIGMAP_KEY: &str = "root-cert.pem";
/// The Lease replicas compete for before writing.
pub const LEASE_NAME: &str = "mesh-control-leader";

/// Why the CA could not be set up from the cluster.
#[derive(Debug, thiserror::Error)]
pub enum KubeCaError {
    #[error("reading Secret {namespace}/{name}")]
    Read {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("storing the generated root in Secret {namespace}/{SELF_SIGNED_SECRET}")]
    Store {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("Secret {namespace}/{name} has no {key}")]
    MissingKey {
        namespace: String,
        name: String,
        key: &'static str,
    },
    #[error(transparent)]
    Ca(#[from] CaError),
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    data.get(key)
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

/// Loads the CA from `cacerts`, else `istio-ca-secret` in `namespace`; with neither, generates
/// a root and stores it in `istio-ca-secret` (a replica that loses the race to create it
/// loads the winner's).
pub async fn load_ca(
    client: &Client,
    namespace: &str,
    config: CaConfig,
) -> Result<CertificateAuthority, KubeCaError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let read = |name: &'static str| {
        let secrets = secrets.clone();
        async move {
            secrets
                .get_opt(name)
                .await
                .map_err(|source| KubeCaError::Read {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    source,
                })
        }
    };
    if let Some(secret) = read(PLUGGED_IN_SECRET).await? {
        let ca = from_secret(namespace, PLUGGED_IN_SECRET, &secret, config, true)?;
        tracing::info!(secret = %format!("{namespace}/{PLUGGED_IN_SECRET}"), "plugged-in CA loaded");
        return Ok(ca);
    }
    if let Some(secret) = read(SELF_SIGNED_SECRET).await? {
        let ca = from_secret(namespace, SELF_SIGNED_SECRET, &secret, config, false)?;
        tracing::info!(secret = %format!("{namespace}/{SELF_SIGNED_SECRET}"), "self-signed CA loaded");
        return Ok(ca);
    }
    let ca = CertificateAuthority::generate(config.clone())?;
    let pems = ca.pems();
    let data: BTreeMap<String, ByteString> = [
        (mesh_ca::authority::CA_CERT_FILE, &pems.ca_cert),
        (mesh_ca::authority::CA_KEY_FILE, &pems.ca_key),
        (mesh_ca::authority::ROOT_CERT_FILE, &pems.root_cert),
        (mesh_ca::authority::CERT_CHAIN_FILE, &pems.cert_chain),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
    .collect();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(SELF_SIGNED_SECRET.to_string()),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        type_: Some("istio.io/ca-root".to_string()),
        data: Some(data),
        ..Secret::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %format!("{namespace}/{SELF_SIGNED_SECRET}"), "generated a new mesh root CA and stored it");
            Ok(ca)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Another replica stored its root first: everyone signs with that one.
            let secret =
                read(SELF_SIGNED_SECRET)
                    .await?
                    .ok_or_else(|| KubeCaError::MissingKey {
                        namespace: namespace.to_string(),
                        name: SELF_SIGNED_SECRET.to_string(),
                        key: mesh_ca::authority::CA_CERT_FILE,
                    })?;
            Ok(from_secret(
                namespace,
                SELF_SIGNED_SECRET,
                &secret,
                config,
                false,
            )?)
        }
        Err(source) => Err(KubeCaError::Store {
            namespace: namespace.to_string(),
            source,
        }),
    }
}

fn from_secret(
    namespace: &str,
    name: &str,
    secret: &Secret,
    config: CaConfig,
    plugged_in: bool,
) -> Result<CertificateAuthority, KubeCaError> {
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let required = |key: &'static str| {
        text(data, key).ok_or_else(|| KubeCaError::MissingKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
            key,
        })
    };
    let ca_cert = required(mesh_ca::authority::CA_CERT_FILE)?;
    let ca_key = required(mesh_ca::authority::CA_KEY_FILE)?;
    let (root_cert, cert_chain) = if plugged_in {
        (
            required(mesh_ca::authority::ROOT_CERT_FILE)?,
            required(mesh_ca::authority::CERT_CHAIN_FILE)?,
        )
    } else {
        // A self-signed root is its own root; Istio leaves the other keys empty.
        let root = text(data, mesh_ca::authority::ROOT_CERT_FILE)
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| ca_cert.clone());
        (root, String::new())
    };
    let pems = CaPems {
        ca_cert,
        ca_key,
        root_cert,
        cert_chain,
    };
    let origin = format!("secret {namespace}/{name}");
    Ok(CertificateAuthority::from_pems(
        Path::new(&origin),
        &pems,
        config,
    )?)
}

/// Says so, in the log and as a Warning Event `CaNotReloaded` on the Secret, when the
/// plugged-in `cacerts` of `namespace` is created, changed or deleted while this control plane
/// runs: it keeps signing with the CA it loaded at start (`ca_cert_in_use`), as istiod does
/// without its reload option, and a user who rotates their CA must know that a restart is what
/// puts the new one in force. Runs until `shutdown`.
pub async fn watch_plugged_in(
    client: Client,
    namespace: String,
    ca_cert_in_use: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut events = watcher::watcher(
        secrets,
        watcher::Config::default().fields(&format!("metadata.name={PLUGGED_IN_SECRET}")),
    )
    .default_backoff()
    .boxed();
    loop {
        let event = tokio::select! {
            _ = crate::server::until_shutdown(&mut shutdown) => return,
            event = events.next() => match event {
                Some(event) => event,
                None => return,
            },
        };
        let (secret, deleted) = match event {
            Ok(Event::Apply(s)) | Ok(Event::InitApply(s)) => (s, false),
            Ok(Event::Delete(s)) => (s, true),
            Ok(Event::Init) | Ok(Event::InitDone) => continue,
            Err(e) => {
                tracing::warn!(%namespace, "watching {PLUGGED_IN_SECRET}: {e}");
                continue;
            }
        };
        let holds = secret
            .data
            .as_ref()
            .and_then(|d| text(d, mesh_ca::authority::CA_CERT_FILE));
        let what = match (deleted, holds.as_deref() == Some(ca_cert_in_use.as_str())) {
            (false, true) => continue,
            (false, false) => "holds a CA other than the one in use",
            (true, true) => "was deleted",
            (true, false) => continue,
        };
        let message = format!(
            "{namespace}/{PLUGGED_IN_SECRET} {what}: mesh-control keeps signing with the CA it loaded at start; restart it (every replica) to put the Secret's CA in force"
        );
        tracing::warn!("{message}");
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        let object = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Secret".to_string()),
            name: Some(PLUGGED_IN_SECRET.to_string()),
            namespace: Some(namespace.clone()),
            uid: secret.metadata.uid.clone(),
            resource_version: Some(version.clone()),
            ..Default::default()
        };
        crate::kube_events::warn(
            client.clone(),
            object,
            format!("{PLUGGED_IN_SECRET}.mesh-ca-not-reloaded.{version}"),
            "CaNotReloaded",
            message,
        )
        .await;
    }
}

/// How the Lease is held.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    /// How long a holder that stopped renewing keeps it.
    pub duration: Duration,
    /// How often the holder renews and the others try.
    pub retry: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        // client-go's defaults: 15 s lease, renewal every 2 s.
        LeaseTiming {
            duration: Duration::from_secs(15),
            retry: Duration::from_secs(2),
        }
    }
}

/// One contender for the Lease.
struct Elector {
    leases: Api<Lease>,
    identity: String,
    timing: LeaseTiming,
}

impl Elector {
    /// Takes or renews the Lease; true while this replica holds it. Conflicts (another
    /// replica wrote first) are a plain "no".
    async fn try_hold(&self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let seconds = i32::try_from(self.timing.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.leases.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.to_string()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_duration_seconds: Some(seconds),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        if !ours {
            let held_for = spec
                .lease_duration_seconds
                .map_or(self.timing.duration, |s| {
                    Duration::from_secs(u64::try_from(s).unwrap_or(0))
                });
            let renewed_ms = spec.renew_time.as_ref().map_or(0, |t| t.0.as_millisecond());
            let expires_ms =
                renewed_ms.saturating_add(i64::try_from(held_for.as_millis()).unwrap_or(i64::MAX));
            if spec.holder_identity.is_some() && Timestamp::now().as_millisecond() < expires_ms {
                return Ok(false);
            }
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(seconds);
        // The resourceVersion read above makes this a compare-and-swap.
        match self
            .leases
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Elector {
    /// Gives the Lease up (on a clean shutdown), so another replica takes over at its next
    /// try instead of after the lease duration.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.leases.get_opt(LEASE_NAME).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        match self
            .leases
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = LEASE_NAME, "lease released"),
            Err(e) => tracing::warn!(lease = LEASE_NAME, "cannot release the lease: {e}"),
        }
    }
}

/// Keeps `istio-ca-root-cert` right in every namespace while this replica holds the Lease,
/// until `shutdown`.
pub async fn publish_root(
    client: Client,
    namespace: String,
    identity: String,
    root_pem: String,
    timing: LeaseTiming,
    mut shutdown: watch::Receiver<bool>,
) {
    let elector = Elector {
        leases: Api::namespaced(client.clone(), &namespace),
        identity: identity.clone(),
        timing,
    };
    let publisher = RootPublisher {
        client: client.clone(),
        root_pem,
    };
    // Namespace events carry whether the namespace is live; ConfigMap events only its name.
    let namespaces = watcher::watcher(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|e| e.map(|e| live_namespaces_of_event(&e)));
    let config_maps = watcher::watcher(
        Api::<ConfigMap>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={ROOT_CONFIGMAP}")),
    )
    .default_backoff()
    .map(|e| {
        e.map(|e| {
            namespaces_of_event(&e)
                .into_iter()
                .map(|n| (n, None))
                .collect::<Vec<_>>()
        })
    });
    // What the namespace watcher last said of each namespace, so that a ConfigMap event needs
    // no GET of its namespace.
    let mut live: BTreeMap<String, bool> = BTreeMap::new();
    let mut changes = futures::stream::select(namespaces, config_maps).boxed();
    let mut leading = false;
    let mut tick = tokio::time::interval(timing.retry);
    loop {
        tokio::select! {
            _ = crate::server::until_shutdown(&mut shutdown) => {
                if leading {
                    elector.release().await;
                }
                break;
            }
            _ = tick.tick() => {
                let now = match elector.try_hold().await {
                    Ok(held) => held,
                    Err(e) => {
                        tracing::warn!(lease = LEASE_NAME, "cannot take or renew the lease: {e}");
                        false
                    }
                };
                if now && !leading {
                    tracing::info!(lease = LEASE_NAME, %identity, "leading: publishing {ROOT_CONFIGMAP}");
                    publisher.all().await;
                } else if !now && leading {
                    tracing::info!(lease = LEASE_NAME, %identity, "no longer leading");
                }
                leading = now;
            }
            change = changes.next() => match change {
                Some(Ok(names)) => {
                    for (ns, alive) in names {
                        if let Some(alive) = alive {
                            live.insert(ns.clone(), alive);
                        }
                        if leading {
                            publisher.one(&ns, live.get(&ns).copied()).await;
                        }
                    }
                }
                Some(Err(e)) => tracing::warn!("watching namespaces and {ROOT_CONFIGMAP}: {e}"),
                None => break,
            },
        }
    }
}

/// The Namespaces of a Namespace event, each with whether it is live (not deleted, not being
/// deleted).
fn live_namespaces_of_event(event: &Event<Namespace>) -> Vec<(String, Option<bool>)> {
    let of = |ns: &Namespace, deleted: bool| {
        let alive = !deleted && ns.metadata.deletion_timestamp.is_none();
        ns.metadata.name.clone().map(|n| (n, Some(alive)))
    };
    match event {
        Event::Apply(ns) | Event::InitApply(ns) => of(ns, false).into_iter().collect(),
        Event::Delete(ns) => of(ns, true).into_iter().collect(),
        Event::Init | Event::InitDone => Vec::new(),
    }
}

/// The namespaces an event touches: a Namespace's own name, a ConfigMap's namespace.
fn namespaces_of_event<K: kube::Resource>(event: &Event<K>) -> Vec<String> {
    let of = |k: &K| {
        let meta = k.meta();
        meta.namespace.clone().or_else(|| meta.name.clone())
    };
    match event {
        Event::Apply(k) | Event::Delete(k) | Event::InitApply(k) => of(k).into_iter().collect(),
        Event::Init | Event::InitDone => Vec::new(),
    }
}

struct RootPublisher {
    client: Client,
    root_pem: String,
}

impl RootPublisher {
    async fn all(&self) {
        match Api::<Namespace>::all(self.client.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(list) => {
                for ns in list.items {
                    let alive = ns.metadata.deletion_timestamp.is_none();
                    if let Some(name) = ns.metadata.name {
                        self.one(&name, Some(alive)).await;
                    }
                }
            }
            Err(e) => tracing::warn!("listing namespaces to publish {ROOT_CONFIGMAP}: {e}"),
        }
    }

    /// Creates or corrects the ConfigMap of `namespace` (not one being deleted); `alive` is
    /// what the caller knows of the namespace (read from the API server when `None`).
    async fn one(&self, namespace: &str, alive: Option<bool>) {
        let alive = match alive {
            Some(known) => known,
            None => {
                let namespaces: Api<Namespace> = Api::all(self.client.clone());
                match namespaces.get_opt(namespace).await {
                    Ok(ns) => ns.is_some_and(|ns| ns.metadata.deletion_timestamp.is_none()),
                    Err(e) => {
                        tracing::warn!(%namespace, "reading the namespace: {e}");
                        return;
                    }
                }
            }
        };
        if !alive {
            return;
        }
        let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let want: BTreeMap<String, String> =
            [(ROOT_CONFIGMAP_KEY.to_string(), self.root_pem.clone())].into();
        let result = match maps.get_opt(ROOT_CONFIGMAP).await {
            Ok(None) => {
                let map = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(ROOT_CONFIGMAP.to_string()),
                        labels: Some([("istio.io/config".to_string(), "true".to_string())].into()),
                        ..ObjectMeta::default()
                    },
                    data: Some(want),
                    ..ConfigMap::default()
                };
                maps.create(&PostParams::default(), &map)
                    .await
                    .map(|_| "created")
            }
            Ok(Some(mut map)) if map.data.as_ref() != Some(&want) => {
                map.data = Some(want);
                maps.replace(ROOT_CONFIGMAP, &PostParams::default(), &map)
                    .await
                    .map(|_| "corrected")
            }
            Ok(Some(_)) => return,
            Err(e) => Err(e),
        };
        match result {
            Ok(what) => tracing::info!(%namespace, "{ROOT_CONFIGMAP} {what}"),
            // 409: written meanwhile (another event, another replica); the next event fixes it.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => tracing::warn!(%namespace, "writing {ROOT_CONFIGMAP}: {e}"),
        }
    }
}
