//! Waiting until a configuration change is in force on the proxies: what `meshctl apply` does
//! by default and `meshctl wait` does on its own (Istio's `istioctl x wait --for distribution`).
//!
//! ```text
//!  expected resources ──/debug/configz──> generation G that holds them (content compared)
//!                      ──/debug/syncz───> per proxy stream: generation >= G and every config
//!                                          type SYNCED (ACKed at the nonce last sent)
//! ```
//!
//! A stream's `generation` in syncz rises only after what that generation changed was sent,
//! so `generation >= G` and SYNCED means the proxy ACKed a version containing the change (a
//! NACK of the latest push ends the wait with the proxy's reason). `apply` takes a syncz
//! snapshot before it writes: a proxy whose streams got no push since then (same nonces) is
//! not affected by the change and is not waited for.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::admin_client::AdminClient;
use crate::up::meshdir::{self, Document, ResourceId};
use crate::up::state::{self, MeshState};

/// How long `apply` and `wait` wait by default (istioctl x wait's 30 s).
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Between two looks at the control plane.
const POLL: Duration = Duration::from_millis(100);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// The xDS types of the configuration (SDS is the proxy's certificate, not configuration).
const CONFIG_TYPES: [&str; 4] = ["cds", "eds", "lds", "rds"];

/// What the control plane must hold for a change to be in force.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expectation {
    /// Per resource, its content as the loader reads it ([`mesh_api::Object::to_json`]), or
    /// `None`: the resource must be gone.
    pub resources: BTreeMap<ResourceId, Option<Value>>,
    /// Also no resource beyond these (the whole configuration is expected).
    pub exact: bool,
    /// Files written for the change, relative to the config dir: a rejection of one by the
    /// control plane ends the wait.
    pub files: Vec<PathBuf>,
}

fn id_of(meta: &mesh_api::ResourceMeta) -> ResourceId {
    ResourceId {
        kind: meta.kind.clone(),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
    }
}

impl Expectation {
    /// The resources of `docs` in force (or, with `delete`, gone).
    pub fn of_documents(docs: &[Document], delete: bool) -> Expectation {
        let mut e = Expectation::default();
        for d in docs {
            let config = mesh_api::load_str("apply", &d.text);
            for r in &config.resources {
                let object = (!delete).then(|| r.object.to_json());
                e.resources.insert(id_of(&r.meta), object);
            }
            if !delete {
                e.files.extend(d.ids.iter().map(ResourceId::applied_path));
            }
        }
        e
    }

    /// Every resource of a loaded configuration, and nothing else.
    pub fn of_config(config: &mesh_api::Config) -> Expectation {
        Expectation {
            resources: config
                .resources
                .iter()
                .map(|r| (id_of(&r.meta), Some(r.object.to_json())))
                .collect(),
            exact: true,
            files: Vec::new(),
        }
    }
}

/// Where `/debug/configz` stands against an expectation.
#[derive(Debug, PartialEq)]
pub enum ConfigState {
    /// In force from this generation on.
    InForce(u64),
    /// Not yet: what differs.
    Pending(String),
    /// The control plane refused a file of the change.
    Rejected(String),
}

/// Compares a `/debug/configz` document with `expected`.
pub fn config_state(configz: &Value, expected: &Expectation) -> ConfigState {
    for e in configz["errors"].as_array().into_iter().flatten() {
        let file = e["file"].as_str().unwrap_or_default();
        if expected.files.iter().any(|f| Path::new(file).ends_with(f)) {
            let why: Vec<&str> = e["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            return ConfigState::Rejected(format!("{file}: {}", why.join("; ")));
        }
    }
    let mut held: BTreeMap<ResourceId, &Value> = BTreeMap::new();
    for r in configz["resources"].as_array().into_iter().flatten() {
        let id = ResourceId {
            kind: r["kind"].as_str().unwrap_or_default().to_string(),
            namespace: r["namespace"].as_str().unwrap_or_default().to_string(),
            name: r["name"].as_str().unwrap_or_default().to_string(),
        };
        held.insert(id, &r["object"]);
    }
    for (id, want) in &expected.resources {
        match (want, held.get(id)) {
            (Some(w), Some(h)) if *h == w => {}
            (Some(_), Some(_)) => return ConfigState::Pending(format!("{id}: an older version")),
            (Some(_), None) => return ConfigState::Pending(format!("{id}: not loaded yet")),
            (None, Some(_)) => return ConfigState::Pending(format!("{id}: still in force")),
            (None, None) => {}
        }
    }
    if expected.exact
        && let Some(extra) = held.keys().find(|id| !expected.resources.contains_key(*id))
    {
        return ConfigState::Pending(format!("{extra}: still in force"));
    }
    match configz["generation"].as_u64() {
        Some(g) => ConfigState::InForce(g),
        None => ConfigState::Pending("/debug/configz has no generation".into()),
    }
}

/// One proxy as syncz shows it (its most advanced stream when it has several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySync {
    /// `POD.NAMESPACE`, as `proxy-status` names it.
    pub name: String,
    pub generation: u64,
    /// Per config type, the nonce last sent.
    pub sent: BTreeMap<String, String>,
    /// `None` when every config type is ACKed at its latest nonce, else the first that is not
    /// (`RDS STALE`).
    pub behind: Option<String>,
    /// The proxy's rejection of a latest push, `CDS: reason`.
    pub rejected: Option<String>,
}

