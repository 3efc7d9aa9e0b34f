//! The explanation: the request put through the data plane's own selection functions.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_proxy::http::explain::{self as why, Outcome};
use mesh_proxy::http::matcher::header_matches;
use mesh_proxy::http::{fault, retry, router};
use mesh_proxy::model::{
    ClusterConfig, Destination, EndpointSet, FaultAbortKind, FaultConfig, FaultDelayKind,
    FilterChain, ForwardAction, HashPolicyKind, HeaderMutations, LbPolicy, ListenerConfig,
    NetworkFilter, RouteAction, RouteSource, RouteTable, Snapshot, StringMatch, TrafficDirection,
    UpstreamTls, VirtualHost,
};
use serde::Serialize;

use super::live::{HostCounts, LiveConfig};
use super::{ExplainError, ExplainRequest};
use crate::proxy_config::parse_cluster_name;

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
