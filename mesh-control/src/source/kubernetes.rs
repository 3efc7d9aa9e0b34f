//! Configuration from a Kubernetes API server: Namespaces, Services, EndpointSlices and Pods
//! (the registry) and the Istio kinds (traffic and security policy), each watched with a
//! kube-rs watcher (list, then watch with bookmarks; a restart or a 410 Gone relists; errors
//! back off and resume).
//!
//! Every object is one origin, loaded and validated as a one-document file is: an object
//! whose new version is invalid keeps its last good version in force and reports why in
//! `/debug/configz`, as a file in the directory source does. Versions are found by discovery,
//! as Istio does for older clusters: EndpointSlices from `discovery.k8s.io/v1`, else
//! `v1beta1` (Kubernetes before 1.21), read into the v1 shape; Istio kinds from the version
//! their CRD prefers. An Istio kind whose CRD is not installed is looked for again every 30 s
//! and watched once it is served.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource as _};
use serde_json::{Map, Value};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::{
    ConfigSource, LoadFuture, SourceError, SourceSnapshot, Versions, WatchFuture, snapshot_of,
};

/// How long the first load waits for every watched kind to be listed.
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Quiet time before a change is published: a burst of events (a relist, a rollout) becomes
/// one snapshot.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// The Istio kinds the mesh reads, by API group: those of the CRDs it ships
/// (`mesh_api::crd`, what `charts/mesh/crds` holds), and those it does not implement, so that
/// a user's EnvoyFilter or Telemetry in the cluster is reported as skipped instead of ignored
/// in silence (watched only where their CRDs, Istio's, are installed). IstioOperator is not
/// watched: it configures an installer, not the mesh.
fn istio_kinds() -> BTreeMap<String, Vec<String>> {
    let mut kinds: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for crd in mesh_api::crd::all() {
        kinds
            .entry(crd.spec.group)
            .or_default()
            .push(crd.spec.names.kind);
    }
    for (group, kind) in mesh_api::resource::UNIMPLEMENTED_ISTIO_KINDS {
        if *group != "install.istio.io" {
            kinds
                .entry((*group).to_string())
                .or_default()
                .push((*kind).to_string());
        }
    }
    kinds
}

/// Whether the mesh ships the CRD of `kind` (so its absence means the chart's CRDs are not
/// installed, worth a warning; Istio's other CRDs are the user's to install or not).
fn ships_crd(kind: &str) -> bool {
    mesh_api::resource::ISTIO_KINDS.contains(&kind)
}

/// A kind being watched.
#[derive(Clone, Debug)]
struct Watched {
    resource: ApiResource,
    /// The `apiVersion` documents are loaded as (v1 for a v1beta1 EndpointSlice).
    load_as: String,
}

impl Watched {
    fn new(resource: ApiResource) -> Watched {
        let load_as = if resource.group == "discovery.k8s.io" {
            "discovery.k8s.io/v1".to_string()
        } else {
            resource.api_version.clone()
        };
        Watched { resource, load_as }
    }

    fn is_istio(&self) -> bool {
        self.resource.group.ends_with(".istio.io")
    }
}

/// Watches an API server's objects and yields them as the mesh's configuration.
pub struct KubernetesSource {
    client: Client,
    server: String,
    sync_timeout: Duration,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    watchers: Vec<JoinHandle<()>>,
    /// Istio kinds, by group, not served at the last discovery (CRDs not installed yet).
    missing: BTreeMap<String, Vec<String>>,
    /// How often the missing kinds are looked for again.
    rediscovery: Duration,
}

/// How often Istio kinds that were not served are looked for again, so that CRDs installed
/// after the control plane started are watched without a restart.
pub const DEFAULT_REDISCOVERY: Duration = Duration::from_secs(30);

/// Everything the watchers know, shared with the publisher.
#[derive(Default)]
struct State {
    objects: BTreeMap<ObjectKey, ObjectState>,
    /// Kinds listed at least once.
    synced: BTreeSet<String>,
    /// Kinds whose watch is failing now, with the last error.
    watch_errors: BTreeMap<String, String>,
    /// When the oldest unpublished change was seen.
    changed_at: Option<Instant>,
}

/// `(kind, namespace, name)`.
type ObjectKey = (String, String, String);

#[derive(Default)]
struct ObjectState {
    resource_version: Option<String>,
    versions: Versions,
    /// Seen since the kind's last relist began.
    seen: bool,
}

