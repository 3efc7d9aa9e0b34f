//! Retries: conditions, replayed bodies, exhaustion (`URX`), the retry
//! budget, and the per-try timeout moving on to a healthy host.

use std::time::Duration;

use crate::common::*;
use http::StatusCode;
use mesh_proxy::model::*;
use mesh_test_util::{HttpUpstream, send, wait_until};

fn policy(num_retries: u32) -> RetryPolicy {
    RetryPolicy {
        retriable_headers: vec![],
        retry_on: RetryOn {
            server_error_5xx: true,
            ..Default::default()
        },
        num_retries,
        per_try_timeout: None,
        per_try_idle_timeout: None,
        retriable_status_codes: vec![],
        avoid_previous_hosts: false,
        host_selection_retry_max_attempts: 1,
        base_interval: Duration::from_millis(25),
        max_interval: Duration::from_millis(250),
    }
}

fn retrying_route(name: &str, path: &str, cluster: &str, p: RetryPolicy) -> Route {
    let mut a = forward_action(Destination::Cluster(cluster.into()));
    a.retry_policy = Some(p);
    route(name, prefix(path), RouteAction::Forward(Box::new(a)))
}

fn one_vhost(routes: Vec<Route>) -> RouteTable {
    table(
        "routes",
        vec![vhost(
            "svc",
            vec![DomainPattern::Exact("svc".into())],
            routes,
        )],
    )
}

