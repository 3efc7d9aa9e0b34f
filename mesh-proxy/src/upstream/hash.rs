//! The request hash for RING_HASH and MAGLEV, from the route's
//! `hash_policy` list (header, cookie, source IP, query parameter).

use std::net::IpAddr;

use http::HeaderValue;
use xxhash_rust::xxh64::xxh64;

use crate::http::matcher::RequestHead;
use crate::model::{DEFAULT_COOKIE_PATH, HashPolicy, HashPolicyKind};

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
            HashPolicyKind::Cookie { name, ttl, path } => match cookie(req, name) {
                Some(v) => Some(xxh64(v.as_bytes(), 0)),
                None => match ttl {
                    Some(ttl) => {
                        let value = format!("{:016x}", rand::random::<u64>());
                        let path = path.as_deref().unwrap_or(DEFAULT_COOKIE_PATH);
                        let header = format!(
                            "{name}=\"{value}\"; Max-Age={}; Path={path}; HttpOnly",
                            ttl.as_secs()
                        );
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
    use std::time::Duration;

    #[test]
    fn cookie_generated_then_reused() {
        let policies = vec![HashPolicy {
            kind: HashPolicyKind::Cookie {
                name: "sticky".into(),
                ttl: Some(Duration::from_secs(60)),
                path: None,
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
