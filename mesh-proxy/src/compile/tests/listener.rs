//! Listeners, filter chains, HTTP connection manager, TCP proxy, access logs.

use super::*;

#[test]
fn listener_with_rds_and_defaults() {
    let l = listener(&hcm_listener(&format!(
        "      rds: {{route_config_name: r1, config_source: {{ads: {{}}}}}}{ROUTER}"
    )))
    .unwrap();
    assert_eq!(l.address, "127.0.0.1:10000".parse().unwrap());
    assert_eq!(l.direction, TrafficDirection::Unspecified);
    assert!(l.bind_to_port);
    assert!(!l.use_original_dst);
    let h = hcm_of(&l);
    assert!(matches!(&h.routes, RouteSource::Rds(n) if n == "r1"));
    assert_eq!(h.codec, HttpCodec::Auto);
    assert!(h.http_filters.is_empty());
    assert_eq!(h.stream_idle_timeout, Some(DEFAULT_STREAM_IDLE_TIMEOUT));
    assert_eq!(h.idle_timeout, Some(DEFAULT_DOWNSTREAM_IDLE_TIMEOUT));
    assert_eq!(h.request_timeout, None);
    assert!(h.generate_request_id);
    assert!(!h.use_remote_address);
    assert_eq!(h.server_name, "envoy");
    assert!(h.accept_absolute_form);
    assert!(h.upgrades.is_empty());
}

#[test]
fn listener_hcm_settings() {
    let l = listener(&hcm_listener(&format!(
        r#"      codec_type: HTTP2
      use_remote_address: true
      xff_num_trusted_hops: 1
      generate_request_id: false
      stream_idle_timeout: 0s
      request_timeout: 10s
      server_name: mesh
      http_protocol_options: {{allow_absolute_url: false}}
      common_http_protocol_options: {{idle_timeout: 2s, max_connection_duration: 60s, max_requests_per_connection: 1}}
      upgrade_configs: [{{upgrade_type: WebSocket}}, {{upgrade_type: CONNECT, enabled: false}}]
      route_config: {{name: inline, virtual_hosts: [{{name: v, domains: ["*"], routes: [{{match: {{prefix: /}}, direct_response: {{status: 200}}}}]}}]}}{ROUTER}"#
    )))
    .unwrap();
    let h = hcm_of(&l);
    assert_eq!(h.codec, HttpCodec::Http2);
    assert!(h.use_remote_address);
    assert_eq!(h.xff_num_trusted_hops, 1);
    assert!(!h.generate_request_id);
    assert_eq!(h.stream_idle_timeout, None, "0s disables");
    assert_eq!(h.request_timeout, Some(std::time::Duration::from_secs(10)));
    assert_eq!(h.server_name, "mesh");
    assert!(!h.accept_absolute_form);
    assert_eq!(h.idle_timeout, Some(std::time::Duration::from_secs(2)));
    assert_eq!(
        h.max_connection_duration,
        Some(std::time::Duration::from_secs(60))
    );
    assert_eq!(h.max_requests_per_connection, Some(1));
    assert_eq!(h.upgrades, ["websocket"]);
    let RouteSource::Inline(t) = &h.routes else {
        panic!("inline expected")
    };
    assert_eq!(t.name, "inline");
}

#[test]
fn outbound_listener_accepts_absolute_form_and_original_dst() {
    let mut yaml = hcm_listener(&format!(
        "      http_protocol_options: {{allow_absolute_url: false}}\n      rds: {{route_config_name: r}}{ROUTER}"
    ));
    yaml.push_str(
        "traffic_direction: OUTBOUND\nuse_original_dst: true\nlistener_filters:\n- name: envoy.filters.listener.original_dst\n  typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst}\n- name: envoy.filters.listener.tls_inspector\n  typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}\n- name: envoy.filters.listener.http_inspector\n  typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector}\n",
    );
    let l = listener(&yaml).unwrap();
    assert_eq!(l.direction, TrafficDirection::Outbound);
    assert!(l.use_original_dst && l.inspect_tls && l.inspect_http);
    assert!(hcm_of(&l).accept_absolute_form);
}

