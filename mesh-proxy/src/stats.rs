//! Counters and gauges, named as Envoy names them, rendered for `/stats`
//! (text) and `/stats/prometheus`.
//!
//! A stat is registered once by the subsystem that owns it and updated
//! through a cheap handle; registering the same name again returns the same
//! handle, so counters survive configuration swaps.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone)]
enum Metric {
    Counter(Counter),
    Gauge(Gauge),
}

/// Where a stat belongs, so Prometheus output can carry it as a label the
/// way Envoy's tag extraction does (`cluster.NAME.x` becomes
/// `envoy_cluster_x{envoy_cluster_name="NAME"}`).
#[derive(Debug, Clone)]
pub struct Scope {
    /// `cluster`, `http`, `listener`, `tcp` or `server`.
    pub kind: &'static str,
    /// The tag value (cluster name, stat prefix, ...); empty for `server`.
    /// Shared: every stat of the scope points at one copy.
    pub name: Arc<str>,
}

impl Scope {
    pub fn cluster(name: &str) -> Scope {
        Scope {
            kind: "cluster",
            name: name.into(),
        }
    }
    pub fn http(stat_prefix: &str) -> Scope {
        Scope {
            kind: "http",
            name: stat_prefix.into(),
        }
    }
    pub fn tcp(stat_prefix: &str) -> Scope {
        Scope {
            kind: "tcp",
            name: stat_prefix.into(),
        }
    }
    pub fn listener(address: &str) -> Scope {
        Scope {
            kind: "listener",
            name: address.into(),
        }
    }
    pub fn server() -> Scope {
        Scope {
            kind: "server",
            name: "".into(),
        }
    }
}

fn label_of(kind: &str) -> Option<&'static str> {
    match kind {
        "cluster" => Some("envoy_cluster_name"),
        "http" => Some("envoy_http_conn_manager_prefix"),
        "tcp" => Some("envoy_tcp_prefix"),
        "listener" => Some("envoy_listener_address"),
        _ => None,
    }
}

/// Envoy's text name: `kind.name.stat`, or `kind.stat` without a name.
fn text_name(kind: &str, name: &str, stat: &str) -> String {
    if name.is_empty() {
        format!("{kind}.{stat}")
    } else {
        format!("{kind}.{name}.{stat}")
    }
}

/// A stat's identity: (kind, scope name, stat name). The strings are
/// interned, so a thousand clusters with 35 stats each hold each stat name
/// once and each cluster name once, not 35,000 full names.
type Key = (&'static str, Arc<str>, Arc<str>);

#[derive(Debug, Default)]
struct Registry {
    metrics: BTreeMap<Key, Metric>,
    strings: HashSet<Arc<str>>,
}

impl Registry {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return shared.clone();
        }
        let shared: Arc<str> = s.into();
        self.strings.insert(shared.clone());
        shared
    }

    /// Every stat with its text name, sorted by that name as Envoy's
    /// `/stats` is (tuple order differs when scope names contain dots).
    fn by_text_name(&self) -> Vec<(String, &Key, &Metric)> {
        let mut all: Vec<_> = self
            .metrics
            .iter()
            .map(|(k, m)| (text_name(k.0, &k.1, &k.2), k, m))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

fn read(metric: &Metric) -> i64 {
    match metric {
        Metric::Counter(c) => c.get() as i64,
        Metric::Gauge(g) => g.get(),
    }
}

/// The registry. Clones share it, so a part that names counters only as it
/// meets them (`ssl.ciphers.<suite>`) keeps a handle instead of a reference.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    registry: Arc<Mutex<Registry>>,
}

impl Stats {
    pub fn counter(&self, scope: &Scope, stat: &str) -> Counter {
        match self.register(scope, stat, || Metric::Counter(Counter::default())) {
            Metric::Counter(c) => c,
            // A name registered as a gauge elsewhere: give a detached
            // counter rather than fail the request path.
            Metric::Gauge(_) => Counter::default(),
        }
    }

    pub fn gauge(&self, scope: &Scope, stat: &str) -> Gauge {
        match self.register(scope, stat, || Metric::Gauge(Gauge::default())) {
            Metric::Gauge(g) => g,
            Metric::Counter(_) => Gauge::default(),
        }
    }

    fn register(&self, scope: &Scope, stat: &str, make: impl FnOnce() -> Metric) -> Metric {
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let name = registry.intern(&scope.name);
        let stat = registry.intern(stat);
        registry
            .metrics
            .entry((scope.kind, name, stat))
            .or_insert_with(make)
            .clone()
    }

    /// Forgets every stat of `scope` (a removed cluster). Handles still held
    /// keep counting into their own detached cells.
    pub fn remove_scope(&self, scope: &Scope) {
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let from: Key = (scope.kind, scope.name.clone(), Arc::from(""));
        let doomed: Vec<Key> = registry
            .metrics
            .range(from..)
            .take_while(|(k, _)| k.0 == scope.kind && k.1 == scope.name)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &doomed {
            registry.metrics.remove(key);
        }
        // The name itself, once nothing else refers to it (the key copies are
        // gone; one reference is the interner's own).
        if let Some(name) = doomed.first().map(|k| k.1.clone()) {
            drop(doomed);
            if Arc::strong_count(&name) == 2 {
                registry.strings.remove(&*name);
            }
        }
    }

