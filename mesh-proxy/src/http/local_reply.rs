//! Locally generated responses and Envoy's response flags: every error the
//! proxy makes itself says why, in its status, its flag and a short body.

use http::{HeaderValue, Response, StatusCode};

use crate::body::{ProxyBody, full};

/// Header carrying one human sentence on why a local reply was made; never
/// set on responses that came from an upstream.
pub const MESH_REASON_HEADER: &str = "x-mesh-reason";

/// Envoy's response flags (the short form printed in access logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseFlag {
    /// NR: no route configured.
    NoRoute,
    /// UH: no healthy upstream host.
    NoHealthyUpstream,
    /// UF: upstream connection failure.
    UpstreamConnectionFailure,
    /// UC: upstream connection termination.
    UpstreamConnectionTermination,
    /// UR: upstream remote reset.
    UpstreamRemoteReset,
    /// UT: upstream request timeout.
    UpstreamRequestTimeout,
    /// UO: upstream overflow (circuit breaking).
    UpstreamOverflow,
    /// URX: retry limit exceeded.
    UpstreamRetryLimitExceeded,
    /// NC: upstream cluster not found.
    NoClusterFound,
    /// DC: downstream connection termination.
    DownstreamConnectionTermination,
    /// DI: delay injected.
    DelayInjected,
    /// FI: fault injected.
    FaultInjected,
    /// DPE: downstream protocol error.
    DownstreamProtocolError,
    /// UPE: upstream protocol error.
    UpstreamProtocolError,
    /// SI: stream idle timeout (`stream_idle_timeout`).
    StreamIdleTimeout,
}

impl ResponseFlag {
    /// Envoy prints flags in the order of its flag bits, not of arrival.
    fn rank(self) -> u8 {
        match self {
            ResponseFlag::NoHealthyUpstream => 1,
            ResponseFlag::UpstreamRequestTimeout => 2,
            ResponseFlag::UpstreamRemoteReset => 4,
            ResponseFlag::UpstreamConnectionFailure => 5,
            ResponseFlag::UpstreamConnectionTermination => 6,
            ResponseFlag::UpstreamOverflow => 7,
            ResponseFlag::NoRoute => 8,
            ResponseFlag::DelayInjected => 9,
            ResponseFlag::FaultInjected => 10,
            ResponseFlag::DownstreamConnectionTermination => 14,
            ResponseFlag::UpstreamRetryLimitExceeded => 15,
            ResponseFlag::StreamIdleTimeout => 16,
            ResponseFlag::NoClusterFound => 21,
            ResponseFlag::DownstreamProtocolError => 23,
            ResponseFlag::UpstreamProtocolError => 25,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFlag::NoRoute => "NR",
            ResponseFlag::NoHealthyUpstream => "UH",
            ResponseFlag::UpstreamConnectionFailure => "UF",
            ResponseFlag::UpstreamConnectionTermination => "UC",
            ResponseFlag::UpstreamRemoteReset => "UR",
            ResponseFlag::UpstreamRequestTimeout => "UT",
            ResponseFlag::UpstreamOverflow => "UO",
            ResponseFlag::UpstreamRetryLimitExceeded => "URX",
            ResponseFlag::NoClusterFound => "NC",
            ResponseFlag::DownstreamConnectionTermination => "DC",
            ResponseFlag::DelayInjected => "DI",
            ResponseFlag::FaultInjected => "FI",
            ResponseFlag::DownstreamProtocolError => "DPE",
            ResponseFlag::UpstreamProtocolError => "UPE",
            ResponseFlag::StreamIdleTimeout => "SI",
        }
    }
}

/// The set of flags of one request, printed comma separated or `-`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseFlags(Vec<ResponseFlag>);

impl ResponseFlags {
    pub fn insert(&mut self, flag: ResponseFlag) {
        if !self.0.contains(&flag) {
            self.0.push(flag);
        }
    }
    pub fn contains(&self, flag: ResponseFlag) -> bool {
        self.0.contains(&flag)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        let mut flags = self.0.clone();
        flags.sort_by_key(|f| f.rank());
        let parts: Vec<&str> = flags.iter().map(|flag| flag.as_str()).collect();
        f.write_str(&parts.join(","))
    }
}

/// Marks a response the proxy generated itself (in its extensions), so the
/// edge can replace its detailed body (`reason_header`).
#[derive(Debug, Clone, Copy)]
pub struct LocalReplied;

/// A response the proxy generated itself.
#[derive(Debug, Clone)]
pub struct LocalReply {
    pub status: StatusCode,
    pub flag: Option<ResponseFlag>,
    /// The body, a short sentence; also sent as `x-mesh-reason`.
    pub reason: String,
}

impl LocalReply {
    pub fn new(status: StatusCode, flag: ResponseFlag, reason: impl Into<String>) -> LocalReply {
        LocalReply {
            status,
            flag: Some(flag),
            reason: reason.into(),
        }
    }

    pub fn no_route(authority: &str, path: &str) -> LocalReply {
        LocalReply::new(
            StatusCode::NOT_FOUND,
            ResponseFlag::NoRoute,
            format!("no route matched host \"{authority}\" path \"{path}\""),
        )
    }

    pub fn no_cluster(cluster: &str) -> LocalReply {
        LocalReply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ResponseFlag::NoClusterFound,
            format!("cluster \"{cluster}\" is not configured"),
        )
    }

    pub fn no_healthy_upstream(cluster: &str) -> LocalReply {
        LocalReply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ResponseFlag::NoHealthyUpstream,
            format!("no healthy upstream in cluster {cluster}"),
        )
    }

    pub fn into_response(self) -> Response<ProxyBody> {
        let mut resp = Response::new(full(format!("{}\n", self.reason)));
        *resp.status_mut() = self.status;
        resp.extensions_mut().insert(LocalReplied);
        let headers = resp.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
        if let Ok(v) = HeaderValue::from_str(&sanitize_header(&self.reason)) {
            headers.insert(MESH_REASON_HEADER, v);
        }
        // Envoy marks circuit-breaker rejections so clients can back off.
        if self.flag == Some(ResponseFlag::UpstreamOverflow) {
            headers.insert("x-envoy-overloaded", HeaderValue::from_static("true"));
        }
        resp
    }
}

/// Header values must be visible ASCII; reasons may quote user input.
fn sanitize_header(s: &str) -> String {
    s.chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_print_like_envoy() {
        let mut flags = ResponseFlags::default();
        assert_eq!(flags.to_string(), "-");
        flags.insert(ResponseFlag::UpstreamConnectionFailure);
        flags.insert(ResponseFlag::UpstreamRetryLimitExceeded);
        flags.insert(ResponseFlag::UpstreamConnectionFailure);
        assert_eq!(flags.to_string(), "UF,URX");
    }

    #[test]
    fn local_reply_has_body_and_reason_header() {
        let resp = LocalReply::no_healthy_upstream("c1").into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            resp.headers()[MESH_REASON_HEADER],
            "no healthy upstream in cluster c1"
        );
    }
}