#[test]
fn listener_http_filters_fault_cors_and_unknown() {
    let l = listener(&hcm_listener(
        r#"      rds: {route_config_name: r}
      http_filters:
      - name: envoy.filters.http.fault
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
          abort: {http_status: 418, percentage: {numerator: 50}}
          delay: {fixed_delay: 0.3s, percentage: {numerator: 1, denominator: TEN_THOUSAND}}
          max_active_faults: 7
          headers: [{name: X-Fault, present_match: true}]
      - name: envoy.filters.http.cors
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors}
      - name: envoy.filters.http.router
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}"#,
    ))
    .unwrap();
    let h = hcm_of(&l);
    assert_eq!(h.http_filters.len(), 2);
    let HttpFilter::Fault(f) = &h.http_filters[0] else {
        panic!("fault first")
    };
    let abort = f.abort.as_ref().unwrap();
    assert_eq!(abort.kind, FaultAbortKind::Http(418));
    assert_eq!(
        abort.percentage,
        Fraction {
            numerator: 50,
            denominator: 100
        }
    );
    let delay = f.delay.as_ref().unwrap();
    assert_eq!(
        delay.kind,
        FaultDelayKind::Fixed(std::time::Duration::from_millis(300))
    );
    assert_eq!(
        delay.percentage,
        Fraction {
            numerator: 1,
            denominator: 10_000
        }
    );
    assert_eq!(f.max_active_faults, Some(7));
    assert_eq!(f.headers[0].name, "x-fault");
    assert!(matches!(h.http_filters[1], HttpFilter::Cors));

    // An unknown filter that would change traffic is refused, by name.
    assert_err(
        listener(&hcm_listener(
            r#"      rds: {route_config_name: r}
      http_filters:
      - name: envoy.filters.http.lua
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua, default_source_code: {inline_string: "x"}}
      - name: envoy.filters.http.router
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}"#,
        )),
        "filter_chains[0].filters[0].typed_config.http_filters[0].typed_config",
        "envoy.extensions.filters.http.lua.v3.Lua is not supported",
    );
    // ... unless it is optional; observing filters pass.
    let l = listener(&hcm_listener(
        r#"      rds: {route_config_name: r}
      http_filters:
      - name: envoy.filters.http.lua
        is_optional: true
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua}
      - name: envoy.filters.http.grpc_stats
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig}
      - name: envoy.filters.http.router
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}"#,
    ))
    .unwrap();
    assert!(hcm_of(&l).http_filters.is_empty());
    // The router is required.
    assert_err(
        listener(&hcm_listener("      rds: {route_config_name: r}")),
        "http_filters",
        "router",
    );
}

#[test]
fn listener_access_logs() {
    let l = listener(&hcm_listener(&format!(
        r#"      rds: {{route_config_name: r}}
      access_log:
      - name: a
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog}}
      - name: b
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog
          log_format: {{text_format_source: {{inline_string: "%RESPONSE_CODE%\n"}}}}
      - name: c
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
          path: /tmp/access.log
          log_format: {{json_format: {{status: "%RESPONSE_CODE%", flags: "%RESPONSE_FLAGS%"}}}}
      - name: d
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
          path: /dev/stdout{ROUTER}"#
    )))
    .unwrap();
    let logs = &hcm_of(&l).access_log;
    assert_eq!(logs.len(), 4);
    assert_eq!(logs[0].sink, AccessLogSink::Stdout);
    assert_eq!(logs[0].format, AccessLogFormat::Default);
    assert_eq!(logs[1].sink, AccessLogSink::Stderr);
    assert_eq!(
        logs[1].format,
        AccessLogFormat::Text("%RESPONSE_CODE%\n".into())
    );
    assert_eq!(logs[2].sink, AccessLogSink::File("/tmp/access.log".into()));
    assert_eq!(
        logs[2].format,
        AccessLogFormat::Json(vec![
            ("flags".into(), "%RESPONSE_FLAGS%".into()),
            ("status".into(), "%RESPONSE_CODE%".into())
        ])
    );
    assert_eq!(logs[3].sink, AccessLogSink::Stdout);
}

