//! The service registry: services and their endpoints, from ServiceEntry and WorkloadEntry (and,
//! when the configuration holds them, Kubernetes Services selecting WorkloadEntries).
//!
//! As in Istio, every host of a ServiceEntry is a service of its own; endpoints are the entry's
//! inline `endpoints` plus the WorkloadEntries of the same namespace its `workloadSelector`
//! selects. A dot-less host (`helloworld`) is qualified with the entry's namespace
//! (`helloworld.NS.svc.cluster.local`), so short names, `name.namespace` and the FQDN all name
//! the same service; other hosts are kept as written.
//!
//! For mutual TLS each endpoint records whether its workload runs a sidecar (Istio's
//! `security.istio.io/tlsMode: istio` label) and its service account, so a service can list the
//! SPIFFE identities its callers must accept ([`Service::identities`]).

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Pod, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mesh_api::constants::{DEFAULT_DOMAIN_SUFFIX, spiffe_id};
use mesh_api::networking::service_entry::{Location, Resolution as IstioResolution};
use mesh_api::networking::workload_entry::WorkloadEntrySpec;
use serde::Serialize;

/// Istio's label telling that a workload runs a sidecar able to terminate mesh mTLS.
pub const LABEL_TLS_MODE: &str = "security.istio.io/tlsMode";
/// The value of [`LABEL_TLS_MODE`] on workloads with a sidecar.
pub const TLS_MODE_ISTIO: &str = "istio";

/// Application protocol of a service port, from its `protocol` or its name prefix (Istio's
/// `http-foo`, `grpc`, ... convention).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    GrpcWeb,
    Https,
    Tls,
    Tcp,
    Mongo,
    Redis,
    Mysql,
    Udp,
    /// Not declared: Istio sniffs it; this mesh treats it as HTTP.
    Unknown,
}

impl Protocol {
    /// Parses a declared protocol (`HTTP`, `http2`, `GRPC`, ...); unknown names give `Unknown`.
    pub fn parse(name: &str) -> Protocol {
        match name.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "http2" | "h2c" => Protocol::Http2,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "tcp" => Protocol::Tcp,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            "udp" => Protocol::Udp,
            _ => Protocol::Unknown,
        }
    }

    /// From an explicit protocol if given, else from the port name's prefix before `-`.
    pub fn infer(declared: Option<&str>, port_name: &str) -> Protocol {
        if let Some(p) = declared.map(Protocol::parse)
            && p != Protocol::Unknown
        {
            return p;
        }
        let prefix = port_name.split('-').next().unwrap_or("");
        Protocol::parse(prefix)
    }

    /// Whether the mesh routes this port at layer 7.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::Grpc
                | Protocol::GrpcWeb
                | Protocol::Unknown
        )
    }

    /// Whether upstream connections should speak HTTP/2.
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb)
    }
}

/// How the addresses of a service's endpoints are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Endpoint addresses are IPs (EDS).
    Static,
    /// Endpoint addresses (or the host itself) are DNS names resolved by the proxy.
    Dns,
    /// No endpoints: traffic goes to the address the caller asked for.
    None,
}

/// A port of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    pub name: String,
    pub number: u32,
    pub protocol: Protocol,
    /// The port on the workload when it differs and no endpoint names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// One instance of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// IP (or, for DNS resolution, a host name).
    pub address: String,
    /// Service port name to the workload's port.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The service account of the workload (`default` when its WorkloadEntry names none, as the
    /// proxy assumes for its own identity); empty for a DNS host resolved on its own.
    pub service_account: String,
    /// The namespace of the workload (its WorkloadEntry's, or the ServiceEntry's for inline
    /// endpoints), which with the service account makes its identity.
    pub namespace: String,
    /// Whether the workload runs a sidecar (`security.istio.io/tlsMode: istio`), so auto-mTLS
    /// may originate mesh mTLS to it.
    pub sidecar: bool,
    /// Load-balancing weight, 1 when unset.
    pub weight: u32,
    /// `region/zone/subzone`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// `namespace/name` of the WorkloadEntry this endpoint comes from, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_entry: Option<String>,
}

impl Endpoint {
    /// The workload port serving `port`: the endpoint's own mapping for the port's name, else
    /// the service's target port, else the service port itself.
    pub fn port_for(&self, port: &ServicePort) -> u32 {
        self.ports
            .get(&port.name)
            .copied()
            .or(port.target_port)
            .unwrap_or(port.number)
    }

