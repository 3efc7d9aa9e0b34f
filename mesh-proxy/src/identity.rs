//! The proxy's workload identity: a key generated in memory (never written
//! anywhere), a CSR to the mesh CA over TLS, and rotation at about half the
//! certificate's lifetime. Each certificate obtained is installed as the
//! local secrets `default` (chain and key) and `ROOTCA` (trust bundle) that
//! Istio's xDS references, so new handshakes use it at once.
//!
//! ```text
//! --ca-address/--ca-root-cert/--token-file ──> IdentityConfig
//! bootstrap node (NAMESPACE, SERVICE_ACCOUNT) ──> workload_identity() ──> SpiffeId
//!
//! WorkloadIdentity::start ──(CSR, retried until --ca-timeout)──> CA (mesh_ca::CaService)
//!        │ WorkloadCertificate
//!        ├──> SecretSink::install ──> SecretStore::set_local("default" / "ROOTCA")
//!        └──> rotation task: sleep to 45–55% of the lifetime, renew (backoff on failure)
//! ```
//!
//! The bearer token is read from its file for every request, so an operator
//! (or kubelet) can replace it without restarting the proxy. A renewal
//! without a token (no file, or the file unreadable) authenticates with the
//! still-valid current certificate instead (mesh_ca's
//! `PeerCertificateAuthenticator`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_ca::tls::{ExpectedServer, TlsConfigError};
use mesh_ca::{CaClient, ClientError, IssuedIdentity, SpiffeId, SpiffeIdError, TrustBundle};
use rustls::pki_types::ServerName;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bootstrap::NodeInfo;
use crate::model::{TlsCaSource, TlsCertificateSource, TlsSecret, TlsValidation};

/// The SDS name of the workload certificate, as Istio names it.
pub const CERTIFICATE_SECRET: &str = "default";
/// The SDS name of the trust bundle, as Istio names it.
pub const ROOTS_SECRET: &str = "ROOTCA";
/// `--trust-domain` when not given.
pub const DEFAULT_TRUST_DOMAIN: &str = mesh_ca::DEFAULT_TRUST_DOMAIN;
/// `--ca-timeout` when not given: how long start waits for the first certificate.
pub const DEFAULT_CA_TIMEOUT: Duration = Duration::from_secs(30);
/// The namespace and service account of the CA server (istiod's), whose
/// SPIFFE ID the proxy checks on the CA connection.
pub const CA_NAMESPACE: &str = "istio-system";
pub const CA_SERVICE_ACCOUNT: &str = "istiod";
/// Service account when the node metadata names none (Kubernetes' default).
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Rotation happens at a random point of this fraction of the lifetime, so
/// that proxies started together do not renew together.
pub const ROTATE_AT: std::ops::Range<f64> = 0.45..0.55;
/// First and longest pause between failed CA requests.
const RETRY_INITIAL: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(15);
/// Bound on one CA request, so a CA that accepts but never answers is retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the identity could not be configured or obtained.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("--ca-address {address:?}: {reason}")]
    CaAddress { address: String, reason: String },
    #[error("--ca-root-cert {}: {source}", path.display())]
    CaRoots {
        path: PathBuf,
        #[source]
        source: mesh_ca::bundle::PemError,
    },
    #[error("--ca-root-cert {}: contains no certificate", path.display())]
    NoCaRoots { path: PathBuf },
    #[error("--token-file {}: {source}", path.display())]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--token-file {}: the file is empty", path.display())]
    EmptyToken { path: PathBuf },
    #[error("--trust-domain {trust_domain:?}: {source}")]
    TrustDomain {
        trust_domain: String,
        #[source]
        source: SpiffeIdError,
    },
    #[error("workload identity from the bootstrap node {node_id:?}: {source}")]
    NodeIdentity {
        node_id: String,
        #[source]
        source: SpiffeIdError,
    },
    #[error("TLS to the CA: {0}")]
    Tls(#[from] TlsConfigError),
    #[error("the CA at {address}: {source}")]
    Ca {
        address: String,
        // Boxed: `tonic::Status` inside is large.
        #[source]
        source: Box<ClientError>,
    },
    #[error("the CA at {address} did not answer within {}s", REQUEST_TIMEOUT.as_secs())]
    RequestTimeout { address: String },
    #[error("the certificate from the CA: {0}")]
    Certificate(String),
    #[error(
        "no certificate for {identity} within --ca-timeout {}s; last attempt: {last}",
        timeout.as_secs_f64()
    )]
    StartTimeout {
        identity: SpiffeId,
        timeout: Duration,
        // In the message already; not a `#[source]`, so it is not printed twice.
        last: Box<IdentityError>,
    },
}

