//! The secure port (15012, as istiod's): TLS with an optional client
//! certificate, serving on one gRPC server both the CA's CSR service
//! (`istio.v1.auth.IstioCertificateService`) and ADS with secrets.
//!
//! The control plane's own certificate, `spiffe://TD/ns/istio-system/sa/istiod`,
//! is issued by the mesh CA at start and replaced at half its life; new
//! handshakes pick the new one up through a certificate resolver, established
//! streams keep theirs.
//!
//! Who a caller is comes from an [`AuthenticatorChain`]: a Kubernetes
//! service-account token (TokenReview) in Kubernetes mode, a bearer token from
//! the `--ca-tokens` file, else a client certificate of the mesh (renewal).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use mesh_ca::auth::TokenFileError;
use mesh_ca::tls::{ClientAuth, TlsConfigError, TlsIncoming};
use mesh_ca::{
    Authenticator, AuthenticatorChain, CaConfig, CaError, CertificateAuthority, IssuedIdentity,
    PeerCertificateAuthenticator, SignError, SpiffeId, TokenAuthenticator,
};
use rustls::server::{ClientHello, ResolvesServerCert};

use crate::token_review::TokenReviewAuthenticator;
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// TLS xDS and CA, as istiod's 15012.
pub const DEFAULT_SECURE_XDS_ADDRESS: &str = "127.0.0.1:15012";
/// The control plane's identity: istiod's namespace and service account.
pub const CONTROL_PLANE_NAMESPACE: &str = "istio-system";
pub const CONTROL_PLANE_SERVICE_ACCOUNT: &str = "istiod";
/// Extra DNS names on the serving certificate, for clients that check host
/// names rather than the SPIFFE ID.
pub const CONTROL_PLANE_DNS_NAMES: [&str; 3] = ["istiod", "istiod.istio-system.svc", "localhost"];
/// Wait after a failed renewal of the serving certificate.
const RENEW_RETRY: Duration = Duration::from_secs(10);