    /// Whether every `selector` label is on this endpoint with the same value.
    pub fn matches(&self, selector: &BTreeMap<String, String>) -> bool {
        labels_match(selector, &self.labels)
    }

    /// The endpoint's SPIFFE identity in `trust_domain`; `None` without a service account.
    pub fn identity(&self, trust_domain: &str) -> Option<String> {
        (!self.service_account.is_empty())
            .then(|| spiffe_id(trust_domain, &self.namespace, &self.service_account))
    }
}

/// The resource a service was built from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceOrigin {
    /// `ServiceEntry` or `Service`.
    pub kind: String,
    pub name: String,
}

/// A service: one host with its ports and endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    /// The fully qualified host (`reviews.default.svc.cluster.local`, `api.example.com`).
    pub hostname: String,
    pub namespace: String,
    pub origin: ServiceOrigin,
    pub ports: Vec<ServicePort>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    pub resolution: Resolution,
    pub mesh_external: bool,
    /// Namespaces the service is visible from (`*` all, `.` own, `~` none); empty means all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    pub endpoints: Vec<Endpoint>,
    /// The ServiceEntry's `subjectAltNames`: identities accepted besides the endpoints' own.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

impl Service {
    pub fn port(&self, number: u32) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.number == number)
    }

    /// The identities a client must accept from this service's endpoints: every endpoint's
    /// SPIFFE ID in `trust_domain` plus the ServiceEntry's `subjectAltNames`, sorted, once each.
    pub fn identities(&self, trust_domain: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .endpoints
            .iter()
            .filter_map(|e| e.identity(trust_domain))
            .chain(self.subject_alt_names.iter().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether any endpoint of the service runs a sidecar.
    pub fn has_sidecar_endpoints(&self) -> bool {
        self.endpoints.iter().any(|e| e.sidecar)
    }

    /// Whether a proxy in `namespace` may see this service (`exportTo`).
    pub fn visible_from(&self, namespace: &str) -> bool {
        export_visible(&self.export_to, &self.namespace, namespace)
    }

    /// The short names a caller in `from_namespace` can use for this service, besides the
    /// hostname: `name`, `name.ns`, `name.ns.svc` for Kubernetes-style hosts.
    pub fn aliases(&self, from_namespace: &str) -> Vec<String> {
        let mut out = Vec::new();
        if let Some((name, ns)) =
            mesh_api::host::service_of_fqdn(&self.hostname, DEFAULT_DOMAIN_SUFFIX)
        {
            if ns == from_namespace {
                out.push(name.to_string());
            }
            out.push(format!("{name}.{ns}"));
            out.push(format!("{name}.{ns}.svc"));
        }
        out
    }
}

/// Whether an `exportTo` list lets a resource of `owner_ns` be seen from `from_ns`.
pub fn export_visible(export_to: &[String], owner_ns: &str, from_ns: &str) -> bool {
    if export_to.is_empty() {
        return true;
    }
    export_to
        .iter()
        .any(|e| e == "*" || (e == "." && owner_ns == from_ns) || e == from_ns)
}

/// Whether every selector label is present in `labels` with the same value.
pub fn labels_match(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Every service of the mesh, in a stable order (hostname, namespace).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Registry {
    pub services: Vec<Service>,
    #[serde(skip)]
    by_host: HashMap<String, Vec<usize>>,
}

impl Registry {
    /// Builds the registry from the ServiceEntries, WorkloadEntries and Kubernetes Services of
    /// `config`.
    pub fn build(config: &mesh_api::Config) -> Registry {
        let workload_entries: Vec<(String, String, &WorkloadEntrySpec)> = config
            .workload_entries()
            .map(|(m, we)| (m.namespace.clone(), m.name.clone(), &we.spec))
            .collect();
        let selected = |namespace: &str, selector: &BTreeMap<String, String>| -> Vec<Endpoint> {
            workload_entries
                .iter()
                .filter(|(ns, _, we)| ns == namespace && labels_match(selector, &we.labels))
                .filter_map(|(ns, name, we)| endpoint_of(we, ns, Some(format!("{ns}/{name}"))))
                .collect()
        };

        let kubernetes = KubernetesEndpoints::index(config);
        let mut services = Vec::new();
        for (meta, se) in config.service_entries() {
            let spec = &se.spec;
            let resolution = match spec.resolution {
                Some(IstioResolution::Static) => Resolution::Static,
                Some(
                    IstioResolution::Dns
                    | IstioResolution::DnsRoundRobin
                    | IstioResolution::DynamicDns,
                ) => Resolution::Dns,
                Some(IstioResolution::None) | None => Resolution::None,
            };
            let ports: Vec<ServicePort> = spec
                .ports
                .iter()
                .map(|p| ServicePort {
                    name: p.name.clone(),
                    number: p.number,
                    protocol: Protocol::infer(p.protocol.as_deref(), &p.name),
                    target_port: p.target_port,
                })
                .collect();
            let mut endpoints: Vec<Endpoint> = spec
                .endpoints
                .iter()
                .filter_map(|we| endpoint_of(we, &meta.namespace, None))
                .collect();
            if let Some(sel) = &spec.workload_selector {
                endpoints.extend(selected(&meta.namespace, &sel.labels));
            }
            for host in &spec.hosts {
                let hostname = qualify(host, &meta.namespace);
                let mut endpoints = endpoints.clone();
                // DNS resolution without endpoints resolves the host itself.
                if resolution == Resolution::Dns
                    && endpoints.is_empty()
                    && !hostname.starts_with('*')
                {
                    endpoints.push(Endpoint {
                        address: hostname.clone(),
                        ports: BTreeMap::new(),
                        labels: BTreeMap::new(),
                        service_account: String::new(),
                        namespace: meta.namespace.clone(),
                        sidecar: false,
                        weight: 1,
                        locality: None,
                        network: None,
                        workload_entry: None,
                    });
                }
                services.push(Service {
                    hostname,
                    namespace: meta.namespace.clone(),
                    origin: ServiceOrigin {
                        kind: "ServiceEntry".into(),
                        name: meta.name.clone(),
                    },
                    ports: ports.clone(),
                    addresses: spec.addresses.clone(),
                    resolution,
                    mesh_external: spec.location == Some(Location::MeshExternal),
                    export_to: spec.export_to.clone(),
                    endpoints,
                    subject_alt_names: spec.subject_alt_names.clone(),
                });
            }
        }

        for (meta, svc) in config.services() {
            let Some(spec) = &svc.spec else { continue };
            let ports = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    let number = u32::try_from(p.port).ok()?;
                    let name = p.name.clone().unwrap_or_default();
                    let declared = p.app_protocol.as_deref().or(match p.protocol.as_deref() {
                        Some("UDP") => Some("udp"),
                        _ => None,
                    });
                    let target_port = match &p.target_port {
                        Some(IntOrString::Int(n)) => u32::try_from(*n).ok(),
                        _ => None,
                    };
                    Some(ServicePort {
                        protocol: Protocol::infer(declared, &name),
                        name,
                        number,
                        target_port,
                    })
                })
                .collect();
            let mut endpoints = kubernetes.endpoints(&meta.namespace, &meta.name, spec);
            if let Some(sel) = spec.selector.as_ref().filter(|s| !s.is_empty()) {
                endpoints.extend(selected(&meta.namespace, sel));
            }
            let export_to = meta
                .annotations
                .get("networking.istio.io/exportTo")
                .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
                .unwrap_or_default();
            services.push(Service {
                hostname: format!(
                    "{}.{}.svc.{DEFAULT_DOMAIN_SUFFIX}",
                    meta.name, meta.namespace
                ),
                namespace: meta.namespace.clone(),
                origin: ServiceOrigin {
                    kind: "Service".into(),
                    name: meta.name.clone(),
                },
                ports,
                addresses: spec
                    .cluster_ip
                    .iter()
                    .filter(|ip| ip.as_str() != "None")
                    .cloned()
                    .collect(),
                resolution: Resolution::Static,
                mesh_external: false,
                export_to,
                endpoints,
                subject_alt_names: Vec::new(),
            });
        }
        Registry::from_services(services)
    }

    /// A registry holding exactly `services` (sorted by hostname, then namespace).
    pub fn from_services(mut services: Vec<Service>) -> Registry {
        services.sort_by(|a, b| {
            (&a.hostname, &a.namespace, &a.origin.kind).cmp(&(
                &b.hostname,
                &b.namespace,
                &b.origin.kind,
            ))
        });
        let mut by_host: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, s) in services.iter().enumerate() {
            by_host.entry(s.hostname.clone()).or_default().push(i);
        }
        Registry { services, by_host }
    }

    /// Every service with exactly this hostname.
    pub fn by_hostname(&self, hostname: &str) -> impl Iterator<Item = &Service> {
        self.by_host
            .get(hostname)
            .into_iter()
            .flatten()
            .map(|&i| &self.services[i])
    }

    /// The service a `host` written in a resource of `namespace` names: the host as written,
    /// else its qualified form (`name` and `name.ns` gain `.svc.cluster.local`). Among services
    /// with the same hostname, the one in `namespace` wins, then the first visible from it.
    pub fn resolve(&self, host: &str, namespace: &str) -> Option<&Service> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let pick = |h: &str| -> Option<&Service> {
            let mut candidates = self.by_hostname(h).filter(|s| s.visible_from(namespace));
            let first = candidates.next()?;
            if first.namespace == namespace {
                return Some(first);
            }
            Some(
                candidates
                    .find(|s| s.namespace == namespace)
                    .unwrap_or(first),
            )
        };
        pick(&host).or_else(|| {
            // Kubernetes DNS forms: `name`, `name.ns`, `name.ns.svc`.
            let expanded = if !host.contains('.') {
                format!("{host}.{namespace}.svc.{DEFAULT_DOMAIN_SUFFIX}")
            } else if host.ends_with(".svc") {
                format!("{host}.{DEFAULT_DOMAIN_SUFFIX}")
            } else if host.matches('.').count() == 1 {
                format!("{host}.svc.{DEFAULT_DOMAIN_SUFFIX}")
            } else {
                return None;
            };
            pick(&expanded)
        })
    }

    /// The fully qualified form of `host` as written in `namespace`: the registry's hostname
    /// when it names a service, else Istio's qualification of short names.
    pub fn qualify(&self, host: &str, namespace: &str) -> String {
        match self.resolve(host, namespace) {
            Some(s) => s.hostname.clone(),
            None => qualify(host, namespace),
        }
    }
}

