//! Ports, labels, names and formats the mesh shares with Istio, so that users'
//! habits (and their tooling) carry over. Every crate takes them from here.

/// Proxy admin endpoint, bound to localhost only.
pub const PROXY_ADMIN_PORT: u16 = 15000;
/// Proxy outbound listener (transparent capture; HTTP proxy in local mode).
pub const PROXY_OUTBOUND_PORT: u16 = 15001;
/// Proxy inbound listener.
pub const PROXY_INBOUND_PORT: u16 = 15006;
/// Control plane xDS, plaintext.
pub const CONTROL_XDS_PLAINTEXT_PORT: u16 = 15010;
/// Control plane xDS and CA, over mTLS.
pub const CONTROL_XDS_MTLS_PORT: u16 = 15012;
/// Control plane debug and metrics (`/debug/syncz`, `/metrics`, ...).
pub const CONTROL_DEBUG_PORT: u16 = 15014;
/// Injection webhook (HTTPS).
pub const INJECTION_WEBHOOK_PORT: u16 = 15017;
/// Proxy Prometheus metrics (`/stats/prometheus`).
pub const PROXY_METRICS_PORT: u16 = 15020;
/// Proxy readiness (`/healthz/ready`).
pub const PROXY_READINESS_PORT: u16 = 15021;

/// Trust domain used when none is configured.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// DNS suffix of Kubernetes services (`name.ns.svc.cluster.local`).
pub const DEFAULT_DOMAIN_SUFFIX: &str = "cluster.local";
/// Namespace of resources that do not name one.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Namespace of the control plane, whose config applies mesh wide.
pub const ROOT_NAMESPACE: &str = "istio-system";
/// The reserved gateway name meaning "all sidecars" in VirtualService `gateways`.
pub const MESH_GATEWAY: &str = "mesh";

/// Namespace label enabling (`enabled`) or disabling (`disabled`) injection, Istio's name.
pub const LABEL_ISTIO_INJECTION: &str = "istio-injection";
/// The same label under the mesh's own name.
pub const LABEL_MESH_INJECTION: &str = "mesh-injection";
/// Value of the injection labels that turns injection on.
pub const INJECTION_ENABLED: &str = "enabled";
/// Revision label that also enables injection.
pub const LABEL_ISTIO_REV: &str = "istio.io/rev";
/// Pod label/annotation overriding injection per pod.
pub const LABEL_SIDECAR_INJECT: &str = "sidecar.istio.io/inject";
/// Label naming the version of a workload (used by subsets).
pub const LABEL_VERSION: &str = "version";
/// Label naming the application of a workload.
pub const LABEL_APP: &str = "app";

/// User ID the proxy runs as; applications must not use it.
pub const PROXY_UID: i64 = 1337;

/// Exit code of `meshctl analyze` when an error-level message is found (as `istioctl`).
pub const ANALYZE_ERROR_EXIT_CODE: i32 = 79;

/// `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// The parts of a SPIFFE ID in the mesh's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl SpiffeId {
    /// Parses `spiffe://TD/ns/NS/sa/SA`; `None` for anything else.
    pub fn parse(uri: &str) -> Option<SpiffeId> {
        let rest = uri.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/');
        let trust_domain = parts.next().filter(|s| !s.is_empty())?;
        if parts.next()? != "ns" {
            return None;
        }
        let namespace = parts.next().filter(|s| !s.is_empty())?;
        if parts.next()? != "sa" {
            return None;
        }
        let service_account = parts.next().filter(|s| !s.is_empty())?;
        if parts.next().is_some() {
            return None;
        }
        Some(SpiffeId {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        })
    }
}

impl std::fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&spiffe_id(
            &self.trust_domain,
            &self.namespace,
            &self.service_account,
        ))
    }
}

/// An Envoy cluster name in Istio's form, `DIRECTION|PORT|SUBSET|FQDN`
/// (`outbound|5000|v1|helloworld.default.svc.cluster.local`, `inbound|8080||`): built by the
/// control plane, split by `meshctl proxy-config` and `explain` as istioctl does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterName {
    /// `outbound` or `inbound`; empty for a name not in Istio's form.
    pub direction: String,
    pub port: Option<u32>,
    pub subset: String,
    /// The host; for a name not in Istio's form, the whole name.
    pub fqdn: String,
}

impl ClusterName {
    pub fn outbound(port: u32, subset: Option<&str>, host: &str) -> ClusterName {
        ClusterName {
            direction: "outbound".into(),
            port: Some(port),
            subset: subset.unwrap_or_default().into(),
            fqdn: host.into(),
        }
    }

    pub fn inbound(port: u32) -> ClusterName {
        ClusterName {
            direction: "inbound".into(),
            port: Some(port),
            subset: String::new(),
            fqdn: String::new(),
        }
    }

    /// Splits a cluster name; any name not in Istio's form (`BlackHoleCluster`) is its own
    /// FQDN, with no port, subset or direction.
    pub fn parse(name: &str) -> ClusterName {
        let parts: Vec<&str> = name.split('|').collect();
        if let [direction, port, subset, fqdn] = parts.as_slice()
            && let Ok(port) = port.parse::<u32>()
        {
            return ClusterName {
                direction: direction.to_string(),
                port: Some(port),
                subset: subset.to_string(),
                fqdn: fqdn.to_string(),
            };
        }
        ClusterName {
            direction: String::new(),
            port: None,
            subset: String::new(),
            fqdn: name.to_string(),
        }
    }
}

