//! Translation of Istio configuration plus the registry into Envoy xDS v3 resources for one proxy.
//!
//! [`translate`] is a pure function of the mesh state and the proxy's identity, so the ADS
//! server can call it per proxy on every change and push only what differs. Resource names
//! follow Istio (`outbound|PORT|SUBSET|HOST`, `inbound|PORT||`, route configs named by port,
//! `http.PORT` on gateways) so tools and habits carry over.
//!
//! ```text
//! MeshState { config, registry, trust_domain } + ProxyNode
//!   -> Scope (services, VirtualServices, DestinationRules this proxy may see)
//!   -> clusters + endpoints (cluster.rs), route configs (route.rs), listeners (listener.rs)
//!      with mesh mTLS (mtls.rs: ISTIO_MUTUAL, auto-mTLS, PeerAuthentication)
//!      and, when the node asks for it, access logs (access_log.rs)
//! ```

mod access_log;
mod cluster;
mod envoy;
mod listener;
mod mtls;
mod route;

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use mesh_api::ResourceMeta;
use mesh_api::constants::{DEFAULT_TRUST_DOMAIN, MESH_GATEWAY, ROOT_NAMESPACE};
use mesh_api::networking::destination_rule::DestinationRuleSpec;
use mesh_api::networking::gateway::GatewaySpec;
use mesh_api::networking::virtual_service::VirtualServiceSpec;

use crate::node::{ProxyKind, ProxyNode};
use crate::registry::{Registry, Service, export_visible, labels_match};

pub use cluster::{BLACKHOLE_CLUSTER, DEFAULT_CONNECT_TIMEOUT};
pub use listener::{
    GATEWAY_ROUTE_PREFIX, HTTP_PROXY_ROUTE, OUTBOUND_HTTP_PROXY_LISTENER, VIRTUAL_INBOUND_LISTENER,
    VIRTUAL_OUTBOUND_LISTENER,
};
pub use mtls::{
    EffectivePeerAuthentication, InboundMtls, MATCH_TLS_MODE_DISABLED, MATCH_TLS_MODE_ISTIO,
    SDS_DEFAULT, SDS_ROOTCA, TLS_INSPECTOR, TRANSPORT_SOCKET_MATCH_KEY, istio_sni,
    peer_authentication,
};

/// The configuration the control plane serves, with the registry built from it.
#[derive(Debug, Clone)]
pub struct MeshState {
    pub config: Arc<mesh_api::Config>,
    pub registry: Arc<Registry>,
    /// The trust domain of workload identities (`spiffe://TRUST_DOMAIN/ns/NS/sa/SA`) that mesh
    /// mTLS clusters expect from servers.
    pub trust_domain: String,
}

impl MeshState {
    /// Builds the registry of `config`; the trust domain is `cluster.local`.
    pub fn new(config: mesh_api::Config) -> MeshState {
        let registry = Registry::build(&config);
        MeshState {
            config: Arc::new(config),
            registry: Arc::new(registry),
            trust_domain: DEFAULT_TRUST_DOMAIN.to_string(),
        }
    }

    /// The same state with identities in `trust_domain` (mesh-control's `--trust-domain`).
    pub fn with_trust_domain(mut self, trust_domain: impl Into<String>) -> MeshState {
        self.trust_domain = trust_domain.into();
        self
    }
}

/// The xDS resources of one proxy, keyed by resource name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct XdsResources {
    pub clusters: BTreeMap<String, Cluster>,
    /// Keyed by cluster name (= EDS service name).
    pub endpoints: BTreeMap<String, ClusterLoadAssignment>,
    pub listeners: BTreeMap<String, Listener>,
    pub routes: BTreeMap<String, RouteConfiguration>,
}

/// Everything `proxy` should enforce, from the mesh state.
pub fn translate(state: &MeshState, proxy: &ProxyNode) -> XdsResources {
    let proxy = &*proxy.with_pod(&state.config);
    let scope = Scope::new(state, proxy);
    let mut out = XdsResources::default();
    cluster::build(&scope, &mut out);
    match proxy.kind {
        ProxyKind::Sidecar => {
            listener::sidecar_outbound(&scope, &mut out);
            listener::sidecar_inbound(&scope, &mut out);
        }
        ProxyKind::Router => {
            listener::gateway(&scope, &mut out);
            // A router in local mode may also be given an outbound proxy address.
            if proxy.local.as_ref().is_some_and(|l| l.outbound.is_some()) {
                listener::sidecar_outbound(&scope, &mut out);
            }
        }
    }
    if let Some(file) = &proxy.access_log_file {
        access_log::add(&mut out, file);
    }
    out
}