#[test]
fn tcp_proxy_single_and_weighted() {
    let base = |body: &str| {
        format!(
            r#"
name: t
address: {{socket_address: {{address: 0.0.0.0, port_value: 9000}}}}
filter_chains:
- filter_chain_match: {{destination_port: 9000, server_names: [Example.COM], transport_protocol: tls, prefix_ranges: [{{address_prefix: 10.0.0.0, prefix_len: 8}}]}}
  filters:
  - name: tcp
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
      stat_prefix: tcp
{body}
"#
        )
    };
    let l = listener(&base("      cluster: echo\n      idle_timeout: 0s")).unwrap();
    let fc = &l.filter_chains[0];
    assert_eq!(fc.matcher.destination_port, Some(9000));
    assert_eq!(fc.matcher.server_names, ["example.com"]);
    assert_eq!(fc.matcher.transport_protocol.as_deref(), Some("tls"));
    assert!(fc.matcher.prefix_ranges[0].contains(&"10.1.2.3".parse::<std::net::IpAddr>().unwrap()));
    let NetworkFilter::Tcp(t) = &fc.filter else {
        panic!("tcp expected")
    };
    assert!(matches!(&t.cluster, TcpDestination::Cluster(c) if c == "echo"));
    assert_eq!(t.idle_timeout, None);
    assert_eq!(t.max_connect_attempts, 1);

    let l = listener(&base(
        "      weighted_clusters: {clusters: [{name: a, weight: 90}, {name: b, weight: 10}]}\n      max_connect_attempts: 3",
    ))
    .unwrap();
    let NetworkFilter::Tcp(t) = &l.filter_chains[0].filter else {
        panic!()
    };
    assert!(
        matches!(&t.cluster, TcpDestination::Weighted(w) if w == &[("a".to_string(), 90), ("b".to_string(), 10)])
    );
    assert_eq!(t.idle_timeout, Some(DEFAULT_TCP_IDLE_TIMEOUT));
    assert_eq!(t.max_connect_attempts, 3);

    assert_err(
        listener(&base(
            "      cluster: echo\n      tunneling_config: {hostname: x}",
        )),
        "filter_chains[0].filters[0].typed_config.tunneling_config",
        "is not supported",
    );
}

#[test]
fn listener_errors_name_the_field() {
    // Address must be an IP literal.
    assert_err(
        listener(
            "name: l\naddress: {socket_address: {address: localhost, port_value: 1}}\nfilter_chains: [{filters: []}]",
        ),
        "address.socket_address.address",
        "not an IP address",
    );
    // A network filter before the terminal one.
    let yaml = hcm_listener(&format!("      rds: {{route_config_name: r}}{ROUTER}")).replace(
        "- filters:\n",
        "- filters:\n  - name: envoy.filters.network.rbac\n    typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC, stat_prefix: x}\n",
    );
    assert_err(
        listener(&yaml),
        "filter_chains[0].filters[0].typed_config",
        "RBAC",
    );
    // Unsupported listener filter.
    let mut yaml = hcm_listener(&format!("      rds: {{route_config_name: r}}{ROUTER}"));
    yaml.push_str("listener_filters:\n- name: envoy.filters.listener.proxy_protocol\n  typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol}\n");
    assert_err(
        listener(&yaml),
        "listener_filters[0].typed_config",
        "ProxyProtocol is not supported",
    );
    // HTTP/3 codec.
    assert_err(
        listener(&hcm_listener(&format!(
            "      codec_type: HTTP3\n      rds: {{route_config_name: r}}{ROUTER}"
        ))),
        "codec_type",
        "HTTP3 is not supported",
    );
    // Scoped routes and local replies change routing and responses.
    assert_err(
        listener(&hcm_listener(&format!(
            "      scoped_routes: {{name: s}}{ROUTER}"
        ))),
        "scoped_routes",
        "is not supported",
    );
    assert_err(
        listener(&hcm_listener(&format!(
            "      rds: {{route_config_name: r}}\n      merge_slashes: true{ROUTER}"
        ))),
        "merge_slashes",
        "is not supported",
    );
    // Missing filter chains.
    assert_err(
        listener("name: l\naddress: {socket_address: {address: 127.0.0.1, port_value: 1}}"),
        "filter_chains",
        "is required",
    );
    // Filter chain match on source ports is not implemented.
    let yaml = hcm_listener(&format!("      rds: {{route_config_name: r}}{ROUTER}")).replace(
        "- filters:\n",
        "- filter_chain_match: {source_ports: [1]}\n  filters:\n",
    );
    assert_err(
        listener(&yaml),
        "filter_chains[0].filter_chain_match.source_ports",
        "is not supported",
    );
}