/// The identity manager's settings (the `--ca-*` flags), parsed once.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// `HOST:PORT` of the CA (the control plane's secure port, 15012).
    pub ca_address: String,
    /// PEM roots that verify the CA server; also part of `ROOTCA`.
    pub ca_root_cert: PathBuf,
    /// Bearer token file, re-read for every request; `None` renews with the
    /// current certificate only (so the first certificate cannot be obtained).
    pub token_file: Option<PathBuf>,
    pub trust_domain: String,
    /// Requested validity; `None` takes the CA's default.
    pub cert_ttl: Option<Duration>,
    /// How long start waits for the first certificate.
    pub ca_timeout: Duration,
}

impl IdentityConfig {
    /// Settings with the defaults for everything but the CA's address and roots.
    pub fn new(ca_address: impl Into<String>, ca_root_cert: impl Into<PathBuf>) -> Self {
        IdentityConfig {
            ca_address: ca_address.into(),
            ca_root_cert: ca_root_cert.into(),
            token_file: None,
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
            cert_ttl: None,
            ca_timeout: DEFAULT_CA_TIMEOUT,
        }
    }

    /// The SPIFFE ID the CA server must present.
    pub fn ca_identity(&self) -> Result<SpiffeId, IdentityError> {
        SpiffeId::new(&self.trust_domain, CA_NAMESPACE, CA_SERVICE_ACCOUNT).map_err(|source| {
            IdentityError::TrustDomain {
                trust_domain: self.trust_domain.clone(),
                source,
            }
        })
    }
}

/// The identity a proxy asks for, from its bootstrap node, as Istio derives
/// it: namespace from metadata `NAMESPACE`, else the `POD.NAMESPACE` part of a
/// node ID `TYPE~IP~POD.NAMESPACE~DOMAIN`; service account from metadata
/// `SERVICE_ACCOUNT`, else `default`.
pub fn workload_identity(node: &NodeInfo, trust_domain: &str) -> Result<SpiffeId, IdentityError> {
    let err = |source| IdentityError::NodeIdentity {
        node_id: node.id.clone(),
        source,
    };
    let from_metadata = |key: &str| {
        node.metadata
            .get(key)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let namespace = from_metadata("NAMESPACE")
        .or_else(|| {
            let pod_and_namespace = node.id.split('~').nth(2)?;
            let (_, namespace) = pod_and_namespace.split_once('.')?;
            // `POD.NAMESPACE` only; a longer DNS-like tail is not a namespace.
            Some(namespace.split('.').next().unwrap_or(namespace).to_owned())
        })
        .unwrap_or_default();
    let service_account =
        from_metadata("SERVICE_ACCOUNT").unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_owned());
    if let Err(source) = mesh_ca::spiffe::validate_trust_domain(trust_domain) {
        return Err(IdentityError::TrustDomain {
            trust_domain: trust_domain.to_owned(),
            source,
        });
    }
    SpiffeId::new(trust_domain, namespace, service_account).map_err(err)
}

/// One certificate obtained from the CA, with what `/certs` and the logs show.
#[derive(Clone)]
pub struct WorkloadCertificate {
    pub identity: SpiffeId,
    /// The leaf's serial number, lowercase hex (as Envoy prints it).
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// When this proxy received it.
    pub issued_at: SystemTime,
    /// Leaf and intermediates as PEM, leaf first.
    pub chain_pem: String,
    /// The trust bundle as PEM: the chain's root and the `--ca-root-cert` roots.
    pub roots_pem: String,
    /// Kept for the TLS layer; never logged nor shown.
    issued: IssuedIdentity,
}

