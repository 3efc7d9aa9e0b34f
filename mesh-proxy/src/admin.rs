//! The admin endpoint, on its own listener, answering loopback peers only.
//!
//! | endpoint | method | what |
//! |---|---|---|
//! | `/` | GET | this list |
//! | `/config_dump` | GET | the configuration in force, shaped like Envoy's (`?include_eds`, `?resource=FIELD`); secrets without private keys |
//! | `/certs` | GET | the certificates of every TLS secret in force (Envoy's JSON shape, no keys) |
//! | `/clusters` | GET | clusters, thresholds and per-host counters and health flags (Envoy's text format) |
//! | `/listeners` | GET | listener names and bound addresses (`?format=json` like Envoy's) |
//! | `/stats` | GET | counters and gauges, `name: value` |
//! | `/stats/prometheus` | GET | the same in Prometheus text format |
//! | `/logging` | GET, POST | list levels; POST `?level=L`, `?paths=a:L,b:L` or `?NAME=L` change them |
//! | `/ready` | GET | `LIVE` once serving; 503 `INITIALIZING` until the control plane's first configuration |
//! | `/server_info` | GET | version, state, uptime, node |
//! | `/quitquitquit` | POST | stops the proxy |

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::body::{ProxyBody, full};
use crate::config_dump::{self, ConfigDumpSource, LocalSecret};
use crate::model::{
    LbPolicy, Snapshot, TlsCaSource, TlsCertificateSource, TlsSecret, TlsValidation,
};
use crate::server::{Active, Shared};

const ENDPOINTS: &str = "admin commands are:
  /: this list
  /certs: print certs on machine
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
        "/ready" => match shared.state() {
            "LIVE" => text(StatusCode::OK, "LIVE\n".into()),
            state => text(StatusCode::SERVICE_UNAVAILABLE, format!("{state}\n")),
        },
        "/server_info" => json(&server_info(shared)),
        "/certs" => match certs(shared) {
            Ok(v) => json(&v),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("certs: {e}\n")),
        },
        // Rendering decodes every resource and builds megabytes of JSON: on
        // a blocking thread, so that a one-worker proxy keeps serving traffic
        // meanwhile (Envoy renders it on its main thread, off the workers).
        "/config_dump" => {
            let (shared, active) = (shared.clone(), active.clone());
            let include_eds = query.iter().any(|(k, _)| k == "include_eds");
            let resource = param("resource");
            tokio::task::spawn_blocking(move || {
                config_dump_response(&shared, &active, include_eds, resource)
            })
            .await
            .unwrap_or_else(|e| {
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("config_dump: {e}\n"),
                )
            })
        }
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

/// `/config_dump` (and `?resource=`, `?include_eds`), as Envoy shapes it.
fn config_dump_response(
    shared: &Shared,
    active: &Active,
    include_eds: bool,
    resource: Option<String>,
) -> Response<ProxyBody> {
    match &shared.bootstrap {
        Some(b) => {
            let local = local_secrets(shared);
            let source = ConfigDumpSource {
                bootstrap: &b.encoded,
                bootstrap_loaded: b.loaded_at,
                static_resources: &b.static_resources,
                dynamic_resources: active.dynamic_resources.as_deref(),
                include_eds,
                local_secrets: &local,
            };
            if let Some(resource) = resource {
                // `?resource=dynamic_active_secrets` and the like, as Envoy.
                return match config_dump::render_resource(&source, &resource) {
                    Ok(v) => json(&v),
                    Err(e @ config_dump::ConfigDumpError::UnknownResource(_)) => {
                        text(StatusCode::BAD_REQUEST, format!("{e}\n"))
                    }
                    Err(e) => text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("config_dump: {e}\n"),
                    ),
                };
            }
            match config_dump::render(&source) {
                Ok(v) => json(&v),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("config_dump: {e}\n"),
                ),
            }
        }
        None => json(&fallback_config_dump(
            &active.snapshot,
            &local_secrets(shared),
        )),
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
        "state": shared.state(),
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
fn fallback_config_dump(snapshot: &Snapshot, local: &[LocalSecret]) -> serde_json::Value {
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
            let vhosts: Vec<_> = r.virtual_hosts().iter().map(|v| v.name.clone()).collect();
            serde_json::json!({"name": r.name, "virtual_hosts": vhosts})
        })
        .collect();
    let secrets = config_dump::render_secrets(local).unwrap_or_else(
        |e| serde_json::json!({"@type": config_dump::SECRETS_DUMP, "error": e.to_string()}),
    );
    serde_json::json!({"configs": [
        {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "static_listeners": listeners},
        {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "static_clusters": clusters},
        {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump", "static_route_configs": routes},
        secrets,
    ]})
}

