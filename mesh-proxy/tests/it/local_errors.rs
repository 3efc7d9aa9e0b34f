//! Locally generated errors: each has the right status, response flag (in
//! the access log), a short body and `x-mesh-reason`.

use std::time::Duration;

use crate::common::*;
use mesh_proxy::model::*;
use mesh_test_util::{HttpUpstream, send, wait_until};

struct Fixture {
    proxy: mesh_proxy::Bound,
    log: tempfile::NamedTempFile,
    _up: HttpUpstream,
    up_addr: std::net::SocketAddr,
}

/// Routes: /ok -> live, /none -> cluster without healthy hosts,
/// /refused -> closed port, /reset -> upstream that resets, /slow -> 200ms
/// route timeout against an upstream that never answers, /ghost -> a
/// cluster that does not exist.
async fn fixture() -> Fixture {
    let up = HttpUpstream::start("live").await.unwrap();
    let hanging = HttpUpstream::start("hanging").await.unwrap();
    hanging.hang();
    let resetting = HttpUpstream::start("resetting").await.unwrap();
    resetting.reset();
    // A port that is closed: bind, read the port, release it.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // No endpoints at all. (A cluster whose hosts are all unhealthy is in
    // Envoy's panic mode and still sends to them.)
    let none = cluster("none", &[], LbPolicy::RoundRobin);
    let mut slow = forward_action(Destination::Cluster("hanging".into()));
    slow.timeout = Some(Duration::from_millis(200));
    let t = table(
        "routes",
        vec![vhost(
            "known",
            vec![DomainPattern::Exact("known".into())],
            vec![
                to_cluster("ok", prefix("/ok"), "live"),
                to_cluster("none", prefix("/none"), "none"),
                to_cluster("refused", prefix("/refused"), "refused"),
                to_cluster("reset", prefix("/reset"), "resetting"),
                route(
                    "slow",
                    prefix("/slow"),
                    RouteAction::Forward(Box::new(slow)),
                ),
                to_cluster("ghost", prefix("/ghost"), "ghost"),
            ],
        )],
    );
    let log = tempfile::NamedTempFile::new().unwrap();
    let snap = http_snapshot(
        t,
        vec![
            cluster("live", &[up.addr()], LbPolicy::RoundRobin),
            none,
            cluster("refused", &[closed], LbPolicy::RoundRobin),
            cluster("resetting", &[resetting.addr()], LbPolicy::RoundRobin),
            cluster("hanging", &[hanging.addr()], LbPolicy::RoundRobin),
        ],
        vec![file_log(log.path())],
    );
    let proxy = start(snap).await;
    // Keep the failing upstreams alive for the test's duration.
    std::mem::forget(hanging);
    std::mem::forget(resetting);
    let up_addr = up.addr();
    Fixture {
        proxy,
        log,
        _up: up,
        up_addr,
    }
}

async fn log_line_for(f: &Fixture, path: &str) -> String {
    let needle = format!("\"GET {path} HTTP/1.1\"");
    wait_until(Duration::from_secs(10), async || {
        let text = std::fs::read_to_string(f.log.path()).unwrap_or_default();
        text.lines()
            .find(|l| l.contains(&needle))
            .map(str::to_string)
            .ok_or("no log line yet")
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn local_errors_say_why() {
    let f = fixture().await;
    let addr = f.proxy.listener(LISTENER).unwrap();

    let cases: &[(&str, &str, u16, &str, &str)] = &[
        ("unknown", "/anything", 404, "NR", "no route"),
        ("known", "/none", 503, "UH", "no healthy upstream"),
        ("known", "/refused", 503, "UF", "upstream connect error"),
        ("known", "/reset", 503, "UC", "upstream reset"),
        ("known", "/slow", 504, "UT", "upstream request timeout"),
        ("known", "/ghost", 503, "NC", "not configured"),
    ];
    for (host, path, status, flag, reason) in cases {
        let r = send(addr, get(host, path)).await.unwrap();
        assert_eq!(r.status.as_u16(), *status, "{path}: {}", r.text());
        assert!(r.text().contains(reason), "{path}: body {:?}", r.text());
        let header = r.header("x-mesh-reason").unwrap_or_default().to_string();
        assert!(header.contains(reason), "{path}: x-mesh-reason {header:?}");
        let line = log_line_for(&f, path).await;
        assert!(
            line.contains(&format!(" {status} {flag} ")),
            "{path}: {line}"
        );
    }

    // The slow host is charged with the timeout.
    let admin = f.proxy.admin_addr.unwrap();
    let clusters = send(admin, get("admin", "/clusters")).await.unwrap().text();
    assert!(clusters.contains("::rq_timeout::1"), "{clusters}");

    // A healthy request has no flag and no x-mesh-reason.
    let r = send(addr, get("known", "/ok")).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("x-mesh-reason").is_none());
    let line = log_line_for(&f, "/ok").await;
    assert!(line.contains(" 200 - "), "{line}");
    assert!(
        line.contains(&format!("\"{}\"", f.up_addr)),
        "upstream host logged: {line}"
    );
}

#[tokio::test]
async fn connect_timeout_is_uf() {
    // A listener that never accepts, with its accept queue filled: the
    // kernel drops further SYNs, so connecting hangs until the timeout.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(0).unwrap();
    let full = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(100),
            tokio::net::TcpStream::connect(full),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let mut c = cluster("blackhole", &[full], LbPolicy::RoundRobin);
    c.connect_timeout = Duration::from_millis(250);
    let log = tempfile::NamedTempFile::new().unwrap();
    let t = table(
        "routes",
        vec![vhost(
            "all",
            vec![DomainPattern::Any],
            vec![to_cluster("r", prefix("/"), "blackhole")],
        )],
    );
    let proxy = start(http_snapshot(t, vec![c], vec![file_log(log.path())])).await;
    let started = std::time::Instant::now();
    let r = send(proxy.listener(LISTENER).unwrap(), get("h", "/"))
        .await
        .unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("timed out"), "{}", r.text());
    assert!(started.elapsed() >= Duration::from_millis(250));
    let line = wait_until(Duration::from_secs(10), async || {
        std::fs::read_to_string(log.path())
            .ok()
            .filter(|t| !t.is_empty())
            .ok_or("no log yet")
    })
    .await
    .unwrap();
    assert!(line.contains(" 503 UF "), "{line}");
    assert_eq!(
        proxy
            .proxy
            .stats()
            .value("cluster.blackhole.upstream_cx_connect_timeout"),
        Some(1)
    );
    drop(fillers);
}

#[tokio::test]
async fn malformed_requests_do_not_hurt_the_proxy() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture().await;
    let addr = f.proxy.listener(LISTENER).unwrap();
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: known\r\nContent-Length: nope\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x01\x09\x00\x00\x00\x00\x00\xff",
    ] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(garbage).await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    }
    let r = send(addr, get("known", "/ok")).await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn malformed_upstream_response_is_a_503_not_a_crash() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bad = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bad_addr = bad.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((mut s, _)) = bad.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"NOT HTTP AT ALL\r\n\xff\xfe\r\n\r\n").await;
        }
    });
    let t = table(
        "routes",
        vec![vhost(
            "all",
            vec![DomainPattern::Any],
            vec![to_cluster("r", prefix("/"), "bad")],
        )],
    );
    let proxy = start(http_snapshot(
        t,
        vec![cluster("bad", &[bad_addr], LbPolicy::RoundRobin)],
        vec![],
    ))
    .await;
    let addr = proxy.listener(LISTENER).unwrap();
    for _ in 0..3 {
        let r = send(addr, get("h", "/")).await.unwrap();
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.header("x-mesh-reason").is_some());
    }
    server.abort();
}

