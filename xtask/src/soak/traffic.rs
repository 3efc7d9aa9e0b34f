//! The soak's traffic: lanes of `GET /hello` at steady rates, each lane one way into the mesh
//! (through the ingress gateway or through a sidecar's `http_proxy` listener) and one way of
//! using connections (HTTP/1.1 kept alive, HTTP/1.1 on a new connection per request, HTTP/2
//! with prior knowledge). Every answer is counted by lane and status, every failure by lane
//! and kind; nothing stops the run.
//!
//! Rates are kept by one timer per connection (missed ticks are delayed, not burst), so a
//! slow mesh gets fewer requests rather than a pile-up; the counts say what was sent.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{MissedTickBehavior, interval, sleep, timeout};

/// A request (connection included) that takes longer is counted as a `timeout` error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The path every lane asks for: the demo routes it to `helloworld`, which answers
/// `Hello version: V, instance: I`.
pub const PATH: &str = "/hello";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// HTTP/1.1 on connections kept open.
    Http1KeepAlive,
    /// HTTP/1.1, one new connection per request (`connection: close`).
    Http1NewConnection,
    /// HTTP/2 with prior knowledge (h2c), many streams per connection.
    H2c,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Http1KeepAlive => "h1 keep-alive",
            Protocol::Http1NewConnection => "h1 new connection",
            Protocol::H2c => "h2c",
        }
    }
}

/// One stream of requests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Lane {
    /// `gateway h2c`, `via helloworld-safe h1 keep-alive`, ...
    pub name: String,
    pub addr: SocketAddr,
    /// The request target: `/hello` at the gateway, the absolute form
    /// `http://helloworld:5000/hello` at a sidecar's HTTP proxy listener.
    pub uri: String,
    pub host: String,
    pub protocol: Protocol,
    /// Requests per second of the whole lane.
    pub rate: f64,
    /// Connections kept open (keep-alive and h2c), sharing the rate.
    pub connections: usize,
}

/// Shares of the total rate: (protocol, share, connections). Through the gateway the three
/// protocols; through each sidecar (whose calls reach the other sidecars over mTLS) HTTP/1.1
/// kept alive and on new connections.
const GATEWAY_MIX: [(Protocol, f64, usize); 3] = [
    (Protocol::Http1KeepAlive, 0.35, 4),
    (Protocol::Http1NewConnection, 0.10, 1),
    (Protocol::H2c, 0.20, 2),
];
const SIDECARS_MIX: [(Protocol, f64, usize); 2] = [
    (Protocol::Http1KeepAlive, 0.25, 1),
    (Protocol::Http1NewConnection, 0.10, 1),
];
/// The service every sidecar lane calls, as an app would through `http_proxy`.
pub const SERVICE: &str = "helloworld:5000";

/// [`plan`] for the local mesh `status` describes: its gateway and every sidecar.
pub fn plan_for(total_rate: f64, status: &super::mesh::MeshStatus) -> anyhow::Result<Vec<Lane>> {
    let sidecars: Vec<(String, SocketAddr)> = status
        .sidecars
        .iter()
        .map(|s| (s.workload.clone(), s.outbound_address))
        .collect();
    Ok(plan(total_rate, status.gateway_http()?, &sidecars))
}

/// The lanes for `total_rate` requests per second: the gateway's at `gateway`, and each
/// sidecar's (name, `http_proxy` address) sharing the sidecars' part equally.
pub fn plan(total_rate: f64, gateway: SocketAddr, sidecars: &[(String, SocketAddr)]) -> Vec<Lane> {
    let mut lanes = Vec::new();
    for (protocol, share, connections) in GATEWAY_MIX {
        lanes.push(Lane {
            name: format!("gateway {}", protocol.label()),
            addr: gateway,
            uri: match protocol {
                // HTTP/2 carries the authority in the URI (`:authority`).
                Protocol::H2c => format!("http://soak.local{PATH}"),
                _ => PATH.to_string(),
            },
            host: "soak.local".into(),
            protocol,
            rate: total_rate * share,
            connections,
        });
    }
    for (protocol, share, connections) in SIDECARS_MIX {
        for (workload, addr) in sidecars {
            lanes.push(Lane {
                name: format!("via {workload} {} (mTLS)", protocol.label()),
                addr: *addr,
                uri: format!("http://{SERVICE}{PATH}"),
                host: SERVICE.into(),
                protocol,
                rate: total_rate * share / sidecars.len() as f64,
                connections,
            });
        }
    }
    lanes
}

