//! The retry stage, between the route timeout and one attempt: runs
//! attempts under the per-try timeout, decides from the route's
//! `retry_policy` whether a response or failure is retried, waits a
//! jittered exponential backoff, asks the cluster's circuit breaker (or
//! retry budget) for room, and avoids previous hosts when asked to.
//!
//! A request body is buffered (up to the cluster's buffer limit) so it can
//! be replayed; a bigger body streams through once and is never retried.
//! When retries run out on a retriable outcome the request is flagged
//! `URX`; an upstream response is still passed through unchanged.
//!
//! The policy in force merges the route's (or virtual host's) with the
//! request headers Envoy's router reads (`x-envoy-retry-on`,
//! `x-envoy-retry-grpc-on`, `x-envoy-max-retries`,
//! `x-envoy-retriable-status-codes`, `x-envoy-retriable-header-names`),
//! which only count on internal requests. As Envoy decides it, a request
//! is internal when, after the connection manager's `x-forwarded-for`
//! handling, that header holds exactly one address and it lies in the
//! connection manager's `internal_address_config` ranges; every other
//! request has these headers removed (Envoy 1.40 with no
//! `internal_address_config` treats no address as internal).
//! `per_try_idle_timeout` bounds each attempt's wait for its response
//! head, and the gaps between response body frames afterwards.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::attempt::{self, AttemptFailure, RequestGuard};
use super::local_reply::{LocalReply, ResponseFlag};
use super::matcher::{RequestHead, header_matches};
use crate::access_log::LogEntry;
use crate::body::{BoxError, ProxyBody};
use crate::model::{
    DEFAULT_NUM_RETRIES, DEFAULT_RETRY_BASE_INTERVAL, DEFAULT_RETRY_MAX_INTERVAL_FACTOR,
    HeaderMatchKind, HeaderMatcher, RetryOn, RetryPolicy,
};
use crate::upstream::cluster::{ClusterRuntime, Host};
use crate::upstream::outlier::Outcome;
use crate::upstream::pool::Protocol;
use ipnet::IpNet;

/// A request body as the retry and mirror stages hold it.
pub enum RequestBody {
    /// Read completely (within the buffer limit): can be sent many times.
    Buffered {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// Streams once: too big to buffer, or buffering was not needed.
    Streaming(ProxyBody),
    /// Streams to the first attempt while a copy is recorded (up to the
    /// limit), so a body of unknown length is never held back and can
    /// still be replayed once it is complete.
    Teed {
        first: Option<ProxyBody>,
        recording: Arc<std::sync::Mutex<Recording>>,
    },
}

/// What a teed body has seen so far.
#[derive(Debug, Default)]
pub struct Recording {
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    size: usize,
    complete: bool,
    over_limit: bool,
}

impl RequestBody {
    /// Streams `body` to the first attempt, recording up to `limit` bytes.
    pub fn tee(body: ProxyBody, limit: usize) -> RequestBody {
        let recording = Arc::new(std::sync::Mutex::new(Recording::default()));
        RequestBody::Teed {
            first: Some(
                Tee {
                    inner: body,
                    recording: recording.clone(),
                    limit,
                }
                .boxed(),
            ),
            recording,
        }
    }

