//! The registry built from Kubernetes objects as the API server returns them (JSON with
//! the server's bookkeeping: uid, resourceVersion, managedFields, status): a Service's
//! endpoints from its EndpointSlices (v1) and the Pods they point at, readiness, ports,
//! labels, service accounts and the sidecar mark; the Pod fallback without slices.

use mesh_control::registry::Registry;

const SERVICE: &str = r#"{
  "apiVersion": "v1", "kind": "Service",
  "metadata": {"name": "reviews", "namespace": "shop", "uid": "5a1c", "resourceVersion": "812",
    "creationTimestamp": "2026-12-07T10:00:00Z", "labels": {"app": "reviews"},
    "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1"}]},
  "spec": {"selector": {"app": "reviews"}, "clusterIP": "10.96.12.7", "type": "ClusterIP",
    "ports": [{"name": "http", "port": 9080, "targetPort": "web", "protocol": "TCP"},
              {"name": "grpc-admin", "port": 9090, "targetPort": 9091, "protocol": "TCP"}]},
  "status": {"loadBalancer": {}}
}"#;

fn pod(name: &str, ip: &str, version: &str, ready: bool, sidecar: bool) -> String {
    let tls = if sidecar {
        r#", "security.istio.io/tlsMode": "istio""#
    } else {
        ""
    };
    format!(
        r#"{{
  "apiVersion": "v1", "kind": "Pod",
  "metadata": {{"name": "{name}", "namespace": "shop", "uid": "u-{name}", "resourceVersion": "900",
    "labels": {{"app": "reviews", "version": "{version}"{tls}}}}},
  "spec": {{"serviceAccountName": "bookinfo-reviews", "nodeName": "node-a",
    "containers": [{{"name": "reviews", "image": "reviews:1", "ports": [{{"name": "web", "containerPort": 8080}}]}}]}},
  "status": {{"phase": "Running", "podIP": "{ip}", "podIPs": [{{"ip": "{ip}"}}],
    "conditions": [{{"type": "Ready", "status": "{}"}}, {{"type": "ContainersReady", "status": "True"}}]}}
}}"#,
        if ready { "True" } else { "False" }
    )
}

fn slice(name: &str, endpoints: &[(&str, &str, Option<bool>)]) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|(ip, pod, ready)| {
            let cond = match ready {
                Some(r) => format!(r#""conditions": {{"ready": {r}, "serving": {r}, "terminating": false}},"#),
                None => String::new(),
            };
            format!(
                r#"{{"addresses": ["{ip}"], {cond} "nodeName": "node-a",
                 "targetRef": {{"kind": "Pod", "namespace": "shop", "name": "{pod}", "uid": "u-{pod}"}}}}"#
            )
        })
        .collect();
    format!(
        r#"{{
  "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
  "metadata": {{"name": "{name}", "namespace": "shop", "generateName": "reviews-",
    "labels": {{"kubernetes.io/service-name": "reviews", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
    "ownerReferences": [{{"apiVersion": "v1", "kind": "Service", "name": "reviews", "uid": "5a1c"}}]}},
  "addressType": "IPv4",
  "endpoints": [{}],
  "ports": [{{"name": "http", "port": 8080, "protocol": "TCP"}}, {{"name": "grpc-admin", "port": 9091, "protocol": "TCP"}}]
}}"#,
        eps.join(",")
    )
}

fn registry(docs: &[String]) -> Registry {
    let text = docs.join("\n---\n");
    let config = mesh_api::load_str("api.json", &text);
    assert!(config.errors.is_empty(), "{:?}", config.errors);
    Registry::build(&config)
}

