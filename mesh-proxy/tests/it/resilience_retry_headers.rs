//! Retries and the request's `x-envoy-retry-on` / `x-envoy-max-retries`
//! (dropped from external requests, as Envoy does), `retriable_headers`,
//! and `per_try_idle_timeout`.

use std::time::Duration;

use crate::common::*;
use http::StatusCode;
use mesh_proxy::model::*;
use mesh_test_util::{HttpUpstream, send};

fn routes(action: ForwardAction) -> RouteTable {
    table(
        "routes",
        vec![vhost(
            "svc",
            vec![DomainPattern::Any],
            vec![route(
                "r",
                prefix("/"),
                RouteAction::Forward(Box::new(action)),
            )],
        )],
    )
}

fn stat(proxy: &mesh_proxy::Bound, name: &str) -> i64 {
    proxy.proxy.stats().value(name).unwrap_or(0)
}

fn base_policy(on: RetryOn, num_retries: u32) -> RetryPolicy {
    RetryPolicy {
        retry_on: on,
        num_retries,
        per_try_timeout: None,
        per_try_idle_timeout: None,
        retriable_status_codes: vec![],
        retriable_headers: vec![],
        avoid_previous_hosts: false,
        host_selection_retry_max_attempts: 1,
        base_interval: Duration::from_millis(5),
        max_interval: Duration::from_millis(20),
    }
}

/// The connection manager has no `internal_address_config` (the model
/// does not carry one yet), so, as in Envoy 1.40, no request is internal:
/// the `x-envoy-retry-*` headers are removed and change nothing. How they
/// merge on internal requests is covered by `http::retry`'s unit tests.
#[tokio::test]
async fn retry_headers_of_external_requests_are_dropped() {
    let up = HttpUpstream::start("up").await.unwrap();
    let c = cluster("up", &[up.addr()], LbPolicy::RoundRobin);
    let action = forward_action(Destination::Cluster("up".into()));
    let proxy = start(http_snapshot(routes(action), vec![c], vec![])).await;
    let addr = proxy.listener(LISTENER).unwrap();

    up.fail_next(2, StatusCode::SERVICE_UNAVAILABLE);
    let mut req = get("svc", "/retry");
    req.headers_mut()
        .insert("x-envoy-retry-on", "5xx".parse().unwrap());
    req.headers_mut()
        .insert("x-envoy-max-retries", "3".parse().unwrap());
    let r = send(addr, req).await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(up.request_count(), 1);
    let seen = up.last_request().unwrap();
    assert_eq!(seen.header("x-envoy-retry-on"), None);
    assert_eq!(seen.header("x-envoy-max-retries"), None);
    assert_eq!(stat(&proxy, "cluster.up.upstream_rq_retry"), 0);
}

#[tokio::test]
async fn max_retries_header_of_an_external_request_leaves_the_route_policy() {
    let up = HttpUpstream::start("up").await.unwrap();
    up.fail_always(StatusCode::BAD_GATEWAY);
    let c = cluster("up", &[up.addr()], LbPolicy::RoundRobin);
    let mut action = forward_action(Destination::Cluster("up".into()));
    action.retry_policy = Some(base_policy(
        RetryOn {
            gateway_error: true,
            ..Default::default()
        },
        1,
    ));
    let proxy = start(http_snapshot(routes(action), vec![c], vec![])).await;
    let addr = proxy.listener(LISTENER).unwrap();
    let mut req = get("svc", "/");
    req.headers_mut()
        .insert("x-envoy-max-retries", "3".parse().unwrap());
    let r = send(addr, req).await.unwrap();
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(up.request_count(), 2);
}

#[tokio::test]
async fn retriable_headers_retry_matching_responses() {
    let up = HttpUpstream::start("up").await.unwrap();
    let c = cluster("up", &[up.addr()], LbPolicy::RoundRobin);
    let mut action = forward_action(Destination::Cluster("up".into()));
    let mut p = base_policy(
        RetryOn {
            retriable_headers: true,
            ..Default::default()
        },
        2,
    );
    // Every answer of this upstream carries a content-length.
    p.retriable_headers = vec![HeaderMatcher {
        name: "content-length".into(),
        kind: HeaderMatchKind::Present(true),
        invert: false,
        treat_missing_as_empty: false,
    }];
    action.retry_policy = Some(p);
    let proxy = start(http_snapshot(routes(action), vec![c], vec![])).await;
    let addr = proxy.listener(LISTENER).unwrap();
    let r = send(addr, get("svc", "/")).await.unwrap();
    // Retries run out and the last answer passes through.
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(up.request_count(), 3);
    assert_eq!(
        stat(&proxy, "cluster.up.upstream_rq_retry_limit_exceeded"),
        1
    );
}

#[tokio::test]
async fn per_try_idle_timeout_gives_up_on_a_silent_attempt() {
    let up = HttpUpstream::start("up").await.unwrap();
    up.hang();
    let c = cluster("up", &[up.addr()], LbPolicy::RoundRobin);
    let mut action = forward_action(Destination::Cluster("up".into()));
    action.timeout = None;
    let mut p = base_policy(
        RetryOn {
            reset: true,
            ..Default::default()
        },
        2,
    );
    p.per_try_idle_timeout = Some(Duration::from_millis(150));
    action.retry_policy = Some(p);
    let proxy = start(http_snapshot(routes(action), vec![c], vec![])).await;
    let addr = proxy.listener(LISTENER).unwrap();
    let r = send(addr, get("svc", "/")).await.unwrap();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text());
    let reason = r.header("x-mesh-reason").unwrap_or_default().to_string();
    assert!(reason.contains("per-try idle timeout"), "{reason}");
    assert_eq!(up.request_count(), 3);
    assert_eq!(
        stat(&proxy, "cluster.up.upstream_rq_per_try_idle_timeout"),
        3
    );
}