async fn log_line(log: &tempfile::NamedTempFile, needle: &str) -> String {
    wait_until(Duration::from_secs(10), async || {
        let text = std::fs::read_to_string(log.path()).unwrap_or_default();
        text.lines()
            .rev()
            .find(|l| l.contains(needle))
            .map(str::to_string)
            .ok_or("no log line yet")
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn retries_turn_failures_into_success_and_urx_when_exhausted() {
    let up = HttpUpstream::start("up").await.unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut connect = policy(3);
    connect.retry_on = RetryOn {
        connect_failure: true,
        ..Default::default()
    };
    let t = table(
        "routes",
        vec![
            vhost(
                "svc",
                vec![DomainPattern::Exact("svc".into())],
                vec![retrying_route("r", "/", "up", policy(3))],
            ),
            vhost(
                "refused",
                vec![DomainPattern::Exact("refused".into())],
                vec![retrying_route("c", "/", "refused", connect)],
            ),
        ],
    );
    let snap = http_snapshot(
        t,
        vec![
            cluster("up", &[up.addr()], LbPolicy::RoundRobin),
            cluster("refused", &[closed], LbPolicy::RoundRobin),
        ],
        vec![file_log(log.path())],
    );
    let proxy = start(snap).await;
    let addr = proxy.listener(LISTENER).unwrap();

    // Two failures, then success: the client sees 200 after 3 attempts.
    up.fail_next(2, StatusCode::SERVICE_UNAVAILABLE);
    let r = send(addr, get("svc", "/first")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.request_count(), 3);
    assert!(r.header("x-mesh-reason").is_none());
    let stats = proxy.proxy.stats();
    assert_eq!(stats.value("cluster.up.upstream_rq_retry"), Some(2));
    assert_eq!(stats.value("cluster.up.upstream_rq_retry_success"), Some(1));

    // Always failing: 1 + 3 attempts, the upstream's 500 passes through
    // (no x-mesh-reason), flagged URX.
    up.clear();
    up.fail_always(StatusCode::INTERNAL_SERVER_ERROR);
    let r = send(addr, get("svc", "/always")).await.unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(up.request_count(), 4);
    assert!(r.header("x-mesh-reason").is_none(), "upstream response");
    let line = log_line(&log, "/always").await;
    assert!(line.contains(" 500 URX "), "{line}");

    // Connect failures exhausted: a local 503 UF,URX saying so.
    let r = send(addr, get("refused", "/cf")).await.unwrap();
    assert_eq!(r.status, 503);
    let reason = r.header("x-mesh-reason").unwrap_or_default().to_string();
    assert!(
        reason.contains("upstream connect error") && reason.contains("3 retries exhausted"),
        "{reason}"
    );
    let line = log_line(&log, "/cf").await;
    assert!(line.contains(" 503 UF,URX "), "{line}");
}

#[tokio::test]
async fn post_body_is_replayed_intact() {
    let up = HttpUpstream::start("up").await.unwrap();
    let snap = http_snapshot(
        one_vhost(vec![retrying_route("r", "/", "up", policy(2))]),
        vec![cluster("up", &[up.addr()], LbPolicy::RoundRobin)],
        vec![],
    );
    let proxy = start(snap).await;
    let addr = proxy.listener(LISTENER).unwrap();
    up.fail_next(1, StatusCode::SERVICE_UNAVAILABLE);
    let body = "x".repeat(10_000) + "end-of-body";
    let req = http::Request::post("/upload")
        .header("host", "svc")
        .body(body.clone())
        .unwrap();
    let r = send(addr, req).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let reqs = up.requests();
    assert_eq!(reqs.len(), 2);
    for q in reqs {
        assert_eq!(q.method, http::Method::POST);
        assert_eq!(q.body, body.as_bytes(), "body replayed intact");
    }

    // Over the cluster's buffer limit: streamed once, not retried.
    let mut small = cluster("up", &[up.addr()], LbPolicy::RoundRobin);
    small.buffer_limit_bytes = 100;
    let snap = http_snapshot(
        one_vhost(vec![retrying_route("r", "/", "up", policy(2))]),
        vec![small],
        vec![],
    );
    proxy.proxy.update(snap).await.unwrap();
    up.clear();
    up.fail_next(1, StatusCode::SERVICE_UNAVAILABLE);
    let req = http::Request::post("/big")
        .header("host", "svc")
        .body(body.clone())
        .unwrap();
    let r = send(addr, req).await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(up.request_count(), 1);
    assert_eq!(up.requests()[0].body, body.as_bytes());
}

#[tokio::test]
async fn retry_budget_caps_retries_under_a_failing_upstream() {
    let up = HttpUpstream::start("up").await.unwrap();
    up.fail_always(StatusCode::SERVICE_UNAVAILABLE);
    up.set_delay(Duration::from_millis(200));
    let mut c = cluster("up", &[up.addr()], LbPolicy::RoundRobin);
    c.circuit_breakers.retry_budget = Some(RetryBudget {
        budget_percent: 0.0,
        min_retry_concurrency: 1,
    });
    let snap = http_snapshot(
        one_vhost(vec![retrying_route("r", "/", "up", policy(3))]),
        vec![c],
        vec![],
    );
    let proxy = start(snap).await;
    let addr = proxy.listener(LISTENER).unwrap();
    const N: usize = 10;
    let results = futures::future::join_all(
        (0..N).map(|i| send(addr, get("svc", if i % 2 == 0 { "/a" } else { "/b" }))),
    )
    .await;
    for r in results {
        assert_eq!(r.unwrap().status, 503);
    }
    // Without a budget this would be N × 4 = 40 requests.
    let received = up.request_count();
    assert!(
        (N..=N + 8).contains(&received),
        "upstream received {received} requests"
    );
    let overflow = proxy
        .proxy
        .stats()
        .value("cluster.up.upstream_rq_retry_overflow")
        .unwrap_or(0);
    assert!(overflow >= 1, "retry overflow {overflow}");
}

#[tokio::test]
async fn per_try_timeout_moves_on_to_a_healthy_host() {
    let good = HttpUpstream::start("good").await.unwrap();
    let stuck = HttpUpstream::start("stuck").await.unwrap();
    stuck.hang();
    let mut p = policy(2);
    p.per_try_timeout = Some(Duration::from_millis(200));
    p.avoid_previous_hosts = true;
    p.host_selection_retry_max_attempts = 3;
    let snap = http_snapshot(
        one_vhost(vec![retrying_route("r", "/", "both", p)]),
        vec![cluster(
            "both",
            &[stuck.addr(), good.addr()],
            LbPolicy::Random,
        )],
        vec![],
    );
    let proxy = start(snap).await;
    let addr = proxy.listener(LISTENER).unwrap();
    for _ in 0..6 {
        let r = send(addr, get("svc", "/")).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "good");
    }
    assert_eq!(good.request_count(), 6);
    // The per-try timeout without retries left is a 504 UT.
    good.hang();
    let r = send(addr, get("svc", "/")).await.unwrap();
    assert_eq!(r.status, 504);
    let reason = r.header("x-mesh-reason").unwrap_or_default().to_string();
    assert!(reason.contains("per-try timeout"), "{reason}");
    std::mem::forget(stuck);
    std::mem::forget(good);
}
