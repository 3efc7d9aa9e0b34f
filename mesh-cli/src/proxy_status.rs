//! `meshctl proxy-status [NAME]`: per connected proxy, whether each xDS type (CDS, LDS, EDS,
//! RDS, and SDS for a proxy that takes its certificates over xDS) is in step with the control
//! plane, read from its `/debug/syncz`, in istioctl's columns: `NAME CLUSTER ISTIOD VERSION
//! SUBSCRIBED TYPES`, and with `--verbose` one column per type with its state and age.
//!
//! With a NAME it compares, per type, what the control plane last sent that proxy (version and
//! number of resources, from syncz) with what the proxy holds (its admin's `/config_dump`),
//! as `istioctl proxy-status POD` does: `Clusters Match`, or `Clusters Don't Match` with both
//! sides and the proxy's rejection when it NACKed. A version is a hash of the resources'
//! names and bytes, so equal versions mean equal content.
//!
//! VERSION is the proxy's own (`/server_info` of its admin) when the local mesh's state says
//! where its admin is; a control plane that reports `istio_version` in syncz wins.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::Value;

use crate::admin_client::{AdminClient, Transport};
use crate::up::state::{self, MeshState};

/// Output format of `proxy-status`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StatusFormat {
    Table,
    Json,
}

/// Show each proxy's xDS sync state with the control plane.
#[derive(Args, Debug)]
pub struct ProxyStatusArgs {
    /// Only this proxy: its pod name, `POD.NAMESPACE`, its node id, or in the local mesh any
    /// name the other commands take (`gateway`, `deploy/NAME.NAMESPACE`); compares what the
    /// control plane sent it with what it holds.
    pub name: Option<String>,
    /// The control plane's debug address (default: the running local mesh's).
    #[arg(long = "control-plane", conflicts_with = "kubeconfig")]
    pub control_plane: Option<SocketAddr>,
    /// A Kubernetes cluster instead of the local mesh: its control plane pod's debug port,
    /// reached through the API server (see docs/kubernetes.md).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, requires = "kubeconfig")]
    pub context: Option<String>,
    /// The control plane's namespace in the cluster.
    #[arg(short = 'i', long = "istio-namespace", default_value = "istio-system")]
    pub istio_namespace: String,
    /// The control plane's debug port in its pod.
    #[arg(long, default_value_t = crate::cluster::DEBUG_PORT)]
    pub debug_port: u16,
    /// Read the control plane's debug port through the API server's pod proxy instead of a
    /// port-forward (no kubelet involved; the API server must reach pod IPs).
    #[arg(long, requires = "kubeconfig")]
    pub pod_proxy: bool,
    /// The namespace of NAME when it names none (default: the context's, else `default`).
    #[arg(short = 'n', long, requires = "kubeconfig")]
    pub namespace: Option<String>,
    /// The proxy's admin address, for the comparison of NAME (default: from the local mesh,
    /// or on a cluster a port-forward to its pod's port 15000).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// One column per xDS type with its state and how long ago it was sent or acknowledged.
    #[arg(short, long)]
    pub verbose: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = StatusFormat::Table)]
    pub output: StatusFormat,
}

/// How long to wait for the control plane or a proxy's admin.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The xDS types of the table, in istioctl's order: syncz key, column, resource noun.
const TYPES: [(&str, &str, &str); 5] = [
    ("cds", "CDS", "Clusters"),
    ("lds", "LDS", "Listeners"),
    ("eds", "EDS", "Endpoints"),
    ("rds", "RDS", "Routes"),
    ("sds", "SDS", "Secrets"),
];

