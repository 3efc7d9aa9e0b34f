//! Whole snapshots and settings refused across resources.

use super::*;

#[test]
fn snapshot_rejects_duplicate_names() {
    let c: Cluster = from_str(&format!("name: c\n{ONE_ENDPOINT}")).unwrap();
    let e = compile_snapshot(&[], &[], &[c.clone(), c], &[]).unwrap_err();
    assert!(
        matches!(
            e,
            CompileError::Duplicate {
                kind: "cluster",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn snapshot_rejects_two_listeners_on_one_address() {
    let yaml = hcm_listener(&format!("      rds: {{route_config_name: r}}{ROUTER}"));
    let a: Listener = from_str(&yaml).unwrap();
    let mut b = a.clone();
    b.name = "other".into();
    assert_err(
        compile_snapshot(&[a.clone(), b], &[], &[], &[]),
        "address",
        "already used by listener \"l\"",
    );
    // Port 0 never clashes.
    let zero = yaml.replace("port_value: 10000", "port_value: 0");
    let a: Listener = from_str(&zero).unwrap();
    let mut b = a.clone();
    b.name = "other".into();
    assert_eq!(
        compile_snapshot(&[a, b], &[], &[], &[])
            .unwrap()
            .listeners
            .len(),
        2
    );
}

#[test]
fn more_traffic_changing_settings_are_refused() {
    assert_err(
        listener(&hcm_listener(&format!(
            "      rds: {{route_config_name: r}}\n      append_x_forwarded_port: true{ROUTER}"
        ))),
        "append_x_forwarded_port",
        "not supported",
    );
    assert_err(
        cluster(&format!(
            "name: c\nupstream_bind_config: {{source_address: {{address: 127.0.0.2, port_value: 0}}}}\n{ONE_ENDPOINT}"
        )),
        "upstream_bind_config",
        "not supported",
    );
    assert_err(
        one_route("match: {prefix: /}\n    route: {cluster: c, append_x_forwarded_host: true}"),
        "route.append_x_forwarded_host",
        "not supported",
    );
    // Tuning-only fields pass.
    one_route("match: {prefix: /}\n    route: {cluster: c, priority: HIGH}\n    decorator: {operation: op}\n    per_request_buffer_limit_bytes: 1024").unwrap();
    cluster(&format!("name: c\nalt_stat_name: x\ndns_refresh_rate: 5s\nmetadata: {{filter_metadata: {{istio: {{a: b}}}}}}\n{ONE_ENDPOINT}")).unwrap();
}

#[test]
fn merge_adds_dynamic_resources_to_static_ones() {
    use crate::xds::resources::{Versioned, XdsResources};
    fn v<T: prost::Message + prost::Name + Default>(resource: T) -> Versioned<T> {
        Versioned::new(
            &resource,
            ResourceVersion {
                version_info: "1".into(),
                last_updated: std::time::SystemTime::now(),
            },
        )
    }
    let static_cluster: Cluster = from_str(&format!("name: xds-grpc\n{ONE_ENDPOINT}")).unwrap();
    let base = compile_snapshot(&[], &[], &[static_cluster], &[]).unwrap();

    let eds: Cluster = from_str(
        "name: outbound|80||helloworld\ntype: EDS\neds_cluster_config: {eds_config: {ads: {}}}",
    )
    .unwrap();
    let cla: ClusterLoadAssignment = from_str(
        "cluster_name: outbound|80||helloworld\nendpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9001}}}}]}]",
    )
    .unwrap();
    let rc: RouteConfiguration =
        from_str("name: http_proxy\nvirtual_hosts: [{name: v, domains: [\"*\"], routes: []}]")
            .unwrap();
    let l: Listener = from_str(&hcm_listener(&format!(
        "      rds: {{route_config_name: http_proxy}}{ROUTER}"
    )))
    .unwrap();
    let dynamic = XdsResources {
        listeners: vec![v(l.clone())],
        routes: vec![v(rc)],
        clusters: vec![v(eds)],
        endpoints: vec![v(cla)],
        ..Default::default()
    };
    let merged = merge_snapshot(&base, &dynamic).unwrap();
    assert_eq!(merged.clusters.len(), 2);
    let c = &merged.clusters["outbound|80||helloworld"];
    assert_eq!(merged.endpoints_of(c).unwrap().endpoints().count(), 1);
    assert!(merged.routes.contains_key("http_proxy"));
    assert!(merged.listeners.contains_key("l"));
    // The static snapshot is untouched.
    assert_eq!(base.clusters.len(), 1);

    // A dynamic cluster may not replace a static one.
    let clash: Cluster = from_str(&format!("name: xds-grpc\n{ONE_ENDPOINT}")).unwrap();
    let e = merge_snapshot(
        &base,
        &XdsResources {
            clusters: vec![v(clash)],
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            CompileError::Duplicate {
                kind: "cluster",
                ..
            }
        ),
        "{e}"
    );
    // A bad dynamic resource is an error naming it (the NACK message).
    let bad: Cluster = from_str("name: bad\nlb_policy: CLUSTER_PROVIDED").unwrap();
    let e = merge_snapshot(
        &base,
        &XdsResources {
            clusters: vec![v(bad)],
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "cluster \"bad\": lb_policy CLUSTER_PROVIDED is not supported"
    );
}
