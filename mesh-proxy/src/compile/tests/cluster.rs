//! Clusters: discovery, load balancing, protocols, thresholds, outlier detection, TLS.

use super::*;
use crate::model::TlsVersions;

#[test]
fn smoke_static_cluster() {
    let c = cluster(
        "name: backend\nload_assignment:\n  endpoints:\n  - lb_endpoints:\n    - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 5001}}}\n",
    )
    .unwrap();
    assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    let Discovery::Static(set) = &c.discovery else {
        panic!()
    };
    assert_eq!(set.cluster_name, "backend");
    assert_eq!(
        set.endpoints().next().unwrap().address,
        "127.0.0.1:5001".parse().unwrap()
    );
}

#[test]
fn cluster_defaults() {
    let c = cluster(&format!("name: c\n{ONE_ENDPOINT}")).unwrap();
    assert_eq!(c.lb_policy, LbPolicy::RoundRobin);
    assert_eq!(c.protocol, UpstreamProtocol::Http1);
    assert_eq!(c.idle_timeout, Some(DEFAULT_UPSTREAM_IDLE_TIMEOUT));
    assert_eq!(c.max_requests_per_connection, None);
    assert_eq!(c.buffer_limit_bytes, DEFAULT_BUFFER_LIMIT_BYTES);
    let cb = &c.circuit_breakers;
    assert_eq!(
        (
            cb.max_connections,
            cb.max_pending_requests,
            cb.max_requests,
            cb.max_retries
        ),
        (1024, 1024, 1024, 3)
    );
    assert!(cb.retry_budget.is_none() && cb.per_host_max_connections.is_none());
    assert!(c.outlier_detection.is_none() && c.tls.is_none());
}

#[test]
fn cluster_lb_policies() {
    let lb =
        |extra: &str| cluster(&format!("name: c\n{extra}\n{ONE_ENDPOINT}")).map(|c| c.lb_policy);
    assert_eq!(lb("lb_policy: RANDOM").unwrap(), LbPolicy::Random);
    assert_eq!(
        lb("lb_policy: LEAST_REQUEST").unwrap(),
        LbPolicy::LeastRequest { choice_count: 2 }
    );
    assert_eq!(
        lb("lb_policy: LEAST_REQUEST\nleast_request_lb_config: {choice_count: 3}").unwrap(),
        LbPolicy::LeastRequest { choice_count: 3 }
    );
    assert_eq!(
        lb("lb_policy: RING_HASH").unwrap(),
        LbPolicy::RingHash {
            minimum_ring_size: 1024,
            maximum_ring_size: 8 * 1024 * 1024
        }
    );
    assert_eq!(
        lb("lb_policy: RING_HASH\nring_hash_lb_config: {minimum_ring_size: 64, maximum_ring_size: 128}").unwrap(),
        LbPolicy::RingHash { minimum_ring_size: 64, maximum_ring_size: 128 }
    );
    assert_eq!(
        lb("lb_policy: MAGLEV").unwrap(),
        LbPolicy::Maglev { table_size: 65537 }
    );
    assert_eq!(
        lb("lb_policy: MAGLEV\nmaglev_lb_config: {table_size: 251}").unwrap(),
        LbPolicy::Maglev { table_size: 251 }
    );

    assert_err(
        lb("lb_policy: CLUSTER_PROVIDED"),
        "lb_policy",
        "lb_policy CLUSTER_PROVIDED is not supported",
    );
    let e = lb("lb_policy: CLUSTER_PROVIDED").unwrap_err().to_string();
    assert_eq!(
        e,
        "cluster \"c\": lb_policy CLUSTER_PROVIDED is not supported"
    );
    assert_err(
        lb("lb_policy: MAGLEV\nmaglev_lb_config: {table_size: 100}"),
        "maglev_lb_config.table_size",
        "not a prime",
    );
    assert_err(
        lb(
            "lb_policy: RING_HASH\nring_hash_lb_config: {minimum_ring_size: 10, maximum_ring_size: 5}",
        ),
        "ring_hash_lb_config.minimum_ring_size",
        "above maximum_ring_size",
    );
    assert_err(
        lb("lb_policy: RING_HASH\nring_hash_lb_config: {hash_function: MURMUR_HASH_2}"),
        "ring_hash_lb_config.hash_function",
        "not supported",
    );
    assert_err(
        lb("lb_policy: LEAST_REQUEST\nleast_request_lb_config: {choice_count: 1}"),
        "choice_count",
        "at least 2",
    );
    assert_err(
        lb("lb_policy: RANDOM\nleast_request_lb_config: {}"),
        "lb_config",
        "does not apply",
    );
}

