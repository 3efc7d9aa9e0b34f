//! Cluster runtime state built from a snapshot: hosts with their counters
//! and connection pools, and a load balancer over them.
//!
//! A cluster whose configuration and endpoints did not change keeps its
//! runtime (load balancer position included) across snapshot swaps; a
//! changed cluster keeps the per-host state (pools, counters) of the
//! addresses it still has.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::circuit_breaker::{BreakerStats, CircuitBreaker};
use super::lb::LoadBalancer;
use super::outlier::{OutlierState, OutlierStats};
use super::pool::{Pool, PoolClusterStats, PoolSettings, Protocol};
use crate::model::{ClusterConfig, EndpointSet, HealthStatus, Snapshot, UpstreamProtocol};
use crate::stats::{Counter, Gauge, Scope, Stats};
use crate::tls::{TlsContexts, UpstreamTlsStats, UpstreamTransport};

/// Per-host counters shown by `/clusters`.
#[derive(Debug, Default)]
pub struct HostStats {
    pub cx_total: Counter,
    pub cx_active: Gauge,
    pub cx_connect_fail: Counter,
    pub rq_total: Counter,
    pub rq_active: Gauge,
    pub rq_success: Counter,
    pub rq_error: Counter,
    pub rq_timeout: Counter,
}

/// What belongs to an address rather than to one configuration.
#[derive(Debug)]
pub struct HostState {
    pub address: SocketAddr,
    pub stats: Arc<HostStats>,
    pub pool: Pool,
    pub outlier: OutlierState,
}

/// A host as one snapshot sees it.
#[derive(Debug)]
pub struct Host {
    pub state: Arc<HostState>,
    pub weight: u32,
    pub health: HealthStatus,
    pub priority: u32,
    pub hostname: String,
    pub region: String,
    pub zone: String,
    pub sub_zone: String,
}

impl Host {
    /// Envoy's `health_flags` in `/clusters`.
    pub fn health_flags(&self) -> &'static str {
        if self.state.outlier.marked_ejected() {
            return match self.health {
                HealthStatus::Healthy | HealthStatus::Unknown => "/failed_outlier_check",
                HealthStatus::Unhealthy | HealthStatus::Timeout => {
                    "/failed_outlier_check/failed_eds_health"
                }
                HealthStatus::Draining => "/failed_outlier_check/eds_status_draining",
                HealthStatus::Degraded => "/failed_outlier_check/degraded_eds_health",
            };
        }
        match self.health {
            HealthStatus::Healthy | HealthStatus::Unknown => "healthy",
            HealthStatus::Unhealthy | HealthStatus::Timeout => "/failed_eds_health",
            HealthStatus::Draining => "/eds_status_draining",
            HealthStatus::Degraded => "/degraded_eds_health",
        }
    }
}

/// Envoy's default overprovisioning factor (140%): a priority level counts
/// as fully healthy while at least 1/1.4 (~72%) of its hosts are.
pub const OVERPROVISIONING_FACTOR: u64 = 140;
/// Envoy's default `healthy_panic_threshold` (50%).
pub const PANIC_THRESHOLD_PERCENT: u64 = 50;

/// The hosts of one priority level that the balancer uses, and the share
/// of traffic (percent) the level receives.
#[derive(Debug, Default)]
pub struct PriorityLevel {
    /// The routable hosts, or every host of the level when it is in panic.
    pub hosts: Vec<Arc<Host>>,
    pub load: u32,
    pub panic: bool,
}

/// All hosts, and the levels traffic is spread over, computed as Envoy
/// does: each level's health is its healthy share times the
/// overprovisioning factor (capped at 100%); levels take load in priority
/// order up to their health; when the levels together are under 100%
/// healthy, the load is spread in proportion to health and a level below
/// the panic threshold balances over all its hosts, healthy or not.
#[derive(Debug, Default)]
pub struct HostSet {
    pub all: Vec<Arc<Host>>,
    pub levels: Vec<PriorityLevel>,
}

