//! `x-forwarded-client-cert` as the HTTP connection manager's
//! `forward_client_cert_details` and `set_current_client_cert_details`
//! define it: one element per hop, `Key=Value` pairs joined by `;`, hops
//! joined by `,`, Subject always quoted.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::DownstreamTlsInfo;
use crate::model::{ClientCertDetails, ForwardClientCert};

pub const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Rewrites the request's XFCC header for one hop. `tls` is the
/// downstream connection's TLS, if any; only a connection whose client
/// presented a verified certificate counts as mTLS.
pub fn apply(
    headers: &mut HeaderMap,
    mode: ForwardClientCert,
    details: ClientCertDetails,
    tls: Option<&DownstreamTlsInfo>,
) {
    let mtls = tls.filter(|t| t.peer.is_some());
    match (mode, mtls) {
        (ForwardClientCert::AlwaysForwardOnly, _) => {}
        (ForwardClientCert::Sanitize, _) | (_, None) => {
            headers.remove(XFCC);
        }
        (ForwardClientCert::ForwardOnly, Some(_)) => {}
        (ForwardClientCert::AppendForward, Some(t)) => {
            let element = element(t, details);
            let value = match headers.get(XFCC).and_then(|v| v.to_str().ok()) {
                Some(prev) if !prev.is_empty() => format!("{prev},{element}"),
                _ => element,
            };
            set(headers, &value);
        }
        (ForwardClientCert::SanitizeSet, Some(t)) => {
            let element = element(t, details);
            set(headers, &element);
        }
    }
}

fn set(headers: &mut HeaderMap, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(XFCC, v);
        }
        // Never forward a value we could not write whole.
        Err(_) => {
            headers.remove(XFCC);
        }
    }
}

/// This hop's element: `By` (our URI SAN) and `Hash` always, then the
/// fields `details` asks for, in Envoy's order.
pub fn element(tls: &DownstreamTlsInfo, details: ClientCertDetails) -> String {
    let mut parts = Vec::new();
    if let Some(by) = &tls.local_uri {
        parts.push(format!("By={}", escape(by)));
    }
    let Some(peer) = &tls.peer else {
        return parts.join(";");
    };
    parts.push(format!("Hash={}", peer.sha256_hex));
    if details.subject {
        parts.push(format!("Subject=\"{}\"", peer.subject.replace('"', "\\\"")));
    }
    if details.uri
        && let Some(uri) = &peer.uri
    {
        parts.push(format!("URI={}", escape(uri)));
    }
    if details.dns {
        for dns in &peer.dns {
            parts.push(format!("DNS={}", escape(dns)));
        }
    }
    parts.join(";")
}

/// Values holding a separator are quoted, as the header's grammar wants.
fn escape(v: &str) -> String {
    if v.contains([',', ';', '=', '"']) {
        format!("\"{}\"", v.replace('"', "\\\""))
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::PeerCertificate;

    fn info() -> DownstreamTlsInfo {
        DownstreamTlsInfo {
            peer: Some(PeerCertificate {
                uri: Some("spiffe://cluster.local/ns/a/sa/client".into()),
                dns: vec!["client.a".into()],
                subject: "O=mesh".into(),
                sha256_hex: "ab12".into(),
            }),
            local_uri: Some("spiffe://cluster.local/ns/b/sa/server".into()),
            alpn: None,
            server_name: None,
            version: None,
            cipher: None,
        }
    }

    const ALL: ClientCertDetails = ClientCertDetails {
        subject: true,
        dns: true,
        uri: true,
    };

    #[test]
    fn modes() {
        let mut h = HeaderMap::new();
        h.insert(XFCC, HeaderValue::from_static("By=x;Hash=1"));
        apply(&mut h, ForwardClientCert::AppendForward, ALL, Some(&info()));
        assert_eq!(
            h[XFCC],
            "By=x;Hash=1,By=spiffe://cluster.local/ns/b/sa/server;Hash=ab12;Subject=\"O=mesh\";URI=spiffe://cluster.local/ns/a/sa/client;DNS=client.a"
        );
        apply(
            &mut h,
            ForwardClientCert::SanitizeSet,
            ClientCertDetails {
                uri: true,
                ..Default::default()
            },
            Some(&info()),
        );
        assert_eq!(
            h[XFCC],
            "By=spiffe://cluster.local/ns/b/sa/server;Hash=ab12;URI=spiffe://cluster.local/ns/a/sa/client"
        );
        apply(&mut h, ForwardClientCert::ForwardOnly, ALL, Some(&info()));
        assert!(h.contains_key(XFCC));
        apply(&mut h, ForwardClientCert::AlwaysForwardOnly, ALL, None);
        assert!(h.contains_key(XFCC));
        // Not mTLS: anything a client wrote is dropped.
        apply(&mut h, ForwardClientCert::AppendForward, ALL, None);
        assert!(!h.contains_key(XFCC));
        h.insert(XFCC, HeaderValue::from_static("forged"));
        apply(&mut h, ForwardClientCert::Sanitize, ALL, Some(&info()));
        assert!(!h.contains_key(XFCC));
    }
}