#[test]
fn cluster_protocols_and_connection_options() {
    let c = cluster(&format!(
        r#"name: c
typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config: {{http2_protocol_options: {{}}}}
    common_http_protocol_options: {{idle_timeout: 0s, max_connection_duration: 30s, max_requests_per_connection: 1}}
per_connection_buffer_limit_bytes: 4096
{ONE_ENDPOINT}"#
    ))
    .unwrap();
    assert_eq!(c.protocol, UpstreamProtocol::Http2);
    assert_eq!(c.idle_timeout, None, "0s disables");
    assert_eq!(
        c.max_connection_duration,
        Some(std::time::Duration::from_secs(30))
    );
    assert_eq!(c.max_requests_per_connection, Some(1));
    assert_eq!(c.buffer_limit_bytes, 4096);

    let c = cluster(&format!(
        "name: c\nhttp2_protocol_options: {{}}\nmax_requests_per_connection: 5\n{ONE_ENDPOINT}"
    ))
    .unwrap();
    assert_eq!(
        c.protocol,
        UpstreamProtocol::Http2,
        "deprecated field still works"
    );
    assert_eq!(c.max_requests_per_connection, Some(5));
    let c = cluster(&format!(
        "name: c\ntyped_extension_protocol_options:\n  x: {{\"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, use_downstream_protocol_config: {{}}}}\n{ONE_ENDPOINT}"
    ))
    .unwrap();
    assert_eq!(c.protocol, UpstreamProtocol::UseDownstream);

    assert_err(
        cluster(&format!(
            "name: c\ntyped_extension_protocol_options:\n  x: {{\"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, auto_config: {{}}}}\n{ONE_ENDPOINT}"
        )),
        "typed_extension_protocol_options[\"x\"].auto_config",
        "not supported",
    );
    assert_err(
        cluster(&format!("name: c\nconnect_timeout: 0s\n{ONE_ENDPOINT}")),
        "connect_timeout",
        "greater than 0",
    );
    let c = cluster(&format!("name: c\nconnect_timeout: 0.25s\n{ONE_ENDPOINT}")).unwrap();
    assert_eq!(c.connect_timeout, std::time::Duration::from_millis(250));
}

#[test]
fn circuit_breakers_retry_budget_and_per_host() {
    let c = cluster(&format!(
        r#"name: c
circuit_breakers:
  thresholds:
  - {{max_connections: 1, max_pending_requests: 1, max_requests: 2, max_retries: 0, retry_budget: {{}}}}
  - {{priority: HIGH, max_connections: 99}}
  per_host_thresholds:
  - {{max_connections: 3}}
{ONE_ENDPOINT}"#
    ))
    .unwrap();
    let cb = &c.circuit_breakers;
    assert_eq!(
        (
            cb.max_connections,
            cb.max_pending_requests,
            cb.max_requests,
            cb.max_retries
        ),
        (1, 1, 2, 0)
    );
    assert_eq!(
        cb.retry_budget,
        Some(RetryBudget {
            budget_percent: 20.0,
            min_retry_concurrency: 3
        })
    );
    assert_eq!(cb.per_host_max_connections, Some(3));

    let c = cluster(&format!(
        "name: c\ncircuit_breakers: {{thresholds: [{{retry_budget: {{budget_percent: {{value: 50}}, min_retry_concurrency: 1}}}}]}}\n{ONE_ENDPOINT}"
    ))
    .unwrap();
    assert_eq!(
        c.circuit_breakers.retry_budget,
        Some(RetryBudget {
            budget_percent: 50.0,
            min_retry_concurrency: 1
        })
    );
    assert_err(
        cluster(&format!(
            "name: c\ncircuit_breakers: {{thresholds: [{{retry_budget: {{budget_percent: {{value: 150}}}}}}]}}\n{ONE_ENDPOINT}"
        )),
        "circuit_breakers.thresholds[0].retry_budget.budget_percent",
        "0..100",
    );
    assert_err(
        cluster(&format!(
            "name: c\ncircuit_breakers: {{per_host_thresholds: [{{max_requests: 3}}]}}\n{ONE_ENDPOINT}"
        )),
        "circuit_breakers.per_host_thresholds[0].max_requests",
        "not supported",
    );
}

