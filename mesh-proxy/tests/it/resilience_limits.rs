//! Circuit breaking (503 `UO` at once, overflow counters) and outlier
//! detection (ejection, traffic moving away, return after the ejection
//! time, `failed_outlier_check` in `/clusters`).

use std::time::Duration;

use crate::common::*;
use http::StatusCode;
use mesh_proxy::model::*;
use mesh_test_util::{HttpUpstream, send, wait_until};

#[tokio::test]
async fn circuit_breaker_overflows_at_once() {
    let up = HttpUpstream::start("up").await.unwrap();
    up.set_delay(Duration::from_millis(300));
    let mut c = cluster("up", &[up.addr()], LbPolicy::RoundRobin);
    c.circuit_breakers.max_connections = 1;
    c.circuit_breakers.max_pending_requests = 1;
    let log = tempfile::NamedTempFile::new().unwrap();
    let snap = http_snapshot(
        table(
            "routes",
            vec![vhost(
                "svc",
                vec![DomainPattern::Any],
                vec![to_cluster("r", prefix("/"), "up")],
            )],
        ),
        vec![c],
        vec![file_log(log.path())],
    );
    let proxy = start(snap).await;
    let addr = proxy.listener(LISTENER).unwrap();
    let results = futures::future::join_all((0..20).map(|_| send(addr, get("svc", "/cb")))).await;
    let mut ok = 0;
    let mut overflow = 0;
    for r in results {
        let r = r.unwrap();
        match r.status.as_u16() {
            200 => ok += 1,
            503 => {
                overflow += 1;
                let reason = r.header("x-mesh-reason").unwrap_or_default();
                assert!(reason.contains("overflow"), "{reason}");
                // Like Envoy, overflow replies say so to the client too.
                assert_eq!(r.header("x-envoy-overloaded"), Some("true"));
            }
            s => panic!("unexpected status {s}: {}", r.text()),
        }
    }
    assert!(ok >= 1 && overflow >= 1, "ok {ok}, overflow {overflow}");
    assert_eq!(ok + overflow, 20);
    assert!(up.connections_max_concurrent() <= 1);
    assert!(up.connections_total() <= 1, "{}", up.connections_total());
    let stats = proxy.proxy.stats();
    assert!(
        stats
            .value("cluster.up.upstream_rq_pending_overflow")
            .unwrap_or(0)
            >= overflow as i64
    );
    assert!(stats.value("cluster.up.upstream_cx_overflow").unwrap_or(0) >= 1);
    let text = wait_until(Duration::from_secs(10), async || {
        let t = std::fs::read_to_string(log.path()).unwrap_or_default();
        if t.lines().count() >= 20 {
            Ok(t)
        } else {
            Err("waiting for log")
        }
    })
    .await
    .unwrap();
    assert_eq!(text.matches(" 503 UO ").count(), overflow, "{text}");
    // /stats shows the counters too.
    let admin = proxy.admin_addr.unwrap();
    let page = send(admin, get("admin", "/stats")).await.unwrap().text();
    assert!(
        page.contains("cluster.up.upstream_rq_pending_overflow"),
        "{page}"
    );
}

#[tokio::test]
async fn max_requests_overflows_with_uo() {
    let up = HttpUpstream::start("up").await.unwrap();
    up.set_delay(Duration::from_millis(300));
    let mut c = cluster("up", &[up.addr()], LbPolicy::RoundRobin);
    c.circuit_breakers.max_requests = 2;
    let snap = http_snapshot(
        table(
            "routes",
            vec![vhost(
                "svc",
                vec![DomainPattern::Any],
                vec![to_cluster("r", prefix("/"), "up")],
            )],
        ),
        vec![c],
        vec![],
    );
    let proxy = start(snap).await;
    let addr = proxy.listener(LISTENER).unwrap();
    let results = futures::future::join_all((0..8).map(|_| send(addr, get("svc", "/")))).await;
    let statuses: Vec<u16> = results
        .into_iter()
        .map(|r| r.unwrap().status.as_u16())
        .collect();
    assert!(
        statuses.contains(&503) && statuses.contains(&200),
        "{statuses:?}"
    );
    assert!(up.request_count() <= 6);
}

