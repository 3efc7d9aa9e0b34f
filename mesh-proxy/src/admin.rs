//! The admin endpoint, on its own listener, answering loopback peers only.
//!
//! | endpoint | method | what |
//! |---|---|---|
//! | `/` | GET | this list |
//! | `/config_dump` | GET | the configuration in force, shaped like Envoy's |
//! | `/clusters` | GET | clusters, thresholds and per-host counters and health flags (Envoy's text format) |
//! | `/listeners` | GET | listener names and bound addresses (`?format=json` like Envoy's) |
//! | `/stats` | GET | counters and gauges, `name: value` |
//! | `/stats/prometheus` | GET | the same in Prometheus text format |
//! | `/logging` | GET, POST | list levels; POST `?level=L`, `?paths=a:L,b:L` or `?NAME=L` change them |
//! | `/ready` | GET | `LIVE` once serving |
//! | `/server_info` | GET | version, state, uptime, node |
//! | `/quitquitquit` | POST | stops the proxy |

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::body::{ProxyBody, full};
use crate::config_dump::{self, ConfigDumpSource};
use crate::model::{LbPolicy, Snapshot};
use crate::server::Shared;

const ENDPOINTS: &str = "admin commands are:
  /: this list
  /clusters: upstream cluster status
  /config_dump: dump current configuration
  /listeners: listener names and addresses
  /logging: query/change logging levels (POST ?level=, ?paths=name:level,...)
  /quitquitquit: exit the server (POST)
  /ready: print server state
  /server_info: print server version/status information
  /stats: print server stats
  /stats/prometheus: print server stats in prometheus format
";

pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = crate::server::stopped(&mut shutdown) => return,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        if !peer.ip().is_loopback() {
            tracing::warn!(%peer, "admin connection from a non-loopback address refused");
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<ProxyBody> {
    let path = req.uri().path().to_string();
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let post = req.method() == Method::POST;
    let active = shared.active.load_full();
    match path.as_str() {
        "/" => text(StatusCode::OK, ENDPOINTS.to_string()),
        "/ready" => text(StatusCode::OK, "LIVE\n".into()),
        "/server_info" => json(&server_info(shared)),
        "/config_dump" => match &shared.bootstrap {
            Some(b) => {
                let source = ConfigDumpSource {
                    bootstrap: &b.proto,
                    bootstrap_loaded: b.loaded_at,
                    static_resources: &b.static_resources,
                    dynamic_resources: active.dynamic_resources.as_deref(),
                    include_eds: query.iter().any(|(k, _)| k == "include_eds"),
                };
                match config_dump::render(&source) {
                    Ok(v) => json(&v),
                    Err(e) => text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("config_dump: {e}\n"),
                    ),
                }
            }
            None => json(&fallback_config_dump(&active.snapshot)),
        },
        "/clusters" => text(StatusCode::OK, clusters_text(&active)),
        "/listeners" => {
            let addrs = shared.listener_addrs();
            if param("format").as_deref() == Some("json") {
                let statuses: Vec<_> = addrs
                    .iter()
                    .map(|(name, a)| {
                        serde_json::json!({
                            "name": name,
                            "local_address": {"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}}
                        })
                    })
                    .collect();
                json(&serde_json::json!({ "listener_statuses": statuses }))
            } else {
                let mut out = String::new();
                for (name, a) in addrs {
                    let _ = writeln!(out, "{name}::{a}");
                }
                text(StatusCode::OK, out)
            }
        }
        "/stats" => text(StatusCode::OK, shared.stats.render_text()),
        "/stats/prometheus" => text(StatusCode::OK, shared.stats.render_prometheus()),
        "/logging" => {
            if !post {
                if query.is_empty() {
                    return text(StatusCode::OK, shared.logging.render());
                }
                return method_not_allowed();
            }
            let result = if let Some(level) = param("level") {
                shared.logging.set_all(&level)
            } else if let Some(paths) = param("paths") {
                shared.logging.set_paths(&percent_decode(&paths))
            } else if let Some((name, level)) = query.first() {
                shared.logging.set_one(name, level)
            } else {
                Ok(())
            };
            match result {
                Ok(()) => text(StatusCode::OK, shared.logging.render()),
                Err(e) => text(
                    StatusCode::BAD_REQUEST,
                    format!("{e}\n{}", shared.logging.render()),
                ),
            }
        }
        "/quitquitquit" => {
            if !post {
                return method_not_allowed();
            }
            shared.request_shutdown();
            text(StatusCode::OK, "OK\n".into())
        }
        _ => text(
            StatusCode::NOT_FOUND,
            format!("invalid path: {path}\n{ENDPOINTS}"),
        ),
    }
}

fn method_not_allowed() -> Response<ProxyBody> {
    text(
        StatusCode::METHOD_NOT_ALLOWED,
        "This endpoint requires POST.\n".into(),
    )
}

fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    resp
}

