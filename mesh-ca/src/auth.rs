//! Who is calling the CSR service. An [`Authenticator`] turns what the caller
//! presented (a bearer token, a client certificate) into the one identity it
//! may obtain a certificate for.
//!
//! Implemented here: [`TokenAuthenticator`] (the local mesh: `meshctl up` hands
//! each workload a random token bound to its namespace and service account) and
//! [`PeerCertificateAuthenticator`] (renewal with a still-valid mesh
//! certificate, verified by the TLS layer). Kubernetes service-account token
//! review plugs in as another implementation of the trait.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

use crate::spiffe::{SpiffeId, SpiffeIdError};

/// What a caller presented with its request.
#[derive(Debug, Clone, Default)]
pub struct CallerContext {
    /// The token of an `authorization: Bearer TOKEN` header, if any.
    pub bearer_token: Option<String>,
    /// The client certificate chain, leaf first, when the TLS layer verified one.
    pub peer_certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
    pub remote_addr: Option<SocketAddr>,
}

/// Why a caller was not authenticated; the message is returned to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no credentials: send an \"authorization: Bearer TOKEN\" header or a mesh client certificate"
    )]
    NoCredentials,
    #[error("the bearer token is not known to this CA")]
    UnknownToken,
    #[error("the client certificate carries no usable identity: {0}")]
    BadCertificate(String),
    #[error("authentication failed: {0}")]
    Other(String),
}

/// A boxed future, so that authenticators can be stored as trait objects.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<SpiffeId, AuthError>> + Send + 'a>>;

/// Turns a caller's credentials into its identity.
pub trait Authenticator: Send + Sync + 'static {
    /// Short name for logs (`token`, `client-certificate`, `kubernetes`).
    fn name(&self) -> &'static str;

    /// The identity the caller proved. Return [`AuthError::NoCredentials`] when
    /// the kind of credential this authenticator checks is absent, so that a
    /// chain of authenticators can try the next one.
    fn authenticate<'a>(&'a self, caller: &'a CallerContext) -> AuthFuture<'a>;
}

/// Tries each authenticator in order; the first that finds its kind of
/// credential decides. Refusals are reported, missing credentials skipped.
#[derive(Clone, Default)]
pub struct AuthenticatorChain {
    authenticators: Vec<Arc<dyn Authenticator>>,
}

impl AuthenticatorChain {
    pub fn new(authenticators: Vec<Arc<dyn Authenticator>>) -> Self {
        AuthenticatorChain { authenticators }
    }
}

impl Authenticator for AuthenticatorChain {
    fn name(&self) -> &'static str {
        "chain"
    }

    fn authenticate<'a>(&'a self, caller: &'a CallerContext) -> AuthFuture<'a> {
        Box::pin(async move {
            for authenticator in &self.authenticators {
                match authenticator.authenticate(caller).await {
                    Err(AuthError::NoCredentials) => continue,
                    other => return other,
                }
            }
            Err(AuthError::NoCredentials)
        })
    }
}

/// Failure to read a token file.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: expected \"TOKEN NAMESPACE SERVICE_ACCOUNT\", found {found} fields", path.display())]
    Fields {
        path: PathBuf,
        line: usize,
        found: usize,
    },
    #[error("{}:{line}: {source}", path.display())]
    Identity {
        path: PathBuf,
        line: usize,
        #[source]
        source: SpiffeIdError,
    },
    #[error("{}:{line}: token is listed twice", path.display())]
    Duplicate { path: PathBuf, line: usize },
}

/// Per-workload bearer tokens of the local mesh: token -> namespace/service account.
///
/// The token file has one workload per line, `TOKEN NAMESPACE SERVICE_ACCOUNT`,
/// separated by white space; blank lines and lines starting with `#` are skipped.
#[derive(Clone)]
pub struct TokenAuthenticator {
    trust_domain: String,
    tokens: HashMap<String, SpiffeId>,
}

