//! Fault injection (abort share, delay, per-route overrides only where the
//! fault filter is installed) and request mirroring (fractions, `-shadow`
//! hosts, fire and forget).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use mesh_proxy::model::*;
use mesh_test_util::{HttpClient, HttpUpstream, send, wait_until};

fn abort(status: u16, numerator: u32, denominator: u32) -> FaultConfig {
    FaultConfig {
        abort: Some(FaultAbort {
            kind: FaultAbortKind::Http(status),
            percentage: Fraction {
                numerator,
                denominator,
            },
        }),
        ..Default::default()
    }
}

/// Listener `http` has the fault filter (abort 100% with 503); listener
/// `plain` shares the routes but has no fault filter.
fn fault_snapshot(
    routes: Vec<Route>,
    clusters: Vec<ClusterConfig>,
    log: &std::path::Path,
) -> Snapshot {
    let t = table(
        "routes",
        vec![vhost("svc", vec![DomainPattern::Any], routes)],
    );
    let mut s = Snapshot::default();
    let mut with = hcm(RouteSource::Rds("routes".into()), vec![file_log(log)]);
    with.http_filters = vec![HttpFilter::Fault(Arc::new(abort(503, 100, 100)))];
    let without = hcm(RouteSource::Rds("routes".into()), vec![]);
    s.listeners.insert(
        LISTENER.into(),
        Arc::new(listener(LISTENER, NetworkFilter::Http(Arc::new(with)))),
    );
    s.listeners.insert(
        "plain".into(),
        Arc::new(listener("plain", NetworkFilter::Http(Arc::new(without)))),
    );
    s.routes.insert("routes".into(), Arc::new(t));
    for c in clusters {
        s.clusters.insert(c.name.clone(), Arc::new(c));
    }
    s
}

#[tokio::test]
async fn abort_share_delay_and_overrides() {
    let up = HttpUpstream::start("up").await.unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut half = to_cluster("half", prefix("/half"), "up");
    half.fault = Some(abort(418, 5_000, 10_000));
    let mut slow = to_cluster("slow", prefix("/slow"), "up");
    slow.fault = Some(FaultConfig {
        delay: Some(FaultDelay {
            kind: FaultDelayKind::Fixed(Duration::from_millis(300)),
            percentage: Fraction::ALWAYS,
        }),
        ..Default::default()
    });
    let listener_default = to_cluster("rest", prefix("/"), "up");
    let snap = fault_snapshot(
        vec![half, slow, listener_default],
        vec![cluster("up", &[up.addr()], LbPolicy::RoundRobin)],
        log.path(),
    );
    let proxy = start(snap).await;
    let addr = proxy.listener(LISTENER).unwrap();
    let plain = proxy.listener("plain").unwrap();

    // 50% abort with 418 over 2,000 requests.
    let client = HttpClient::http1();
    const N: usize = 2000;
    let mut aborted = 0;
    let mut passed = 0;
    for chunk in 0..(N / 50) {
        let batch = futures::future::join_all((0..50).map(|i| {
            let c = &client;
            async move { c.get(&format!("http://{addr}/half/{chunk}-{i}")).await }
        }))
        .await;
        for r in batch {
            let r = r.unwrap();
            match r.status.as_u16() {
                418 => {
                    aborted += 1;
                    assert!(
                        r.header("x-mesh-reason")
                            .is_some_and(|h| h.contains("fault filter abort")),
                        "{:?}",
                        r.headers
                    );
                }
                200 => {
                    passed += 1;
                    assert!(r.header("x-mesh-reason").is_none());
                }
                s => panic!("unexpected status {s}"),
            }
        }
    }
    assert!((800..=1200).contains(&aborted), "aborted {aborted} of {N}");
    // No upstream request for an aborted one.
    assert_eq!(up.request_count(), passed);
    let stats = proxy.proxy.stats();
    assert_eq!(
        stats.value("http.ingress_http.fault.aborts_injected"),
        Some(aborted as i64)
    );

    // The listener's own config (abort 100% 503) applies without override.
    let r = send(addr, get("svc", "/other")).await.unwrap();
    assert_eq!(r.status, 503);
    assert!(r.header("x-mesh-reason").is_some());
    let line = wait_until(Duration::from_secs(10), async || {
        let t = std::fs::read_to_string(log.path()).unwrap_or_default();
        t.lines()
            .find(|l| l.contains("/other"))
            .map(str::to_string)
            .ok_or("no line")
    })
    .await
    .unwrap();
    assert!(line.contains(" 503 FI "), "{line}");

    // Delay 100% of 300 ms.
    let before = up.request_count();
    let t0 = Instant::now();
    let r = send(addr, get("svc", "/slow")).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_eq!(up.request_count(), before + 1);
    let line = wait_until(Duration::from_secs(10), async || {
        let t = std::fs::read_to_string(log.path()).unwrap_or_default();
        t.lines()
            .find(|l| l.contains("/slow"))
            .map(str::to_string)
            .ok_or("no line")
    })
    .await
    .unwrap();
    assert!(line.contains(" 200 DI "), "{line}");

    // Without the fault filter, route overrides do nothing.
    for path in ["/half/x", "/slow", "/other"] {
        let r = send(plain, get("svc", path)).await.unwrap();
        assert_eq!(r.status, 200, "{path}");
    }
}