impl HostSet {
    pub fn new(all: Vec<Arc<Host>>) -> HostSet {
        if all.is_empty() {
            return HostSet::default();
        }
        let max_priority = all.iter().map(|h| h.priority).max().unwrap_or(0) as usize;
        let mut by_priority: Vec<Vec<Arc<Host>>> = vec![Vec::new(); max_priority + 1];
        for h in &all {
            by_priority[h.priority as usize].push(h.clone());
        }
        let health: Vec<u64> = by_priority
            .iter()
            .map(|hosts| {
                let healthy = hosts.iter().filter(|h| h.health.is_routable()).count() as u64;
                (OVERPROVISIONING_FACTOR * healthy)
                    .checked_div(hosts.len() as u64)
                    .unwrap_or(0)
                    .min(100)
            })
            .collect();
        let total_health = health.iter().sum::<u64>().min(100);
        let mut loads = vec![0u64; health.len()];
        if total_health == 0 {
            // Nothing healthy anywhere: everything goes to the first level
            // that has hosts, in panic.
            if let Some(first) = by_priority.iter().position(|h| !h.is_empty()) {
                loads[first] = 100;
            }
        } else {
            let mut remaining = 100u64;
            for (i, h) in health.iter().enumerate() {
                let share = (h * 100)
                    .checked_div(total_health)
                    .unwrap_or(0)
                    .min(remaining);
                loads[i] = share;
                remaining -= share;
            }
            // Rounding leftovers go to the first level with health.
            if remaining > 0
                && let Some(first) = health.iter().position(|h| *h > 0)
            {
                loads[first] += remaining;
            }
        }
        let levels = by_priority
            .into_iter()
            .zip(loads)
            .map(|(hosts, load)| {
                let healthy: Vec<Arc<Host>> = hosts
                    .iter()
                    .filter(|h| h.health.is_routable())
                    .cloned()
                    .collect();
                let healthy_percent = if hosts.is_empty() {
                    0
                } else {
                    healthy.len() as u64 * 100 / hosts.len() as u64
                };
                let panic = !hosts.is_empty()
                    && total_health < 100
                    && healthy_percent < PANIC_THRESHOLD_PERCENT;
                PriorityLevel {
                    hosts: if panic { hosts } else { healthy },
                    load: load as u32,
                    panic,
                }
            })
            .collect();
        HostSet { all, levels }
    }

    /// Chooses a level for one request by its load share.
    pub fn choose_level(&self) -> Option<usize> {
        let roll = rand::random_range(0..100u32);
        let mut acc = 0;
        for (i, level) in self.levels.iter().enumerate() {
            acc += level.load;
            if roll < acc && !level.hosts.is_empty() {
                return Some(i);
            }
        }
        self.levels
            .iter()
            .position(|l| l.load > 0 && !l.hosts.is_empty())
    }

    /// Hosts that traffic can reach (for the `membership_healthy` gauge).
    pub fn healthy_count(&self) -> usize {
        self.all.iter().filter(|h| h.health.is_routable()).count()
    }
}

/// Cluster-level stats (`cluster.NAME.*`).
#[derive(Debug, Clone)]
pub struct ClusterStats {
    pub upstream_rq_total: Counter,
    pub upstream_rq_active: Gauge,
    pub upstream_rq_completed: Counter,
    pub upstream_rq_timeout: Counter,
    pub upstream_rq_2xx: Counter,
    pub upstream_rq_3xx: Counter,
    pub upstream_rq_4xx: Counter,
    pub upstream_rq_5xx: Counter,
    pub upstream_cx_none_healthy: Counter,
    pub membership_total: Gauge,
    pub membership_healthy: Gauge,
    pub upstream_rq_retry: Counter,
    pub upstream_rq_retry_success: Counter,
    pub upstream_rq_retry_limit_exceeded: Counter,
    pub upstream_rq_per_try_timeout: Counter,
    /// `per_try_idle_timeout` fired (resilience).
    pub upstream_rq_per_try_idle_timeout: Counter,
    pub pool: PoolClusterStats,
    pub outlier: OutlierStats,
}