fn endpoints(registry: &Registry) -> Vec<(String, String, bool)> {
    let svc = registry
        .services
        .iter()
        .find(|s| s.hostname == "reviews.shop.svc.cluster.local")
        .expect("the Service is in the registry");
    let mut out: Vec<(String, String, bool)> = svc
        .endpoints
        .iter()
        .map(|e| {
            (
                e.address.clone(),
                e.labels.get("version").cloned().unwrap_or_default(),
                e.sidecar,
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_service_gets_the_ready_addresses_of_its_endpoint_slices_with_their_pods_labels() {
    let docs = vec![
        SERVICE.to_string(),
        pod("reviews-v1-a", "10.1.0.4", "v1", true, true),
        pod("reviews-v2-b", "10.1.0.5", "v2", true, false),
        pod("reviews-v2-c", "10.1.0.6", "v2", true, true),
        // Ready unset means ready; false is left out.
        slice(
            "reviews-abcde",
            &[
                ("10.1.0.4", "reviews-v1-a", Some(true)),
                ("10.1.0.5", "reviews-v2-b", None),
            ],
        ),
        slice(
            "reviews-fghij",
            &[("10.1.0.6", "reviews-v2-c", Some(false))],
        ),
    ];
    let reg = registry(&docs);
    assert_eq!(
        endpoints(&reg),
        vec![
            ("10.1.0.4".into(), "v1".into(), true),
            ("10.1.0.5".into(), "v2".into(), false),
        ]
    );
    let svc = &reg.services[0];
    assert_eq!(svc.origin.kind, "Service");
    assert_eq!(svc.addresses, vec!["10.96.12.7".to_string()]);
    let ep = &svc.endpoints[0];
    assert_eq!(ep.service_account, "bookinfo-reviews");
    assert_eq!(ep.namespace, "shop");
    // The slice's ports, by the Service port's name.
    let http = svc.port(9080).unwrap();
    let grpc = svc.port(9090).unwrap();
    assert_eq!(ep.port_for(http), 8080);
    assert_eq!(ep.port_for(grpc), 9091);
    assert_eq!(
        svc.identities("cluster.local"),
        vec!["spiffe://cluster.local/ns/shop/sa/bookinfo-reviews".to_string()]
    );
}

#[test]
fn a_pod_that_reports_not_ready_leaves_before_its_slice_says_so() {
    let docs = vec![
        SERVICE.to_string(),
        pod("reviews-v1-a", "10.1.0.4", "v1", false, true),
        pod("reviews-v2-b", "10.1.0.5", "v2", true, true),
        slice(
            "reviews-abcde",
            &[
                ("10.1.0.4", "reviews-v1-a", Some(true)),
                ("10.1.0.5", "reviews-v2-b", Some(true)),
            ],
        ),
    ];
    assert_eq!(
        endpoints(&registry(&docs)),
        vec![("10.1.0.5".into(), "v2".into(), true)]
    );
}

#[test]
fn without_endpoint_slices_the_selector_picks_ready_pods_with_their_named_ports() {
    let docs = vec![
        SERVICE.to_string(),
        pod("reviews-v1-a", "10.1.0.4", "v1", true, true),
        pod("reviews-v2-b", "10.1.0.5", "v2", false, true),
    ];
    let reg = registry(&docs);
    assert_eq!(
        endpoints(&reg),
        vec![("10.1.0.4".into(), "v1".into(), true)]
    );
    let svc = &reg.services[0];
    // targetPort "web" is the container port named web.
    assert_eq!(svc.endpoints[0].port_for(svc.port(9080).unwrap()), 8080);
    assert_eq!(svc.endpoints[0].port_for(svc.port(9090).unwrap()), 9091);
}

#[test]
fn slices_of_another_service_or_an_fqdn_slice_add_nothing() {
    let other = slice("other-x", &[("10.1.0.9", "other", Some(true))]).replace(
        r#""kubernetes.io/service-name": "reviews""#,
        r#""kubernetes.io/service-name": "ratings""#,
    );
    let fqdn = slice("reviews-fqdn", &[("reviews.example.com", "x", Some(true))])
        .replace(r#""addressType": "IPv4""#, r#""addressType": "FQDN""#);
    let docs = vec![
        SERVICE.to_string(),
        pod("reviews-v1-a", "10.1.0.4", "v1", true, true),
        other,
        fqdn,
    ];
    // The FQDN slice names the Service, so the Pod fallback does not apply either.
    assert_eq!(endpoints(&registry(&docs)), vec![]);
}

const ROUTING: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 75}
    - {destination: {host: reviews, subset: v2}, weight: 25}
"#;

fn workload_entry(name: &str, ip: &str, version: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: shop}}
spec:
  address: {ip}
  serviceAccount: bookinfo-reviews
  ports: {{http: 8080, grpc-admin: 9091}}
  labels: {{app: reviews, version: {version}, security.istio.io/tlsMode: istio}}
"#
    )
}

fn xds(docs: &[String]) -> mesh_control::translate::XdsResources {
    use mesh_control::node::ProxyNode;
    let text = docs.join("\n---\n");
    let config = mesh_api::load_str("mesh.yaml", &text);
    assert!(config.errors.is_empty(), "{:?}", config.errors);
    let node: envoy_types::pb::envoy::config::core::v3::Node = mesh_proxy::xds_json::from_str(
        r#"{"id": "sidecar~10.1.0.9~sleep-1.shop~shop.svc.cluster.local",
            "metadata": {"LABELS": {"app": "sleep"}, "NAMESPACE": "shop"}}"#,
    )
    .unwrap();
    let proxy = ProxyNode::from_node(&node).unwrap();
    mesh_control::translate::translate(&mesh_control::translate::MeshState::new(config), &proxy)
}

#[test]
fn a_kubernetes_service_gives_the_same_xds_as_its_local_mode_equivalent() {
    // Kubernetes: a Service, its Pods and the EndpointSlice the controller writes.
    let kubernetes = xds(&[
        SERVICE.to_string(),
        pod("reviews-v1-a", "10.1.0.4", "v1", true, true),
        pod("reviews-v2-b", "10.1.0.5", "v2", true, true),
        slice(
            "reviews-abcde",
            &[
                ("10.1.0.4", "reviews-v1-a", Some(true)),
                ("10.1.0.5", "reviews-v2-b", Some(true)),
            ],
        ),
        ROUTING.to_string(),
    ]);
    // Local mode: the same Service selecting WorkloadEntries with the same addresses, labels,
    // ports and service account.
    let local = xds(&[
        SERVICE.to_string(),
        workload_entry("reviews-v1", "10.1.0.4", "v1"),
        workload_entry("reviews-v2", "10.1.0.5", "v2"),
        ROUTING.to_string(),
    ]);
    assert!(
        kubernetes
            .clusters
            .contains_key("outbound|9080|v2|reviews.shop.svc.cluster.local"),
        "{:?}",
        kubernetes.clusters.keys().collect::<Vec<_>>()
    );
    let eds = &kubernetes.endpoints["outbound|9080|v1|reviews.shop.svc.cluster.local"];
    let addresses = format!("{eds:?}");
    assert!(
        addresses.contains("10.1.0.4") && !addresses.contains("10.1.0.5"),
        "{addresses}"
    );
    for (name, cluster) in &kubernetes.clusters {
        assert_eq!(Some(cluster), local.clusters.get(name), "cluster {name}");
    }
    for (name, cla) in &kubernetes.endpoints {
        let ours = mesh_proxy::xds_json::to_value(cla).unwrap();
        let theirs = local
            .endpoints
            .get(name)
            .map(|c| mesh_proxy::xds_json::to_value(c).unwrap());
        assert_eq!(Some(ours), theirs, "endpoints {name}");
    }
    assert_eq!(kubernetes.routes, local.routes);
    assert_eq!(kubernetes.listeners, local.listeners);
    assert_eq!(kubernetes, local);
}
