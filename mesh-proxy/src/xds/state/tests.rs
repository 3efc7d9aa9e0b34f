use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use prost::Name;

use super::*;
use crate::xds_json::{from_str, pack_any};

fn eds_cluster(name: &str) -> Cluster {
    from_str(&format!(
        "name: {name}\ntype: EDS\nconnect_timeout: 1s\neds_cluster_config: {{eds_config: {{ads: {{}}, resource_api_version: V3}}}}\n"
    ))
    .unwrap()
}

fn cla(name: &str, port: u16) -> ClusterLoadAssignment {
    from_str(&format!(
        "cluster_name: {name}\nendpoints:\n- lb_endpoints:\n  - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}\n"
    ))
    .unwrap()
}

fn rds_listener(name: &str, route: &str) -> Listener {
    from_str(&format!(
        r#"
name: {name}
address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: http
      rds: {{route_config_name: {route}, config_source: {{ads: {{}}, resource_api_version: V3}}}}
      http_filters:
      - name: envoy.filters.http.router
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#
    ))
    .unwrap()
}

fn route(name: &str, cluster: &str) -> RouteConfiguration {
    from_str(&format!(
        "name: {name}\nvirtual_hosts:\n- name: all\n  domains: ['*']\n  routes:\n  - match: {{prefix: /}}\n    route: {{cluster: {cluster}}}\n"
    ))
    .unwrap()
}

fn response<T: prost::Message + Name>(
    version: &str,
    nonce: &str,
    items: &[T],
) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        nonce: nonce.into(),
        type_url: T::type_url(),
        resources: items.iter().map(pack_any).collect(),
        ..Default::default()
    }
}

fn state() -> XdsState {
    XdsState::new(Snapshot::default(), true, true, Duration::from_secs(15))
}

/// prepare + servable + commit, as the client does after a successful apply.
fn accept(
    s: &mut XdsState,
    resp: &DiscoveryResponse,
    now: Instant,
) -> (DiscoveryRequest, Servable) {
    let c = s.prepare(resp.clone()).expect("accepted");
    let servable = s.servable(&c.resources, now).expect("servable");
    let ack = s.commit(c, servable.resources.clone(), None);
    (ack, servable)
}

#[test]
fn type_urls_match_the_message_names() {
    assert_eq!(ResourceType::Cluster.type_url(), Cluster::type_url());
    assert_eq!(
        ResourceType::Endpoint.type_url(),
        ClusterLoadAssignment::type_url()
    );
    assert_eq!(ResourceType::Listener.type_url(), Listener::type_url());
    assert_eq!(
        ResourceType::Route.type_url(),
        RouteConfiguration::type_url()
    );
}

#[test]
fn opens_with_wildcard_cds_and_lds_then_follows_references() {
    let mut s = state();
    let first = s.initial_requests();
    let types: Vec<_> = first.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(
        types,
        [
            ResourceType::Cluster.type_url(),
            ResourceType::Listener.type_url()
        ]
    );
    assert!(
        first
            .iter()
            .all(|r| r.resource_names.is_empty() && r.version_info.is_empty())
    );

    let now = Instant::now();
    let (ack, _) = accept(
        &mut s,
        &response("c1", "n1", &[eds_cluster("backend")]),
        now,
    );
    assert_eq!(ack.version_info, "c1");
    assert_eq!(ack.response_nonce, "n1");
    assert!(ack.error_detail.is_none());
    let subs = s.subscription_updates(None);
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].type_url, ResourceType::Endpoint.type_url());
    assert_eq!(subs[0].resource_names, ["backend"]);
    assert!(s.subscription_updates(None).is_empty(), "sent once");

    accept(
        &mut s,
        &response("l1", "n2", &[rds_listener("out", "r80")]),
        now,
    );
    let subs = s.subscription_updates(None);
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].type_url, ResourceType::Route.type_url());
    assert_eq!(subs[0].resource_names, ["r80"]);
}

#[test]
fn unsupported_lb_policy_is_rejected_naming_cluster_and_field() {
    let mut s = state();
    s.initial_requests();
    accept(
        &mut s,
        &response("1", "a", &[eds_cluster("backend")]),
        Instant::now(),
    );
    let mut bad = eds_cluster("backend");
    bad.lb_policy = 6; // CLUSTER_PROVIDED
    let rejection = s.prepare(response("2", "b", &[bad])).unwrap_err();
    assert!(
        rejection.reason.contains("cluster \"backend\"") && rejection.reason.contains("lb_policy"),
        "{}",
        rejection.reason
    );
    let nack = s.nack(&rejection, None);
    assert_eq!(
        nack.version_info, "1",
        "a NACK carries the version in force"
    );
    assert_eq!(nack.response_nonce, "b");
    let detail = nack.error_detail.unwrap();
    assert_eq!(detail.message, rejection.reason);
    assert_eq!(s.accepted().names(ResourceType::Cluster), ["backend"]);
    assert_eq!(s.version(ResourceType::Cluster), "1");
}

