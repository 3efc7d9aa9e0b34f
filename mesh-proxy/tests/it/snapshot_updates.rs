//! What survives a snapshot swap: an unchanged cluster keeps its runtime
//! (round robin position, counters), a changed endpoint set keeps the
//! state of the addresses it still has, EDS endpoints are looked up by
//! service name, and a failed update leaves the old configuration in force.

use std::sync::Arc;

use crate::common::*;
use mesh_proxy::model::*;
use mesh_test_util::{HttpClient, HttpUpstream, send};

fn eds_snapshot(addrs: &[std::net::SocketAddr], extra_route: bool) -> Snapshot {
    let mut routes = vec![to_cluster("r", prefix("/"), "svc")];
    if extra_route {
        routes.insert(
            0,
            route(
                "direct",
                prefix("/direct"),
                RouteAction::DirectResponse {
                    status: 204,
                    body: None,
                },
            ),
        );
    }
    let t = table(
        "routes",
        vec![vhost("all", vec![DomainPattern::Any], routes)],
    );
    let mut c = cluster("svc", &[], LbPolicy::RoundRobin);
    c.discovery = Discovery::Eds {
        service_name: "svc-eds".into(),
    };
    let mut s = http_snapshot(t, vec![c], vec![]);
    s.endpoints
        .insert("svc-eds".into(), Arc::new(endpoints("svc-eds", addrs)));
    s
}

#[tokio::test]
async fn cluster_state_survives_swaps() {
    let a = HttpUpstream::start("a").await.unwrap();
    let b = HttpUpstream::start("b").await.unwrap();
    let c = HttpUpstream::start("c").await.unwrap();
    let proxy = start(eds_snapshot(&[a.addr(), b.addr()], false)).await;
    let url = format!("http://{}/", proxy.listener(LISTENER).unwrap());
    let client = HttpClient::http1();

    // Round robin keeps alternating across an update that leaves the
    // cluster alone (only routes changed).
    let mut seq = vec![client.get(&url).await.unwrap().text()];
    proxy
        .proxy
        .update(eds_snapshot(&[a.addr(), b.addr()], true))
        .await
        .unwrap();
    seq.push(client.get(&url).await.unwrap().text());
    proxy
        .proxy
        .update(eds_snapshot(&[a.addr(), b.addr()], false))
        .await
        .unwrap();
    seq.push(client.get(&url).await.unwrap().text());
    assert_ne!(seq[0], seq[1], "{seq:?}");
    assert_ne!(seq[1], seq[2], "{seq:?}");
    let a_total_before = a.request_count();

    // New EDS endpoints: `a` keeps its counters and its pooled connection.
    proxy
        .proxy
        .update(eds_snapshot(&[a.addr(), c.addr()], false))
        .await
        .unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(client.get(&url).await.unwrap().text());
    }
    assert_eq!(
        seen,
        ["a".to_string(), "c".to_string()].into_iter().collect()
    );
    let admin = proxy.admin_addr.unwrap();
    let clusters = send(admin, http::Request::get("/clusters").body("").unwrap())
        .await
        .unwrap()
        .text();
    let a_total = a_total_before + 2;
    assert!(
        clusters.contains(&format!("svc::{}::rq_total::{a_total}", a.addr())),
        "{clusters}"
    );
    assert!(!clusters.contains(&b.addr().to_string()), "{clusters}");
    assert_eq!(
        a.connections_total(),
        1,
        "the pooled connection to a survived the swap"
    );
}

#[tokio::test]
async fn failed_update_keeps_the_old_configuration() {
    let a = HttpUpstream::start("a").await.unwrap();
    let proxy = start(eds_snapshot(&[a.addr()], false)).await;
    let addr = proxy.listener(LISTENER).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut bad = eds_snapshot(&[a.addr()], true);
    let mut clash = (*bad.listeners[LISTENER]).clone();
    clash.name = "clash".into();
    clash.address = taken.local_addr().unwrap();
    bad.listeners.insert("clash".into(), Arc::new(clash));
    let err = proxy.proxy.update(bad).await.unwrap_err();
    assert!(err.to_string().contains("listener \"clash\""), "{err}");
    // The old routes are still in force: /direct is not a direct response.
    let r = send(addr, get("h", "/direct")).await.unwrap();
    assert_eq!(r.text(), "a");
}