/// A VirtualService with its metadata and its hosts qualified in its namespace.
pub(crate) struct VsRef<'a> {
    pub meta: &'a ResourceMeta,
    pub spec: &'a VirtualServiceSpec,
    pub hosts: Vec<String>,
}

impl VsRef<'_> {
    /// Whether the VirtualService applies to `gateway` (`ns/name` or `mesh`), Istio's rule:
    /// no `gateways` means `mesh` only.
    pub fn bound_to(&self, gateway: &str) -> bool {
        if self.spec.gateways.is_empty() {
            return gateway == MESH_GATEWAY;
        }
        self.spec
            .gateways
            .iter()
            .any(|g| qualify_gateway(g, &self.meta.namespace) == gateway)
    }
}

/// `name` and `ns/name` gateway references to `ns/name`; `mesh` stays as is.
pub(crate) fn qualify_gateway(reference: &str, namespace: &str) -> String {
    if reference == MESH_GATEWAY {
        return reference.to_string();
    }
    match reference.split_once('/') {
        Some(_) => reference.to_string(),
        // `name.ns` is also accepted by Istio for gateways.
        None => match reference.split_once('.') {
            Some((name, ns)) => format!("{ns}/{name}"),
            None => format!("{namespace}/{reference}"),
        },
    }
}

/// What one proxy may see: the services, VirtualServices and DestinationRules visible from its
/// namespace (`exportTo`) and, when a `Sidecar` applies to it, listed in its egress hosts.
pub(crate) struct Scope<'a> {
    pub proxy: &'a ProxyNode,
    pub trust_domain: &'a str,
    pub registry: &'a Registry,
    pub config: &'a mesh_api::Config,
    pub services: Vec<&'a Service>,
    pub virtual_services: Vec<VsRef<'a>>,
    destination_rules: Vec<(&'a ResourceMeta, &'a DestinationRuleSpec, String)>,
}