    /// Whether another attempt can be given the whole body.
    pub fn can_replay(&self) -> bool {
        match self {
            RequestBody::Buffered { .. } => true,
            RequestBody::Streaming(_) => false,
            RequestBody::Teed { recording, .. } => {
                let r = recording.lock().unwrap_or_else(|e| e.into_inner());
                r.complete && !r.over_limit
            }
        }
    }
}

struct Tee {
    inner: ProxyBody,
    recording: Arc<std::sync::Mutex<Recording>>,
    limit: usize,
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let limit = self.limit;
        let mut r = self.recording.lock().unwrap_or_else(|e| e.into_inner());
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    r.size += d.len();
                    if r.size > limit {
                        r.over_limit = true;
                        r.chunks.clear();
                    } else if !r.over_limit {
                        r.chunks.push(d.clone());
                    }
                } else if let Some(t) = frame.trailers_ref() {
                    r.trailers = Some(t.clone());
                }
            }
            Poll::Ready(None) => r.complete = true,
            _ => {}
        }
        drop(r);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl RequestBody {
    /// A body for one attempt; `None` once a streaming body was used.
    fn take(&mut self) -> Option<ProxyBody> {
        match self {
            RequestBody::Buffered { data, trailers } => Some(
                Replay {
                    data: Some(data.clone()).filter(|d| !d.is_empty()),
                    trailers: trailers.clone(),
                }
                .boxed(),
            ),
            RequestBody::Teed { first, recording } => {
                if let Some(b) = first.take() {
                    return Some(b);
                }
                let r = recording.lock().unwrap_or_else(|e| e.into_inner());
                if !r.complete || r.over_limit {
                    return None;
                }
                Some(
                    Replay {
                        data: Some(concat(r.chunks.iter().cloned().collect(), r.size))
                            .filter(|d| !d.is_empty()),
                        trailers: r.trailers.clone(),
                    }
                    .boxed(),
                )
            }
            RequestBody::Streaming(_) => {
                match std::mem::replace(self, RequestBody::Streaming(crate::body::empty())) {
                    RequestBody::Streaming(b) => Some(b),
                    _ => None,
                }
            }
        }
    }

    pub fn replayable(&self) -> Option<(Bytes, Option<HeaderMap>)> {
        match self {
            RequestBody::Buffered { data, trailers } => Some((data.clone(), trailers.clone())),
            RequestBody::Streaming(_) | RequestBody::Teed { .. } => None,
        }
    }
}

/// Reads `body` up to `limit` bytes. Over the limit, what was read is put
/// back in front of the rest and the body streams on.
pub async fn buffer(mut body: ProxyBody, limit: usize) -> Result<RequestBody, BoxError> {
    let mut chunks: VecDeque<Bytes> = VecDeque::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(data) => {
                total += data.len();
                chunks.push_back(data);
                if total > limit {
                    return Ok(RequestBody::Streaming(
                        Prefixed {
                            prefix: chunks,
                            rest: body,
                        }
                        .boxed(),
                    ));
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    return Ok(RequestBody::Buffered {
                        data: concat(chunks, total),
                        trailers: Some(trailers),
                    });
                }
            }
        }
    }
    Ok(RequestBody::Buffered {
        data: concat(chunks, total),
        trailers: None,
    })
}

fn concat(chunks: VecDeque<Bytes>, total: usize) -> Bytes {
    if chunks.len() == 1 {
        return chunks.into_iter().next().unwrap_or_default();
    }
    let mut out = Vec::with_capacity(total);
    for c in chunks {
        out.extend_from_slice(&c);
    }
    Bytes::from(out)
}

/// A buffered body sent again.
pub struct Replay {
    pub data: Option<Bytes>,
    pub trailers: Option<HeaderMap>,
}

impl Body for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// Chunks already read, then the rest of the body.
struct Prefixed {
    prefix: VecDeque<Bytes>,
    rest: ProxyBody,
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(d) = self.prefix.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }
}

/// The parts of a request that every attempt repeats.
#[derive(Clone)]
pub struct Template {
    pub method: http::Method,
    pub uri: http::Uri,
    pub version: http::Version,
    pub headers: HeaderMap,
}

impl Template {
    pub fn from_parts(parts: &http::request::Parts) -> Template {
        Template {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
        }
    }

    pub fn request(&self, body: ProxyBody) -> Request<ProxyBody> {
        self.clone().into_request(body)
    }

    /// The request of the last attempt, which takes the head instead of
    /// copying it.
    pub fn into_request(self, body: ProxyBody) -> Request<ProxyBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers;
        req
    }
}

/// Envoy's jittered exponential backoff: the n-th retry (1-based) waits a
/// uniform time below `base × (2^n − 1)`, capped at `max`.
pub fn backoff(policy: &RetryPolicy, retry: u32) -> Duration {
    let base = policy.base_interval.as_millis().max(1) as u64;
    let max = policy.max_interval.as_millis().max(1) as u64;
    let multiplier = (1u64 << retry.min(20)) - 1;
    let ceiling = base.saturating_mul(multiplier).min(max).max(1);
    Duration::from_millis(rand::random_range(0..ceiling))
}