/// A watch that is failing now, shown as an origin in `/debug/configz`.
fn watch_failure(error: &str) -> Versions {
    let mut v = Versions::default();
    v.reject_quietly(vec![error.to_string()]);
    v
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves maps that are still consistent entry by entry.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The cluster of `kubeconfig` (its current context unless `context`), or, without a file,
/// the configuration kube-rs infers ($KUBECONFIG, ~/.kube/config, or the in-cluster service
/// account). Also what `meshctl ... --kubeconfig` connects with.
pub async fn kube_config(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<kube::Config, SourceError> {
    let described =
        kubeconfig.map_or_else(|| "(inferred)".to_string(), |p| p.display().to_string());
    let fail = |what: String| SourceError::Kubernetes {
        server: described.clone(),
        what,
        source: None,
    };
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| fail(format!("reading kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| fail(format!("kubeconfig {}: {e}", path.display())))
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| fail(format!("no Kubernetes configuration found: {e}"))),
    }
}

impl KubernetesSource {
    /// A source on the cluster of `kubeconfig` (its current context unless `context`), or,
    /// without a file, the configuration kube-rs infers ($KUBECONFIG, ~/.kube/config, or the
    /// in-cluster service account).
    pub async fn connect(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
    ) -> Result<KubernetesSource, SourceError> {
        let config = kube_config(kubeconfig, context).await?;
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| SourceError::Kubernetes {
            server: server.clone(),
            what: "building the client".to_string(),
            source: Some(e),
        })?;
        Ok(KubernetesSource {
            client,
            server,
            sync_timeout: DEFAULT_SYNC_TIMEOUT,
            state: Arc::default(),
            changed: Arc::default(),
            watchers: Vec::new(),
            missing: BTreeMap::new(),
            rediscovery: DEFAULT_REDISCOVERY,
        })
    }

    /// The client, for the CA's TokenReview on the same cluster.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn with_sync_timeout(mut self, timeout: Duration) -> Self {
        self.sync_timeout = timeout;
        self
    }

    /// How often to look again for Istio kinds that are not served.
    pub fn with_rediscovery(mut self, every: Duration) -> Self {
        self.rediscovery = every;
        self
    }

    fn start_watching(&mut self, kind: &Watched) {
        let api = Api::<DynamicObject>::all_with(self.client.clone(), &kind.resource);
        self.watchers.push(tokio::spawn(run_watcher(
            api,
            self.client.clone(),
            kind.clone(),
            self.state.clone(),
            self.changed.clone(),
        )));
    }

    /// Of the `wanted` Istio kinds, those the server serves now; the others are remembered
    /// in `missing`, to be looked for again.
    async fn find_istio_kinds(&mut self, wanted: BTreeMap<String, Vec<String>>) -> Vec<Watched> {
        let mut found = Vec::new();
        for (group, names) in wanted {
            let served = match kube::discovery::group(&self.client, &group).await {
                Ok(g) => g,
                Err(e) => {
                    if names.iter().any(|n| ships_crd(n)) {
                        tracing::warn!(
                            server = %self.server,
                            "the API group {group} is not served (are the mesh's CRDs installed? `kubectl apply -f charts/mesh/crds`): {e}; its kinds are watched once it is"
                        );
                    }
                    self.missing.insert(group, names);
                    continue;
                }
            };
            // Each kind at its most stable version, not the group's preferred one: Istio's
            // EnvoyFilter exists only as v1alpha3 in a group whose preferred version is v1.
            let resources = served.resources_by_stability();
            for name in names {
                match resources.iter().find(|(r, _)| r.kind == name) {
                    Some((resource, _)) => found.push(Watched::new(resource.clone())),
                    None => {
                        if ships_crd(&name) {
                            tracing::warn!(server = %self.server, "{group} serves no {name} (yet); watched once it does");
                        }
                        self.missing.entry(group.clone()).or_default().push(name);
                    }
                }
            }
        }
        found
    }

    /// Looks again for the kinds that were missing; starts watching those served now.
    async fn rediscover(&mut self) {
        let wanted = std::mem::take(&mut self.missing);
        for kind in self.find_istio_kinds(wanted).await {
            tracing::info!(server = %self.server, "{} serves {} now: watching it", kind.resource.group, kind.resource.kind);
            self.start_watching(&kind);
        }
    }

    fn error(&self, what: impl Into<String>, source: Option<kube::Error>) -> SourceError {
        SourceError::Kubernetes {
            server: self.server.clone(),
            what: what.into(),
            source,
        }
    }

    /// The kinds to watch, at the versions this server serves.
    async fn discover(&mut self) -> Result<Vec<Watched>, SourceError> {
        use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
        let mut kinds = vec![
            Watched::new(ApiResource::erase::<Namespace>(&())),
            Watched::new(ApiResource::erase::<Service>(&())),
            Watched::new(ApiResource::erase::<Pod>(&())),
        ];
        let discovery = kube::discovery::group(&self.client, "discovery.k8s.io")
            .await
            .map_err(|e| self.error("discovering the discovery.k8s.io API group", Some(e)))?;
        let (slices, _) = discovery.recommended_kind("EndpointSlice").ok_or_else(|| {
            self.error(
                "the server serves no EndpointSlice (discovery.k8s.io v1 or v1beta1)",
                None,
            )
        })?;
        kinds.push(Watched::new(slices));
        kinds.extend(self.find_istio_kinds(istio_kinds()).await);
        Ok(kinds)
    }

    fn snapshot(&self) -> SourceSnapshot {
        let mut state = lock(&self.state);
        let changed_at = state.changed_at.take().unwrap_or_else(Instant::now);
        let failures: Vec<(String, Versions)> = state
            .watch_errors
            .iter()
            .map(|(kind, e)| (format!("watch of {kind}"), watch_failure(e)))
            .collect();
        let origins = failures.iter().map(|(n, v)| (n.clone(), v)).chain(
            state
                .objects
                .iter()
                .map(|((kind, ns, name), o)| (origin_name(kind, ns, name), &o.versions)),
        );
        snapshot_of(self.describe(), origins, changed_at)
    }
}

