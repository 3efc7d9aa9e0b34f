//! `meshctl proxy-config`: a proxy's clusters, listeners, routes, endpoints and secrets as
//! istioctl shows them, read from any Envoy-shaped admin (`/config_dump`, `/clusters`), and its
//! log levels (`/logging`).

pub mod secret;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use crate::admin_client::{AdminClient, Transport};
use crate::cluster::ClusterProxyArgs;
use crate::proxy_status::render_table;
use crate::up::state::{self, MeshState};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Output format of `proxy-config`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConfigFormat {
    /// The table.
    Short,
    /// The matching config as JSON.
    Json,
}

/// Which proxy to ask.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// A proxy of the local mesh: as `proxy-status` names it (`helloworld-safe.default`,
    /// `istio-ingressgateway.istio-system`), by its short name (`helloworld-safe`, `gateway`),
    /// as `deploy/NAME.NAMESPACE` or by node id; with `--kubeconfig`, a pod of the cluster.
    #[arg(required_unless_present = "admin")]
    pub name: Option<String>,
    /// Any Envoy or mesh-proxy admin address instead of NAME.
    #[arg(long, conflicts_with = "kubeconfig")]
    pub admin: Option<SocketAddr>,
    #[command(flatten)]
    pub cluster: ClusterProxyArgs,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ConfigFormat::Short)]
    pub output: ConfigFormat,
}

/// Cluster filters.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long)]
    pub fqdn: Option<String>,
    #[arg(long)]
    pub port: Option<u32>,
    #[arg(long)]
    pub subset: Option<String>,
    /// `inbound` or `outbound`.
    #[arg(long)]
    pub direction: Option<String>,
}

/// Log levels.
#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    #[command(flatten)]
    pub target: Target,
    /// `LEVEL` for every logger, or `NAME:LEVEL[,NAME:LEVEL...]` with Envoy's logger names
    /// (`connection:debug,conn_handler:debug,router:debug`); names mesh-proxy has no use for
    /// are accepted and reported.
    #[arg(long)]
    pub level: Option<String>,
}

/// Show a proxy's configuration.
#[derive(Subcommand, Debug)]
pub enum ProxyConfigCmd {
    /// Clusters (`SERVICE FQDN PORT SUBSET DIRECTION TYPE DESTINATION RULE`).
    #[command(alias = "clusters")]
    Cluster(ClusterArgs),
    /// Listeners (`ADDRESS PORT MATCH DESTINATION`).
    #[command(alias = "listeners")]
    Listener(Target),
    /// Routes (`NAME DOMAINS MATCH VIRTUAL SERVICE`).
    #[command(alias = "routes")]
    Route(Target),
    /// Endpoints (`ENDPOINT STATUS OUTLIER CHECK CLUSTER`) from `/clusters`.
    #[command(alias = "endpoints")]
    Endpoint(Target),
    /// Certificates (`RESOURCE NAME TYPE STATUS VALID CERT SERIAL NUMBER NOT AFTER NOT BEFORE`)
    /// from the secrets of `/config_dump`.
    #[command(alias = "secrets")]
    Secret(Target),
    /// Show log levels, or change them with `--level`.
    Log(LogArgs),
}

pub use mesh_api::constants::ClusterName;

/// Splits a cluster name as istioctl does (see [`ClusterName::parse`]).
pub fn parse_cluster_name(name: &str) -> ClusterName {
    ClusterName::parse(name)
}

/// Where the admin of `target` is: `--admin`, a pod of the cluster (`--kubeconfig`), or a
/// proxy of the local mesh.
pub fn admin_transport(target: &Target) -> anyhow::Result<Transport> {
    if let Some(a) = target.admin {
        return Ok(Transport::Tcp(a));
    }
    let name = target.name.as_deref().unwrap_or_default();
    if let Some((_, transport)) = target.cluster.proxy(name)? {
        return Ok(transport);
    }
    let dir = state::state_dir()?;
    let Some(s) = MeshState::load(&dir)? else {
        bail!(
            "no local mesh running (state dir {}); start one with `meshctl up`, pass --admin ADDR, or --kubeconfig FILE for a cluster",
            dir.display()
        );
    };
    Ok(Transport::Tcp(
        crate::up::names::resolve(&s, name)?.admin_address(),
    ))
}

fn admin_get(admin: &Transport, path: &str) -> anyhow::Result<String> {
    let a = AdminClient::new(admin.clone(), TIMEOUT).get(path)?;
    if a.status != 200 {
        bail!(
            "GET {path} at {admin} answered {}: {}",
            a.status.as_u16(),
            a.text().trim()
        );
    }
    Ok(a.text().into_owned())
}

