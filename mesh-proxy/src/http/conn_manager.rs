//! The HTTP connection manager: serves HTTP/1.1 and HTTP/2 (prior
//! knowledge) on a downstream connection, and runs each request through
//! routing and forwarding with the configuration in force when it arrived.
//! Every request ends in one access log line, written when its response
//! body is done.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Instant, SystemTime};

use http::{HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

use super::forward;
use super::headers;
use super::local_reply::{LocalReply, ResponseFlag};
use super::matcher::RequestHead;
use super::router;
use crate::access_log::LogEntry;
use crate::body::{ProxyBody, boxed, full};
use crate::model::{HttpCodec, HttpConnectionManagerConfig, RouteAction, RouteSource, RouteTable};
use crate::observed_body::ObservedBody;
use crate::server::{Active, Shared};
use crate::stats::{Counter, Gauge, Scope};
use crate::upstream::pool::Protocol;

/// `http.PREFIX.*` stats.
#[derive(Debug, Clone)]
pub struct HcmStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_active: Gauge,
    pub downstream_rq_total: Counter,
    pub downstream_rq_active: Gauge,
    pub downstream_rq_2xx: Counter,
    pub downstream_rq_3xx: Counter,
    pub downstream_rq_4xx: Counter,
    pub downstream_rq_5xx: Counter,
    pub no_route: Counter,
    pub no_cluster: Counter,
    pub rq_direct_response: Counter,
    pub rq_redirect: Counter,
    pub fault: super::fault::FaultStats,
    pub stream_timeouts: super::stream_timeout::StreamTimeoutStats,
    pub downstream_cx_idle_timeout: Counter,
    pub downstream_cx_max_duration_reached: Counter,
    /// `request_headers_timeout` fired (Envoy's name).
    pub downstream_rq_header_timeout: Counter,
}

impl HcmStats {
    fn new(shared: &Shared, prefix: &str) -> HcmStats {
        let s = Scope::http(prefix);
        let st = &shared.stats;
        HcmStats {
            downstream_cx_total: st.counter(&s, "downstream_cx_total"),
            downstream_cx_active: st.gauge(&s, "downstream_cx_active"),
            downstream_rq_total: st.counter(&s, "downstream_rq_total"),
            downstream_rq_active: st.gauge(&s, "downstream_rq_active"),
            downstream_rq_2xx: st.counter(&s, "downstream_rq_2xx"),
            downstream_rq_3xx: st.counter(&s, "downstream_rq_3xx"),
            downstream_rq_4xx: st.counter(&s, "downstream_rq_4xx"),
            downstream_rq_5xx: st.counter(&s, "downstream_rq_5xx"),
            no_route: st.counter(&s, "no_route"),
            no_cluster: st.counter(&s, "no_cluster"),
            rq_direct_response: st.counter(&s, "rq_direct_response"),
            rq_redirect: st.counter(&s, "rq_redirect"),
            fault: super::fault::FaultStats::new(st, prefix),
            stream_timeouts: super::stream_timeout::StreamTimeoutStats {
                downstream_rq_idle_timeout: st.counter(&s, "downstream_rq_idle_timeout"),
                downstream_rq_timeout: st.counter(&s, "downstream_rq_timeout"),
            },
            downstream_cx_idle_timeout: st.counter(&s, "downstream_cx_idle_timeout"),
            downstream_cx_max_duration_reached: st
                .counter(&s, "downstream_cx_max_duration_reached"),
            downstream_rq_header_timeout: st.counter(&s, "downstream_rq_header_timeout"),
        }
    }

    fn record_status(&self, status: u16) {
        match status / 100 {
            2 => self.downstream_rq_2xx.inc(),
            3 => self.downstream_rq_3xx.inc(),
            4 => self.downstream_rq_4xx.inc(),
            5 => self.downstream_rq_5xx.inc(),
            _ => {}
        }
    }
}

