//! meshctl's HTTP client for admin and debug endpoints (a proxy's `/config_dump`, `/clusters`,
//! `/logging`; the control plane's `/ready`, `/debug/syncz`, `/debug/configz`) and for the test
//! traffic `meshctl traffic` sends through a gateway or a sidecar's `http_proxy` listener.
//!
//! One HTTP/1.1 connection per request (`Connection: close`), driven by hyper's
//! connection-level client on a small current-thread runtime, so callers stay blocking. Not
//! hyper-util's pooled `Client`: it picks the connection from the request URI and rewrites an
//! absolute-form target (`http://helloworld:5000/hello`, as an `http_proxy` client sends it)
//! to origin form, and meshctl needs the opposite: a fixed [`Transport`] and the target as
//! given.
//!
//! ```text
//!  AdminClient { transport, Host, timeout } ──send(Request)──> Transport::connect ──> IO
//!        hyper http1 handshake on IO ──> request ──> Response { status, headers, body }
//! ```
//!
//! Every call has one deadline: connecting, waiting for the answer and reading the body all
//! fit in the client's timeout. [`Transport::KubePortForward`] reaches a pod's port as
//! `kubectl port-forward` does (the API server, then the pod's kubelet, then the port inside
//! the pod: a port bound to 127.0.0.1 there too); [`Transport::KubePodProxy`] through the API
//! server's pod proxy (no kubelet, but only ports listening on the pod's IP).

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONNECTION, CONTENT_LENGTH, HOST, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, timeout_at};

/// The Host header unless told otherwise: admin listeners answer any.
pub const DEFAULT_HOST: &str = "localhost";

/// How a request reaches its server. Every request opens its own connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// A TCP connection to this address (a local process, or a port `kubectl port-forward`
    /// listens on).
    Tcp(SocketAddr),
    /// A pod's port through a port-forward (what istioctl uses): the API server upgrades the
    /// call to a WebSocket and its kubelet connects to the port inside the pod.
    KubePortForward(Box<PodPort>),
    /// A pod's port through the API server's pod proxy.
    KubePodProxy(Box<PodPort>),
}

/// A port of a pod, reached through the Kubernetes API server: by a port-forward, or by the
/// API server's pod proxy (`/api/v1/namespaces/NS/pods/POD:PORT/proxy/PATH`, what `kubectl get
/// --raw` reads), which involves no kubelet but needs an API server that can reach the pod's
/// IP and a server listening on that IP (mesh-control's debug port does; a proxy's admin
/// bound to 127.0.0.1 does not).
#[derive(Debug, Clone)]
pub struct PodPort {
    /// The cluster, as a kubeconfig gives it. A client is built per call: kube's client
    /// belongs to the runtime it was made on, and each call runs on its own.
    pub config: kube::Config,
    pub namespace: String,
    pub pod: String,
    pub port: u16,
}

impl PartialEq for PodPort {
    fn eq(&self, other: &Self) -> bool {
        self.config.cluster_url == other.config.cluster_url
            && (&self.namespace, &self.pod, self.port) == (&other.namespace, &other.pod, other.port)
    }
}

impl Eq for PodPort {}

impl PodPort {
    fn client(&self) -> Result<kube::Client, Failure> {
        kube::Client::try_from(self.config.clone()).map_err(|e| Failure::Kube(e.to_string()))
    }
}

impl From<SocketAddr> for Transport {
    fn from(addr: SocketAddr) -> Self {
        Transport::Tcp(addr)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Tcp(addr) => write!(f, "{addr}"),
            Transport::KubePortForward(p) => write!(
                f,
                "pod {}/{}:{} (port-forward via {})",
                p.namespace, p.pod, p.port, p.config.cluster_url
            ),
            Transport::KubePodProxy(p) => write!(
                f,
                "pod {}/{}:{} (pod proxy via {})",
                p.namespace, p.pod, p.port, p.config.cluster_url
            ),
        }
    }
}

