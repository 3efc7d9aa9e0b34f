//! The HTTP fault filter: delays and aborts a share of requests, as
//! configured on the listener's fault filter or overridden per virtual host
//! or route through `typed_per_filter_config`. A route's override only
//! takes effect when the connection manager's `http_filters` include the
//! fault filter, as in Envoy. Aborted requests never reach an upstream.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode};

use super::local_reply::{LocalReply, ResponseFlag};
use super::matcher::{RequestHead, header_matches};
use crate::access_log::LogEntry;
use crate::body::ProxyBody;
use crate::model::{
    FaultAbortKind, FaultConfig, FaultDelayKind, HttpConnectionManagerConfig, HttpFilter, Route,
    VirtualHost,
};
use crate::stats::{Counter, Gauge, Scope, Stats};

pub const DELAY_HEADER: &str = "x-envoy-fault-delay-request";
pub const ABORT_HEADER: &str = "x-envoy-fault-abort-request";
pub const ABORT_GRPC_HEADER: &str = "x-envoy-fault-abort-grpc-request";

/// `http.PREFIX.fault.*`.
#[derive(Debug, Clone)]
pub struct FaultStats {
    pub delays_injected: Counter,
    pub aborts_injected: Counter,
    pub active_faults: Gauge,
    pub faults_overflow: Counter,
}

impl FaultStats {
    pub fn new(stats: &Stats, stat_prefix: &str) -> FaultStats {
        let s = Scope::http(stat_prefix);
        FaultStats {
            delays_injected: stats.counter(&s, "fault.delays_injected"),
            aborts_injected: stats.counter(&s, "fault.aborts_injected"),
            active_faults: stats.gauge(&s, "fault.active_faults"),
            faults_overflow: stats.counter(&s, "fault.faults_overflow"),
        }
    }
}

/// The fault configuration in force for a route: the most specific
/// override (route, then virtual host), else the listener's; nothing when
/// the connection manager has no fault filter.
pub fn effective<'a>(
    hcm: &'a HttpConnectionManagerConfig,
    vh: &'a VirtualHost,
    route: &'a Route,
) -> Option<&'a FaultConfig> {
    let listener = hcm.http_filters.iter().find_map(|f| match f {
        HttpFilter::Fault(c) => Some(c.as_ref()),
        _ => None,
    })?;
    Some(
        route
            .fault
            .as_ref()
            .or(vh.fault.as_ref())
            .unwrap_or(listener),
    )
}

/// An abort: the local reply, and for gRPC the status to send as
/// `grpc-status` on a 200.
#[derive(Debug)]
pub struct Abort {
    pub reply: LocalReply,
    pub grpc_status: Option<u32>,
}

impl Abort {
    pub fn into_response(self) -> Response<ProxyBody> {
        let mut resp = self.reply.into_response();
        if let Some(code) = self.grpc_status {
            let h = resp.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            if let Ok(v) = HeaderValue::from_str(&code.to_string()) {
                h.insert("grpc-status", v);
            }
        }
        resp
    }
}

/// Keeps `fault.active_faults` right for the request's lifetime.
#[derive(Debug)]
pub struct ActiveFault(Gauge);

impl Drop for ActiveFault {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn header_u64(head: &RequestHead<'_>, name: &str) -> Option<u64> {
    head.header(name)?.trim().parse().ok()
}

/// Runs the filter: may sleep (delay, flag `DI`), then may abort (flag
/// `FI`). `Ok` carries a guard counting the active fault, if any.
pub async fn apply(
    cfg: &FaultConfig,
    head: &RequestHead<'_>,
    stats: &FaultStats,
    log: &mut LogEntry,
) -> Result<Option<ActiveFault>, Abort> {
    if !cfg.headers.iter().all(|m| header_matches(m, head)) {
        return Ok(None);
    }
    let delay = cfg.delay.as_ref().and_then(|d| {
        let time = match d.kind {
            FaultDelayKind::Fixed(t) => Some(t),
            FaultDelayKind::FromHeader => header_u64(head, DELAY_HEADER).map(Duration::from_millis),
        }?;
        d.percentage.sample().then_some(time)
    });
    let abort = cfg.abort.as_ref().and_then(|a| {
        let kind = match a.kind {
            FaultAbortKind::Http(s) => (Some(s), None),
            FaultAbortKind::Grpc(g) => (None, Some(g)),
            FaultAbortKind::FromHeader => match header_u64(head, ABORT_HEADER) {
                Some(s) => (Some(s as u16), None),
                None => (None, header_u64(head, ABORT_GRPC_HEADER).map(|g| g as u32)),
            },
        };
        if kind == (None, None) {
            return None;
        }
        a.percentage.sample().then_some(kind)
    });
    if delay.is_none() && abort.is_none() {
        return Ok(None);
    }
    if let Some(max) = cfg.max_active_faults
        && stats.active_faults.get() >= i64::from(max)
    {
        stats.faults_overflow.inc();
        return Ok(None);
    }
    stats.active_faults.inc();
    let guard = ActiveFault(stats.active_faults.clone());
    if let Some(time) = delay {
        stats.delays_injected.inc();
        log.flags.insert(ResponseFlag::DelayInjected);
        tokio::time::sleep(time).await;
    }
    match abort {
        Some((Some(status), _)) => {
            stats.aborts_injected.inc();
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            Err(Abort {
                reply: LocalReply::new(
                    status,
                    ResponseFlag::FaultInjected,
                    format!(
                        "fault filter abort: injected HTTP status {}",
                        status.as_u16()
                    ),
                ),
                grpc_status: None,
            })
        }
        Some((None, Some(code))) => {
            stats.aborts_injected.inc();
            Err(Abort {
                reply: LocalReply::new(
                    StatusCode::OK,
                    ResponseFlag::FaultInjected,
                    format!("fault filter abort: injected gRPC status {code}"),
                ),
                grpc_status: Some(code),
            })
        }
        _ => Ok(Some(guard)),
    }
}
