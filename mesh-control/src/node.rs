//! Who a proxy is: its Envoy `Node` (Istio-form id and metadata) parsed into a typed identity.
//!
//! Istio's node id is `TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.DOMAIN` with `TYPE` `sidecar` or
//! `router`; node metadata carries `LABELS`, `NAMESPACE`, `SERVICE_ACCOUNT`, `WORKLOAD_NAME`
//! and `CLUSTER_ID` as an Istio-bootstrapped Envoy sends them. The `MESH_*` keys describe the
//! addresses of a proxy running in local mode (no traffic capture, see the control-plane
//! contract), and `MESH_ACCESS_LOG_FILE` asks for an access log (Istio's `accessLogFile`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use serde::Serialize;

// The metadata keys are shared with the bootstraps `meshctl up` writes.
pub use mesh_api::constants::node_metadata::*;

/// The role of a proxy, from the first field of its node id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyKind {
    /// A workload's sidecar (`sidecar~...`).
    Sidecar,
    /// A gateway (`router~...`).
    Router,
}

impl ProxyKind {
    /// The node id prefix (`sidecar` or `router`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyKind::Sidecar => "sidecar",
            ProxyKind::Router => "router",
        }
    }
}

/// Listener addresses of a proxy running in local mode (everything on loopback, no capture).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LocalPorts {
    /// `MESH_OUTBOUND_ADDRESS`: the outbound listener, usable as `http_proxy`.
    pub outbound: Option<SocketAddr>,
    /// `MESH_INBOUND_ADDRESS`: the sidecar's inbound listener.
    pub inbound: Option<SocketAddr>,
    /// `MESH_APP_ADDRESS`: the application behind the sidecar.
    pub app: Option<SocketAddr>,
    /// `MESH_GATEWAY_PORTS`: Gateway server port to the local address a router binds for it.
    pub gateway_ports: BTreeMap<u32, SocketAddr>,
}

/// A proxy's identity as the control plane uses it to tailor its configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProxyNode {
    /// The full `Node.id`.
    pub id: String,
    pub kind: ProxyKind,
    pub ip: String,
    /// `POD` of `POD.NAMESPACE` in the id.
    pub pod_name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// `SERVICE_ACCOUNT`, `default` when absent.
    pub service_account: String,
    /// `WORKLOAD_NAME`, empty when absent.
    pub workload_name: String,
    /// `CLUSTER_ID`, `Kubernetes` when absent.
    pub cluster_id: String,
    /// Set when `MESH_LOCAL_MODE` is `"true"`.
    pub local: Option<LocalPorts>,
    /// `MESH_ACCESS_LOG_FILE`: the access log of the proxy's HTTP listeners, if any.
    pub access_log_file: Option<String>,
}

/// The longest node id accepted: four fields, the pod and namespace names
/// each at most 253 bytes in Kubernetes, leave far less than this.
pub const MAX_NODE_ID_LEN: usize = 1024;

/// Why a node could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeError {
    /// Not echoed: an id this long is an attack or a bug, and gRPC carries
    /// the error in a header.
    #[error("node id is {len} bytes, over the limit of {MAX_NODE_ID_LEN}")]
    IdTooLong { len: usize },
    #[error(
        "node id {id:?} is not of the form TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.DOMAIN: {reason}"
    )]
    InvalidId { id: String, reason: String },
    #[error("node {id:?}: metadata {key}: {reason}")]
    InvalidMetadata {
        id: String,
        key: String,
        reason: String,
    },
}

