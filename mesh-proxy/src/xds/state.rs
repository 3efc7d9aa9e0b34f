//! The ADS protocol state of one proxy, without any I/O: what it subscribes
//! to, which version and nonce it holds per type, the resources it accepted
//! and the (warmed) set it serves. The client feeds it responses and sends
//! the requests it returns; the unit tests drive it directly.
//!
//! Resources are kept as the bytes received ([`Encoded`]) and decoded
//! again whenever a set is compiled: decoded Envoy messages would cost
//! many times their encoding for as long as they are in force.
//!
//! ```text
//! DiscoveryResponse --prepare--> Candidate (validated, kept encoded) --Err--> NACK
//!                                   |
//!                               servable(): warming rules, merged with static
//!                                   |
//!                       runtime apply --Err--> NACK ; Ok --> commit + ACK
//!                                   |
//!                       subscription_updates(): EDS/RDS names changed -> requests
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;
use prost::{Message, Name};

use crate::compile::{CompileError, compile_cluster, compile_listener, merge_snapshot};
use crate::model::{
    Discovery, ListenerConfig, NetworkFilter, ResourceVersion, RouteSource, Snapshot,
};
use crate::xds::resources::{Encoded, StoredResourceError, Versioned, XdsResources};
use crate::xds_json::unpack_any;

/// How long a cluster waits for its endpoints (or a listener for its route
/// configuration) before it is served anyway, as Envoy's
/// `initial_fetch_timeout` default.
pub const DEFAULT_WARMING_TIMEOUT: Duration = Duration::from_secs(15);

/// gRPC `INTERNAL`, the code Envoy puts in a NACK's `error_detail`.
const NACK_CODE: i32 = 13;

/// The four resource types, in the order they are applied (CDS, EDS, LDS,
/// RDS), so that what a resource refers to arrives before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    Cluster,
    Endpoint,
    Listener,
    Route,
}

impl ResourceType {
    pub const ALL: [ResourceType; 4] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
    ];

    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::Endpoint => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        }
    }

    pub fn from_type_url(url: &str) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// The xDS service name (CDS, EDS, LDS, RDS).
    pub fn short(self) -> &'static str {
        match self {
            ResourceType::Cluster => "CDS",
            ResourceType::Endpoint => "EDS",
            ResourceType::Listener => "LDS",
            ResourceType::Route => "RDS",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// LDS and CDS are wildcard subscriptions; a response carries the whole
    /// set and a missing resource is removed. EDS and RDS name what they
    /// want, and a response updates only the resources it carries.
    fn is_wildcard(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }
}

/// Dynamic resources by name, each with the version it came with.
#[derive(Debug, Clone, Default)]
pub struct DynamicResources {
    pub clusters: BTreeMap<String, Versioned<Cluster>>,
    pub endpoints: BTreeMap<String, Versioned<ClusterLoadAssignment>>,
    pub listeners: BTreeMap<String, Versioned<Listener>>,
    pub routes: BTreeMap<String, Versioned<RouteConfiguration>>,
    pub clusters_version: String,
    pub listeners_version: String,
}

impl DynamicResources {
    /// The shape `/config_dump` and `merge_snapshot` take.
    pub fn to_xds_resources(&self) -> XdsResources {
        XdsResources {
            listeners: self.listeners.values().cloned().collect(),
            routes: self.routes.values().cloned().collect(),
            clusters: self.clusters.values().cloned().collect(),
            endpoints: self.endpoints.values().cloned().collect(),
            secrets: Vec::new(),
            listeners_version: self.listeners_version.clone(),
            clusters_version: self.clusters_version.clone(),
        }
    }

    pub fn names(&self, ty: ResourceType) -> Vec<String> {
        match ty {
            ResourceType::Cluster => self.clusters.keys().cloned().collect(),
            ResourceType::Endpoint => self.endpoints.keys().cloned().collect(),
            ResourceType::Listener => self.listeners.keys().cloned().collect(),
            ResourceType::Route => self.routes.keys().cloned().collect(),
        }
    }
}

/// Per type: the subscription and where the stream stands.
#[derive(Debug, Clone, Default)]
struct TypeState {
    /// Whether requests are sent for this type at all.
    subscribed: bool,
    /// Resource names (EDS/RDS); empty for wildcard types.
    names: BTreeSet<String>,
    /// `version_info` of the last accepted response.
    version_info: String,
    /// Nonce of the last response received on the current stream.
    nonce: String,
}