/// What every request on one downstream connection shares.
pub struct ConnContext {
    pub shared: Arc<Shared>,
    pub hcm: Arc<HttpConnectionManagerConfig>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub scheme: &'static str,
    /// The downstream TLS session (peer certificate, our identity), if any.
    pub tls: Option<Arc<crate::tls::DownstreamTlsInfo>>,
    pub stats: HcmStats,
    /// Requests seen on this connection, for `max_requests_per_connection`.
    pub requests: std::sync::atomic::AtomicU32,
    /// Active streams and the connection's idle / max duration timers.
    pub lifetime: Arc<super::connection_lifetime::DownstreamLifetime>,
    /// `server_name` as a header value, parsed once per connection.
    pub server_header: Option<HeaderValue>,
}

pub async fn serve(
    shared: Arc<Shared>,
    hcm: Arc<HttpConnectionManagerConfig>,
    stream: crate::tls::DownstreamStream,
    peer: SocketAddr,
    local: SocketAddr,
) {
    let stats = HcmStats::new(&shared, &hcm.stat_prefix);
    stats.downstream_cx_total.inc();
    stats.downstream_cx_active.inc();
    let mut shutdown = shared.shutdown.subscribe();
    let lifetime = super::connection_lifetime::DownstreamLifetime::new(
        hcm.idle_timeout,
        hcm.max_connection_duration,
        stats.downstream_cx_idle_timeout.clone(),
        stats.downstream_cx_max_duration_reached.clone(),
    );
    let ctx = Arc::new(ConnContext {
        shared,
        hcm: hcm.clone(),
        peer,
        local,
        scheme: if stream.tls.is_some() {
            "https"
        } else {
            "http"
        },
        tls: stream.tls.clone(),
        stats: stats.clone(),
        requests: Default::default(),
        lifetime: lifetime.clone(),
        server_header: HeaderValue::from_str(&hcm.server_name).ok(),
    });
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(ctx, req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(hcm.request_headers_timeout);
    builder.http2().timer(TokioTimer::new());
    match hcm.codec {
        HttpCodec::Http1 => builder = builder.http1_only(),
        HttpCodec::Http2 => builder = builder.http2_only(),
        HttpCodec::Auto => {}
    }
    let (io, first_byte) = super::headers_timeout::FirstByte::new(stream.io);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        // Nothing sent at all: closed, as a head that is too slow is.
        () = first_byte.missed(hcm.request_headers_timeout) => {
            stats.downstream_rq_header_timeout.inc();
            tracing::debug!(%peer, "no request within request_headers_timeout; closing");
            Ok(())
        }
        _ = crate::server::stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        // Idle (no active stream) or past max_connection_duration: close
        // after the streams in flight, HTTP/2 with a GOAWAY.
        expiry = lifetime.expired() => {
            tracing::debug!(%peer, ?expiry, "downstream connection timer fired");
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            stats.downstream_rq_header_timeout.inc();
        }
        // Malformed requests and resets end here, never in a panic.
        tracing::debug!(%peer, error = %e, "downstream connection ended with an error");
    }
    stats.downstream_cx_active.dec();
}

