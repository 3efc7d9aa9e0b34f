//! The client side of the CSR service, for proxies: a key generated in memory
//! (never written anywhere), a CSR for the proxy's SPIFFE ID, the call, and
//! checks that what came back is a certificate for that key and identity.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_api::proto::istio::v1::auth::IstioCertificateRequest;
use mesh_api::proto::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tonic::transport::Channel;

use crate::authority::IssuedIdentity;
use crate::bundle::{PemError, TrustBundle, certificates_from_pem};
use crate::spiffe::SpiffeId;
use crate::tls::{PeerIdentityError, spiffe_id_of};

/// Why obtaining a certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to the CA at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("creating a key or CSR: {0}")]
    Csr(#[source] rcgen::Error),
    #[error("the bearer token cannot be sent as a header")]
    Token,
    #[error("the CA refused: {} ({:?})", .0.message(), .0.code())]
    Refused(#[source] tonic::Status),
    #[error("the CA answered with an empty certificate chain")]
    EmptyChain,
    #[error("the CA's certificate chain: {0}")]
    Pem(#[from] PemError),
    #[error("the issued certificate: {0}")]
    Identity(#[from] PeerIdentityError),
    #[error("the CA issued a certificate for {got}, not for {wanted}")]
    WrongIdentity { got: SpiffeId, wanted: SpiffeId },
    #[error("the issued certificate is not for the key this client generated")]
    WrongKey,
    #[error("the issued certificate cannot be parsed: {0}")]
    Parse(String),
}

/// A CSR service client.
#[derive(Debug, Clone)]
pub struct CaClient {
    client: IstioCertificateServiceClient<Channel>,
    token: Option<String>,
}

impl CaClient {
    /// Over an existing channel (see [`crate::tls::connect_channel`] /
    /// [`crate::tls::lazy_channel`]); `token` is sent as `authorization: Bearer`.
    pub fn new(channel: Channel, token: Option<String>) -> Self {
        CaClient {
            client: IstioCertificateServiceClient::new(channel),
            token,
        }
    }

    /// Connects over TLS to `addr`.
    pub async fn connect(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
        token: Option<String>,
    ) -> Result<Self, ClientError> {
        let channel = crate::tls::connect_channel(addr, tls, server_name)
            .await
            .map_err(|source| ClientError::Connect { addr, source })?;
        Ok(CaClient::new(channel, token))
    }

    /// Sends a CSR as is and returns the PEM chain: the raw RPC.
    pub async fn create_certificate(
        &mut self,
        csr_pem: String,
        validity: Option<Duration>,
    ) -> Result<Vec<String>, ClientError> {
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr_pem,
            validity_duration: validity
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0),
            metadata: None,
        });
        if let Some(token) = &self.token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| ClientError::Token)?;
            request.metadata_mut().insert("authorization", value);
        }
        let response = self
            .client
            .create_certificate(request)
            .await
            .map_err(ClientError::Refused)?;
        Ok(response.into_inner().cert_chain)
    }

    /// Generates an ECDSA P-256 key in memory, asks for a certificate for
    /// `identity` and returns it with the key and the root the chain ends in.
    /// `validity` of `None` takes the CA's default.
    pub async fn fetch_identity(
        &mut self,
        identity: &SpiffeId,
        validity: Option<Duration>,
    ) -> Result<IssuedIdentity, ClientError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(ClientError::Csr)?;
        let csr = crate::csr::build_csr_pem(&key, &identity.to_uri()).map_err(ClientError::Csr)?;
        let chain_pem = self.create_certificate(csr, validity).await?;
        let mut chain = Vec::with_capacity(chain_pem.len());
        for (i, pem) in chain_pem.iter().enumerate() {
            chain.extend(certificates_from_pem(&format!("cert_chain[{i}]"), pem)?);
        }
        let leaf = chain.first().cloned().ok_or(ClientError::EmptyChain)?;
        let got = spiffe_id_of(&leaf)?;
        if &got != identity {
            return Err(ClientError::WrongIdentity {
                got,
                wanted: identity.clone(),
            });
        }
        let (_, parsed) = x509_parser::parse_x509_certificate(&leaf)
            .map_err(|e| ClientError::Parse(e.to_string()))?;
        if parsed.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
        {
            return Err(ClientError::WrongKey);
        }
        let not_before = SystemTime::from(parsed.validity().not_before.to_datetime());
        let not_after = SystemTime::from(parsed.validity().not_after.to_datetime());
        let mut roots = TrustBundle::new();
        if chain.len() > 1
            && let Some(root) = chain.pop()
        {
            roots.add(root);
        }
        Ok(IssuedIdentity {
            identity: identity.clone(),
            chain,
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            roots,
            not_before,
            not_after,
        })
    }
}
