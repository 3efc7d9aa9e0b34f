//! The request hash for RING_HASH and MAGLEV, from the route's
//! `hash_policy` list (header, cookie, source IP, query parameter).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use http::HeaderValue;
use xxhash_rust::xxh64::xxh64;

use crate::http::matcher::RequestHead;
use crate::model::{HashPolicy, HashPolicyKind};

#[derive(Debug, Default)]
pub struct RequestHash {
    pub hash: Option<u64>,
    /// A cookie generated because the request had none and the policy has
    /// a TTL: to be set on the response so the client sticks.
    pub set_cookie: Option<HeaderValue>,
}

/// Combines the policies in order as Envoy does (rotate left by one, xor),
/// stopping after a `terminal` policy that produced a hash.
pub fn compute(policies: &[HashPolicy], req: &RequestHead<'_>, peer: IpAddr) -> RequestHash {
    let mut out = RequestHash::default();
    for policy in policies {
        let value: Option<u64> = match &policy.kind {
            HashPolicyKind::Header { name } => req.header(name).map(|v| xxh64(v.as_bytes(), 0)),
            HashPolicyKind::SourceIp => Some(xxh64(peer.to_string().as_bytes(), 0)),
            HashPolicyKind::QueryParameter { name } => req.query().split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == name).then(|| xxh64(v.as_bytes(), 0))
            }),
            HashPolicyKind::Cookie {
                name,
                ttl,
                path,
                attributes,
            } => match cookie(req, name) {
                Some(v) => Some(xxh64(v.as_bytes(), 0)),
                None => match ttl {
                    Some(ttl) => {
                        let value = format!("{:016x}", rand::random::<u64>());
                        let header = set_cookie(name, &value, *ttl, path.as_deref(), attributes);
                        out.set_cookie = HeaderValue::from_str(&header).ok();
                        Some(xxh64(value.as_bytes(), 0))
                    }
                    None => None,
                },
            },
        };
        if let Some(v) = value {
            out.hash = Some(match out.hash {
                Some(h) => h.rotate_left(1) ^ v,
                None => v,
            });
            if policy.terminal {
                break;
            }
        }
    }
    out
}

/// The `Set-Cookie` value of a generated cookie, as Envoy writes it: a zero
/// `ttl` makes a session cookie (no `Max-Age`: `Max-Age=0` would delete it
/// at once), no `path` leaves the browser's default path.
fn set_cookie(
    name: &str,
    value: &str,
    ttl: Duration,
    path: Option<&str>,
    attributes: &[(String, String)],
) -> String {
    let mut header = format!("{name}=\"{value}\"");
    if !ttl.is_zero() {
        let _ = write!(header, "; Max-Age={}", ttl.as_secs());
    }
    if let Some(path) = path {
        let _ = write!(header, "; Path={path}");
    }
    for (attribute, v) in attributes {
        if v.is_empty() {
            let _ = write!(header, "; {attribute}");
        } else {
            let _ = write!(header, "; {attribute}={v}");
        }
    }
    header.push_str("; HttpOnly");
    header
}

/// A cookie's value from the `Cookie` headers, quotes removed.
pub fn cookie(req: &RequestHead<'_>, name: &str) -> Option<String> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"').to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_cookie_follows_envoy() {
        let attrs = [
            ("SameSite".to_string(), "Strict".to_string()),
            ("Secure".to_string(), String::new()),
        ];
        assert_eq!(
            set_cookie("user", "ab", Duration::ZERO, None, &[]),
            "user=\"ab\"; HttpOnly",
            "a zero ttl is a session cookie"
        );
        assert_eq!(
            set_cookie("user", "ab", Duration::from_secs(90), Some("/app"), &attrs),
            "user=\"ab\"; Max-Age=90; Path=/app; SameSite=Strict; Secure; HttpOnly"
        );
    }

    #[test]
    fn cookie_generated_then_reused() {
        let policies = vec![HashPolicy {
            kind: HashPolicyKind::Cookie {
                name: "sticky".into(),
                ttl: Some(Duration::from_secs(60)),
                path: None,
                attributes: vec![],
            },
            terminal: false,
        }];
        let headers = http::HeaderMap::new();
        let req = RequestHead {
            method: "GET",
            authority: "h",
            path: "/",
            scheme: "http",
            headers: &headers,
        };
        let first = compute(&policies, &req, "127.0.0.1".parse().unwrap());
        let set = first.set_cookie.unwrap();
        let set = set.to_str().unwrap();
        assert!(
            set.starts_with("sticky=\"") && set.contains("Max-Age=60"),
            "{set}"
        );
        let value = set.split(';').next().unwrap().to_string();
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            format!("other=1; {value}").parse().unwrap(),
        );
        let req = RequestHead {
            headers: &headers,
            ..req
        };
        let again = compute(&policies, &req, "127.0.0.1".parse().unwrap());
        assert_eq!(again.hash, first.hash);
        assert!(again.set_cookie.is_none());
    }
}
