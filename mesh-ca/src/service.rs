//! The gRPC CSR service, `istio.v1.auth.IstioCertificateService/CreateCertificate`:
//! authenticate the caller, sign its CSR for its own identity, answer with the
//! chain (leaf first, root last). Refusals carry a status whose message says why:
//!
//! | refusal | code |
//! |---|---|
//! | no or unknown credentials | `UNAUTHENTICATED` |
//! | CSR for another identity or trust domain | `PERMISSION_DENIED` |
//! | malformed CSR, several SANs, non-SPIFFE SAN, TTL above the maximum | `INVALID_ARGUMENT` |
//! | the CA cannot sign (expired signer, internal error) | `FAILED_PRECONDITION` / `INTERNAL` |

use std::sync::Arc;

use mesh_api::proto::istio::v1::auth::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use mesh_api::proto::istio::v1::auth::{IstioCertificateRequest, IstioCertificateResponse};
use tonic::{Request, Response, Status};

use crate::auth::{AuthError, Authenticator, CallerContext};
use crate::authority::{CertificateAuthority, SignError};
use crate::tls::TlsConnectInfo;

/// The CSR service over a CA and an authenticator.
#[derive(Clone)]
pub struct CaService {
    ca: Arc<CertificateAuthority>,
    authenticator: Arc<dyn Authenticator>,
}

impl std::fmt::Debug for CaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaService")
            .field("ca", &self.ca)
            .field("authenticator", &self.authenticator.name())
            .finish()
    }
}

impl CaService {
    pub fn new(ca: Arc<CertificateAuthority>, authenticator: Arc<dyn Authenticator>) -> Self {
        CaService { ca, authenticator }
    }

    /// The tonic service, to add to a `tonic::transport::Server` router.
    pub fn into_server(self) -> IstioCertificateServiceServer<CaService> {
        IstioCertificateServiceServer::new(self)
    }
}

/// The credentials a request carries: its bearer token and, when served through
/// [`crate::tls::TlsIncoming`], the verified client certificate.
pub fn caller_context<T>(request: &Request<T>) -> CallerContext {
    let bearer_token = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
    let info = request.extensions().get::<TlsConnectInfo>();
    CallerContext {
        bearer_token,
        peer_certificates: info.and_then(|i| i.peer_certificates.clone()),
        remote_addr: info.and_then(|i| i.remote_addr).or(request.remote_addr()),
    }
}

fn auth_status(err: AuthError) -> Status {
    Status::unauthenticated(err.to_string())
}

fn sign_status(err: SignError) -> Status {
    let message = err.to_string();
    match err {
        SignError::Csr(_)
        | SignError::SeveralSans { .. }
        | SignError::NotSpiffe(_)
        | SignError::BadSpiffeId { .. }
        | SignError::TtlTooLong { .. } => Status::invalid_argument(message),
        SignError::OtherIdentity { .. } | SignError::TrustDomain { .. } => {
            Status::permission_denied(message)
        }
        SignError::SignerExpired => Status::failed_precondition(message),
        SignError::Signing(_) => Status::internal(message),
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let caller = caller_context(&request);
        let remote = caller
            .remote_addr
            .map(|a| a.to_string())
            .unwrap_or_default();
        let identity = match self.authenticator.authenticate(&caller).await {
            Ok(identity) => identity,
            Err(e) => {
                tracing::warn!(%remote, reason = %e, "CSR refused: caller not authenticated");
                return Err(auth_status(e));
            }
        };
        let request = request.into_inner();
        match self
            .ca
            .sign_csr(&request.csr, &identity, request.validity_duration)
        {
            Ok(signed) => {
                tracing::info!(%remote, %identity, not_after = %crate::rfc3339(signed.not_after), "issued workload certificate");
                Ok(Response::new(IstioCertificateResponse {
                    cert_chain: signed.chain_pem,
                }))
            }
            Err(e) => {
                tracing::warn!(%remote, %identity, reason = %e, "CSR refused");
                Err(sign_status(e))
            }
        }
    }
}