impl std::fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("identity", &self.identity.to_string())
            .field("serial", &self.serial)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl WorkloadCertificate {
    fn new(issued: IssuedIdentity, extra_roots: &TrustBundle) -> Result<Self, IdentityError> {
        let (_, leaf) = x509_parser::parse_x509_certificate(issued.leaf())
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        let serial = leaf.tbs_certificate.serial.to_str_radix(16);
        let mut roots = issued.roots.clone();
        roots.merge(extra_roots);
        Ok(WorkloadCertificate {
            identity: issued.identity.clone(),
            serial,
            not_before: issued.not_before,
            not_after: issued.not_after,
            issued_at: SystemTime::now(),
            chain_pem: issued.chain_pem(),
            roots_pem: roots.to_pem(),
            issued,
        })
    }

    /// The chain, key and roots as rustls material.
    pub fn issued(&self) -> &IssuedIdentity {
        &self.issued
    }

    /// The PKCS#8 key as PEM, for the `default` secret (memory only).
    fn key_pem(&self) -> String {
        pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            self.issued.key.secret_der().to_vec(),
        ))
    }

    /// The `default` secret: chain and key.
    pub fn certificate_secret(&self) -> TlsSecret {
        TlsSecret::Certificate(TlsCertificateSource::InlinePem {
            cert_chain: self.chain_pem.clone(),
            private_key: self.key_pem(),
        })
    }

    /// The `ROOTCA` secret: the trust bundle.
    pub fn roots_secret(&self) -> TlsSecret {
        TlsSecret::ValidationContext(TlsValidation {
            trusted_ca: TlsCaSource::InlinePem(self.roots_pem.clone()),
            match_subject_alt_names: Vec::new(),
        })
    }

    /// When to renew: a random point in [`ROTATE_AT`] of the time between
    /// receipt and expiry (not `not_before`, which CAs backdate for clock skew).
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.issued_at)
            .unwrap_or_default();
        self.issued_at + life.mul_f64(rand::random_range(ROTATE_AT))
    }
}

/// Where new certificates go: the proxy's secret store, or anything a test
/// or an embedding wants to observe.
pub trait SecretSink: Send + Sync + 'static {
    fn install(&self, certificate: &WorkloadCertificate);
}

impl SecretSink for crate::tls::SecretStore {
    fn install(&self, certificate: &WorkloadCertificate) {
        // The roots first: a handshake that sees the new chain must also
        // trust the root it ends in.
        self.set_local(ROOTS_SECRET, certificate.roots_secret());
        self.set_local(CERTIFICATE_SECRET, certificate.certificate_secret());
    }
}

/// A sink for a certificate obtained before the proxy (and its store)
/// exists: it keeps the latest one and installs it when the store is
/// attached, then forwards every rotation.
#[derive(Debug, Default)]
pub struct DeferredSink {
    state: std::sync::Mutex<DeferredState>,
}

#[derive(Debug, Default)]
struct DeferredState {
    store: Option<Arc<crate::tls::SecretStore>>,
    latest: Option<WorkloadCertificate>,
}

impl DeferredSink {
    /// Installs the latest certificate into `store` and every later one.
    pub fn attach(&self, store: Arc<crate::tls::SecretStore>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(latest) = &state.latest {
            store.install(latest);
        }
        state.store = Some(store);
    }
}

impl SecretSink for DeferredSink {
    fn install(&self, certificate: &WorkloadCertificate) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &state.store {
            Some(store) => store.install(certificate),
            None => state.latest = Some(certificate.clone()),
        }
    }
}

impl<F: Fn(&WorkloadCertificate) + Send + Sync + 'static> SecretSink for F {
    fn install(&self, certificate: &WorkloadCertificate) {
        self(certificate)
    }
}