#[test]
fn duplicate_and_undecodable_resources_are_rejected() {
    let s = state();
    let r = s
        .prepare(response("1", "a", &[eds_cluster("x"), eds_cluster("x")]))
        .unwrap_err();
    assert!(
        r.reason.contains("\"x\" appears more than once"),
        "{}",
        r.reason
    );
    let mut resp = response("1", "a", &[eds_cluster("x")]);
    resp.resources[0].value = vec![0xff, 0xff, 0xff];
    let r = s.prepare(resp).unwrap_err();
    assert!(r.reason.starts_with("resources[0]"), "{}", r.reason);
    let mut resp = response("1", "a", &[eds_cluster("x")]);
    resp.type_url = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret".into();
    let r = s.prepare(resp).unwrap_err();
    assert!(
        r.ty.is_none() && r.reason.contains("not supported"),
        "{}",
        r.reason
    );
}

#[test]
fn listeners_wait_for_clusters_to_warm_and_for_their_routes() {
    let mut s = state();
    s.initial_requests();
    let now = Instant::now();
    // A complete first configuration.
    accept(&mut s, &response("c1", "1", &[eds_cluster("a")]), now);
    accept(&mut s, &response("e1", "2", &[cla("a", 1001)]), now);
    accept(
        &mut s,
        &response("l1", "3", &[rds_listener("out", "r")]),
        now,
    );
    let (_, sv) = accept(&mut s, &response("r1", "4", &[route("r", "a")]), now);
    assert!(sv.warming.is_empty());
    assert!(sv.snapshot.listeners.contains_key("out"));
    assert!(sv.snapshot.routes.contains_key("r"));

    // A new cluster "b" and a route switching to it: the route must not
    // switch before b's endpoints are there.
    let (_, sv) = accept(
        &mut s,
        &response("c2", "5", &[eds_cluster("a"), eds_cluster("b")]),
        now,
    );
    assert_eq!(sv.warming, ["cluster \"b\""]);
    assert!(!sv.snapshot.clusters.contains_key("b"));
    let (_, sv) = accept(&mut s, &response("r2", "6", &[route("r", "b")]), now);
    assert_eq!(sv.warming, ["cluster \"b\""]);
    assert_eq!(
        sv.resources.routes["r"].version.version_info, "r1",
        "old route kept"
    );
    let (_, sv) = accept(&mut s, &response("e2", "7", &[cla("b", 1002)]), now);
    assert!(sv.warming.is_empty(), "{:?}", sv.warming);
    assert!(sv.snapshot.clusters.contains_key("b"));
    assert_eq!(sv.resources.routes["r"].version.version_info, "r2");
    // EDS responses update only what they carry.
    assert_eq!(s.accepted().names(ResourceType::Endpoint), ["a", "b"]);

    // A listener whose route configuration has not arrived warms.
    let (_, sv) = accept(
        &mut s,
        &response(
            "l2",
            "8",
            &[rds_listener("out", "r"), rds_listener("in", "r-in")],
        ),
        now,
    );
    assert_eq!(sv.warming, ["listener \"in\""]);
    assert!(!sv.snapshot.listeners.contains_key("in"));
    assert!(sv.snapshot.listeners.contains_key("out"));
}

#[test]
fn warming_ends_after_the_timeout() {
    let mut s = XdsState::new(Snapshot::default(), true, true, Duration::from_secs(15));
    s.initial_requests();
    let t0 = Instant::now();
    let (_, sv) = accept(&mut s, &response("c1", "1", &[eds_cluster("a")]), t0);
    assert_eq!(sv.warming.len(), 1);
    assert_eq!(
        s.next_warming_deadline(),
        Some(t0 + Duration::from_secs(15))
    );
    let accepted = s.accepted().clone();
    let sv = s.servable(&accepted, t0 + Duration::from_secs(5)).unwrap();
    assert_eq!(sv.warming.len(), 1, "not yet");
    let sv = s.servable(&accepted, t0 + Duration::from_secs(16)).unwrap();
    assert!(sv.warming.is_empty());
    assert!(sv.snapshot.clusters.contains_key("a"));
    assert_eq!(s.next_warming_deadline(), None, "no clock left to fire");
    let sv = s.servable(&accepted, t0 + Duration::from_secs(17)).unwrap();
    assert!(sv.warming.is_empty(), "stays served");
}

