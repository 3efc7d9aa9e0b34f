//! Control plane metrics in Prometheus text format, named as Istio's `pilot_*`
//! metrics so existing dashboards read them (prometheus-client adds the
//! OpenMetrics `_total` suffix to counters).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `type` label: `cds`, `eds`, `lds`, `rds` as Istio writes it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

impl TypeLabel {
    pub fn new(t: &str) -> Self {
        TypeLabel {
            r#type: t.to_string(),
        }
    }
}

/// Every metric of the control plane.
pub struct Metrics {
    registry: Registry,
    /// Responses sent, per type (`pilot_xds_pushes`).
    pub pushes: Family<TypeLabel, Counter>,
    /// Time to compute and send one push to one proxy (`pilot_xds_push_time`).
    pub push_time: Histogram,
    /// From a configuration change being noticed to the push reaching the
    /// proxy's stream (`pilot_proxy_convergence_time`).
    pub convergence_time: Histogram,
    /// Connected ADS streams (`pilot_xds`).
    pub connected: Gauge,
    /// NACKs received, per type (`pilot_total_xds_rejects`).
    pub rejects: Family<TypeLabel, Counter>,
    /// Configuration files whose latest version is rejected.
    pub config_errors: Gauge,
    /// Configuration generations built.
    pub config_generations: Counter,
    /// Workload certificates issued for SDS (`citadel_server_success_cert_issuance_count`'s
    /// counterpart for certificates the control plane generates itself).
    pub sds_certificates_issued: Counter,
    /// ADS streams refused because they asked for secrets they may not have.
    pub sds_refusals: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let pushes = Family::<TypeLabel, Counter>::default();
        let push_time = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let convergence_time = Histogram::new(exponential_buckets(0.01, 2.0, 12));
        let connected = Gauge::default();
        let rejects = Family::<TypeLabel, Counter>::default();
        let config_errors = Gauge::default();
        let config_generations = Counter::default();
        let sds_certificates_issued = Counter::default();
        let sds_refusals = Counter::default();
        registry.register(
            "pilot_xds_pushes",
            "xDS responses sent, by type",
            pushes.clone(),
        );
        registry.register(
            "pilot_xds_push_time",
            "Seconds to translate and send one push to one proxy",
            push_time.clone(),
        );
        registry.register(
            "pilot_proxy_convergence_time",
            "Seconds from a configuration change to its push to a proxy",
            convergence_time.clone(),
        );
        registry.register("pilot_xds", "Connected xDS streams", connected.clone());
        registry.register(
            "pilot_total_xds_rejects",
            "xDS responses rejected (NACKed) by proxies, by type",
            rejects.clone(),
        );
        registry.register(
            "mesh_config_errors",
            "Configuration files whose latest version is rejected",
            config_errors.clone(),
        );
        registry.register(
            "mesh_config_generations",
            "Configuration generations built",
            config_generations.clone(),
        );
        registry.register(
            "mesh_sds_certificates_issued",
            "Workload certificates generated and signed for SDS",
            sds_certificates_issued.clone(),
        );
        registry.register(
            "mesh_sds_refusals",
            "ADS streams refused for asking secrets without the right to them",
            sds_refusals.clone(),
        );
        Metrics {
            registry,
            pushes,
            push_time,
            convergence_time,
            connected,
            rejects,
            config_errors,
            config_generations,
            sds_certificates_issued,
            sds_refusals,
        }
    }

    /// A generation of configuration was built with `errors` files rejected.
    pub fn config_loaded(&self, errors: usize) {
        self.config_generations.inc();
        self.config_errors.set(errors as i64);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