/// A decoded and validated response, not yet in force.
#[derive(Debug)]
pub struct Candidate {
    pub ty: ResourceType,
    pub version_info: String,
    pub nonce: String,
    pub resources: DynamicResources,
}

/// A response that cannot be applied.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub ty: Option<ResourceType>,
    pub type_url: String,
    pub nonce: String,
    pub reason: String,
}

/// What the runtime is to serve, and the dynamic resources behind it.
#[derive(Debug)]
pub struct Servable {
    pub snapshot: Snapshot,
    pub resources: DynamicResources,
    /// Clusters waiting for endpoints and listeners waiting for routes.
    pub warming: Vec<String>,
}

/// The protocol state; see the module doc.
#[derive(Debug)]
pub struct XdsState {
    static_snapshot: Snapshot,
    types: [TypeState; 4],
    accepted: DynamicResources,
    active: DynamicResources,
    warming_since: BTreeMap<(ResourceType, String), Instant>,
    /// Resources whose warming timed out: served without what they wait for.
    expired: BTreeSet<(ResourceType, String)>,
    warming_timeout: Duration,
}

impl XdsState {
    /// `cds`/`lds`: whether clusters and listeners come from ADS (the
    /// bootstrap's `cds_config`/`lds_config`). EDS and RDS are subscribed to
    /// as clusters and listeners (static or dynamic) name them.
    pub fn new(static_snapshot: Snapshot, cds: bool, lds: bool, warming_timeout: Duration) -> Self {
        let mut types: [TypeState; 4] = Default::default();
        types[ResourceType::Cluster.index()].subscribed = cds;
        types[ResourceType::Listener.index()].subscribed = lds;
        let mut state = XdsState {
            static_snapshot,
            types,
            accepted: DynamicResources::default(),
            active: DynamicResources::default(),
            warming_since: BTreeMap::new(),
            expired: BTreeSet::new(),
            warming_timeout,
        };
        let (eds, rds) = state.wanted_names(&DynamicResources::default());
        state.set_names(ResourceType::Endpoint, eds);
        state.set_names(ResourceType::Route, rds);
        state
    }

    fn ts(&self, ty: ResourceType) -> &TypeState {
        &self.types[ty.index()]
    }

    fn ts_mut(&mut self, ty: ResourceType) -> &mut TypeState {
        &mut self.types[ty.index()]
    }

    fn set_names(&mut self, ty: ResourceType, names: BTreeSet<String>) {
        self.ts_mut(ty).names = names;
    }

    /// Wildcard types when configured; EDS/RDS while they name something
    /// (an empty name list would mean "everything" on the wire).
    fn is_subscribed(&self, ty: ResourceType) -> bool {
        let ts = self.ts(ty);
        if ty.is_wildcard() {
            ts.subscribed
        } else {
            !ts.names.is_empty()
        }
    }

    /// The accepted version of a type (empty before the first ACK).
    pub fn version(&self, ty: ResourceType) -> &str {
        &self.ts(ty).version_info
    }

    /// The resources accepted so far (ACKed).
    pub fn accepted(&self) -> &DynamicResources {
        &self.accepted
    }

    /// The resources in force in the runtime.
    pub fn active(&self) -> &DynamicResources {
        &self.active
    }

    /// Names subscribed to for a type (empty for wildcard).
    pub fn subscribed_names(&self, ty: ResourceType) -> Vec<String> {
        self.ts(ty).names.iter().cloned().collect()
    }

    fn request(&self, ty: ResourceType, node: Option<&Node>) -> DiscoveryRequest {
        let ts = self.ts(ty);
        DiscoveryRequest {
            version_info: ts.version_info.clone(),
            node: node.cloned(),
            resource_names: ts.names.iter().cloned().collect(),
            type_url: ty.type_url().to_string(),
            response_nonce: ts.nonce.clone(),
            ..Default::default()
        }
    }

    /// The requests that open a stream, in CDS, EDS, LDS, RDS order. The
    /// versions already held are sent, as Envoy does, and nonces start
    /// empty: a restarted control plane sees a new stream and sends
    /// everything.
    pub fn initial_requests(&mut self) -> Vec<DiscoveryRequest> {
        let mut out = Vec::new();
        for ty in ResourceType::ALL {
            self.ts_mut(ty).nonce.clear();
            if self.is_subscribed(ty) {
                out.push(self.request(ty, None));
            }
        }
        out
    }