impl ProxySync {
    fn done_at(&self, generation: u64) -> bool {
        self.generation >= generation && self.behind.is_none()
    }
}

/// Per node id, the proxies of a `/debug/syncz` document.
pub fn proxies(syncz: &Value) -> BTreeMap<String, ProxySync> {
    let mut out: BTreeMap<String, ProxySync> = BTreeMap::new();
    for p in syncz.as_array().into_iter().flatten() {
        let Some(id) = p["proxy"].as_str() else {
            continue;
        };
        let pod = p["pod"].as_str().unwrap_or_default();
        let name = if pod.is_empty() {
            id.to_string()
        } else {
            format!("{pod}.{}", p["namespace"].as_str().unwrap_or_default())
        };
        let mut sent = BTreeMap::new();
        let mut behind = None;
        let mut rejected = None;
        for t in CONFIG_TYPES {
            let s = &p["types"][t];
            let nonce = s["sent_nonce"].as_str().unwrap_or_default();
            sent.insert(t.to_string(), nonce.to_string());
            let status = s["status"].as_str().unwrap_or("NOT SENT");
            let nothing_asked = s["requested"].as_array().is_none_or(|r| r.is_empty());
            // CDS and LDS are always sent; EDS and RDS only when something names them.
            let ok = status == "SYNCED"
                || (status == "NOT SENT" && matches!(t, "eds" | "rds") && nothing_asked);
            if !ok && behind.is_none() {
                behind = Some(format!("{} {status}", t.to_uppercase()));
            }
            if !nonce.is_empty()
                && s["last_nack"]["nonce"].as_str() == Some(nonce)
                && rejected.is_none()
            {
                let why = s["last_nack"]["error"].as_str().unwrap_or_default();
                rejected = Some(format!("{}: {why}", t.to_uppercase()));
            }
        }
        let this = ProxySync {
            name,
            generation: p["generation"].as_u64().unwrap_or(0),
            sent,
            behind,
            rejected,
        };
        // A reconnecting proxy has two streams for a while: keep the one further on.
        let better = |old: &ProxySync| {
            (this.generation, this.behind.is_none()) > (old.generation, old.behind.is_none())
        };
        match out.get(id) {
            Some(old) if !better(old) => {}
            _ => {
                out.insert(id.to_string(), this);
            }
        }
    }
    out
}

/// Where the proxies stand on the way to `generation`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Affected and ACKed.
    pub acked: Vec<String>,
    /// Not affected: no push since the snapshot taken before the change.
    pub unaffected: Vec<String>,
    /// Not there yet, with why.
    pub waiting: Vec<String>,
    /// Rejected the push, with the reason.
    pub rejected: Vec<String>,
}

/// Compares the proxies now with `before` (taken before the change; `None`: every proxy is
/// affected).
pub fn progress(
    now: &BTreeMap<String, ProxySync>,
    before: Option<&BTreeMap<String, ProxySync>>,
    generation: u64,
) -> Progress {
    let mut p = Progress::default();
    for (id, s) in now {
        if s.generation < generation {
            p.waiting.push(format!(
                "{} (at generation {}, not {generation} yet)",
                s.name, s.generation
            ));
            continue;
        }
        // Nothing sent since before the change: whatever its state, not the change's doing.
        let untouched = before
            .and_then(|b| b.get(id))
            .is_some_and(|b| b.sent == s.sent);
        if untouched {
            p.unaffected.push(s.name.clone());
        } else if let Some(why) = &s.rejected {
            p.rejected.push(format!("{} rejected it: {why}", s.name));
        } else if s.done_at(generation) {
            p.acked.push(s.name.clone());
        } else {
            p.waiting.push(format!(
                "{} ({})",
                s.name,
                s.behind.as_deref().unwrap_or("")
            ));
        }
    }
    p
}

