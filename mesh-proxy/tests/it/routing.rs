//! Routing through a real proxy: by header, path and query; weighted
//! split; redirects and direct responses; rewrites and header handling;
//! absolute-form (http_proxy) requests; HTTP/2 clients.

use std::collections::HashMap;

use crate::common::*;
use mesh_proxy::model::*;
use mesh_test_util::{HttpClient, HttpUpstream, send, send_h2};

#[tokio::test]
async fn routes_by_header_path_and_query() {
    let v1 = HttpUpstream::start("v1").await.unwrap();
    let v2 = HttpUpstream::start("v2").await.unwrap();
    let v3 = HttpUpstream::start("v3").await.unwrap();
    let mut by_header = prefix("/");
    by_header.headers.push(header_exact("end-user", "jason"));
    let mut by_query = prefix("/");
    by_query.query_parameters.push(QueryParameterMatcher {
        name: "canary".into(),
        matcher: Some(string_exact("yes")),
    });
    let t = table(
        "routes",
        vec![vhost(
            "hello",
            vec![DomainPattern::Exact("helloworld".into())],
            vec![
                to_cluster("header", by_header, "v2"),
                to_cluster("query", by_query, "v3"),
                to_cluster("path", matcher(PathMatch::Path("/v3".into())), "v3"),
                to_cluster("default", prefix("/"), "v1"),
            ],
        )],
    );
    let snap = http_snapshot(
        t,
        vec![
            cluster("v1", &[v1.addr()], LbPolicy::RoundRobin),
            cluster("v2", &[v2.addr()], LbPolicy::RoundRobin),
            cluster("v3", &[v3.addr()], LbPolicy::RoundRobin),
        ],
        vec![],
    );
    let proxy = start(snap).await;
    let addr = proxy.listener(LISTENER).unwrap();

    let r = send(
        addr,
        http::Request::get("/istio")
            .header("host", "helloworld")
            .header("end-user", "jason")
            .body("")
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.text(), "v2");
    assert_eq!(
        send(addr, get("helloworld", "/istio?canary=yes"))
            .await
            .unwrap()
            .text(),
        "v3"
    );
    assert_eq!(
        send(addr, get("helloworld", "/istio?canary=no"))
            .await
            .unwrap()
            .text(),
        "v1"
    );
    assert_eq!(
        send(addr, get("helloworld", "/v3")).await.unwrap().text(),
        "v3"
    );
    assert_eq!(
        send(addr, get("helloworld", "/v3/x")).await.unwrap().text(),
        "v1"
    );
    let r = send(addr, get("other", "/istio")).await.unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(
        v1.request_count() + v2.request_count() + v3.request_count(),
        5
    );

    // What the upstream saw: path, host, request id and forwarding headers.
    let seen = v1
        .requests()
        .into_iter()
        .find(|r| r.uri.path() == "/istio")
        .unwrap();
    assert_eq!(seen.host().as_deref(), Some("helloworld"));
    assert_eq!(seen.header("x-request-id").map(str::len), Some(36));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
}

