//! `meshctl explain`: what a proxy would do with one request (listener, route configuration,
//! virtual host, route, clusters, load balancer, endpoints, timeout, retries, fault, mirrors,
//! header changes, transport) and why, from the proxy's live admin `/config_dump`.
//!
//! Nothing here routes: the dump's resources are decoded into Envoy's messages
//! ([`mesh_proxy::xds_json`]), compiled into the proxy's own model ([`mesh_proxy::compile`]) and
//! the request is put through the data plane's own selection functions
//! ([`mesh_proxy::http::router`], [`mesh_proxy::filter_chain`], [`mesh_proxy::http::explain`]
//! for the reasons). The dump has Envoy's shape, so this works on a real Envoy too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use mesh_proxy::compile::{
    compile_cluster, compile_listener, compile_load_assignment, compile_route_configuration,
};
use mesh_proxy::http::explain::{self as why, Outcome};
use mesh_proxy::http::matcher::{RequestHead, header_matches};
use mesh_proxy::http::{fault, retry, router};
use mesh_proxy::model::{
    ClusterConfig, Destination, EndpointSet, FaultAbortKind, FaultConfig, FaultDelayKind,
    FilterChain, ForwardAction, HashPolicyKind, HeaderMutations, LbPolicy, ListenerConfig,
    NetworkFilter, RouteAction, RouteSource, RouteTable, Snapshot, StringMatch, TrafficDirection,
    UpstreamTls, VirtualHost,
};
use serde::Serialize;
use serde_json::Value;