/// A running identity manager: the current certificate, and the rotation
/// task (stopped when this is dropped).
#[derive(Debug)]
pub struct WorkloadIdentity {
    current: watch::Receiver<Arc<WorkloadCertificate>>,
    rotation: JoinHandle<()>,
}

impl Drop for WorkloadIdentity {
    fn drop(&mut self) {
        self.rotation.abort();
    }
}

impl WorkloadIdentity {
    /// Obtains the first certificate for `identity` (retrying with backoff
    /// until `config.ca_timeout`), installs it in `sink`, and starts rotating.
    pub async fn start(
        config: IdentityConfig,
        identity: SpiffeId,
        sink: Arc<dyn SecretSink>,
    ) -> Result<WorkloadIdentity, IdentityError> {
        let requester = Requester::new(config, identity)?;
        let first = requester.obtain_within_timeout().await?;
        sink.install(&first);
        let (tx, current) = watch::channel(Arc::new(first));
        let rotation = tokio::spawn(rotate(requester, tx, sink));
        Ok(WorkloadIdentity { current, rotation })
    }

    /// The certificate in force.
    pub fn current(&self) -> Arc<WorkloadCertificate> {
        self.current.borrow().clone()
    }

    /// Changes on every rotation.
    pub fn subscribe(&self) -> watch::Receiver<Arc<WorkloadCertificate>> {
        self.current.clone()
    }
}

/// Everything needed to make one CSR request.
struct Requester {
    config: IdentityConfig,
    identity: SpiffeId,
    ca_identity: SpiffeId,
    server_name: ServerName<'static>,
    /// Roots read at start; a later unreadable file keeps these.
    ca_roots: TrustBundle,
}

impl Requester {
    fn new(config: IdentityConfig, identity: SpiffeId) -> Result<Self, IdentityError> {
        let ca_identity = config.ca_identity()?;
        let host = ca_host(&config.ca_address)?;
        // SPIFFE verification ignores the name; it is only sent as SNI.
        let server_name = ServerName::try_from(host.to_owned())
            .unwrap_or_else(|_| ServerName::try_from("istiod.istio-system.svc").expect("valid"));
        let ca_roots = read_roots(&config.ca_root_cert)?;
        Ok(Requester {
            config,
            identity,
            ca_identity,
            server_name,
            ca_roots,
        })
    }

    async fn obtain_within_timeout(&self) -> Result<WorkloadCertificate, IdentityError> {
        let timeout = self.config.ca_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut backoff = Backoff::new(Duration::from_secs(2));
        loop {
            let attempt = tokio::time::timeout_at(deadline, self.request(None)).await;
            let last = match attempt {
                Ok(Ok(certificate)) => return Ok(certificate),
                Ok(Err(e)) => e,
                Err(_) => IdentityError::RequestTimeout {
                    address: self.config.ca_address.clone(),
                },
            };
            let pause = backoff.next();
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(IdentityError::StartTimeout {
                    identity: self.identity.clone(),
                    timeout,
                    last: Box::new(last),
                });
            }
            tracing::warn!(identity = %self.identity, error = %last, retry_in = ?pause, "no certificate from the CA yet");
            tokio::time::sleep(pause).await;
        }
    }

    /// One CSR: fresh TLS connection, token read now, key generated now.
    async fn request(
        &self,
        current: Option<&WorkloadCertificate>,
    ) -> Result<WorkloadCertificate, IdentityError> {
        let address = &self.config.ca_address;
        let still_valid = current.filter(|c| c.not_after > SystemTime::now());
        let token = match (&self.config.token_file, still_valid) {
            (Some(path), None) => Some(read_token(path)?),
            // A renewal can go on with the current certificate alone.
            (Some(path), Some(_)) => read_token(path)
                .inspect_err(
                    |e| tracing::warn!(error = %e, "renewing with the current certificate only"),
                )
                .ok(),
            (None, _) => None,
        };
        let roots = read_roots(&self.config.ca_root_cert).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "keeping the CA roots read before");
            self.ca_roots.clone()
        });
        // Without a token the current certificate is the credential.
        let client_identity = if token.is_none() {
            still_valid.map(WorkloadCertificate::issued)
        } else {
            None
        };
        let tls = mesh_ca::tls::client_config(
            &roots,
            client_identity,
            ExpectedServer::SpiffeIds(vec![self.ca_identity.clone()]),
        )?;
        let addr = resolve(address).await?;
        let ca = |source| IdentityError::Ca {
            address: address.clone(),
            source: Box::new(source),
        };
        let call = async {
            let mut client =
                CaClient::connect(addr, Arc::new(tls), self.server_name.clone(), token)
                    .await
                    .map_err(ca)?;
            client
                .fetch_identity(&self.identity, self.config.cert_ttl)
                .await
                .map_err(ca)
        };
        let issued = tokio::time::timeout(REQUEST_TIMEOUT, call)
            .await
            .map_err(|_| IdentityError::RequestTimeout {
                address: address.clone(),
            })??;
        let certificate = WorkloadCertificate::new(issued, &roots)?;
        tracing::info!(
            identity = %certificate.identity,
            serial = %certificate.serial,
            not_after = %mesh_ca::rfc3339(certificate.not_after),
            "workload certificate issued"
        );
        Ok(certificate)
    }
}