/// What one lane got.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct LaneCounts {
    /// Requests finished: answered or failed.
    pub requests: u64,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Failures without an answer, by kind (`connect`, `handshake`, `send`, `body`, `timeout`).
    pub errors: BTreeMap<String, u64>,
    /// The first message of each kind of failure.
    pub error_examples: BTreeMap<String, String>,
    /// Answers by `helloworld` version.
    pub versions: BTreeMap<String, u64>,
    /// Connections opened.
    pub connections: u64,
    pub latency_sum_us: u64,
    pub latency_max_us: u64,
}

impl LaneCounts {
    /// Requests that failed or were answered with anything but 2xx.
    pub fn failures(&self) -> u64 {
        self.errors.values().sum::<u64>()
            + self
                .statuses
                .iter()
                .filter(|(s, _)| !(200..300).contains(*s))
                .map(|(_, n)| n)
                .sum::<u64>()
    }
}

/// A request that got no answer.
#[derive(Debug, Clone)]
pub struct RequestError {
    pub kind: &'static str,
    pub message: String,
}

fn failed(kind: &'static str, e: impl std::fmt::Display) -> RequestError {
    RequestError {
        kind,
        message: e.to_string(),
    }
}

/// What an answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The `helloworld` version that answered.
    pub version: Option<String>,
    /// For an answer other than 2xx: the proxy's `x-mesh-reason` (or Envoy's
    /// `x-envoy-response-flags`-like detail) or the start of the body.
    pub detail: Option<String>,
}

#[cfg(test)]
impl Answer {
    pub fn ok(version: &str) -> Answer {
        Answer {
            status: 200,
            version: Some(version.to_string()),
            detail: None,
        }
    }
}

/// Most failures kept with their time (the counts go on past it).
pub const FAILURE_LOG_MAX: usize = 100_000;

/// A request that failed, when and how: the chaos run attributes each to what it did then.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failure {
    /// Seconds since the counters were made (the traffic's start).
    pub at: f64,
    pub lane: String,
    /// `connect`, `handshake`, `send`, `body`, `timeout`, or `status 503`.
    pub kind: String,
    pub message: String,
}

/// Counts of every lane, shared by the lanes' tasks, and the failures' log.
#[derive(Debug)]
pub struct Counters {
    lanes: Mutex<BTreeMap<String, LaneCounts>>,
    started: Instant,
    failures: Mutex<Vec<Failure>>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            lanes: Mutex::default(),
            started: Instant::now(),
            failures: Mutex::default(),
        }
    }
}

impl Counters {
    /// Seconds since the counters were made.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Every failure so far, in the order they were recorded.
    pub fn failures(&self) -> Vec<Failure> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn log_failure(&self, lane: &str, kind: String, message: String) {
        let mut log = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if log.len() < FAILURE_LOG_MAX {
            log.push(Failure {
                at: self.elapsed(),
                lane: lane.to_string(),
                kind,
                message,
            });
        }
    }

    pub fn record(&self, lane: &str, outcome: &Result<Answer, RequestError>, latency: Duration) {
        match outcome {
            Ok(a) if !(200..300).contains(&a.status) => self.log_failure(
                lane,
                format!("status {}", a.status),
                a.detail.clone().unwrap_or_default(),
            ),
            Ok(_) => {}
            Err(e) => self.log_failure(lane, e.kind.to_string(), e.message.clone()),
        }
        let mut lanes = self
            .lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let c = lanes.entry(lane.to_string()).or_default();
        c.requests += 1;
        match outcome {
            Ok(Answer {
                status, version, ..
            }) => {
                *c.statuses.entry(*status).or_default() += 1;
                if let Some(v) = version {
                    *c.versions.entry(v.clone()).or_default() += 1;
                }
                let us = latency.as_micros() as u64;
                c.latency_sum_us += us;
                c.latency_max_us = c.latency_max_us.max(us);
            }
            Err(e) => {
                *c.errors.entry(e.kind.to_string()).or_default() += 1;
                c.error_examples
                    .entry(e.kind.to_string())
                    .or_insert_with(|| e.message.clone());
            }
        }
    }