/// The control plane's `/debug/configz` or `/debug/syncz`.
fn debug_json(debug: SocketAddr, path: &str) -> anyhow::Result<Value> {
    let a = AdminClient::new(debug, REQUEST_TIMEOUT)
        .get(path)
        .with_context(|| format!("the control plane's {path} at {debug}"))?;
    if a.status != 200 {
        bail!("{debug}{path} answered {}", a.status.as_u16());
    }
    serde_json::from_slice(&a.body).with_context(|| format!("{debug}{path} is not JSON"))
}

/// The proxies before a change, for [`wait`]'s notion of affected.
pub fn snapshot(debug: SocketAddr) -> anyhow::Result<BTreeMap<String, ProxySync>> {
    Ok(proxies(&debug_json(debug, "/debug/syncz")?))
}

/// What [`wait`] saw.
#[derive(Debug)]
pub struct Outcome {
    pub generation: u64,
    pub progress: Progress,
}

impl Outcome {
    /// `in force (generation 3); acknowledged by 2 proxies: a, b; not affected: c`.
    pub fn describe(&self) -> String {
        let p = &self.progress;
        let mut out = format!("in force (configuration generation {})", self.generation);
        if p.acked.is_empty() {
            out.push_str("; no proxy is affected");
        } else {
            out.push_str(&format!(
                "; acknowledged by {} prox{}: {}",
                p.acked.len(),
                if p.acked.len() == 1 { "y" } else { "ies" },
                p.acked.join(", ")
            ));
        }
        if !p.unaffected.is_empty() {
            out.push_str(&format!("; not affected: {}", p.unaffected.join(", ")));
        }
        out
    }
}

/// Waits until `expected` is in force and every affected proxy ACKed it.
pub fn wait(
    debug: SocketAddr,
    expected: &Expectation,
    before: Option<&BTreeMap<String, ProxySync>>,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let deadline = Instant::now() + timeout;
    let generation = loop {
        let why = match debug_json(debug, "/debug/configz") {
            Ok(configz) => match config_state(&configz, expected) {
                ConfigState::InForce(g) => break g,
                ConfigState::Rejected(why) => {
                    bail!("the control plane refused the change: {why}")
                }
                ConfigState::Pending(why) => why,
            },
            Err(e) => mesh_api::report::one_line(e.as_ref()),
        };
        if Instant::now() >= deadline {
            bail!(
                "timed out after {} waiting for the control plane to load the change: {why}",
                show_duration(timeout)
            );
        }
        std::thread::sleep(POLL);
    };
    loop {
        let last = match snapshot(debug) {
            Ok(now) => {
                let p = progress(&now, before, generation);
                if !p.rejected.is_empty() {
                    bail!(
                        "configuration generation {generation} was rejected: {}",
                        p.rejected.join("; ")
                    );
                }
                if p.waiting.is_empty() {
                    return Ok(Outcome {
                        generation,
                        progress: p,
                    });
                }
                format!("waiting for {}", p.waiting.join(", "))
            }
            Err(e) => mesh_api::report::one_line(e.as_ref()),
        };
        if Instant::now() >= deadline {
            bail!(
                "timed out after {} (configuration generation {generation}): {last}",
                show_duration(timeout)
            );
        }
        std::thread::sleep(POLL);
    }
}

fn show_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The local mesh in the state directory, or why there is none.
pub fn running_mesh() -> anyhow::Result<MeshState> {
    let dir = state::state_dir()?;
    match MeshState::load(&dir)? {
        Some(s) => Ok(s),
        None => bail!(
            "no local mesh running (state dir {}); start one with `meshctl up`",
            dir.display()
        ),
    }
}

/// What `meshctl wait` waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WaitFor {
    /// The resources in force and ACKed by the proxies.
    Distribution,
    /// The resources gone and that ACKed by the proxies.
    Delete,
}

