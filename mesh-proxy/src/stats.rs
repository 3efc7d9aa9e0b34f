//! Counters and gauges, named as Envoy names them, rendered for `/stats`
//! (text) and `/stats/prometheus`.
//!
//! A stat is registered once by the subsystem that owns it and updated
//! through a cheap handle; registering the same name again returns the same
//! handle, so counters survive configuration swaps.

use std::collections::BTreeMap;
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
    pub name: String,
}

impl Scope {
    pub fn cluster(name: &str) -> Scope {
        Scope {
            kind: "cluster",
            name: name.to_string(),
        }
    }
    pub fn http(stat_prefix: &str) -> Scope {
        Scope {
            kind: "http",
            name: stat_prefix.to_string(),
        }
    }
    pub fn tcp(stat_prefix: &str) -> Scope {
        Scope {
            kind: "tcp",
            name: stat_prefix.to_string(),
        }
    }
    pub fn listener(address: &str) -> Scope {
        Scope {
            kind: "listener",
            name: address.to_string(),
        }
    }
    pub fn server() -> Scope {
        Scope {
            kind: "server",
            name: String::new(),
        }
    }

    fn text_name(&self, stat: &str) -> String {
        if self.name.is_empty() {
            format!("{}.{stat}", self.kind)
        } else {
            format!("{}.{}.{stat}", self.kind, self.name)
        }
    }

    fn label(&self) -> Option<&'static str> {
        match self.kind {
            "cluster" => Some("envoy_cluster_name"),
            "http" => Some("envoy_http_conn_manager_prefix"),
            "tcp" => Some("envoy_tcp_prefix"),
            "listener" => Some("envoy_listener_address"),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Entry {
    scope: Scope,
    stat: String,
    metric: Metric,
}

/// The registry. Clones share it, so a part that names counters only as it
/// meets them (`ssl.ciphers.<suite>`) keeps a handle instead of a reference.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    entries: Arc<Mutex<BTreeMap<String, Entry>>>,
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
        let name = scope.text_name(stat);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .entry(name)
            .or_insert_with(|| Entry {
                scope: scope.clone(),
                stat: stat.to_string(),
                metric: make(),
            })
            .metric
            .clone()
    }

    /// The value of a stat by its text name, for tests and the admin page.
    pub fn value(&self, name: &str) -> Option<i64> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(name).map(|e| match &e.metric {
            Metric::Counter(c) => c.get() as i64,
            Metric::Gauge(g) => g.get(),
        })
    }

    /// Envoy's `/stats` text: `name: value`, sorted.
    pub fn render_text(&self) -> String {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, e) in entries.iter() {
            let v = match &e.metric {
                Metric::Counter(c) => c.get() as i64,
                Metric::Gauge(g) => g.get(),
            };
            let _ = writeln!(out, "{name}: {v}");
        }
        out
    }

    /// Prometheus text exposition, one `# TYPE` per metric family.
    pub fn render_prometheus(&self) -> String {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut families: BTreeMap<String, (&'static str, Vec<String>)> = BTreeMap::new();
        for e in entries.values() {
            let family = sanitize(&format!("envoy_{}_{}", e.scope.kind, e.stat));
            let (kind, v) = match &e.metric {
                Metric::Counter(c) => ("counter", c.get() as i64),
                Metric::Gauge(g) => ("gauge", g.get()),
            };
            let labels = match e.scope.label() {
                Some(label) => format!("{{{label}=\"{}\"}}", escape_label(&e.scope.name)),
                None => String::new(),
            };
            families
                .entry(family.clone())
                .or_insert_with(|| (kind, Vec::new()))
                .1
                .push(format!("{family}{labels} {v}"));
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
}
