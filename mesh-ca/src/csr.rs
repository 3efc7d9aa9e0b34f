//! Reading a PKCS#10 certificate signing request: PEM framing, DER structure,
//! the self-signature (proof the caller holds the key), the public key and the
//! requested subject alternative names. Everything else in a CSR is ignored:
//! the CA decides every other field of the certificate it issues.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// Why a CSR could not be read. Each message names what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("CSR is empty")]
    Empty,
    #[error("CSR is not PEM: {0}")]
    Pem(String),
    #[error("CSR PEM block is labelled {0:?}; expected \"CERTIFICATE REQUEST\"")]
    Label(String),
    #[error("CSR is not a valid PKCS#10 request: {0}")]
    Der(String),
    #[error("CSR has {0} trailing bytes after the request")]
    Trailing(usize),
    #[error("CSR signature does not verify against its own public key: {0}")]
    Signature(String),
    #[error("CSR extension request is malformed: {0}")]
    Extension(String),
    #[error("CSR public key is not supported: {0} (use ECDSA P-256, P-384, Ed25519 or RSA)")]
    PublicKey(String),
}

/// A subject alternative name as requested in a CSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestedSan {
    Uri(String),
    /// Any other kind, in `KIND:value` form for messages (`DNS:foo`, `IP:...`).
    Other(String),
}

impl std::fmt::Display for RequestedSan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestedSan::Uri(uri) => write!(f, "URI:{uri}"),
            RequestedSan::Other(other) => f.write_str(other),
        }
    }
}

/// The parts of a verified CSR that the CA uses.
#[derive(Debug)]
pub struct ParsedCsr {
    pub public_key: rcgen::SubjectPublicKeyInfo,
    pub sans: Vec<RequestedSan>,
}

/// Parses and verifies a PEM CSR.
pub fn parse_csr_pem(pem: &str) -> Result<ParsedCsr, CsrError> {
    if pem.trim().is_empty() {
        return Err(CsrError::Empty);
    }
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| CsrError::Pem(e.to_string()))?;
    if block.label != "CERTIFICATE REQUEST" && block.label != "NEW CERTIFICATE REQUEST" {
        return Err(CsrError::Label(block.label));
    }
    parse_csr_der(&block.contents)
}

/// Parses and verifies a DER CSR.
pub fn parse_csr_der(der: &[u8]) -> Result<ParsedCsr, CsrError> {
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| CsrError::Der(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Trailing(rest.len()));
    }
    csr.verify_signature()
        .map_err(|e| CsrError::Signature(e.to_string()))?;
    let public_key =
        rcgen::SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
            .map_err(|e| CsrError::PublicKey(e.to_string()))?;
    let mut sans = Vec::new();
    if let Some(extensions) = csr.requested_extensions() {
        for extension in extensions {
            match extension {
                ParsedExtension::SubjectAlternativeName(san) => {
                    sans.extend(san.general_names.iter().map(requested_san));
                }
                ParsedExtension::ParseError { error } => {
                    return Err(CsrError::Extension(error.to_string()));
                }
                // Key usages, basic constraints and the like are the CA's call.
                _ => {}
            }
        }
    }
    Ok(ParsedCsr { public_key, sans })
}

fn requested_san(name: &GeneralName<'_>) -> RequestedSan {
    match name {
        GeneralName::URI(uri) => RequestedSan::Uri((*uri).to_owned()),
        GeneralName::DNSName(dns) => RequestedSan::Other(format!("DNS:{dns}")),
        GeneralName::RFC822Name(email) => RequestedSan::Other(format!("email:{email}")),
        GeneralName::IPAddress(bytes) => RequestedSan::Other(match bytes.len() {
            4 => format!(
                "IP:{}",
                std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*bytes).unwrap_or_default())
            ),
            16 => format!(
                "IP:{}",
                std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*bytes).unwrap_or_default())
            ),
            n => format!("IP:<{n} bytes>"),
        }),
        GeneralName::OtherName(oid, _) => RequestedSan::Other(format!("otherName:{oid}")),
        GeneralName::DirectoryName(name) => RequestedSan::Other(format!("dirName:{name}")),
        GeneralName::RegisteredID(oid) => RequestedSan::Other(format!("RID:{oid}")),
        GeneralName::X400Address(_) => RequestedSan::Other("x400Address".to_owned()),
        GeneralName::EDIPartyName(_) => RequestedSan::Other("ediPartyName".to_owned()),
        GeneralName::Invalid(tag, _) => RequestedSan::Other(format!("invalid name (tag {tag})")),
    }
}

/// Builds a PEM CSR for `uri` with a fresh key: the client side of the exchange.
pub fn build_csr_pem(key: &rcgen::KeyPair, uri: &str) -> Result<String, rcgen::Error> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(rcgen::string::Ia5String::try_from(
        uri,
    )?)];
    params.serialize_request(key)?.pem()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_csr_built_by_rcgen() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pem = build_csr_pem(&key, "spiffe://cluster.local/ns/a/sa/b").unwrap();
        let csr = parse_csr_pem(&pem).unwrap();
        assert_eq!(
            csr.sans,
            vec![RequestedSan::Uri("spiffe://cluster.local/ns/a/sa/b".into())]
        );
    }

    #[test]
    fn names_what_is_wrong() {
        assert_eq!(parse_csr_pem("  ").unwrap_err(), CsrError::Empty);
        assert!(matches!(
            parse_csr_pem("hello").unwrap_err(),
            CsrError::Pem(_)
        ));
        let cert = rcgen::generate_simple_self_signed(vec!["a".into()]).unwrap();
        assert!(matches!(
            parse_csr_pem(&cert.cert.pem()).unwrap_err(),
            CsrError::Label(label) if label == "CERTIFICATE"
        ));
        let garbage = "-----BEGIN CERTIFICATE REQUEST-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE REQUEST-----\n";
        assert!(matches!(
            parse_csr_pem(garbage).unwrap_err(),
            CsrError::Der(_)
        ));
    }

    #[test]
    fn refuses_a_tampered_signature() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pem = build_csr_pem(&key, "spiffe://cluster.local/ns/a/sa/b").unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let mut der = block.contents;
        // Flip a byte inside the SAN URI: the structure stays valid, the signature does not.
        let at = der
            .windows(3)
            .position(|w| w == b"/a/")
            .expect("URI bytes present");
        der[at + 1] = b'z';
        assert!(matches!(
            parse_csr_der(&der).unwrap_err(),
            CsrError::Signature(_)
        ));
    }
}