/// Wait until the running mesh's proxies have ACKed a configuration: a resource (`KIND
/// NAME[.NAMESPACE]`, Istio's `istioctl x wait` shape), the resources of files (`-f`), or, with
/// neither, everything in the running mesh's config dir.
#[derive(Args, Debug)]
pub struct WaitArgs {
    /// The resource's kind: `virtualservice` (`vs`), `destinationrule` (`dr`), `gateway`
    /// (`gw`), `serviceentry` (`se`), `workloadentry` (`we`), `peerauthentication` (`pa`), ...
    #[arg(requires = "name")]
    pub kind: Option<String>,
    /// `NAME` or `NAME.NAMESPACE` (default namespace `default`).
    pub name: Option<String>,
    /// The resources of these files or directories instead.
    #[arg(short = 'f', long = "filename", conflicts_with = "kind")]
    pub files: Vec<PathBuf>,
    /// `distribution` (in force) or `delete` (gone).
    #[arg(long = "for", value_enum, default_value_t = WaitFor::Distribution)]
    pub wait_for: WaitFor,
    /// How long to wait, e.g. `30s`, `2m`.
    #[arg(long, default_value = "30s", value_parser = crate::up::cli::parse_duration)]
    pub timeout: Duration,
}

/// Istio's kinds by their lowercase name, plural and short name.
fn kind_of(arg: &str) -> Option<&'static str> {
    const KINDS: [(&str, &str); 10] = [
        ("VirtualService", "vs"),
        ("DestinationRule", "dr"),
        ("Gateway", "gw"),
        ("ServiceEntry", "se"),
        ("WorkloadEntry", "we"),
        ("Sidecar", ""),
        ("PeerAuthentication", "pa"),
        ("AuthorizationPolicy", "ap"),
        ("RequestAuthentication", "ra"),
        ("Service", "svc"),
    ];
    let a = arg.to_ascii_lowercase();
    let a = a.split('.').next().unwrap_or_default();
    KINDS.iter().map(|(k, _)| *k).find(|k| {
        let lower = k.to_ascii_lowercase();
        a == lower
            || a == format!("{lower}s")
            || KINDS
                .iter()
                .any(|(kk, short)| kk == k && !short.is_empty() && a == *short)
    })
}

