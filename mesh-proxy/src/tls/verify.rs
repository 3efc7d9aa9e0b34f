//! Peer verification: the chain against the trust roots in force, then the
//! peer's URI SAN against `match_subject_alt_names` (Envoy checks SANs
//! after the chain; an empty list accepts any identity the roots sign).
//! Failures carry a reason that logs and local replies show as is.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use x509_parser::extensions::GeneralName;

use crate::http::matcher::string_matches;
use crate::model::{StringMatch, StringMatcher};

/// What a certificate says about who it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertNames {
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    pub ips: Vec<std::net::IpAddr>,
    /// RFC 2253-ish subject, as x509-parser prints it.
    pub subject: String,
}

pub fn cert_names(cert: &CertificateDer<'_>) -> CertNames {
    match x509_parser::parse_x509_certificate(cert) {
        Ok((_, parsed)) => names_of(&parsed),
        Err(_) => CertNames::default(),
    }
}

/// The subject and subject alternative names of a parsed certificate (for
/// callers that read other fields of it too, such as `/certs`).
pub fn names_of(cert: &x509_parser::certificate::X509Certificate<'_>) -> CertNames {
    let mut names = CertNames {
        subject: cert.subject().to_string(),
        ..Default::default()
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => names.uris.push(u.to_string()),
                GeneralName::DNSName(d) => names.dns.push(d.to_string()),
                GeneralName::IPAddress(bytes) => names.ips.extend(ip_from_bytes(bytes)),
                _ => {}
            }
        }
    }
    names
}

fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

/// The peer's identity is not one the configuration accepts.
#[derive(Debug, Clone, thiserror::Error)]
#[error("peer identity {presented} not in [{accepted}]")]
pub struct SanMismatch {
    pub presented: String,
    pub accepted: String,
}

fn describe(m: &StringMatcher) -> String {
    match &m.pattern {
        StringMatch::Exact(s) => s.clone(),
        StringMatch::Prefix(s) => format!("{s}*"),
        StringMatch::Suffix(s) => format!("*{s}"),
        StringMatch::Contains(s) => format!("*{s}*"),
        StringMatch::Regex(r) => format!("~{}", r.as_str()),
    }
}

/// Checks the leaf's URI SANs against the matchers (any SAN matching any
/// matcher accepts, as Envoy does).
pub fn check_sans(leaf: &CertificateDer<'_>, sans: &[StringMatcher]) -> Result<(), rustls::Error> {
    if sans.is_empty() {
        return Ok(());
    }
    let names = cert_names(leaf);
    if names
        .uris
        .iter()
        .any(|u| sans.iter().any(|m| string_matches(m, u)))
    {
        return Ok(());
    }
    let presented = if names.uris.is_empty() {
        "(no URI SAN)".to_string()
    } else {
        names.uris.join(",")
    };
    Err(rustls::Error::InvalidCertificate(
        rustls::CertificateError::Other(rustls::OtherError(Arc::new(SanMismatch {
            presented,
            accepted: sans.iter().map(describe).collect::<Vec<_>>().join(", "),
        }))),
    ))
}

/// webpki's client verifier followed by the SAN check.
#[derive(Debug)]
pub struct DownstreamClientVerifier {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub sans: Vec<StringMatcher>,
}

impl ClientCertVerifier for DownstreamClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Istio's sidecars send no CA hints either; clients pick their one cert.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        check_sans(end_entity, &self.sans)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Which of Envoy's `ssl.*` counters a failed handshake falls under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// `ssl.fail_verify_no_cert`
    NoCertificate,
    /// `ssl.fail_verify_san`
    SanMismatch,
    /// `ssl.fail_verify_error` (unknown CA, expired, bad signature ...)
    VerifyError,
    /// Anything else (protocol errors, alerts from the peer, I/O).
    Other,
}

impl FailureKind {
    pub fn stat(self) -> Option<&'static str> {
        match self {
            FailureKind::NoCertificate => Some("ssl.fail_verify_no_cert"),
            FailureKind::SanMismatch => Some("ssl.fail_verify_san"),
            FailureKind::VerifyError => Some("ssl.fail_verify_error"),
            FailureKind::Other => None,
        }
    }
}

/// A handshake failure in words a person reads in a log line.
#[derive(Debug, Clone)]
pub struct HandshakeFailure {
    pub kind: FailureKind,
    pub reason: String,
}

/// Classifies the error a tokio-rustls handshake returned.
pub fn classify(error: &std::io::Error) -> HandshakeFailure {
    let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return HandshakeFailure {
            kind: FailureKind::Other,
            reason: match error.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    "peer closed the connection during the handshake".to_string()
                }
                _ => error.to_string(),
            },
        };
    };
    classify_rustls(tls)
}

pub fn classify_rustls(tls: &rustls::Error) -> HandshakeFailure {
    use rustls::CertificateError as C;
    let (kind, reason) = match tls {
        rustls::Error::NoCertificatesPresented => (
            FailureKind::NoCertificate,
            "peer presented no certificate".to_string(),
        ),
        rustls::Error::InvalidCertificate(c) => match c {
            C::Other(other) => match other.0.downcast_ref::<SanMismatch>() {
                Some(m) => (FailureKind::SanMismatch, m.to_string()),
                None => (
                    FailureKind::VerifyError,
                    format!("invalid certificate: {other}"),
                ),
            },
            C::UnknownIssuer => (
                FailureKind::VerifyError,
                "unknown CA: peer certificate not signed by a trusted root".to_string(),
            ),
            C::Expired | C::ExpiredContext { .. } => (
                FailureKind::VerifyError,
                format!("peer certificate expired ({c:?})"),
            ),
            C::NotValidYet | C::NotValidYetContext { .. } => (
                FailureKind::VerifyError,
                format!("peer certificate not valid yet ({c:?})"),
            ),
            C::BadSignature => (
                FailureKind::VerifyError,
                "peer certificate has a bad signature".to_string(),
            ),
            other => (
                FailureKind::VerifyError,
                format!("invalid peer certificate: {other:?}"),
            ),
        },
        rustls::Error::AlertReceived(alert) => (
            FailureKind::Other,
            format!("peer refused the handshake (alert {alert:?})"),
        ),
        other => (FailureKind::Other, other.to_string()),
    };
    HandshakeFailure { kind, reason }
}
