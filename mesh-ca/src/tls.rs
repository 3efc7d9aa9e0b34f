//! rustls configurations built from mesh certificates (ring provider only),
//! verification of peers by SPIFFE ID instead of host name, and the plumbing
//! to run tonic over those configurations: a TLS accept stream whose
//! connections expose the verified client chain to handlers, and a connector.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_parser::extensions::GeneralName;

use crate::authority::IssuedIdentity;
use crate::bundle::TrustBundle;
use crate::spiffe::{SpiffeId, SpiffeIdError};

/// How long a TLS handshake on an accepted connection may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// ALPN for gRPC.
pub const ALPN_H2: &[u8] = b"h2";

/// The ring provider; the mesh never uses aws-lc-rs. Suites are in Envoy's
/// (BoringSSL's) default preference, AES-128-GCM first, rather than rustls'
/// AES-256-GCM first: the mesh's proxies and Envoy sidecars then agree on a
/// suite, and the cheaper one, without any `tls_params`.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as suite;
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            suite::TLS13_AES_128_GCM_SHA256,
            suite::TLS13_AES_256_GCM_SHA384,
            suite::TLS13_CHACHA20_POLY1305_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ],
        ..rustls::crypto::ring::default_provider()
    })
}

/// Failure to build a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("the trust bundle is empty")]
    NoRoots,
}

/// Why a certificate does not carry a usable mesh identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerIdentityError {
    #[error("certificate cannot be parsed: {0}")]
    Parse(String),
    #[error("certificate has no SPIFFE URI SAN")]
    NoSpiffeId,
    #[error("certificate has {0} SPIFFE URI SANs; exactly one is expected")]
    Several(usize),
    #[error(transparent)]
    Invalid(#[from] SpiffeIdError),
}

/// The SPIFFE ID in a certificate's URI SANs (DNS SANs are ignored).
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Result<SpiffeId, PeerIdentityError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| PeerIdentityError::Parse(e.to_string()))?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| PeerIdentityError::Parse(e.to_string()))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(PeerIdentityError::NoSpiffeId),
        [uri] => Ok(SpiffeId::parse(uri)?),
        several => Err(PeerIdentityError::Several(several.len())),
    }
}

/// The SPIFFE ID of the peer of an established connection (either side), from
/// its verified leaf certificate; `None` when the peer sent no certificate.
pub fn peer_spiffe_id(
    connection: &rustls::CommonState,
) -> Option<Result<SpiffeId, PeerIdentityError>> {
    connection
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(spiffe_id_of)
}

/// Whether a server asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is requested.
    None,
    /// A certificate is requested and verified if sent; callers without one may
    /// still authenticate another way (a bearer token on the CSR service).
    Optional,
    /// A certificate chaining to the bundle is required.
    Required,
}

/// A server configuration presenting `identity`, with ALPN `h2` (set
/// `alpn_protocols` on the result to serve other protocols too).
pub fn server_config(
    identity: &IssuedIdentity,
    client_auth: ClientAuth,
) -> Result<ServerConfig, TlsConfigError> {
    let provider = crypto_provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional | ClientAuth::Required => {
            let roots = Arc::new(root_store(&identity.roots)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = if client_auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build()?)
        }
    };
    let mut config = builder.with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// Which server identities a client accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedServer {
    /// Standard host name verification against the `ServerName` used to connect.
    HostName,
    /// Any of these SPIFFE IDs (the host name is not checked).
    SpiffeIds(Vec<SpiffeId>),
    /// Any identity of this trust domain.
    TrustDomain(String),
}

/// A client configuration trusting `roots`, presenting `identity` when given,
/// with ALPN `h2`.
pub fn client_config(
    roots: &TrustBundle,
    identity: Option<&IssuedIdentity>,
    expected: ExpectedServer,
) -> Result<ClientConfig, TlsConfigError> {
    let provider = crypto_provider();
    let store = Arc::new(root_store(roots)?);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match expected {
        ExpectedServer::HostName => builder.with_root_certificates(store),
        ExpectedServer::SpiffeIds(_) | ExpectedServer::TrustDomain(_) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(IdentityServerVerifier::new(
                Some(store),
                provider.signature_verification_algorithms,
                spiffe_check(expected),
            ))),
    };
    let mut config = match identity {
        Some(identity) => {
            builder.with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

fn root_store(roots: &TrustBundle) -> Result<RootCertStore, TlsConfigError> {
    if roots.is_empty() {
        return Err(TlsConfigError::NoRoots);
    }
    Ok(roots.root_store()?)
}

/// The check of a verified server leaf's identity (its SANs), instead of its
/// host name.
pub type IdentityCheck =
    Box<dyn for<'a> Fn(&CertificateDer<'a>) -> Result<(), rustls::Error> + Send + Sync>;

/// Verifies the server's chain against `roots`, then its identity with a
/// check of the caller's, never its host name: mesh peers are named by
/// identity, not by address or SNI. The CA's own clients check SPIFFE IDs;
/// the proxy's upstream TLS checks its configured SAN matchers.
pub struct IdentityServerVerifier {
    /// `None`: nothing is verified (Envoy's upstream behaviour without a
    /// validation context).
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
    check: IdentityCheck,
}

impl IdentityServerVerifier {
    pub fn new(
        roots: Option<Arc<RootCertStore>>,
        algorithms: WebPkiSupportedAlgorithms,
        check: IdentityCheck,
    ) -> Self {
        IdentityServerVerifier {
            roots,
            algorithms,
            check,
        }
    }
}

impl std::fmt::Debug for IdentityServerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityServerVerifier")
            .field("roots", &self.roots.as_ref().map(|r| r.len()))
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for IdentityServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let parsed = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &parsed,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
            (self.check)(end_entity)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The SPIFFE check of [`client_config`]: the leaf's one SPIFFE ID is one of
/// the expected ones, or of the expected trust domain.
fn spiffe_check(expected: ExpectedServer) -> IdentityCheck {
    Box::new(move |leaf| {
        let identity = spiffe_id_of(leaf).map_err(|e| verify_failure(e.to_string()))?;
        let accepted = match &expected {
            ExpectedServer::SpiffeIds(ids) => ids.contains(&identity),
            ExpectedServer::TrustDomain(td) => identity.trust_domain() == td,
            ExpectedServer::HostName => false,
        };
        if accepted {
            Ok(())
        } else {
            Err(verify_failure(format!(
                "server identity {identity} is not {expected}"
            )))
        }
    })
}

/// A refusal reason carried through rustls, whose message shows it with `{:?}`:
/// Debug prints the plain sentence so logs read well.
struct VerifyFailure(String);

impl std::fmt::Debug for VerifyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VerifyFailure {}

fn verify_failure(reason: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(VerifyFailure(reason)),
    )))
}