/// A request: method, target, extra headers, body.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    target: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Request {
    /// `GET target`. `target` is `/path?query` (origin form) or `http://host/path` (absolute
    /// form, as clients send it to an HTTP proxy); it is sent as given.
    pub fn get(target: impl Into<String>) -> Request {
        Request::new(Method::GET, target.into(), Bytes::new())
    }

    /// `POST target` with `body` (admin endpoints such as `/logging?level=` take an empty one).
    pub fn post(target: impl Into<String>, body: impl Into<Bytes>) -> Request {
        Request::new(Method::POST, target.into(), body.into())
    }

    fn new(method: Method, target: String, body: Bytes) -> Request {
        Request {
            method,
            target,
            headers: Vec::new(),
            body,
        }
    }

    /// Adds a request header (`end-user: jason`); a `Host` header replaces the client's.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds several headers, in order, as [`Request::header`] does.
    pub fn headers(mut self, headers: &[(String, String)]) -> Request {
        self.headers.extend_from_slice(headers);
        self
    }
}

/// An answer: status, headers and the whole body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The body as text; bytes that are not UTF-8 become U+FFFD.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }
}

/// The request an [`AdminError`] is about: `GET /ready at 127.0.0.1:15000`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: Method,
    pub target: String,
    pub transport: Transport,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} at {}", self.method, self.target, self.transport)
    }
}

/// Where a call was when its deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connecting,
    WaitingForResponse,
    ReadingBody,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connecting => "connecting",
            Phase::WaitingForResponse => "waiting for the response",
            Phase::ReadingBody => "reading the body",
        })
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No connection (refused, unreachable, ...).
    #[error("{call}: connect: {source}")]
    Connect {
        call: Call,
        #[source]
        source: std::io::Error,
    },
    /// The deadline passed.
    #[error("{call}: no answer within {timeout:?} ({phase})")]
    Timeout {
        call: Call,
        timeout: Duration,
        phase: Phase,
    },
    /// The connection broke or what came back is not HTTP/1.
    #[error("{call}: bad response: {source}")]
    BadResponse {
        call: Call,
        #[source]
        source: hyper::Error,
    },
    /// The target, the Host or a header cannot be sent (a space in the path, a newline in a
    /// value, ...).
    #[error("{call}: invalid request: {source}")]
    InvalidRequest {
        call: Call,
        #[source]
        source: http::Error,
    },
    /// The Kubernetes API server could not be asked, or did not answer.
    #[error("{call}: through the Kubernetes API server: {message}")]
    Kube { call: Call, message: String },
    /// No runtime to run the call on (out of file descriptors, ...).
    #[error("{call}: starting the client's runtime: {source}")]
    Runtime {
        call: Call,
        #[source]
        source: std::io::Error,
    },
}

impl AdminError {
    /// The request that failed.
    pub fn call(&self) -> &Call {
        match self {
            AdminError::Connect { call, .. }
            | AdminError::Timeout { call, .. }
            | AdminError::BadResponse { call, .. }
            | AdminError::InvalidRequest { call, .. }
            | AdminError::Runtime { call, .. }
            | AdminError::Kube { call, .. } => call,
        }
    }
}

/// A blocking client for one server: where to connect, the Host to send, the deadline of
/// every call.
#[derive(Debug, Clone)]
pub struct AdminClient {
    transport: Transport,
    host: String,
    timeout: Duration,
}

impl AdminClient {
    /// A client of `transport` that sends `Host: localhost` and gives every call `timeout`.
    pub fn new(transport: impl Into<Transport>, timeout: Duration) -> AdminClient {
        AdminClient {
            transport: transport.into(),
            host: DEFAULT_HOST.to_string(),
            timeout,
        }
    }

    /// Sends `Host: host` instead.
    pub fn with_host(mut self, host: impl Into<String>) -> AdminClient {
        self.host = host.into();
        self
    }

    /// `GET target`.
    pub fn get(&self, target: &str) -> Result<Response, AdminError> {
        self.send(Request::get(target))
    }