/// Why the secure port could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    #[error("certificate authority")]
    Ca(#[from] CaError),
    #[error("reading --ca-tokens")]
    Tokens(#[from] TokenFileError),
    #[error("the control plane's identity")]
    Identity(#[from] mesh_ca::SpiffeIdError),
    #[error("issuing the control plane's serving certificate")]
    ServingCertificate(#[from] SignError),
    #[error("TLS configuration of the secure port")]
    Tls(#[from] TlsConfigError),
    #[error("the secure port's serving key")]
    Key(#[from] rustls::Error),
    #[error("--workload-cert-ttl {}s is more than --max-cert-ttl {}s", ttl.as_secs(), max.as_secs())]
    WorkloadTtl { ttl: Duration, max: Duration },
}

/// What the CA signs, per the flags.
pub fn ca_config(trust_domain: &str, max_ttl: Duration) -> CaConfig {
    let defaults = CaConfig::for_trust_domain(trust_domain);
    CaConfig {
        // A maximum below the 24 h default lowers the default with it.
        default_ttl: defaults.default_ttl.min(max_ttl),
        max_ttl,
        ..defaults
    }
}

/// The CA, per the flags: `--ca-dir` (Istio's plugged-in layout, or a root
/// generated and kept there), else a root generated in memory for this run.
pub fn load_ca(
    ca_dir: Option<&Path>,
    trust_domain: &str,
    max_ttl: Duration,
) -> Result<CertificateAuthority, CaError> {
    let config = ca_config(trust_domain, max_ttl);
    match ca_dir {
        Some(dir) => CertificateAuthority::load_or_generate(dir, config),
        None => {
            tracing::warn!(
                "no --ca-dir: the mesh root CA is generated in memory and lost on exit; \
                 proxies must be given its root again after a restart"
            );
            CertificateAuthority::generate(config)
        }
    }
}

/// Tokens from `--ca-tokens`, then mesh client certificates.
pub fn authenticator(
    tokens: Option<&PathBuf>,
    token_review: Option<TokenReviewAuthenticator>,
    trust_domain: &str,
) -> Result<AuthenticatorChain, TokenFileError> {
    let mut chain: Vec<Arc<dyn Authenticator>> = Vec::new();
    if let Some(review) = token_review {
        tracing::info!("service-account tokens checked by the Kubernetes TokenReview API");
        chain.push(Arc::new(review));
    }
    match tokens {
        Some(path) => {
            let t = TokenAuthenticator::from_file(path, trust_domain)?;
            tracing::info!(file = %path.display(), workloads = t.len(), "bearer tokens loaded");
            chain.push(Arc::new(t));
        }
        None if chain.is_empty() => {
            tracing::warn!(
                "no --ca-tokens and no Kubernetes: only callers with a mesh client certificate can authenticate"
            );
        }
        None => {}
    }
    chain.push(Arc::new(PeerCertificateAuthenticator::new(trust_domain)));
    Ok(AuthenticatorChain::new(chain))
}

/// The certificate presented on new handshakes, swapped on renewal.
#[derive(Debug)]
pub struct ServingCertificate {
    current: RwLock<(Arc<CertifiedKey>, Arc<IssuedIdentity>)>,
}

impl ServingCertificate {
    fn new(issued: IssuedIdentity) -> Result<ServingCertificate, rustls::Error> {
        let key = certified_key(&issued)?;
        Ok(ServingCertificate {
            current: RwLock::new((key, Arc::new(issued))),
        })
    }

    fn replace(&self, issued: IssuedIdentity) -> Result<(), rustls::Error> {
        let key = certified_key(&issued)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (key, Arc::new(issued));
        Ok(())
    }

    /// The certificate in force.
    pub fn identity(&self) -> Arc<IssuedIdentity> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }
}

impl ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .clone(),
        )
    }
}

fn certified_key(issued: &IssuedIdentity) -> Result<Arc<CertifiedKey>, rustls::Error> {
    Ok(Arc::new(CertifiedKey::from_der(
        issued.chain.clone(),
        issued.key.clone_key(),
        &mesh_ca::tls::crypto_provider(),
    )?))
}

/// The listener of the secure port, TLS set up, plus the task renewing the
/// serving certificate.
pub struct SecureListener {
    pub incoming: TlsIncoming,
    pub serving: Arc<ServingCertificate>,
    pub renewal: tokio::task::JoinHandle<()>,
}

/// Issues the control plane's certificate and wraps `listener` in TLS
/// (ALPN h2, client certificates requested but optional).
pub fn listen(
    listener: TcpListener,
    ca: &Arc<CertificateAuthority>,
    serving_ttl: Option<Duration>,
    shutdown: watch::Receiver<bool>,
) -> Result<SecureListener, SecureError> {
    let identity = SpiffeId::new(
        ca.trust_domain(),
        CONTROL_PLANE_NAMESPACE,
        CONTROL_PLANE_SERVICE_ACCOUNT,
    )?;
    let dns: Vec<String> = CONTROL_PLANE_DNS_NAMES.map(String::from).to_vec();
    let issued = ca.issue_identity(&identity, &dns, serving_ttl)?;
    tracing::info!(%identity, not_after = %mesh_ca::rfc3339(issued.not_after), "issued the control plane's serving certificate");
    let mut config = mesh_ca::tls::server_config(&issued, ClientAuth::Optional)?;
    let serving = Arc::new(ServingCertificate::new(issued)?);
    config.cert_resolver = serving.clone();
    let renewal = tokio::spawn(renew(
        ca.clone(),
        identity,
        dns,
        serving_ttl,
        serving.clone(),
        shutdown,
    ));
    Ok(SecureListener {
        incoming: TlsIncoming::new(listener, Arc::new(config)),
        serving,
        renewal,
    })
}

/// Replaces the serving certificate at half its life until shutdown.
async fn renew(
    ca: Arc<CertificateAuthority>,
    identity: SpiffeId,
    dns: Vec<String>,
    ttl: Option<Duration>,
    serving: Arc<ServingCertificate>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut wait = half_life_left(&serving.identity());
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = crate::server::until_shutdown(&mut shutdown) => return,
        }
        let renewed = ca
            .issue_identity(&identity, &dns, ttl)
            .map_err(|e| e.to_string())
            .and_then(|issued| {
                let not_after = issued.not_after;
                serving.replace(issued).map_err(|e| e.to_string())?;
                Ok(not_after)
            });
        match renewed {
            Ok(not_after) => {
                tracing::info!(%identity, not_after = %mesh_ca::rfc3339(not_after), "renewed the control plane's serving certificate");
                wait = half_life_left(&serving.identity());
            }
            Err(e) => {
                tracing::error!(%identity, "cannot renew the serving certificate (retrying in {RENEW_RETRY:?}): {e}");
                wait = RENEW_RETRY;
            }
        }
    }
}

fn half_life_left(issued: &IssuedIdentity) -> Duration {
    crate::ads::sds::renew_at(issued)
        .duration_since(SystemTime::now())
        .unwrap_or_default()
}

/// The secure port's address, or `None` when it is off.
pub fn parse_secure_address(s: &str) -> Result<Option<SocketAddr>, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    s.parse::<SocketAddr>()
        .map(Some)
        .map_err(|e| format!("{e}: expected HOST:PORT (an IP address and a port) or \"off\""))
}

/// A certificate lifetime flag: `90d`, `24h`, `1h30m`, `45s` (see
/// [`mesh_api::duration::parse_flag_duration`]), more than zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = mesh_api::duration::parse_flag_duration(s)?;
    if d.is_zero() {
        return Err(format!("{:?}: must be more than zero", s.trim()));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("10w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("0s").unwrap_err().contains("more than zero"));
        assert!(parse_duration("h").unwrap_err().contains("number"));
    }

    #[test]
    fn secure_addresses() {
        assert_eq!(parse_secure_address("off"), Ok(None));
        assert_eq!(
            parse_secure_address("127.0.0.1:15012"),
            Ok(Some("127.0.0.1:15012".parse().unwrap()))
        );
        assert!(parse_secure_address("nowhere").unwrap_err().contains("off"));
    }

    #[test]
    fn a_low_maximum_lowers_the_default_lifetime() {
        let ca = load_ca(None, "example.org", Duration::from_secs(3600)).unwrap();
        assert_eq!(ca.config().default_ttl, Duration::from_secs(3600));
        assert_eq!(ca.trust_domain(), "example.org");
    }
}