/// `POST path` with an empty body.
fn admin_post(admin: &Transport, path: &str) -> anyhow::Result<(u16, String)> {
    let a = AdminClient::new(admin.clone(), TIMEOUT).post(path)?;
    Ok((a.status.as_u16(), a.text().into_owned()))
}

/// The `/config_dump` of the admin at `admin`.
pub fn config_dump(admin: &Transport) -> anyhow::Result<Value> {
    let body = admin_get(admin, "/config_dump")?;
    serde_json::from_str(&body).with_context(|| format!("/config_dump at {admin} is not JSON"))
}

/// Every object at `inner` (a path of keys) of every item of the `list` arrays in the dump.
fn collect(dump: &Value, lists: &[(&str, &[&str])]) -> Vec<Value> {
    let mut out = Vec::new();
    for c in dump["configs"].as_array().into_iter().flatten() {
        for (list, inner) in lists {
            for item in c[*list].as_array().into_iter().flatten() {
                let v = inner.iter().fold(item, |v, k| &v[*k]);
                if v.is_object() {
                    out.push(v.clone());
                }
            }
        }
    }
    out
}

pub fn clusters(dump: &Value) -> Vec<Value> {
    collect(
        dump,
        &[
            ("static_clusters", &["cluster"]),
            ("dynamic_active_clusters", &["cluster"]),
        ],
    )
}

pub fn listeners(dump: &Value) -> Vec<Value> {
    collect(
        dump,
        &[
            ("static_listeners", &["listener"]),
            ("dynamic_listeners", &["active_state", "listener"]),
        ],
    )
}

pub fn routes(dump: &Value) -> Vec<Value> {
    collect(
        dump,
        &[
            ("static_route_configs", &["route_config"]),
            ("dynamic_route_configs", &["route_config"]),
        ],
    )
}

/// `NAME.NAMESPACE` of the Istio object in `metadata.filter_metadata.istio.config`
/// (`/apis/GROUP/VERSION/namespaces/NS/KIND/NAME`).
fn istio_config_ref(v: &Value) -> String {
    let cfg = v["metadata"]["filter_metadata"]["istio"]["config"]
        .as_str()
        .unwrap_or_default();
    let parts: Vec<&str> = cfg.split('/').collect();
    match parts.iter().position(|p| *p == "namespaces") {
        Some(i) if parts.len() >= i + 4 => format!("{}.{}", parts[i + 3], parts[i + 1]),
        _ => "-".to_string(),
    }
}

fn cluster_type(c: &Value) -> String {
    if let Some(t) = c["type"].as_str() {
        return t.to_string();
    }
    if let Some(n) = c["cluster_type"]["name"].as_str() {
        return n.to_string();
    }
    // proto3 JSON leaves out the default enum value.
    "STATIC".to_string()
}