/// The secrets the proxy installed itself, for the dump. The store keeps no
/// install time, so `last_updated` is the validity start of the workload
/// certificate installed with them (the CA may backdate it a little).
fn local_secrets(shared: &Shared) -> Vec<LocalSecret> {
    let mut names = shared.secrets.local_names();
    names.sort();
    let secrets: Vec<(String, Arc<TlsSecret>)> = names
        .into_iter()
        .filter_map(|name| shared.secrets.get(&name).map(|s| (name, s)))
        .collect();
    let installed = secrets.iter().find_map(|(_, s)| match s.as_ref() {
        TlsSecret::Certificate(TlsCertificateSource::InlinePem { cert_chain, .. }) => {
            parse_pem_certificates(cert_chain)
                .first()
                .map(|c| c.valid_from)
        }
        _ => None,
    });
    secrets
        .into_iter()
        .map(|(name, secret)| LocalSecret {
            name,
            secret,
            last_updated: installed,
        })
        .collect()
}

/// What `/certs` shows of one certificate.
struct CertificateInfo {
    serial_number: String,
    uris: Vec<String>,
    dns: Vec<String>,
    ips: Vec<String>,
    valid_from: SystemTime,
    expiration_time: SystemTime,
}

/// Every certificate of a PEM text; blocks that are not certificates (or do
/// not parse) are skipped: `/certs` reports, it does not validate.
fn parse_pem_certificates(text: &str) -> Vec<CertificateInfo> {
    let Ok(blocks) = pem::parse_many(text) else {
        return Vec::new();
    };
    blocks
        .iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .filter_map(|b| {
            let (_, cert) = x509_parser::parse_x509_certificate(b.contents()).ok()?;
            let names = crate::tls::verify::names_of(&cert);
            Some(CertificateInfo {
                serial_number: cert.tbs_certificate.serial.to_str_radix(16),
                uris: names.uris,
                dns: names.dns,
                ips: names.ips.iter().map(ToString::to_string).collect(),
                valid_from: SystemTime::from(cert.validity().not_before.to_datetime()),
                expiration_time: SystemTime::from(cert.validity().not_after.to_datetime()),
            })
        })
        .collect()
}

/// Envoy's `envoy.admin.v3.CertificateDetails` of a PEM text. Secrets are
/// inline material, so `path` is `<inline>` as Envoy writes for those.
fn certificate_details(
    text: &str,
    now: SystemTime,
) -> Vec<envoy_types::pb::envoy::admin::v3::CertificateDetails> {
    use envoy_types::pb::envoy::admin::v3::{
        CertificateDetails, SubjectAlternateName, subject_alternate_name::Name,
    };
    let timestamp = |t: SystemTime| {
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        envoy_types::pb::google::protobuf::Timestamp {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }
    };
    parse_pem_certificates(text)
        .into_iter()
        .map(|c| {
            let san = |name| SubjectAlternateName { name: Some(name) };
            let subject_alt_names = c
                .uris
                .into_iter()
                .map(|u| san(Name::Uri(u)))
                .chain(c.dns.into_iter().map(|d| san(Name::Dns(d))))
                .chain(c.ips.into_iter().map(|i| san(Name::IpAddress(i))))
                .collect();
            let left = c.expiration_time.duration_since(now).unwrap_or_default();
            CertificateDetails {
                path: "<inline>".into(),
                serial_number: c.serial_number,
                subject_alt_names,
                days_until_expiration: left.as_secs() / 86_400,
                valid_from: Some(timestamp(c.valid_from)),
                expiration_time: Some(timestamp(c.expiration_time)),
                ..Default::default()
            }
        })
        .collect()
}

/// `/certs`: one entry per TLS secret in force (by name), the certificate
/// chain of `tls_certificate` secrets and the roots of validation contexts.
fn certs(shared: &Shared) -> Result<serde_json::Value, crate::xds_json::XdsJsonError> {
    use envoy_types::pb::envoy::admin::v3::{Certificate, Certificates};
    let now = SystemTime::now();
    let mut certificates = Vec::new();
    for name in shared.secrets.names() {
        let Some(secret) = shared.secrets.get(&name) else {
            continue;
        };
        let entry = match secret.as_ref() {
            TlsSecret::Certificate(TlsCertificateSource::InlinePem { cert_chain, .. }) => {
                Certificate {
                    ca_cert: Vec::new(),
                    cert_chain: certificate_details(cert_chain, now),
                }
            }
            TlsSecret::ValidationContext(TlsValidation {
                trusted_ca: TlsCaSource::InlinePem(roots),
                ..
            }) => Certificate {
                ca_cert: certificate_details(roots, now),
                cert_chain: Vec::new(),
            },
            _ => continue,
        };
        certificates.push(entry);
    }
    let mut value = crate::xds_json::to_value(&Certificates { certificates })?;
    // Envoy always writes the arrays, even when empty.
    if value.get("certificates").is_none() {
        value["certificates"] = serde_json::Value::Array(Vec::new());
    }
    for entry in value["certificates"].as_array_mut().into_iter().flatten() {
        for field in ["ca_cert", "cert_chain"] {
            if entry.get(field).is_none() {
                entry[field] = serde_json::Value::Array(Vec::new());
            }
            // Zero days and no SANs are shown too, as Envoy does.
            for detail in entry[field].as_array_mut().into_iter().flatten() {
                if detail.get("days_until_expiration").is_none() {
                    detail["days_until_expiration"] = "0".into();
                }
                if detail.get("subject_alt_names").is_none() {
                    detail["subject_alt_names"] = serde_json::Value::Array(Vec::new());
                }
            }
        }
    }
    Ok(value)
}
