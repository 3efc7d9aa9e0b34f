//! The app in-process on 127.0.0.1:0, driven by real HTTP/1.1 and h2 clients.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use helloworld::{Config, build};
use http::{Request, StatusCode, Version};
use mesh_test_util::{HttpClient, send, send_h2};
use tokio::sync::oneshot;

/// A running app; stops when dropped.
struct App {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start(config: Config) -> App {
    let bound = build(Config {
        port: 0,
        log_requests: false,
        ..config
    })
    .await
    .unwrap();
    let addr = bound.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(bound.run(async move {
        let _ = stopped.await;
    }));
    App { addr, _stop: stop }
}

fn named(version: &str, instance: &str) -> Config {
    Config {
        version: version.to_owned(),
        instance: Some(instance.to_owned()),
        ..Config::default()
    }
}

#[tokio::test]
async fn istio_and_hello_answer_version_and_instance_over_both_protocols() {
    let app = start(named("safe", "hw-1")).await;
    for client in [HttpClient::http1(), HttpClient::http2()] {
        for path in ["/istio", "/hello"] {
            let resp = client
                .get(&format!("http://{}{path}", app.addr))
                .await
                .unwrap();
            assert_eq!(resp.status, StatusCode::OK);
            assert_eq!(resp.text(), "Hello version: safe, instance: hw-1\n");
        }
    }
    let h2 = HttpClient::http2()
        .get(&format!("http://{}/istio", app.addr))
        .await
        .unwrap();
    assert_eq!(h2.version, Version::HTTP_2);
}

#[tokio::test]
async fn default_instance_is_named_after_the_bound_port() {
    let app = start(Config::default()).await;
    let resp = HttpClient::http1()
        .get(&format!("http://{}/istio", app.addr))
        .await
        .unwrap();
    assert_eq!(
        resp.text(),
        format!(
            "Hello version: v1, instance: helloworld-{}\n",
            app.addr.port()
        )
    );
}

#[tokio::test]
async fn headers_are_echoed_sorted_on_both_protocols() {
    let app = start(named("v1", "h")).await;
    let req = || {
        Request::get("/headers")
            .header("host", "helloworld")
            .header("x-b", "2")
            .header("end-user", "jason")
            .header("x-a", "1")
            .body("")
            .unwrap()
    };
    let h1 = send(app.addr, req()).await.unwrap();
    assert_eq!(h1.status, StatusCode::OK);
    assert_eq!(
        h1.text(),
        "end-user: jason\nhost: helloworld\nx-a: 1\nx-b: 2\n"
    );
    let h2 = send_h2(app.addr, req()).await.unwrap();
    assert_eq!(h2.version, Version::HTTP_2);
    assert_eq!(
        h2.text(),
        "end-user: jason\nhost: helloworld\nx-a: 1\nx-b: 2\n"
    );
}

#[tokio::test]
async fn healthz_and_unknown_paths() {
    let app = start(Config {
        failure_rate: 1.0,
        ..named("v1", "h")
    })
    .await;
    let client = HttpClient::http1();
    // Health is never failed on purpose, or the mesh would stop sending traffic at all.
    let health = client
        .get(&format!("http://{}/healthz", app.addr))
        .await
        .unwrap();
    assert_eq!(health.status, StatusCode::OK);
    let missing = client
        .get(&format!("http://{}/nope", app.addr))
        .await
        .unwrap();
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let post = client
        .request(
            Request::post(format!("http://{}/istio", app.addr))
                .body("x")
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn latency_delays_each_answer_by_at_least_the_setting() {
    let app = start(Config {
        latency: Duration::from_millis(300),
        ..named("v1", "slow")
    })
    .await;
    let client = HttpClient::http1();
    for _ in 0..2 {
        let started = Instant::now();
        let resp = client
            .get(&format!("http://{}/istio", app.addr))
            .await
            .unwrap();
        assert_eq!(resp.status, StatusCode::OK);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}

#[tokio::test]
async fn jitter_keeps_the_delay_at_least_latency_minus_jitter() {
    let app = start(Config {
        latency: Duration::from_millis(300),
        jitter: Duration::from_millis(100),
        ..named("v1", "jittery")
    })
    .await;
    let started = Instant::now();
    let resp = HttpClient::http2()
        .get(&format!("http://{}/hello", app.addr))
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

async fn count_failures(addr: SocketAddr, client: &HttpClient, n: usize) -> usize {
    let mut failures = 0;
    for _ in 0..n {
        let resp = client.get(&format!("http://{addr}/istio")).await.unwrap();
        match resp.status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(resp.text().contains("injected failure"), "{}", resp.text());
                failures += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    failures
}

#[tokio::test]
async fn failure_rate_one_always_fails_and_zero_never() {
    let always = start(Config {
        failure_rate: 1.0,
        ..named("risky", "a")
    })
    .await;
    let never = start(Config {
        failure_rate: 0.0,
        ..named("safe", "b")
    })
    .await;
    let client = HttpClient::http1();
    assert_eq!(count_failures(always.addr, &client, 50).await, 50);
    assert_eq!(count_failures(never.addr, &client, 50).await, 0);
}

#[tokio::test]
async fn failure_rate_half_fails_about_half() {
    let app = start(Config {
        failure_rate: 0.5,
        ..named("risky", "c")
    })
    .await;
    let failures = count_failures(app.addr, &HttpClient::http2(), 1000).await;
    // Binomial(1000, 0.5) has sd ~16; 400..=600 is more than 6 sd either side.
    assert!((400..=600).contains(&failures), "{failures} of 1000 failed");
}