impl std::fmt::Display for ClusterName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}|{port}|{}|{}", self.direction, self.subset, self.fqdn),
            None => f.write_str(&self.fqdn),
        }
    }
}

/// Envoy cluster name of an outbound service port: `outbound|PORT|SUBSET|HOST`.
pub fn outbound_cluster_name(port: u32, subset: Option<&str>, host: &str) -> String {
    ClusterName::outbound(port, subset, host).to_string()
}

/// Envoy cluster name of an inbound port: `inbound|PORT||`.
pub fn inbound_cluster_name(port: u32) -> String {
    ClusterName::inbound(port).to_string()
}

/// Keys of an Envoy node's metadata that the control plane reads: Istio's (`LABELS`,
/// `NAMESPACE`, ...) as an Istio-bootstrapped Envoy sends them, and the mesh's `MESH_*`, which
/// describe a proxy of the local mesh (`meshctl up` writes them, mesh-control reads them).
pub mod node_metadata {
    /// Metadata key: the workload's labels (a struct of strings).
    pub const META_LABELS: &str = "LABELS";
    /// Metadata key: the proxy's namespace.
    pub const META_NAMESPACE: &str = "NAMESPACE";
    /// Metadata key: the workload's service account.
    pub const META_SERVICE_ACCOUNT: &str = "SERVICE_ACCOUNT";
    /// Metadata key: the workload (deployment) name.
    pub const META_WORKLOAD_NAME: &str = "WORKLOAD_NAME";
    /// Metadata key: the cluster the proxy runs in.
    pub const META_CLUSTER_ID: &str = "CLUSTER_ID";
    /// Metadata key: `"true"` when the proxy runs in local mode.
    pub const META_LOCAL_MODE: &str = "MESH_LOCAL_MODE";
    /// Metadata key: the local-mode outbound (HTTP proxy) listener address.
    pub const META_OUTBOUND_ADDRESS: &str = "MESH_OUTBOUND_ADDRESS";
    /// Metadata key: the local-mode inbound listener address.
    pub const META_INBOUND_ADDRESS: &str = "MESH_INBOUND_ADDRESS";
    /// Metadata key: where the local-mode workload's application listens.
    pub const META_APP_ADDRESS: &str = "MESH_APP_ADDRESS";
    /// Metadata key: a router's `PORT=ADDR,...` gateway port bindings in local mode.
    pub const META_GATEWAY_PORTS: &str = "MESH_GATEWAY_PORTS";
    /// Metadata key: where the proxy's HTTP listeners write an access log in Envoy's default
    /// format (`/dev/stdout`, `/dev/stderr` or a path), as Istio's `meshConfig.accessLogFile`.
    pub const META_ACCESS_LOG_FILE: &str = "MESH_ACCESS_LOG_FILE";
    /// Metadata key: the Istio version the proxy was bootstrapped for.
    pub const META_ISTIO_VERSION: &str = "ISTIO_VERSION";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_round_trip() {
        let id = spiffe_id(DEFAULT_TRUST_DOMAIN, "default", "bookinfo-reviews");
        assert_eq!(id, "spiffe://cluster.local/ns/default/sa/bookinfo-reviews");
        let parsed = SpiffeId::parse(&id).unwrap();
        assert_eq!(parsed.namespace, "default");
        assert_eq!(parsed.to_string(), id);
        assert!(SpiffeId::parse("spiffe://td/ns/a/sa/b/c").is_none());
        assert!(SpiffeId::parse("spiffe://td/sa/a/ns/b").is_none());
        assert!(SpiffeId::parse("https://td/ns/a/sa/b").is_none());
    }

    #[test]
    fn cluster_names() {
        assert_eq!(
            outbound_cluster_name(9080, Some("v1"), "reviews.default.svc.cluster.local"),
            "outbound|9080|v1|reviews.default.svc.cluster.local"
        );
        assert_eq!(outbound_cluster_name(80, None, "a"), "outbound|80||a");
        assert_eq!(inbound_cluster_name(8080), "inbound|8080||");
    }

    #[test]
    fn cluster_names_split_like_istioctl_and_round_trip() {
        let name = "outbound|5000|safe|helloworld.default.svc.cluster.local";
        assert_eq!(
            ClusterName::parse(name),
            ClusterName::outbound(5000, Some("safe"), "helloworld.default.svc.cluster.local")
        );
        assert_eq!(ClusterName::parse(name).to_string(), name);
        assert_eq!(
            ClusterName::parse("inbound|5000||"),
            ClusterName::inbound(5000)
        );
        let n = ClusterName::parse("BlackHoleCluster");
        assert_eq!((n.fqdn.as_str(), n.port), ("BlackHoleCluster", None));
        assert_eq!(n.to_string(), "BlackHoleCluster");
        // Not a port: the whole name.
        assert_eq!(ClusterName::parse("a|b|c|d").fqdn, "a|b|c|d");
    }
}
