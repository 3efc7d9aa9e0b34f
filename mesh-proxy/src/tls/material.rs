//! Certificates, keys and trust roots out of the model's TLS sources
//! (inline PEM, or an SDS name looked up in the [`SecretStore`]).

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};

use super::SecretStore;
use crate::model::{TlsCaSource, TlsCertificateSource, TlsSecret, TlsValidation};

/// Why a TLS context cannot be set up right now. Shown in logs and in
/// local replies, so each names the secret or the field.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsSetupError {
    #[error("secret \"{0}\" not available yet")]
    MissingSecret(String),
    #[error("secret \"{name}\" is not a {expected}")]
    WrongKind {
        name: String,
        expected: &'static str,
    },
    #[error("{what}: {reason}")]
    Pem { what: String, reason: String },
    #[error("{what}: no private key in the PEM text")]
    NoKey { what: String },
    #[error("{what}: no certificate in the PEM text")]
    NoCertificate { what: String },
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

impl From<rustls::Error> for TlsSetupError {
    fn from(e: rustls::Error) -> Self {
        TlsSetupError::Rustls(e.to_string())
    }
}

impl From<rustls::server::VerifierBuilderError> for TlsSetupError {
    fn from(e: rustls::server::VerifierBuilderError) -> Self {
        TlsSetupError::Rustls(e.to_string())
    }
}

/// A certificate chain and its key.
pub struct CertifiedChain {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

pub fn certificate(
    store: &SecretStore,
    source: &TlsCertificateSource,
) -> Result<CertifiedChain, TlsSetupError> {
    let (what, chain_pem, key_pem) = match source {
        TlsCertificateSource::InlinePem {
            cert_chain,
            private_key,
        } => (
            "inline certificate".to_string(),
            cert_chain.clone(),
            private_key.clone(),
        ),
        TlsCertificateSource::Sds(name) => {
            let secret = store
                .get(name)
                .ok_or_else(|| TlsSetupError::MissingSecret(name.clone()))?;
            match &*secret {
                TlsSecret::Certificate(TlsCertificateSource::InlinePem {
                    cert_chain,
                    private_key,
                }) => (
                    format!("secret \"{name}\""),
                    cert_chain.clone(),
                    private_key.clone(),
                ),
                _ => {
                    return Err(TlsSetupError::WrongKind {
                        name: name.clone(),
                        expected: "tls_certificate",
                    });
                }
            }
        }
    };
    let chain = certificates(&what, &chain_pem)?;
    let key = private_key(&what, &key_pem)?;
    Ok(CertifiedChain { chain, key })
}

/// The trust roots of a validation source.
pub fn roots(
    store: &SecretStore,
    source: &TlsCaSource,
) -> Result<Arc<RootCertStore>, TlsSetupError> {
    let (what, pem) = match source {
        TlsCaSource::InlinePem(pem) => ("inline trusted_ca".to_string(), pem.clone()),
        TlsCaSource::Sds(name) => {
            let secret = store
                .get(name)
                .ok_or_else(|| TlsSetupError::MissingSecret(name.clone()))?;
            match &*secret {
                TlsSecret::ValidationContext(TlsValidation {
                    trusted_ca: TlsCaSource::InlinePem(pem),
                    ..
                }) => (format!("secret \"{name}\""), pem.clone()),
                _ => {
                    return Err(TlsSetupError::WrongKind {
                        name: name.clone(),
                        expected: "validation_context",
                    });
                }
            }
        }
    };
    let mut store = RootCertStore::empty();
    for cert in certificates(&what, &pem)? {
        store.add(cert).map_err(|e| TlsSetupError::Pem {
            what: what.clone(),
            reason: format!("not a usable trust anchor: {e}"),
        })?;
    }
    Ok(Arc::new(store))
}

/// The subject alt names a validation secret adds (an SDS validation
/// context may carry its own matchers besides the root).
pub fn secret_san_matchers(
    store: &SecretStore,
    source: &TlsCaSource,
) -> Vec<crate::model::StringMatcher> {
    match source {
        TlsCaSource::Sds(name) => match store.get(name).as_deref() {
            Some(TlsSecret::ValidationContext(v)) => v.match_subject_alt_names.clone(),
            _ => Vec::new(),
        },
        TlsCaSource::InlinePem(_) => Vec::new(),
    }
}

fn certificates(what: &str, text: &str) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs =
        mesh_ca::bundle::certificates_from_pem(what, text).map_err(|e| TlsSetupError::Pem {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate {
            what: what.to_string(),
        });
    }
    Ok(certs)
}

fn private_key(what: &str, text: &str) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let blocks = pem::parse_many(text).map_err(|e| TlsSetupError::Pem {
        what: what.to_string(),
        reason: e.to_string(),
    })?;
    for block in blocks {
        let der = block.contents().to_vec();
        match block.tag() {
            "PRIVATE KEY" => return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der))),
            "EC PRIVATE KEY" => return Ok(PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der))),
            "RSA PRIVATE KEY" => return Ok(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der))),
            _ => {}
        }
    }
    Err(TlsSetupError::NoKey {
        what: what.to_string(),
    })
}