/// Rows `SERVICE FQDN, PORT, SUBSET, DIRECTION, TYPE, DESTINATION RULE`, sorted by FQDN.
pub fn cluster_rows(clusters: &[Value], f: &ClusterArgs) -> Vec<(Vec<String>, Value)> {
    let mut out = Vec::new();
    for c in clusters {
        let name = c["name"].as_str().unwrap_or_default();
        let n = parse_cluster_name(name);
        if f.fqdn
            .as_ref()
            .is_some_and(|q| !n.fqdn.starts_with(q.as_str()))
            || f.port.is_some_and(|p| n.port != Some(p))
            || f.subset.as_ref().is_some_and(|s| *s != n.subset)
            || f.direction.as_ref().is_some_and(|d| *d != n.direction)
        {
            continue;
        }
        let dash = |s: &str| {
            if s.is_empty() {
                "-".into()
            } else {
                s.to_string()
            }
        };
        out.push((
            vec![
                n.fqdn.clone(),
                n.port.map_or("-".into(), |p| p.to_string()),
                dash(&n.subset),
                dash(&n.direction),
                cluster_type(c),
                istio_config_ref(c),
            ],
            c.clone(),
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn describe_chain_match(m: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(p) = m["destination_port"].as_u64() {
        parts.push(format!("port={p}"));
    }
    if let Some(s) = m["server_names"].as_array().filter(|a| !a.is_empty()) {
        let names: Vec<&str> = s.iter().filter_map(Value::as_str).collect();
        parts.push(format!("SNI: {}", names.join(",")));
    }
    if let Some(t) = m["transport_protocol"].as_str() {
        parts.push(format!("Trans: {t}"));
    }
    if let Some(a) = m["application_protocols"]
        .as_array()
        .filter(|a| !a.is_empty())
    {
        let names: Vec<&str> = a.iter().filter_map(Value::as_str).collect();
        parts.push(format!("App: {}", names.join(",")));
    }
    if parts.is_empty() {
        "ALL".into()
    } else {
        parts.join("; ")
    }
}

fn describe_chain_destination(chain: &Value) -> String {
    let mut dests = Vec::new();
    for f in chain["filters"].as_array().into_iter().flatten() {
        let tc = &f["typed_config"];
        let ty = tc["@type"].as_str().unwrap_or_default();
        if ty.ends_with("HttpConnectionManager") {
            if let Some(r) = tc["rds"]["route_config_name"].as_str() {
                dests.push(format!("Route: {r}"));
            } else if let Some(r) = tc["route_config"]["name"].as_str() {
                dests.push(format!("Inline Route: {r}"));
            } else {
                dests.push("Inline Route".into());
            }
        } else if ty.ends_with("TcpProxy") {
            match tc["cluster"].as_str() {
                Some(c) => dests.push(format!("Cluster: {c}")),
                None => dests.push("TCP (weighted clusters)".into()),
            }
        }
    }
    if dests.is_empty() {
        "-".into()
    } else {
        dests.join("; ")
    }
}

/// Rows `ADDRESS PORT MATCH DESTINATION`, one per filter chain (and the default chain).
pub fn listener_rows(listeners: &[Value]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for l in listeners {
        let sa = &l["address"]["socket_address"];
        let addr = sa["address"].as_str().unwrap_or("-").to_string();
        let port = sa["port_value"]
            .as_u64()
            .map_or("-".to_string(), |p| p.to_string());
        let mut chains: Vec<&Value> = l["filter_chains"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        if l["default_filter_chain"].is_object() {
            chains.push(&l["default_filter_chain"]);
        }
        if chains.is_empty() {
            out.push(vec![addr.clone(), port.clone(), "ALL".into(), "-".into()]);
        }
        for ch in chains {
            out.push(vec![
                addr.clone(),
                port.clone(),
                describe_chain_match(&ch["filter_chain_match"]),
                describe_chain_destination(ch),
            ]);
        }
    }
    out
}

fn describe_route_match(m: &Value) -> String {
    if let Some(p) = m["prefix"].as_str() {
        return format!("{p}*");
    }
    if let Some(p) = m["path"].as_str() {
        return p.to_string();
    }
    if let Some(p) = m["safe_regex"]["regex"].as_str() {
        return format!("~{p}");
    }
    if let Some(p) = m["path_separated_prefix"].as_str() {
        return format!("{p}/*");
    }
    "-".into()
}

/// A virtual host's domains for the table: `HOST:PORT` variants of a listed `HOST` left out,
/// and past three, the first two and a count (`-o json` has them all).
pub fn short_domains(domains: &[&str]) -> String {
    let bare: Vec<&str> = domains
        .iter()
        .copied()
        .filter(|d| {
            d.rsplit_once(':')
                .is_none_or(|(host, port)| port.parse::<u16>().is_err() || !domains.contains(&host))
        })
        .collect();
    match bare.len() {
        0 => "-".to_string(),
        1..=3 => bare.join(", "),
        n => format!("{}, {} + {} more...", bare[0], bare[1], n - 2),
    }
}

/// Rows `NAME DOMAINS MATCH VIRTUAL SERVICE`, one per route of each virtual host.
pub fn route_rows(routes: &[Value]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for rc in routes {
        let name = rc["name"].as_str().unwrap_or("-").to_string();
        for vh in rc["virtual_hosts"].as_array().into_iter().flatten() {
            let domains: Vec<&str> = vh["domains"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let domains = short_domains(&domains);
            let rs: Vec<&Value> = vh["routes"].as_array().into_iter().flatten().collect();
            if rs.is_empty() {
                out.push(vec![name.clone(), domains.clone(), "-".into(), "-".into()]);
            }
            for r in rs {
                out.push(vec![
                    name.clone(),
                    domains.clone(),
                    describe_route_match(&r["match"]),
                    istio_config_ref(r),
                ]);
            }
        }
    }
    out
}

/// One host of the admin's `/clusters` text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EndpointRow {
    pub endpoint: String,
    pub status: String,
    pub outlier_check: String,
    pub cluster: String,
}

/// Rows `ENDPOINT STATUS OUTLIER CHECK CLUSTER` from the `CLUSTER::HOST::health_flags::FLAGS`
/// lines of `/clusters`.
pub fn endpoint_rows(clusters_text: &str) -> Vec<EndpointRow> {
    let mut out = Vec::new();
    for line in clusters_text.lines() {
        let parts: Vec<&str> = line.split("::").collect();
        let [cluster, host, "health_flags", flags] = parts.as_slice() else {
            continue;
        };
        let flags: Vec<&str> = flags.split('|').map(str::trim).collect();
        let outlier = flags.iter().any(|f| f.contains("failed_outlier_check"));
        let status = if flags.iter().all(|f| *f == "healthy" || f.is_empty()) {
            "HEALTHY"
        } else {
            "UNHEALTHY"
        };
        out.push(EndpointRow {
            endpoint: host.to_string(),
            status: status.into(),
            outlier_check: if outlier { "FAILED" } else { "OK" }.into(),
            cluster: cluster.to_string(),
        });
    }
    out.sort_by(|a, b| (&a.endpoint, &a.cluster).cmp(&(&b.endpoint, &b.cluster)));
    out
}

fn print_out(
    format: ConfigFormat,
    header: &[&str],
    rows: &[Vec<String>],
    json: &Value,
) -> anyhow::Result<()> {
    match format {
        ConfigFormat::Short => print!("{}", render_table(header, rows)),
        ConfigFormat::Json => println!("{}", serde_json::to_string_pretty(json)?),
    }
    Ok(())
}

fn run(cmd: &ProxyConfigCmd) -> anyhow::Result<()> {
    match cmd {
        ProxyConfigCmd::Cluster(a) => {
            let dump = config_dump(&admin_transport(&a.target)?)?;
            let rows = cluster_rows(&clusters(&dump), a);
            let (cells, json): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
            print_out(
                a.target.output,
                &[
                    "SERVICE FQDN",
                    "PORT",
                    "SUBSET",
                    "DIRECTION",
                    "TYPE",
                    "DESTINATION RULE",
                ],
                &cells,
                &Value::Array(json),
            )
        }
        ProxyConfigCmd::Listener(t) => {
            let l = listeners(&config_dump(&admin_transport(t)?)?);
            print_out(
                t.output,
                &["ADDRESS", "PORT", "MATCH", "DESTINATION"],
                &listener_rows(&l),
                &Value::Array(l),
            )
        }
        ProxyConfigCmd::Route(t) => {
            let r = routes(&config_dump(&admin_transport(t)?)?);
            print_out(
                t.output,
                &["NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"],
                &route_rows(&r),
                &Value::Array(r),
            )
        }
        ProxyConfigCmd::Endpoint(t) => {
            let rows = endpoint_rows(&admin_get(&admin_transport(t)?, "/clusters")?);
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.endpoint.clone(),
                        r.status.clone(),
                        r.outlier_check.clone(),
                        r.cluster.clone(),
                    ]
                })
                .collect();
            print_out(
                t.output,
                &["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"],
                &cells,
                &serde_json::to_value(&rows)?,
            )
        }
        ProxyConfigCmd::Secret(t) => {
            let admin = admin_transport(t)?;
            let rows = secret::secret_rows(&config_dump(&admin)?, std::time::SystemTime::now());
            if t.output == ConfigFormat::Short {
                for r in &rows {
                    if let Some(p) = &r.problem {
                        eprintln!("warning: {p}");
                    }
                }
                if rows.is_empty() {
                    eprintln!("/config_dump at {admin} lists no secrets (no TLS in use yet?)");
                }
            }
            let cells: Vec<Vec<String>> = rows.iter().map(secret::SecretRow::cells).collect();
            print_out(
                t.output,
                &secret::HEADER,
                &cells,
                &serde_json::to_value(&rows)?,
            )
        }
        ProxyConfigCmd::Log(a) => {
            let admin = admin_transport(&a.target)?;
            let body = match &a.level {
                None => admin_get(&admin, "/logging")?,
                Some(level) => {
                    let query = if level.contains(':') {
                        format!("paths={level}")
                    } else {
                        format!("level={level}")
                    };
                    let (status, body) = admin_post(&admin, &format!("/logging?{query}"))?;
                    if status != 200 {
                        let reason = body.lines().next().unwrap_or_default();
                        bail!("POST /logging?{query} at {admin} answered {status}: {reason}");
                    }
                    body
                }
            };
            print!("{body}");
            for name in idle_loggers(a.level.as_deref().unwrap_or_default(), &body) {
                eprintln!(
                    "note: logger {name:?} accepted, but this proxy logs nothing under it (an Envoy logger mesh-proxy has no use for); the others are set"
                );
            }
            Ok(())
        }
    }
}

/// The loggers of a `--level NAME:LEVEL,...` spec that the proxy's answer does not list as
/// active: accepted without effect (mesh-proxy takes every Envoy logger name).
pub fn idle_loggers<'a>(spec: &'a str, listing: &str) -> Vec<&'a str> {
    let active: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.strip_prefix("  ")?.split_once(':').map(|(n, _)| n))
        .collect();
    if active.is_empty() {
        return Vec::new();
    }
    spec.split(',')
        .filter_map(|part| part.split_once(':').map(|(n, _)| n.trim()))
        .filter(|n| !n.is_empty() && !active.contains(n))
        .collect()
}