#[test]
fn downstream_tls_with_sds_and_inline() {
    let yaml = hcm_listener(&format!("      rds: {{route_config_name: r}}{ROUTER}")).replace(
        "- filters:\n",
        r#"- transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
      require_client_certificate: true
      common_tls_context:
        alpn_protocols: [h2, http/1.1]
        tls_certificate_sds_secret_configs: [{name: default}]
        combined_validation_context:
          default_validation_context:
            match_typed_subject_alt_names:
            - san_type: URI
              matcher: {prefix: "spiffe://cluster.local/"}
          validation_context_sds_secret_config: {name: ROOTCA}
  filters:
"#,
    );
    let l = listener(&yaml).unwrap();
    let tls = l.filter_chains[0].tls.as_ref().unwrap();
    assert!(matches!(&tls.certificate, TlsCertificateSource::Sds(n) if n == "default"));
    assert!(tls.require_client_certificate);
    assert_eq!(tls.alpn_protocols, ["h2", "http/1.1"]);
    let v = tls.validation.as_ref().unwrap();
    assert!(matches!(&v.trusted_ca, TlsCaSource::Sds(n) if n == "ROOTCA"));
    assert!(
        matches!(&v.match_subject_alt_names[0].pattern, StringMatch::Prefix(p) if p == "spiffe://cluster.local/")
    );
}

#[test]
fn hcm_common_options_that_change_traffic_are_refused() {
    assert_err(
        listener(&hcm_listener(&format!(
            "      rds: {{route_config_name: r}}\n      common_http_protocol_options: {{headers_with_underscores_action: REJECT_REQUEST}}{ROUTER}"
        ))),
        "common_http_protocol_options.headers_with_underscores_action",
        "REJECT_REQUEST is not supported",
    );
    assert_err(
        listener(&hcm_listener(&format!(
            "      rds: {{route_config_name: r}}\n      common_http_protocol_options: {{max_stream_duration: 5s}}{ROUTER}"
        ))),
        "common_http_protocol_options.max_stream_duration",
        "not supported",
    );
    // request_headers_timeout: 30s unless set, `0s` disables it.
    let headers_timeout = |extra: &str| {
        let l = listener(&hcm_listener(&format!(
            "      rds: {{route_config_name: r}}\n{extra}{ROUTER}"
        )))
        .unwrap();
        hcm_of(&l).request_headers_timeout
    };
    assert_eq!(headers_timeout(""), Some(DEFAULT_REQUEST_HEADERS_TIMEOUT));
    assert_eq!(
        headers_timeout("      request_headers_timeout: 2s\n"),
        Some(std::time::Duration::from_secs(2))
    );
    assert_eq!(headers_timeout("      request_headers_timeout: 0s\n"), None);
}

#[test]
fn forward_client_cert_details_compile() {
    let l = listener(&hcm_listener(&format!(
        "      rds: {{route_config_name: r}}\n      forward_client_cert_details: APPEND_FORWARD\n      set_current_client_cert_details: {{subject: true, dns: true, uri: true}}{ROUTER}"
    )))
    .unwrap();
    let h = hcm_of(&l);
    assert_eq!(h.forward_client_cert, ForwardClientCert::AppendForward);
    assert_eq!(
        h.client_cert_details,
        ClientCertDetails {
            subject: true,
            dns: true,
            uri: true
        }
    );
    let l = listener(&hcm_listener(&format!(
        "      rds: {{route_config_name: r}}{ROUTER}"
    )))
    .unwrap();
    assert_eq!(hcm_of(&l).forward_client_cert, ForwardClientCert::Sanitize);
    assert_err(
        listener(&hcm_listener(&format!(
            "      rds: {{route_config_name: r}}\n      forward_client_cert_details: SANITIZE_SET\n      set_current_client_cert_details: {{cert: true}}{ROUTER}"
        ))),
        "set_current_client_cert_details.cert",
        "not supported",
    );
}