    /// `POST target` with an empty body.
    pub fn post(&self, target: &str) -> Result<Response, AdminError> {
        self.send(Request::post(target, Bytes::new()))
    }

    /// Sends `request` on a new connection and reads the whole answer, all within the
    /// client's timeout. Blocks; callable from inside a tokio runtime too.
    pub fn send(&self, request: Request) -> Result<Response, AdminError> {
        let call = Call {
            method: request.method.clone(),
            target: request.target.clone(),
            transport: self.transport.clone(),
        };
        let request = match self.http_request(request) {
            Ok(r) => r,
            Err(source) => return Err(AdminError::InvalidRequest { call, source }),
        };
        block_on(self.exchange(request)).map_err(|failure| failure.into_error(call))
    }

    fn http_request(&self, request: Request) -> Result<http::Request<Full<Bytes>>, http::Error> {
        let mut builder = http::Request::builder()
            .method(request.method.clone())
            .uri(request.target.as_str())
            .header(HOST, self.host.as_str())
            .header(USER_AGENT, "meshctl")
            .header(ACCEPT, "*/*");
        for (name, value) in &request.headers {
            let name = HeaderName::from_bytes(name.as_bytes())?;
            let value = HeaderValue::from_str(value)?;
            if let Some(headers) = builder.headers_mut() {
                if name == HOST {
                    headers.insert(name, value);
                } else {
                    headers.append(name, value);
                }
            }
        }
        // An empty POST still says so, or some servers wait for a body.
        if request.method != Method::GET && request.method != Method::HEAD {
            builder = builder.header(CONTENT_LENGTH, request.body.len());
        }
        builder
            .header(CONNECTION, "close")
            .body(Full::new(request.body))
    }

    async fn exchange(&self, request: http::Request<Full<Bytes>>) -> Result<Response, Failure> {
        let deadline = Instant::now() + self.timeout;
        match &self.transport {
            Transport::Tcp(addr) => {
                let connect = tokio::net::TcpStream::connect(addr);
                let stream = match timeout_at(deadline, connect).await {
                    Err(_) => return Err(self.timed_out(Phase::Connecting)),
                    Ok(r) => r.map_err(Failure::Connect)?,
                };
                self.over(TokioIo::new(stream), request, deadline).await
            }
            Transport::KubePortForward(pod) => self.port_forward(pod, request, deadline).await,
            Transport::KubePodProxy(pod) => self.through_api_server(pod, request, deadline).await,
        }
    }

    /// The exchange over a port-forward of the pod's port. The kubelet reports a port it
    /// cannot reach on the forward's error channel, which ends the call with its words.
    async fn port_forward(
        &self,
        pod: &PodPort,
        request: http::Request<Full<Bytes>>,
        deadline: Instant,
    ) -> Result<Response, Failure> {
        use k8s_openapi::api::core::v1::Pod;
        let pods: kube::Api<Pod> = kube::Api::namespaced(pod.client()?, &pod.namespace);
        let mut forwarder =
            match timeout_at(deadline, pods.portforward(&pod.pod, &[pod.port])).await {
                Err(_) => return Err(self.timed_out(Phase::Connecting)),
                Ok(r) => r.map_err(|e| Failure::Kube(format!("port-forward: {e}")))?,
            };
        let (Some(stream), Some(error)) = (
            forwarder.take_stream(pod.port),
            forwarder.take_error(pod.port),
        ) else {
            return Err(Failure::Kube(format!(
                "port-forward: no stream for port {}",
                pod.port
            )));
        };
        let exchange = self.over(TokioIo::new(stream), request, deadline);
        tokio::pin!(exchange);
        let answer = tokio::select! {
            answer = &mut exchange => answer,
            Some(message) = error => Err(Failure::Kube(format!("port-forward: {message}"))),
        };
        forwarder.abort();
        answer
    }