/// Whether a response head is retriable under `policy`.
pub fn retriable_response(policy: &RetryPolicy, resp: &Response<Incoming>) -> bool {
    retriable_head(policy, resp.status(), resp.headers())
}

pub fn retriable_head(policy: &RetryPolicy, status: StatusCode, headers: &HeaderMap) -> bool {
    let on = &policy.retry_on;
    let s = status.as_u16();
    if (on.server_error_5xx && s >= 500)
        || (on.gateway_error && matches!(s, 502..=504))
        || (on.retriable_4xx && s == 409)
        || (on.retriable_status_codes && policy.retriable_status_codes.contains(&s))
    {
        return true;
    }
    if on.retriable_headers && !policy.retriable_headers.is_empty() {
        let head = RequestHead {
            method: "",
            authority: "",
            path: "",
            scheme: "",
            headers,
        };
        if policy
            .retriable_headers
            .iter()
            .any(|m| header_matches(m, &head))
        {
            return true;
        }
    }
    // gRPC conditions read `grpc-status` of a trailers-only response.
    let grpc = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok());
    matches!(
        grpc,
        Some(1) if on.grpc_cancelled
    ) || matches!(grpc, Some(4) if on.grpc_deadline_exceeded)
        || matches!(grpc, Some(13) if on.grpc_internal)
        || matches!(grpc, Some(8) if on.grpc_resource_exhausted)
        || matches!(grpc, Some(14) if on.grpc_unavailable)
}

/// Whether a failed attempt is retriable under `policy`.
fn retriable_failure(policy: &RetryPolicy, failure: &Failure) -> bool {
    let on = &policy.retry_on;
    let reset_like = on.server_error_5xx || on.gateway_error || on.reset;
    match failure {
        Failure::Attempt(AttemptFailure::Upstream { error, .. }) => {
            if error.is_connect_failure() {
                reset_like || on.connect_failure
            } else {
                reset_like || (on.refused_stream && error.is_refused_stream())
            }
        }
        Failure::PerTryTimeout { .. } | Failure::PerTryIdleTimeout { .. } => reset_like,
        // No host and overflow are not retried, as in Envoy.
        Failure::Attempt(_) => false,
    }
}

enum Failure {
    Attempt(AttemptFailure),
    PerTryTimeout { timeout: Duration },
    PerTryIdleTimeout { timeout: Duration },
}

/// What the stage hands back on success.
pub type Sent = (Response<Incoming>, Arc<Host>, RequestGuard);