    /// Decodes and validates a response against the static resources and
    /// the other types' accepted resources. The response is taken whole so
    /// that the resources' bytes are kept as received, without a copy.
    pub fn prepare(&self, resp: DiscoveryResponse) -> Result<Candidate, Rejection> {
        let reject = |ty, reason: String| Rejection {
            ty,
            type_url: resp.type_url.clone(),
            nonce: resp.nonce.clone(),
            reason,
        };
        let Some(ty) = ResourceType::from_type_url(&resp.type_url) else {
            return Err(reject(
                None,
                format!("type_url {:?} is not supported", resp.type_url),
            ));
        };
        let now = SystemTime::now();
        let mut next = self.accepted.clone();
        let version = &resp.version_info;
        let resources = resp.resources;
        let r = match ty {
            ResourceType::Cluster => {
                decode::<Cluster>(resources, "cluster", |c| &c.name).and_then(|v| {
                    next.clusters = replace(&self.accepted.clusters, v, version, now, false)?;
                    next.clusters_version = version.clone();
                    Ok(())
                })
            }
            ResourceType::Endpoint => {
                decode::<ClusterLoadAssignment>(resources, "cluster_load_assignment", |c| {
                    &c.cluster_name
                })
                .and_then(|v| {
                    next.endpoints = replace(&self.accepted.endpoints, v, version, now, true)?;
                    Ok(())
                })
            }
            ResourceType::Listener => decode::<Listener>(resources, "listener", |l| &l.name)
                .and_then(|v| {
                    next.listeners = replace(&self.accepted.listeners, v, version, now, false)?;
                    next.listeners_version = version.clone();
                    Ok(())
                }),
            ResourceType::Route => {
                decode::<RouteConfiguration>(resources, "route_configuration", |r| &r.name)
                    .and_then(|v| {
                        next.routes = replace(&self.accepted.routes, v, version, now, true)?;
                        Ok(())
                    })
            }
        };
        r.map_err(|reason| reject(Some(ty), reason))?;
        // Resources nobody refers to any more are dropped, as are EDS/RDS
        // resources sent without being asked for.
        let (eds, rds) = self.wanted_names(&next);
        next.endpoints.retain(|name, _| eds.contains(name));
        next.routes.retain(|name, _| rds.contains(name));
        merge_snapshot(&self.static_snapshot, &next.to_xds_resources())
            .map_err(|e| reject(Some(ty), e.to_string()))?;
        Ok(Candidate {
            ty,
            version_info: resp.version_info,
            nonce: resp.nonce,
            resources: next,
        })
    }