impl ProxyNode {
    /// Parses an Istio-form node id and its metadata.
    pub fn from_node(node: &Node) -> Result<Self, NodeError> {
        if node.id.len() > MAX_NODE_ID_LEN {
            return Err(NodeError::IdTooLong { len: node.id.len() });
        }
        let id = node.id.clone();
        let invalid = |reason: &str| NodeError::InvalidId {
            id: id.clone(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = id.split('~').collect();
        if parts.len() != 4 {
            return Err(invalid("expected 4 fields separated by '~'"));
        }
        let kind = match parts[0] {
            "sidecar" => ProxyKind::Sidecar,
            "router" => ProxyKind::Router,
            other => {
                return Err(invalid(&format!(
                    "unknown proxy type {other:?} (expected sidecar or router)"
                )));
            }
        };
        let ip = parts[1].to_string();
        if ip.is_empty() {
            return Err(invalid("empty IP"));
        }
        let (pod_name, id_namespace) = match parts[2].split_once('.') {
            Some((pod, ns)) if !pod.is_empty() && !ns.is_empty() => (pod.to_string(), ns),
            _ => return Err(invalid("third field must be POD.NAMESPACE")),
        };
        let empty = Struct::default();
        let meta = node.metadata.as_ref().unwrap_or(&empty);
        let meta_err = |key: &str, reason: String| NodeError::InvalidMetadata {
            id: id.clone(),
            key: key.to_string(),
            reason,
        };

        let namespace = match string_field(meta, META_NAMESPACE) {
            Ok(Some(ns)) if !ns.is_empty() => ns,
            Ok(_) => id_namespace.to_string(),
            Err(e) => return Err(meta_err(META_NAMESPACE, e)),
        };
        let labels = match meta.fields.get(META_LABELS).and_then(|v| v.kind.as_ref()) {
            None | Some(Kind::NullValue(_)) => BTreeMap::new(),
            Some(Kind::StructValue(s)) => {
                let mut labels = BTreeMap::new();
                for (k, v) in &s.fields {
                    match value_as_string(v) {
                        Some(s) => {
                            labels.insert(k.clone(), s);
                        }
                        None => {
                            return Err(meta_err(
                                META_LABELS,
                                format!("label {k:?} is not a string"),
                            ));
                        }
                    }
                }
                labels
            }
            Some(_) => return Err(meta_err(META_LABELS, "expected a struct of strings".into())),
        };
        let get = |key: &str, default: &str| -> Result<String, NodeError> {
            Ok(string_field(meta, key)
                .map_err(|e| meta_err(key, e))?
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| default.to_string()))
        };
        let service_account = get(META_SERVICE_ACCOUNT, "default")?;
        let workload_name = get(META_WORKLOAD_NAME, "")?;
        let cluster_id = get(META_CLUSTER_ID, "Kubernetes")?;

        let local_mode = get(META_LOCAL_MODE, "false")?;
        let local = if local_mode.eq_ignore_ascii_case("true") {
            let addr = |key: &str| -> Result<Option<SocketAddr>, NodeError> {
                match get(key, "")? {
                    s if s.is_empty() => Ok(None),
                    s => s.parse().map(Some).map_err(|_| {
                        meta_err(key, format!("{s:?} is not an address of the form IP:PORT"))
                    }),
                }
            };
            let gateway_ports = parse_gateway_ports(&get(META_GATEWAY_PORTS, "")?)
                .map_err(|e| meta_err(META_GATEWAY_PORTS, e))?;
            Some(LocalPorts {
                outbound: addr(META_OUTBOUND_ADDRESS)?,
                inbound: addr(META_INBOUND_ADDRESS)?,
                app: addr(META_APP_ADDRESS)?,
                gateway_ports,
            })
        } else {
            None
        };

        let access_log_file = Some(get(META_ACCESS_LOG_FILE, "")?).filter(|f| !f.is_empty());

        Ok(ProxyNode {
            id,
            kind,
            ip,
            pod_name,
            namespace,
            labels,
            service_account,
            workload_name,
            cluster_id,
            local,
            access_log_file,
        })
    }

    /// The node as its Pod describes it, when the configuration has that Pod (Kubernetes
    /// mode): named by the id's `POD.NAMESPACE`, else the Pod of that namespace with the id's
    /// IP. As istiod does, the Pod's labels win over the metadata's `LABELS` (a relabelled
    /// pod is reconfigured without a restart of its proxy, and a proxy cannot claim labels its
    /// pod does not have), and its service account fills a missing `SERVICE_ACCOUNT`.
    pub fn with_pod<'a>(&'a self, config: &mesh_api::Config) -> Cow<'a, ProxyNode> {
        let in_namespace = || {
            config
                .pods()
                .filter(move |(meta, _)| meta.namespace == self.namespace)
        };
        let pod = in_namespace()
            .find(|(meta, _)| meta.name == self.pod_name)
            .or_else(|| {
                in_namespace().find(|(_, pod)| {
                    pod.status
                        .as_ref()
                        .and_then(|s| s.pod_ip.as_deref())
                        .is_some_and(|ip| ip == self.ip)
                })
            });
        let Some((meta, pod)) = pod else {
            return Cow::Borrowed(self);
        };
        let service_account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
            .filter(|sa| !sa.is_empty() && self.service_account == "default");
        if meta.labels == self.labels && service_account.is_none() {
            return Cow::Borrowed(self);
        }
        let mut node = self.clone();
        node.labels = meta.labels.clone();
        if let Some(sa) = service_account {
            node.service_account = sa.to_string();
        }
        Cow::Owned(node)
    }

    /// A node for tests and tools: an Istio-form id built from its parts, no metadata.
    pub fn sidecar(ip: &str, pod: &str, namespace: &str) -> ProxyNode {
        ProxyNode {
            id: format!("sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local"),
            kind: ProxyKind::Sidecar,
            ip: ip.to_string(),
            pod_name: pod.to_string(),
            namespace: namespace.to_string(),
            labels: BTreeMap::new(),
            service_account: "default".to_string(),
            workload_name: String::new(),
            cluster_id: "Kubernetes".to_string(),
            local: None,
            access_log_file: None,
        }
    }
}

