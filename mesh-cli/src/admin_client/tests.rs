//! Against real sockets on 127.0.0.1: a raw listener where the bytes on the wire matter
//! (chunked framing, garbage), test-util's hyper upstream elsewhere. The upstream needs a
//! runtime, so those tests also cover calling the blocking client from inside one.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::thread::JoinHandle;

use mesh_test_util::HttpUpstream;

use super::*;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts one connection, reads the request head, writes `answer` and closes; the thread
/// returns the request head as text.
fn answer_once(answer: &'static [u8]) -> (SocketAddr, JoinHandle<String>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
            head.push(byte[0]);
        }
        stream.write_all(answer).unwrap();
        String::from_utf8(head).unwrap()
    });
    (addr, server)
}

#[test]
fn reads_a_content_length_body() {
    let (addr, server) =
        answer_once(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-served-by: test\r\n\r\nhello");
    let a = AdminClient::new(addr, TIMEOUT).get("/ready").unwrap();
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.text(), "hello");
    assert_eq!(a.headers["x-served-by"], "test");
    let head = server.join().unwrap();
    assert!(head.starts_with("GET /ready HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("host: localhost\r\n"), "{head}");
}

#[test]
fn reads_a_chunked_body() {
    let (addr, server) = answer_once(
        b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n",
    );
    let a = AdminClient::new(addr, TIMEOUT).get("/clusters").unwrap();
    assert_eq!((a.status.as_u16(), a.text().as_ref()), (503, "abcde"));
    server.join().unwrap();
}

#[test]
fn reads_a_body_that_ends_with_the_connection() {
    let (addr, server) = answer_once(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil EOF");
    let a = AdminClient::new(addr, TIMEOUT).get("/").unwrap();
    assert_eq!(a.text(), "until EOF");
    server.join().unwrap();
}

#[test]
fn garbage_is_a_bad_response() {
    let (addr, server) = answer_once(b"garbage\r\n\r\n");
    let e = AdminClient::new(addr, TIMEOUT).get("/ready").unwrap_err();
    assert!(matches!(e, AdminError::BadResponse { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("GET /ready at {addr}: bad response")),
        "{e}"
    );
    server.join().unwrap();
}

#[test]
fn sends_an_absolute_target_as_given_with_the_chosen_host() {
    let (addr, server) = answer_once(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    let request = Request::get("http://helloworld:5000/hello")
        .headers(&[("end-user".into(), "jason".into())]);
    let a = AdminClient::new(addr, TIMEOUT)
        .with_host("helloworld:5000")
        .send(request)
        .unwrap();
    assert_eq!(a.status, StatusCode::OK);
    let head = server.join().unwrap();
    assert!(
        head.starts_with("GET http://helloworld:5000/hello HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("host: helloworld:5000\r\n"), "{head}");
    assert!(head.contains("end-user: jason\r\n"), "{head}");
}

#[test]
fn connect_refused_names_the_address() {
    // A port that was just free: nothing listens there now.
    let addr = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap();
    let e = AdminClient::new(addr, TIMEOUT).get("/ready").unwrap_err();
    let AdminError::Connect { call, source } = &e else {
        panic!("expected a connect error, got {e}");
    };
    assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(call.transport, Transport::Tcp(addr));
    assert!(
        e.to_string()
            .starts_with(&format!("GET /ready at {addr}: connect: ")),
        "{e}"
    );
}

#[test]
fn an_invalid_target_is_refused_before_connecting() {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
    let e = AdminClient::new(addr, TIMEOUT).get("/a path").unwrap_err();
    assert!(matches!(e, AdminError::InvalidRequest { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_never_answers_is_a_timeout() {
    let upstream = HttpUpstream::start("never").await.unwrap();
    upstream.hang();
    let timeout = Duration::from_millis(200);
    let e = AdminClient::new(upstream.addr(), timeout)
        .get("/config_dump")
        .unwrap_err();
    let AdminError::Timeout {
        call,
        timeout: t,
        phase,
    } = &e
    else {
        panic!("expected a timeout, got {e}");
    };
    assert_eq!((*t, *phase), (timeout, Phase::WaitingForResponse));
    assert_eq!(call.target, "/config_dump");
    assert!(e.to_string().contains("no answer within 200ms"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn posts_an_empty_body_with_its_length() {
    let upstream = HttpUpstream::start("admin").await.unwrap();
    let a = AdminClient::new(upstream.addr(), TIMEOUT)
        .post("/logging?level=debug")
        .unwrap();
    assert_eq!((a.status, a.text().as_ref()), (StatusCode::OK, "admin"));
    assert_eq!(a.headers["x-upstream-name"], "admin");
    let r = upstream.last_request().unwrap();
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.uri, "/logging?level=debug");
    assert_eq!(r.header("content-length"), Some("0"));
    assert_eq!(r.header("user-agent"), Some("meshctl"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_header_replaces_the_clients() {
    let upstream = HttpUpstream::start("up").await.unwrap();
    let request = Request::get("/").header("Host", "other.example");
    AdminClient::new(upstream.addr(), TIMEOUT)
        .send(request)
        .unwrap();
    let r = upstream.last_request().unwrap();
    assert_eq!(r.headers.get_all(HOST).iter().count(), 1);
    assert_eq!(r.host().as_deref(), Some("other.example"));
}

#[tokio::test(flavor = "current_thread")]
async fn works_from_inside_a_current_thread_runtime() {
    let (addr, server) = answer_once(b"HTTP/1.1 204 No Content\r\n\r\n");
    let a = AdminClient::new(addr, TIMEOUT).get("/").unwrap();
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    server.join().unwrap();
}
