//! The debug and metrics listener (15014 by default, as istiod's).
//!
//! Endpoints, all `GET`, JSON unless said otherwise:
//! - `/debug/syncz`: one object per connected proxy (ADS stream) of either
//!   port: node identity, `port` (`plaintext` or `secure`), the SPIFFE
//!   `identity` a secure stream authenticated as, connected since, the configuration
//!   `generation` it last translated (pushed and recorded below), and per
//!   type (`cds`, `eds`, `lds`, `rds`, plus `sds` once it asks for secrets) the sent and
//!   ACKed version and nonce, the last NACK and the status `SYNCED`, `STALE`,
//!   `STALE (Never Acknowledged)` or `NOT SENT`; plus Istio's flat fields
//!   (`cluster_sent`, `cluster_acked`, ...).
//! - `/debug/registryz`: the service registry in force.
//! - `/debug/configz`: the resources in force with their file, and every
//!   file's state (rejected files with their errors).
//! - `/metrics`: Prometheus text.
//! - `/ready`: 200 once the configuration is loaded and xDS is served.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::ads::SyncRegistry;
use crate::metrics::Metrics;
use crate::source::Snapshot;

/// What the debug endpoints read.
pub struct DebugState {
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub sync: Arc<SyncRegistry>,
    pub metrics: Arc<Metrics>,
}

/// Serves the debug endpoints on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    state: Arc<DebugState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("debug listener accept: {e}");
                    continue;
                }
            },
            _ = crate::server::until_shutdown(&mut shutdown) => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(state, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!("debug connection: {e}");
            }
        });
    }
}

async fn respond(state: Arc<DebugState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    match path.as_str() {
        // Dumps of the whole configuration take seconds to render when it is
        // big: on the blocking pool, so `/ready`, syncz and ADS keep answering.
        "/debug/configz" | "/debug/registryz" => {
            tokio::task::spawn_blocking(move || handle(&state, &method, &path))
                .await
                .unwrap_or_else(|e| {
                    text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("rendering failed: {e}\n"),
                    )
                })
        }
        _ => handle(&state, &method, &path),
    }
}

fn handle(state: &DebugState, method: &http::Method, path: &str) -> Response<Full<Bytes>> {
    if method != http::Method::GET && method != http::Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".to_string());
    }
    match path {
        "/debug/syncz" => json_response(state.sync.to_json()),
        "/debug/registryz" => {
            let snapshot = state.snapshots.borrow().clone();
            json_response(
                serde_json::to_value(&*snapshot.state.registry)
                    .unwrap_or_else(|e| json!({ "error": e.to_string() })),
            )
        }
        "/debug/configz" => {
            // Not rendered under the channel's lock: that would hold up the
            // publishing of the next generation.
            let snapshot = state.snapshots.borrow().clone();
            json_response(configz(&snapshot))
        }
        "/metrics" | "/stats/prometheus" => {
            let mut r = text(StatusCode::OK, state.metrics.encode());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        "/ready" => text(StatusCode::OK, "ready\n".to_string()),
        "/" | "/debug" => text(
            StatusCode::OK,
            "/debug/syncz\n/debug/registryz\n/debug/configz\n/metrics\n/ready\n".to_string(),
        ),
        other => text(StatusCode::NOT_FOUND, format!("no endpoint {other}\n")),
    }
}

/// The `/debug/configz` document.
pub fn configz(snapshot: &Snapshot) -> Value {
    let mut resources = Vec::new();
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for s in &snapshot.sources {
        for r in &s.resources {
            resources.push(json!({
                "kind": r.meta.kind,
                "api_version": r.meta.api_version,
                "namespace": r.meta.namespace,
                "name": r.meta.name,
                "file": &*r.meta.source.file,
                "document": r.meta.source.document,
                "line": r.meta.source.line,
                "object": r.object.to_json(),
            }));
        }
        let files: Vec<Value> = s
            .origins
            .iter()
            .map(|o| {
                let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
                v["state"] = o.state().into();
                v
            })
            .collect();
        for o in s.origins.iter().filter(|o| !o.errors.is_empty()) {
            errors.push(json!({
                "source": s.source,
                "file": o.name,
                "state": o.state(),
                "errors": o.errors,
            }));
        }
        sources.push(json!({
            "source": s.source,
            "files": files,
            "skipped": s.skipped.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
        }));
    }
    json!({
        "generation": snapshot.generation,
        "created_at": mesh_ca::rfc3339_millis(snapshot.created_at),
        "resources": resources,
        "sources": sources,
        "errors": errors,
    })
}

fn json_response(v: Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(&v).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