/// Status of a type the proxy never subscribed to (Istio's word).
pub const IGNORED: &str = "IGNORED";

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyRow {
    pub name: String,
    /// The full node id.
    pub proxy: String,
    pub cluster: String,
    pub cds: String,
    pub lds: String,
    pub eds: String,
    pub rds: String,
    /// `IGNORED` unless the proxy takes its certificates over xDS (Envoy does; mesh-proxy
    /// asks the CA directly).
    pub sds: String,
    pub istiod: String,
    pub version: String,
    /// `CDS`, `LDS`, ... the types the proxy subscribed to.
    pub subscribed: Vec<String>,
    /// Per type, how long ago its state began: acknowledged (SYNCED) or sent (STALE).
    pub age: BTreeMap<String, String>,
    /// Per type, the proxy's last rejection (NACK) still in force.
    pub rejected: BTreeMap<String, String>,
    /// `plaintext` or `secure` ADS port.
    pub port: String,
    /// The SPIFFE identity a secure stream authenticated as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

impl ProxyRow {
    fn status(&self, key: &str) -> &str {
        match key {
            "cds" => &self.cds,
            "lds" => &self.lds,
            "eds" => &self.eds,
            "rds" => &self.rds,
            _ => &self.sds,
        }
    }

    /// `4 (CDS,LDS,EDS,RDS)`.
    pub fn subscribed_types(&self) -> String {
        format!("{} ({})", self.subscribed.len(), self.subscribed.join(","))
    }
}

/// The control plane's debug address of the local mesh in the state directory.
pub fn local_debug_address() -> anyhow::Result<SocketAddr> {
    let dir = state::state_dir()?;
    match MeshState::load(&dir)? {
        Some(s) => Ok(s.control_plane.debug_address),
        None => bail!(
            "no local mesh running (state dir {}); start one with `meshctl up` or pass --control-plane ADDR",
            dir.display()
        ),
    }
}

/// Reads `/debug/syncz` from the control plane's debug port.
pub fn fetch_syncz(debug: impl Into<Transport>) -> anyhow::Result<Value> {
    let debug = debug.into();
    let a = AdminClient::new(debug.clone(), TIMEOUT).get("/debug/syncz")?;
    if a.status != 200 {
        bail!("{debug}/debug/syncz answered {}", a.status.as_u16());
    }
    serde_json::from_slice(&a.body).with_context(|| format!("{debug}/debug/syncz is not JSON"))
}

/// Seconds, minutes, hours: `45s`, `3m12s`, `2h5m`.
pub fn format_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

fn parse_time(v: &Value) -> Option<SystemTime> {
    let t =
        time::OffsetDateTime::parse(v.as_str()?, &time::format_description::well_known::Rfc3339)
            .ok()?;
    Some(SystemTime::from(t))
}

/// The rows of a `/debug/syncz` document, sorted by name; `filter` keeps one proxy. `now`
/// dates the ages.
pub fn rows(
    syncz: &Value,
    control_plane: &str,
    filter: Option<&str>,
    now: SystemTime,
) -> Vec<ProxyRow> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut out: Vec<ProxyRow> = Vec::new();
    for p in syncz.as_array().into_iter().flatten() {
        let id = text(&p["proxy"]);
        let pod = text(&p["pod"]);
        let ns = text(&p["namespace"]);
        let name = if pod.is_empty() {
            id.clone()
        } else {
            format!("{pod}.{ns}")
        };
        if let Some(f) = filter
            && f != pod
            && f != name
            && f != id
        {
            continue;
        }
        let mut statuses: BTreeMap<&str, String> = BTreeMap::new();
        let mut subscribed = Vec::new();
        let mut age = BTreeMap::new();
        let mut rejected = BTreeMap::new();
        for (key, column, _) in TYPES {
            let t = &p["types"][key];
            let status = match t["status"].as_str() {
                Some(s) => s.to_string(),
                None if key == "sds" => IGNORED.to_string(),
                None => "NOT SENT".to_string(),
            };
            let asked = t["requested"].as_array().is_some_and(|r| !r.is_empty());
            if t.is_object() && (status != "NOT SENT" || asked) {
                subscribed.push(column.to_string());
            }
            let since = if status == "SYNCED" {
                parse_time(&t["acked_at"])
            } else {
                parse_time(&t["sent_at"])
            };
            if let Some(at) = since {
                age.insert(
                    key.to_string(),
                    format_age(now.duration_since(at).unwrap_or_default()),
                );
            }
            if let Some(e) = t["last_nack"]["error"].as_str() {
                rejected.insert(key.to_string(), e.to_string());
            }
            statuses.insert(key, status);
        }
        let mut take = |k: &str| statuses.remove(k).unwrap_or_default();
        let version = ["istio_version", "proxy_version", "version"]
            .iter()
            .find_map(|k| p[*k].as_str())
            .unwrap_or("-")
            .to_string();
        let row = ProxyRow {
            name,
            proxy: id,
            cluster: p["cluster_id"].as_str().unwrap_or("-").to_string(),
            cds: take("cds"),
            lds: take("lds"),
            eds: take("eds"),
            rds: take("rds"),
            sds: take("sds"),
            istiod: control_plane.to_string(),
            version,
            subscribed,
            age,
            rejected,
            port: text(&p["port"]),
            identity: p["identity"].as_str().map(str::to_string),
        };
        // A reconnecting proxy has two streams for a while: keep the most in-step one.
        match out.iter_mut().find(|r| r.name == row.name) {
            Some(r) if synced_count(&row) > synced_count(r) => *r = row,
            Some(_) => {}
            None => out.push(row),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn synced_count(r: &ProxyRow) -> usize {
    [&r.cds, &r.lds, &r.eds, &r.rds, &r.sds]
        .iter()
        .filter(|s| s.as_str() == "SYNCED")
        .count()
}

/// Left-aligned columns three spaces apart, as istioctl's tabwriter prints them.
pub fn render_table<S: AsRef<str>>(header: &[&str], rows: &[Vec<S>]) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(c.as_ref().chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            l.push_str(c);
            if i + 1 < cells.len() {
                let pad = widths[i] - c.chars().count() + 3;
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().take(cols).map(AsRef::as_ref).collect());
    }
    out
}

/// The table of `rows`: istioctl's `NAME CLUSTER ISTIOD VERSION SUBSCRIBED TYPES`, or with
/// `verbose` a column per type with its state and age.
pub fn render(rows: &[ProxyRow], verbose: bool) -> String {
    if !verbose {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.cluster.clone(),
                    r.istiod.clone(),
                    r.version.clone(),
                    r.subscribed_types(),
                ]
            })
            .collect();
        return render_table(
            &["NAME", "CLUSTER", "ISTIOD", "VERSION", "SUBSCRIBED TYPES"],
            &cells,
        );
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut c = vec![r.name.clone(), r.cluster.clone()];
            for (key, _, _) in TYPES {
                let s = r.status(key);
                c.push(match r.age.get(key) {
                    Some(age) if s != IGNORED && s != "NOT SENT" => format!("{s} ({age})"),
                    _ => s.to_string(),
                });
            }
            c.push(r.istiod.clone());
            c.push(r.version.clone());
            c
        })
        .collect();
    render_table(
        &[
            "NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "SDS", "ISTIOD", "VERSION",
        ],
        &cells,
    )
}

