//! Request and response header handling on the way through: hop-by-hop
//! removal, `x-request-id`, `x-forwarded-for`/`-proto`, and the configured
//! add/remove mutations.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::model::{HeaderMutations, HeaderToAdd};

pub const X_REQUEST_ID: &str = "x-request-id";
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
pub const X_ENVOY_UPSTREAM_SERVICE_TIME: &str = "x-envoy-upstream-service-time";
pub const X_ENVOY_ORIGINAL_PATH: &str = "x-envoy-original-path";
pub const X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: &str = "x-envoy-expected-rq-timeout-ms";

/// Connection-specific headers that never cross the proxy (RFC 9110 §7.6.1).
/// `upgrade` and `connection: upgrade` are put back for upgrade requests.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers listed in `Connection` are hop-by-hop too.
    let listed: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Adds `x-request-id` (a random UUID v4) when the request has none.
pub fn ensure_request_id(headers: &mut HeaderMap) -> String {
    if let Some(id) = headers.get(X_REQUEST_ID).and_then(|v| v.to_str().ok()) {
        return id.to_string();
    }
    let id = uuid_v4();
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert(X_REQUEST_ID, v);
    }
    id
}

fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Envoy's forwarding headers: with `use_remote_address`, the peer address
/// is appended to `x-forwarded-for` and `x-forwarded-proto` is set to the
/// connection's scheme; otherwise `x-forwarded-for` is left alone and
/// `x-forwarded-proto` is only set when absent.
pub fn set_forwarding_headers(
    headers: &mut HeaderMap,
    peer: IpAddr,
    scheme: &str,
    use_remote_address: bool,
) {
    if use_remote_address {
        let appended = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(existing) if !existing.is_empty() => format!("{existing},{peer}"),
            _ => peer.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&appended) {
            headers.insert(X_FORWARDED_FOR, v);
        }
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(static_scheme(scheme)),
        );
    } else if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(static_scheme(scheme)),
        );
    }
}

fn static_scheme(scheme: &str) -> &'static str {
    if scheme == "https" { "https" } else { "http" }
}

/// Applies mutation levels in the order given. Envoy's default evaluates
/// the most specific level (weighted cluster, route) first and the route
/// table last, so callers pass them in that order.
pub fn apply_request_mutations(headers: &mut HeaderMap, levels: &[&HeaderMutations]) {
    for level in levels {
        for name in &level.request_remove {
            headers.remove(name.as_str());
        }
        add_all(headers, &level.request_add);
    }
}

pub fn apply_response_mutations(headers: &mut HeaderMap, levels: &[&HeaderMutations]) {
    for level in levels {
        for name in &level.response_remove {
            headers.remove(name.as_str());
        }
        add_all(headers, &level.response_add);
    }
}

fn add_all(headers: &mut HeaderMap, adds: &[HeaderToAdd]) {
    for add in adds {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(add.name.as_bytes()),
            HeaderValue::from_str(&add.value),
        ) else {
            continue;
        };
        if add.only_if_absent {
            if !headers.contains_key(&name) {
                headers.insert(name, value);
            }
        } else if add.append {
            headers.append(name, value);
        } else {
            headers.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_kept_or_generated() {
        let mut h = HeaderMap::new();
        let id = ensure_request_id(&mut h);
        assert_eq!(id.len(), 36);
        assert_eq!(ensure_request_id(&mut h), id);
    }

    #[test]
    fn forwarded_headers() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, "1.2.3.4".parse().unwrap());
        set_forwarding_headers(&mut h, "10.0.0.1".parse().unwrap(), "http", true);
        assert_eq!(h[X_FORWARDED_FOR], "1.2.3.4,10.0.0.1");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_PROTO, "https".parse().unwrap());
        set_forwarding_headers(&mut h, "10.0.0.1".parse().unwrap(), "http", false);
        assert!(!h.contains_key(X_FORWARDED_FOR));
        assert_eq!(h[X_FORWARDED_PROTO], "https");
    }

    #[test]
    fn hop_by_hop_and_mutations() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(
            !h.contains_key("x-secret") && !h.contains_key("connection") && h.contains_key("keep")
        );
        let m = HeaderMutations {
            request_add: vec![
                HeaderToAdd {
                    name: "a".into(),
                    value: "1".into(),
                    append: true,
                    only_if_absent: false,
                },
                HeaderToAdd {
                    name: "a".into(),
                    value: "2".into(),
                    append: true,
                    only_if_absent: false,
                },
                HeaderToAdd {
                    name: "keep".into(),
                    value: "2".into(),
                    append: false,
                    only_if_absent: true,
                },
            ],
            request_remove: vec![],
            response_add: vec![],
            response_remove: vec![],
        };
        apply_request_mutations(&mut h, &[&m]);
        assert_eq!(h.get_all("a").iter().count(), 2);
        assert_eq!(h["keep"], "1");
    }
}
