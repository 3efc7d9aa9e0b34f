//! Access logs: one line per request (or TCP connection) in Envoy's
//! default text format, a configured text template, or JSON.
//!
//! mTLS operators read the connection's TLS facts: `%DOWNSTREAM_PEER_URI_SAN%`
//! (the client's SPIFFE ID), `%DOWNSTREAM_PEER_SUBJECT%`,
//! `%DOWNSTREAM_PEER_DNS_SAN%`, `%DOWNSTREAM_LOCAL_URI_SAN%` (our own
//! identity), `%DOWNSTREAM_TLS_VERSION%`, `%DOWNSTREAM_TLS_CIPHER%`,
//! `%REQUESTED_SERVER_NAME%`, and
//! `%UPSTREAM_PEER_URI_SAN%` when the upstream connection recorded it.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

use crate::http::local_reply::ResponseFlags;
use crate::model::{AccessLogConfig, AccessLogFormat, AccessLogSink};
use crate::tls::DownstreamTlsInfo;

/// Envoy's default access log format.
pub const DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// Everything a log line may print about one request.
#[derive(Debug, Clone, Default)]
pub struct LogEntry {
    pub start: Option<SystemTime>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub authority: Option<String>,
    /// `HTTP/1.1`, `HTTP/2`; `None` for TCP.
    pub protocol: Option<&'static str>,
    pub request_headers: HeaderMap,
    pub response_headers: HeaderMap,
    pub response_code: u16,
    pub flags: ResponseFlags,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration: Duration,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<String>,
    pub downstream_remote: Option<SocketAddr>,
    pub downstream_local: Option<SocketAddr>,
    pub route_name: Option<String>,
    /// Why a local reply was made (`%RESPONSE_CODE_DETAILS%`).
    pub details: Option<String>,
    /// The downstream TLS session (`None` for plaintext).
    pub downstream_tls: Option<Arc<DownstreamTlsInfo>>,
    /// The upstream server's URI SAN, when the connection was TLS.
    pub upstream_peer_uri_san: Option<String>,
}

impl LogEntry {
    fn operator(&self, op: &str) -> Option<String> {
        let header = |map: &HeaderMap, spec: &str| -> Option<String> {
            let (spec, max_len) = match spec.split_once("):") {
                Some((s, n)) => (s, n.parse::<usize>().ok()),
                None => (spec.trim_end_matches(')'), None),
            };
            let value = spec
                .split('?')
                .find_map(|name| self.header_value(map, name))?;
            Some(match max_len {
                Some(n) => value.chars().take(n).collect(),
                None => value,
            })
        };
        match op {
            "START_TIME" => self.start.map(format_time),
            "PROTOCOL" => self.protocol.map(str::to_string),
            "RESPONSE_CODE" => Some(self.response_code.to_string()),
            "RESPONSE_FLAGS" => Some(self.flags.to_string()),
            "BYTES_RECEIVED" => Some(self.bytes_received.to_string()),
            "BYTES_SENT" => Some(self.bytes_sent.to_string()),
            "DURATION" => Some(self.duration.as_millis().to_string()),
            "UPSTREAM_HOST" => self.upstream_host.map(|a| a.to_string()),
            "UPSTREAM_CLUSTER" => self.upstream_cluster.clone(),
            "DOWNSTREAM_REMOTE_ADDRESS" => self.downstream_remote.map(|a| a.to_string()),
            "DOWNSTREAM_LOCAL_ADDRESS" => self.downstream_local.map(|a| a.to_string()),
            "ROUTE_NAME" => self.route_name.clone(),
            "RESPONSE_CODE_DETAILS" => self.details.clone(),
            "DOWNSTREAM_PEER_URI_SAN" => self.peer_certificate()?.uri.clone(),
            "DOWNSTREAM_PEER_SUBJECT" => Some(self.peer_certificate()?.subject.clone()),
            // Envoy joins several SANs with commas.
            "DOWNSTREAM_PEER_DNS_SAN" => Some(self.peer_certificate()?.dns.join(",")),
            "DOWNSTREAM_LOCAL_URI_SAN" => self.downstream_tls.as_ref()?.local_uri.clone(),
            "DOWNSTREAM_TLS_VERSION" => self.downstream_tls.as_ref()?.version.map(str::to_string),
            "DOWNSTREAM_TLS_CIPHER" => self.downstream_tls.as_ref()?.cipher.map(str::to_string),
            "REQUESTED_SERVER_NAME" => self.downstream_tls.as_ref()?.server_name.clone(),
            "UPSTREAM_PEER_URI_SAN" => self.upstream_peer_uri_san.clone(),
            _ => {
                if let Some(spec) = op.strip_prefix("REQ(") {
                    header(&self.request_headers, spec)
                } else if let Some(spec) = op.strip_prefix("RESP(") {
                    header(&self.response_headers, spec)
                } else {
                    None
                }
            }
        }
    }