impl ClusterStats {
    fn new(stats: &Stats, name: &str) -> ClusterStats {
        let s = Scope::cluster(name);
        ClusterStats {
            upstream_rq_total: stats.counter(&s, "upstream_rq_total"),
            upstream_rq_active: stats.gauge(&s, "upstream_rq_active"),
            upstream_rq_completed: stats.counter(&s, "upstream_rq_completed"),
            upstream_rq_timeout: stats.counter(&s, "upstream_rq_timeout"),
            upstream_rq_2xx: stats.counter(&s, "upstream_rq_2xx"),
            upstream_rq_3xx: stats.counter(&s, "upstream_rq_3xx"),
            upstream_rq_4xx: stats.counter(&s, "upstream_rq_4xx"),
            upstream_rq_5xx: stats.counter(&s, "upstream_rq_5xx"),
            upstream_cx_none_healthy: stats.counter(&s, "upstream_cx_none_healthy"),
            membership_total: stats.gauge(&s, "membership_total"),
            membership_healthy: stats.gauge(&s, "membership_healthy"),
            upstream_rq_retry: stats.counter(&s, "upstream_rq_retry"),
            upstream_rq_retry_success: stats.counter(&s, "upstream_rq_retry_success"),
            upstream_rq_retry_limit_exceeded: stats.counter(&s, "upstream_rq_retry_limit_exceeded"),
            upstream_rq_per_try_timeout: stats.counter(&s, "upstream_rq_per_try_timeout"),
            upstream_rq_per_try_idle_timeout: stats.counter(&s, "upstream_rq_per_try_idle_timeout"),
            outlier: OutlierStats::new(stats, name),
            pool: PoolClusterStats {
                cx_total: stats.counter(&s, "upstream_cx_total"),
                cx_active: stats.gauge(&s, "upstream_cx_active"),
                cx_connect_fail: stats.counter(&s, "upstream_cx_connect_fail"),
                cx_connect_timeout: stats.counter(&s, "upstream_cx_connect_timeout"),
                cx_idle_timeout: stats.counter(&s, "upstream_cx_idle_timeout"),
                cx_max_duration_reached: stats.counter(&s, "upstream_cx_max_duration_reached"),
            },
        }
    }

    pub fn record_status(&self, status: u16) {
        self.upstream_rq_completed.inc();
        match status / 100 {
            2 => self.upstream_rq_2xx.inc(),
            3 => self.upstream_rq_3xx.inc(),
            4 => self.upstream_rq_4xx.inc(),
            5 => self.upstream_rq_5xx.inc(),
            _ => {}
        }
    }
}

#[derive(Debug)]
pub struct ClusterRuntime {
    pub config: Arc<ClusterConfig>,
    pub hosts: HostSet,
    pub lb: LoadBalancer,
    pub stats: ClusterStats,
    /// Shared by every runtime of this cluster name.
    pub breaker: Arc<CircuitBreaker>,
    /// The endpoints it was built for; with `config`, what decides whether
    /// the next snapshot reuses it.
    endpoints: Option<Arc<EndpointSet>>,
}

impl ClusterRuntime {
    /// Wire protocol for a request that arrived downstream as `downstream`.
    pub fn protocol(&self, downstream: Protocol) -> Protocol {
        match self.config.protocol {
            UpstreamProtocol::Http1 => Protocol::Http1,
            UpstreamProtocol::Http2 => Protocol::Http2,
            UpstreamProtocol::UseDownstream => downstream,
        }
    }

    pub fn pick(&self, hash: Option<u64>) -> Option<Arc<Host>> {
        self.pick_avoiding(hash, &[], 0)
    }

    /// Picks a host that is not ejected by outlier detection and, for up to
    /// `reselect` extra picks, not in `avoid` (the `previous_hosts` retry
    /// predicate). When every pick is ejected the last one is used, like a
    /// balancer in panic.
    pub fn pick_avoiding(
        &self,
        hash: Option<u64>,
        avoid: &[SocketAddr],
        reselect: u32,
    ) -> Option<Arc<Host>> {
        let detecting = self.config.outlier_detection.is_some();
        let ejection_tries = if detecting {
            2 * self.hosts.all.len() + 1
        } else {
            1
        };
        let mut last = None;
        let mut avoided = 0;
        let mut tries = 0;
        while tries < ejection_tries {
            let host = self.lb.pick(&self.hosts, hash)?;
            if detecting
                && host.state.outlier.is_ejected(
                    self.config.outlier_detection.as_ref(),
                    Some(&self.stats.outlier),
                )
            {
                tries += 1;
                last = Some(host);
                continue;
            }
            if avoided < reselect && avoid.contains(&host.state.address) {
                avoided += 1;
                last = Some(host);
                continue;
            }
            return Some(host);
        }
        last
    }

