//! Byte streams through the proxy: the TCP proxy filter, and HTTP/1.1
//! upgrades (WebSocket) tunnelled after the 101.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use mesh_proxy::model::*;
use mesh_test_util::{HttpUpstream, TcpEchoUpstream, send};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn tcp_proxy_echoes() {
    let echo = TcpEchoUpstream::start().await.unwrap();
    let mut s = Snapshot::default();
    let tcp = TcpProxyConfig {
        stat_prefix: "echo".into(),
        cluster: TcpDestination::Cluster("echo".into()),
        idle_timeout: None,
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
    for round in 0..3 {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        let payload = format!("hello through the mesh, round {round}\n").repeat(100);
        conn.write_all(payload.as_bytes()).await.unwrap();
        let mut back = vec![0u8; payload.len()];
        tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, payload.as_bytes());
    }
    assert_eq!(echo.connections_total(), 3);
    assert_eq!(
        proxy.proxy.stats().value("tcp.echo.downstream_cx_total"),
        Some(3)
    );
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    let up = HttpUpstream::start("ws").await.unwrap();
    let t = table(
        "routes",
        vec![vhost(
            "all",
            vec![DomainPattern::Any],
            vec![to_cluster("r", prefix("/"), "ws")],
        )],
    );
    let proxy = start(http_snapshot(
        t,
        vec![cluster("ws", &[up.addr()], LbPolicy::RoundRobin)],
        vec![],
    ))
    .await;
    let addr = proxy.listener(LISTENER).unwrap();

    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        b"GET /chat HTTP/1.1\r\nHost: chat\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    // Read the 101 head.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    // Then raw bytes flow both ways.
    conn.write_all(b"ping-frame").await.unwrap();
    let mut back = [0u8; 10];
    tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"ping-frame");
    let seen = up.last_request().unwrap();
    assert_eq!(seen.header("upgrade"), Some("websocket"));
}

#[tokio::test]
async fn upgrade_not_enabled_is_refused() {
    let up = HttpUpstream::start("ws").await.unwrap();
    let t = table(
        "routes",
        vec![vhost(
            "all",
            vec![DomainPattern::Any],
            vec![to_cluster("r", prefix("/"), "ws")],
        )],
    );
    let mut snap = http_snapshot(
        t,
        vec![cluster("ws", &[up.addr()], LbPolicy::RoundRobin)],
        vec![],
    );
    let mut l = (*snap.listeners[LISTENER]).clone();
    if let NetworkFilter::Http(h) = &l.filter_chains[0].filter {
        let mut h = (**h).clone();
        h.upgrades.clear();
        l.filter_chains[0].filter = NetworkFilter::Http(Arc::new(h));
    }
    snap.listeners.insert(LISTENER.into(), Arc::new(l));
    let proxy = start(snap).await;
    let req = http::Request::get("/chat")
        .header("host", "chat")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body("")
        .unwrap();
    let r = send(proxy.listener(LISTENER).unwrap(), req).await.unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn http_inspector_picks_the_http_chain_and_raw_bytes_fall_to_tcp() {
    let echo = TcpEchoUpstream::start().await.unwrap();
    let up = HttpUpstream::start("http").await.unwrap();
    let t = table(
        "routes",
        vec![vhost(
            "all",
            vec![DomainPattern::Any],
            vec![to_cluster("r", prefix("/"), "web")],
        )],
    );
    let mut snap = http_snapshot(
        t,
        vec![
            cluster("web", &[up.addr()], LbPolicy::RoundRobin),
            cluster("echo", &[echo.addr()], LbPolicy::RoundRobin),
        ],
        vec![],
    );
    let mut l = (*snap.listeners[LISTENER]).clone();
    l.inspect_http = true;
    l.filter_chains[0].matcher.application_protocols = vec!["http/1.1".into(), "h2c".into()];
    l.default_filter_chain = Some(FilterChain {
        name: "tcp".into(),
        matcher: FilterChainMatch::default(),
        tls: None,
        filter: NetworkFilter::Tcp(Arc::new(TcpProxyConfig {
            stat_prefix: "passthrough".into(),
            cluster: TcpDestination::Cluster("echo".into()),
            idle_timeout: None,
            max_connect_attempts: 1,
            access_log: vec![],
        })),
    });
    snap.listeners.insert(LISTENER.into(), Arc::new(l));
    let proxy = start(snap).await;
    let addr = proxy.listener(LISTENER).unwrap();

    assert_eq!(send(addr, get("h", "/")).await.unwrap().text(), "http");
    assert_eq!(
        mesh_test_util::send_h2(addr, get("h", "/"))
            .await
            .unwrap()
            .text(),
        "http"
    );
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"\x16\x03\x01 not http at all")
        .await
        .unwrap();
    let mut back = [0u8; 19];
    tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"\x16\x03\x01 not http at all");
    assert_eq!(up.request_count(), 2);
    assert_eq!(echo.connections_total(), 1);
}
