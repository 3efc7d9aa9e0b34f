//! Connection and stream timeouts, enforced and counted with Envoy's stat
//! names: HCM `idle_timeout`, `max_connection_duration`,
//! `stream_idle_timeout` (408/504 `SI`), a route's `idle_timeout`,
//! `request_timeout` (408); cluster `idle_timeout` and
//! `max_connection_duration`; TCP proxy `idle_timeout`.
//! Timeouts are short here; waits retry with a generous deadline.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use http::StatusCode;
use mesh_proxy::model::*;
use mesh_test_util::{HttpUpstream, TcpEchoUpstream, send, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(15);

fn one_route(cluster_name: &str) -> RouteTable {
    table(
        "routes",
        vec![vhost(
            "svc",
            vec![DomainPattern::Any],
            vec![to_cluster("r", prefix("/"), cluster_name)],
        )],
    )
}

/// A snapshot whose HCM and cluster the caller adjusts.
fn snapshot_with(
    up: &HttpUpstream,
    log: Option<&std::path::Path>,
    hcm_edit: impl FnOnce(&mut HttpConnectionManagerConfig),
    cluster_edit: impl FnOnce(&mut ClusterConfig),
    route_edit: impl FnOnce(&mut ForwardAction),
) -> Snapshot {
    let mut c = cluster("up", &[up.addr()], LbPolicy::RoundRobin);
    cluster_edit(&mut c);
    let mut t = one_route("up");
    if let Some(RouteAction::Forward(a)) = t.route_mut(0, 0).map(|r| &mut r.action) {
        route_edit(a);
    }
    let mut s = http_snapshot(t, vec![c], log.map(file_log).into_iter().collect());
    let l = s.listeners.get_mut(LISTENER).unwrap();
    let l = Arc::make_mut(l);
    let NetworkFilter::Http(h) = &mut l.filter_chains[0].filter else {
        unreachable!()
    };
    hcm_edit(Arc::make_mut(h));
    s
}

/// Reads until the peer closes the connection; `Err` while it is open.
async fn read_to_close(conn: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    tokio::time::timeout(DEADLINE, conn.read_to_end(&mut all))
        .await
        .expect("the proxy closes the connection")
        .ok();
    all
}

fn stat(proxy: &mesh_proxy::Bound, name: &str) -> i64 {
    proxy.proxy.stats().value(name).unwrap_or(0)
}

#[tokio::test]
async fn downstream_idle_timeout_closes_an_idle_connection() {
    let up = HttpUpstream::start("up").await.unwrap();
    let snap = snapshot_with(
        &up,
        None,
        |h| h.idle_timeout = Some(Duration::from_millis(200)),
        |_| {},
        |_| {},
    );
    let proxy = start(snap).await;
    let addr = proxy.listener(LISTENER).unwrap();
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /a HTTP/1.1\r\nhost: svc\r\n\r\n")
        .await
        .unwrap();
    let all = read_to_close(&mut conn).await;
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    wait_until(DEADLINE, async || {
        stat(&proxy, "http.ingress_http.downstream_cx_idle_timeout") == 1
    })
    .await
    .unwrap();
    assert_eq!(
        stat(
            &proxy,
            "http.ingress_http.downstream_cx_max_duration_reached"
        ),
        0
    );
}

#[tokio::test]
async fn downstream_idle_timeout_waits_for_the_active_stream() {
    let up = HttpUpstream::start("up").await.unwrap();
    up.set_delay(Duration::from_millis(600));
    let snap = snapshot_with(
        &up,
        None,
        |h| h.idle_timeout = Some(Duration::from_millis(100)),
        |_| {},
        |_| {},
    );
    let proxy = start(snap).await;
    let addr = proxy.listener(LISTENER).unwrap();
    // The request outlives the idle timeout several times: it is not idle.
    let r = send(addr, get("svc", "/slow")).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn downstream_max_connection_duration_drains_the_connection() {
    let up = HttpUpstream::start("up").await.unwrap();
    let snap = snapshot_with(
        &up,
        None,
        |h| {
            h.idle_timeout = None;
            h.max_connection_duration = Some(Duration::from_millis(300));
        },
        |_| {},
        |_| {},
    );
    let proxy = start(snap).await;
    let addr = proxy.listener(LISTENER).unwrap();
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /a HTTP/1.1\r\nhost: svc\r\n\r\n")
        .await
        .unwrap();
    let all = read_to_close(&mut conn).await;
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"));
    wait_until(DEADLINE, async || {
        stat(
            &proxy,
            "http.ingress_http.downstream_cx_max_duration_reached",
        ) == 1
    })
    .await
    .unwrap();
    assert_eq!(
        stat(&proxy, "http.ingress_http.downstream_cx_idle_timeout"),
        0
    );
}

#[tokio::test]
async fn stream_idle_timeout_gives_504_si_once_the_request_is_complete() {
    let up = HttpUpstream::start("up").await.unwrap();
    up.hang();
    let log = tempfile::NamedTempFile::new().unwrap();
    let snap = snapshot_with(
        &up,
        Some(log.path()),
        |h| h.stream_idle_timeout = Some(Duration::from_millis(200)),
        |_| {},
        |a| a.timeout = None,
    );
    let proxy = start(snap).await;
    let addr = proxy.listener(LISTENER).unwrap();
    let r = send(addr, get("svc", "/hang")).await.unwrap();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text());
    let reason = r.header("x-mesh-reason").unwrap_or_default().to_string();
    assert!(reason.contains("stream timeout"), "{reason}");
    assert_eq!(
        stat(&proxy, "http.ingress_http.downstream_rq_idle_timeout"),
        1
    );
    let text = wait_until(DEADLINE, async || {
        let t = std::fs::read_to_string(log.path()).unwrap_or_default();
        if t.contains(" 504 SI ") {
            Ok(t)
        } else {
            Err(t)
        }
    })
    .await
    .unwrap();
    assert!(text.contains("\"GET /hang HTTP/1.1\" 504 SI "), "{text}");
}

#[tokio::test]
async fn stream_idle_timeout_gives_408_while_the_request_body_stalls() {
    let up = HttpUpstream::start("up").await.unwrap();
    let snap = snapshot_with(
        &up,
        None,
        |h| h.stream_idle_timeout = Some(Duration::from_millis(200)),
        |_| {},
        |_| {},
    );
    let proxy = start(snap).await;
    let addr = proxy.listener(LISTENER).unwrap();
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"POST /upload HTTP/1.1\r\nhost: svc\r\ncontent-length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let all = read_to_close(&mut conn).await;
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("stream timeout"), "{text}");
    assert_eq!(
        stat(&proxy, "http.ingress_http.downstream_rq_idle_timeout"),
        1
    );
}