fn mirrored(path: &str, shadow: &str, fraction: Option<Fraction>) -> Route {
    let mut a = forward_action(Destination::Cluster("primary".into()));
    a.mirrors = vec![MirrorPolicy {
        cluster: shadow.into(),
        fraction,
    }];
    route(path, prefix(path), RouteAction::Forward(Box::new(a)))
}

#[tokio::test]
async fn mirrors_copy_requests_fire_and_forget() {
    let primary = HttpUpstream::start("primary").await.unwrap();
    let shadow = HttpUpstream::start("shadow").await.unwrap();
    let quarter = HttpUpstream::start("quarter").await.unwrap();
    let stuck = HttpUpstream::start("stuck").await.unwrap();
    stuck.hang();
    let snap = http_snapshot(
        table(
            "routes",
            vec![vhost(
                "svc",
                vec![DomainPattern::Any],
                vec![
                    mirrored("/all", "shadow", None),
                    mirrored(
                        "/quarter",
                        "quarter",
                        Some(Fraction {
                            numerator: 25,
                            denominator: 100,
                        }),
                    ),
                    mirrored("/stuck", "stuck", None),
                ],
            )],
        ),
        vec![
            cluster("primary", &[primary.addr()], LbPolicy::RoundRobin),
            cluster("shadow", &[shadow.addr()], LbPolicy::RoundRobin),
            cluster("quarter", &[quarter.addr()], LbPolicy::RoundRobin),
            cluster("stuck", &[stuck.addr()], LbPolicy::RoundRobin),
        ],
        vec![],
    );
    let proxy = start(snap).await;
    let addr = proxy.listener(LISTENER).unwrap();
    let client = HttpClient::http1();

    for i in 0..20 {
        let req = http::Request::post(format!("http://{addr}/all/{i}"))
            .header("host", "reviews:9080")
            .body(format!("payload-{i}"))
            .unwrap();
        let r = client.request(req).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "primary");
    }
    wait_until(Duration::from_secs(10), async || {
        shadow.request_count() == 20
    })
    .await
    .unwrap();
    for q in shadow.requests() {
        assert_eq!(q.host().as_deref(), Some("reviews-shadow:9080"));
        assert!(q.body.starts_with(b"payload-"));
    }
    assert!(
        primary
            .requests()
            .iter()
            .all(|q| q.host().as_deref() == Some("reviews:9080"))
    );

    // 25%: 400 requests, a wide tolerance around 100.
    for chunk in 0..8 {
        let batch = futures::future::join_all((0..50).map(|i| {
            let c = &client;
            async move { c.get(&format!("http://{addr}/quarter/{chunk}-{i}")).await }
        }))
        .await;
        for r in batch {
            assert_eq!(r.unwrap().status, 200);
        }
    }
    // Wait for copies in flight, then judge the share.
    let mut last = usize::MAX;
    wait_until(Duration::from_secs(10), async || {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = quarter.request_count();
        let settled = now == last;
        last = now;
        settled
    })
    .await
    .unwrap();
    let copies = quarter.request_count();
    assert!(
        (50..=150).contains(&copies),
        "quarter mirror saw {copies} of 400"
    );

    // A mirror that never answers does not hold the client.
    for i in 0..5 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            client.get(&format!("http://{addr}/stuck/{i}")),
        )
        .await
        .expect("client not held by the hanging mirror")
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "primary");
    }
    wait_until(Duration::from_secs(10), async || stuck.request_count() == 5)
        .await
        .unwrap();
    std::mem::forget(stuck);
}
