//! The secrets in force, by SDS name: the snapshot's static/SDS `Secret`s
//! and the ones the proxy provides itself (its workload identity).
//!
//! Handshakes read it through [`SecretStore::get`], so a secret replaced
//! here is used by the next handshake while established connections keep
//! the material they were set up with.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;

use crate::model::TlsSecret;

type SecretMap = BTreeMap<String, Arc<TlsSecret>>;

/// Secrets by name: local ones win over the snapshot's.
#[derive(Debug, Default)]
pub struct SecretStore {
    local: RwLock<SecretMap>,
    from_snapshot: ArcSwap<SecretMap>,
    /// Bumped on every change, so derived material (parsed keys, root
    /// stores) can be cached per generation.
    generation: AtomicU64,
}

impl SecretStore {
    pub fn new() -> SecretStore {
        SecretStore::default()
    }

    /// Installs or replaces a secret the proxy provides itself (its workload
    /// identity); it wins over a static/SDS secret of the same name. New
    /// handshakes use it at once; established connections are untouched.
    pub fn set_local(&self, name: &str, secret: TlsSecret) {
        self.local
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), Arc::new(secret));
        self.generation.fetch_add(1, Ordering::AcqRel);
        tracing::info!(secret = %name, "local secret installed");
    }

    /// Removes a local secret; the snapshot's one of that name (if any)
    /// is in force again.
    pub fn remove_local(&self, name: &str) -> bool {
        let removed = self
            .local
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .is_some();
        if removed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        removed
    }

    /// The secret in force under `name` (local first, then the snapshot's
    /// static/SDS ones).
    pub fn get(&self, name: &str) -> Option<Arc<TlsSecret>> {
        if let Some(s) = self
            .local
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Some(s.clone());
        }
        self.from_snapshot.load().get(name).cloned()
    }

    /// Every name in force, sorted, for `/certs` and `/config_dump`.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .local
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        names.extend(self.from_snapshot.load().keys().cloned());
        names.sort();
        names.dedup();
        names
    }

    /// The local secrets only (what the proxy installed itself).
    pub fn local_names(&self) -> Vec<String> {
        self.local
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Replaces the snapshot's secrets (on every snapshot swap).
    pub fn set_snapshot_secrets(&self, secrets: &SecretMap) {
        let current = self.from_snapshot.load();
        let same = current.len() == secrets.len()
            && current
                .iter()
                .zip(secrets.iter())
                .all(|((a, x), (b, y))| a == b && Arc::ptr_eq(x, y));
        if same {
            return;
        }
        self.from_snapshot.store(Arc::new(secrets.clone()));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// A number that changes whenever any secret changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{TlsCaSource, TlsValidation};

    fn roots(pem: &str) -> TlsSecret {
        TlsSecret::ValidationContext(TlsValidation {
            trusted_ca: TlsCaSource::InlinePem(pem.to_string()),
            match_subject_alt_names: vec![],
        })
    }

    fn pem_of(s: &TlsSecret) -> String {
        match s {
            TlsSecret::ValidationContext(TlsValidation {
                trusted_ca: TlsCaSource::InlinePem(p),
                ..
            }) => p.clone(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn local_wins_over_snapshot_and_generation_moves() {
        let store = SecretStore::new();
        let mut snap = SecretMap::new();
        snap.insert("ROOTCA".into(), Arc::new(roots("static")));
        snap.insert("other".into(), Arc::new(roots("o")));
        let g0 = store.generation();
        store.set_snapshot_secrets(&snap);
        assert!(store.generation() > g0);
        assert_eq!(pem_of(&store.get("ROOTCA").unwrap()), "static");
        let g1 = store.generation();
        store.set_snapshot_secrets(&snap);
        assert_eq!(store.generation(), g1, "same secrets do not bump");
        store.set_local("ROOTCA", roots("local"));
        store.set_local("default", roots("d"));
        assert_eq!(pem_of(&store.get("ROOTCA").unwrap()), "local");
        assert_eq!(store.names(), vec!["ROOTCA", "default", "other"]);
        assert!(store.remove_local("ROOTCA"));
        assert_eq!(pem_of(&store.get("ROOTCA").unwrap()), "static");
        assert!(store.get("missing").is_none());
    }
}