#[test]
fn outlier_detection_defaults_and_values() {
    let c = cluster(&format!("name: c\noutlier_detection: {{}}\n{ONE_ENDPOINT}")).unwrap();
    let o = c.outlier_detection.unwrap();
    assert_eq!(o.consecutive_5xx, 5);
    assert_eq!(o.consecutive_gateway_failure, 5);
    assert_eq!(o.consecutive_local_origin_failure, 5);
    assert!(!o.split_external_local_origin_failure);
    assert_eq!(o.interval, std::time::Duration::from_secs(10));
    assert_eq!(o.base_ejection_time, std::time::Duration::from_secs(30));
    assert_eq!(o.max_ejection_time, std::time::Duration::from_secs(300));
    assert_eq!(o.max_ejection_percent, 10);
    assert_eq!(o.enforcing_consecutive_5xx, 100);
    assert_eq!(o.enforcing_consecutive_gateway_failure, 0);
    assert_eq!(o.enforcing_consecutive_local_origin_failure, 100);

    let c = cluster(&format!(
        "name: c\noutlier_detection: {{consecutive_5xx: 3, interval: 1s, base_ejection_time: 400s, max_ejection_percent: 100, split_external_local_origin_errors: true, consecutive_local_origin_failure: 2, enforcing_consecutive_gateway_failure: 100}}\n{ONE_ENDPOINT}"
    ))
    .unwrap();
    let o = c.outlier_detection.unwrap();
    assert_eq!(o.consecutive_5xx, 3);
    assert_eq!(o.interval, std::time::Duration::from_secs(1));
    assert_eq!(
        o.max_ejection_time,
        std::time::Duration::from_secs(400),
        "raised to base"
    );
    assert_eq!(o.max_ejection_percent, 100);
    assert!(o.split_external_local_origin_failure);
    assert_eq!(o.consecutive_local_origin_failure, 2);
    assert_eq!(o.enforcing_consecutive_gateway_failure, 100);

    assert_err(
        cluster(&format!(
            "name: c\noutlier_detection: {{max_ejection_percent: 101}}\n{ONE_ENDPOINT}"
        )),
        "outlier_detection.max_ejection_percent",
        "above 100",
    );
    let c = cluster(&format!(
        "name: c\noutlier_detection: {{failure_percentage_threshold: 50, enforcing_failure_percentage: 100, failure_percentage_minimum_hosts: 2, success_rate_stdev_factor: 1000}}\n{ONE_ENDPOINT}"
    ))
    .unwrap();
    let o = c.outlier_detection.unwrap();
    assert_eq!(o.failure_percentage_threshold, 50);
    assert_eq!(o.enforcing_failure_percentage, 100);
    assert_eq!(o.failure_percentage_minimum_hosts, 2);
    assert_eq!(o.failure_percentage_request_volume, 50);
    assert_eq!(o.success_rate_stdev_factor, 1000);
    assert_eq!(o.enforcing_success_rate, 100);
    assert_err(
        cluster(&format!(
            "name: c\noutlier_detection: {{enforcing_failure_percentage_local_origin: 50}}\n{ONE_ENDPOINT}"
        )),
        "outlier_detection.enforcing_failure_percentage_local_origin",
        "not supported",
    );
}