fn origin_name(kind: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    }
}

impl ConfigSource for KubernetesSource {
    fn describe(&self) -> String {
        format!("kubernetes {}", self.server)
    }

    fn load(&mut self) -> LoadFuture<'_> {
        Box::pin(async move {
            let kinds = self.discover().await?;
            for kind in &kinds {
                self.start_watching(kind);
            }
            let deadline = Instant::now() + self.sync_timeout;
            loop {
                let notified = self.changed.notified();
                {
                    let state = lock(&self.state);
                    let missing: Vec<&str> = kinds
                        .iter()
                        .map(|k| k.resource.kind.as_str())
                        .filter(|k| !state.synced.contains(*k))
                        .collect();
                    if missing.is_empty() {
                        break;
                    }
                    if Instant::now() >= deadline {
                        let errors: Vec<String> = state
                            .watch_errors
                            .iter()
                            .map(|(k, e)| format!("{k}: {e}"))
                            .collect();
                        for w in &self.watchers {
                            w.abort();
                        }
                        return Err(self.error(
                            format!(
                                "{} not listed within {:?}{}",
                                missing.join(", "),
                                self.sync_timeout,
                                if errors.is_empty() {
                                    String::new()
                                } else {
                                    format!(" ({})", errors.join("; "))
                                }
                            ),
                            None,
                        ));
                    }
                }
                let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
            }
            let snapshot = self.snapshot();
            tracing::info!(
                server = %self.server,
                kinds = kinds.len(),
                objects = snapshot.origins.len(),
                "Kubernetes objects listed"
            );
            Ok(snapshot)
        })
    }

    fn watch(
        self: Box<Self>,
        updates: watch::Sender<SourceSnapshot>,
        mut shutdown: watch::Receiver<bool>,
    ) -> WatchFuture {
        Box::pin(async move {
            let mut this = self;
            let period = this.rediscovery;
            let mut rediscovery =
                tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                tokio::select! {
                    () = this.changed.notified() => {}
                    _ = rediscovery.tick(), if !this.missing.is_empty() => {
                        this.rediscover().await;
                        continue;
                    }
                    _ = crate::server::until_shutdown(&mut shutdown) => break,
                }
                // Quiet for DEBOUNCE, then publish what the watchers hold.
                loop {
                    tokio::select! {
                        () = this.changed.notified() => continue,
                        () = tokio::time::sleep(DEBOUNCE) => break,
                    }
                }
                if lock(&this.state).changed_at.is_none() {
                    continue;
                }
                let _ = updates.send(this.snapshot());
            }
            for w in &this.watchers {
                w.abort();
            }
        })
    }
}

