//! rustls configurations built from the model and the secrets in force,
//! cached per secret generation: a rotated secret makes the next handshake
//! build (once) and use a new configuration, while established connections
//! keep theirs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};

use super::SecretStore;
use super::material::{self, TlsSetupError};
use super::verify::{DownstreamClientVerifier, check_sans};
use crate::model::{DownstreamTls, TlsVersions, UpstreamTls};
use mesh_ca::tls::IdentityServerVerifier;

type Cache<T> = Mutex<(u64, HashMap<String, Arc<T>>)>;

/// The secrets and the configurations derived from them.
#[derive(Debug)]
pub struct TlsContexts {
    store: Arc<SecretStore>,
    servers: Cache<ServerContext>,
    clients: Cache<ClientConfig>,
}

impl TlsContexts {
    pub fn new(store: Arc<SecretStore>) -> TlsContexts {
        TlsContexts {
            store,
            servers: Mutex::default(),
            clients: Mutex::default(),
        }
    }

    pub fn store(&self) -> &Arc<SecretStore> {
        &self.store
    }

    /// The server configuration of a filter chain's `DownstreamTlsContext`.
    pub fn server(&self, tls: &DownstreamTls) -> Result<Arc<ServerContext>, TlsSetupError> {
        let key = format!("{tls:?}");
        cached(&self.servers, self.store.generation(), key, || {
            server_config(&self.store, tls)
        })
    }

    /// The client configuration of a cluster's `UpstreamTlsContext`;
    /// `alpn` is offered when the context names none.
    pub fn client(
        &self,
        tls: &UpstreamTls,
        alpn: &[&str],
    ) -> Result<Arc<ClientConfig>, TlsSetupError> {
        let key = format!("{tls:?}|{alpn:?}");
        cached(&self.clients, self.store.generation(), key, || {
            client_config(&self.store, tls, alpn)
        })
    }
}

fn cached<T>(
    cache: &Cache<T>,
    generation: u64,
    key: String,
    build: impl FnOnce() -> Result<T, TlsSetupError>,
) -> Result<Arc<T>, TlsSetupError> {
    {
        let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
        if guard.0 != generation {
            // Some secret changed: everything derived is rebuilt on demand.
            *guard = (generation, HashMap::new());
        } else if let Some(c) = guard.1.get(&key) {
            return Ok(c.clone());
        }
    }
    let built = Arc::new(build()?);
    let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
    if guard.0 == generation {
        guard.1.insert(key, built.clone());
    }
    Ok(built)
}

/// A server configuration and the identity it presents.
#[derive(Debug)]
pub struct ServerContext {
    pub config: Arc<ServerConfig>,
    /// The URI SAN of the certificate served (`By=` of XFCC).
    pub local_uri: Option<String>,
}

static ONLY_TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
static ONLY_TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

fn protocol_versions(
    versions: TlsVersions,
) -> &'static [&'static rustls::SupportedProtocolVersion] {
    match versions {
        TlsVersions::Any => rustls::DEFAULT_VERSIONS,
        TlsVersions::Only12 => ONLY_TLS12,
        TlsVersions::Only13 => ONLY_TLS13,
    }
}

fn server_config(store: &SecretStore, tls: &DownstreamTls) -> Result<ServerContext, TlsSetupError> {
    let provider = mesh_ca::tls::crypto_provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(protocol_versions(tls.versions))?;
    let builder = match &tls.validation {
        None => builder.with_no_client_auth(),
        Some(v) => {
            let roots = material::roots(store, &v.trusted_ca)?;
            let inner = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
            let inner = if tls.require_client_certificate {
                inner
            } else {
                inner.allow_unauthenticated()
            };
            let mut sans = v.match_subject_alt_names.clone();
            sans.extend(material::secret_san_matchers(store, &v.trusted_ca));
            builder.with_client_cert_verifier(Arc::new(DownstreamClientVerifier {
                inner: inner.build()?,
                sans,
            }))
        }
    };
    let cert = material::certificate(store, &tls.certificate)?;
    let local_uri = cert
        .chain
        .first()
        .and_then(|c| super::verify::cert_names(c).uris.into_iter().next());
    let mut config = builder.with_single_cert(cert.chain, cert.key)?;
    config.alpn_protocols = tls
        .alpn_protocols
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    Ok(ServerContext {
        config: Arc::new(config),
        local_uri,
    })
}

fn client_config(
    store: &SecretStore,
    tls: &UpstreamTls,
    alpn: &[&str],
) -> Result<ClientConfig, TlsSetupError> {
    let provider = mesh_ca::tls::crypto_provider();
    let roots = match &tls.trusted_ca {
        Some(ca) => Some(material::roots(store, ca)?),
        None => None,
    };
    let mut sans = tls.match_subject_alt_names.clone();
    if let Some(ca) = &tls.trusted_ca {
        sans.extend(material::secret_san_matchers(store, ca));
    }
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(protocol_versions(tls.versions))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(IdentityServerVerifier::new(
            roots,
            provider.signature_verification_algorithms,
            Box::new(move |leaf| check_sans(leaf, &sans)),
        )));
    let mut config = match &tls.certificate {
        Some(source) => {
            let cert = material::certificate(store, source)?;
            builder.with_client_auth_cert(cert.chain, cert.key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = if tls.alpn_protocols.is_empty() {
        alpn.iter().map(|p| p.as_bytes().to_vec()).collect()
    } else {
        tls.alpn_protocols
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect()
    };
    Ok(config)
}