/// Renews at about half life, forever; on failure retries with backoff
/// while the current certificate is still valid (and after, loudly).
async fn rotate(
    requester: Requester,
    tx: watch::Sender<Arc<WorkloadCertificate>>,
    sink: Arc<dyn SecretSink>,
) {
    loop {
        let current = tx.borrow().clone();
        let wait = current
            .renew_at()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::time::sleep(wait).await;
        let mut backoff = Backoff::new(RETRY_MAX);
        let renewed = loop {
            match requester.request(Some(&current)).await {
                Ok(renewed) => break renewed,
                Err(e) => {
                    let left = current
                        .not_after
                        .duration_since(SystemTime::now())
                        .unwrap_or_default();
                    // Retry at least a few times before the old one expires.
                    let pause = backoff.next().min((left / 4).max(RETRY_INITIAL));
                    if left.is_zero() {
                        tracing::error!(identity = %requester.identity, error = %e, retry_in = ?pause,
                            "renewal failed and the workload certificate has expired");
                    } else {
                        tracing::warn!(identity = %requester.identity, error = %e, retry_in = ?pause,
                            valid_for = ?left, "renewal failed; the current certificate stays in force");
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        };
        sink.install(&renewed);
        if tx.send(Arc::new(renewed)).is_err() {
            return;
        }
    }
}

/// Exponential backoff with jitter, from [`RETRY_INITIAL`] up to `max`.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Backoff {
            next: RETRY_INITIAL,
            max,
        }
    }

    fn next(&mut self) -> Duration {
        let pause = self.next.mul_f64(rand::random_range(0.8..1.2));
        self.next = (self.next * 2).min(self.max);
        pause
    }
}

fn ca_host(address: &str) -> Result<&str, IdentityError> {
    let bad = |reason: &str| IdentityError::CaAddress {
        address: address.to_owned(),
        reason: reason.to_owned(),
    };
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| bad("expected HOST:PORT"))?;
    port.parse::<u16>()
        .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("the host is empty"));
    }
    Ok(host)
}

async fn resolve(address: &str) -> Result<SocketAddr, IdentityError> {
    let failed = |reason: String| IdentityError::CaAddress {
        address: address.to_owned(),
        reason,
    };
    tokio::net::lookup_host(address)
        .await
        .map_err(|e| failed(format!("cannot resolve: {e}")))?
        .next()
        .ok_or_else(|| failed("resolves to no address".into()))
}