/// Lines naming every type not in step, for the foot of the short table.
pub fn not_in_step(rows: &[ProxyRow]) -> Vec<String> {
    let mut out = Vec::new();
    for r in rows {
        for (key, column, _) in TYPES {
            let s = r.status(key);
            if s == "SYNCED"
                || s == IGNORED
                || (s == "NOT SENT" && !r.subscribed.iter().any(|c| c == column))
            {
                continue;
            }
            let why = r
                .rejected
                .get(key)
                .map(|e| format!(": rejected: {e}"))
                .unwrap_or_default();
            out.push(format!("{}: {column} {s}{why}", r.name));
        }
    }
    out
}

/// The `version` of a proxy's `/server_info`: `mesh-proxy/0.1.0` as it is; Envoy's
/// `HASH/1.31.0/Clean/RELEASE/BoringSSL` as `envoy/1.31.0`.
pub fn short_version(server_info: &Value) -> Option<String> {
    let v = server_info["version"].as_str()?;
    let parts: Vec<&str> = v.split('/').collect();
    if parts.len() >= 3 && parts[0].chars().all(|c| c.is_ascii_hexdigit()) {
        return Some(format!("envoy/{}", parts[1]));
    }
    Some(v.to_string())
}

/// One type compared between the control plane and the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypeComparison {
    /// `cds`, `lds`, ...
    #[serde(rename = "type")]
    pub xds_type: String,
    /// `Clusters`, `Listeners`, ...
    pub what: String,
    pub matches: bool,
    pub control_plane_status: String,
    pub control_plane_version: String,
    pub control_plane_resources: u64,
    /// The version the proxy holds: the section's `version_info` (CDS, LDS), else the latest
    /// of its resources'.
    pub proxy_version: String,
    pub proxy_resources: u64,
    /// When the proxy last loaded this type.
    pub proxy_last_updated: Option<String>,
    /// The proxy's rejection of the latest push, if it NACKed it.
    pub rejected: Option<String>,
}

