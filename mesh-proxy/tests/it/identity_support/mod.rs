//! A real mesh CA for the identity tests: `mesh_ca::CaService` over TLS on
//! 127.0.0.1, presenting istiod's identity, with one token per workload.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use mesh_ca::tls::{self, ClientAuth, TlsIncoming};
use mesh_ca::{
    AuthenticatorChain, CaConfig, CaService, CertificateAuthority, PeerCertificateAuthenticator,
    SpiffeId, TokenAuthenticator,
};
use mesh_proxy::identity::IdentityConfig;
use tokio::net::TcpListener;

pub const TD: &str = "cluster.local";

/// The CA, and a directory with `root-cert.pem` and `NAME.token` files.
pub struct TestCa {
    pub addr: SocketAddr,
    pub ca: Arc<CertificateAuthority>,
    pub dir: tempfile::TempDir,
}

impl TestCa {
    /// Serves tokens for each `(namespace, service account)`, written to
    /// `SERVICE_ACCOUNT.token`; `wrong.token` holds one the CA does not know.
    pub async fn start(workloads: &[(&str, &str)]) -> TestCa {
        let ca = Arc::new(CertificateAuthority::generate(CaConfig::default()).unwrap());
        let control_plane = SpiffeId::new(TD, "istio-system", "istiod").unwrap();
        let serving = ca
            .issue_identity(
                &control_plane,
                &["istiod.istio-system.svc".to_owned()],
                None,
            )
            .unwrap();
        let server_tls = tls::server_config(&serving, ClientAuth::Optional).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut tokens = TokenAuthenticator::new(TD);
        for (namespace, service_account) in workloads {
            let token = tokens.issue_token(namespace, service_account).unwrap();
            std::fs::write(
                dir.path().join(format!("{service_account}.token")),
                format!("{token}\n"),
            )
            .unwrap();
        }
        std::fs::write(dir.path().join("wrong.token"), "not-a-token\n").unwrap();
        std::fs::write(dir.path().join("root-cert.pem"), ca.trust_bundle().to_pem()).unwrap();
        let auth = AuthenticatorChain::new(vec![
            Arc::new(PeerCertificateAuthenticator::new(TD)),
            Arc::new(tokens),
        ]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = TlsIncoming::new(listener, Arc::new(server_tls));
        let service = CaService::new(ca.clone(), Arc::new(auth)).into_server();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming),
        );
        TestCa { addr, ca, dir }
    }

    pub fn root_file(&self) -> PathBuf {
        self.dir.path().join("root-cert.pem")
    }

    pub fn token_file(&self, service_account: &str) -> PathBuf {
        self.dir.path().join(format!("{service_account}.token"))
    }

    /// The identity manager's settings for `service_account`'s token.
    pub fn identity_config(&self, service_account: &str) -> IdentityConfig {
        IdentityConfig {
            token_file: Some(self.token_file(service_account)),
            ..IdentityConfig::new(self.addr.to_string(), self.root_file())
        }
    }
}

pub fn spiffe(namespace: &str, service_account: &str) -> SpiffeId {
    SpiffeId::new(TD, namespace, service_account).unwrap()
}
