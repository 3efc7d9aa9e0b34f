use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// How an [`HttpUpstream`] answers the requests it receives from now on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// 200 with the upstream's name as body (the default).
    Ok,
    /// Always answer with this status (body `<name> failing`).
    Fail(StatusCode),
    /// Answer the next `count` requests with `status`, then go back to [`Behavior::Ok`].
    FailNext { count: usize, status: StatusCode },
    /// Never answer; the request stays open until the client gives up or the upstream drops.
    Hang,
    /// Drop the request without an answer: HTTP/1 closes the connection, h2 resets the stream.
    Reset,
}

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Which accepted connection carried it (1-based, in accept order).
    pub connection: u64,
}

impl RecordedRequest {
    /// The authority the client asked for: the `Host` header, else the URI's authority
    /// (h2 `:authority`).
    pub fn host(&self) -> Option<String> {
        self.headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| self.uri.authority().map(|a| a.to_string()))
    }

    /// A header's value as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Debug)]
struct State {
    name: String,
    behavior: Mutex<Behavior>,
    delay: Mutex<Duration>,
    requests: Mutex<Vec<RecordedRequest>>,
    connections_total: AtomicU64,
    connections_current: AtomicU64,
    connections_max: AtomicU64,
}

impl State {
    /// Decides the answer for one request, consuming one `FailNext` credit.
    fn next_behavior(&self) -> Behavior {
        let mut behavior = self.behavior.lock().unwrap();
        match &mut *behavior {
            Behavior::FailNext { count, status } => {
                let status = *status;
                if *count <= 1 {
                    *behavior = Behavior::Ok;
                } else {
                    *count -= 1;
                }
                Behavior::Fail(status)
            }
            other => other.clone(),
        }
    }
}

/// Keeps the connection gauges right however the connection task ends.
struct ConnectionGuard(Arc<State>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections_current.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A real HTTP/1.1 + h2 (prior knowledge, auto-detected) server on 127.0.0.1:0 that records
/// every request and answers according to its current [`Behavior`].
///
/// Responses carry `x-upstream-name: <name>`. A request with `Upgrade: websocket` gets
/// `101 Switching Protocols` and the upgraded connection echoes raw bytes (no WebSocket
/// framing), whatever the behaviour. Dropping the upstream stops the listener and every open
/// connection.
#[derive(Debug)]
pub struct HttpUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl HttpUpstream {
    /// Binds 127.0.0.1:0 and starts serving.
    pub async fn start(name: impl Into<String>) -> anyhow::Result<HttpUpstream> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            name: name.into(),
            behavior: Mutex::new(Behavior::Ok),
            delay: Mutex::new(Duration::ZERO),
            requests: Mutex::new(Vec::new()),
            connections_total: AtomicU64::new(0),
            connections_current: AtomicU64::new(0),
            connections_max: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        Ok(HttpUpstream { addr, state, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Replaces the behaviour for requests that arrive from now on.
    pub fn set_behavior(&self, behavior: Behavior) {
        *self.state.behavior.lock().unwrap() = behavior;
    }

    /// Back to the default: 200 with the name as body.
    pub fn respond_ok(&self) {
        self.set_behavior(Behavior::Ok);
    }

    /// Answer every request with `status`.
    pub fn fail_always(&self, status: StatusCode) {
        self.set_behavior(Behavior::Fail(status));
    }

    /// Answer the next `count` requests with `status`, then 200 again.
    pub fn fail_next(&self, count: usize, status: StatusCode) {
        self.set_behavior(if count == 0 {
            Behavior::Ok
        } else {
            Behavior::FailNext { count, status }
        });
    }

    /// Never answer.
    pub fn hang(&self) {
        self.set_behavior(Behavior::Hang);
    }

    /// Drop requests without answering.
    pub fn reset(&self) {
        self.set_behavior(Behavior::Reset);
    }

    /// Wait this long before every answer (success or failure); zero to stop.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// A copy of every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The most recent request, if any.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.state.requests.lock().unwrap().last().cloned()
    }

    pub fn request_count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// Forgets recorded requests and the total/max connection counts (open connections stay
    /// counted as current).
    pub fn clear(&self) {
        self.state.requests.lock().unwrap().clear();
        self.state.connections_total.store(0, Ordering::SeqCst);
        let current = self.state.connections_current.load(Ordering::SeqCst);
        self.state.connections_max.store(current, Ordering::SeqCst);
    }

    /// Connections accepted since start (or [`clear`](Self::clear)).
    pub fn connections_total(&self) -> u64 {
        self.state.connections_total.load(Ordering::SeqCst)
    }

    /// Connections open right now.
    pub fn connections_current(&self) -> u64 {
        self.state.connections_current.load(Ordering::SeqCst)
    }

    /// The most connections that were open at the same time.
    pub fn connections_max_concurrent(&self) -> u64 {
        self.state.connections_max.load(Ordering::SeqCst)
    }
}

impl Drop for HttpUpstream {
    fn drop(&mut self) {
        // The accept task owns the JoinSet of connections: aborting it drops them all.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else { continue };
                let id = state.connections_total.fetch_add(1, Ordering::SeqCst) + 1;
                let current = state.connections_current.fetch_add(1, Ordering::SeqCst) + 1;
                state.connections_max.fetch_max(current, Ordering::SeqCst);
                let guard = ConnectionGuard(state.clone());
                let state = state.clone();
                connections.spawn(async move {
                    let _guard = guard;
                    let service = service_fn(move |req| handle(state.clone(), id, req));
                    let builder = auto::Builder::new(TokioExecutor::new());
                    // Errors here are the client going away or a deliberate reset: nothing
                    // for the test to act on.
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request dropped on purpose (Behavior::Reset)")
    }
}

impl std::error::Error for Dropped {}

async fn handle(
    state: Arc<State>,
    connection: u64,
    mut req: Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Dropped> {
    let is_websocket = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let on_upgrade = is_websocket.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    state.requests.lock().unwrap().push(RecordedRequest {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
        body,
        connection,
    });
    let name = HeaderValue::from_str(&state.name).unwrap_or(HeaderValue::from_static("invalid"));

    if let Some(on_upgrade) = on_upgrade {
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let _ = echo(TokioIo::new(upgraded)).await;
            }
        });
        let mut resp = hyper::Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        resp.headers_mut().insert("x-upstream-name", name);
        return Ok(resp);
    }

    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (status, body) = match state.next_behavior() {
        Behavior::Ok | Behavior::FailNext { .. } => (StatusCode::OK, state.name.clone()),
        Behavior::Fail(status) => (status, format!("{} failing", state.name)),
        Behavior::Hang => std::future::pending::<(StatusCode, String)>().await,
        Behavior::Reset => return Err(Dropped),
    };
    let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert("x-upstream-name", name);
    Ok(resp)
}

pub(crate) async fn echo<S>(mut io: S) -> std::io::Result<u64>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        let n = io.read(&mut buf).await?;
        if n == 0 {
            io.shutdown().await?;
            return Ok(total);
        }
        io.write_all(&buf[..n]).await?;
        total += n as u64;
    }
}