impl std::fmt::Display for ExpectedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedServer::HostName => f.write_str("valid for the host name"),
            ExpectedServer::SpiffeIds(ids) => {
                let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                write!(f, "one of the expected identities [{}]", ids.join(", "))
            }
            ExpectedServer::TrustDomain(td) => write!(f, "in the expected trust domain {td:?}"),
        }
    }
}

/// What handlers learn about a TLS connection, through the request's
/// extensions: `request.extensions().get::<TlsConnectInfo>()`.
#[derive(Debug, Clone)]
pub struct TlsConnectInfo {
    pub remote_addr: Option<SocketAddr>,
    /// The verified client chain, leaf first, if the client sent one.
    pub peer_certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// An accepted, handshaken TLS connection.
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: TlsConnectInfo,
}

impl TlsConnection {
    pub fn info(&self) -> &TlsConnectInfo {
        &self.info
    }
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = TlsConnectInfo;
    fn connect_info(&self) -> TlsConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepted TLS connections, for `tonic::transport::Server::serve_with_incoming`.
/// Handshakes run concurrently, off the accept loop; failed ones are logged and
/// dropped. Dropping the stream stops the accept loop. Create it inside a
/// tokio runtime (it spawns the accept loop).
pub struct TlsIncoming {
    rx: mpsc::Receiver<TlsConnection>,
}

impl TlsIncoming {
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = tx.closed() => return,
                };
                let (tcp, remote_addr) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let peer_certificates =
                                stream.get_ref().1.peer_certificates().map(|certs| {
                                    Arc::new(certs.iter().map(|c| c.clone().into_owned()).collect())
                                });
                            let info = TlsConnectInfo {
                                remote_addr: Some(remote_addr),
                                peer_certificates,
                            };
                            let _ = tx.send(TlsConnection { stream, info }).await;
                        }
                        // Closed before a ClientHello: a port probe (`meshctl up` waiting
                        // for the secure port, a load balancer's health check), not a
                        // client that failed.
                        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            tracing::debug!(%remote_addr, "connection closed before the TLS handshake (a port probe)")
                        }
                        Ok(Err(e)) => {
                            tracing::info!(%remote_addr, error = %e, "TLS handshake refused")
                        }
                        Err(_) => tracing::info!(%remote_addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        TlsIncoming { rx }
    }
}

impl futures::Stream for TlsIncoming {
    type Item = Result<TlsConnection, io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|conn| conn.map(Ok))
    }
}

/// A gRPC channel to `addr` over TLS with `config` (which must offer ALPN `h2`).
/// `server_name` is what host name verification checks (ignored by SPIFFE verification).
pub async fn connect_channel(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    endpoint(addr)
        .connect_with_connector(tls_connector(addr, config, server_name))
        .await
}

/// Like [`connect_channel`], but connects on first use and reconnects after
/// failures: what a long-lived proxy wants.
pub fn lazy_channel(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
) -> tonic::transport::Channel {
    endpoint(addr).connect_with_connector_lazy(tls_connector(addr, config, server_name))
}

fn endpoint(addr: SocketAddr) -> tonic::transport::Endpoint {
    // The scheme only shapes the :scheme header; TLS is done by the connector.
    tonic::transport::Endpoint::from(
        http::Uri::builder()
            .scheme("http")
            .authority(addr.to_string())
            .path_and_query("/")
            .build()
            .unwrap_or_default(),
    )
    .connect_timeout(HANDSHAKE_TIMEOUT)
}

fn tls_connector(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
) -> impl tower::Service<
    http::Uri,
    Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = io::Error,
    Future = impl Future<
        Output = io::Result<hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>,
    > + Send,
> + Clone
+ Send
+ 'static {
    let connector = TlsConnector::from(config);
    tower::service_fn(move |_uri: http::Uri| {
        let connector = connector.clone();
        let server_name = server_name.clone();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        }
    })
}