impl TypeComparison {
    /// `Clusters Match`, or `Clusters Don't Match` with both sides.
    pub fn render(&self) -> String {
        if self.matches {
            let when = match (&self.proxy_last_updated, self.xds_type.as_str()) {
                (Some(t), "rds") => format!(" (RDS last loaded at {t})"),
                _ => String::new(),
            };
            return format!("{} Match{when}\n", self.what);
        }
        let noun = self.what.to_lowercase();
        let mut out = format!(
            "{} Don't Match ({})\n  control plane sent: version {} ({} {noun})\n  proxy holds:        version {} ({} {noun})\n",
            self.what,
            self.control_plane_status,
            or_dash(&self.control_plane_version),
            self.control_plane_resources,
            or_dash(&self.proxy_version),
            self.proxy_resources,
        );
        if let Some(e) = &self.rejected {
            out.push_str(&format!("  the proxy rejected it: {e}\n"));
        }
        out
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// What a proxy's `/config_dump` holds of one type: its resources, the section's own version
/// if it has one.
#[derive(Debug, Default)]
struct Held {
    section_version: Option<String>,
    resources: Vec<HeldResource>,
}

#[derive(Debug, Clone, Default)]
struct HeldResource {
    /// The name the proxy subscribes by (EDS: the cluster, RDS: the route config).
    name: Option<String>,
    /// Empty when the proxy does not report it (Envoy's EDS dump).
    version: String,
    last_updated: Option<String>,
}

fn held(dump: &Value, key: &str) -> Held {
    let section = |suffix: &str| {
        dump["configs"]
            .as_array()
            .into_iter()
            .flatten()
            // The last name of the type: `RoutesConfigDump`, not `ScopedRoutesConfigDump`.
            .find(|c| {
                c["@type"]
                    .as_str()
                    .is_some_and(|t| t.rsplit('.').next() == Some(suffix))
            })
    };
    let items = |s: &Value, list: &str, inner: Option<&str>| -> Vec<HeldResource> {
        s[list]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| {
                let state = match inner {
                    Some(k) => &i[k],
                    None => i,
                };
                state.is_object().then(|| HeldResource {
                    name: [
                        &state["endpoint_config"]["cluster_name"],
                        &state["route_config"]["name"],
                        &state["name"],
                    ]
                    .into_iter()
                    .find_map(|v| v.as_str())
                    .map(str::to_string),
                    version: state["version_info"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    last_updated: state["last_updated"].as_str().map(str::to_string),
                })
            })
            .collect()
    };
    let (suffix, lists): (&str, &[(&str, Option<&str>)]) = match key {
        "cds" => (
            "ClustersConfigDump",
            &[
                ("dynamic_active_clusters", None),
                ("dynamic_warming_clusters", None),
            ],
        ),
        "lds" => (
            "ListenersConfigDump",
            &[("dynamic_listeners", Some("active_state"))],
        ),
        "eds" => ("EndpointsConfigDump", &[("dynamic_endpoint_configs", None)]),
        "rds" => ("RoutesConfigDump", &[("dynamic_route_configs", None)]),
        _ => ("SecretsConfigDump", &[("dynamic_active_secrets", None)]),
    };
    let Some(s) = section(suffix) else {
        return Held::default();
    };
    Held {
        section_version: s["version_info"]
            .as_str()
            .filter(|v| !v.is_empty())
            .map(str::to_string),
        resources: lists
            .iter()
            .flat_map(|(list, inner)| items(s, list, *inner))
            .collect(),
    }
}

/// Compares, per subscribed type, what syncz says the control plane sent `proxy` (one
/// connection object of `/debug/syncz`) with what `dump` (its `/config_dump?include_eds`)
/// holds.
pub fn compare(proxy: &Value, dump: &Value) -> Vec<TypeComparison> {
    let mut out = Vec::new();
    for (key, _, what) in TYPES {
        let t = &proxy["types"][key];
        if !t.is_object() {
            continue;
        }
        let status = t["status"].as_str().unwrap_or("NOT SENT").to_string();
        let sent_version = t["sent_version"].as_str().unwrap_or_default().to_string();
        let sent = t["sent_resources"].as_u64().unwrap_or(0);
        let mut h = held(dump, key);
        // A subscription by name (EDS, RDS, SDS) counts only what was asked for: Envoy's
        // endpoint dump also lists the inline endpoints of non-EDS clusters.
        let requested: Vec<&str> = t["requested"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !requested.is_empty() {
            h.resources
                .retain(|r| r.name.as_deref().is_some_and(|n| requested.contains(&n)));
        }
        let latest = h
            .resources
            .iter()
            .max_by(|a, b| a.last_updated.cmp(&b.last_updated))
            .cloned()
            .unwrap_or_default();
        let proxy_version = h.section_version.clone().unwrap_or(latest.version);
        // Versions a proxy does not report leave the count and its ACK to go by.
        let unreported =
            h.section_version.is_none() && h.resources.iter().all(|r| r.version.is_empty());
        let has_sent_version = h.section_version.as_deref() == Some(sent_version.as_str())
            || (h.section_version.is_none()
                && h.resources.iter().any(|r| r.version == sent_version))
            || (unreported && status == "SYNCED");
        let count = h.resources.len() as u64;
        let matches = if sent_version.is_empty() {
            count == 0
        } else {
            (has_sent_version || sent == 0) && count == sent
        };
        out.push(TypeComparison {
            xds_type: key.to_string(),
            what: what.to_string(),
            matches,
            control_plane_status: status,
            control_plane_version: sent_version,
            control_plane_resources: sent,
            proxy_version,
            proxy_resources: count,
            proxy_last_updated: latest.last_updated,
            rejected: t["last_nack"]["error"].as_str().map(str::to_string),
        });
    }
    out
}

/// Where the local mesh's proxies have their admin, by node id, when `debug` is the local
/// mesh's control plane.
fn local_admins(debug: SocketAddr) -> BTreeMap<String, SocketAddr> {
    let Ok(dir) = state::state_dir() else {
        return BTreeMap::new();
    };
    let Ok(Some(s)) = MeshState::load(&dir) else {
        return BTreeMap::new();
    };
    if s.control_plane.debug_address != debug {
        return BTreeMap::new();
    }
    std::iter::once((s.gateway.node_id.clone(), s.gateway.admin_address))
        .chain(
            s.sidecars
                .iter()
                .map(|c| (c.node_id.clone(), c.admin_address)),
        )
        .collect()
}

/// The node id `name` stands for in the local mesh, when `debug` is its control plane.
fn local_node_id(debug: SocketAddr, name: &str) -> Option<String> {
    let s = MeshState::load(&state::state_dir().ok()?).ok()??;
    if s.control_plane.debug_address != debug {
        return None;
    }
    let p = crate::up::names::resolve(&s, name).ok()?;
    Some(p.node_id().to_string())
}

fn admin_json(admin: &Transport, path: &str) -> anyhow::Result<Value> {
    let a = AdminClient::new(admin.clone(), TIMEOUT).get(path)?;
    if a.status != 200 {
        bail!(
            "GET {path} at {admin} answered {}: {}",
            a.status.as_u16(),
            a.text().trim()
        );
    }
    serde_json::from_slice(&a.body).with_context(|| format!("{path} at {admin} is not JSON"))
}

fn run(a: &ProxyStatusArgs) -> anyhow::Result<()> {
    // Where syncz comes from, how the control plane is named, and the local mesh's proxy
    // admins and names when it is the local mesh.
    // On a cluster, NAME is a pod (or `deploy/NAME`): its `POD.NAMESPACE` is the row's name,
    // and a port-forward reaches its admin.
    let mut cluster_proxy = None;
    let (syncz, control_plane, local) = match &a.kubeconfig {
        Some(kubeconfig) => {
            let config = crate::cluster::config(kubeconfig, a.context.as_deref())?;
            let (pod, transport) = crate::cluster::control_plane(
                &config,
                &a.istio_namespace,
                a.debug_port,
                a.pod_proxy,
            )?;
            if let Some(name) = &a.name {
                cluster_proxy = Some(crate::cluster::proxy_admin(
                    &config,
                    name,
                    a.namespace.as_deref(),
                )?);
            }
            (fetch_syncz(transport)?, pod, None)
        }
        None => {
            let debug = match a.control_plane {
                Some(addr) => addr,
                None => local_debug_address()?,
            };
            (
                fetch_syncz(debug)?,
                format!("mesh-control@{debug}"),
                Some(debug),
            )
        }
    };
    let admins = local.map(local_admins).unwrap_or_default();
    // The local mesh's names (`gateway`, `deploy/NAME.NS`) stand for the proxy's node id.
    let filter = a.name.as_deref().map(|n| match &cluster_proxy {
        Some((pod, _)) => pod.clone(),
        None => local
            .and_then(|debug| local_node_id(debug, n))
            .unwrap_or(n.to_string()),
    });
    let mut rows = rows(&syncz, &control_plane, filter.as_deref(), SystemTime::now());
    for r in rows.iter_mut().filter(|r| r.version == "-") {
        if let Some(admin) = admins.get(&r.proxy)
            && let Ok(info) = admin_json(&Transport::Tcp(*admin), "/server_info")
            && let Some(v) = short_version(&info)
        {
            r.version = v;
        }
    }
    let Some(name) = &a.name else {
        match a.output {
            StatusFormat::Table => {
                print!("{}", render(&rows, a.verbose));
                let lagging = not_in_step(&rows);
                if !a.verbose && !lagging.is_empty() {
                    eprintln!("\nnot in step (see --verbose):");
                    for l in lagging {
                        eprintln!("  {l}");
                    }
                }
            }
            StatusFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        }
        return Ok(());
    };
    let Some(row) = rows.first() else {
        bail!("no proxy named {name:?} is connected to the control plane {control_plane}");
    };
    // The connection object of the row kept (the most in-step one).
    let connection = syncz
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["proxy"].as_str() == Some(row.proxy.as_str()))
        .max_by_key(|p| {
            TYPES
                .iter()
                .filter(|(k, _, _)| p["types"][*k]["status"] == "SYNCED")
                .count()
        })
        .cloned()
        .unwrap_or(Value::Null);
    let admin = match (a.admin, cluster_proxy) {
        (Some(addr), _) => Transport::Tcp(addr),
        (None, Some((_, transport))) => transport,
        (None, None) => match admins.get(&row.proxy) {
            Some(addr) => Transport::Tcp(*addr),
            None => bail!(
                "the admin address of {} is not known: pass --admin ADDR",
                row.name
            ),
        },
    };
    let dump = admin_json(&admin, "/config_dump?include_eds")?;
    let comparison = compare(&connection, &dump);
    match a.output {
        StatusFormat::Table => {
            for c in &comparison {
                print!("{}", c.render());
            }
        }
        StatusFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "proxy": row,
                "admin": admin.to_string(),
                "comparison": comparison,
            }))?
        ),
    }
    Ok(())
}