/// Dot-less hosts gain `NS.svc.cluster.local`; `name.ns` stays ambiguous with external names
/// and is kept as written (lookups try both).
fn qualify(host: &str, namespace: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.contains('.') || host == "*" || host.parse::<std::net::IpAddr>().is_ok() {
        host
    } else {
        format!("{host}.{namespace}.svc.{DEFAULT_DOMAIN_SUFFIX}")
    }
}

/// The label an EndpointSlice names its Service with.
const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// The Pods and EndpointSlices of a configuration, indexed for building Services' endpoints.
struct KubernetesEndpoints<'a> {
    pods: HashMap<(&'a str, &'a str), &'a Pod>,
    /// `(namespace, service)` to its slices.
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    /// Pods by namespace, for Services no EndpointSlice speaks for.
    pods_by_namespace: HashMap<&'a str, Vec<&'a Pod>>,
}

impl<'a> KubernetesEndpoints<'a> {
    fn index(config: &'a mesh_api::Config) -> Self {
        let mut pods = HashMap::new();
        let mut pods_by_namespace: HashMap<&str, Vec<&Pod>> = HashMap::new();
        for (meta, pod) in config.pods() {
            pods.insert((meta.namespace.as_str(), meta.name.as_str()), pod);
            pods_by_namespace
                .entry(meta.namespace.as_str())
                .or_default()
                .push(pod);
        }
        let mut slices: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for (meta, slice) in config.endpoint_slices() {
            if let Some(service) = meta.labels.get(LABEL_SERVICE_NAME) {
                slices
                    .entry((meta.namespace.as_str(), service.as_str()))
                    .or_default()
                    .push(slice);
            }
        }
        KubernetesEndpoints {
            pods,
            slices,
            pods_by_namespace,
        }
    }