#[tokio::test]
async fn route_idle_timeout_zero_disables_the_stream_idle_timeout() {
    let up = HttpUpstream::start("up").await.unwrap();
    up.set_delay(Duration::from_millis(600));
    let snap = snapshot_with(
        &up,
        None,
        |h| h.stream_idle_timeout = Some(Duration::from_millis(150)),
        |_| {},
        |a| a.idle_timeout = Some(Duration::ZERO),
    );
    let proxy = start(snap).await;
    let addr = proxy.listener(LISTENER).unwrap();
    let r = send(addr, get("svc", "/slow")).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        stat(&proxy, "http.ingress_http.downstream_rq_idle_timeout"),
        0
    );
}

#[tokio::test]
async fn route_idle_timeout_replaces_the_connection_managers() {
    let up = HttpUpstream::start("up").await.unwrap();
    up.hang();
    let snap = snapshot_with(
        &up,
        None,
        |h| h.stream_idle_timeout = None,
        |_| {},
        |a| {
            a.timeout = None;
            a.idle_timeout = Some(Duration::from_millis(200));
        },
    );
    let proxy = start(snap).await;
    let addr = proxy.listener(LISTENER).unwrap();
    let r = send(addr, get("svc", "/hang")).await.unwrap();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text());
    assert_eq!(
        stat(&proxy, "http.ingress_http.downstream_rq_idle_timeout"),
        1
    );
}

#[tokio::test]
async fn request_timeout_gives_408_for_an_incomplete_request() {
    let up = HttpUpstream::start("up").await.unwrap();
    let snap = snapshot_with(
        &up,
        None,
        |h| {
            h.stream_idle_timeout = None;
            h.request_timeout = Some(Duration::from_millis(200));
        },
        |_| {},
        |_| {},
    );
    let proxy = start(snap).await;
    let addr = proxy.listener(LISTENER).unwrap();
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"POST /upload HTTP/1.1\r\nhost: svc\r\ncontent-length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    // Keep the stream busy, so that only the request timeout can fire.
    let writer = async {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if conn.write_all(b"x").await.is_err() {
                break;
            }
        }
    };
    tokio::time::timeout(DEADLINE, writer).await.ok();
    let all = read_to_close(&mut conn).await;
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request timeout"), "{text}");
    assert_eq!(stat(&proxy, "http.ingress_http.downstream_rq_timeout"), 1);
    // A complete request is not affected.
    let r = send(addr, get("svc", "/ok")).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn upstream_idle_timeout_closes_pooled_connections() {
    let up = HttpUpstream::start("up").await.unwrap();
    let snap = snapshot_with(
        &up,
        None,
        |_| {},
        |c| c.idle_timeout = Some(Duration::from_millis(200)),
        |_| {},
    );
    let proxy = start(snap).await;
    let addr = proxy.listener(LISTENER).unwrap();
    let r = send(addr, get("svc", "/a")).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    wait_until(DEADLINE, async || {
        stat(&proxy, "cluster.up.upstream_cx_idle_timeout") == 1
    })
    .await
    .unwrap();
    wait_until(DEADLINE, async || up.connections_current() == 0)
        .await
        .unwrap();
    // The next request opens a new connection.
    let r = send(addr, get("svc", "/b")).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(up.connections_total(), 2);
}

