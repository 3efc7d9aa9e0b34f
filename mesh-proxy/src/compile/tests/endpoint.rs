//! Cluster load assignments.

use super::*;

#[test]
fn load_assignment_localities_priorities_weights_health() {
    let set = endpoints(
        r#"
cluster_name: outbound|80||helloworld
endpoints:
- locality: {region: r1, zone: z1}
  load_balancing_weight: 3
  lb_endpoints:
  - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9001}}, hostname: h1}
    load_balancing_weight: 5
    health_status: HEALTHY
  - endpoint: {address: {socket_address: {address: "::1", port_value: 9002}}}
    health_status: DRAINING
- priority: 1
  lb_endpoints:
  - endpoint: {address: {socket_address: {address: 127.0.0.2, port_value: 9003}}}
    health_status: UNHEALTHY
"#,
    )
    .unwrap();
    assert_eq!(set.cluster_name, "outbound|80||helloworld");
    let l0 = &set.localities[0];
    assert_eq!(
        (
            l0.region.as_str(),
            l0.zone.as_str(),
            l0.priority,
            l0.load_balancing_weight
        ),
        ("r1", "z1", 0, Some(3))
    );
    assert_eq!(l0.endpoints[0].weight, 5);
    assert_eq!(l0.endpoints[0].hostname, "h1");
    assert_eq!(l0.endpoints[0].health, HealthStatus::Healthy);
    assert_eq!(l0.endpoints[1].address, "[::1]:9002".parse().unwrap());
    assert_eq!(l0.endpoints[1].weight, 1);
    assert_eq!(l0.endpoints[1].health, HealthStatus::Draining);
    assert!(!l0.endpoints[1].health.is_routable());
    assert_eq!(set.localities[1].priority, 1);
    assert_eq!(
        set.localities[1].endpoints[0].health,
        HealthStatus::Unhealthy
    );
    assert_eq!(set.endpoints().count(), 3);

    assert_err(
        endpoints(
            "cluster_name: c\nendpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 70000}}}}]}]",
        ),
        "endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value",
        "not a port",
    );
    assert_err(
        endpoints(
            "cluster_name: c\nendpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}, load_balancing_weight: 0}]}]",
        ),
        "endpoints[0].lb_endpoints[0].load_balancing_weight",
        "at least 1",
    );
    assert_err(
        endpoints(
            "cluster_name: c\npolicy: {drop_overloads: [{category: x, drop_percentage: {numerator: 1}}]}",
        ),
        "policy.drop_overloads",
        "not supported",
    );
    assert_err(
        endpoints(
            "cluster_name: c\nendpoints: [{lb_endpoints: [{endpoint: {address: {pipe: {path: /tmp/s}}}}]}]",
        ),
        "endpoints[0].lb_endpoints[0].endpoint.address.pipe",
        "not supported",
    );
}