/// A snapshot like [`http_snapshot`]'s, its connection manager at the edge
/// (`use_remote_address: true`) or inside the mesh.
fn snapshot_at(edge: bool, t: RouteTable, clusters: Vec<ClusterConfig>) -> Snapshot {
    let mut h = hcm(RouteSource::Rds(t.name.clone()), vec![]);
    h.use_remote_address = edge;
    http_snapshot_with(h, t, clusters)
}

async fn proxy_with_default_reason_header(snapshot: Snapshot) -> mesh_proxy::Bound {
    let mut config = mesh_proxy::server::ProxyConfig::new(snapshot);
    config.admin_address = Some("127.0.0.1:0".parse().unwrap());
    mesh_proxy::server::build(config).await.unwrap()
}

/// By default (`--reason-header mesh`) an edge connection manager
/// (`use_remote_address: true`, as Istio sets on gateways) tells clients
/// only the status: no `x-mesh-reason`, no cluster names or addresses in the
/// body, also for a sidecar's local reply relayed through it; a sidecar's
/// connection manager keeps them.
#[tokio::test]
async fn the_edge_hides_why_by_default() {
    // The sidecar: every request to a cluster that does not exist.
    let all = |cluster: &str| {
        table(
            "routes",
            vec![vhost(
                "all",
                vec![DomainPattern::Any],
                vec![to_cluster("all", prefix("/"), cluster)],
            )],
        )
    };
    let sidecar = proxy_with_default_reason_header(snapshot_at(
        false,
        all("outbound|80||ghost.internal"),
        vec![],
    ))
    .await;
    let sidecar_addr = sidecar.listener(LISTENER).unwrap();
    let local = send(sidecar_addr, get("any", "/")).await.unwrap();
    assert_eq!(local.status, 503);
    assert!(local.text().contains("ghost.internal"), "{}", local.text());
    assert!(local.header("x-mesh-reason").is_some());

    // The gateway in front of it, and a local reply of its own.
    let t = table(
        "routes",
        vec![vhost(
            "all",
            vec![DomainPattern::Any],
            vec![
                to_cluster("ghost", prefix("/ghost"), "outbound|80||ghost.internal"),
                to_cluster("sidecar", prefix("/"), "sidecar"),
            ],
        )],
    );
    let gateway = proxy_with_default_reason_header(snapshot_at(
        true,
        t,
        vec![cluster("sidecar", &[sidecar_addr], LbPolicy::RoundRobin)],
    ))
    .await;
    let addr = gateway.listener(LISTENER).unwrap();
    let own = send(addr, get("any", "/ghost")).await.unwrap();
    assert_eq!(own.status, 503);
    assert_eq!(own.text(), "Service Unavailable\n");
    assert!(own.header("x-mesh-reason").is_none());
    let relayed = send(addr, get("any", "/inner")).await.unwrap();
    assert_eq!(relayed.status, 503);
    assert!(relayed.header("x-mesh-reason").is_none());
    assert_eq!(
        relayed.text(),
        "Service Unavailable\n",
        "the sidecar's reason too"
    );
}