#[test]
fn cluster_discovery_types() {
    let c = cluster(
        "name: c\ntype: EDS\neds_cluster_config: {eds_config: {ads: {}}, service_name: svc}",
    )
    .unwrap();
    assert!(matches!(&c.discovery, Discovery::Eds { service_name } if service_name == "svc"));
    let c = cluster("name: c\ntype: EDS\neds_cluster_config: {eds_config: {ads: {}}}").unwrap();
    assert!(matches!(&c.discovery, Discovery::Eds { service_name } if service_name == "c"));
    // DNS names are resolved once into static endpoints.
    let c = cluster(
        "name: c\ntype: STRICT_DNS\nload_assignment:\n  endpoints:\n  - lb_endpoints:\n    - endpoint: {address: {socket_address: {address: localhost, port_value: 80}}}\n",
    )
    .unwrap();
    let Discovery::Static(set) = &c.discovery else {
        panic!()
    };
    assert!(
        set.endpoints()
            .all(|e| e.address.ip().is_loopback() && e.address.port() == 80)
    );
    let c = cluster(&format!("name: c\ntype: LOGICAL_DNS\n{ONE_ENDPOINT}")).unwrap();
    let Discovery::Static(set) = &c.discovery else {
        panic!()
    };
    assert_eq!(set.endpoints().count(), 1);

    assert_err(
        cluster("name: c\ntype: ORIGINAL_DST"),
        "type",
        "ORIGINAL_DST is not supported",
    );
    assert_err(
        cluster("name: c\ncluster_type: {name: envoy.clusters.aggregate}"),
        "cluster_type",
        "envoy.clusters.aggregate is not supported",
    );
    assert_err(
        cluster(&format!(
            "name: c\nhealth_checks: [{{timeout: 1s, interval: 1s, tcp_health_check: {{}}}}]\n{ONE_ENDPOINT}"
        )),
        "health_checks",
        "not supported",
    );
    assert_err(
        cluster(&format!(
            "name: c\ntransport_socket_matches: [{{name: m, transport_socket: {{name: raw}}}}]\n{ONE_ENDPOINT}"
        )),
        "transport_socket_matches[0].transport_socket.typed_config",
        "required",
    );
    assert_err(cluster("connect_timeout: 1s"), "name", "required");
}

#[test]
fn upstream_tls() {
    let c = cluster(&format!(
        r#"name: c
transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
    sni: outbound_.80_._.helloworld
    common_tls_context:
      alpn_protocols: [istio-peer-exchange, h2]
      tls_certificates:
      - certificate_chain: {{inline_string: CHAIN}}
        private_key: {{inline_string: KEY}}
      validation_context:
        trusted_ca: {{inline_string: CA}}
        match_typed_subject_alt_names: [{{san_type: URI, matcher: {{exact: "spiffe://cluster.local/ns/default/sa/helloworld"}}}}]
{ONE_ENDPOINT}"#
    ))
    .unwrap();
    let tls = c.tls.unwrap();
    assert_eq!(tls.sni.as_deref(), Some("outbound_.80_._.helloworld"));
    assert_eq!(tls.alpn_protocols, ["istio-peer-exchange", "h2"]);
    assert!(
        matches!(&tls.certificate, Some(TlsCertificateSource::InlinePem { cert_chain, private_key }) if cert_chain == "CHAIN" && private_key == "KEY")
    );
    assert!(matches!(&tls.trusted_ca, Some(TlsCaSource::InlinePem(ca)) if ca == "CA"));
    assert_eq!(tls.match_subject_alt_names.len(), 1);

    // raw_buffer is plain TCP.
    let c = cluster(&format!(
        "name: c\ntransport_socket: {{name: raw, typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}}}\n{ONE_ENDPOINT}"
    ))
    .unwrap();
    assert!(c.tls.is_none());
    assert_err(
        cluster(&format!(
            "name: c\ntransport_socket: {{name: t, typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, common_tls_context: {{validation_context: {{trusted_ca: {{filename: /nonexistent/ca.pem}}}}}}}}}}\n{ONE_ENDPOINT}"
        )),
        "transport_socket.typed_config.common_tls_context.validation_context.trusted_ca.filename",
        "/nonexistent/ca.pem",
    );
}

