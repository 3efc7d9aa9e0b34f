//! The upstream servers and clients against each other over real sockets.

use std::time::Duration;

use http::{Request, StatusCode, Version};
use mesh_test_util::{
    HttpClient, HttpUpstream, TcpEchoUpstream, free_port, send, send_h2, wait_until,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn answers_with_its_name_over_http1_and_h2_and_records_requests() {
    let up = HttpUpstream::start("v1").await.unwrap();
    let url = format!("http://{}/hello?x=1", up.addr());

    let h1 = HttpClient::http1().get(&url).await.unwrap();
    assert_eq!(h1.status, StatusCode::OK);
    assert_eq!(h1.text(), "v1");
    assert_eq!(h1.header("x-upstream-name"), Some("v1"));
    assert_eq!(h1.version, Version::HTTP_11);

    let h2 = HttpClient::http2()
        .request(
            Request::post(&url)
                .header("x-test", "yes")
                .body("payload")
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(h2.status, StatusCode::OK);
    assert_eq!(h2.version, Version::HTTP_2);

    let requests = up.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].method, http::Method::GET);
    assert_eq!(requests[0].uri.path(), "/hello");
    assert_eq!(requests[0].host().as_deref(), Some(&*up.addr().to_string()));
    assert_eq!(requests[1].version, Version::HTTP_2);
    assert_eq!(requests[1].header("x-test"), Some("yes"));
    assert_eq!(&requests[1].body[..], b"payload");
    assert_eq!(up.connections_total(), 2);
}

#[tokio::test]
async fn send_keeps_host_and_uri_form() {
    let up = HttpUpstream::start("a").await.unwrap();
    let resp = send(
        up.addr(),
        Request::get("/istio")
            .header("host", "helloworld")
            .body("")
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.text(), "a");
    let resp = send(
        up.addr(),
        Request::get("http://helloworld:5000/istio")
            .body("")
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    let resp = send_h2(
        up.addr(),
        Request::get("/h2")
            .header("host", "reviews")
            .body("")
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.version, Version::HTTP_2);

    let requests = up.requests();
    assert_eq!(requests[0].host().as_deref(), Some("helloworld"));
    assert_eq!(requests[0].uri.to_string(), "/istio");
    assert_eq!(requests[1].host().as_deref(), Some("helloworld:5000"));
    assert_eq!(requests[1].uri.to_string(), "http://helloworld:5000/istio");
    assert_eq!(requests[2].host().as_deref(), Some("reviews"));
}

#[tokio::test]
async fn fail_next_then_recovers_and_fail_always_sticks() {
    let up = HttpUpstream::start("v2").await.unwrap();
    let client = HttpClient::http1();
    let url = format!("http://{}/", up.addr());
    up.fail_next(2, StatusCode::SERVICE_UNAVAILABLE);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(client.get(&url).await.unwrap().status.as_u16());
    }
    assert_eq!(statuses, [503, 503, 200, 200]);

    up.fail_always(StatusCode::INTERNAL_SERVER_ERROR);
    for _ in 0..3 {
        let resp = client.get(&url).await.unwrap();
        assert_eq!(resp.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(resp.text(), "v2 failing");
    }
    up.respond_ok();
    assert_eq!(client.get(&url).await.unwrap().status, StatusCode::OK);
    assert_eq!(up.request_count(), 8);
}

#[tokio::test]
async fn delay_holds_the_answer_at_least_that_long() {
    let up = HttpUpstream::start("slow").await.unwrap();
    up.set_delay(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let resp = HttpClient::http1()
        .get(&format!("http://{}/", up.addr()))
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn hang_never_answers_and_reset_answers_nothing() {
    let up = HttpUpstream::start("stuck").await.unwrap();
    up.hang();
    let pending = tokio::time::timeout(
        Duration::from_millis(300),
        send(up.addr(), Request::get("/").body("").unwrap()),
    )
    .await;
    assert!(pending.is_err(), "a hanging upstream answered: {pending:?}");
    // The request was received, only the answer is missing.
    wait_until(WAIT, async || up.request_count() == 1)
        .await
        .unwrap();

    up.reset();
    let h1 = send(up.addr(), Request::get("/").body("").unwrap()).await;
    assert!(h1.is_err(), "reset over HTTP/1 answered: {h1:?}");
    let h2 = send_h2(up.addr(), Request::get("/").body("").unwrap()).await;
    assert!(h2.is_err(), "reset over h2 answered: {h2:?}");
}

#[tokio::test]
async fn counts_current_and_max_concurrent_connections() {
    let up = HttpUpstream::start("c").await.unwrap();
    up.hang();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let addr = up.addr();
        clients.push(tokio::spawn(async move {
            send(addr, Request::get("/").body("").unwrap()).await
        }));
    }
    wait_until(WAIT, async || up.connections_current() == 3)
        .await
        .unwrap();
    assert_eq!(up.connections_max_concurrent(), 3);
    assert_eq!(up.connections_total(), 3);
    for client in &clients {
        client.abort();
    }
    wait_until(WAIT, async || up.connections_current() == 0)
        .await
        .unwrap();
    assert_eq!(up.connections_max_concurrent(), 3);
    up.clear();
    assert_eq!(up.connections_total(), 0);
    assert_eq!(up.connections_max_concurrent(), 0);
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn websocket_upgrade_then_raw_echo() {
    let up = HttpUpstream::start("ws").await.unwrap();
    let mut stream = TcpStream::connect(up.addr()).await.unwrap();
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: ws\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream.write_all(b"ping over upgraded").await.unwrap();
    let mut echoed = [0u8; 18];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping over upgraded");
    assert_eq!(up.requests()[0].uri.path(), "/chat");
}

#[tokio::test]
async fn tcp_echo_echoes_and_counts() {
    let echo = TcpEchoUpstream::start().await.unwrap();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(echo.addr()).await.unwrap();
        stream.write_all(b"hello").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut back = Vec::new();
        stream.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"hello");
    }
    assert_eq!(echo.connections_total(), 2);
    wait_until(WAIT, async || echo.bytes_echoed() == 10)
        .await
        .unwrap();
}

#[tokio::test]
async fn dropping_the_upstream_closes_its_port() {
    let up = HttpUpstream::start("gone").await.unwrap();
    let addr = up.addr();
    drop(up);
    wait_until(WAIT, async || TcpStream::connect(addr).await.is_err())
        .await
        .unwrap();
}

#[tokio::test]
async fn wait_until_reports_the_last_failure() {
    let err = wait_until(Duration::from_millis(100), async || {
        Err::<(), _>("still broken")
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("still broken"), "{err}");
    let mut n = 0;
    let value = wait_until(WAIT, async || {
        n += 1;
        if n >= 3 { Ok(n) } else { Err("not yet") }
    })
    .await
    .unwrap();
    assert_eq!(value, 3);
}

#[test]
fn free_port_can_be_bound() {
    let port = free_port();
    assert_ne!(port, 0);
    // Racy by nature but this test process is the only one binding it right now.
    std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
}