fn value_as_string(v: &Value) -> Option<String> {
    match v.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.clone()),
        Kind::BoolValue(b) => Some(b.to_string()),
        Kind::NumberValue(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A string metadata value; absent and null read as `None`, other kinds are an error.
fn string_field(meta: &Struct, key: &str) -> Result<Option<String>, String> {
    match meta.fields.get(key) {
        None => Ok(None),
        Some(Value {
            kind: None | Some(Kind::NullValue(_)),
        }) => Ok(None),
        Some(v) => value_as_string(v)
            .map(Some)
            .ok_or_else(|| "expected a string".to_string()),
    }
}

/// `80=127.0.0.1:18080,443=127.0.0.1:18443`.
fn parse_gateway_ports(text: &str) -> Result<BTreeMap<u32, SocketAddr>, String> {
    let mut out = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (port, addr) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not PORT=IP:PORT"))?;
        let port: u32 = port
            .trim()
            .parse()
            .map_err(|_| format!("{item:?}: {port:?} is not a port number"))?;
        let addr: SocketAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{item:?}: {addr:?} is not an address IP:PORT"))?;
        out.insert(port, addr);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(v.to_string())),
        }
    }

    fn node(id: &str, fields: Vec<(&str, Value)>) -> Node {
        Node {
            id: id.to_string(),
            metadata: Some(Struct {
                fields: fields
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn parses_istio_sidecar_node() {
        let labels = Value {
            kind: Some(Kind::StructValue(Struct {
                fields: [
                    ("app".to_string(), s("reviews")),
                    ("version".into(), s("v2")),
                ]
                .into_iter()
                .collect(),
            })),
        };
        let n = node(
            "sidecar~10.1.2.3~reviews-v2-abc.bookinfo~bookinfo.svc.cluster.local",
            vec![
                ("LABELS", labels),
                ("SERVICE_ACCOUNT", s("bookinfo-reviews")),
                ("WORKLOAD_NAME", s("reviews-v2")),
            ],
        );
        let p = ProxyNode::from_node(&n).unwrap();
        assert_eq!(p.kind, ProxyKind::Sidecar);
        assert_eq!(p.ip, "10.1.2.3");
        assert_eq!(p.pod_name, "reviews-v2-abc");
        assert_eq!(p.namespace, "bookinfo");
        assert_eq!(p.labels["version"], "v2");
        assert_eq!(p.service_account, "bookinfo-reviews");
        assert_eq!(p.workload_name, "reviews-v2");
        assert_eq!(p.cluster_id, "Kubernetes");
        assert!(p.local.is_none());
        assert!(p.access_log_file.is_none());
    }

    #[test]
    fn parses_local_mode_router() {
        let n = node(
            "router~127.0.0.1~gw-1.istio-system~istio-system.svc.cluster.local",
            vec![
                ("MESH_LOCAL_MODE", s("true")),
                (
                    "MESH_GATEWAY_PORTS",
                    s("80=127.0.0.1:18080, 443=127.0.0.1:18443"),
                ),
                ("MESH_OUTBOUND_ADDRESS", s("127.0.0.1:15001")),
                ("MESH_ACCESS_LOG_FILE", s("/dev/stdout")),
            ],
        );
        let p = ProxyNode::from_node(&n).unwrap();
        assert_eq!(p.kind, ProxyKind::Router);
        assert_eq!(p.access_log_file.as_deref(), Some("/dev/stdout"));
        let local = p.local.unwrap();
        assert_eq!(local.gateway_ports[&80].port(), 18080);
        assert_eq!(local.gateway_ports[&443].port(), 18443);
        assert_eq!(local.outbound.unwrap().port(), 15001);
        assert!(local.inbound.is_none());
    }

    #[test]
    fn rejects_bad_ids_and_metadata() {
        for id in [
            "",
            "sidecar~1.2.3.4",
            "proxy~1.2.3.4~a.b~b.svc.cluster.local",
            "sidecar~1.2.3.4~nonamespace~x",
        ] {
            let err = ProxyNode::from_node(&node(id, vec![])).unwrap_err();
            assert!(matches!(err, NodeError::InvalidId { .. }), "{id}: {err}");
        }
        let err = ProxyNode::from_node(&node(
            "sidecar~1.2.3.4~a.b~b.svc.cluster.local",
            vec![
                ("MESH_LOCAL_MODE", s("true")),
                ("MESH_INBOUND_ADDRESS", s("localhost")),
            ],
        ))
        .unwrap_err();
        assert!(err.to_string().contains("MESH_INBOUND_ADDRESS"), "{err}");
    }
}