    async fn through_api_server(
        &self,
        pod: &PodPort,
        request: http::Request<Full<Bytes>>,
        deadline: Instant,
    ) -> Result<Response, Failure> {
        let client = pod.client()?;
        let (parts, body) = request.into_parts();
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}:{}/proxy{target}",
            pod.namespace, pod.pod, pod.port
        );
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut proxied = http::Request::builder().method(parts.method).uri(path);
        for (name, value) in &parts.headers {
            // The API server sets its own Host and connection handling.
            if name != HOST && name != CONNECTION {
                proxied = proxied.header(name, value);
            }
        }
        let proxied = proxied
            .body(kube::client::Body::from(body.to_vec()))
            .map_err(|e| Failure::Kube(e.to_string()))?;
        let answer = match timeout_at(deadline, client.send(proxied)).await {
            Err(_) => return Err(self.timed_out(Phase::WaitingForResponse)),
            Ok(r) => r.map_err(|e| Failure::Kube(e.to_string()))?,
        };
        let (parts, body) = answer.into_parts();
        let body = match timeout_at(deadline, body.collect()).await {
            Err(_) => return Err(self.timed_out(Phase::ReadingBody)),
            Ok(r) => r.map_err(|e| Failure::Kube(e.to_string()))?.to_bytes(),
        };
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// The request and its answer over a connected `io`.
    async fn over<IO>(
        &self,
        io: IO,
        request: http::Request<Full<Bytes>>,
        deadline: Instant,
    ) -> Result<Response, Failure>
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut sender, connection) = match timeout_at(deadline, http1::handshake(io)).await {
            Err(_) => return Err(self.timed_out(Phase::WaitingForResponse)),
            Ok(r) => r.map_err(Failure::BadResponse)?,
        };
        // The connection task reads and writes the socket while this one waits for the answer;
        // it ends with the runtime if the deadline passes first. Its own error, if any, is the
        // one `send_request` or the body reports.
        tokio::spawn(connection);
        let answer = match timeout_at(deadline, sender.send_request(request)).await {
            Err(_) => return Err(self.timed_out(Phase::WaitingForResponse)),
            Ok(r) => r.map_err(Failure::BadResponse)?,
        };
        let (parts, body) = answer.into_parts();
        let body = match timeout_at(deadline, body.collect()).await {
            Err(_) => return Err(self.timed_out(Phase::ReadingBody)),
            Ok(r) => r.map_err(Failure::BadResponse)?.to_bytes(),
        };
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    fn timed_out(&self, phase: Phase) -> Failure {
        Failure::Timeout {
            timeout: self.timeout,
            phase,
        }
    }
}

/// An [`AdminError`] before it is told which call it is about.
#[derive(Debug)]
enum Failure {
    Connect(std::io::Error),
    Timeout { timeout: Duration, phase: Phase },
    BadResponse(hyper::Error),
    Runtime(std::io::Error),
    Kube(String),
}

impl Failure {
    fn into_error(self, call: Call) -> AdminError {
        match self {
            Failure::Connect(source) => AdminError::Connect { call, source },
            Failure::Timeout { timeout, phase } => AdminError::Timeout {
                call,
                timeout,
                phase,
            },
            Failure::BadResponse(source) => AdminError::BadResponse { call, source },
            Failure::Runtime(source) => AdminError::Runtime { call, source },
            Failure::Kube(message) => AdminError::Kube { call, message },
        }
    }
}

/// Runs `call` to completion on a current-thread runtime of its own. From inside a tokio
/// runtime (where `block_on` panics) that runtime lives on a thread of its own; the caller's
/// thread waits, as for any blocking call.
fn block_on<F>(call: F) -> Result<Response, Failure>
where
    F: Future<Output = Result<Response, Failure>> + Send,
{
    let run = move || match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(call),
        Err(e) => Err(Failure::Runtime(e)),
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return run();
    }
    std::thread::scope(|scope| match scope.spawn(run).join() {
        Ok(answer) => answer,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

#[cfg(test)]
mod tests;