fn expectation(a: &WaitArgs, state: &MeshState) -> anyhow::Result<(Expectation, String)> {
    let delete = a.wait_for == WaitFor::Delete;
    if !a.files.is_empty() {
        let docs = meshdir::read_apply_input(&a.files)?;
        let e = Expectation::of_documents(&docs, delete);
        let what = e
            .resources
            .keys()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        return Ok((e, what));
    }
    let config = mesh_api::load_path(&state.config_dir);
    let (Some(kind), Some(name)) = (&a.kind, &a.name) else {
        return Ok((
            Expectation::of_config(&config),
            format!("the configuration in {}", state.config_dir.display()),
        ));
    };
    let Some(kind) = kind_of(kind) else {
        bail!("unknown kind {kind:?}: use an Istio kind such as virtualservice, destinationrule");
    };
    let (name, namespace) = name.split_once('.').unwrap_or((name, "default"));
    let id = ResourceId {
        kind: kind.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    let object = config
        .resources
        .iter()
        .find(|r| id_of(&r.meta) == id)
        .map(|r| r.object.to_json());
    if object.is_none() && !delete {
        bail!(
            "{id} is not in the running mesh's configuration ({}); `--for delete` waits for a removal",
            state.config_dir.display()
        );
    }
    let what = id.to_string();
    let mut e = Expectation::default();
    e.resources.insert(id, object.filter(|_| !delete));
    Ok((e, what))
}

fn run(a: &WaitArgs) -> anyhow::Result<()> {
    let state = running_mesh()?;
    let (expected, what) = expectation(a, &state)?;
    let outcome = wait(
        state.control_plane.debug_address,
        &expected,
        None,
        a.timeout,
    )?;
    println!("{what}: {}", outcome.describe());
    Ok(())
}

/// `meshctl wait`.
pub fn main(a: WaitArgs) -> ExitCode {
    match run(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshctl wait: {}", mesh_api::report::one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id(kind: &str, name: &str) -> ResourceId {
        ResourceId {
            kind: kind.into(),
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn configz_is_compared_by_content() {
        let configz = |weight: u32| {
            json!({"generation": 4, "errors": [], "resources": [
                {"kind": "VirtualService", "namespace": "default", "name": "hw",
                 "object": {"spec": {"weight": weight}}},
                {"kind": "DestinationRule", "namespace": "default", "name": "hw", "object": {}}]})
        };
        let mut e = Expectation::default();
        e.resources.insert(
            id("VirtualService", "hw"),
            Some(json!({"spec": {"weight": 10}})),
        );
        assert_eq!(config_state(&configz(10), &e), ConfigState::InForce(4));
        assert!(matches!(
            config_state(&configz(50), &e),
            ConfigState::Pending(_)
        ));
        // Deleted: in force once gone.
        e.resources.insert(id("DestinationRule", "hw"), None);
        assert!(matches!(
            config_state(&configz(10), &e),
            ConfigState::Pending(w) if w.contains("still in force")
        ));
        // The whole configuration: an extra resource is pending.
        let mut whole = Expectation {
            exact: true,
            ..Expectation::default()
        };
        whole.resources.insert(
            id("VirtualService", "hw"),
            Some(json!({"spec": {"weight": 10}})),
        );
        assert!(matches!(
            config_state(&configz(10), &whole),
            ConfigState::Pending(_)
        ));
        // A file of the change refused by the control plane.
        let refused = json!({"generation": 5, "resources": [], "errors": [
            {"file": "/s/config/applied/virtualservice.default.hw.yaml", "errors": ["bad weight"]}]});
        e.files = vec!["applied/virtualservice.default.hw.yaml".into()];
        assert!(matches!(
            config_state(&refused, &e),
            ConfigState::Rejected(w) if w.contains("bad weight")
        ));
    }

    fn stream(pod: &str, generation: u64, rds: (&str, &str), nack: Option<&str>) -> Value {
        let synced = json!({"status": "SYNCED", "sent_nonce": "1-1"});
        let mut r = json!({"status": rds.1, "sent_nonce": rds.0, "requested": ["80"]});
        if let Some(e) = nack {
            r["last_nack"] = json!({"nonce": rds.0, "error": e});
        }
        json!({"proxy": format!("sidecar~{pod}"), "pod": pod, "namespace": "default",
               "generation": generation,
               "types": {"cds": synced, "lds": synced, "eds": synced, "rds": r}})
    }

    #[test]
    fn affected_proxies_are_those_that_got_a_push() {
        let before = proxies(&json!([
            stream("a", 2, ("1-2", "SYNCED"), None),
            stream("b", 2, ("1-2", "SYNCED"), None),
        ]));
        // a got a new route config and has not ACKed it; b is not at generation 3 yet.
        let now = proxies(&json!([
            stream("a", 3, ("1-3", "STALE"), None),
            stream("b", 2, ("1-2", "SYNCED"), None),
        ]));
        let p = progress(&now, Some(&before), 3);
        assert_eq!(p.waiting.len(), 2, "{p:?}");
        assert!(p.waiting[0].contains("RDS STALE"), "{p:?}");
        // a ACKed; b reached 3 without a push: not affected.
        let now = proxies(&json!([
            stream("a", 3, ("1-3", "SYNCED"), None),
            stream("b", 3, ("1-2", "SYNCED"), None),
        ]));
        let p = progress(&now, Some(&before), 3);
        assert_eq!(p.acked, ["a.default"]);
        assert_eq!(p.unaffected, ["b.default"]);
        assert!(p.waiting.is_empty());
        // Without a snapshot before, every proxy counts.
        assert_eq!(progress(&now, None, 3).acked.len(), 2);
        // A NACK of the latest push.
        let now = proxies(&json!([stream(
            "a",
            3,
            ("1-3", "STALE"),
            Some("bad route")
        )]));
        let p = progress(&now, Some(&before), 3);
        assert_eq!(p.rejected, ["a.default rejected it: RDS: bad route"]);
    }

    #[test]
    fn a_reconnected_proxy_counts_by_its_newer_stream() {
        let now = proxies(&json!([
            stream("a", 2, ("1-2", "STALE"), None),
            stream("a", 3, ("2-1", "SYNCED"), None),
        ]));
        assert_eq!(now.len(), 1);
        assert!(now["sidecar~a"].done_at(3));
    }

    #[test]
    fn kinds_by_name_plural_and_short_name() {
        assert_eq!(kind_of("virtualservice"), Some("VirtualService"));
        assert_eq!(kind_of("VirtualServices"), Some("VirtualService"));
        assert_eq!(kind_of("vs"), Some("VirtualService"));
        assert_eq!(
            kind_of("destinationrule.networking.istio.io"),
            Some("DestinationRule")
        );
        assert_eq!(kind_of("pa"), Some("PeerAuthentication"));
        assert_eq!(kind_of("nope"), None);
    }
}
