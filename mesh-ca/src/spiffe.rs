//! SPIFFE IDs in the shape the mesh issues: `spiffe://TRUST_DOMAIN/ns/NS/sa/SA`.
//!
//! Rules follow the SPIFFE ID specification (lower-case trust domain of
//! `[a-z0-9._-]`, path segments of `[A-Za-z0-9._-]`, no `.`/`..` segments, no
//! query or fragment) narrowed to Istio's `/ns/{namespace}/sa/{service account}` path.

use std::fmt;
use std::str::FromStr;

/// Trust domain used when none is configured, as in Istio.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

const SCHEME: &str = "spiffe://";
/// The SPIFFE specification caps an ID at 2048 bytes.
const MAX_LEN: usize = 2048;
/// The specification caps the trust domain at 255 characters.
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a string is not a mesh SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("{id:?} is not a SPIFFE ID: it must start with \"spiffe://\"")]
    Scheme { id: String },
    #[error("{id:?} is not a SPIFFE ID: it is longer than {MAX_LEN} bytes")]
    TooLong { id: String },
    #[error("invalid trust domain {trust_domain:?}: {reason}")]
    TrustDomain {
        trust_domain: String,
        reason: &'static str,
    },
    #[error(
        "{id:?} is not a mesh workload identity: the path must be /ns/NAMESPACE/sa/SERVICE_ACCOUNT"
    )]
    Path { id: String },
    #[error("invalid {what} {value:?} in SPIFFE ID: {reason}")]
    Segment {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// A validated workload identity, `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

impl SpiffeId {
    /// Builds an ID from its parts, validating each.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<Self, SpiffeIdError> {
        let trust_domain = trust_domain.into();
        let namespace = namespace.into();
        let service_account = service_account.into();
        validate_trust_domain(&trust_domain)?;
        validate_segment("namespace", &namespace)?;
        validate_segment("service account", &service_account)?;
        Ok(SpiffeId {
            trust_domain,
            namespace,
            service_account,
        })
    }

    /// Parses `spiffe://TD/ns/NS/sa/SA`.
    pub fn parse(id: &str) -> Result<Self, SpiffeIdError> {
        if id.len() > MAX_LEN {
            return Err(SpiffeIdError::TooLong {
                id: id.chars().take(64).collect::<String>() + "...",
            });
        }
        let rest = match id.get(..SCHEME.len()) {
            Some(scheme) if scheme.eq_ignore_ascii_case(SCHEME) => &id[SCHEME.len()..],
            _ => return Err(SpiffeIdError::Scheme { id: id.to_owned() }),
        };
        let (trust_domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        validate_trust_domain(trust_domain)?;
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["ns", namespace, "sa", service_account] => {
                SpiffeId::new(trust_domain, *namespace, *service_account)
            }
            _ => Err(SpiffeIdError::Path { id: id.to_owned() }),
        }
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The URI form, as written into certificates.
    pub fn to_uri(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpiffeId::parse(s)
    }
}

/// Checks a trust domain name against the SPIFFE rules.
pub fn validate_trust_domain(trust_domain: &str) -> Result<(), SpiffeIdError> {
    let err = |reason| SpiffeIdError::TrustDomain {
        trust_domain: trust_domain.to_owned(),
        reason,
    };
    if trust_domain.is_empty() {
        return Err(err("it is empty"));
    }
    if trust_domain.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(err("it is longer than 255 characters"));
    }
    if !trust_domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return Err(err(
            "only lower-case letters, digits, '.', '-' and '_' are allowed (no port, user or upper case)",
        ));
    }
    Ok(())
}

fn validate_segment(what: &'static str, value: &str) -> Result<(), SpiffeIdError> {
    let err = |reason| SpiffeIdError::Segment {
        what,
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(err("it is empty"));
    }
    if value == "." || value == ".." {
        return Err(err("'.' and '..' are not allowed"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(err("only letters, digits, '.', '-' and '_' are allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/helloworld").unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "helloworld");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/helloworld"
        );
        assert_eq!(
            SpiffeId::new("cluster.local", "default", "helloworld").unwrap(),
            id
        );
    }

    #[test]
    fn refuses_bad_ids_with_reasons() {
        let cases = [
            ("https://cluster.local/ns/a/sa/b", "must start with"),
            ("spiffe://Cluster.local/ns/a/sa/b", "lower-case"),
            ("spiffe://cluster.local:8080/ns/a/sa/b", "no port"),
            ("spiffe:///ns/a/sa/b", "empty"),
            (
                "spiffe://cluster.local/ns/a",
                "/ns/NAMESPACE/sa/SERVICE_ACCOUNT",
            ),
            (
                "spiffe://cluster.local/ns/a/sa/b/c",
                "/ns/NAMESPACE/sa/SERVICE_ACCOUNT",
            ),
            ("spiffe://cluster.local/ns//sa/b", "namespace"),
            ("spiffe://cluster.local/ns/a/sa/..", "'..'"),
            ("spiffe://cluster.local/ns/a/sa/b?x=1", "service account"),
            ("spiffe://cluster.local", "/ns/NAMESPACE"),
        ];
        for (id, want) in cases {
            let err = SpiffeId::parse(id).unwrap_err().to_string();
            assert!(err.contains(want), "{id}: {err:?} should contain {want:?}");
        }
    }
}
