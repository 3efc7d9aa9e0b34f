//! Request and response header handling on the way through: hop-by-hop
//! removal, `x-request-id`, `x-forwarded-for`/`-proto`, and the configured
//! add/remove mutations.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::model::{HeaderMutations, HeaderToAdd};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");
pub const X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
pub const X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms");

/// Connection-specific headers that never cross the proxy (RFC 9110 §7.6.1).
/// `upgrade` and `connection: upgrade` are put back for upgrade requests.
/// Pre-parsed names: removal by `&str` would parse and hash each name on
/// every request.
const HOP_BY_HOP: [HeaderName; 9] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the few names a message has is cheaper than hashing
    // every hop-by-hop name into the map, and most messages have none.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    // Headers listed in `Connection` are hop-by-hop too (most requests have
    // no `Connection` header: no allocation then).
    if headers.contains_key(http::header::CONNECTION) {
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
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Adds `x-request-id` (a random UUID v4) when the request has none.
pub fn ensure_request_id(headers: &mut HeaderMap) {
    if !headers.contains_key(X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID, uuid_v4());
    }
}

/// A random UUID v4, formatted straight into the header value: this runs on
/// every request, so no intermediate strings.
fn uuid_v4() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = [0u8; 36];
    let mut i = 0;
    for (n, byte) in b.iter().enumerate() {
        if matches!(n, 4 | 6 | 8 | 10) {
            out[i] = b'-';
            i += 1;
        }
        out[i] = HEX[usize::from(byte >> 4)];
        out[i + 1] = HEX[usize::from(byte & 0x0f)];
        i += 2;
    }
    // Only hex digits and dashes: always a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("invalid-uuid"))
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
        ensure_request_id(&mut h);
        let id = h[X_REQUEST_ID].to_str().unwrap().to_string();
        // 8-4-4-4-12 lowercase hex, version 4, RFC 4122 variant.
        let groups: Vec<&str> = id.split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        assert_eq!(lens, [8, 4, 4, 4, 12], "{id}");
        assert!(
            id.bytes()
                .all(|c| c == b'-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert!(groups[2].starts_with('4'), "{id}");
        assert!(matches!(&groups[3][..1], "8" | "9" | "a" | "b"), "{id}");
        ensure_request_id(&mut h);
        assert_eq!(h[X_REQUEST_ID], id.as_str());
        let mut other = HeaderMap::new();
        ensure_request_id(&mut other);
        assert_ne!(other[X_REQUEST_ID], id.as_str());
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