impl<'a> Scope<'a> {
    fn new(state: &'a MeshState, proxy: &'a ProxyNode) -> Scope<'a> {
        let config: &mesh_api::Config = &state.config;
        let registry: &Registry = &state.registry;
        let ns = proxy.namespace.as_str();
        let egress = sidecar_egress_hosts(config, proxy);
        let egress_allows = |host: &str, owner_ns: &str| -> bool {
            let Some(hosts) = &egress else { return true };
            hosts.iter().any(|(ens, ehost)| {
                let ns_ok = match ens.as_str() {
                    "*" => true,
                    "." => owner_ns == ns,
                    "~" => false,
                    other => other == owner_ns,
                };
                ns_ok && mesh_api::host::host_matches(ehost, host)
            })
        };
        let services = registry
            .services
            .iter()
            .filter(|s| s.visible_from(ns) && egress_allows(&s.hostname, &s.namespace))
            .collect();
        let virtual_services = config
            .virtual_services()
            .filter(|(m, vs)| export_visible(&vs.spec.export_to, &m.namespace, ns))
            .map(|(meta, vs)| VsRef {
                meta,
                spec: &vs.spec,
                hosts: vs
                    .spec
                    .hosts
                    .iter()
                    .map(|h| registry.qualify(h, &meta.namespace))
                    .collect(),
            })
            .collect();
        let destination_rules = config
            .destination_rules()
            .filter(|(m, dr)| export_visible(&dr.spec.export_to, &m.namespace, ns))
            .filter(|(m, dr)| match &dr.spec.workload_selector {
                Some(sel) => m.namespace == ns && labels_match(&sel.match_labels, &proxy.labels),
                None => true,
            })
            .map(|(m, dr)| (m, &dr.spec, registry.qualify(&dr.spec.host, &m.namespace)))
            .collect();
        Scope {
            proxy,
            trust_domain: &state.trust_domain,
            registry,
            config,
            services,
            virtual_services,
            destination_rules,
        }
    }

    /// The DestinationRule for `service`, Istio's precedence: a rule in the proxy's namespace,
    /// then one in the service's namespace, then one in the root namespace, then any other; an
    /// exact host before a wildcard one.
    pub fn destination_rule(&self, service: &Service) -> Option<&'a DestinationRuleSpec> {
        self.destination_rule_with_meta(service).map(|(_, dr)| dr)
    }

    /// [`Scope::destination_rule`] with the rule's metadata (its origin, for provenance).
    pub fn destination_rule_with_meta(
        &self,
        service: &Service,
    ) -> Option<(&'a ResourceMeta, &'a DestinationRuleSpec)> {
        let rank_ns = |ns: &str| {
            if ns == self.proxy.namespace {
                0
            } else if ns == service.namespace {
                1
            } else if ns == ROOT_NAMESPACE {
                2
            } else {
                3
            }
        };
        self.destination_rules
            .iter()
            .filter(|(_, _, host)| mesh_api::host::host_matches(host, &service.hostname))
            .min_by_key(|(m, _, host)| (rank_ns(&m.namespace), host.starts_with('*'), host.len()))
            .map(|(m, dr, _)| (*m, *dr))
    }

    /// A visible service by a host as written in a resource of `namespace`.
    pub fn service(&self, host: &str, namespace: &str) -> Option<&'a Service> {
        let s = self.registry.resolve(host, namespace)?;
        self.services
            .iter()
            .find(|v| std::ptr::eq(**v, s))
            .copied()
            .or_else(|| {
                // Resolution from the resource's namespace may pick a service the proxy
                // cannot see while a visible one with the same name exists.
                let q = self.registry.qualify(host, namespace);
                self.services.iter().find(|v| v.hostname == q).copied()
            })
    }

    /// The mesh-bound VirtualService for a service host, the first in configuration order.
    pub fn mesh_virtual_service(&self, hostname: &str) -> Option<&VsRef<'a>> {
        let exact = self
            .virtual_services
            .iter()
            .filter(|vs| vs.bound_to(MESH_GATEWAY))
            .find(|vs| vs.hosts.iter().any(|h| h == hostname));
        exact.or_else(|| {
            self.virtual_services
                .iter()
                .filter(|vs| vs.bound_to(MESH_GATEWAY))
                .find(|vs| {
                    vs.hosts
                        .iter()
                        .any(|h| mesh_api::host::host_matches(h, hostname))
                })
        })
    }

    /// Gateways whose selector matches this proxy, with their `ns/name`.
    pub fn gateways(&self) -> Vec<(String, &'a GatewaySpec)> {
        self.config
            .gateways()
            .filter(|(_, gw)| {
                !gw.spec.selector.is_empty() && labels_match(&gw.spec.selector, &self.proxy.labels)
            })
            .map(|(m, gw)| (m.key(), &gw.spec))
            .collect()
    }
}

/// The egress hosts (`ns`, `host`) of the Sidecar that applies to `proxy`: one in its namespace
/// whose selector matches it, else the namespace's selector-less one, else the root namespace's.
fn sidecar_egress_hosts(
    config: &mesh_api::Config,
    proxy: &ProxyNode,
) -> Option<Vec<(String, String)>> {
    let mut with_selector = None;
    let mut ns_default = None;
    let mut root_default = None;
    for (meta, sc) in config.sidecars() {
        match &sc.spec.workload_selector {
            Some(sel)
                if meta.namespace == proxy.namespace
                    && labels_match(&sel.labels, &proxy.labels)
                    && with_selector.is_none() =>
            {
                with_selector = Some((meta, sc));
            }
            Some(_) => {}
            None if meta.namespace == proxy.namespace => {
                ns_default.get_or_insert((meta, sc));
            }
            None if meta.namespace == ROOT_NAMESPACE => {
                root_default.get_or_insert((meta, sc));
            }
            None => {}
        }
    }
    let (meta, sc) = with_selector.or(ns_default).or(root_default)?;
    if sc.spec.egress.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for egress in &sc.spec.egress {
        for h in &egress.hosts {
            let (ns, host) = mesh_api::host::split_namespaced_host(h);
            let ns = match ns {
                Some(".") | None => meta.namespace.clone(),
                Some(n) => n.to_string(),
            };
            let host = if host.contains('.') || host.contains('*') {
                host.to_string()
            } else {
                format!(
                    "{host}.{ns}.svc.{}",
                    mesh_api::constants::DEFAULT_DOMAIN_SUFFIX
                )
            };
            out.push((ns, host));
        }
    }
    Some(out)
}
