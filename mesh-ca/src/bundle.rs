//! The trust bundle: the set of root certificates a peer's chain may end in.
//! It holds several roots so that, during a root rotation, certificates from
//! the old root and from the new one are both accepted until the old expires.

use rustls::pki_types::CertificateDer;

/// A PEM text that could not be read as certificates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    #[error("{what}: not valid PEM: {reason}")]
    Syntax { what: String, reason: String },
    #[error("{what}: PEM block {index} is labelled {label:?}; expected \"CERTIFICATE\"")]
    Label {
        what: String,
        index: usize,
        label: String,
    },
    #[error("{what}: PEM block {index} is not a valid X.509 certificate: {reason}")]
    Certificate {
        what: String,
        index: usize,
        reason: String,
    },
    #[error("{what}: contains no certificate")]
    Empty { what: String },
}

/// Reads every certificate of a PEM text; `what` names the source in errors.
/// An empty text gives an empty list (callers decide whether that is allowed).
pub fn certificates_from_pem(
    what: &str,
    text: &str,
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let blocks = pem::parse_many(text).map_err(|e| PemError::Syntax {
        what: what.to_owned(),
        reason: e.to_string(),
    })?;
    let mut certs = Vec::with_capacity(blocks.len());
    for (index, block) in blocks.into_iter().enumerate() {
        if block.tag() != "CERTIFICATE" {
            return Err(PemError::Label {
                what: what.to_owned(),
                index,
                label: block.tag().to_owned(),
            });
        }
        if let Err(e) = x509_parser::parse_x509_certificate(block.contents()) {
            return Err(PemError::Certificate {
                what: what.to_owned(),
                index,
                reason: e.to_string(),
            });
        }
        certs.push(CertificateDer::from(block.into_contents()));
    }
    Ok(certs)
}

/// PEM text of one certificate.
pub fn certificate_to_pem(cert: &CertificateDer<'_>) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", cert.as_ref()))
}

/// Roots trusted for workload certificates, without duplicates, in insertion order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustBundle {
    roots: Vec<CertificateDer<'static>>,
}

impl TrustBundle {
    pub fn new() -> Self {
        TrustBundle::default()
    }

    /// Reads a bundle from PEM (one or more certificates); `what` names the source.
    pub fn from_pem(what: &str, text: &str) -> Result<Self, PemError> {
        let certs = certificates_from_pem(what, text)?;
        if certs.is_empty() {
            return Err(PemError::Empty {
                what: what.to_owned(),
            });
        }
        let mut bundle = TrustBundle::new();
        for cert in certs {
            bundle.add(cert);
        }
        Ok(bundle)
    }

    /// Reads a bundle from a PEM file such as Istio's `root-cert.pem`.
    pub fn from_pem_file(path: &std::path::Path) -> Result<Self, PemError> {
        let what = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PemError::Syntax {
            what: what.clone(),
            reason: e.to_string(),
        })?;
        TrustBundle::from_pem(&what, &text)
    }

    /// Adds a root; returns false if it was already present.
    pub fn add(&mut self, root: CertificateDer<'static>) -> bool {
        if self.contains(&root) {
            return false;
        }
        self.roots.push(root);
        true
    }

    /// Removes a root (the old one, once a rotation is over); returns whether it was present.
    pub fn remove(&mut self, root: &CertificateDer<'_>) -> bool {
        let before = self.roots.len();
        self.roots.retain(|r| r.as_ref() != root.as_ref());
        before != self.roots.len()
    }

    /// Adds every root of `other`.
    pub fn merge(&mut self, other: &TrustBundle) {
        for root in &other.roots {
            self.add(root.clone());
        }
    }

    pub fn contains(&self, root: &CertificateDer<'_>) -> bool {
        self.roots.iter().any(|r| r.as_ref() == root.as_ref())
    }

    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    pub fn len(&self) -> usize {
        self.roots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// All roots as one PEM text, as in Istio's `root-cert.pem` during a rotation.
    pub fn to_pem(&self) -> String {
        self.roots.iter().map(certificate_to_pem).collect()
    }

    /// The roots as a rustls store, for verifying peers.
    pub fn root_store(&self) -> Result<rustls::RootCertStore, rustls::Error> {
        let mut store = rustls::RootCertStore::empty();
        for root in &self.roots {
            store.add(root.clone())?;
        }
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed() -> CertificateDer<'static> {
        rcgen::generate_simple_self_signed(vec!["a".into()])
            .unwrap()
            .cert
            .der()
            .clone()
    }

    #[test]
    fn holds_several_roots_without_duplicates() {
        let (a, b) = (self_signed(), self_signed());
        let mut bundle = TrustBundle::new();
        assert!(bundle.add(a.clone()));
        assert!(bundle.add(b.clone()));
        assert!(!bundle.add(a.clone()));
        assert_eq!(bundle.len(), 2);
        let reread = TrustBundle::from_pem("bundle", &bundle.to_pem()).unwrap();
        assert_eq!(reread, bundle);
        assert_eq!(reread.root_store().unwrap().len(), 2);
        assert!(bundle.remove(&a));
        assert_eq!(bundle.roots(), &[b]);
    }

    #[test]
    fn names_bad_pem() {
        let err = TrustBundle::from_pem("root-cert.pem", "").unwrap_err();
        assert_eq!(err.to_string(), "root-cert.pem: contains no certificate");
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let err = TrustBundle::from_pem("root-cert.pem", &key).unwrap_err();
        assert!(err.to_string().contains("\"PRIVATE KEY\""), "{err}");
    }
}