    /// The ready endpoints of Service `namespace/name`, as Istio reads them: from its
    /// EndpointSlices, each address with the slice's ports and its Pod's labels and service
    /// account; a Pod that reports itself not Ready is left out even before the slice says
    /// so. A Service no EndpointSlice names (a cluster without the EndpointSlice controller,
    /// or one that has not caught up) gets the ready Pods its selector picks, as the
    /// controller would list them.
    fn endpoints(&self, namespace: &str, name: &str, spec: &ServiceSpec) -> Vec<Endpoint> {
        match self.slices.get(&(namespace, name)) {
            Some(slices) => slices
                .iter()
                .flat_map(|slice| self.slice_endpoints(namespace, slice))
                .collect(),
            None => self.selected_pods(namespace, spec),
        }
    }

    fn slice_endpoints(&self, namespace: &str, slice: &EndpointSlice) -> Vec<Endpoint> {
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            return Vec::new();
        }
        let ports: BTreeMap<String, u32> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let port = u32::try_from(p.port?).ok()?;
                Some((p.name.clone().unwrap_or_default(), port))
            })
            .collect();
        let mut out = Vec::new();
        for ep in slice.endpoints.iter().flatten() {
            // An unset condition means ready (the API's rule).
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let pod = ep
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| {
                    let ns = r.namespace.as_deref().unwrap_or(namespace);
                    self.pods.get(&(ns, r.name.as_deref()?)).copied()
                });
            if pod.is_some_and(|p| pod_ready(p) == Some(false)) {
                continue;
            }
            // Istio takes the first address of an endpoint (the others are the same Pod).
            if let Some(address) = ep.addresses.first() {
                out.push(pod_endpoint(address, ports.clone(), pod, namespace));
            }
        }
        out
    }

    fn selected_pods(&self, namespace: &str, spec: &ServiceSpec) -> Vec<Endpoint> {
        let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
            return Vec::new();
        };
        let Some(pods) = self.pods_by_namespace.get(namespace) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for pod in pods {
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()) else {
                continue;
            };
            if !labels_match(selector, &labels) || pod_ready(pod) != Some(true) {
                continue;
            }
            let ports = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    let target = match &p.target_port {
                        Some(IntOrString::Int(n)) => u32::try_from(*n).ok()?,
                        Some(IntOrString::String(named)) => container_port(pod, named)?,
                        None => u32::try_from(p.port).ok()?,
                    };
                    Some((p.name.clone().unwrap_or_default(), target))
                })
                .collect();
            out.push(pod_endpoint(ip, ports, Some(pod), namespace));
        }
        out
    }
}

