//! Outlier detection's interval sweeps: an ejected host returns to service
//! at an `interval` tick with no traffic needed, a host ejected again soon
//! after is ejected for longer (the multiplier), and failure-percentage
//! ejection removes a host failing most of its requests.

use std::time::Duration;

use crate::common::*;
use http::StatusCode;
use mesh_proxy::model::*;
use mesh_test_util::{HttpUpstream, send, wait_until};
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(20);

fn routes() -> RouteTable {
    table(
        "routes",
        vec![vhost(
            "svc",
            vec![DomainPattern::Any],
            vec![to_cluster("r", prefix("/"), "svc")],
        )],
    )
}

fn stat(proxy: &mesh_proxy::Bound, name: &str) -> i64 {
    proxy.proxy.stats().value(name).unwrap_or(0)
}

/// Polls closely (the multiplier decays one `interval` after a return to
/// service, so the test must act well within one).
async fn poll_until(mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn ejection_is_lifted_at_the_interval_and_grows_when_repeated() {
    let good = HttpUpstream::start("good").await.unwrap();
    let bad = HttpUpstream::start("bad").await.unwrap();
    bad.fail_always(StatusCode::SERVICE_UNAVAILABLE);
    let mut c = cluster("svc", &[good.addr(), bad.addr()], LbPolicy::RoundRobin);
    let base = Duration::from_millis(1000);
    c.outlier_detection = Some(OutlierDetection {
        consecutive_5xx: 1,
        interval: Duration::from_millis(300),
        base_ejection_time: base,
        max_ejection_time: Duration::from_secs(60),
        max_ejection_percent: 50,
        ..OutlierDetection::default()
    });
    let proxy = start(http_snapshot(routes(), vec![c], vec![])).await;
    let addr = proxy.listener(LISTENER).unwrap();
    let active = "cluster.svc.outlier_detection.ejections_active";
    let total = "cluster.svc.outlier_detection.ejections_enforced_total";

    // First ejection.
    while stat(&proxy, total) < 1 {
        send(addr, get("svc", "/")).await.unwrap();
    }
    let first = Instant::now();
    assert_eq!(stat(&proxy, active), 1);
    let admin = proxy.admin_addr.unwrap();
    let page = send(admin, get("admin", "/clusters")).await.unwrap().text();
    assert!(page.contains("failed_outlier_check"), "{page}");

    // Returned to service by the interval timer, with no request to
    // notice it.
    poll_until(|| stat(&proxy, active) == 0).await;
    assert!(
        first.elapsed() >= base,
        "lifted after {:?}",
        first.elapsed()
    );
    let page = send(admin, get("admin", "/clusters")).await.unwrap().text();
    assert!(!page.contains("failed_outlier_check"), "{page}");

    // Failing again at once: ejected for base x 2.
    while stat(&proxy, total) < 2 {
        send(addr, get("svc", "/")).await.unwrap();
    }
    let second = Instant::now();
    poll_until(|| stat(&proxy, active) == 0).await;
    assert!(
        second.elapsed() >= base * 2,
        "second ejection lasted {:?}",
        second.elapsed()
    );
    assert_eq!(
        stat(
            &proxy,
            "cluster.svc.outlier_detection.ejections_enforced_consecutive_5xx"
        ),
        2
    );
}

#[tokio::test]
async fn failure_percentage_ejects_the_failing_host() {
    let a = HttpUpstream::start("a").await.unwrap();
    let b = HttpUpstream::start("b").await.unwrap();
    let bad = HttpUpstream::start("bad").await.unwrap();
    bad.fail_always(StatusCode::INTERNAL_SERVER_ERROR);
    let mut c = cluster(
        "svc",
        &[a.addr(), b.addr(), bad.addr()],
        LbPolicy::RoundRobin,
    );
    c.outlier_detection = Some(OutlierDetection {
        // Only the failure-percentage detector may eject.
        consecutive_5xx: 0,
        consecutive_gateway_failure: 0,
        interval: Duration::from_millis(300),
        base_ejection_time: Duration::from_secs(30),
        max_ejection_percent: 50,
        failure_percentage_threshold: 80,
        failure_percentage_minimum_hosts: 3,
        failure_percentage_request_volume: 5,
        enforcing_failure_percentage: 100,
        ..OutlierDetection::default()
    });
    let proxy = start(http_snapshot(routes(), vec![c], vec![])).await;
    let addr = proxy.listener(LISTENER).unwrap();
    let enforced = "cluster.svc.outlier_detection.ejections_enforced_failure_percentage";
    wait_until(DEADLINE, async || {
        for _ in 0..30 {
            send(addr, get("svc", "/")).await.unwrap();
        }
        stat(&proxy, enforced) >= 1
    })
    .await
    .unwrap();
    assert_eq!(stat(&proxy, enforced), 1);
    assert!(
        stat(
            &proxy,
            "cluster.svc.outlier_detection.ejections_detected_failure_percentage"
        ) >= 1
    );
    assert_eq!(
        stat(&proxy, "cluster.svc.outlier_detection.ejections_active"),
        1
    );
    // Traffic stays on the healthy hosts.
    let before = bad.request_count();
    for _ in 0..20 {
        let r = send(addr, get("svc", "/")).await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    assert_eq!(bad.request_count(), before);
}

#[tokio::test]
async fn success_rate_ejects_the_host_far_below_the_others() {
    let mut ups = Vec::new();
    for i in 0..5 {
        ups.push(HttpUpstream::start(format!("h{i}")).await.unwrap());
    }
    ups[4].fail_always(StatusCode::SERVICE_UNAVAILABLE);
    let addrs: Vec<_> = ups.iter().map(|u| u.addr()).collect();
    let mut c = cluster("svc", &addrs, LbPolicy::RoundRobin);
    c.outlier_detection = Some(OutlierDetection {
        // Only the success-rate detector may eject.
        consecutive_5xx: 0,
        consecutive_gateway_failure: 0,
        interval: Duration::from_millis(500),
        base_ejection_time: Duration::from_secs(30),
        max_ejection_percent: 20,
        success_rate_minimum_hosts: 5,
        success_rate_request_volume: 5,
        // Rates 100, 100, 100, 100, 0: mean 80, stdev 40; one stdev below
        // the mean is 40.
        success_rate_stdev_factor: 1000,
        ..OutlierDetection::default()
    });
    let proxy = start(http_snapshot(routes(), vec![c], vec![])).await;
    let addr = proxy.listener(LISTENER).unwrap();
    let enforced = "cluster.svc.outlier_detection.ejections_enforced_success_rate";
    wait_until(DEADLINE, async || {
        for _ in 0..50 {
            send(addr, get("svc", "/")).await.unwrap();
        }
        stat(&proxy, enforced) >= 1
    })
    .await
    .unwrap();
    assert_eq!(stat(&proxy, enforced), 1);
    let before = ups[4].request_count();
    for _ in 0..20 {
        let r = send(addr, get("svc", "/")).await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    assert_eq!(ups[4].request_count(), before);
}
