//! What a client sends on a plaintext HTTP listener, through the steps the
//! proxy takes before it forwards anything: hyper's server codec with the
//! proxy's settings (HTTP/1 and h2 by preface, upgrades allowed), the body
//! read to its end, Envoy's codec checks (`request_check`), the forwarding
//! headers, and virtual host and route selection.
//!
//! The whole proxy (listener, connection pool, upstream) is driven with
//! random bytes over real sockets by `mesh-proxy/tests/it/downstream_input.rs`;
//! that costs milliseconds an input, too slow for a fuzzer.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use mesh_proxy::http::headers;
use mesh_proxy::http::matcher::RequestHead;
use mesh_proxy::http::request_check;
use mesh_proxy::http::router::{select_route, select_virtual_host};
use mesh_proxy::model::RouteTable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Room in each direction of the in-memory connection.
const PIPE_BYTES: usize = 64 * 1024;
/// A request body is read up to this many frames (a fuzzer's input is small).
const MAX_BODY_FRAMES: usize = 1024;

/// Host, path, header, query and method matchers of each kind Envoy has,
/// regexes among them, so that route selection sees what a client sends.
const ROUTES: &str = r#"{
  "name": "fuzz",
  "virtual_hosts": [
    {
      "name": "svc",
      "domains": ["svc", "svc:80", "*.example.com", "[::1]:8080", "api-*"],
      "routes": [
        {"match": {"prefix": "/api", "case_sensitive": false,
                   "headers": [{"name": "x-user", "string_match": {"exact": "jason"}}]},
         "route": {"cluster": "a"}},
        {"match": {"safe_regex": {"regex": "/items/[0-9]+(/.*)?"}}, "route": {"cluster": "b"}},
        {"match": {"path": "/exact",
                   "query_parameters": [{"name": "q", "string_match": {"prefix": "x"}}]},
         "route": {"cluster": "c"}},
        {"match": {"prefix": "/",
                   "headers": [{"name": ":method", "string_match": {"safe_regex": {"regex": "P.*"}}},
                               {"name": "x-present", "present_match": true},
                               {"name": "cookie", "string_match": {"contains": "session="}, "invert_match": true}]},
         "route": {"cluster": "d"}},
        {"match": {"path_separated_prefix": "/v1"}, "route": {"cluster": "e", "prefix_rewrite": "/"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "a"}}
      ]
    },
    {
      "name": "all",
      "domains": ["*"],
      "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 404}}]
    }
  ]
}"#;

fn route_table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let config = mesh_proxy::xds_json::from_str(ROUTES).expect("the fuzz route config parses");
        mesh_proxy::compile::compile_route_configuration(&config)
            .expect("the fuzz route config compiles")
    })
}

thread_local! {
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

/// `data` is everything the client sends, then it closes its side.
pub fn http_head(data: &[u8]) {
    let _ = replies(data);
}

/// Everything the server side sent back.
fn replies(data: &[u8]) -> Vec<u8> {
    let table = route_table();
    RUNTIME.with(|rt| {
        let mut rt = rt.borrow_mut();
        let rt = rt.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime")
        });
        rt.block_on(exchange(table, data))
    })
}

async fn exchange(table: &'static RouteTable, data: &[u8]) -> Vec<u8> {
    let (mut client, server) = tokio::io::duplex(PIPE_BYTES);
    // As `mesh_proxy::http::conn_manager::serve` builds its codec, but for
    // half-closes: the whole input and its end arrive at once here, and
    // without them hyper would drop the requests read with the end unanswered,
    // so the checks and routing would never run.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).half_close(true);
    builder.http2().timer(TokioTimer::new());
    let service = service_fn(move |req| answer(table, req));
    let serve = async move {
        let _ = builder
            .serve_connection_with_upgrades(TokioIo::new(server), service)
            .await;
    };
    let talk = async move {
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut replies = Vec::new();
        let _ = client.read_to_end(&mut replies).await;
        replies
    };
    tokio::join!(serve, talk).1
}

async fn answer(
    table: &RouteTable,
    req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let (mut parts, mut body) = req.into_parts();
    // Malformed chunked bodies end here as errors (the client's fault).
    for _ in 0..MAX_BODY_FRAMES {
        match body.frame().await {
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    let status = match request_check::check(&parts) {
        Err(reply) => reply.status,
        Ok(()) => {
            // As `conn_manager::handle` takes them.
            let authority = parts
                .uri
                .authority()
                .map(|a| a.as_str().to_string())
                .or_else(|| {
                    parts
                        .headers
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_string)
                })
                .unwrap_or_default();
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            headers::ensure_request_id(&mut parts.headers);
            headers::set_forwarding_headers(
                &mut parts.headers,
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                "http",
                true,
            );
            let head = RequestHead {
                method: parts.method.as_str(),
                authority: &authority,
                path: &path,
                scheme: "http",
                headers: &parts.headers,
            };
            match select_virtual_host(table, &authority).and_then(|vh| select_route(vh, &head)) {
                Some(_) => StatusCode::OK,
                None => StatusCode::NOT_FOUND,
            }
        }
    };
    let mut response = Response::new(Empty::new());
    *response.status_mut() = status;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statuses(data: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(&replies(data))
            .lines()
            .filter_map(|l| l.strip_prefix("HTTP/1.1 "))
            .map(|rest| rest[..3].to_string())
            .collect()
    }

    /// The harness answers as the proxy decides: routed, unrouted, refused.
    #[test]
    fn answers_as_the_proxy_decides() {
        assert_eq!(
            statuses(b"GET /items/7 HTTP/1.1\r\nhost: a.example.com\r\n\r\n"),
            ["200"]
        );
        assert_eq!(
            statuses(b"GET / HTTP/1.1\r\nhost: elsewhere\r\n\r\n"),
            ["200"]
        );
        assert_eq!(
            statuses(b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n"),
            ["400"]
        );
        assert_eq!(statuses(b"get / HTTP/1.1\r\nhost: svc\r\n\r\n"), ["400"]);
        assert_eq!(
            statuses(b"GET /a HTTP/1.1\r\nhost: svc\r\n\r\nGET /b HTTP/1.1\r\nhost: svc\r\n\r\n"),
            ["200", "200"]
        );
    }
}