    /// What to serve given the accepted resources: a cluster waiting for
    /// its endpoints keeps its previous version (or is left out), and while
    /// any cluster warms, listeners and routes stay as they are, so no
    /// listener switches to a cluster without endpoints. A listener waiting
    /// for a route configuration keeps its previous version. Warming ends
    /// when the resource arrives or after the warming timeout.
    pub fn servable(
        &mut self,
        accepted: &DynamicResources,
        now: Instant,
    ) -> Result<Servable, CompileError> {
        let mut out = DynamicResources {
            endpoints: accepted.endpoints.clone(),
            clusters_version: accepted.clusters_version.clone(),
            listeners_version: accepted.listeners_version.clone(),
            ..Default::default()
        };
        let mut warming = Vec::new();
        let mut still_warming = BTreeSet::new();
        let mut expired = BTreeSet::new();
        let mut clusters_warming = false;
        for (name, c) in &accepted.clusters {
            let ready = match compile_stored(&c.resource, compile_cluster).map(|c| c.discovery) {
                Ok(Discovery::Eds { service_name }) => {
                    accepted.endpoints.contains_key(&service_name)
                }
                _ => true,
            };
            if ready {
                out.clusters.insert(name.clone(), c.clone());
                continue;
            }
            if self.timed_out(ResourceType::Cluster, name, now) {
                expired.insert((ResourceType::Cluster, name.clone()));
                out.clusters.insert(name.clone(), c.clone());
                continue;
            }
            clusters_warming = true;
            warming.push(format!("cluster {name:?}"));
            still_warming.insert((ResourceType::Cluster, name.clone()));
            if let Some(prev) = self.active.clusters.get(name) {
                out.clusters.insert(name.clone(), prev.clone());
            }
        }
        if clusters_warming {
            out.listeners = self.active.listeners.clone();
            out.routes = self.active.routes.clone();
            out.listeners_version = self.active.listeners_version.clone();
        } else {
            out.routes = accepted.routes.clone();
            for (name, l) in &accepted.listeners {
                let ready = compile_stored(&l.resource, compile_listener)
                    .map(|c| {
                        rds_names(&c)
                            .iter()
                            .all(|r| accepted.routes.contains_key(r))
                    })
                    .unwrap_or(true);
                if ready {
                    out.listeners.insert(name.clone(), l.clone());
                    continue;
                }
                if self.timed_out(ResourceType::Listener, name, now) {
                    expired.insert((ResourceType::Listener, name.clone()));
                    out.listeners.insert(name.clone(), l.clone());
                    continue;
                }
                warming.push(format!("listener {name:?}"));
                still_warming.insert((ResourceType::Listener, name.clone()));
                if let Some(prev) = self.active.listeners.get(name) {
                    out.listeners.insert(name.clone(), prev.clone());
                }
            }
        }
        // Clocks run only for what is warming now (listeners held back
        // behind warming clusters start theirs once the clusters are warm);
        // an expired resource is served and has no clock.
        self.warming_since.retain(|k, _| still_warming.contains(k));
        for k in still_warming {
            self.warming_since.entry(k).or_insert(now);
        }
        if !clusters_warming {
            self.expired = expired;
        } else {
            self.expired.retain(|k| k.0 == ResourceType::Listener);
            self.expired.extend(expired);
        }
        let snapshot = merge_snapshot(&self.static_snapshot, &out.to_xds_resources())?;
        Ok(Servable {
            snapshot,
            resources: out,
            warming,
        })
    }

    fn timed_out(&self, ty: ResourceType, name: &str, now: Instant) -> bool {
        let key = (ty, name.to_string());
        self.expired.contains(&key)
            || self
                .warming_since
                .get(&key)
                .is_some_and(|since| now.saturating_duration_since(*since) >= self.warming_timeout)
    }

    /// When the next warming resource times out, if any does.
    pub fn next_warming_deadline(&self) -> Option<Instant> {
        self.warming_since
            .values()
            .min()
            .map(|since| *since + self.warming_timeout)
    }

    /// Records an applied candidate and returns its ACK.
    pub fn commit(
        &mut self,
        candidate: Candidate,
        active: DynamicResources,
        node: Option<&Node>,
    ) -> DiscoveryRequest {
        let ty = candidate.ty;
        self.accepted = candidate.resources;
        self.active = active;
        let ts = self.ts_mut(ty);
        ts.version_info = candidate.version_info;
        ts.nonce = candidate.nonce;
        self.request(ty, node)
    }

    /// Records a re-served set (warming timeout) without a response.
    pub fn set_active(&mut self, active: DynamicResources) {
        self.active = active;
    }

    /// The NACK of a rejected response: the previous version, the
    /// response's nonce and the reason. `None` for an unknown type (there
    /// is no subscription to answer on).
    pub fn nack(&mut self, rejection: &Rejection, node: Option<&Node>) -> DiscoveryRequest {
        if let Some(ty) = rejection.ty {
            self.ts_mut(ty).nonce = rejection.nonce.clone();
        }
        let mut req = match rejection.ty {
            Some(ty) => self.request(ty, node),
            None => DiscoveryRequest {
                type_url: rejection.type_url.clone(),
                response_nonce: rejection.nonce.clone(),
                node: node.cloned(),
                ..Default::default()
            },
        };
        req.error_detail = Some(Status {
            code: NACK_CODE,
            message: rejection.reason.clone(),
            details: Vec::new(),
        });
        req
    }

    /// Requests for EDS/RDS whose wanted names changed with the accepted
    /// clusters and listeners (new EDS clusters, new route config names).
    pub fn subscription_updates(&mut self, node: Option<&Node>) -> Vec<DiscoveryRequest> {
        let (eds, rds) = self.wanted_names(&self.accepted.clone());
        let mut out = Vec::new();
        for (ty, names) in [(ResourceType::Endpoint, eds), (ResourceType::Route, rds)] {
            if self.ts(ty).names == names {
                continue;
            }
            let send = !names.is_empty();
            self.set_names(ty, names);
            if send {
                out.push(self.request(ty, node));
            }
        }
        out
    }