    pub fn connection_opened(&self, lane: &str) {
        let mut lanes = self
            .lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        lanes.entry(lane.to_string()).or_default().connections += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<String, LaneCounts> {
        self.lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// (requests, failures) over all lanes so far.
    pub fn totals(&self) -> (u64, u64) {
        let lanes = self
            .lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        lanes
            .values()
            .fold((0, 0), |(r, f), c| (r + c.requests, f + c.failures()))
    }
}

/// `Hello version: risky, instance: x` -> `risky`.
pub fn helloworld_version(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let rest = text.trim_start().strip_prefix("Hello version: ")?;
    let version = rest.split([',', '\n']).next()?.trim();
    (!version.is_empty()).then(|| version.to_string())
}

/// Starts every lane's tasks in `tasks`; they run until the set is aborted.
pub fn spawn(lanes: &[Lane], counters: &Arc<Counters>, tasks: &mut JoinSet<()>) {
    for lane in lanes {
        if lane.rate <= 0.0 {
            continue;
        }
        let lane = Arc::new(lane.clone());
        match lane.protocol {
            Protocol::Http1NewConnection => {
                tasks.spawn(new_connection_loop(lane, counters.clone()));
            }
            Protocol::Http1KeepAlive | Protocol::H2c => {
                let n = lane.connections.max(1);
                let period = Duration::from_secs_f64(n as f64 / lane.rate);
                for i in 0..n {
                    // Spread the connections' ticks over one period.
                    let offset = period.mul_f64(i as f64 / n as f64);
                    let (lane, counters) = (lane.clone(), counters.clone());
                    if lane.protocol == Protocol::H2c {
                        tasks.spawn(h2c_loop(lane, counters, period, offset));
                    } else {
                        tasks.spawn(keep_alive_loop(lane, counters, period, offset));
                    }
                }
            }
        }
    }
}

fn ticker(period: Duration) -> tokio::time::Interval {
    let mut tick = interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

fn request(lane: &Lane, close: bool) -> Request<Empty<Bytes>> {
    let mut req = Request::get(lane.uri.as_str());
    if lane.protocol != Protocol::H2c {
        req = req.header(header::HOST, lane.host.as_str());
    }
    if close {
        req = req.header(header::CONNECTION, "close");
    }
    req.header(header::USER_AGENT, "xtask-soak")
        .body(Empty::new())
        .expect("a static request is valid")
}

async fn connect(addr: SocketAddr) -> Result<TokioIo<TcpStream>, RequestError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| failed("connect", e))?;
    let _ = stream.set_nodelay(true);
    Ok(TokioIo::new(stream))
}

async fn connect_h1(addr: SocketAddr) -> Result<http1::SendRequest<Empty<Bytes>>, RequestError> {
    let io = connect(addr).await?;
    let (sender, conn) = http1::handshake(io)
        .await
        .map_err(|e| failed("handshake", e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn connect_h2(addr: SocketAddr) -> Result<http2::SendRequest<Empty<Bytes>>, RequestError> {
    let io = connect(addr).await?;
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(io)
        .await
        .map_err(|e| failed("handshake", e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// The status and version of an answer, its body read to the end.
async fn answer(
    sent: impl Future<Output = hyper::Result<Response<Incoming>>>,
) -> Result<Answer, RequestError> {
    let response = sent.await.map_err(|e| failed("send", e))?;
    let status = response.status().as_u16();
    let reason = response
        .headers()
        .get("x-mesh-reason")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| failed("body", e))?
        .to_bytes();
    let detail = (!(200..300).contains(&status)).then(|| {
        reason.unwrap_or_else(|| {
            String::from_utf8_lossy(&body[..body.len().min(120)])
                .trim()
                .to_string()
        })
    });
    Ok(Answer {
        status,
        version: helloworld_version(&body),
        detail,
    })
}

async fn within<T>(f: impl Future<Output = Result<T, RequestError>>) -> Result<T, RequestError> {
    timeout(REQUEST_TIMEOUT, f).await.unwrap_or_else(|_| {
        Err(failed(
            "timeout",
            format!("no answer within {REQUEST_TIMEOUT:?}"),
        ))
    })
}

async fn keep_alive_loop(
    lane: Arc<Lane>,
    counters: Arc<Counters>,
    period: Duration,
    offset: Duration,
) {
    sleep(offset).await;
    let mut tick = ticker(period);
    let mut conn: Option<http1::SendRequest<Empty<Bytes>>> = None;
    loop {
        tick.tick().await;
        let started = Instant::now();
        let outcome = within(async {
            // A connection the server closed between two requests is replaced before the
            // request is written (as any pooled client does): not a failed request.
            if let Some(sender) = conn.as_mut()
                && (sender.is_closed() || sender.ready().await.is_err())
            {
                conn = None;
            }
            let sender = match conn.as_mut() {
                Some(s) => s,
                None => {
                    let s = connect_h1(lane.addr).await?;
                    counters.connection_opened(&lane.name);
                    conn.insert(s)
                }
            };
            answer(sender.send_request(request(&lane, false))).await
        })
        .await;
        if outcome.is_err() {
            conn = None;
        }
        counters.record(&lane.name, &outcome, started.elapsed());
    }
}

async fn new_connection_loop(lane: Arc<Lane>, counters: Arc<Counters>) {
    let mut tick = ticker(Duration::from_secs_f64(1.0 / lane.rate));
    // Requests in flight: aborted with this task.
    let mut in_flight = JoinSet::new();
    loop {
        tick.tick().await;
        while in_flight.try_join_next().is_some() {}
        let (lane, counters) = (lane.clone(), counters.clone());
        in_flight.spawn(async move {
            let started = Instant::now();
            let outcome = within(async {
                let mut sender = connect_h1(lane.addr).await?;
                counters.connection_opened(&lane.name);
                answer(sender.send_request(request(&lane, true))).await
            })
            .await;
            counters.record(&lane.name, &outcome, started.elapsed());
        });
    }
}

async fn h2c_loop(lane: Arc<Lane>, counters: Arc<Counters>, period: Duration, offset: Duration) {
    sleep(offset).await;
    let mut tick = ticker(period);
    let mut conn: Option<http2::SendRequest<Empty<Bytes>>> = None;
    let mut streams = JoinSet::new();
    loop {
        tick.tick().await;
        while streams.try_join_next().is_some() {}
        if conn.as_ref().is_none_or(|s| s.is_closed()) {
            let started = Instant::now();
            match within(connect_h2(lane.addr)).await {
                Ok(s) => {
                    counters.connection_opened(&lane.name);
                    conn = Some(s);
                }
                Err(e) => {
                    counters.record(&lane.name, &Err(e), started.elapsed());
                    continue;
                }
            }
        }
        let Some(mut sender) = conn.clone() else {
            continue;
        };
        let (lane, counters) = (lane.clone(), counters.clone());
        streams.spawn(async move {
            let started = Instant::now();
            let outcome = within(async {
                sender.ready().await.map_err(|e| failed("send", e))?;
                answer(sender.send_request(request(&lane, false))).await
            })
            .await;
            counters.record(&lane.name, &outcome, started.elapsed());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_splits_the_rate_over_every_way_in() {
        let gw: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let sidecars = [
            ("a".to_string(), "127.0.0.1:1001".parse().unwrap()),
            ("b".to_string(), "127.0.0.1:1002".parse().unwrap()),
        ];
        let lanes = plan(300.0, gw, &sidecars);
        assert_eq!(lanes.len(), 3 + 2 * 2);
        let total: f64 = lanes.iter().map(|l| l.rate).sum();
        assert!((total - 300.0).abs() < 1e-6, "{total}");
        let h2 = lanes.iter().find(|l| l.protocol == Protocol::H2c).unwrap();
        assert_eq!(h2.addr, gw);
        assert_eq!(h2.uri, "http://soak.local/hello");
        let via_b: Vec<&Lane> = lanes.iter().filter(|l| l.addr == sidecars[1].1).collect();
        assert_eq!(via_b.len(), 2);
        assert!(
            via_b
                .iter()
                .all(|l| l.uri == "http://helloworld:5000/hello")
        );
        assert_eq!(via_b[0].name, "via b h1 keep-alive (mTLS)");
        let names: std::collections::BTreeSet<&str> =
            lanes.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names.len(), lanes.len(), "lane names are unique");
    }

    #[test]
    fn version_is_read_from_helloworld_answers() {
        assert_eq!(
            helloworld_version(b"Hello version: risky, instance: helloworld-risky\n").as_deref(),
            Some("risky")
        );
        assert_eq!(
            helloworld_version(b"Hello version: safe\n").as_deref(),
            Some("safe")
        );
        assert_eq!(helloworld_version(b"upstream connect error"), None);
        assert_eq!(helloworld_version(&[0xff, 0xfe]), None);
    }

    #[test]
    fn counts_by_status_error_and_version() {
        let c = Counters::default();
        let ms = Duration::from_millis(2);
        c.record("l", &Ok(Answer::ok("safe")), ms);
        let unavailable = Answer {
            status: 503,
            version: None,
            detail: Some("UF".into()),
        };
        c.record("l", &Ok(unavailable), Duration::from_millis(5));
        c.record("l", &Err(failed("connect", "refused")), ms);
        c.record("l", &Err(failed("connect", "refused again")), ms);
        c.connection_opened("l");
        let lanes = c.snapshot();
        let l = &lanes["l"];
        assert_eq!(l.requests, 4);
        assert_eq!(l.statuses, BTreeMap::from([(200, 1), (503, 1)]));
        assert_eq!(l.errors["connect"], 2);
        assert_eq!(
            l.error_examples["connect"], "refused",
            "the first message is kept"
        );
        assert_eq!(l.versions["safe"], 1);
        assert_eq!(l.latency_max_us, 5000);
        assert_eq!(l.connections, 1);
        assert_eq!(l.failures(), 3);
        assert_eq!(c.totals(), (4, 3));
        // Each failure is also logged with its time, kind and detail.
        let log = c.failures();
        let kinds: Vec<(&str, &str)> = log
            .iter()
            .map(|f| (f.kind.as_str(), f.message.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("status 503", "UF"),
                ("connect", "refused"),
                ("connect", "refused again")
            ]
        );
        assert!(log.windows(2).all(|w| w[0].at <= w[1].at));
    }
}
