//! Helpers shared by the integration tests.

use std::sync::Arc;

use mesh_ca::tls::{self, ClientAuth, ExpectedServer};
use mesh_ca::{IssuedIdentity, SpiffeId, TrustBundle};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A real mTLS exchange: the server echoes one byte and reports the client's identity.
pub async fn mtls(
    server: &IssuedIdentity,
    client: &IssuedIdentity,
    client_roots: &TrustBundle,
) -> Result<SpiffeId, String> {
    let server_cfg = tls::server_config(server, ClientAuth::Required).unwrap();
    let client_cfg = tls::client_config(
        client_roots,
        Some(client),
        ExpectedServer::SpiffeIds(vec![server.identity.clone()]),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let peer = tls::peer_spiffe_id(tls.get_ref().1).expect("client certificate required");
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        tls.write_all(&byte).await.map_err(|e| e.to_string())?;
        tls.shutdown().await.ok();
        peer.map_err(|e| e.to_string())
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_cfg));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let client_result = async {
        let mut tls = connector
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"x").await.map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    }
    .await;
    let server_result = server_task.await.unwrap();
    client_result?;
    server_result
}
