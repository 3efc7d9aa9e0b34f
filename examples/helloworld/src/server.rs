use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HOST, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rand::Rng;
use tokio::net::TcpListener;

use crate::config::Config;

/// How long open connections get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What every request handler needs, fixed at bind time.
#[derive(Debug)]
struct App {
    version: String,
    instance: String,
    latency: Duration,
    jitter: Duration,
    failure_rate: f64,
    failure_status: u16,
    log_requests: bool,
}

/// A bound, not yet serving, server.
#[derive(Debug)]
pub struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
    app: Arc<App>,
}

/// Binds the configured address (port 0 picks a free port) and fixes the instance name.
pub async fn build(config: Config) -> std::io::Result<Bound> {
    let listener = TcpListener::bind((config.address, config.port)).await?;
    let addr = listener.local_addr()?;
    let instance = config
        .instance
        .unwrap_or_else(|| format!("helloworld-{}", addr.port()));
    let app = Arc::new(App {
        version: config.version,
        instance,
        latency: config.latency,
        jitter: config.jitter,
        failure_rate: config.failure_rate,
        failure_status: config.failure_status,
        log_requests: config.log_requests,
    });
    Ok(Bound {
        listener,
        addr,
        app,
    })
}

impl Bound {
    /// The real listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The instance name answers carry.
    pub fn instance(&self) -> &str {
        &self.app.instance
    }

    pub fn version(&self) -> &str {
        &self.app.version
    }

    /// Serves until `shutdown` completes, then stops accepting and gives open connections
    /// a few seconds to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Bound { listener, app, .. } = self;
        let graceful = GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _peer)) => stream,
                        Err(err) => {
                            // Typically EMFILE: back off instead of spinning.
                            eprintln!("helloworld: accept failed: {err}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let app = app.clone();
                    let service = service_fn(move |req| handle(app.clone(), req));
                    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        // A client that goes away mid-request is not the server's problem.
                        let _ = conn.await;
                    });
                }
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
    }
}

async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let version = req.version();
    let resp = respond(&app, &req).await;
    if app.log_requests {
        eprintln!(
            "{method} {path} {version:?} {} {}ms instance={} version={}",
            resp.status().as_u16(),
            started.elapsed().as_millis(),
            app.instance,
            app.version
        );
    }
    Ok(resp)
}

async fn respond(app: &App, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let known = matches!(path, "/istio" | "/hello" | "/headers" | "/healthz");
    if !known {
        return text(StatusCode::NOT_FOUND, format!("no route for {path}\n"));
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} answers GET only\n"),
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    if path == "/healthz" {
        return text(StatusCode::OK, "ok\n".to_owned());
    }

    let delay = app.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if app.failure_rate > 0.0 && rand::rng().random::<f64>() < app.failure_rate {
        return text(
            StatusCode::from_u16(app.failure_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            format!(
                "injected failure (failure rate {}) from version: {}, instance: {}\n",
                app.failure_rate, app.version, app.instance
            ),
        );
    }
    match path {
        "/headers" => text(StatusCode::OK, echo_headers(req)),
        _ => text(
            StatusCode::OK,
            format!(
                "Hello version: {}, instance: {}\n",
                app.version, app.instance
            ),
        ),
    }
}

impl App {
    /// The configured latency, spread uniformly over latency ± jitter (never below zero).
    fn delay(&self) -> Duration {
        if self.jitter.is_zero() {
            return self.latency;
        }
        let low = self.latency.saturating_sub(self.jitter);
        let high = self.latency + self.jitter;
        rand::rng().random_range(low..=high)
    }
}

/// One `name: value` line per header, sorted by name then value. An h2 request carries its
/// host as `:authority`, not a `Host` header: it is shown as `host` so both protocols echo
/// the same lines.
fn echo_headers(req: &Request<Incoming>) -> String {
    let mut lines: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        lines
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    if !req.headers().contains_key(HOST)
        && let Some(authority) = req.uri().authority()
    {
        lines
            .entry(HOST.as_str().to_owned())
            .or_default()
            .push(authority.to_string());
    }
    let mut out = String::new();
    for (name, mut values) in lines {
        values.sort();
        for value in values {
            out.push_str(&name);
            out.push_str(": ");
            out.push_str(&value);
            out.push('\n');
        }
    }
    out
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