/// The Pod's `Ready` condition, if it reports one.
fn pod_ready(pod: &Pod) -> Option<bool> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions.iter().find(|c| c.type_ == "Ready")?;
    Some(ready.status == "True")
}

fn container_port(pod: &Pod, name: &str) -> Option<u32> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name))
        .and_then(|p| u32::try_from(p.container_port).ok())
}

fn pod_endpoint(
    address: &str,
    ports: BTreeMap<String, u32>,
    pod: Option<&Pod>,
    namespace: &str,
) -> Endpoint {
    let labels = pod
        .and_then(|p| p.metadata.labels.clone())
        .unwrap_or_default();
    let service_account = pod
        .and_then(|p| p.spec.as_ref()?.service_account_name.clone())
        .filter(|sa| !sa.is_empty())
        .unwrap_or_else(|| "default".to_string());
    Endpoint {
        address: address.to_string(),
        ports,
        sidecar: labels.get(LABEL_TLS_MODE).map(String::as_str) == Some(TLS_MODE_ISTIO),
        labels,
        service_account,
        namespace: namespace.to_string(),
        weight: 1,
        locality: None,
        network: None,
        workload_entry: None,
    }
}

fn endpoint_of(
    we: &WorkloadEntrySpec,
    namespace: &str,
    workload_entry: Option<String>,
) -> Option<Endpoint> {
    let address = we.address.clone().filter(|a| !a.is_empty())?;
    Some(Endpoint {
        address,
        ports: we.ports.clone(),
        labels: we.labels.clone(),
        service_account: we
            .service_account
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        namespace: namespace.to_string(),
        sidecar: we.labels.get(LABEL_TLS_MODE).map(String::as_str) == Some(TLS_MODE_ISTIO),
        weight: we.weight.filter(|w| *w > 0).unwrap_or(1),
        locality: we.locality.clone(),
        network: we.network.clone(),
        workload_entry,
    })
}