/// `meshctl proxy-status`.
pub fn main(a: ProxyStatusArgs) -> ExitCode {
    match run(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "meshctl proxy-status: {}",
                mesh_api::report::one_line(e.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn table_columns_align() {
        let t = render_table(&["A", "LONGER"], &[vec!["xxxx", "y"], vec!["z", "w"]]);
        assert_eq!(t, "A      LONGER\nxxxx   y\nz      w\n");
    }

    #[test]
    fn ages_read_like_durations() {
        assert_eq!(format_age(Duration::from_secs(5)), "5s");
        assert_eq!(format_age(Duration::from_secs(192)), "3m12s");
        assert_eq!(format_age(Duration::from_secs(7500)), "2h5m");
    }

    fn syncz() -> Value {
        json!([
            {"proxy": "sidecar~127.0.0.1~client.default~default.svc.cluster.local",
             "pod": "client", "namespace": "default", "cluster_id": "Kubernetes", "port": "plaintext",
             "types": {"cds": {"status": "STALE", "sent_at": "2026-11-26T16:00:00.000Z"},
                       "lds": {"status": "SYNCED"}}},
            {"proxy": "sidecar~127.0.0.1~client.default~default.svc.cluster.local",
             "pod": "client", "namespace": "default", "cluster_id": "Kubernetes", "port": "secure",
             "identity": "spiffe://cluster.local/ns/default/sa/client",
             "types": {"cds": {"status": "SYNCED", "acked_at": "2026-11-26T16:00:00.000Z"},
                       "lds": {"status": "SYNCED"},
                       "eds": {"status": "SYNCED", "requested": ["outbound|5000||h"]},
                       "rds": {"status": "SYNCED"},
                       "sds": {"status": "SYNCED", "requested": ["default", "ROOTCA"]}}},
            {"proxy": "router~127.0.0.1~gw.istio-system~x", "pod": "gw", "namespace": "istio-system",
             "types": {"cds": {"status": "STALE", "sent_at": "2026-11-26T15:59:00.000Z",
                               "last_nack": {"error": "lb_policy: not a prime number"}},
                       "lds": {"status": "SYNCED"}, "eds": {"status": "SYNCED"},
                       "rds": {"status": "NOT SENT", "requested": []}}}
        ])
    }

    #[test]
    fn rows_from_syncz_keep_the_in_step_stream_and_show_sds() {
        let now = at(1_795_708_812); // 2026-11-26T16:00:12Z
        let r = rows(&syncz(), "cp", None, now);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].name, "client.default");
        assert_eq!(
            [&r[0].cds, &r[0].lds, &r[0].eds, &r[0].rds, &r[0].sds],
            ["SYNCED"; 5]
        );
        assert_eq!(r[0].subscribed_types(), "5 (CDS,LDS,EDS,RDS,SDS)");
        assert_eq!(r[0].age["cds"], "12s");
        assert_eq!(r[0].port, "secure");
        assert_eq!(r[1].name, "gw.istio-system");
        assert_eq!(r[1].sds, IGNORED);
        assert_eq!(r[1].cluster, "-");
        assert_eq!(r[1].subscribed_types(), "3 (CDS,LDS,EDS)");
        assert_eq!(r[1].age["cds"], "1m12s");
        assert_eq!(rows(&syncz(), "cp", Some("gw"), now).len(), 1);

        let table = render(&r, false);
        assert!(
            table.starts_with(
                "NAME              CLUSTER      ISTIOD   VERSION   SUBSCRIBED TYPES\n"
            ),
            "{table}"
        );
        assert!(table.contains("5 (CDS,LDS,EDS,RDS,SDS)"), "{table}");
        let verbose = render(&r, true);
        assert!(verbose.contains("CDS   "), "{verbose}");
        assert!(verbose.contains("STALE (1m12s)"), "{verbose}");
        assert!(verbose.contains("IGNORED"), "{verbose}");
        assert_eq!(
            not_in_step(&r),
            ["gw.istio-system: CDS STALE: rejected: lb_policy: not a prime number"]
        );
    }

    #[test]
    fn versions_from_server_info() {
        assert_eq!(
            short_version(&json!({"version": "mesh-proxy/0.1.0"})).as_deref(),
            Some("mesh-proxy/0.1.0")
        );
        assert_eq!(
            short_version(&json!({"version": "9c1a2b/1.31.0/Clean/RELEASE/BoringSSL"})).as_deref(),
            Some("envoy/1.31.0")
        );
        assert_eq!(short_version(&json!({})), None);
    }

    fn dump(cds_version: &str, clusters: usize) -> Value {
        let cluster = |i: usize| {
            json!({"version_info": cds_version, "cluster": {"name": format!("c{i}")},
                                         "last_updated": "2026-11-26T16:00:00Z"})
        };
        json!({"configs": [
            {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
             "version_info": cds_version,
             "static_clusters": [{"cluster": {"name": "xds"}}],
             "dynamic_active_clusters": (0..clusters).map(cluster).collect::<Vec<_>>()},
            {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
             "version_info": "l1",
             "dynamic_listeners": [{"name": "x", "active_state": {"version_info": "l1", "last_updated": "2026-11-26T16:00:00Z"}}]},
            {"@type": "type.googleapis.com/envoy.admin.v3.ScopedRoutesConfigDump"},
            {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
             "dynamic_route_configs": [
                {"version_info": "r0", "last_updated": "2026-11-26T15:00:00Z"},
                {"version_info": "r1", "last_updated": "2026-11-26T16:00:01Z"}]}
        ]})
    }

    fn sent(cds: &str, cds_count: u64, nack: Option<&str>) -> Value {
        let mut c = json!({"status": "SYNCED", "sent_version": cds, "sent_resources": cds_count});
        if let Some(e) = nack {
            c["status"] = "STALE".into();
            c["last_nack"] = json!({"error": e});
        }
        json!({"types": {
            "cds": c,
            "lds": {"status": "SYNCED", "sent_version": "l1", "sent_resources": 1},
            "eds": {"status": "NOT SENT", "sent_version": "", "sent_resources": 0},
            "rds": {"status": "SYNCED", "sent_version": "r1", "sent_resources": 2}}})
    }

    #[test]
    fn in_step_proxy_matches() {
        let c = compare(&sent("c1", 3, None), &dump("c1", 3));
        assert!(c.iter().all(|t| t.matches), "{c:#?}");
        let text: String = c.iter().map(TypeComparison::render).collect();
        assert_eq!(
            text,
            "Clusters Match\nListeners Match\nEndpoints Match\nRoutes Match (RDS last loaded at 2026-11-26T16:00:01Z)\n"
        );
    }

    #[test]
    fn envoys_endpoint_dump_counts_only_the_subscribed_clusters() {
        let proxy = json!({"types": {"eds": {"status": "SYNCED", "sent_version": "e1",
            "sent_resources": 2, "requested": ["a", "b"]}}});
        let eds = |names: &[&str]| {
            json!({"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
                "dynamic_endpoint_configs": names.iter().map(|n| json!({"endpoint_config": {"cluster_name": n}}))
                    .collect::<Vec<_>>()}]})
        };
        // Versions not reported, an inline cluster beside: a match by name and count.
        assert!(compare(&proxy, &eds(&["a", "b", "inline"]))[0].matches);
        assert!(!compare(&proxy, &eds(&["a", "inline"]))[0].matches);
    }

    #[test]
    fn a_rejected_push_does_not_match_and_says_why() {
        let c = compare(
            &sent(
                "c2",
                4,
                Some("cluster c3: table_size: 1000 is not a prime number"),
            ),
            &dump("c1", 3),
        );
        let cds = &c[0];
        assert!(!cds.matches);
        assert_eq!((cds.proxy_version.as_str(), cds.proxy_resources), ("c1", 3));
        let text = cds.render();
        assert!(text.starts_with("Clusters Don't Match (STALE)\n"), "{text}");
        assert!(
            text.contains("control plane sent: version c2 (4 clusters)"),
            "{text}"
        );
        assert!(
            text.contains("proxy holds:        version c1 (3 clusters)"),
            "{text}"
        );
        assert!(text.contains("not a prime number"), "{text}");
        assert!(c[1..].iter().all(|t| t.matches), "{c:#?}");
        // Same version, missing resources: no match either.
        assert!(!compare(&sent("c1", 4, None), &dump("c1", 3))[0].matches);
    }
}