#[tokio::test]
async fn upstream_max_connection_duration_replaces_connections() {
    let up = HttpUpstream::start("up").await.unwrap();
    let snap = snapshot_with(
        &up,
        None,
        |_| {},
        |c| {
            c.idle_timeout = None;
            c.max_connection_duration = Some(Duration::from_millis(200));
        },
        |_| {},
    );
    let proxy = start(snap).await;
    let addr = proxy.listener(LISTENER).unwrap();
    wait_until(DEADLINE, async || {
        let r = send(addr, get("svc", "/a")).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(50)).await;
        up.connections_total() >= 2
    })
    .await
    .unwrap();
    assert!(stat(&proxy, "cluster.up.upstream_cx_max_duration_reached") >= 1);
    assert_eq!(stat(&proxy, "cluster.up.upstream_cx_idle_timeout"), 0);
}

#[tokio::test]
async fn tcp_proxy_idle_timeout_closes_the_session() {
    let echo = TcpEchoUpstream::start().await.unwrap();
    let mut s = Snapshot::default();
    let tcp = TcpProxyConfig {
        stat_prefix: "echo".into(),
        cluster: TcpDestination::Cluster("echo".into()),
        idle_timeout: Some(Duration::from_millis(400)),
        max_connect_attempts: 1,
        access_log: vec![],
    };
    s.listeners.insert(
        "tcp".into(),
        Arc::new(listener("tcp", NetworkFilter::Tcp(Arc::new(tcp)))),
    );
    s.clusters.insert(
        "echo".into(),
        Arc::new(cluster("echo", &[echo.addr()], LbPolicy::RoundRobin)),
    );
    let proxy = start(s).await;
    let addr = proxy.listener("tcp").unwrap();
    let mut conn = TcpStream::connect(addr).await.unwrap();
    // Traffic more often than the timeout keeps the session open.
    for _ in 0..6 {
        conn.write_all(b"ping\n").await.unwrap();
        let mut back = [0u8; 5];
        tokio::time::timeout(DEADLINE, conn.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&back, b"ping\n");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert_eq!(stat(&proxy, "tcp.echo.idle_timeout"), 0);
    let rest = read_to_close(&mut conn).await;
    assert!(rest.is_empty());
    assert_eq!(stat(&proxy, "tcp.echo.idle_timeout"), 1);
}

#[tokio::test]
async fn stream_idle_timeout_resets_a_stalled_response_body() {
    // An upstream that sends a head and part of the body, then stalls.
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stall_addr = stall.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = stall.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc")
                    .await;
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut c = cluster("up", &[stall_addr], LbPolicy::RoundRobin);
    c.idle_timeout = None;
    let mut t = one_route("up");
    if let Some(RouteAction::Forward(a)) = t.route_mut(0, 0).map(|r| &mut r.action) {
        a.timeout = None;
    }
    let mut s = http_snapshot(t, vec![c], vec![file_log(log.path())]);
    let l = Arc::make_mut(s.listeners.get_mut(LISTENER).unwrap());
    let NetworkFilter::Http(h) = &mut l.filter_chains[0].filter else {
        unreachable!()
    };
    Arc::make_mut(h).stream_idle_timeout = Some(Duration::from_millis(200));
    let proxy = start(s).await;
    let addr = proxy.listener(LISTENER).unwrap();
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /stall HTTP/1.1\r\nhost: svc\r\n\r\n")
        .await
        .unwrap();
    let all = read_to_close(&mut conn).await;
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("abc"), "the body was cut short: {text}");
    assert_eq!(
        stat(&proxy, "http.ingress_http.downstream_rq_idle_timeout"),
        1
    );
    wait_until(DEADLINE, async || {
        let t = std::fs::read_to_string(log.path()).unwrap_or_default();
        if t.contains(" 200 SI ") {
            Ok(())
        } else {
            Err(t)
        }
    })
    .await
    .unwrap();
}