/// Runs the attempts. `chosen` always holds the host of the current
/// attempt, so a route timeout that cancels this can name it.
#[expect(clippy::too_many_arguments)]
pub async fn run(
    cluster: &Arc<ClusterRuntime>,
    hash: Option<u64>,
    template: Template,
    mut body: RequestBody,
    protocol: Protocol,
    policy: Option<&RetryPolicy>,
    chosen: &mut Option<Arc<Host>>,
    log: &mut LogEntry,
) -> Result<Sent, LocalReply> {
    let cluster_name = cluster.config.name.as_str();
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut retries = 0u32;
    let mut retry_guard = None;
    let mut template = Some(template);
    loop {
        let Some(req_body) = body.take() else {
            // Unreachable in practice: a streaming body is never retried.
            return Err(LocalReply::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ResponseFlag::UpstreamRetryLimitExceeded,
                "request body could not be replayed",
            ));
        };
        // The attempt that cannot be retried takes the head; the others copy
        // it (most requests have no retry policy: one attempt, no copy).
        let last = policy.is_none_or(|p| retries >= p.num_retries);
        let request = match (last, template.take()) {
            (true, Some(t)) => t.into_request(req_body),
            (false, Some(t)) => {
                let request = t.request(req_body);
                template = Some(t);
                request
            }
            (_, None) => {
                return Err(LocalReply::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ResponseFlag::UpstreamRetryLimitExceeded,
                    "request head already sent on the last attempt",
                ));
            }
        };
        let (avoid, reselect) = match policy {
            Some(p) if p.avoid_previous_hosts => {
                (tried.as_slice(), p.host_selection_retry_max_attempts)
            }
            _ => (&[][..], 0),
        };
        let fut = attempt::send(cluster, hash, request, protocol, chosen, avoid, reselect);
        // The per-try timeout and, before the response head, the per-try
        // idle timeout (nothing comes back at all) bound the attempt.
        let per_try = policy.and_then(|p| p.per_try_timeout);
        let per_try_idle = policy.and_then(|p| p.per_try_idle_timeout);
        let limit = match (per_try, per_try_idle) {
            (Some(a), Some(b)) => Some((a.min(b), b < a)),
            (Some(a), None) => Some((a, false)),
            (None, Some(b)) => Some((b, true)),
            (None, None) => None,
        };
        let outcome = match limit {
            Some((t, idle)) => match tokio::time::timeout(t, fut).await {
                Ok(r) => r.map_err(Failure::Attempt),
                Err(_) => {
                    if idle {
                        cluster.stats.upstream_rq_per_try_idle_timeout.inc();
                    } else {
                        cluster.stats.upstream_rq_per_try_timeout.inc();
                    }
                    if let Some(host) = chosen.as_ref() {
                        host.state.stats.rq_timeout.inc();
                        cluster.record_outcome(host, Outcome::LocalFailure);
                    }
                    if idle {
                        Err(Failure::PerTryIdleTimeout { timeout: t })
                    } else {
                        Err(Failure::PerTryTimeout { timeout: t })
                    }
                }
            },
            None => fut.await.map_err(Failure::Attempt),
        };
        drop(retry_guard.take());
        if let Some(h) = chosen.as_ref() {
            log.upstream_host = Some(h.state.address);
            tried.push(h.state.address);
        }

        let retriable = match (&outcome, policy) {
            (Ok((resp, _, _)), Some(p)) => retriable_response(p, resp),
            (Err(f), Some(p)) => retriable_failure(p, f),
            (_, None) => false,
        };
        if !retriable {
            if retries > 0 && outcome.is_ok() {
                cluster.stats.upstream_rq_retry_success.inc();
            }
            return finish(outcome, cluster_name, retries, false);
        }
        let Some(policy) = policy else {
            return finish(outcome, cluster_name, retries, false);
        };
        if !body.can_replay() {
            log.details = Some(format!(
                "not retried: request body over the {} byte retry buffer limit of cluster {cluster_name}, or not yet complete",
                cluster.config.buffer_limit_bytes
            ));
            return finish(outcome, cluster_name, retries, false);
        }
        if retries >= policy.num_retries {
            cluster.stats.upstream_rq_retry_limit_exceeded.inc();
            log.flags.insert(ResponseFlag::UpstreamRetryLimitExceeded);
            return finish(outcome, cluster_name, retries, true);
        }
        // Room for one more retry (circuit breaker or budget)?
        let Some(guard) = cluster.breaker.try_retry() else {
            return finish(outcome, cluster_name, retries, false);
        };
        // The failed response's connection goes back once its body is
        // drained; dropping it here resets an h1 connection, which is fine.
        if let Ok((resp, _, guard)) = outcome {
            guard.responded(resp.status().as_u16());
        }
        tokio::time::sleep(backoff(policy, retries + 1)).await;
        retries += 1;
        cluster.stats.upstream_rq_retry.inc();
        retry_guard = Some(guard);
    }
}

fn finish(
    outcome: Result<Sent, Failure>,
    cluster: &str,
    retries: u32,
    exhausted: bool,
) -> Result<Sent, LocalReply> {
    let suffix = match (exhausted, retries) {
        (true, 1) => ", 1 retry exhausted".to_string(),
        (true, n) => format!(", {n} retries exhausted"),
        (false, 0) => String::new(),
        (false, 1) => ", after 1 retry".to_string(),
        (false, n) => format!(", after {n} retries"),
    };
    match outcome {
        Ok(sent) => Ok(sent),
        Err(Failure::Attempt(f)) => {
            let mut reply = f.into_reply(cluster);
            reply.reason.push_str(&suffix);
            Err(reply)
        }
        Err(Failure::PerTryIdleTimeout { timeout }) => Err(LocalReply::new(
            StatusCode::GATEWAY_TIMEOUT,
            ResponseFlag::UpstreamRequestTimeout,
            format!(
                "upstream request timeout: nothing back within the per-try idle timeout of {timeout:?} from cluster {cluster}{suffix}"
            ),
        )),
        Err(Failure::PerTryTimeout { timeout }) => Err(LocalReply::new(
            StatusCode::GATEWAY_TIMEOUT,
            ResponseFlag::UpstreamRequestTimeout,
            format!(
                "upstream request timeout: no response within the per-try timeout of {timeout:?} from cluster {cluster}{suffix}"
            ),
        )),
    }
}