impl std::fmt::Debug for TokenAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the tokens themselves.
        f.debug_struct("TokenAuthenticator")
            .field("trust_domain", &self.trust_domain)
            .field("workloads", &self.tokens.len())
            .finish()
    }
}

impl TokenAuthenticator {
    pub fn new(trust_domain: impl Into<String>) -> Self {
        TokenAuthenticator {
            trust_domain: trust_domain.into(),
            tokens: HashMap::new(),
        }
    }

    /// Creates a random token for `namespace`/`service_account` and returns it.
    pub fn issue_token(
        &mut self,
        namespace: &str,
        service_account: &str,
    ) -> Result<String, SpiffeIdError> {
        let identity = SpiffeId::new(self.trust_domain.clone(), namespace, service_account)?;
        let bytes: [u8; 32] = rand::random();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.tokens.insert(token.clone(), identity);
        Ok(token)
    }

    /// Registers a token chosen by the caller.
    pub fn insert(
        &mut self,
        token: impl Into<String>,
        namespace: &str,
        service_account: &str,
    ) -> Result<(), SpiffeIdError> {
        let identity = SpiffeId::new(self.trust_domain.clone(), namespace, service_account)?;
        self.tokens.insert(token.into(), identity);
        Ok(())
    }

    /// Reads tokens from a file in the format described on the type.
    pub fn from_file(path: &Path, trust_domain: impl Into<String>) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut tokens = TokenAuthenticator::new(trust_domain);
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [token, namespace, service_account] = fields.as_slice() else {
                return Err(TokenFileError::Fields {
                    path: path.to_owned(),
                    line: line_no,
                    found: fields.len(),
                });
            };
            if tokens.tokens.contains_key(*token) {
                return Err(TokenFileError::Duplicate {
                    path: path.to_owned(),
                    line: line_no,
                });
            }
            tokens
                .insert(*token, namespace, service_account)
                .map_err(|source| TokenFileError::Identity {
                    path: path.to_owned(),
                    line: line_no,
                    source,
                })?;
        }
        Ok(tokens)
    }

    /// The file text for these tokens (write it readable by its owner only).
    pub fn to_file_text(&self) -> String {
        let mut lines: Vec<String> = self
            .tokens
            .iter()
            .map(|(token, id)| format!("{token} {} {}\n", id.namespace(), id.service_account()))
            .collect();
        lines.sort();
        lines.concat()
    }

    /// Writes the token file, readable by its owner only; replaces an existing file.
    pub fn write_file(&self, path: &Path) -> Result<(), TokenFileError> {
        use std::io::Write;
        let io = |source| TokenFileError::Io {
            path: path.to_owned(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        file.write_all(self.to_file_text().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    fn lookup(&self, presented: &str) -> Option<&SpiffeId> {
        // Compare every known token in constant time so that response timing does not
        // reveal how much of a guessed token matched.
        let mut found = None;
        for (token, identity) in &self.tokens {
            if constant_time_eq(token.as_bytes(), presented.as_bytes()) {
                found = Some(identity);
            }
        }
        found
    }
}

impl Authenticator for TokenAuthenticator {
    fn name(&self) -> &'static str {
        "token"
    }

    fn authenticate<'a>(&'a self, caller: &'a CallerContext) -> AuthFuture<'a> {
        Box::pin(async move {
            let token = caller
                .bearer_token
                .as_deref()
                .ok_or(AuthError::NoCredentials)?;
            self.lookup(token).cloned().ok_or(AuthError::UnknownToken)
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Authenticates by the SPIFFE ID of a client certificate that the TLS layer
/// has already verified against the mesh's trust bundle (renewal before expiry).
#[derive(Debug, Clone)]
pub struct PeerCertificateAuthenticator {
    trust_domain: String,
}

impl PeerCertificateAuthenticator {
    pub fn new(trust_domain: impl Into<String>) -> Self {
        PeerCertificateAuthenticator {
            trust_domain: trust_domain.into(),
        }
    }
}

impl Authenticator for PeerCertificateAuthenticator {
    fn name(&self) -> &'static str {
        "client-certificate"
    }

    fn authenticate<'a>(&'a self, caller: &'a CallerContext) -> AuthFuture<'a> {
        Box::pin(async move {
            let certs = caller
                .peer_certificates
                .as_ref()
                .filter(|c| !c.is_empty())
                .ok_or(AuthError::NoCredentials)?;
            let identity = crate::tls::spiffe_id_of(&certs[0])
                .map_err(|e| AuthError::BadCertificate(e.to_string()))?;
            if identity.trust_domain() != self.trust_domain {
                return Err(AuthError::BadCertificate(format!(
                    "{identity} is outside trust domain {:?}",
                    self.trust_domain
                )));
            }
            Ok(identity)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(token: &str) -> CallerContext {
        CallerContext {
            bearer_token: Some(token.into()),
            ..CallerContext::default()
        }
    }

    #[tokio::test]
    async fn tokens_map_to_their_identity() {
        let mut auth = TokenAuthenticator::new("cluster.local");
        let token = auth.issue_token("default", "helloworld").unwrap();
        assert_eq!(
            auth.authenticate(&ctx(&token)).await.unwrap().to_string(),
            "spiffe://cluster.local/ns/default/sa/helloworld"
        );
        assert_eq!(
            auth.authenticate(&ctx("nope")).await.unwrap_err(),
            AuthError::UnknownToken
        );
        assert_eq!(
            auth.authenticate(&CallerContext::default())
                .await
                .unwrap_err(),
            AuthError::NoCredentials
        );
    }

    #[tokio::test]
    async fn token_file_round_trips_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut auth = TokenAuthenticator::new("cluster.local");
        let token = auth.issue_token("ns1", "sa1").unwrap();
        let path = dir.path().join("tokens");
        auth.write_file(&path).unwrap();
        let reread = TokenAuthenticator::from_file(&path, "cluster.local").unwrap();
        assert_eq!(
            reread.authenticate(&ctx(&token)).await.unwrap().namespace(),
            "ns1"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
        std::fs::write(&path, format!("# comment\n\n{}", auth.to_file_text())).unwrap();
        assert_eq!(
            TokenAuthenticator::from_file(&path, "cluster.local")
                .unwrap()
                .len(),
            1
        );

        std::fs::write(&path, "abc ns1\n").unwrap();
        let err = TokenAuthenticator::from_file(&path, "cluster.local").unwrap_err();
        assert!(
            err.to_string()
                .ends_with(":1: expected \"TOKEN NAMESPACE SERVICE_ACCOUNT\", found 2 fields"),
            "{err}"
        );
        std::fs::write(&path, "abc ns1 sa1\nabc ns2 sa2\n").unwrap();
        let err = TokenAuthenticator::from_file(&path, "cluster.local").unwrap_err();
        assert!(
            err.to_string().ends_with(":2: token is listed twice"),
            "{err}"
        );
        std::fs::write(&path, "abc ns/1 sa1\n").unwrap();
        let err = TokenAuthenticator::from_file(&path, "cluster.local").unwrap_err();
        assert!(
            err.to_string().contains(":1: invalid namespace \"ns/1\""),
            "{err}"
        );
    }

    #[tokio::test]
    async fn chain_skips_missing_credentials_but_not_refusals() {
        let mut tokens = TokenAuthenticator::new("cluster.local");
        let token = tokens.issue_token("a", "b").unwrap();
        let chain = AuthenticatorChain::new(vec![
            Arc::new(PeerCertificateAuthenticator::new("cluster.local")),
            Arc::new(tokens),
        ]);
        assert_eq!(
            chain
                .authenticate(&ctx(&token))
                .await
                .unwrap()
                .service_account(),
            "b"
        );
        assert_eq!(
            chain.authenticate(&ctx("bad")).await.unwrap_err(),
            AuthError::UnknownToken
        );
    }
}