#[test]
fn upstream_tls_without_ca_does_not_verify() {
    let c = cluster(&format!(
        "name: c\ntransport_socket: {{name: t, typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, sni: example.com, common_tls_context: {{validation_context: {{}}}}}}}}\n{ONE_ENDPOINT}"
    ))
    .unwrap();
    let tls = c.tls.unwrap();
    assert!(tls.trusted_ca.is_none() && tls.certificate.is_none());
    assert_eq!(tls.sni.as_deref(), Some("example.com"));
    assert_err(
        cluster(&format!(
            "name: c\ntransport_socket: {{name: t, typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, common_tls_context: {{validation_context: {{match_typed_subject_alt_names: [{{san_type: URI, matcher: {{exact: x}}}}]}}}}}}}}\n{ONE_ENDPOINT}"
        )),
        "common_tls_context.validation_context.trusted_ca",
        "subject alt names",
    );
}

#[test]
fn transport_socket_matches_pick_per_endpoint() {
    let c = cluster(
        r#"
name: c
transport_socket_matches:
- name: tlsMode-istio
  match: {tlsMode: istio}
  transport_socket:
    name: tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
      sni: outbound_.80_._.a
      common_tls_context:
        tls_certificate_sds_secret_configs: [{name: default}]
        combined_validation_context:
          default_validation_context: {match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: "spiffe://cluster.local/ns/a/sa/a"}}]}
          validation_context_sds_secret_config: {name: ROOTCA}
- name: tlsMode-disabled
  match: {}
  transport_socket: {name: envoy.transport_sockets.raw_buffer}
load_assignment:
  endpoints:
  - lb_endpoints:
    - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 5001}}}
      metadata: {filter_metadata: {envoy.transport_socket_match: {tlsMode: istio}}}
    - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 5002}}}
"#,
    )
    .unwrap();
    assert_eq!(c.transport_socket_matches.len(), 2);
    let Discovery::Static(set) = &c.discovery else {
        panic!()
    };
    let eps: Vec<&Endpoint> = set.endpoints().collect();
    let tls = c.transport_for(eps[0]).expect("labelled endpoint uses TLS");
    assert_eq!(tls.sni.as_deref(), Some("outbound_.80_._.a"));
    assert!(matches!(&tls.certificate, Some(TlsCertificateSource::Sds(n)) if n == "default"));
    assert!(c.transport_for(eps[1]).is_none(), "unlabelled: plaintext");
    assert_err(
        cluster(&format!(
            "name: c\ntransport_socket_matches: [{{name: m, match: {{n: 1}}, transport_socket: {{name: envoy.transport_sockets.raw_buffer}}}}]\n{ONE_ENDPOINT}"
        )),
        "transport_socket_matches[0].match.n",
        "not supported",
    );
}

#[test]
fn tls_params_versions_are_honoured_and_the_rest_refused() {
    let with = |params: &str| {
        cluster(&format!(
            "name: c\ntransport_socket: {{name: t, typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, common_tls_context: {{tls_params: {params}}}}}}}\n{ONE_ENDPOINT}"
        ))
    };
    let versions = |params: &str| with(params).unwrap().tls.unwrap().versions;
    assert_eq!(versions("{}"), TlsVersions::Any);
    assert_eq!(
        versions("{tls_maximum_protocol_version: TLSv1_2}"),
        TlsVersions::Only12
    );
    assert_eq!(
        versions("{tls_minimum_protocol_version: TLSv1_3}"),
        TlsVersions::Only13
    );
    assert_eq!(
        versions("{tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3}"),
        TlsVersions::Any
    );
    assert_err(
        with("{tls_minimum_protocol_version: TLSv1_0}"),
        "tls_params.tls_minimum_protocol_version",
        "TLSv1_0",
    );
    assert_err(
        with("{tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_2}"),
        "tls_params",
        "above",
    );
    assert_err(
        with("{cipher_suites: [ECDHE-ECDSA-AES128-GCM-SHA256]}"),
        "tls_params.cipher_suites",
        "not supported",
    );
}