/// `meshctl proxy-config`.
pub fn main(cmd: ProxyConfigCmd) -> ExitCode {
    match run(&cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "meshctl proxy-config: {}",
                mesh_api::report::one_line(e.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_rows_filter_and_name_the_destination_rule() {
        let cs = vec![
            serde_json::json!({"name": "outbound|5000|v1|helloworld.default.svc.cluster.local",
                "type": "EDS", "metadata": {"filter_metadata": {"istio": {"config":
                "/apis/networking.istio.io/v1/namespaces/default/destination-rule/helloworld"}}}}),
            serde_json::json!({"name": "outbound|5000|v2|helloworld.default.svc.cluster.local",
                "type": "EDS"}),
            serde_json::json!({"name": "BlackHoleCluster"}),
        ];
        let all = ClusterArgs {
            target: Target {
                name: None,
                admin: None,
                cluster: Default::default(),
                output: ConfigFormat::Short,
            },
            fqdn: None,
            port: None,
            subset: None,
            direction: None,
        };
        let rows = cluster_rows(&cs, &all);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0].0,
            ["BlackHoleCluster", "-", "-", "-", "STATIC", "-"]
        );
        assert_eq!(
            rows[1].0,
            [
                "helloworld.default.svc.cluster.local",
                "5000",
                "v1",
                "outbound",
                "EDS",
                "helloworld.default"
            ]
        );
        let v2 = ClusterArgs {
            subset: Some("v2".into()),
            ..all.clone()
        };
        let rows = cluster_rows(&cs, &v2);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0[2], "v2");
        let port = ClusterArgs {
            port: Some(80),
            ..all
        };
        assert!(cluster_rows(&cs, &port).is_empty());
    }

    #[test]
    fn endpoints_from_the_clusters_text() {
        let text = "c1::observability_name::c1\n\
            c1::default_priority::max_connections::1024\n\
            c1::127.0.0.1:5001::health_flags::healthy\n\
            c1::127.0.0.1:5002::health_flags::/failed_outlier_check\n";
        let rows = endpoint_rows(text);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (
                rows[0].endpoint.as_str(),
                rows[0].status.as_str(),
                rows[0].outlier_check.as_str()
            ),
            ("127.0.0.1:5001", "HEALTHY", "OK")
        );
        assert_eq!(
            (rows[1].status.as_str(), rows[1].outlier_check.as_str()),
            ("UNHEALTHY", "FAILED")
        );
    }

    #[test]
    fn loggers_the_listing_does_not_show_are_idle() {
        let listing = "active loggers:\n  router: debug\n  connection: debug\naccepted, nothing to log in mesh-proxy: aws, conn_handler\n";
        assert_eq!(
            idle_loggers("connection:debug,conn_handler:debug,router:debug", listing),
            ["conn_handler"]
        );
        assert!(idle_loggers("debug", listing).is_empty());
        assert!(idle_loggers("router:debug", "").is_empty());
    }

    #[test]
    fn listeners_and_routes_rows() {
        let l = serde_json::json!({"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15001}},
            "filter_chains": [{"filters": [{"typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "rds": {"route_config_name": "5000"}}}]}]});
        assert_eq!(
            listener_rows(&[l]),
            [["127.0.0.1", "15001", "ALL", "Route: 5000"]]
        );
        let r = serde_json::json!({"name": "5000", "virtual_hosts": [{"domains": ["helloworld", "helloworld:5000"],
            "routes": [{"match": {"prefix": "/"}}]}]});
        assert_eq!(route_rows(&[r]), [["5000", "helloworld", "/*", "-"]]);
        assert_eq!(
            short_domains(&["a", "a:80", "b", "c", "d", "e:1"]),
            "a, b + 3 more..."
        );
        assert_eq!(short_domains(&["a:80", "*"]), "a:80, *");
        assert_eq!(short_domains(&[]), "-");
    }
}