fn json(value: &serde_json::Value) -> Response<ProxyBody> {
    let body = serde_json::to_string_pretty(value).unwrap_or_default();
    let mut resp = Response::new(full(body));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(
                std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                16,
            )
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn server_info(shared: &Shared) -> serde_json::Value {
    let uptime = format!("{}s", shared.started.elapsed().as_secs());
    serde_json::json!({
        "version": concat!("mesh-proxy/", env!("CARGO_PKG_VERSION")),
        "state": "LIVE",
        "uptime_current_epoch": uptime,
        "uptime_all_epochs": uptime,
        "node": { "id": shared.node.id, "cluster": shared.node.cluster },
    })
}

/// Envoy's `/clusters` text: `CLUSTER::...` lines, then one line per host
/// counter and attribute.
fn clusters_text(active: &crate::server::Active) -> String {
    let mut out = String::new();
    let mut names: Vec<&String> = active.clusters.keys().collect();
    names.sort();
    for name in names {
        let c = &active.clusters[name];
        let cb = &c.config.circuit_breakers;
        let _ = writeln!(out, "{name}::observability_name::{name}");
        for priority in ["default_priority", "high_priority"] {
            let _ = writeln!(
                out,
                "{name}::{priority}::max_connections::{}",
                cb.max_connections
            );
            let _ = writeln!(
                out,
                "{name}::{priority}::max_pending_requests::{}",
                cb.max_pending_requests
            );
            let _ = writeln!(out, "{name}::{priority}::max_requests::{}", cb.max_requests);
            let _ = writeln!(out, "{name}::{priority}::max_retries::{}", cb.max_retries);
        }
        let _ = writeln!(out, "{name}::added_via_api::false");
        for h in &c.hosts.all {
            let a = h.state.address;
            let s = &h.state.stats;
            let counters = [
                ("cx_active", s.cx_active.get()),
                ("cx_connect_fail", s.cx_connect_fail.get() as i64),
                ("cx_total", s.cx_total.get() as i64),
                ("rq_active", s.rq_active.get()),
                ("rq_error", s.rq_error.get() as i64),
                ("rq_success", s.rq_success.get() as i64),
                ("rq_timeout", s.rq_timeout.get() as i64),
                ("rq_total", s.rq_total.get() as i64),
            ];
            for (k, v) in counters {
                let _ = writeln!(out, "{name}::{a}::{k}::{v}");
            }
            let _ = writeln!(out, "{name}::{a}::hostname::{}", h.hostname);
            let _ = writeln!(out, "{name}::{a}::health_flags::{}", h.health_flags());
            let _ = writeln!(out, "{name}::{a}::weight::{}", h.weight);
            let _ = writeln!(out, "{name}::{a}::region::{}", h.region);
            let _ = writeln!(out, "{name}::{a}::zone::{}", h.zone);
            let _ = writeln!(out, "{name}::{a}::sub_zone::{}", h.sub_zone);
            let _ = writeln!(out, "{name}::{a}::canary::false");
            let _ = writeln!(out, "{name}::{a}::priority::{}", h.priority);
            let _ = writeln!(out, "{name}::{a}::success_rate::-1");
            let _ = writeln!(out, "{name}::{a}::local_origin_success_rate::-1");
        }
    }
    out
}

/// A summary of the snapshot, used when no config layer registered a
/// faithful `/config_dump` renderer.
fn fallback_config_dump(snapshot: &Snapshot) -> serde_json::Value {
    let listeners: Vec<_> = snapshot
        .listeners
        .values()
        .map(|l| serde_json::json!({"name": l.name, "address": l.address.to_string()}))
        .collect();
    let clusters: Vec<_> = snapshot
        .clusters
        .values()
        .map(|c| {
            let endpoints: Vec<String> = snapshot
                .endpoints_of(c)
                .map(|set| set.endpoints().map(|e| e.address.to_string()).collect())
                .unwrap_or_default();
            let lb = match c.lb_policy {
                LbPolicy::RoundRobin => "ROUND_ROBIN",
                LbPolicy::LeastRequest { .. } => "LEAST_REQUEST",
                LbPolicy::Random => "RANDOM",
                LbPolicy::RingHash { .. } => "RING_HASH",
                LbPolicy::Maglev { .. } => "MAGLEV",
            };
            serde_json::json!({"name": c.name, "lb_policy": lb, "endpoints": endpoints})
        })
        .collect();
    let routes: Vec<_> = snapshot
        .routes
        .values()
        .map(|r| {
            let vhosts: Vec<_> = r.virtual_hosts.iter().map(|v| v.name.clone()).collect();
            serde_json::json!({"name": r.name, "virtual_hosts": vhosts})
        })
        .collect();
    serde_json::json!({"configs": [
        {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "static_listeners": listeners},
        {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "static_clusters": clusters},
        {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump", "static_route_configs": routes},
    ]})
}