/// Request headers that shape retries, as Envoy's router reads them.
pub const X_ENVOY_RETRY_ON: HeaderName = HeaderName::from_static("x-envoy-retry-on");
pub const X_ENVOY_RETRY_GRPC_ON: HeaderName = HeaderName::from_static("x-envoy-retry-grpc-on");
pub const X_ENVOY_MAX_RETRIES: HeaderName = HeaderName::from_static("x-envoy-max-retries");
pub const X_ENVOY_RETRIABLE_STATUS_CODES: HeaderName =
    HeaderName::from_static("x-envoy-retriable-status-codes");
pub const X_ENVOY_RETRIABLE_HEADER_NAMES: HeaderName =
    HeaderName::from_static("x-envoy-retriable-header-names");
const RETRY_HEADERS: [HeaderName; 5] = [
    X_ENVOY_RETRY_ON,
    X_ENVOY_RETRY_GRPC_ON,
    X_ENVOY_MAX_RETRIES,
    X_ENVOY_RETRIABLE_STATUS_CODES,
    X_ENVOY_RETRIABLE_HEADER_NAMES,
];

/// Whether a request is internal, Envoy's way: `x-forwarded-for` (as the
/// connection manager left it, the peer appended under
/// `use_remote_address`) holds exactly one address, inside `internal`
/// (the `internal_address_config` CIDR ranges).
pub fn request_is_internal(headers: &HeaderMap, internal: &[IpNet]) -> bool {
    if internal.is_empty() {
        return false;
    }
    let entries: Vec<&str> = headers
        .get_all(super::headers::X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    match entries.as_slice() {
        [one] => one
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| internal.iter().any(|c| c.contains(&ip))),
        _ => false,
    }
}

/// Removes the retry headers of an untrusted request, so they neither
/// count here nor travel upstream.
pub fn strip_retry_headers(headers: &mut HeaderMap) {
    // Most requests carry none: one pass over their names, no hashing.
    if !headers.keys().any(|k| RETRY_HEADERS.contains(k)) {
        return;
    }
    for h in &RETRY_HEADERS {
        headers.remove(h);
    }
}

