//! The admin endpoint shows what is in force and changes log levels; a
//! snapshot update adds and removes listeners and swaps routes whole.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use mesh_proxy::model::*;
use mesh_test_util::{HttpUpstream, send, wait_until};

async fn admin_get(bound: &mesh_proxy::Bound, path: &str) -> mesh_test_util::Response {
    send(
        bound.admin_addr.unwrap(),
        http::Request::get(path)
            .header("host", "admin")
            .body("")
            .unwrap(),
    )
    .await
    .unwrap()
}

async fn admin_post(bound: &mesh_proxy::Bound, path: &str) -> mesh_test_util::Response {
    send(
        bound.admin_addr.unwrap(),
        http::Request::post(path)
            .header("host", "admin")
            .body("")
            .unwrap(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn clusters_stats_and_config_dump_show_what_is_in_force() {
    let a = HttpUpstream::start("a").await.unwrap();
    let b = HttpUpstream::start("b").await.unwrap();
    let mut eps = endpoints("svc", &[a.addr(), b.addr()]);
    eps.localities[0].endpoints[1].health = HealthStatus::Unhealthy;
    let t = table(
        "routes",
        vec![vhost(
            "all",
            vec![DomainPattern::Any],
            vec![to_cluster("r", prefix("/"), "svc")],
        )],
    );
    let proxy = start(http_snapshot(
        t,
        vec![cluster_with("svc", eps, LbPolicy::RoundRobin)],
        vec![],
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(
            send(proxy.listener(LISTENER).unwrap(), get("h", "/"))
                .await
                .unwrap()
                .status,
            200
        );
    }

    let clusters = admin_get(&proxy, "/clusters").await.text();
    assert!(
        clusters.contains(&format!("svc::{}::rq_total::3", a.addr())),
        "{clusters}"
    );
    assert!(
        clusters.contains(&format!("svc::{}::rq_success::3", a.addr())),
        "{clusters}"
    );
    assert!(
        clusters.contains(&format!("svc::{}::health_flags::healthy", a.addr())),
        "{clusters}"
    );
    assert!(
        clusters.contains(&format!(
            "svc::{}::health_flags::/failed_eds_health",
            b.addr()
        )),
        "{clusters}"
    );
    assert!(
        clusters.contains("svc::default_priority::max_connections::1024"),
        "{clusters}"
    );

    let stats = admin_get(&proxy, "/stats").await.text();
    assert!(
        stats.contains("cluster.svc.upstream_rq_total: 3"),
        "{stats}"
    );
    assert!(
        stats.contains("http.ingress_http.downstream_rq_2xx: 3"),
        "{stats}"
    );
    let prom = admin_get(&proxy, "/stats/prometheus").await.text();
    assert!(
        prom.contains("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"svc\"} 3"),
        "{prom}"
    );

    let dump = admin_get(&proxy, "/config_dump").await;
    assert_eq!(dump.status, 200);
    let dump: serde_json::Value = serde_json::from_slice(&dump.body).unwrap();
    let text = dump.to_string();
    assert!(
        text.contains("\"svc\"")
            && text.contains("\"routes\"")
            && text.contains(&a.addr().to_string()),
        "{text}"
    );

    assert_eq!(admin_get(&proxy, "/ready").await.text(), "LIVE\n");
    let info: serde_json::Value =
        serde_json::from_slice(&admin_get(&proxy, "/server_info").await.body).unwrap();
    assert_eq!(info["state"], "LIVE");
    let listeners: serde_json::Value =
        serde_json::from_slice(&admin_get(&proxy, "/listeners?format=json").await.body).unwrap();
    assert_eq!(
        listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"],
        proxy.listener(LISTENER).unwrap().port()
    );
}

#[tokio::test]
async fn logging_levels_change_at_runtime() {
    let proxy = start(Snapshot::default()).await;
    let listing = admin_get(&proxy, "/logging").await.text();
    assert!(listing.starts_with("active loggers:"), "{listing}");
    assert!(listing.contains("  router: info"), "{listing}");
    let r = admin_post(&proxy, "/logging?paths=router:debug,upstream:trace").await;
    assert_eq!(r.status, 200);
    let listing = admin_get(&proxy, "/logging").await.text();
    assert!(
        listing.contains("  router: debug") && listing.contains("  upstream: trace"),
        "{listing}"
    );
    admin_post(&proxy, "/logging?level=warning").await;
    assert!(
        admin_get(&proxy, "/logging")
            .await
            .text()
            .contains("  router: warning")
    );
    let bad = admin_post(&proxy, "/logging?level=loud").await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("unknown log level"), "{}", bad.text());
    // Changing levels needs POST.
    assert_eq!(admin_get(&proxy, "/logging?level=debug").await.status, 405);
}

#[tokio::test]
async fn update_swaps_routes_and_listeners_and_keeps_in_flight_requests() {
    let v1 = HttpUpstream::start("v1").await.unwrap();
    let v2 = HttpUpstream::start("v2").await.unwrap();
    let snapshot_to = |name: &str| {
        let t = table(
            "routes",
            vec![vhost(
                "all",
                vec![DomainPattern::Any],
                vec![to_cluster("r", prefix("/"), name)],
            )],
        );
        http_snapshot(
            t,
            vec![
                cluster("v1", &[v1.addr()], LbPolicy::RoundRobin),
                cluster("v2", &[v2.addr()], LbPolicy::RoundRobin),
            ],
            vec![],
        )
    };
    let proxy = start(snapshot_to("v1")).await;
    let addr = proxy.listener(LISTENER).unwrap();
    assert_eq!(send(addr, get("h", "/")).await.unwrap().text(), "v1");

    // A request in flight on v1 finishes there after the swap.
    v1.set_delay(Duration::from_millis(300));
    let in_flight = tokio::spawn(send(addr, get("h", "/slow")));
    wait_until(Duration::from_secs(10), async || {
        v1.requests().iter().any(|r| r.uri.path() == "/slow") || v1.request_count() >= 2
    })
    .await
    .ok();
    let mut next = snapshot_to("v2");
    let extra = (*next.listeners[LISTENER]).clone();
    let mut extra = mesh_proxy::model::ListenerConfig {
        name: "extra".into(),
        ..extra
    };
    extra.address = "127.0.0.1:0".parse().unwrap();
    next.listeners.insert("extra".into(), Arc::new(extra));
    proxy.proxy.update(next).await.unwrap();
    assert_eq!(
        send(addr, get("h", "/")).await.unwrap().text(),
        "v2",
        "same listener, new routes"
    );
    let r = in_flight.await.unwrap().unwrap();
    assert_eq!(r.text(), "v1");
    let extra_addr = proxy.proxy.listener_addrs()["extra"];
    assert_eq!(send(extra_addr, get("h", "/")).await.unwrap().text(), "v2");

    // Removing the listener stops it accepting.
    proxy.proxy.update(snapshot_to("v2")).await.unwrap();
    assert!(!proxy.proxy.listener_addrs().contains_key("extra"));
    wait_until(Duration::from_secs(10), async || {
        tokio::net::TcpStream::connect(extra_addr).await.is_err()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn removed_clusters_take_their_stats_with_them() {
    let up = HttpUpstream::start("up").await.unwrap();
    let snapshot_with = |names: &[&str]| {
        let t = table(
            "routes",
            vec![vhost(
                "all",
                vec![DomainPattern::Any],
                vec![to_cluster("r", prefix("/"), "kept")],
            )],
        );
        http_snapshot(
            t,
            names
                .iter()
                .map(|n| cluster(n, &[up.addr()], LbPolicy::RoundRobin))
                .collect(),
            vec![],
        )
    };
    let proxy = start(snapshot_with(&["kept", "gone"])).await;
    let addr = proxy.listener(LISTENER).unwrap();
    assert_eq!(send(addr, get("h", "/")).await.unwrap().status, 200);
    let before = admin_get(&proxy, "/stats").await.text();
    assert!(
        before.contains("cluster.gone.upstream_rq_total: 0"),
        "{before}"
    );
    assert!(
        before.contains("cluster.kept.upstream_rq_total: 1"),
        "{before}"
    );

    proxy.proxy.update(snapshot_with(&["kept"])).await.unwrap();
    assert_eq!(send(addr, get("h", "/")).await.unwrap().status, 200);
    let after = admin_get(&proxy, "/stats").await.text();
    assert!(!after.contains("cluster.gone."), "{after}");
    // The cluster that stays keeps its counts across the swap.
    assert!(
        after.contains("cluster.kept.upstream_rq_total: 2"),
        "{after}"
    );
}

#[tokio::test]
async fn quitquitquit_stops_the_proxy() {
    let proxy = start(Snapshot::default()).await;
    assert_eq!(admin_get(&proxy, "/quitquitquit").await.status, 405);
    assert_eq!(admin_post(&proxy, "/quitquitquit").await.text(), "OK\n");
    tokio::time::timeout(Duration::from_secs(10), proxy.proxy.stopped())
        .await
        .unwrap();
}