#[test]
fn removed_resources_drop_their_subscriptions_data() {
    let mut s = state();
    s.initial_requests();
    let now = Instant::now();
    accept(
        &mut s,
        &response("c1", "1", &[eds_cluster("a"), eds_cluster("b")]),
        now,
    );
    s.subscription_updates(None);
    accept(
        &mut s,
        &response("e1", "2", &[cla("a", 1), cla("b", 2), cla("zzz", 3)]),
        now,
    );
    assert_eq!(
        s.accepted().names(ResourceType::Endpoint),
        ["a", "b"],
        "unrequested ignored"
    );
    accept(&mut s, &response("c2", "3", &[eds_cluster("a")]), now);
    assert_eq!(s.accepted().names(ResourceType::Cluster), ["a"]);
    assert_eq!(s.accepted().names(ResourceType::Endpoint), ["a"]);
    let subs = s.subscription_updates(None);
    assert_eq!(subs[0].resource_names, ["a"]);
    assert_eq!(subs[0].version_info, "e1");
    assert_eq!(subs[0].response_nonce, "2");
}

#[test]
fn a_new_stream_resends_versions_and_names_with_empty_nonces() {
    let mut s = state();
    s.initial_requests();
    let now = Instant::now();
    accept(&mut s, &response("c1", "1", &[eds_cluster("a")]), now);
    s.subscription_updates(None);
    accept(&mut s, &response("e1", "2", &[cla("a", 1)]), now);
    let again = s.initial_requests();
    let summary: Vec<_> = again
        .iter()
        .map(|r| {
            (
                ResourceType::from_type_url(&r.type_url).unwrap().short(),
                r.version_info.as_str(),
                r.resource_names.clone(),
                r.response_nonce.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("CDS", "c1", vec![], ""),
            ("EDS", "e1", vec!["a".to_string()], ""),
            ("LDS", "", vec![], ""),
        ]
    );
}

#[test]
fn unchanged_resources_keep_their_version_and_time() {
    let mut s = state();
    s.initial_requests();
    let now = Instant::now();
    accept(&mut s, &response("1", "1", &[eds_cluster("a")]), now);
    let first = s.accepted().clusters["a"].version.clone();
    accept(
        &mut s,
        &response("2", "2", &[eds_cluster("a"), eds_cluster("b")]),
        now,
    );
    assert_eq!(
        s.accepted().clusters["a"].version.version_info,
        first.version_info
    );
    assert_eq!(
        s.accepted().clusters["a"].version.last_updated,
        first.last_updated
    );
    assert_eq!(s.accepted().clusters["b"].version.version_info, "2");
    assert_eq!(s.accepted().clusters_version, "2");
}

#[test]
fn resources_are_kept_as_the_bytes_received() {
    let mut s = state();
    s.initial_requests();
    let resp = response("1", "1", &[eds_cluster("a")]);
    let sent = resp.resources[0].value.clone();
    accept(&mut s, &resp, Instant::now());
    let kept = &s.accepted().clusters["a"].resource;
    assert_eq!(kept.as_bytes().as_ref(), sent.as_slice());
    assert_eq!(kept.decode().unwrap(), eds_cluster("a"));
}

#[test]
fn an_unchanged_resource_encoded_differently_keeps_its_version() {
    let mut s = state();
    s.initial_requests();
    let now = Instant::now();
    let cluster = eds_cluster("a");
    accept(
        &mut s,
        &response("1", "1", std::slice::from_ref(&cluster)),
        now,
    );
    let first = s.accepted().clusters["a"].version.clone();

    // The same message with its fields in another order on the wire (as
    // a control plane's map fields come out in any order): other bytes,
    // equal once decoded.
    let name_only = Cluster {
        name: cluster.name.clone(),
        ..Default::default()
    };
    let rest = Cluster {
        name: String::new(),
        ..cluster.clone()
    };
    let mut reordered = rest.encode_to_vec();
    reordered.extend(name_only.encode_to_vec());
    assert_ne!(reordered, cluster.encode_to_vec());
    let mut resp = response("2", "2", std::slice::from_ref(&cluster));
    resp.resources[0].value = reordered;
    accept(&mut s, &resp, now);
    let kept = &s.accepted().clusters["a"];
    assert_eq!(kept.version.version_info, first.version_info);
    assert_eq!(kept.version.last_updated, first.last_updated);

    // A real change takes the response's version.
    let mut changed = cluster;
    changed.connect_timeout = Some(envoy_types::pb::google::protobuf::Duration {
        seconds: 2,
        nanos: 0,
    });
    accept(&mut s, &response("3", "3", &[changed.clone()]), now);
    let kept = &s.accepted().clusters["a"];
    assert_eq!(kept.version.version_info, "3");
    assert_eq!(kept.resource.decode().unwrap(), changed);
}
