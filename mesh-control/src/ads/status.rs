//! Who is connected and which version each proxy holds, per xDS type: the
//! state behind `/debug/syncz` and `meshctl proxy-status`.
//!
//! Status follows `istioctl proxy-status`: `NOT SENT` when nothing of the type
//! was sent, `SYNCED` when the proxy ACKed the latest response (same nonce),
//! `STALE` otherwise (a response in flight, or NACKed: a NACK leaves the acked
//! nonce at the previous response), `STALE (Never Acknowledged)` when nothing
//! was ever ACKed.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

use super::XdsType;
use crate::source::serialize_time;

/// Sync state of one type on one connection.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeStatus {
    pub type_url: String,
    /// `SYNCED`, `STALE`, `STALE (Never Acknowledged)` or `NOT SENT`.
    pub status: &'static str,
    pub sent_version: String,
    pub sent_nonce: String,
    #[serde(serialize_with = "serialize_time")]
    pub sent_at: Option<SystemTime>,
    /// Number of resources in the latest response.
    pub sent_resources: usize,
    pub acked_version: String,
    pub acked_nonce: String,
    #[serde(serialize_with = "serialize_time")]
    pub acked_at: Option<SystemTime>,
    /// The latest NACK of this type, kept until a later ACK.
    pub last_nack: Option<Nack>,
    /// Resource names the proxy subscribed to (empty: all, for CDS/LDS).
    pub requested: Vec<String>,
}

impl TypeStatus {
    pub fn new(t: XdsType) -> TypeStatus {
        let mut s = TypeStatus {
            type_url: t.type_url().to_string(),
            ..TypeStatus::default()
        };
        s.refresh();
        s
    }

    /// Recomputes `status` from the nonces, as istioctl does.
    pub fn refresh(&mut self) {
        self.status = if self.sent_nonce.is_empty() {
            "NOT SENT"
        } else if self.sent_nonce == self.acked_nonce {
            "SYNCED"
        } else if self.acked_nonce.is_empty() {
            "STALE (Never Acknowledged)"
        } else {
            "STALE"
        };
    }
}

/// A rejected response.
#[derive(Debug, Clone, Serialize)]
pub struct Nack {
    pub nonce: String,
    /// The version the proxy still runs (its `version_info` in the NACK).
    pub version: String,
    /// The proxy's `error_detail.message`.
    pub error: String,
    pub code: i32,
    #[serde(serialize_with = "serialize_time")]
    pub at: Option<SystemTime>,
}

/// One connected proxy (one ADS stream).
#[derive(Debug, Clone, Serialize)]
pub struct ProxyStatus {
    /// The full `Node.id`.
    pub proxy: String,
    /// Unique per stream: `Node.id-N`.
    pub connection_id: String,
    /// `sidecar` or `router`.
    pub kind: &'static str,
    pub namespace: String,
    pub pod: String,
    pub ip: String,
    pub cluster_id: String,
    /// The stream's remote address.
    pub peer: String,
    /// `plaintext` (15010) or `secure` (15012, TLS).
    pub port: &'static str,
    /// The SPIFFE ID the stream authenticated as (secure port), if any.
    pub identity: Option<String>,
    #[serde(serialize_with = "serialize_time")]
    pub connected_since: Option<SystemTime>,
    /// The configuration generation (`/debug/configz`'s `generation`) this stream last
    /// translated; raised only once what that generation changed was sent and recorded in
    /// `types`, so `generation >= G` with every type `SYNCED` means the proxy ACKed G.
    pub generation: u64,
    /// Per type, keyed `cds`, `eds`, `lds`, `rds`, and `sds` once the proxy
    /// subscribes to secrets.
    pub types: BTreeMap<&'static str, TypeStatus>,
}

impl ProxyStatus {
    /// Istio's flat syncz fields (`cluster_sent`, `cluster_acked`, ...),
    /// beside the detailed per-type object.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(m) = &mut v {
            for t in XdsType::CONFIG {
                let (sent, acked) = self
                    .types
                    .get(t.label())
                    .map(|s| (s.sent_nonce.clone(), s.acked_nonce.clone()))
                    .unwrap_or_default();
                m.insert(format!("{}_sent", t.istio_name()), sent.into());
                m.insert(format!("{}_acked", t.istio_name()), acked.into());
            }
        }
        v
    }
}

/// Every connected proxy, by connection id.
#[derive(Debug, Default)]
pub struct SyncRegistry {
    connections: Mutex<BTreeMap<String, ProxyStatus>>,
}

impl SyncRegistry {
    pub fn insert(&self, status: ProxyStatus) {
        self.lock().insert(status.connection_id.clone(), status);
    }

    pub fn remove(&self, connection_id: &str) {
        self.lock().remove(connection_id);
    }

    /// Applies `f` to a connection's entry, if it is still there.
    pub fn update(&self, connection_id: &str, f: impl FnOnce(&mut ProxyStatus)) {
        if let Some(s) = self.lock().get_mut(connection_id) {
            f(s);
        }
    }

    /// Every connection, ordered by proxy id then connection id.
    pub fn list(&self) -> Vec<ProxyStatus> {
        let mut v: Vec<ProxyStatus> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| (&a.proxy, &a.connection_id).cmp(&(&b.proxy, &b.connection_id)));
        v
    }

    /// The `/debug/syncz` document: a JSON array, one object per connection.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(self.list().iter().map(ProxyStatus::to_json).collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ProxyStatus>> {
        // A panic while holding the lock leaves plain data behind: keep serving it.
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}