#[tokio::test]
async fn weighted_split_90_10() {
    let v1 = HttpUpstream::start("v1").await.unwrap();
    let v2 = HttpUpstream::start("v2").await.unwrap();
    let wc = |name: &str, weight| WeightedCluster {
        name: name.into(),
        weight,
        headers: HeaderMutations::default(),
        host_rewrite: None,
    };
    let action = forward_action(Destination::Weighted(vec![wc("v1", 90), wc("v2", 10)]));
    let t = table(
        "routes",
        vec![vhost(
            "all",
            vec![DomainPattern::Any],
            vec![route(
                "split",
                prefix("/"),
                RouteAction::Forward(Box::new(action)),
            )],
        )],
    );
    let snap = http_snapshot(
        t,
        vec![
            cluster("v1", &[v1.addr()], LbPolicy::RoundRobin),
            cluster("v2", &[v2.addr()], LbPolicy::RoundRobin),
        ],
        vec![],
    );
    let proxy = start(snap).await;
    let url = format!("http://{}/istio", proxy.listener(LISTENER).unwrap());
    let client = HttpClient::http1();
    let mut counts: HashMap<String, usize> = HashMap::new();
    const N: usize = 2000;
    for _ in 0..N {
        *counts
            .entry(client.get(&url).await.unwrap().text())
            .or_default() += 1;
    }
    let v2_share = counts.get("v2").copied().unwrap_or(0) as f64 / N as f64;
    // Binomial(2000, 0.1): sd ~0.67 percentage points; 4% to 16% is > 8 sd.
    assert!((0.04..=0.16).contains(&v2_share), "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), N);
}

#[tokio::test]
async fn redirect_direct_response_rewrites_and_header_mutations() {
    let up = HttpUpstream::start("up").await.unwrap();
    let mut rewrite = forward_action(Destination::Cluster("up".into()));
    rewrite.prefix_rewrite = Some("/new".into());
    rewrite.host_rewrite = Some("rewritten.example".into());
    let mut rewritten = route(
        "rewrite",
        prefix("/old"),
        RouteAction::Forward(Box::new(rewrite)),
    );
    rewritten.headers.request_add.push(HeaderToAdd {
        name: "x-route".into(),
        value: "r1".into(),
        append: false,
        only_if_absent: false,
    });
    rewritten.headers.request_remove.push("x-drop".into());
    rewritten.headers.response_add.push(HeaderToAdd {
        name: "x-resp".into(),
        value: "yes".into(),
        append: false,
        only_if_absent: false,
    });
    let redirect = route(
        "redirect",
        prefix("/go"),
        RouteAction::Redirect(RedirectAction {
            scheme: Some("https".into()),
            host: Some("secure.example".into()),
            port: None,
            path: None,
            prefix_rewrite: None,
            status: 302,
            strip_query: false,
        }),
    );
    let direct = route(
        "direct",
        prefix("/health"),
        RouteAction::DirectResponse {
            status: 200,
            body: Some("ok".into()),
        },
    );
    let t = table(
        "routes",
        vec![vhost(
            "all",
            vec![DomainPattern::Any],
            vec![rewritten, redirect, direct],
        )],
    );
    let proxy = start(http_snapshot(
        t,
        vec![cluster("up", &[up.addr()], LbPolicy::RoundRobin)],
        vec![],
    ))
    .await;
    let addr = proxy.listener(LISTENER).unwrap();

    let r = send(
        addr,
        http::Request::get("/old/a?b=1")
            .header("host", "h")
            .header("x-drop", "1")
            .body("")
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-resp"), Some("yes"));
    assert!(r.header("x-envoy-upstream-service-time").is_some());
    let seen = up.last_request().unwrap();
    assert_eq!(seen.uri.to_string(), "/new/a?b=1");
    assert_eq!(seen.host().as_deref(), Some("rewritten.example"));
    assert_eq!(seen.header("x-route"), Some("r1"));
    assert_eq!(seen.header("x-drop"), None);

    let r = send(addr, get("h:8080", "/go/x?q=1")).await.unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("https://secure.example/go/x?q=1")
    );
    let r = send(addr, get("h", "/health")).await.unwrap();
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"));
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn absolute_form_requests_work_as_http_proxy() {
    let up = HttpUpstream::start("hello").await.unwrap();
    let t = table(
        "routes",
        vec![vhost(
            "hello",
            vec![DomainPattern::Exact("helloworld".into())],
            vec![to_cluster("r", prefix("/"), "hello")],
        )],
    );
    let proxy = start(http_snapshot(
        t,
        vec![cluster("hello", &[up.addr()], LbPolicy::RoundRobin)],
        vec![],
    ))
    .await;
    let addr = proxy.listener(LISTENER).unwrap();
    let r = send(
        addr,
        http::Request::get("http://helloworld/istio")
            .body("")
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last_request().unwrap();
    // Sent upstream in origin form with the Host of the absolute URI.
    assert_eq!(seen.uri.to_string(), "/istio");
    assert_eq!(seen.host().as_deref(), Some("helloworld"));
}

#[tokio::test]
async fn http2_clients_and_upstreams() {
    let up = HttpUpstream::start("h2up").await.unwrap();
    let mut h2_cluster = cluster("h2", &[up.addr()], LbPolicy::RoundRobin);
    h2_cluster.protocol = UpstreamProtocol::Http2;
    let t = table(
        "routes",
        vec![vhost(
            "all",
            vec![DomainPattern::Any],
            vec![
                to_cluster("h2", prefix("/h2"), "h2"),
                to_cluster("h1", prefix("/"), "h1"),
            ],
        )],
    );
    let proxy = start(http_snapshot(
        t,
        vec![
            h2_cluster,
            cluster("h1", &[up.addr()], LbPolicy::RoundRobin),
        ],
        vec![],
    ))
    .await;
    let addr = proxy.listener(LISTENER).unwrap();

    // h2 downstream, h1 upstream.
    let r = send_h2(addr, get("helloworld", "/istio")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.version, http::Version::HTTP_2);
    let seen = up.last_request().unwrap();
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(seen.host().as_deref(), Some("helloworld"));

    // h1 downstream, h2 upstream, many requests over one multiplexed connection.
    let client = HttpClient::http2();
    for _ in 0..5 {
        let r = client.get(&format!("http://{addr}/h2/x")).await.unwrap();
        assert_eq!(r.status, 200);
    }
    let h2_requests: Vec<_> = up
        .requests()
        .into_iter()
        .filter(|r| r.uri.path() == "/h2/x")
        .collect();
    assert_eq!(h2_requests.len(), 5);
    assert!(
        h2_requests
            .iter()
            .all(|r| r.version == http::Version::HTTP_2)
    );
    let conns: std::collections::HashSet<u64> = h2_requests.iter().map(|r| r.connection).collect();
    assert_eq!(
        conns.len(),
        1,
        "h2 upstream requests should share one connection"
    );
}

#[tokio::test]
async fn http1_upstream_connections_are_kept_alive() {
    let up = HttpUpstream::start("ka").await.unwrap();
    let t = table(
        "routes",
        vec![vhost(
            "all",
            vec![DomainPattern::Any],
            vec![to_cluster("r", prefix("/"), "c")],
        )],
    );
    let proxy = start(http_snapshot(
        t,
        vec![cluster("c", &[up.addr()], LbPolicy::RoundRobin)],
        vec![],
    ))
    .await;
    let url = format!("http://{}/x", proxy.listener(LISTENER).unwrap());
    let client = HttpClient::http1();
    for _ in 0..10 {
        assert_eq!(client.get(&url).await.unwrap().status, 200);
    }
    assert_eq!(
        up.connections_total(),
        1,
        "sequential requests should reuse one upstream connection"
    );
}

#[tokio::test]
async fn request_bodies_stream_through_intact() {
    let up = HttpUpstream::start("up").await.unwrap();
    let mut h2 = cluster("h2", &[up.addr()], LbPolicy::RoundRobin);
    h2.protocol = UpstreamProtocol::Http2;
    let t = table(
        "routes",
        vec![vhost(
            "all",
            vec![DomainPattern::Any],
            vec![
                to_cluster("h2", prefix("/h2"), "h2"),
                to_cluster("h1", prefix("/"), "h1"),
            ],
        )],
    );
    let proxy = start(http_snapshot(
        t,
        vec![h2, cluster("h1", &[up.addr()], LbPolicy::RoundRobin)],
        vec![],
    ))
    .await;
    let addr = proxy.listener(LISTENER).unwrap();
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    for path in ["/h1", "/h2"] {
        let req = http::Request::post(path)
            .header("host", "h")
            .body(body.clone())
            .unwrap();
        let r = send(addr, req).await.unwrap();
        assert_eq!(r.status, 200, "{path}");
        let seen = up.last_request().unwrap();
        assert_eq!(seen.method, http::Method::POST);
        assert_eq!(seen.body.len(), body.len(), "{path}");
        assert!(seen.body == body, "{path}: body changed on the way");
    }
}

#[tokio::test]
async fn max_requests_per_connection_one_disables_upstream_keep_alive() {
    let up = HttpUpstream::start("up").await.unwrap();
    let mut c = cluster("c", &[up.addr()], LbPolicy::RoundRobin);
    c.max_requests_per_connection = Some(1);
    let t = table(
        "routes",
        vec![vhost(
            "all",
            vec![DomainPattern::Any],
            vec![to_cluster("r", prefix("/"), "c")],
        )],
    );
    let proxy = start(http_snapshot(t, vec![c], vec![])).await;
    let url = format!("http://{}/x", proxy.listener(LISTENER).unwrap());
    let client = HttpClient::http1();
    for _ in 0..4 {
        assert_eq!(client.get(&url).await.unwrap().status, 200);
    }
    assert_eq!(up.connections_total(), 4);
}

#[tokio::test]
async fn downstream_max_requests_per_connection_closes_after_the_last() {
    let up = HttpUpstream::start("up").await.unwrap();
    let t = table(
        "routes",
        vec![vhost(
            "all",
            vec![DomainPattern::Any],
            vec![to_cluster("r", prefix("/"), "c")],
        )],
    );
    let mut snap = http_snapshot(
        t,
        vec![cluster("c", &[up.addr()], LbPolicy::RoundRobin)],
        vec![],
    );
    let mut l = (*snap.listeners[LISTENER]).clone();
    if let NetworkFilter::Http(h) = &l.filter_chains[0].filter {
        let mut h = (**h).clone();
        h.max_requests_per_connection = Some(2);
        l.filter_chains[0].filter = NetworkFilter::Http(std::sync::Arc::new(h));
    }
    snap.listeners
        .insert(LISTENER.into(), std::sync::Arc::new(l));
    let proxy = start(snap).await;
    let url = format!("http://{}/x", proxy.listener(LISTENER).unwrap());
    let client = HttpClient::http1();
    let mut closes = 0;
    for _ in 0..4 {
        let r = client.get(&url).await.unwrap();
        assert_eq!(r.status, 200);
        closes += usize::from(r.header("connection") == Some("close"));
    }
    assert_eq!(closes, 2, "every second response closes its connection");
    assert_eq!(
        proxy
            .proxy
            .stats()
            .value("http.ingress_http.downstream_cx_total"),
        Some(2)
    );
}
