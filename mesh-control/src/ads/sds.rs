//! Secrets over ADS (SDS), for Envoys on the secure port: each authenticated
//! stream gets a key and certificate for its own identity, generated here in
//! memory and signed by the mesh CA, under Istio's names `default` (the
//! workload's chain and key) and `ROOTCA` (the trust bundle).
//!
//! Certificates are cached per identity, so every stream of one workload
//! shares one; a stream asks again at half the certificate's life and gets a
//! fresh one (the first stream to ask re-issues it), then pushes the new
//! `default` to its Envoy.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use mesh_ca::authority::CLOCK_SKEW_ALLOWANCE;
use mesh_ca::{Authenticator, CertificateAuthority, IssuedIdentity, SignError, SpiffeId};

use crate::metrics::Metrics;

/// The workload certificate and key (Istio's name).
pub const DEFAULT_SECRET: &str = "default";
/// The trust bundle (Istio's name).
pub const ROOTCA_SECRET: &str = "ROOTCA";

/// What the secure port's ADS streams need to serve secrets.
pub struct SecretAuthority {
    /// Decides who a stream is, from its bearer token or client certificate.
    pub authenticator: Arc<dyn Authenticator>,
    pub cache: Arc<SecretCache>,
}

/// Issued workload identities, one per SPIFFE ID.
pub struct SecretCache {
    ca: Arc<CertificateAuthority>,
    /// Requested lifetime; `None` takes the CA's default.
    ttl: Option<Duration>,
    metrics: Arc<Metrics>,
    issued: Mutex<HashMap<SpiffeId, Arc<IssuedIdentity>>>,
}

impl SecretCache {
    pub fn new(
        ca: Arc<CertificateAuthority>,
        ttl: Option<Duration>,
        metrics: Arc<Metrics>,
    ) -> SecretCache {
        SecretCache {
            ca,
            ttl,
            metrics,
            issued: Mutex::new(HashMap::new()),
        }
    }

    /// The certificate in force for `identity`: the cached one until half its
    /// life has passed, then a new one.
    pub fn identity(&self, identity: &SpiffeId) -> Result<Arc<IssuedIdentity>, SignError> {
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(current) = issued.get(identity)
            && SystemTime::now() < renew_at(current)
        {
            return Ok(current.clone());
        }
        // Signing one P-256 certificate takes well under a millisecond: done
        // under the lock so that concurrent streams of one workload share it.
        let fresh = Arc::new(self.ca.issue_identity(identity, &[], self.ttl)?);
        self.metrics.sds_certificates_issued.inc();
        tracing::info!(%identity, not_after = %mesh_ca::rfc3339(fresh.not_after), "issued a workload certificate for SDS");
        issued.insert(identity.clone(), fresh.clone());
        Ok(fresh)
    }
}

/// When a certificate should be replaced: half way through its life, as
/// Istio's agent does. Its life counts from issuance, not from `not_before`,
/// which the CA backdates for clock skew: with short test lifetimes the
/// backdated half life would already be over and renewal would spin.
pub fn renew_at(issued: &IssuedIdentity) -> SystemTime {
    let issued_at = (issued.not_before + CLOCK_SKEW_ALLOWANCE).min(issued.not_after);
    let life = issued
        .not_after
        .duration_since(issued_at)
        .unwrap_or_default();
    issued_at + (life / 2).max(MIN_RENEW_AFTER)
}

/// Never renew sooner than this after issuance, whatever the lifetime.
const MIN_RENEW_AFTER: Duration = Duration::from_secs(1);

/// The secrets of one identity, by name.
pub fn secrets_for(issued: &IssuedIdentity) -> BTreeMap<String, Secret> {
    let inline = |s: String| DataSource {
        specifier: Some(Specifier::InlineString(s)),
        ..DataSource::default()
    };
    let key_pem = pem::encode(&pem::Pem::new(
        "PRIVATE KEY",
        issued.key.secret_der().to_vec(),
    ));
    let mut out = BTreeMap::new();
    out.insert(
        DEFAULT_SECRET.to_string(),
        Secret {
            name: DEFAULT_SECRET.to_string(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(inline(issued.chain_pem())),
                private_key: Some(inline(key_pem)),
                ..TlsCertificate::default()
            })),
        },
    );
    out.insert(
        ROOTCA_SECRET.to_string(),
        Secret {
            name: ROOTCA_SECRET.to_string(),
            r#type: Some(secret::Type::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(inline(issued.roots.to_pem())),
                    ..CertificateValidationContext::default()
                },
            )),
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_ca::CaConfig;

    #[test]
    fn caches_per_identity_and_renews_after_half_life() {
        let ca = Arc::new(CertificateAuthority::generate(CaConfig::default()).unwrap());
        let cache = SecretCache::new(ca.clone(), None, Arc::new(Metrics::new()));
        let a = SpiffeId::new("cluster.local", "default", "a").unwrap();
        let b = SpiffeId::new("cluster.local", "default", "b").unwrap();
        let a1 = cache.identity(&a).unwrap();
        assert!(Arc::ptr_eq(&a1, &cache.identity(&a).unwrap()));
        assert_eq!(cache.identity(&b).unwrap().identity, b);

        // A certificate past half its life is replaced on the next ask.
        let mut old = (*a1).clone();
        old.not_before = SystemTime::now() - Duration::from_secs(100);
        old.not_after = SystemTime::now() + Duration::from_secs(1);
        cache
            .issued
            .lock()
            .unwrap()
            .insert(a.clone(), Arc::new(old));
        let a2 = cache.identity(&a).unwrap();
        assert_ne!(a2.leaf(), a1.leaf());

        let secrets = secrets_for(&a2);
        assert_eq!(
            secrets.keys().collect::<Vec<_>>(),
            vec![ROOTCA_SECRET, DEFAULT_SECRET]
        );
        let Some(secret::Type::TlsCertificate(tls)) = &secrets[DEFAULT_SECRET].r#type else {
            panic!("default is a certificate");
        };
        let Some(Specifier::InlineString(key)) =
            tls.private_key.as_ref().and_then(|k| k.specifier.clone())
        else {
            panic!("inline key");
        };
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
        let Some(secret::Type::ValidationContext(v)) = &secrets[ROOTCA_SECRET].r#type else {
            panic!("ROOTCA is a validation context");
        };
        assert_eq!(
            v.trusted_ca.as_ref().and_then(|d| d.specifier.clone()),
            Some(Specifier::InlineString(ca.trust_bundle().to_pem()))
        );
    }
}