    /// Counts an outcome for the host and ejects it when a threshold fires
    /// and `max_ejection_percent` allows (see `outlier`, resilience).
    pub fn record_outcome(&self, host: &Host, outcome: super::outlier::Outcome) {
        super::outlier::record_outcome(self, host, outcome);
    }
}

impl ClusterRuntime {
    /// Whether it was built from this configuration. The model has no
    /// `PartialEq` (regexes, floats), so the `Debug` renderings are compared;
    /// rendering one and streaming the other against it keeps no rendering
    /// per cluster (they take KiBs each).
    fn built_from(
        &self,
        config: &Arc<ClusterConfig>,
        endpoints: &Option<Arc<EndpointSet>>,
    ) -> bool {
        let same_endpoints = match (&self.endpoints, endpoints) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        (Arc::ptr_eq(&self.config, config) && same_endpoints)
            || debug_eq(&(&self.config, &self.endpoints), &(config, endpoints))
    }
}

fn debug_eq(a: &impl std::fmt::Debug, b: &impl std::fmt::Debug) -> bool {
    use std::fmt::Write as _;
    let rendered = format!("{a:?}");
    let mut rest = DebugPrefix(&rendered);
    // A difference stops the rendering of `b` with an error.
    write!(rest, "{b:?}").is_ok() && rest.0.is_empty()
}

/// What is left of a rendering to match; writing text that does not
/// continue it is an error.
struct DebugPrefix<'a>(&'a str);

impl std::fmt::Write for DebugPrefix<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 = self.0.strip_prefix(s).ok_or(std::fmt::Error)?;
        Ok(())
    }
}

/// Every cluster's runtime, by name.
pub type ClusterMap = HashMap<String, Arc<ClusterRuntime>>;

