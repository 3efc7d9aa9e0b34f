//! Unit tests of the compiler, one file per resource: one small YAML
//! fragment per path, and the error for each unsupported setting or bad
//! value asserts the field it names.

use super::*;
use crate::model::*;
use crate::xds_json::from_str;

fn listener(yaml: &str) -> Result<ListenerConfig, CompileError> {
    compile_listener(&from_str::<Listener>(yaml).expect("listener YAML decodes"))
}

fn cluster(yaml: &str) -> Result<ClusterConfig, CompileError> {
    compile_cluster(&from_str::<Cluster>(yaml).expect("cluster YAML decodes"))
}

fn routes(yaml: &str) -> Result<RouteTable, CompileError> {
    compile_route_configuration(&from_str::<RouteConfiguration>(yaml).expect("route YAML decodes"))
}

fn endpoints(yaml: &str) -> Result<EndpointSet, CompileError> {
    compile_load_assignment(&from_str::<ClusterLoadAssignment>(yaml).expect("CLA YAML decodes"))
}

/// Asserts an error names `field` and, when given, says `text`.
#[track_caller]
fn assert_err<T: std::fmt::Debug>(r: Result<T, CompileError>, field: &str, text: &str) {
    let e = r.expect_err("expected an error");
    let msg = e.to_string();
    assert!(
        e.field().contains(field),
        "field {:?} does not name {field:?}: {msg}",
        e.field()
    );
    assert!(msg.contains(text), "{msg:?} does not say {text:?}");
}

mod cluster;
mod endpoint;
mod listener;
mod route;
mod snapshot;

const ROUTER: &str = r#"
      http_filters:
      - name: envoy.filters.http.router
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}"#;

fn hcm_listener(hcm_body: &str) -> String {
    format!(
        r#"
name: l
address: {{socket_address: {{address: 127.0.0.1, port_value: 10000}}}}
filter_chains:
- filters:
  - name: hcm
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: in
{hcm_body}
"#
    )
}

fn hcm_of(l: &ListenerConfig) -> &HttpConnectionManagerConfig {
    match &l.filter_chains[0].filter {
        NetworkFilter::Http(h) => h,
        NetworkFilter::Tcp(_) => panic!("expected HCM"),
    }
}

fn one_route(route_yaml: &str) -> Result<Route, CompileError> {
    let table = routes(&format!(
        "name: r\nvirtual_hosts:\n- name: v\n  domains: [\"*\"]\n  routes:\n  - {route_yaml}\n"
    ))?;
    Ok(table.virtual_hosts()[0].routes[0].clone())
}

fn forward_of(r: &Route) -> &ForwardAction {
    match &r.action {
        RouteAction::Forward(f) => f,
        other => panic!("forward expected, got {other:?}"),
    }
}

const ONE_ENDPOINT: &str = "load_assignment:\n  endpoints:\n  - lb_endpoints:\n    - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 5001}}}\n";