fn read_roots(path: &Path) -> Result<TrustBundle, IdentityError> {
    let roots = TrustBundle::from_pem_file(path).map_err(|source| IdentityError::CaRoots {
        path: path.to_owned(),
        source,
    })?;
    if roots.is_empty() {
        return Err(IdentityError::NoCaRoots {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

fn read_token(path: &Path) -> Result<String, IdentityError> {
    let text = std::fs::read_to_string(path).map_err(|source| IdentityError::TokenFile {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(IdentityError::EmptyToken {
            path: path.to_owned(),
        });
    }
    Ok(token.to_owned())
}

/// Parses a duration flag: an integer with a unit `ms`, `s`, `m`, `h` or `d`
/// (`30s`, `24h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?}: a unit is required (ms, s, m, h, d)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a whole number before the unit"))?;
    let seconds = |factor: u64| {
        n.checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{text:?}: too long"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(86_400),
        other => Err(format!(
            "{text:?}: unknown unit {other:?} (expected ms, s, m, h or d)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, metadata: serde_json::Value) -> NodeInfo {
        NodeInfo {
            id: id.to_owned(),
            metadata: metadata.as_object().cloned().unwrap_or_default(),
            ..NodeInfo::default()
        }
    }

    #[test]
    fn identity_from_metadata_then_node_id() {
        let n = node(
            "sidecar~10.0.0.1~hello-1.shop~shop.svc.cluster.local",
            serde_json::json!({"NAMESPACE": "prod", "SERVICE_ACCOUNT": "web"}),
        );
        assert_eq!(
            workload_identity(&n, "cluster.local").unwrap().to_string(),
            "spiffe://cluster.local/ns/prod/sa/web"
        );
        let n = node(
            "sidecar~10.0.0.1~hello-1.shop~shop.svc.cluster.local",
            serde_json::json!({}),
        );
        assert_eq!(
            workload_identity(&n, "example.org").unwrap().to_string(),
            "spiffe://example.org/ns/shop/sa/default"
        );
    }

    #[test]
    fn identity_errors_name_the_node() {
        let n = node("just-a-name", serde_json::json!({}));
        let e = workload_identity(&n, "cluster.local")
            .unwrap_err()
            .to_string();
        assert!(e.contains("just-a-name"), "{e}");
        let e = workload_identity(&n, "Bad Domain").unwrap_err().to_string();
        assert!(e.contains("--trust-domain \"Bad Domain\""), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("30").unwrap_err().contains("unit"));
        assert!(parse_duration("3x").unwrap_err().contains("\"x\""));
    }

    #[test]
    fn ca_address_must_be_host_and_port() {
        assert_eq!(ca_host("127.0.0.1:15012").unwrap(), "127.0.0.1");
        assert_eq!(ca_host("[::1]:15012").unwrap(), "::1");
        let e = ca_host("istiod").unwrap_err().to_string();
        assert!(
            e.contains("--ca-address \"istiod\"") && e.contains("HOST:PORT"),
            "{e}"
        );
    }

    #[test]
    fn renewal_falls_in_the_middle_of_the_lifetime() {
        let ca = mesh_ca::CertificateAuthority::generate(mesh_ca::CaConfig::default()).unwrap();
        let id = SpiffeId::new("cluster.local", "a", "b").unwrap();
        let issued = ca
            .issue_identity(&id, &[], Some(Duration::from_secs(1000)))
            .unwrap();
        let cert = WorkloadCertificate::new(issued, &TrustBundle::new()).unwrap();
        for _ in 0..50 {
            let at = cert.renew_at().duration_since(cert.issued_at).unwrap();
            assert!(
                at >= Duration::from_secs(440) && at <= Duration::from_secs(560),
                "{at:?}"
            );
        }
        assert!(!format!("{cert:?}").contains("PRIVATE"));
        match cert.certificate_secret() {
            TlsSecret::Certificate(TlsCertificateSource::InlinePem { private_key, .. }) => {
                assert!(private_key.starts_with("-----BEGIN PRIVATE KEY-----"))
            }
            other => panic!("{other:?}"),
        }
        assert!(!cert.serial.is_empty() && !cert.serial.contains(':'));
    }
}