    /// Records the downstream TLS session (the connection manager and the
    /// TCP proxy call this with their connection's info).
    pub fn set_downstream_tls(&mut self, tls: Option<&Arc<DownstreamTlsInfo>>) {
        self.downstream_tls = tls.cloned();
    }

    fn peer_certificate(&self) -> Option<&crate::tls::PeerCertificate> {
        self.downstream_tls.as_ref()?.peer.as_ref()
    }

    fn header_value(&self, map: &HeaderMap, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        match name.as_str() {
            ":method" => self.method.clone(),
            ":path" => self.path.clone(),
            ":authority" | "host" => self.authority.clone(),
            _ => map
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        }
    }

    /// Renders a `%COMMAND%` template; unknown or empty values print `-`.
    pub fn render(&self, template: &str) -> String {
        let mut out = String::with_capacity(template.len() + 64);
        let mut rest = template;
        while let Some(start) = rest.find('%') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            match after.find('%') {
                Some(end) if end > 0 => {
                    let op = &after[..end];
                    out.push_str(
                        &self
                            .operator(op)
                            .filter(|v| !v.is_empty())
                            .unwrap_or_else(|| "-".into()),
                    );
                    rest = &after[end + 1..];
                }
                Some(_) => {
                    out.push('%');
                    rest = &after[1..];
                }
                None => {
                    out.push('%');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }

    pub fn format(&self, format: &AccessLogFormat) -> String {
        match format {
            AccessLogFormat::Default => self.render(DEFAULT_FORMAT),
            AccessLogFormat::Text(t) => self.render(t),
            AccessLogFormat::Json(fields) => {
                let mut map = serde_json::Map::new();
                for (k, template) in fields {
                    let v = self.render(template);
                    map.insert(k.clone(), serde_json::Value::String(v));
                }
                format!("{}\n", serde_json::Value::Object(map))
            }
        }
    }
}

/// `2026-01-31T12:00:00.123Z`, Envoy's `%START_TIME%` default.
pub fn format_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Writes lines to their sinks; files are opened once and appended to.
#[derive(Debug, Default)]
pub struct AccessLogWriter {
    files: Mutex<HashMap<PathBuf, std::fs::File>>,
}

impl AccessLogWriter {
    pub fn write(&self, configs: &[AccessLogConfig], entry: &LogEntry) {
        for config in configs {
            let line = entry.format(&config.format);
            match &config.sink {
                AccessLogSink::Stdout => {
                    let _ = std::io::stdout().lock().write_all(line.as_bytes());
                }
                AccessLogSink::Stderr => {
                    let _ = std::io::stderr().lock().write_all(line.as_bytes());
                }
                AccessLogSink::File(path) => {
                    let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
                    if !files.contains_key(path) {
                        match std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(path)
                        {
                            Ok(f) => {
                                files.insert(path.clone(), f);
                            }
                            Err(e) => {
                                tracing::warn!(path = %path.display(), error = %e, "cannot open access log");
                                continue;
                            }
                        }
                    }
                    if let Some(f) = files.get_mut(path) {
                        let _ = f.write_all(line.as_bytes());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::local_reply::ResponseFlag;

    #[test]
    fn default_format_like_envoy() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", "abc".parse().unwrap());
        headers.insert("user-agent", "curl/8".parse().unwrap());
        let mut flags = ResponseFlags::default();
        flags.insert(ResponseFlag::NoHealthyUpstream);
        let e = LogEntry {
            start: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            method: Some("GET".into()),
            path: Some("/istio".into()),
            authority: Some("helloworld".into()),
            protocol: Some("HTTP/1.1"),
            request_headers: headers,
            response_code: 503,
            flags,
            bytes_sent: 19,
            duration: Duration::from_millis(3),
            ..LogEntry::default()
        };
        assert_eq!(
            e.format(&AccessLogFormat::Default),
            "[2023-11-14T22:13:20.123Z] \"GET /istio HTTP/1.1\" 503 UH 0 19 3 - \"-\" \"curl/8\" \"abc\" \"helloworld\" \"-\"\n"
        );
        assert_eq!(
            e.render("%REQ(X-MISSING?USER-AGENT):4% %RESPONSE_CODE%"),
            "curl 503"
        );
    }

    fn mtls_session() -> Arc<DownstreamTlsInfo> {
        Arc::new(DownstreamTlsInfo {
            peer: Some(crate::tls::PeerCertificate {
                uri: Some("spiffe://cluster.local/ns/shop/sa/web".into()),
                dns: vec!["web.shop".into(), "web".into()],
                subject: "O=mesh, CN=web".into(),
                sha256_hex: "00".into(),
            }),
            local_uri: Some("spiffe://cluster.local/ns/shop/sa/cart".into()),
            alpn: Some("h2".into()),
            server_name: Some("outbound_.80_._.cart.shop.svc.cluster.local".into()),
            version: Some("TLSv1.3"),
            cipher: Some("TLS_AES_128_GCM_SHA256"),
        })
    }

    #[test]
    fn mtls_operators_print_the_peer_and_the_session() {
        let mut e = LogEntry {
            upstream_peer_uri_san: Some("spiffe://cluster.local/ns/db/sa/pg".into()),
            ..LogEntry::default()
        };
        e.set_downstream_tls(Some(&mtls_session()));
        assert_eq!(
            e.render(
                "%DOWNSTREAM_PEER_URI_SAN% %DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_TLS_CIPHER% %DOWNSTREAM_LOCAL_URI_SAN%"
            ),
            "spiffe://cluster.local/ns/shop/sa/web TLSv1.3 TLS_AES_128_GCM_SHA256 spiffe://cluster.local/ns/shop/sa/cart"
        );
        assert_eq!(
            e.render("[%DOWNSTREAM_PEER_SUBJECT%] %DOWNSTREAM_PEER_DNS_SAN%"),
            "[O=mesh, CN=web] web.shop,web"
        );
        assert_eq!(
            e.render("%REQUESTED_SERVER_NAME% %UPSTREAM_PEER_URI_SAN%"),
            "outbound_.80_._.cart.shop.svc.cluster.local spiffe://cluster.local/ns/db/sa/pg"
        );
        let json = e.format(&AccessLogFormat::Json(vec![(
            "source_principal".to_string(),
            "%DOWNSTREAM_PEER_URI_SAN%".to_string(),
        )]));
        assert_eq!(
            json,
            "{\"source_principal\":\"spiffe://cluster.local/ns/shop/sa/web\"}\n"
        );
    }

    #[test]
    fn mtls_operators_print_a_dash_without_tls_or_without_a_client_certificate() {
        let template = "%DOWNSTREAM_PEER_URI_SAN% %DOWNSTREAM_PEER_SUBJECT% %DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_TLS_CIPHER% %UPSTREAM_PEER_URI_SAN%";
        let plaintext = LogEntry::default();
        assert_eq!(plaintext.render(template), "- - - - -");
        // TLS that the client did not authenticate (PERMISSIVE, SIMPLE).
        let mut one_way = LogEntry::default();
        let mut session = (*mtls_session()).clone();
        session.peer = None;
        one_way.set_downstream_tls(Some(&Arc::new(session)));
        assert_eq!(
            one_way.render(template),
            "- - TLSv1.3 TLS_AES_128_GCM_SHA256 -"
        );
    }
}