#[tokio::test]
async fn outlier_detection_ejects_and_returns_a_host() {
    let a = HttpUpstream::start("a").await.unwrap();
    let b = HttpUpstream::start("b").await.unwrap();
    let bad = HttpUpstream::start("bad").await.unwrap();
    bad.fail_always(StatusCode::SERVICE_UNAVAILABLE);
    let mut c = cluster(
        "svc",
        &[a.addr(), b.addr(), bad.addr()],
        LbPolicy::RoundRobin,
    );
    c.outlier_detection = Some(OutlierDetection {
        consecutive_5xx: 5,
        consecutive_gateway_failure: 5,
        consecutive_local_origin_failure: 5,
        split_external_local_origin_failure: false,
        interval: Duration::from_millis(100),
        base_ejection_time: Duration::from_millis(700),
        max_ejection_time: Duration::from_secs(300),
        max_ejection_percent: 10,
        enforcing_consecutive_5xx: 100,
        enforcing_consecutive_gateway_failure: 0,
        enforcing_consecutive_local_origin_failure: 100,
        ..OutlierDetection::default()
    });
    let snap = http_snapshot(
        table(
            "routes",
            vec![vhost(
                "svc",
                vec![DomainPattern::Any],
                vec![to_cluster("r", prefix("/"), "svc")],
            )],
        ),
        vec![c],
        vec![],
    );
    let proxy = start(snap).await;
    let addr = proxy.listener(LISTENER).unwrap();
    let admin = proxy.admin_addr.unwrap();
    // Round robin: the bad host sees every third request.
    let mut sent = 0;
    while bad.request_count() < 5 {
        send(addr, get("svc", "/")).await.unwrap();
        sent += 1;
        assert!(sent < 100, "bad host never reached 5 requests");
    }
    let clusters = send(admin, get("admin", "/clusters")).await.unwrap().text();
    let flag = format!("svc::{}::health_flags::/failed_outlier_check", bad.addr());
    assert!(clusters.contains(&flag), "{clusters}");
    assert_eq!(
        proxy
            .proxy
            .stats()
            .value("cluster.svc.outlier_detection.ejections_enforced_consecutive_5xx"),
        Some(1)
    );
    // Traffic moves to the others while it is ejected.
    for _ in 0..6 {
        let r = send(addr, get("svc", "/")).await.unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(bad.request_count(), 5);
    // It comes back after the ejection time.
    bad.respond_ok();
    wait_until(Duration::from_secs(10), async || {
        let _ = send(addr, get("svc", "/")).await;
        bad.request_count() > 5
    })
    .await
    .unwrap();
    let clusters = send(admin, get("admin", "/clusters")).await.unwrap().text();
    assert!(!clusters.contains("failed_outlier_check"), "{clusters}");
}

#[tokio::test]
async fn per_host_max_connections_queues_on_one_connection() {
    let up = HttpUpstream::start("up").await.unwrap();
    up.set_delay(Duration::from_millis(100));
    let mut c = cluster("up", &[up.addr()], LbPolicy::RoundRobin);
    c.circuit_breakers.per_host_max_connections = Some(1);
    let snap = http_snapshot(
        table(
            "routes",
            vec![vhost(
                "svc",
                vec![DomainPattern::Any],
                vec![to_cluster("r", prefix("/"), "up")],
            )],
        ),
        vec![c],
        vec![],
    );
    let proxy = start(snap).await;
    let addr = proxy.listener(LISTENER).unwrap();
    let results = futures::future::join_all((0..5).map(|_| send(addr, get("svc", "/")))).await;
    for r in results {
        assert_eq!(r.unwrap().status, 200);
    }
    assert_eq!(up.request_count(), 5);
    assert_eq!(up.connections_max_concurrent(), 1);
}

/// Lowering the limits on a cluster that already holds idle keep-alive
/// connections (from before the change) must not strand requests: each
/// call succeeds or overflows at once, as with Envoy.
#[tokio::test]
async fn lowered_limits_with_warm_connections_never_hang() {
    let a = HttpUpstream::start("a").await.unwrap();
    let b = HttpUpstream::start("b").await.unwrap();
    a.set_delay(Duration::from_millis(200));
    b.set_delay(Duration::from_millis(200));
    let snapshot = |limited: bool| {
        let mut c = cluster("up", &[a.addr(), b.addr()], LbPolicy::RoundRobin);
        if limited {
            c.circuit_breakers.max_connections = 1;
            c.circuit_breakers.max_pending_requests = 1;
            c.max_requests_per_connection = Some(1);
        }
        http_snapshot(
            table(
                "routes",
                vec![vhost(
                    "svc",
                    vec![DomainPattern::Any],
                    vec![to_cluster("r", prefix("/"), "up")],
                )],
            ),
            vec![c],
            vec![],
        )
    };
    let proxy = start(snapshot(false)).await;
    let addr = proxy.listener(LISTENER).unwrap();
    // Keep-alive downstream connections, as an app's client keeps them:
    // they hold the configuration they started with.
    let client = mesh_test_util::HttpClient::http1();
    let url = format!("http://{addr}/");
    let warm = futures::future::join_all((0..12).map(|_| client.get(&url))).await;
    for r in warm {
        assert_eq!(r.unwrap().status, 200);
    }
    assert!(a.connections_current() + b.connections_current() > 2);
    proxy.proxy.update(snapshot(true)).await.unwrap();
    for round in 0..3 {
        let calls =
            (0..12).map(|_| tokio::time::timeout(Duration::from_secs(10), client.get(&url)));
        for r in futures::future::join_all(calls).await {
            let r = r
                .unwrap_or_else(|_| panic!("round {round}: a call hung"))
                .unwrap();
            match r.status.as_u16() {
                200 => {}
                503 => assert_eq!(r.header("x-envoy-overloaded"), Some("true")),
                s => panic!("round {round}: unexpected status {s}: {}", r.text()),
            }
        }
    }
}