use crate::admin_client::{AdminClient, Transport};
use crate::header_arg::{self, HeaderArgError};
use crate::proxy_config::{self, ConfigFormat, Target, endpoint_rows, parse_cluster_name};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Output format of `explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExplainFormat {
    /// A few readable lines.
    Text,
    /// Everything as JSON.
    Json,
}

/// `meshctl explain PROXY --host H [--path P] [-H NAME:VALUE]... [--method M] [--port N]`.
#[derive(Args, Debug, Clone)]
pub struct ExplainArgs {
    /// A workload of the local mesh (its sidecar), `gateway`, or an admin address (HOST:PORT).
    #[arg(required_unless_present = "admin")]
    pub proxy: Option<String>,
    /// Any Envoy or mesh-proxy admin address instead of PROXY.
    #[arg(long, conflicts_with = "kubeconfig")]
    pub admin: Option<SocketAddr>,
    #[command(flatten)]
    pub cluster: crate::cluster::ClusterProxyArgs,
    /// Host (authority) of the request: `helloworld`, `helloworld:5000`, ...
    #[arg(long)]
    pub host: String,
    /// Path, with its query string if any.
    #[arg(long, default_value = "/")]
    pub path: String,
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// A request header, `NAME:VALUE` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// The listener: the one bound to this port, or the gateway's for this Gateway server
    /// port (route config `http.PORT`). Default: the only outbound HTTP listener.
    #[arg(long)]
    pub port: Option<u16>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ExplainFormat::Text)]
    pub output: ExplainFormat,
}

/// What `explain` cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Header(#[from] HeaderArgError),
    #[error("header {0:?} is not a valid HTTP header")]
    InvalidHeader(String),
    #[error("no HTTP listener for port {port}; HTTP listeners: {available}")]
    NoListenerForPort { port: u16, available: String },
    #[error("the proxy has no HTTP listener (listeners: {available})")]
    NoHttpListener { available: String },
    #[error("several HTTP listeners could take the request ({available}): choose one with --port")]
    AmbiguousListener { available: String },
}

/// The request to explain.
#[derive(Debug, Clone)]
pub struct ExplainRequest {
    pub method: String,
    pub host: String,
    pub path: String,
    pub headers: ::http::HeaderMap,
    pub port: Option<u16>,
}

impl ExplainRequest {
    /// Checks the `-H NAME:VALUE` arguments as `traffic` does.
    pub fn new(
        method: &str,
        host: &str,
        path: &str,
        headers: &[String],
        port: Option<u16>,
    ) -> Result<ExplainRequest, ExplainError> {
        let mut map = ::http::HeaderMap::new();
        for arg in headers {
            let (name, value) = header_arg::parse_header(arg)?;
            let name = ::http::HeaderName::try_from(name.to_ascii_lowercase())
                .map_err(|_| ExplainError::InvalidHeader(arg.clone()))?;
            let value = ::http::HeaderValue::try_from(value)
                .map_err(|_| ExplainError::InvalidHeader(arg.clone()))?;
            map.append(name, value);
        }
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        Ok(ExplainRequest {
            method: method.to_ascii_uppercase(),
            host: host.to_string(),
            path,
            headers: map,
            port,
        })
    }

    fn head(&self) -> RequestHead<'_> {
        RequestHead {
            method: &self.method,
            authority: &self.host,
            path: &self.path,
            scheme: "http",
            headers: &self.headers,
        }
    }
}

/// A proxy's configuration as read from its admin.
#[derive(Debug, Default)]
pub struct LiveConfig {
    pub snapshot: Snapshot,
    /// Resources of the dump that could not be decoded or compiled, with the reason.
    pub skipped: Vec<String>,
    /// Per cluster, endpoints and healthy endpoints as the proxy sees them (`/clusters`).
    pub health: BTreeMap<String, HostCounts>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HostCounts {
    pub total: usize,
    pub healthy: usize,
}

/// Per cluster, hosts and healthy hosts from the admin's `/clusters` text.
pub fn host_counts(clusters_text: &str) -> BTreeMap<String, HostCounts> {
    let mut out: BTreeMap<String, HostCounts> = BTreeMap::new();
    for row in endpoint_rows(clusters_text) {
        let c = out.entry(row.cluster).or_default();
        c.total += 1;
        if row.status == "HEALTHY" {
            c.healthy += 1;
        }
    }
    out
}

/// Decodes and compiles every listener, route configuration, cluster and endpoint set of an
/// Envoy-shaped `/config_dump` (with `?include_eds` for endpoints). A resource that does not
/// decode or compile is left out and named in the second value: what matters for one request
/// is usually elsewhere.
pub fn snapshot_from_dump(dump: &Value) -> (Snapshot, Vec<String>) {
    let mut snapshot = Snapshot::default();
    let mut skipped = Vec::new();
    for v in proxy_config::listeners(dump) {
        match read(&v, "name", "listener", compile_listener) {
            Ok((name, l)) => {
                snapshot.listeners.entry(name).or_insert(l.into());
            }
            Err(e) => skipped.push(e),
        }
    }
    for v in proxy_config::routes(dump) {
        match read(&v, "name", "route config", compile_route_configuration) {
            Ok((name, r)) => {
                snapshot.routes.entry(name).or_insert(r.into());
            }
            Err(e) => skipped.push(e),
        }
    }
    for v in proxy_config::clusters(dump) {
        match read(&v, "name", "cluster", compile_cluster) {
            Ok((name, c)) => {
                snapshot.clusters.entry(name).or_insert(c.into());
            }
            Err(e) => skipped.push(e),
        }
    }
    for v in endpoint_configs(dump) {
        match read(&v, "cluster_name", "endpoints", compile_load_assignment) {
            Ok((name, e)) => {
                snapshot.endpoints.entry(name).or_insert(e.into());
            }
            Err(e) => skipped.push(e),
        }
    }
    (snapshot, skipped)
}

/// Decodes one resource of the dump as `M` and compiles it; the error names the resource.
fn read<M, T>(
    v: &Value,
    name_key: &str,
    kind: &str,
    compile: fn(&M) -> Result<T, mesh_proxy::compile::CompileError>,
) -> Result<(String, T), String>
where
    M: prost::Message + prost::Name + Default,
{
    let name = v[name_key].as_str().unwrap_or("?").to_string();
    let mut v = v.clone();
    if let Value::Object(map) = &mut v {
        // The element's own `@type` is not a field of the message.
        map.remove("@type");
    }
    let m =
        mesh_proxy::xds_json::from_value::<M>(&v).map_err(|e| format!("{kind} {name:?}: {e}"))?;
    // The compiler's errors name the resource themselves.
    let t = compile(&m).map_err(|e| e.to_string())?;
    Ok((name, t))
}

/// The `ClusterLoadAssignment`s of the dump's endpoints section. Envoy renders an unset
/// locality weight as `load_balancing_weight: 0`, which is not valid xDS: it is left out.
fn endpoint_configs(dump: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for c in dump["configs"].as_array().into_iter().flatten() {
        for list in ["static_endpoint_configs", "dynamic_endpoint_configs"] {
            for item in c[list].as_array().into_iter().flatten() {
                let mut v = item["endpoint_config"].clone();
                if !v.is_object() {
                    continue;
                }
                for locality in v["endpoints"].as_array_mut().into_iter().flatten() {
                    if let Value::Object(map) = locality
                        && map.get("load_balancing_weight").and_then(Value::as_u64) == Some(0)
                    {
                        map.remove("load_balancing_weight");
                    }
                }
                out.push(v);
            }
        }
    }
    out
}

/// Reads `/config_dump?include_eds` and `/clusters` of the admin at `at`.
pub fn read_live_config(at: &Transport) -> anyhow::Result<LiveConfig> {
    use anyhow::{Context, bail};
    let admin = AdminClient::new(at.clone(), TIMEOUT);
    let a = admin.get("/config_dump?include_eds")?;
    if a.status != 200 {
        bail!(
            "GET /config_dump?include_eds at {at} answered {}: {}",
            a.status.as_u16(),
            a.text().trim()
        );
    }
    let dump: Value = serde_json::from_slice(&a.body)
        .with_context(|| format!("/config_dump at {at} is not JSON"))?;
    let (snapshot, skipped) = snapshot_from_dump(&dump);
    // Health is a bonus: without `/clusters` the endpoints of the dump are counted instead.
    let health = match admin.get("/clusters") {
        Ok(a) if a.status == 200 => host_counts(&a.text()),
        _ => BTreeMap::new(),
    };
    Ok(LiveConfig {
        snapshot,
        skipped,
        health,
    })
}

// ---------------------------------------------------------------------------------------
// The explanation.

/// Everything `explain` found, in the order the proxy decides it.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub request: RequestSummary,
    pub listener: ListenerChoice,
    /// The virtual host that took the Host, with the domain that accepted it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_host: Option<VirtualHostChoice>,
    /// Every virtual host of the route configuration, when none took the Host.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub virtual_hosts: Vec<VirtualHostSummary>,
    /// The routes tried, in order, up to the one chosen (all of them when none matched).
    pub routes_tried: Vec<RouteTrial>,
    pub result: Decision,
    /// Resources of the dump left out (they did not decode or compile).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_resources: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestSummary {
    pub method: String,
    pub host: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListenerChoice {
    pub name: String,
    pub address: String,
    pub filter_chain: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_config: Option<String>,
    /// `true` when the route configuration is inline in the listener (no RDS).
    pub inline_route_config: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct VirtualHostChoice {
    pub name: String,
    pub domain: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VirtualHostSummary {
    pub name: String,
    pub domains: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteTrial {
    pub index: usize,
    pub name: String,
    pub matched: bool,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Condition {
    pub condition: String,
    /// `held`, `failed` or `sampled` (a runtime fraction, drawn per request).
    pub outcome: &'static str,
}

/// What the proxy does with the request.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decision {
    /// Forwarded to a cluster.
    Forward(Box<ForwardExplanation>),
    Redirect {
        route: RouteRef,
        status: u16,
        location: String,
    },
    DirectResponse {
        route: RouteRef,
        status: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        body: Option<String>,
    },
    /// A local reply without a route (`404 NR`).
    NoRoute {
        status: u16,
        flag: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteRef {
    pub index: usize,
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ForwardExplanation {
    pub route: RouteRef,
    /// One cluster, or the weighted clusters with their weights.
    pub clusters: Vec<ClusterChoice>,
    /// `None`: no route timeout.
    pub timeout: Option<String>,
    pub retry: Option<RetryExplanation>,
    pub fault: Option<FaultExplanation>,
    pub mirrors: Vec<MirrorExplanation>,
    pub request_headers: Vec<String>,
    pub response_headers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_rewrite: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hash_on: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterChoice {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// The share of requests, for weighted clusters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    pub service: String,
    pub port: Option<u32>,
    pub subset: String,
    /// `false`: the proxy has no such cluster (it answers 503 NC).
    pub known: bool,
    pub lb_policy: Option<String>,
    pub endpoints: Option<HostCounts>,
    pub transport: Option<String>,
    pub peer_identities: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RetryExplanation {
    pub num_retries: u32,
    pub retry_on: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retriable_status_codes: Vec<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FaultExplanation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort: Option<String>,
    /// `false` when the fault's header conditions do not hold for this request.
    pub applies: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct MirrorExplanation {
    pub cluster: String,
    pub percent: String,
}

/// Explains `req` against a proxy's compiled configuration.
pub fn explain(live: &LiveConfig, req: &ExplainRequest) -> Result<Explanation, ExplainError> {
    let snapshot = &live.snapshot;
    let (listener, chain) = choose_listener(snapshot, req.port)?;
    let NetworkFilter::Http(hcm) = &chain.filter else {
        // `choose_listener` only returns HTTP chains.
        return Err(ExplainError::NoHttpListener {
            available: listener.name.clone(),
        });
    };
    let (route_config, inline, table) = match &hcm.routes {
        RouteSource::Rds(name) => (
            Some(name.clone()),
            false,
            snapshot.routes.get(name).cloned(),
        ),
        RouteSource::Inline(t) => (Some(t.name.clone()), true, Some(t.clone())),
    };
    let mut out = Explanation {
        request: RequestSummary {
            method: req.method.clone(),
            host: req.host.clone(),
            path: req.path.clone(),
            headers: req
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
        },
        listener: ListenerChoice {
            name: listener.name.clone(),
            address: listener.address.to_string(),
            filter_chain: if chain.name.is_empty() {
                "(unnamed)".into()
            } else {
                chain.name.clone()
            },
            route_config: route_config.clone(),
            inline_route_config: inline,
        },
        virtual_host: None,
        virtual_hosts: vec![],
        routes_tried: vec![],
        result: Decision::NoRoute {
            status: 404,
            flag: "NR".into(),
            reason: String::new(),
        },
        skipped_resources: live.skipped.clone(),
    };
    let no_route = |reason: String| Decision::NoRoute {
        status: 404,
        flag: "NR".into(),
        reason,
    };
    let Some(table) = table else {
        out.result = no_route(format!(
            "route config {:?} is not in the proxy's config (not received over RDS yet?)",
            route_config.unwrap_or_default()
        ));
        return Ok(out);
    };
    let head = req.head();
    let Some(vh) = router::select_virtual_host(&table, &req.host) else {
        out.virtual_hosts = table
            .virtual_hosts()
            .iter()
            .map(|vh| VirtualHostSummary {
                name: vh.name.clone(),
                domains: vh.domains.iter().map(why::describe_domain).collect(),
            })
            .collect();
        out.result = no_route(format!(
            "no virtual host of route config {:?} has a domain for host {:?}",
            table.name, req.host
        ));
        return Ok(out);
    };
    out.virtual_host = Some(VirtualHostChoice {
        name: vh.name.clone(),
        domain: why::matched_domain(vh, &req.host)
            .map(why::describe_domain)
            .unwrap_or_default(),
    });
    let chosen = router::select_route(vh, &head);
    for (index, r) in vh.routes.iter().enumerate() {
        let matched = chosen.is_some_and(|c| std::ptr::eq(c, r));
        out.routes_tried.push(RouteTrial {
            index,
            name: r.name.clone(),
            matched,
            conditions: why::check_route(&r.matcher, &head)
                .into_iter()
                .map(|c| Condition {
                    condition: c.condition,
                    outcome: match c.outcome {
                        Outcome::Held => "held",
                        Outcome::Failed => "failed",
                        Outcome::Sampled(_) => "sampled",
                    },
                })
                .collect(),
        });
        if matched {
            break;
        }
    }
    let Some(route) = chosen else {
        out.result = no_route(format!(
            "no route of virtual host {:?} matches {} {}",
            vh.name, req.method, req.path
        ));
        return Ok(out);
    };
    let route_ref = RouteRef {
        index: out.routes_tried.len() - 1,
        name: route.name.clone(),
    };
    out.result = match &route.action {
        RouteAction::Redirect(r) => Decision::Redirect {
            route: route_ref,
            status: r.status,
            location: router::redirect_location(r, &route.matcher, "http", &req.host, &req.path),
        },
        RouteAction::DirectResponse { status, body } => Decision::DirectResponse {
            route: route_ref,
            status: *status,
            body: body.clone(),
        },
        RouteAction::Forward(f) => {
            let fault = fault::effective(hcm, vh, route).map(|c| explain_fault(c, req));
            Decision::Forward(Box::new(explain_forward(
                live, req, &table, vh, route, f, route_ref, fault,
            )))
        }
    };
    Ok(out)
}

/// The HTTP filter chain of the listener that takes the request: by `--port` (the bound port,
/// the gateway's `http.PORT` route config, or a name ending in `_PORT`), else the only HTTP
/// listener that is not inbound. Within the listener, the chain is chosen as the proxy does for
/// a plaintext HTTP/1.1 connection to its address.
pub fn choose_listener(
    snapshot: &Snapshot,
    port: Option<u16>,
) -> Result<(&ListenerConfig, &FilterChain), ExplainError> {
    let candidates: Vec<(&ListenerConfig, &FilterChain)> = snapshot
        .listeners
        .values()
        .filter_map(|l| http_chain(l).map(|c| (l.as_ref(), c)))
        .collect();
    let describe = |ls: &[(&ListenerConfig, &FilterChain)]| {
        let names: Vec<String> = ls
            .iter()
            .map(|(l, _)| format!("{} ({})", l.name, l.address))
            .collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    if let Some(port) = port {
        let wanted = |l: &ListenerConfig, c: &FilterChain| {
            l.address.port() == port
                || l.name.ends_with(&format!("_{port}"))
                || matches!(&c.filter, NetworkFilter::Http(h)
                    if matches!(&h.routes, RouteSource::Rds(n) if *n == format!("http.{port}")))
        };
        let found: Vec<_> = candidates
            .iter()
            .filter(|(l, c)| wanted(l, c))
            .copied()
            .collect();
        return match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(ExplainError::NoListenerForPort {
                port,
                available: describe(&candidates),
            }),
            _ => Err(ExplainError::AmbiguousListener {
                available: describe(&found),
            }),
        };
    }
    let outward: Vec<_> = candidates
        .iter()
        .filter(|(l, _)| l.direction != TrafficDirection::Inbound)
        .copied()
        .collect();
    match (outward.as_slice(), candidates.as_slice()) {
        ([one], _) | ([], [one]) => Ok(*one),
        (_, []) => Err(ExplainError::NoHttpListener {
            available: snapshot
                .listeners
                .values()
                .map(|l| format!("{} ({})", l.name, l.address))
                .collect::<Vec<_>>()
                .join(", "),
        }),
        ([], _) => Err(ExplainError::AmbiguousListener {
            available: describe(&candidates),
        }),
        (_, _) => Err(ExplainError::AmbiguousListener {
            available: describe(&outward),
        }),
    }
}

/// The chain a plaintext HTTP/1.1 connection to the listener's own address gets, when it is
/// an HTTP connection manager.
fn http_chain(l: &ListenerConfig) -> Option<&FilterChain> {
    let alpn = ["http/1.1".to_string()];
    let facts = mesh_proxy::filter_chain::ConnectionFacts {
        destination: l.address,
        source: SocketAddr::from(([127, 0, 0, 1], 0)),
        server_name: None,
        transport_protocol: "raw_buffer",
        application_protocols: &alpn,
    };
    mesh_proxy::filter_chain::select(l, &facts)
        .or(l.default_filter_chain.as_ref())
        .filter(|c| matches!(c.filter, NetworkFilter::Http(_)))
}

#[expect(clippy::too_many_arguments)]
fn explain_forward(
    live: &LiveConfig,
    req: &ExplainRequest,
    table: &RouteTable,
    vh: &VirtualHost,
    route: &mesh_proxy::model::Route,
    f: &ForwardAction,
    route_ref: RouteRef,
    fault: Option<FaultExplanation>,
) -> ForwardExplanation {
    let (clusters, wc_headers): (Vec<ClusterChoice>, Vec<&HeaderMutations>) = match &f.destination {
        Destination::Cluster(name) => (vec![cluster_choice(live, name, None, 0)], vec![]),
        Destination::Weighted(ws) => {
            let total = router::total_weight(ws);
            (
                ws.iter()
                    .map(|w| cluster_choice(live, &w.name, Some(w.weight), total))
                    .collect(),
                ws.iter().map(|w| &w.headers).collect(),
            )
        }
        Destination::ClusterHeader(h) => {
            let name = req.head().header(h).unwrap_or_default();
            (vec![cluster_choice(live, &name, None, 0)], vec![])
        }
    };
    let configured = f.retry_policy.as_ref().or(vh.retry_policy.as_ref());
    let retry = retry::effective_policy(configured, &req.headers).map(|p| RetryExplanation {
        num_retries: p.num_retries,
        retry_on: why::retry_on_names(&p.retry_on)
            .into_iter()
            .map(String::from)
            .collect(),
        retriable_status_codes: p.retriable_status_codes.clone(),
        per_try_timeout: p.per_try_timeout.map(duration),
    });
    // Most specific level first, as the forwarder applies them; a weighted cluster's own
    // changes are listed once for all (they differ only when the weights do).
    let mut levels: Vec<&HeaderMutations> = wc_headers;
    levels.extend([&route.headers, &vh.headers, &table.headers]);
    let (request_headers, response_headers) = header_changes(&levels);
    ForwardExplanation {
        route: route_ref,
        clusters,
        timeout: f.timeout.map(duration),
        retry,
        fault,
        mirrors: f
            .mirrors
            .iter()
            .map(|m| MirrorExplanation {
                cluster: m.cluster.clone(),
                percent: m.fraction.map_or("100%".into(), why::describe_fraction),
            })
            .collect(),
        request_headers,
        response_headers,
        prefix_rewrite: f.prefix_rewrite.clone(),
        host_rewrite: f.host_rewrite.clone(),
        hash_on: f
            .hash_policy
            .iter()
            .map(|h| match &h.kind {
                HashPolicyKind::Header { name } => format!("header {name}"),
                HashPolicyKind::Cookie { name, .. } => format!("cookie {name}"),
                HashPolicyKind::SourceIp => "source IP".into(),
                HashPolicyKind::QueryParameter { name } => format!("query parameter {name}"),
            })
            .collect(),
    }
}

fn header_changes(levels: &[&HeaderMutations]) -> (Vec<String>, Vec<String>) {
    let mut request = Vec::new();
    let mut response = Vec::new();
    for l in levels {
        for (adds, removes, out) in [
            (&l.request_add, &l.request_remove, &mut request),
            (&l.response_add, &l.response_remove, &mut response),
        ] {
            for a in adds.iter() {
                let verb = if a.append {
                    "append"
                } else if a.only_if_absent {
                    "add if absent"
                } else {
                    "set"
                };
                out.push(format!("{verb} {}: {}", a.name, a.value));
            }
            for r in removes.iter() {
                out.push(format!("remove {r}"));
            }
        }
    }
    (request, response)
}

fn explain_fault(c: &FaultConfig, req: &ExplainRequest) -> FaultExplanation {
    let head = req.head();
    FaultExplanation {
        delay: c.delay.as_ref().map(|d| {
            let what = match &d.kind {
                FaultDelayKind::Fixed(t) => duration(*t),
                FaultDelayKind::FromHeader => format!("from header {}", fault::DELAY_HEADER),
            };
            format!("{what} for {}", why::describe_fraction(d.percentage))
        }),
        abort: c.abort.as_ref().map(|a| {
            let what = match &a.kind {
                FaultAbortKind::Http(s) => format!("HTTP {s}"),
                FaultAbortKind::Grpc(s) => format!("gRPC status {s}"),
                FaultAbortKind::FromHeader => format!("from header {}", fault::ABORT_HEADER),
            };
            format!("{what} for {}", why::describe_fraction(a.percentage))
        }),
        applies: c.headers.iter().all(|h| header_matches(h, &head)),
    }
}

fn cluster_choice(live: &LiveConfig, name: &str, weight: Option<u32>, total: u64) -> ClusterChoice {
    let n = parse_cluster_name(name);
    let cluster = live.snapshot.clusters.get(name);
    let eds = cluster.and_then(|c| live.snapshot.endpoints_of(c));
    let endpoints = live.health.get(name).copied().or_else(|| {
        eds.as_ref().map(|set| HostCounts {
            total: set.endpoints().count(),
            healthy: set.endpoints().filter(|e| e.health.is_routable()).count(),
        })
    });
    let (transport, peer_identities) = match cluster {
        Some(c) => {
            let (t, ids) = transport(c, eds.as_deref());
            (Some(t), ids)
        }
        None => (None, vec![]),
    };
    ClusterChoice {
        name: name.to_string(),
        weight,
        percent: weight
            .filter(|_| total > 0)
            .map(|w| (f64::from(w) * 1000.0 / total as f64).round() / 10.0),
        service: n.fqdn,
        port: n.port,
        subset: n.subset,
        known: cluster.is_some(),
        lb_policy: cluster.map(|c| lb_name(&c.lb_policy).to_string()),
        endpoints,
        transport,
        peer_identities,
    }
}

fn lb_name(p: &LbPolicy) -> &'static str {
    match p {
        LbPolicy::RoundRobin => "ROUND_ROBIN",
        LbPolicy::LeastRequest { .. } => "LEAST_REQUEST",
        LbPolicy::Random => "RANDOM",
        LbPolicy::RingHash { .. } => "RING_HASH",
        LbPolicy::Maglev { .. } => "MAGLEV",
    }
}

/// How the proxy connects to the cluster's endpoints, and which peer identities it accepts.
fn transport(c: &ClusterConfig, endpoints: Option<&EndpointSet>) -> (String, Vec<String>) {
    let mut ids: Vec<String> = Vec::new();
    let mut note_ids = |t: &UpstreamTls| {
        for m in &t.match_subject_alt_names {
            let id = match &m.pattern {
                StringMatch::Exact(s) => s.clone(),
                _ => why::describe_string_match(m),
            };
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    };
    let kind = |t: &UpstreamTls| {
        if t.certificate.is_some() {
            "mTLS"
        } else {
            "TLS"
        }
    };
    if c.transport_socket_matches.is_empty() {
        let text = match &c.tls {
            None => "plaintext".to_string(),
            Some(t) => {
                note_ids(t);
                kind(t).to_string()
            }
        };
        return (text, ids);
    }
    // Istio's auto mTLS: the transport follows each endpoint's `tlsMode` metadata.
    match endpoints {
        Some(set) if set.endpoints().next().is_some() => {
            let all = set.endpoints().count();
            let mut tls = 0;
            let mut label = "TLS";
            for e in set.endpoints() {
                if let Some(t) = c.transport_for(e) {
                    tls += 1;
                    label = kind(t);
                    note_ids(t);
                }
            }
            let text = if tls == all {
                format!("{label} (auto, every endpoint)")
            } else if tls == 0 {
                "plaintext (auto: no endpoint asks for mTLS)".to_string()
            } else {
                format!("{label} (auto) to {tls} of {all} endpoints, plaintext to the rest")
            };
            (text, ids)
        }
        _ => {
            for m in &c.transport_socket_matches {
                if let Some(t) = &m.tls {
                    note_ids(t);
                }
            }
            let labels: Vec<String> = c
                .transport_socket_matches
                .iter()
                .filter(|m| m.tls.is_some())
                .map(|m| {
                    m.labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .collect();
            (
                format!(
                    "per endpoint (auto): TLS for endpoints labelled {}",
                    labels.join(" or ")
                ),
                ids,
            )
        }
    }
}

/// `15s`, `250ms`, `1.5s`.
fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

// ---------------------------------------------------------------------------------------
// Text output.

/// The explanation in a few lines, as `istioctl x describe` would put it.
pub fn render_text(e: &Explanation) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let l = &e.listener;
    let rc = match (&l.route_config, l.inline_route_config) {
        (Some(n), false) => format!("route config {n}"),
        (Some(n), true) => format!("inline route config {n}"),
        (None, _) => "no route config".into(),
    };
    line(format!("listener {} ({}) -> {rc}", l.name, l.address));
    if let Some(vh) = &e.virtual_host {
        line(format!(
            "virtual host {} (domain {:?} matched host {:?})",
            vh.name, vh.domain, e.request.host
        ));
    }
    for r in &e.routes_tried {
        let conds: Vec<String> = r
            .conditions
            .iter()
            .filter(|c| r.matched || c.outcome != "held")
            .map(|c| {
                let mark = match c.outcome {
                    "held" => "✓",
                    "failed" => "✗",
                    _ => "(sampled per request)",
                };
                format!("{} {mark}", c.condition)
            })
            .collect();
        let name = if r.name.is_empty() {
            String::new()
        } else {
            format!(" {:?}", r.name)
        };
        if r.matched {
            line(format!(
                "route #{}{name} matched: {}",
                r.index,
                conds.join(", ")
            ));
        } else {
            line(format!(
                "route #{}{name} skipped: {}",
                r.index,
                conds.join(", ")
            ));
        }
    }
    match &e.result {
        Decision::NoRoute {
            status,
            flag,
            reason,
        } => {
            line(format!("=> {status} {flag}: {reason}"));
            for vh in &e.virtual_hosts {
                line(format!(
                    "  virtual host {}: {}",
                    vh.name,
                    proxy_config::short_domains(
                        &vh.domains.iter().map(String::as_str).collect::<Vec<_>>()
                    )
                ));
            }
        }
        Decision::Redirect {
            status, location, ..
        } => line(format!("=> redirect {status} to {location}")),
        Decision::DirectResponse { status, body, .. } => line(format!(
            "=> direct response {status}{}",
            body.as_ref().map(|b| format!(" {b:?}")).unwrap_or_default()
        )),
        Decision::Forward(f) => render_forward(f, &mut line),
    }
    if !e.skipped_resources.is_empty() {
        line(format!(
            "note: {} resource(s) of the dump could not be read (see -o json)",
            e.skipped_resources.len()
        ));
    }
    out
}

fn render_forward(f: &ForwardExplanation, line: &mut impl FnMut(String)) {
    match f.clusters.as_slice() {
        [one] if one.weight.is_none() => line(format!("  -> cluster {}", one.name)),
        many => {
            let parts: Vec<String> = many
                .iter()
                .map(|c| {
                    format!(
                        "{} weight {} ({}%)",
                        c.name,
                        c.weight.unwrap_or(0),
                        c.percent.unwrap_or(0.0)
                    )
                })
                .collect();
            line(format!("  -> weighted clusters {}", parts.join(", ")));
        }
    }
    let mut policy = vec![match &f.timeout {
        Some(t) => format!("timeout {t}"),
        None => "no timeout".to_string(),
    }];
    policy.push(match &f.retry {
        Some(r) => {
            let mut s = format!("retries {} on {}", r.num_retries, r.retry_on.join(","));
            if !r.retriable_status_codes.is_empty() {
                let codes: Vec<String> = r
                    .retriable_status_codes
                    .iter()
                    .map(u16::to_string)
                    .collect();
                s.push_str(&format!(" (codes {})", codes.join(",")));
            }
            if let Some(t) = &r.per_try_timeout {
                s.push_str(&format!(" per try {t}"));
            }
            s
        }
        None => "no retries".to_string(),
    });
    policy.push(match &f.fault {
        Some(FaultExplanation {
            delay: None,
            abort: None,
            ..
        })
        | None => "no fault".to_string(),
        Some(x) => {
            let mut parts = Vec::new();
            if let Some(d) = &x.delay {
                parts.push(format!("delay {d}"));
            }
            if let Some(a) = &x.abort {
                parts.push(format!("abort {a}"));
            }
            let mut s = format!("fault: {}", parts.join(", "));
            if !x.applies {
                s.push_str(" (not for this request: its header conditions fail)");
            }
            s
        }
    });
    if f.mirrors.is_empty() {
        policy.push("no mirror".into());
    } else {
        let m: Vec<String> = f
            .mirrors
            .iter()
            .map(|m| format!("{} ({})", m.cluster, m.percent))
            .collect();
        policy.push(format!("mirror to {}", m.join(", ")));
    }
    line(format!("  {}", policy.join(", ")));
    if let Some(p) = &f.prefix_rewrite {
        line(format!("  path prefix rewritten to {p}"));
    }
    if let Some(h) = &f.host_rewrite {
        line(format!("  host rewritten to {h}"));
    }
    if !f.request_headers.is_empty() {
        line(format!(
            "  request headers: {}",
            f.request_headers.join("; ")
        ));
    }
    if !f.response_headers.is_empty() {
        line(format!(
            "  response headers: {}",
            f.response_headers.join("; ")
        ));
    }
    if !f.hash_on.is_empty() {
        line(format!("  hash on {}", f.hash_on.join(", then ")));
    }
    for c in &f.clusters {
        if !c.known {
            line(format!(
                "cluster {}: not in the proxy's config (the proxy answers 503 NC)",
                c.name
            ));
            continue;
        }
        let mut parts = Vec::new();
        if !c.subset.is_empty() {
            parts.push(format!("subset {}", c.subset));
        }
        if let Some(lb) = &c.lb_policy {
            parts.push(lb.clone());
        }
        parts.push(match c.endpoints {
            Some(h) => format!(
                "{} endpoint{} ({} healthy)",
                h.total,
                if h.total == 1 { "" } else { "s" },
                h.healthy
            ),
            None => "endpoints unknown".into(),
        });
        if let Some(t) = &c.transport {
            let mut t = t.clone();
            if !c.peer_identities.is_empty() {
                t.push_str(&format!(" expecting {}", c.peer_identities.join(" or ")));
            }
            parts.push(t);
        }
        line(format!("cluster {}: {}", c.name, parts.join(", ")));
    }
}

// ---------------------------------------------------------------------------------------
// The command.

fn run(a: &ExplainArgs) -> anyhow::Result<String> {
    let req = ExplainRequest::new(&a.method, &a.host, &a.path, &a.headers, a.port)?;
    let admin = match (&a.admin, a.proxy.as_deref().map(str::parse::<SocketAddr>)) {
        (Some(addr), _) => Transport::Tcp(*addr),
        (None, Some(Ok(addr))) => Transport::Tcp(addr),
        _ => proxy_config::admin_transport(&Target {
            name: a.proxy.clone(),
            admin: None,
            cluster: a.cluster.clone(),
            output: ConfigFormat::Short,
        })?,
    };
    let live = read_live_config(&admin)?;
    let e = explain(&live, &req)?;
    Ok(match a.output {
        ExplainFormat::Text => render_text(&e),
        ExplainFormat::Json => serde_json::to_string_pretty(&e)? + "\n",
    })
}

/// `meshctl explain`.
pub fn main(a: ExplainArgs) -> ExitCode {
    match run(&a) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "meshctl explain: {}",
                mesh_api::report::one_line(e.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests;