/// Follows one kind until aborted: every event updates the shared state and wakes the
/// publisher. The stream never ends: errors are logged, recorded and retried with backoff.
async fn run_watcher(
    api: Api<DynamicObject>,
    client: Client,
    kind: Watched,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
) {
    let name = kind.resource.kind.clone();
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let mut s = lock(&state);
        match event {
            Err(e) => {
                tracing::warn!(kind = %name, "watch failed, retrying: {e}");
                s.watch_errors.insert(name.clone(), e.to_string());
                drop(s);
                changed.notify_one();
                continue;
            }
            Ok(Event::Init) => {
                for ((k, _, _), o) in s.objects.iter_mut() {
                    if *k == name {
                        o.seen = false;
                    }
                }
                continue;
            }
            Ok(Event::InitApply(obj)) | Ok(Event::Apply(obj)) => {
                if let Some(errors) = apply(&mut s, &kind, &obj) {
                    tokio::spawn(report_rejection(client.clone(), kind.clone(), obj, errors));
                }
            }
            Ok(Event::InitDone) => {
                // What the relist did not return was deleted meanwhile.
                s.objects.retain(|(k, _, _), o| *k != name || o.seen);
                s.synced.insert(name.clone());
            }
            Ok(Event::Delete(obj)) => {
                let key = key_of(&name, &obj);
                s.objects.remove(&key);
            }
        }
        s.watch_errors.remove(&name);
        s.changed_at.get_or_insert_with(Instant::now);
        drop(s);
        // `notify_one` keeps a permit when the publisher is not waiting (busy looking for
        // CRDs, or publishing): a change is never lost, it is published on the next turn.
        changed.notify_one();
    }
}