/// The policy in force for one request: `configured` (route, else virtual
/// host) merged with the request's retry headers. Conditions from
/// `x-envoy-retry-on` / `x-envoy-retry-grpc-on` add to the configured
/// ones (unknown ones are ignored, as Envoy does); with no configured
/// policy they alone enable retries (one by default);
/// `x-envoy-max-retries` replaces the number of retries whenever some
/// condition is on.
pub fn effective_policy(
    configured: Option<&RetryPolicy>,
    headers: &HeaderMap,
) -> Option<RetryPolicy> {
    let text = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let header_on = [text(X_ENVOY_RETRY_ON), text(X_ENVOY_RETRY_GRPC_ON)]
        .into_iter()
        .flatten()
        .fold(RetryOn::default(), |mut on, s| {
            merge_conditions(&mut on, s);
            on
        });
    let mut policy = match configured {
        Some(p) => p.clone(),
        None if header_on == RetryOn::default() => return None,
        None => RetryPolicy {
            retry_on: RetryOn::default(),
            num_retries: DEFAULT_NUM_RETRIES,
            per_try_timeout: None,
            per_try_idle_timeout: None,
            retriable_status_codes: vec![],
            retriable_headers: vec![],
            avoid_previous_hosts: false,
            host_selection_retry_max_attempts: 1,
            base_interval: DEFAULT_RETRY_BASE_INTERVAL,
            max_interval: DEFAULT_RETRY_BASE_INTERVAL * DEFAULT_RETRY_MAX_INTERVAL_FACTOR,
        },
    };
    let on = &mut policy.retry_on;
    let h = header_on;
    on.server_error_5xx |= h.server_error_5xx;
    on.gateway_error |= h.gateway_error;
    on.reset |= h.reset;
    on.connect_failure |= h.connect_failure;
    on.refused_stream |= h.refused_stream;
    on.retriable_4xx |= h.retriable_4xx;
    on.retriable_status_codes |= h.retriable_status_codes;
    on.retriable_headers |= h.retriable_headers;
    on.grpc_cancelled |= h.grpc_cancelled;
    on.grpc_deadline_exceeded |= h.grpc_deadline_exceeded;
    on.grpc_internal |= h.grpc_internal;
    on.grpc_resource_exhausted |= h.grpc_resource_exhausted;
    on.grpc_unavailable |= h.grpc_unavailable;
    if let Some(codes) = text(X_ENVOY_RETRIABLE_STATUS_CODES) {
        policy.retriable_status_codes.extend(
            codes
                .split(',')
                .filter_map(|c| c.trim().parse::<u16>().ok())
                .filter(|c| (100..=599).contains(c)),
        );
    }
    if let Some(names) = text(X_ENVOY_RETRIABLE_HEADER_NAMES) {
        policy.retriable_headers.extend(
            names
                .split(',')
                .map(|n| n.trim().to_ascii_lowercase())
                .filter(|n| !n.is_empty())
                .map(|name| HeaderMatcher {
                    name,
                    kind: HeaderMatchKind::Present(true),
                    invert: false,
                    treat_missing_as_empty: false,
                }),
        );
    }
    if policy.retry_on != RetryOn::default()
        && let Some(n) = text(X_ENVOY_MAX_RETRIES).and_then(|v| v.trim().parse::<u32>().ok())
    {
        policy.num_retries = n;
    }
    Some(policy)
}

