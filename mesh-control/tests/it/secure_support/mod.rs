//! Shared by the secure-port tests: a control plane with its CA in a
//! temporary directory and a token file, and TLS clients that verify it as
//! proxies do (the root from the CA directory, the istiod SPIFFE ID).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mesh_ca::tls::{self, ExpectedServer};
use mesh_ca::{CaClient, IssuedIdentity, SpiffeId, TokenAuthenticator, TrustBundle};
use mesh_control::{Bound, ServerConfig};
use rustls::pki_types::ServerName;

/// The workload of the ADS tests' node (`ads_support::node`).
pub const CLIENT_NS: &str = "default";
pub const CLIENT_SA: &str = "client";

pub struct SecureMesh {
    pub bound: Bound,
    pub ca_dir: tempfile::TempDir,
    /// Token of default/client.
    pub client_token: String,
    /// Token of default/other.
    pub other_token: String,
    /// Token of default/reviews.
    pub reviews_token: String,
}

pub fn client_id() -> SpiffeId {
    SpiffeId::new("cluster.local", CLIENT_NS, CLIENT_SA).unwrap()
}

pub fn istiod_id() -> SpiffeId {
    SpiffeId::new("cluster.local", "istio-system", "istiod").unwrap()
}

/// A control plane on port 0 everywhere, its CA generated into a fresh
/// directory and a token file for default/client and default/other.
pub async fn start_secure(config_dir: &Path, tune: impl FnOnce(&mut ServerConfig)) -> SecureMesh {
    let ca_dir = tempfile::tempdir().unwrap();
    let mut tokens = TokenAuthenticator::new("cluster.local");
    let client_token = tokens.issue_token(CLIENT_NS, CLIENT_SA).unwrap();
    let other_token = tokens.issue_token(CLIENT_NS, "other").unwrap();
    let reviews_token = tokens.issue_token(CLIENT_NS, "reviews").unwrap();
    let token_file = ca_dir.path().join("tokens");
    tokens.write_file(&token_file).unwrap();
    let mut config = ServerConfig {
        ca_dir: Some(ca_dir.path().join("ca")),
        ca_tokens: Some(token_file),
        poll_interval: Duration::from_millis(50),
        file_debounce: Duration::from_millis(50),
        push_debounce: Duration::from_millis(50),
        ..ServerConfig::ephemeral(config_dir)
    };
    tune(&mut config);
    let bound = mesh_control::build(config)
        .await
        .expect("control plane starts");
    SecureMesh {
        bound,
        ca_dir,
        client_token,
        other_token,
        reviews_token,
    }
}

impl SecureMesh {
    pub fn secure_addr(&self) -> SocketAddr {
        self.bound.secure_xds_address().expect("secure port on")
    }

    /// The root as a proxy gets it: from the CA directory on disk.
    pub fn root_file(&self) -> std::path::PathBuf {
        self.ca_dir.path().join("ca").join("root-cert.pem")
    }

    pub fn roots(&self) -> TrustBundle {
        TrustBundle::from_pem_file(&self.root_file()).expect("root-cert.pem")
    }

    /// A TLS gRPC channel to the secure port, verifying istiod's SPIFFE ID.
    pub async fn channel(
        &self,
        identity: Option<&IssuedIdentity>,
    ) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        let config = tls::client_config(
            &self.roots(),
            identity,
            ExpectedServer::SpiffeIds(vec![istiod_id()]),
        )
        .unwrap();
        let addr = self.secure_addr();
        tls::connect_channel(
            addr,
            Arc::new(config),
            ServerName::IpAddress(addr.ip().into()),
        )
        .await
    }

    pub async fn ca_client(&self, token: Option<&str>) -> CaClient {
        CaClient::new(
            self.channel(None).await.expect("TLS to the secure port"),
            token.map(str::to_owned),
        )
    }
}