fn key_of(kind: &str, obj: &DynamicObject) -> ObjectKey {
    (
        kind.to_string(),
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

/// Loads a new version of an object, keeping the last good one if it is rejected; returns
/// why a new version was rejected.
fn apply(state: &mut State, kind: &Watched, obj: &DynamicObject) -> Option<Vec<String>> {
    let key = key_of(&kind.resource.kind, obj);
    let object = state.objects.entry(key.clone()).or_default();
    object.seen = true;
    let version = obj.meta().resource_version.clone();
    if version.is_some() && version == object.resource_version {
        return None;
    }
    object.resource_version = version;
    let name = origin_name(&key.0, &key.1, &key.2);
    if let Some(skipped) = unroutable_slice(kind, obj, &name) {
        tracing::warn!(object = %name, "{skipped}");
        object.versions.skip(skipped);
        return None;
    }
    match serde_json::to_vec(&document(kind, obj)) {
        Ok(bytes) => {
            // Every Pod of a cluster passes here: debug, not info.
            if let Some(resources) = object.versions.load("Kubernetes object", &name, &bytes) {
                for s in object.versions.skipped() {
                    tracing::warn!(object = %name, "the mesh does not implement {} {}: not applied (listed as skipped in /debug/configz)", s.api_version, s.kind);
                }
                tracing::debug!(object = %name, resources, "Kubernetes object loaded");
                return None;
            }
            // A position in the JSON made of the object helps no one; the field path does.
            for e in &mut object.versions.errors {
                *e = without_position(&name, e);
            }
        }
        Err(e) => object.versions.reject(
            "Kubernetes object",
            &name,
            vec![format!("{name}: cannot encode: {e}")],
        ),
    }
    Some(object.versions.errors.clone())
}

/// An EndpointSlice of hostnames (`addressType: FQDN`), which the mesh, as Istio, does not
/// route to: skipped, with the reason, rather than dropped without a word.
fn unroutable_slice(kind: &Watched, obj: &DynamicObject, name: &str) -> Option<mesh_api::Skipped> {
    if kind.resource.group != "discovery.k8s.io" {
        return None;
    }
    let address_type = obj.data.get("addressType").and_then(Value::as_str)?;
    if address_type == "IPv4" || address_type == "IPv6" {
        return None;
    }
    Some(mesh_api::Skipped {
        kind: kind.resource.kind.clone(),
        api_version: kind.resource.api_version.clone(),
        name: obj.metadata.name.clone(),
        source: mesh_api::Source {
            file: name.into(),
            document: 1,
            line: 1,
        },
        reason: Some(format!(
            "addressType {address_type}: the mesh routes to IPv4 and IPv6 endpoints only"
        )),
    })
}

/// Tells the object's owner why its new version is not in force, where `kubectl describe`
/// shows it: a Warning Event `Rejected` on the object. Named by the object and its
/// resourceVersion, so every replica (and every relist) writes the same one once.
async fn report_rejection(client: Client, kind: Watched, obj: DynamicObject, errors: Vec<String>) {
    use k8s_openapi::api::core::v1::ObjectReference;
    let meta = &obj.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let version = meta.resource_version.clone().unwrap_or_default();
    let origin = origin_name(
        &kind.resource.kind,
        meta.namespace.as_deref().unwrap_or(""),
        &name,
    );
    let own = format!("{origin}: ");
    let reasons: Vec<&str> = errors
        .iter()
        .map(|e| e.strip_prefix(&own).unwrap_or(e))
        .collect();
    let object = ObjectReference {
        api_version: Some(kind.resource.api_version.clone()),
        kind: Some(kind.resource.kind.clone()),
        name: Some(name.clone()),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: Some(version.clone()),
        ..ObjectReference::default()
    };
    crate::kube_events::warn(
        client,
        object,
        format!("{name}.mesh-rejected.{version}"),
        "Rejected",
        format!(
            "not applied, the last good version stays in force: {}",
            reasons.join("; ")
        ),
    )
    .await;
}

/// The object as the loader reads a file's document: the metadata the mesh uses (not
/// `managedFields` and the server's bookkeeping), the body, and for Istio kinds no `status`
/// (it is the control plane's to write, not configuration).
fn document(kind: &Watched, obj: &DynamicObject) -> Value {
    let meta = &obj.metadata;
    let mut metadata = Map::new();
    if let Some(name) = &meta.name {
        metadata.insert("name".into(), Value::from(name.as_str()));
    }
    if let Some(ns) = &meta.namespace {
        metadata.insert("namespace".into(), Value::from(ns.as_str()));
    }
    for (field, map) in [("labels", &meta.labels), ("annotations", &meta.annotations)] {
        if let Some(map) = map
            && !map.is_empty()
        {
            let values = map
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect();
            metadata.insert(field.into(), Value::Object(values));
        }
    }
    let mut doc = Map::new();
    doc.insert("apiVersion".into(), Value::from(kind.load_as.as_str()));
    doc.insert("kind".into(), Value::from(kind.resource.kind.as_str()));
    doc.insert("metadata".into(), Value::Object(metadata));
    if let Value::Object(body) = &obj.data {
        for (field, value) in body {
            if kind.is_istio() && field == "status" {
                continue;
            }
            // v1beta1 EndpointSlice's `topology` has no place in v1 (its node name moved
            // to `nodeName`, which the mesh does not use).
            if field == "endpoints" && kind.load_as != kind.resource.api_version {
                doc.insert(field.clone(), without_topology(value));
                continue;
            }
            doc.insert(field.clone(), value.clone());
        }
    }
    Value::Object(doc)
}

fn without_topology(endpoints: &Value) -> Value {
    match endpoints {
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|e| match e {
                    Value::Object(m) => Value::Object(
                        m.iter()
                            .filter(|(k, _)| k.as_str() != "topology")
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    ),
                    other => other.clone(),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `NAME: document 1, line 1, column 295: spec.http[0].timeout: ...` ->
/// `NAME: spec.http[0].timeout: ...`.
fn without_position(name: &str, error: &str) -> String {
    let prefix = format!("{name}: document ");
    match error
        .strip_prefix(&prefix)
        .and_then(|rest| rest.split_once(", column "))
    {
        Some((_, tail)) => match tail.split_once(": ") {
            Some((_, message)) => format!("{name}: {message}"),
            None => error.to_string(),
        },
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::without_position;

    #[test]
    fn errors_lose_the_position_in_the_objects_json() {
        let name = "VirtualService default/reviews";
        assert_eq!(
            without_position(
                name,
                "VirtualService default/reviews: document 1, line 1, column 295: spec.http[0].timeout: invalid duration \"soon\""
            ),
            "VirtualService default/reviews: spec.http[0].timeout: invalid duration \"soon\""
        );
        assert_eq!(without_position(name, "other: text"), "other: text");
    }
}