/// One request from arrival to response head; the access log line is
/// written when the response body is done.
async fn handle(ctx: Arc<ConnContext>, mut req: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let active = ctx.shared.active.load_full();
    let stream = ctx.lifetime.stream_started();
    let clock = super::stream_timeout::StreamClock::new(ctx.hcm.stream_idle_timeout);
    ctx.stats.downstream_rq_total.inc();
    ctx.stats.downstream_rq_active.inc();

    let on_upgrade = req
        .headers()
        .contains_key(http::header::UPGRADE)
        .then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let received = Arc::new(AtomicU64::new(0));
    let body = boxed(ObservedBody::new(
        crate::body::downstream(body),
        received.clone(),
    ));
    let body = boxed(super::stream_timeout::RequestBody::new(body, clock.clone()));

    let protocol = if parts.version == Version::HTTP_2 {
        Protocol::Http2
    } else {
        Protocol::Http1
    };
    // Absolute-form targets (`GET http://host/path`) carry the authority in
    // the URI; it wins over `Host`, as RFC 9112 §3.2.2 says.
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

    if ctx.hcm.generate_request_id {
        headers::ensure_request_id(&mut parts.headers);
    }
    headers::set_forwarding_headers(
        &mut parts.headers,
        ctx.peer.ip(),
        ctx.scheme,
        ctx.hcm.use_remote_address,
    );
    // mTLS: the peer's identity for routing/authorization, and XFCC.
    crate::tls::xfcc::apply(
        &mut parts.headers,
        ctx.hcm.forward_client_cert,
        ctx.hcm.client_cert_details,
        ctx.tls.as_deref(),
    );
    if let Some(uri) = ctx.tls.as_ref().and_then(|t| t.peer.as_ref()?.uri.clone()) {
        parts.extensions.insert(crate::tls::PeerIdentity(uri));
    }

    // Without access logs the entry only collects flags and names; the
    // copies of the request's text and headers are made for a log only.
    let logging = !ctx.hcm.access_log.is_empty();
    let mut log = LogEntry {
        start: Some(SystemTime::now()),
        protocol: Some(match parts.version {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        }),
        downstream_remote: Some(ctx.peer),
        downstream_local: Some(ctx.local),
        downstream_tls: ctx.tls.clone(),
        ..LogEntry::default()
    };
    if logging {
        log.method = Some(parts.method.to_string());
        log.path = Some(path.clone());
        log.authority = Some(authority.clone());
        log.request_headers = parts.headers.clone();
    }

    let routed = match super::request_check::check(&parts) {
        // Nothing of a malformed request goes upstream; the connection
        // closes after the reply, as Envoy's codec closes it.
        Err(reply) => {
            let protocol_error = reply.flag == Some(ResponseFlag::DownstreamProtocolError);
            let mut response = local(&mut log, reply);
            if protocol_error && protocol == Protocol::Http1 {
                response
                    .headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response)
        }
        Ok(()) => {
            super::stream_timeout::guard(
                clock.clone(),
                ctx.hcm.request_timeout,
                &ctx.stats.stream_timeouts,
                // Boxed: routing and forwarding make a state machine of
                // several KiB, which the timers' `select!` and the task-local
                // scope would otherwise copy at every layer (a fifth of all
                // instructions, by callgrind, before it was boxed).
                Box::pin(route(
                    &ctx, &active, parts, body, on_upgrade, &authority, &path, protocol, &mut log,
                )),
            )
            .await
        }
    };
    let mut response = match routed {
        Ok(response) => response,
        Err(timeout) => local(&mut log, timeout.into_reply()),
    };
    *response.version_mut() = match protocol {
        Protocol::Http2 => Version::HTTP_2,
        Protocol::Http1 => Version::HTTP_11,
    };

    // `max_requests_per_connection`: the last allowed HTTP/1.1 request
    // closes the connection after its response.
    let seen = ctx
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    if protocol == Protocol::Http1
        && ctx
            .hcm
            .max_requests_per_connection
            .is_some_and(|max| seen >= max)
    {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    if !ctx
        .shared
        .reason_header
        .shows_details(ctx.hcm.use_remote_address)
    {
        super::reason_header::hide_details(&mut response);
    }
    // Envoy's default `server_header_transformation: OVERWRITE`.
    if let Some(v) = &ctx.server_header {
        response
            .headers_mut()
            .insert(http::header::SERVER, v.clone());
    }
    let status = response.status().as_u16();
    ctx.stats.record_status(status);
    log.response_code = status;
    if logging {
        log.response_headers = response.headers().clone();
    }
    let (parts, body) = response.into_parts();
    let idle_clock = clock.clone();
    let body = boxed(super::stream_timeout::IdleBody::new(
        body,
        clock,
        ctx.stats.stream_timeouts.downstream_rq_idle_timeout.clone(),
    ));
    let sent = Arc::new(AtomicU64::new(0));
    let writer_ctx = ctx.clone();
    let body = ObservedBody::new(body, sent).on_done(move |bytes_sent| {
        writer_ctx.stats.downstream_rq_active.dec();
        drop(stream);
        if idle_clock.idle_fired() {
            log.flags.insert(ResponseFlag::StreamIdleTimeout);
        }
        log.bytes_sent = bytes_sent;
        log.bytes_received = received.load(std::sync::atomic::Ordering::Relaxed);
        log.duration = started.elapsed();
        writer_ctx
            .shared
            .access_logs
            .write(&writer_ctx.hcm.access_log, &log);
    });
    Response::from_parts(parts, boxed(body))
}

#[expect(clippy::too_many_arguments)]
async fn route(
    ctx: &ConnContext,
    active: &Arc<Active>,
    parts: http::request::Parts,
    body: ProxyBody,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    authority: &str,
    path: &str,
    protocol: Protocol,
    log: &mut LogEntry,
) -> Response<ProxyBody> {
    let table: Option<Arc<RouteTable>> = match &ctx.hcm.routes {
        RouteSource::Inline(t) => Some(t.clone()),
        RouteSource::Rds(name) => active.snapshot.routes.get(name).cloned(),
    };
    let head = RequestHead {
        method: parts.method.as_str(),
        authority,
        path,
        scheme: ctx.scheme,
        headers: &parts.headers,
    };
    let selected = table.as_ref().and_then(|t| {
        let vh = router::select_virtual_host(t, authority)?;
        let route = router::select_route(vh, &head)?;
        Some((vh, route))
    });
    let Some((vh, route)) = selected else {
        ctx.stats.no_route.inc();
        tracing::debug!(target: "mesh_proxy::http::router", %authority, %path, "no route");
        return local(log, LocalReply::no_route(authority, path));
    };
    let Some(table) = table.as_ref() else {
        return local(log, LocalReply::no_route(authority, path));
    };
    log.route_name = Some(route.name.clone()).filter(|n| !n.is_empty());
    tracing::debug!(target: "mesh_proxy::http::router", %authority, %path, vhost = %vh.name, route = %route.name, "route selected");

    // The fault filter runs before the router; an abort never goes upstream.
    let mut _active_fault = None;
    if let Some(cfg) = super::fault::effective(&ctx.hcm, vh, route) {
        match super::fault::apply(cfg, &head, &ctx.stats.fault, log).await {
            Ok(guard) => _active_fault = guard,
            Err(abort) => {
                log.flags.insert(ResponseFlag::FaultInjected);
                log.details = Some(abort.reply.reason.clone());
                return abort.into_response();
            }
        }
    }

    let mut response = match &route.action {
        RouteAction::DirectResponse { status, body } => {
            ctx.stats.rq_direct_response.inc();
            let mut resp = Response::new(full(body.clone().unwrap_or_default()));
            *resp.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            if body.is_some() {
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain"),
                );
            }
            resp
        }
        RouteAction::Redirect(r) => {
            ctx.stats.rq_redirect.inc();
            let location =
                router::redirect_location(r, &route.matcher, ctx.scheme, authority, path);
            let mut resp = Response::new(crate::body::empty());
            *resp.status_mut() =
                StatusCode::from_u16(r.status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(http::header::LOCATION, v);
            }
            resp
        }
        RouteAction::Forward(action) => {
            let request = forward::Downstream {
                parts,
                body,
                on_upgrade,
                authority,
                path,
                protocol,
            };
            match forward::forward(ctx, active, table, vh, route, action, request, log).await {
                Ok(resp) => resp,
                Err(reply) => return local(log, reply),
            }
        }
    };
    headers::apply_response_mutations(
        response.headers_mut(),
        &[&route.headers, &vh.headers, &table.headers],
    );
    response
}

fn local(log: &mut LogEntry, reply: LocalReply) -> Response<ProxyBody> {
    if let Some(flag) = reply.flag {
        log.flags.insert(flag);
    }
    log.details = Some(reply.reason.clone());
    reply.into_response()
}