    /// The value of a stat by its text name, for tests and the admin page.
    pub fn value(&self, name: &str) -> Option<i64> {
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        registry
            .metrics
            .iter()
            .find(|(k, _)| text_name(k.0, &k.1, &k.2) == name)
            .map(|(_, m)| read(m))
    }

    /// Envoy's `/stats` text: `name: value`, sorted.
    pub fn render_text(&self) -> String {
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, _, metric) in registry.by_text_name() {
            let _ = writeln!(out, "{name}: {}", read(metric));
        }
        out
    }

    /// Prometheus text exposition, one `# TYPE` per metric family.
    pub fn render_prometheus(&self) -> String {
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let mut families: BTreeMap<String, (&'static str, Vec<String>)> = BTreeMap::new();
        for (_, (kind, name, stat), metric) in registry.by_text_name() {
            let family = sanitize(&format!("envoy_{kind}_{stat}"));
            let metric_kind = match metric {
                Metric::Counter(_) => "counter",
                Metric::Gauge(_) => "gauge",
            };
            let labels = match label_of(kind) {
                Some(label) => format!("{{{label}=\"{}\"}}", escape_label(name)),
                None => String::new(),
            };
            families
                .entry(family.clone())
                .or_insert_with(|| (metric_kind, Vec::new()))
                .1
                .push(format!("{family}{labels} {}", read(metric)));
        }
        let mut out = String::new();
        for (family, (kind, lines)) in families {
            let _ = writeln!(out, "# TYPE {family} {kind}");
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_same_counter_and_prometheus_labels() {
        let stats = Stats::default();
        let scope = Scope::cluster("outbound|80||hello");
        stats.counter(&scope, "upstream_rq_total").inc();
        stats.counter(&scope, "upstream_rq_total").inc();
        assert_eq!(
            stats.value("cluster.outbound|80||hello.upstream_rq_total"),
            Some(2)
        );
        let prom = stats.render_prometheus();
        assert!(
            prom.contains("# TYPE envoy_cluster_upstream_rq_total counter"),
            "{prom}"
        );
        assert!(
            prom.contains(
                "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"outbound|80||hello\"} 2"
            ),
            "{prom}"
        );
        assert!(
            stats
                .render_text()
                .contains("cluster.outbound|80||hello.upstream_rq_total: 2")
        );
    }

    #[test]
    fn text_is_sorted_by_full_name_and_names_are_shared() {
        let stats = Stats::default();
        // Tuple order would put "a" before "a.b"; Envoy sorts full names.
        stats.counter(&Scope::cluster("a"), "x").inc();
        stats.counter(&Scope::cluster("a.b"), "x").add(2);
        stats.gauge(&Scope::server(), "live").set(1);
        assert_eq!(
            stats.render_text(),
            "cluster.a.b.x: 2\ncluster.a.x: 1\nserver.live: 1\n"
        );
        for i in 0..100 {
            stats.counter(&Scope::cluster(&format!("svc-{i}")), "upstream_rq_total");
        }
        let registry = stats.registry.lock().unwrap();
        // 103 stats, but each distinct string once: a, a.b, x, "", live,
        // upstream_rq_total and the 100 cluster names.
        assert_eq!(registry.metrics.len(), 103);
        assert_eq!(registry.strings.len(), 106);
    }

    #[test]
    fn a_removed_scope_takes_its_stats_and_its_name() {
        let stats = Stats::default();
        let gone = Scope::cluster("gone");
        let kept = Scope::cluster("kept");
        let held = stats.counter(&gone, "upstream_rq_total");
        held.inc();
        stats.gauge(&gone, "upstream_cx_active").set(3);
        stats.counter(&kept, "upstream_rq_total").inc();
        stats.counter(&Scope::cluster("gone.x"), "y").inc();
        stats.remove_scope(&gone);
        assert_eq!(stats.value("cluster.gone.upstream_rq_total"), None);
        assert_eq!(stats.value("cluster.gone.upstream_cx_active"), None);
        assert_eq!(stats.value("cluster.kept.upstream_rq_total"), Some(1));
        assert_eq!(stats.value("cluster.gone.x.y"), Some(1));
        // A handle still held counts on, detached; nothing panics.
        held.inc();
        assert!(!stats.render_text().contains("cluster.gone.upstream"));
        let registry = stats.registry.lock().unwrap();
        assert!(!registry.strings.contains("gone"));
        assert!(registry.strings.contains("kept"));
        drop(registry);
        // Registered again, it starts from zero, as Envoy's does.
        stats.counter(&gone, "upstream_rq_total").inc();
        assert_eq!(stats.value("cluster.gone.upstream_rq_total"), Some(1));
    }
}