/// Builds runtimes for `snapshot`, reusing what `previous` has for
/// unchanged clusters and unchanged addresses.
pub fn build_clusters(
    snapshot: &Snapshot,
    previous: &ClusterMap,
    stats: &Stats,
    tls: &Arc<TlsContexts>,
) -> ClusterMap {
    let mut out = ClusterMap::new();
    for (name, config) in &snapshot.clusters {
        let endpoints = snapshot.endpoints_of(config);
        let old = previous.get(name);
        if let Some(old) = old
            && old.built_from(config, &endpoints)
        {
            out.insert(name.clone(), old.clone());
            continue;
        }
        let cluster_stats = ClusterStats::new(stats, name);
        let breaker = match old {
            Some(o) => {
                o.breaker.set_limits(config.circuit_breakers.clone());
                o.breaker.clone()
            }
            None => Arc::new(CircuitBreaker::new(
                config.circuit_breakers.clone(),
                BreakerStats::new(stats, name),
            )),
        };
        let base_settings = PoolSettings {
            connect_timeout: config.connect_timeout,
            // The compiler already put in Envoy's 1 h default; `None` is `0s`
            // (disabled).
            idle_timeout: config.idle_timeout,
            max_requests_per_connection: config.max_requests_per_connection,
            max_connection_duration: config.max_connection_duration,
            tls: None,
        };
        let tls_stats = (config.tls.is_some()
            || config
                .transport_socket_matches
                .iter()
                .any(|m| m.tls.is_some()))
        .then(|| UpstreamTlsStats::new(stats, name));
        let reusable: HashMap<SocketAddr, Arc<HostState>> = old
            .map(|o| {
                o.hosts
                    .all
                    .iter()
                    .map(|h| (h.state.address, h.state.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut hosts = Vec::new();
        if let Some(set) = &endpoints {
            for locality in &set.localities {
                for ep in &locality.endpoints {
                    let mut settings = base_settings.clone();
                    settings.tls = config.transport_for(ep).map(|t| {
                        Arc::new(UpstreamTransport::new(
                            t.clone(),
                            tls.clone(),
                            tls_stats.clone().unwrap_or_default(),
                        ))
                    });
                    let reused = reusable
                        .get(&ep.address)
                        .filter(|s| *s.pool.settings() == settings)
                        .cloned();
                    let state = reused.unwrap_or_else(|| {
                        let host_stats = Arc::new(HostStats::default());
                        Arc::new(HostState {
                            address: ep.address,
                            stats: host_stats.clone(),
                            pool: Pool::new(
                                ep.address,
                                settings.clone(),
                                host_stats,
                                cluster_stats.pool.clone(),
                                breaker.clone(),
                            ),
                            outlier: OutlierState::default(),
                        })
                    });
                    hosts.push(Arc::new(Host {
                        state,
                        weight: ep.weight.max(1),
                        health: ep.health,
                        priority: locality.priority,
                        hostname: ep.hostname.clone(),
                        region: locality.region.clone(),
                        zone: locality.zone.clone(),
                        sub_zone: locality.sub_zone.clone(),
                    }));
                }
            }
        }
        // Pools this configuration no longer uses close their idle
        // connections, so they stop counting against the limits.
        if let Some(o) = old {
            for h in &o.hosts.all {
                if !hosts.iter().any(|n| Arc::ptr_eq(&n.state, &h.state)) {
                    h.state.pool.drain();
                }
            }
        }
        let hosts = HostSet::new(hosts);
        cluster_stats.membership_total.set(hosts.all.len() as i64);
        cluster_stats
            .membership_healthy
            .set(hosts.healthy_count() as i64);
        let lb = LoadBalancer::new(&config.lb_policy, &hosts);
        let runtime = Arc::new(ClusterRuntime {
            config: config.clone(),
            hosts,
            lb,
            stats: cluster_stats,
            breaker,
            endpoints,
        });
        // Outlier detection's `interval` sweeps (resilience).
        super::outlier::spawn_interval_timer(&runtime);
        out.insert(name.clone(), runtime);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    /// A host on 127.0.0.1:`port` for balancer tests.
    pub(crate) fn host(port: u16, weight: u32, priority: u32, health: HealthStatus) -> Arc<Host> {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let stats = Arc::new(HostStats::default());
        let settings = PoolSettings {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: None,
            max_requests_per_connection: None,
            max_connection_duration: None,
            tls: None,
        };
        Arc::new(Host {
            state: Arc::new(HostState {
                address,
                stats: stats.clone(),
                pool: Pool::new(
                    address,
                    settings,
                    stats,
                    PoolClusterStats::default(),
                    Arc::new(CircuitBreaker::new(
                        Default::default(),
                        BreakerStats::default(),
                    )),
                ),
                outlier: OutlierState::default(),
            }),
            weight,
            health,
            priority,
            hostname: String::new(),
            region: String::new(),
            zone: String::new(),
            sub_zone: String::new(),
        })
    }

    #[test]
    fn debug_renderings_compare_whole() {
        assert!(debug_eq(&("a", 1), &("a", 1)));
        assert!(!debug_eq(&("a", 1), &("a", 12)));
        assert!(!debug_eq(&("a", 12), &("a", 1)));
        assert!(!debug_eq(&"", &"x"));
    }

    #[tokio::test]
    async fn an_equal_configuration_keeps_the_runtime_and_a_changed_one_rebuilds_it() {
        use envoy_types::pb::envoy::config::cluster::v3::Cluster;
        let snapshot = |port: u16| {
            let c: Cluster = crate::xds_json::from_str(&format!(
                "name: c\ntype: STATIC\nload_assignment: {{cluster_name: c, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]}}"
            ))
            .unwrap();
            crate::compile::compile_snapshot(&[], &[], &[c], &[]).unwrap()
        };
        let stats = Stats::default();
        let tls = Arc::new(TlsContexts::new(Arc::new(crate::tls::SecretStore::new())));
        let first = build_clusters(&snapshot(5001), &ClusterMap::new(), &stats, &tls);
        // Compiled again: new allocations, the same content.
        let again = build_clusters(&snapshot(5001), &first, &stats, &tls);
        assert!(Arc::ptr_eq(&first["c"], &again["c"]));
        let moved = build_clusters(&snapshot(5002), &again, &stats, &tls);
        assert!(!Arc::ptr_eq(&again["c"], &moved["c"]));
        let ports: Vec<u16> = moved["c"]
            .hosts
            .all
            .iter()
            .map(|h| h.state.address.port())
            .collect();
        assert_eq!(ports, [5002]);
    }
}
