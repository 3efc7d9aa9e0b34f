//! The request head checks Envoy's HTTP/1 codec makes before anything is
//! routed: a request that fails one is answered 400 with `DPE` and never
//! forwarded. hyper parses leniently (any token is a method, a missing or
//! repeated `Host` passes), and forwarding such a request lets a client make
//! the upstream see something other than what the proxy routed on.

use http::request::Parts;
use http::uri::Authority;
use http::{Method, StatusCode, Version};

use super::local_reply::{LocalReply, ResponseFlag};

/// The methods Envoy's HTTP/1 parser accepts (http-parser's list), exactly
/// as spelt: `get` is not `GET`.
const HTTP1_METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    "COPY",
    "LOCK",
    "MKCOL",
    "MOVE",
    "PROPFIND",
    "PROPPATCH",
    "SEARCH",
    "UNLOCK",
    "BIND",
    "REBIND",
    "UNBIND",
    "ACL",
    "REPORT",
    "MKACTIVITY",
    "CHECKOUT",
    "MERGE",
    "M-SEARCH",
    "NOTIFY",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "PURGE",
    "MKCALENDAR",
    "LINK",
    "UNLINK",
    "SOURCE",
];

/// How much of a client's bad value a reply quotes back.
const QUOTE_LIMIT: usize = 64;

fn refuse(reason: String) -> LocalReply {
    LocalReply::new(
        StatusCode::BAD_REQUEST,
        ResponseFlag::DownstreamProtocolError,
        reason,
    )
}

fn quote(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(&value[..value.len().min(QUOTE_LIMIT)]);
    if value.len() > QUOTE_LIMIT {
        format!("{text:?}... ({} bytes)", value.len())
    } else {
        format!("{text:?}")
    }
}

/// Checks a request head as Envoy's codec does; `Err` is the reply.
pub fn check(parts: &Parts) -> Result<(), LocalReply> {
    let http1 = matches!(parts.version, Version::HTTP_10 | Version::HTTP_11);
    if http1 && !HTTP1_METHODS.contains(&parts.method.as_str()) {
        return Err(refuse(format!(
            "invalid HTTP method {}",
            quote(parts.method.as_str().as_bytes())
        )));
    }
    if parts.method == Method::CONNECT {
        // CONNECT opens a tunnel; only routes with a `connect_matcher` may
        // take one in Envoy, and this proxy has none.
        return Err(LocalReply::new(
            StatusCode::NOT_FOUND,
            ResponseFlag::NoRoute,
            "CONNECT is not supported: no route accepts a tunnel",
        ));
    }
    let mut hosts = parts.headers.get_all(http::header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(refuse("more than one Host header".into()));
    }
    if let Some(authority) = parts.uri.authority() {
        if authority.as_str().contains('@') {
            return Err(refuse(format!(
                "request target {} has userinfo, which HTTP forbids",
                quote(authority.as_str().as_bytes())
            )));
        }
        return Ok(());
    }
    match host {
        Some(value) => {
            let bytes = value.as_bytes();
            if bytes.contains(&b'@') || Authority::try_from(bytes).is_err() {
                return Err(refuse(format!("invalid Host header {}", quote(bytes))));
            }
            Ok(())
        }
        // HTTP/1.0 may omit it; HTTP/1.1 must send one (RFC 9112 §3.2).
        None if parts.version == Version::HTTP_11 => Err(refuse("missing Host header".into())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, uri: &str, hosts: &[&str]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for h in hosts {
            b = b.header("host", *h);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn refused(p: &Parts) -> String {
        let reply = check(p).expect_err("refused");
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.flag, Some(ResponseFlag::DownstreamProtocolError));
        reply.reason
    }

    #[test]
    fn good_requests_pass() {
        check(&head("GET", "/", &["svc"])).unwrap();
        check(&head("GET", "/", &["svc:8080"])).unwrap();
        check(&head("GET", "/", &["[::1]:80"])).unwrap();
        check(&head("M-SEARCH", "*", &["svc"])).unwrap();
        check(&head("GET", "http://svc/x", &[])).unwrap();
    }

    #[test]
    fn bad_heads_are_refused_with_the_reason() {
        assert_eq!(refused(&head("GET", "/", &[])), "missing Host header");
        assert!(refused(&head("GET", "/", &["a b/c@d"])).contains("invalid Host"));
        assert!(refused(&head("GET", "/", &["user@svc"])).contains("invalid Host"));
        assert_eq!(
            refused(&head("GET", "/", &["a", "b"])),
            "more than one Host header"
        );
        assert!(refused(&head("GET", "http://u:p@svc/", &[])).contains("userinfo"));
        assert!(refused(&head("get", "/", &["svc"])).contains("invalid HTTP method \"get\""));
        let long = "X".repeat(10_000);
        let reason = refused(&head(&long, "/", &["svc"]));
        assert!(reason.ends_with("(10000 bytes)"), "{reason}");
        assert!(
            reason.len() < 120,
            "the reply does not echo 10 KB: {reason}"
        );
    }

    #[test]
    fn connect_finds_no_route() {
        let reply = check(&head("CONNECT", "svc:443", &["svc:443"])).unwrap_err();
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.flag, Some(ResponseFlag::NoRoute));
    }
}
