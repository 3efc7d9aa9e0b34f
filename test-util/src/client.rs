use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// A response with its body read to the end.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    async fn collect(resp: hyper::Response<hyper::body::Incoming>) -> anyhow::Result<Response> {
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .context("reading the response body")?
            .to_bytes();
        Ok(Response {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }
}

/// A pooled client (hyper-util's) speaking either HTTP/1.1 or h2 with prior knowledge.
/// Use it for many requests; connections are reused as a real client would.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    version: Version,
}

impl HttpClient {
    /// HTTP/1.1 with keep-alive.
    pub fn http1() -> HttpClient {
        HttpClient {
            inner: Client::builder(TokioExecutor::new()).build_http(),
            version: Version::HTTP_11,
        }
    }

    /// h2 over cleartext with prior knowledge (no upgrade dance).
    pub fn http2() -> HttpClient {
        HttpClient {
            inner: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
            version: Version::HTTP_2,
        }
    }

    /// `GET url` (absolute `http://` URL).
    pub async fn get(&self, url: &str) -> anyhow::Result<Response> {
        let req = Request::get(url).body(Bytes::new())?;
        self.request(req).await
    }

    /// Sends `req` (absolute URI) and reads the whole response.
    pub async fn request<B: Into<Bytes>>(&self, req: Request<B>) -> anyhow::Result<Response> {
        let uri = req.uri().clone();
        let mut req = req.map(|b| Full::new(b.into()));
        *req.version_mut() = self.version;
        let resp = self
            .inner
            .request(req)
            .await
            .with_context(|| format!("{:?} request to {uri}", self.version))?;
        Response::collect(resp).await
    }
}

/// Sends one request over a fresh HTTP/1.1 connection to `addr`, exactly as given: an
/// origin-form URI (`/istio`) stays origin-form, an absolute one (`http://helloworld/istio`,
/// as sent to an HTTP proxy) stays absolute. A missing `Host` is filled from the URI's
/// authority, else from `addr`.
pub async fn send<B: Into<Bytes>>(addr: SocketAddr, req: Request<B>) -> anyhow::Result<Response> {
    let mut req = req.map(|b| Full::new(b.into()));
    if !req.headers().contains_key(header::HOST) {
        let host = match req.uri().authority() {
            Some(authority) => authority.to_string(),
            None => addr.to_string(),
        };
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_str(&host)?);
    }
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP/1 handshake with {addr}"))?;
    let driver = tokio::spawn(conn.with_upgrades());
    let uri = req.uri().clone();
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .with_context(|| format!("HTTP/1 request {uri} to {addr}"))?;
        Response::collect(resp).await
    }
    .await;
    driver.abort();
    result
}

/// Sends one request over a fresh h2 (prior knowledge) connection to `addr`. A URI without
/// authority gets one from the `Host` header (which is then dropped: h2 carries it as
/// `:authority`), else from `addr`.
pub async fn send_h2<B: Into<Bytes>>(
    addr: SocketAddr,
    req: Request<B>,
) -> anyhow::Result<Response> {
    let mut req = req.map(|b| Full::new(b.into()));
    if req.uri().authority().is_none() {
        let authority = match req.headers_mut().remove(header::HOST) {
            Some(host) => host.to_str().context("Host header is not text")?.to_owned(),
            None => addr.to_string(),
        };
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_owned();
        *req.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(authority.as_str())
            .path_and_query(path)
            .build()
            .context("building the h2 request URI")?;
    }
    *req.version_mut() = Version::HTTP_2;
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .with_context(|| format!("h2 handshake with {addr}"))?;
    let driver = tokio::spawn(conn);
    let uri = req.uri().clone();
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .with_context(|| format!("h2 request {uri} to {addr}"))?;
        Response::collect(resp).await
    }
    .await;
    driver.abort();
    result
}