/// Adds the conditions named in a header value; unknown names are skipped.
fn merge_conditions(on: &mut RetryOn, s: &str) {
    for cond in s.split(',').map(str::trim) {
        match cond {
            "5xx" => on.server_error_5xx = true,
            "gateway-error" => on.gateway_error = true,
            "reset" => on.reset = true,
            "connect-failure" => on.connect_failure = true,
            "refused-stream" => on.refused_stream = true,
            "retriable-4xx" => on.retriable_4xx = true,
            "retriable-status-codes" => on.retriable_status_codes = true,
            "retriable-headers" => on.retriable_headers = true,
            "cancelled" => on.grpc_cancelled = true,
            "deadline-exceeded" => on.grpc_deadline_exceeded = true,
            "internal" => on.grpc_internal = true,
            "resource-exhausted" => on.grpc_resource_exhausted = true,
            "unavailable" => on.grpc_unavailable = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: RetryOn) -> RetryPolicy {
        RetryPolicy {
            retry_on: on,
            num_retries: 3,
            per_try_timeout: None,
            per_try_idle_timeout: None,
            retriable_status_codes: vec![418],
            retriable_headers: vec![],
            avoid_previous_hosts: false,
            host_selection_retry_max_attempts: 1,
            base_interval: Duration::from_millis(25),
            max_interval: Duration::from_millis(250),
        }
    }

    #[test]
    fn conditions() {
        let h = HeaderMap::new();
        let p = policy(RetryOn {
            gateway_error: true,
            ..Default::default()
        });
        assert!(retriable_head(&p, StatusCode::BAD_GATEWAY, &h));
        assert!(!retriable_head(&p, StatusCode::INTERNAL_SERVER_ERROR, &h));
        let p = policy(RetryOn {
            retriable_status_codes: true,
            retriable_4xx: true,
            ..Default::default()
        });
        assert!(retriable_head(&p, StatusCode::IM_A_TEAPOT, &h));
        assert!(retriable_head(&p, StatusCode::CONFLICT, &h));
        assert!(!retriable_head(&p, StatusCode::NOT_FOUND, &h));
        let p = policy(RetryOn {
            grpc_unavailable: true,
            ..Default::default()
        });
        let mut g = HeaderMap::new();
        g.insert("grpc-status", "14".parse().unwrap());
        assert!(retriable_head(&p, StatusCode::OK, &g));
        g.insert("grpc-status", "0".parse().unwrap());
        assert!(!retriable_head(&p, StatusCode::OK, &g));
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let p = policy(RetryOn::default());
        for _ in 0..200 {
            assert!(backoff(&p, 1) < Duration::from_millis(25));
            assert!(backoff(&p, 2) < Duration::from_millis(75));
            assert!(backoff(&p, 10) < Duration::from_millis(250));
        }
    }

    #[tokio::test]
    async fn tee_replays_only_complete_bodies_within_limit() {
        let mut b = RequestBody::tee(crate::body::full("abc"), 8);
        assert!(!b.can_replay());
        let first = b.take().unwrap().collect().await.unwrap().to_bytes();
        assert_eq!(first, Bytes::from("abc"));
        assert!(b.can_replay());
        let again = b.take().unwrap().collect().await.unwrap().to_bytes();
        assert_eq!(again, Bytes::from("abc"));
        let mut big = RequestBody::tee(crate::body::full("abcdefghij"), 4);
        let _ = big.take().unwrap().collect().await.unwrap();
        assert!(!big.can_replay() && big.take().is_none());
    }

    #[tokio::test]
    async fn buffers_within_limit_and_streams_over_it() {
        let b = buffer(crate::body::full("hello world"), 64).await.unwrap();
        assert_eq!(b.replayable().unwrap().0, Bytes::from("hello world"));
        let b = buffer(crate::body::full("hello world"), 4).await.unwrap();
        let RequestBody::Streaming(s) = b else {
            panic!("expected streaming")
        };
        let all = s.collect().await.unwrap().to_bytes();
        assert_eq!(all, Bytes::from("hello world"));
    }

    #[test]
    fn request_headers_merge_into_the_policy() {
        let mut h = HeaderMap::new();
        assert!(effective_policy(None, &h).is_none());
        h.insert(X_ENVOY_MAX_RETRIES, "4".parse().unwrap());
        assert!(
            effective_policy(None, &h).is_none(),
            "no condition, no retries"
        );
        h.insert(X_ENVOY_RETRY_ON, "5xx, bogus".parse().unwrap());
        let p = effective_policy(None, &h).unwrap();
        assert!(p.retry_on.server_error_5xx);
        assert_eq!(p.num_retries, 4);
        let configured = policy(RetryOn {
            gateway_error: true,
            ..Default::default()
        });
        h.insert(X_ENVOY_RETRY_ON, "retriable-headers".parse().unwrap());
        h.insert(
            X_ENVOY_RETRIABLE_HEADER_NAMES,
            "X-Retry-Me".parse().unwrap(),
        );
        h.insert(X_ENVOY_RETRIABLE_STATUS_CODES, "429,bad".parse().unwrap());
        let p = effective_policy(Some(&configured), &h).unwrap();
        assert!(p.retry_on.gateway_error && p.retry_on.retriable_headers);
        assert_eq!(p.retriable_status_codes, vec![418, 429]);
        let mut resp = HeaderMap::new();
        assert!(!retriable_head(&p, StatusCode::OK, &resp));
        resp.insert("x-retry-me", "1".parse().unwrap());
        assert!(retriable_head(&p, StatusCode::OK, &resp));
    }

    #[test]
    fn internal_requests_have_one_forwarded_address_in_range() {
        let loopback: [IpNet; 1] = ["127.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        assert!(!request_is_internal(&h, &loopback), "no address at all");
        h.insert("x-forwarded-for", "127.0.0.1".parse().unwrap());
        assert!(request_is_internal(&h, &loopback));
        assert!(!request_is_internal(&h, &[]), "no internal ranges");
        h.insert("x-forwarded-for", "10.0.0.1, 127.0.0.1".parse().unwrap());
        assert!(!request_is_internal(&h, &loopback), "two hops");
        h.insert("x-forwarded-for", "8.8.8.8".parse().unwrap());
        assert!(!request_is_internal(&h, &loopback));
    }
}