    /// EDS service names of the EDS clusters and RDS names of the HTTP
    /// connection managers, static and dynamic.
    fn wanted_names(&self, dynamic: &DynamicResources) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut eds = BTreeSet::new();
        let mut rds = BTreeSet::new();
        for c in self.static_snapshot.clusters.values() {
            if let Discovery::Eds { service_name } = &c.discovery {
                eds.insert(service_name.clone());
            }
        }
        for l in self.static_snapshot.listeners.values() {
            rds.extend(rds_names(l));
        }
        for c in dynamic.clusters.values() {
            if let Ok(c) = compile_stored(&c.resource, compile_cluster)
                && let Discovery::Eds { service_name } = c.discovery
            {
                eds.insert(service_name);
            }
        }
        for l in dynamic.listeners.values() {
            if let Ok(l) = compile_stored(&l.resource, compile_listener) {
                rds.extend(rds_names(&l));
            }
        }
        (eds, rds)
    }
}

/// The route configuration names a listener's HTTP connection managers
/// fetch by RDS.
fn rds_names(l: &ListenerConfig) -> Vec<String> {
    l.filter_chains
        .iter()
        .chain(l.default_filter_chain.iter())
        .filter_map(|fc| match &fc.filter {
            NetworkFilter::Http(h) => match &h.routes {
                RouteSource::Rds(name) => Some(name.clone()),
                RouteSource::Inline(_) => None,
            },
            NetworkFilter::Tcp(_) => None,
        })
        .collect()
}

/// Compiles a kept resource, decoding it for the time of the compile.
fn compile_stored<T: Message + Name + Default, M>(
    resource: &Encoded<T>,
    compile: impl FnOnce(&T) -> Result<M, CompileError>,
) -> Result<M, CompileError> {
    compile(&resource.decode()?)
}

/// Checks that each resource decodes as its type and has a unique name,
/// and keeps its bytes as received (the decoded message only lives for
/// the check).
fn decode<T: Message + Name + Default>(
    resources: Vec<Any>,
    kind: &str,
    name_of: impl Fn(&T) -> &String,
) -> Result<Vec<(String, Encoded<T>)>, String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(resources.len());
    for (i, any) in resources.into_iter().enumerate() {
        let r: T = unpack_any(&any).map_err(|e| format!("resources[{i}]: {e}"))?;
        let name = name_of(&r).clone();
        if name.is_empty() {
            return Err(format!("resources[{i}]: {kind} without a name"));
        }
        if !seen.insert(name.clone()) {
            return Err(format!("{kind} {name:?} appears more than once"));
        }
        out.push((name, Encoded::from_bytes(Bytes::from(any.value))));
    }
    Ok(out)
}

/// The next accepted map of one type. An unchanged resource keeps its
/// version and `last_updated`, so `/config_dump` shows when it really
/// changed. `merge`: EDS/RDS responses update only what they carry.
fn replace<T: Message + Name + Default + PartialEq>(
    old: &BTreeMap<String, Versioned<T>>,
    new: Vec<(String, Encoded<T>)>,
    version_info: &str,
    now: SystemTime,
    merge: bool,
) -> Result<BTreeMap<String, Versioned<T>>, String> {
    let mut out = if merge { old.clone() } else { BTreeMap::new() };
    for (name, resource) in new {
        let v = match old.get(&name) {
            Some(prev) if unchanged(&prev.resource, &resource).map_err(|e| e.to_string())? => {
                prev.clone()
            }
            _ => Versioned {
                resource,
                version: ResourceVersion {
                    version_info: version_info.to_string(),
                    last_updated: now,
                },
            },
        };
        out.insert(name, v);
    }
    Ok(out)
}

/// Same bytes, or (rarely) other bytes for the same message: envoy-types
/// maps are `HashMap`s, which a control plane may encode in any order from
/// one response to the next. Only then are the two decoded.
fn unchanged<T: Message + Name + Default + PartialEq>(
    prev: &Encoded<T>,
    new: &Encoded<T>,
) -> Result<bool, StoredResourceError> {
    Ok(prev == new || prev.decode()? == new.decode()?)
}

#[cfg(test)]
mod tests;
