//! Runtime log levels, per component, as Envoy's `/logging` exposes them.
//!
//! Components have Envoy's names (`router`, `upstream`, `pool`, ...) and map
//! to this crate's tracing targets. Changing a level rebuilds the tracing
//! filter through a reload handle, when the binary installed one.
//!
//! Every name of Envoy's logger list ([`ENVOY_LOGGERS`]) is accepted, so that
//! commands written for Envoy work as typed (Istio's tutorial sets
//! `connection:debug,conn_handler:debug,filter:debug,router:debug,http:debug,upstream:debug`);
//! a name mesh-proxy logs nothing under is accepted without effect, and the
//! listing names those apart from the active loggers, so nobody waits for
//! lines that will never come.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Envoy logger names and the tracing targets that implement them. A target
/// belongs to one component only (the most specific directive wins).
pub const COMPONENTS: &[(&str, &[&str])] = &[
    ("admin", &["mesh_proxy::admin"]),
    (
        "config",
        &[
            "mesh_proxy::server",
            "mesh_proxy::bootstrap",
            "mesh_proxy::compile",
            // Envoy logs its xDS subscriptions under `config`.
            "mesh_proxy::xds",
        ],
    ),
    // Envoy logs TLS handshakes under `connection`.
    ("connection", &["mesh_proxy::listener", "mesh_proxy::tls"]),
    ("filter", &["mesh_proxy::filter_chain"]),
    ("http", &["mesh_proxy::http::conn_manager"]),
    ("main", &["mesh_proxy"]),
    ("pool", &["mesh_proxy::upstream::pool"]),
    (
        "router",
        &["mesh_proxy::http::forward", "mesh_proxy::http::router"],
    ),
    // The workload certificate: fetched from the CA and rotated.
    ("secret", &["mesh_proxy::identity"]),
    ("stats", &["mesh_proxy::stats"]),
    ("tcp", &["mesh_proxy::tcp_proxy"]),
    ("upstream", &["mesh_proxy::upstream"]),
];

/// Envoy's logger names (`ALL_LOGGER_IDS` in Envoy's
/// `source/common/common/logger.h`): each is accepted by `/logging`; those not
/// in [`COMPONENTS`] have nothing to log in mesh-proxy.
pub const ENVOY_LOGGERS: &[&str] = &[
    "admin",
    "alternate_protocols_cache",
    "aws",
    "assert",
    "backtrace",
    "basic_auth",
    "cache_filter",
    "client",
    "config",
    "connection",
    "conn_handler",
    "decompression",
    "dns",
    "dubbo",
    "envoy_bug",
    "ext_authz",
    "ext_proc",
    "rocketmq",
    "file",
    "filter",
    "forward_proxy",
    "geolocation",
    "grpc",
    "happy_eyeballs",
    "hc",
    "health_checker",
    "http",
    "http2",
    "hystrix",
    "init",
    "io",
    "jwt",
    "kafka",
    "key_value_store",
    "lua",
    "main",
    "matcher",
    "misc",
    "mongo",
    "multi_connection",
    "oauth2",
    "quic",
    "quic_stream",
    "pool",
    "rate_limit_quota",
    "rbac",
    "rds",
    "redis",
    "router",
    "runtime",
    "stats",
    "secret",
    "tap",
    "testing",
    "thrift",
    "tracing",
    "upstream",
    "udp",
    "wasm",
    "websocket",
    "golang",
];

/// The heading of the listing's line of loggers accepted without effect.
pub const WITHOUT_EFFECT: &str = "accepted, nothing to log in mesh-proxy:";

pub const LEVELS: &[&str] = &[
    "trace", "debug", "info", "warning", "error", "critical", "off",
];

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error(
        "unknown log level \"{0}\" (expected one of trace, debug, info, warning, error, critical, off)"
    )]
    UnknownLevel(String),
    #[error("unknown logger \"{0}\"")]
    UnknownLogger(String),
    #[error("malformed logger spec \"{0}\" (expected NAME:LEVEL)")]
    Malformed(String),
    #[error("cannot apply log filter: {0}")]
    Apply(String),
}

type Applier = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The levels in force and how to apply them.
pub struct LogControl {
    levels: Mutex<BTreeMap<&'static str, &'static str>>,
    apply: Option<Applier>,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl")
            .field("levels", &self.levels)
            .finish_non_exhaustive()
    }
}

impl LogControl {
    /// `apply` receives an `EnvFilter` directive string on every change.
    pub fn new(level: &str, apply: Option<Applier>) -> Result<LogControl, LoggingError> {
        let level = canonical(level)?;
        let levels = COMPONENTS.iter().map(|(name, _)| (*name, level)).collect();
        let control = LogControl {
            levels: Mutex::new(levels),
            apply,
        };
        Ok(control)
    }

    /// A control that only records levels (no subscriber to reload).
    pub fn detached() -> LogControl {
        LogControl {
            levels: Mutex::new(COMPONENTS.iter().map(|(name, _)| (*name, "info")).collect()),
            apply: None,
        }
    }

    /// Envoy's listing: `active loggers:` then `  NAME: LEVEL` lines; then, on
    /// one line, Envoy's loggers that are accepted but have nothing to log here.
    pub fn render(&self) -> String {
        let levels = self.levels.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::from("active loggers:\n");
        for (name, level) in levels.iter() {
            out.push_str(&format!("  {name}: {level}\n"));
        }
        let idle: Vec<&str> = ENVOY_LOGGERS
            .iter()
            .copied()
            .filter(|n| !levels.contains_key(n))
            .collect();
        out.push_str(&format!("{WITHOUT_EFFECT} {}\n", idle.join(", ")));
        out
    }

    pub fn level_of(&self, component: &str) -> Option<&'static str> {
        self.levels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(component)
            .copied()
    }

    /// Sets every component to `level`.
    pub fn set_all(&self, level: &str) -> Result<(), LoggingError> {
        let level = canonical(level)?;
        {
            let mut levels = self.levels.lock().unwrap_or_else(|e| e.into_inner());
            for v in levels.values_mut() {
                *v = level;
            }
        }
        self.reapply()
    }

    /// `router:debug,upstream:trace`. Every name and level is checked before
    /// anything changes; Envoy's loggers without a component here are
    /// accepted and change nothing.
    pub fn set_paths(&self, spec: &str) -> Result<(), LoggingError> {
        let mut changes = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, level) = part
                .split_once(':')
                .ok_or_else(|| LoggingError::Malformed(part.into()))?;
            let level = canonical(level)?;
            if let Some(component) = component(name)? {
                changes.push((component, level));
            }
        }
        {
            let mut levels = self.levels.lock().unwrap_or_else(|e| e.into_inner());
            for (name, level) in changes {
                levels.insert(name, level);
            }
        }
        self.reapply()
    }

    /// Sets one component, as in Envoy's `POST /logging?router=debug`.
    pub fn set_one(&self, name: &str, level: &str) -> Result<(), LoggingError> {
        self.set_paths(&format!("{name}:{level}"))
    }

    /// The `EnvFilter` directives for the levels in force.
    pub fn directives(&self) -> String {
        let levels = self.levels.lock().unwrap_or_else(|e| e.into_inner());
        let main = levels.get("main").copied().unwrap_or("info");
        let mut parts = vec![format!("warn,mesh_proxy={}", tracing_level(main))];
        for (name, targets) in COMPONENTS {
            if *name == "main" {
                continue;
            }
            let level = levels.get(name).copied().unwrap_or("info");
            for target in *targets {
                parts.push(format!("{target}={}", tracing_level(level)));
            }
        }
        parts.join(",")
    }

    fn reapply(&self) -> Result<(), LoggingError> {
        match &self.apply {
            Some(apply) => apply(&self.directives()).map_err(LoggingError::Apply),
            None => Ok(()),
        }
    }

    /// Applies the current levels once (after installing a subscriber).
    pub fn apply_now(&self) -> Result<(), LoggingError> {
        self.reapply()
    }
}

/// The component of a logger name; `None` for an Envoy logger with nothing
/// to log here.
fn component(name: &str) -> Result<Option<&'static str>, LoggingError> {
    if let Some(c) = COMPONENTS.iter().map(|(n, _)| *n).find(|n| *n == name) {
        return Ok(Some(c));
    }
    if ENVOY_LOGGERS.contains(&name) {
        return Ok(None);
    }
    Err(LoggingError::UnknownLogger(name.into()))
}

fn canonical(level: &str) -> Result<&'static str, LoggingError> {
    let level = match level.to_ascii_lowercase().as_str() {
        "warn" => "warning",
        "err" => "error",
        other => {
            return LEVELS
                .iter()
                .copied()
                .find(|l| *l == other)
                .ok_or_else(|| LoggingError::UnknownLevel(level.into()));
        }
    };
    Ok(level)
}

fn tracing_level(level: &str) -> &'static str {
    match level {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warning" => "warn",
        "error" | "critical" => "error",
        _ => "off",
    }
}

/// Installs a global fmt subscriber whose filter `/logging` can change, and
/// returns the control for it. `make_writer` chooses where lines go.
pub fn install<W>(level: &str, make_writer: W) -> Result<LogControl, LoggingError>
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, fmt, reload};

    let probe = LogControl::new(level, None)?;
    let filter =
        EnvFilter::try_new(probe.directives()).map_err(|e| LoggingError::Apply(e.to_string()))?;
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_writer(make_writer).with_ansi(false))
        .try_init()
        .map_err(|e| LoggingError::Apply(e.to_string()))?;
    let apply: Applier = Box::new(move |directives: &str| {
        let filter = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    });
    LogControl::new(level, Some(apply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_change_and_render() {
        let c = LogControl::new("info", None).unwrap();
        c.set_paths("router:debug,upstream:trace").unwrap();
        assert_eq!(c.level_of("router"), Some("debug"));
        assert!(c.render().contains("  upstream: trace\n"));
        assert!(c.directives().contains("mesh_proxy::http::forward=debug"));
        c.set_all("warn").unwrap();
        assert_eq!(c.level_of("router"), Some("warning"));
        assert!(matches!(
            c.set_paths("nope:debug"),
            Err(LoggingError::UnknownLogger(_))
        ));
        assert!(matches!(
            c.set_paths("router:info,nope:debug"),
            Err(LoggingError::UnknownLogger(_))
        ));
        assert_eq!(c.level_of("router"), Some("warning"), "nothing changed");
        assert!(matches!(
            c.set_all("loud"),
            Err(LoggingError::UnknownLevel(_))
        ));
    }

    #[test]
    fn envoys_logger_list_is_accepted_and_the_idle_ones_are_named() {
        let c = LogControl::new("info", None).unwrap();
        // Istio's tutorial, as typed.
        c.set_paths(
            "connection:debug,conn_handler:debug,filter:debug,router:debug,http:debug,upstream:debug",
        )
        .unwrap();
        for name in ["connection", "filter", "router", "http", "upstream"] {
            assert_eq!(c.level_of(name), Some("debug"), "{name}");
        }
        assert!(c.directives().contains("mesh_proxy::tls=debug"));
        let listing = c.render();
        assert!(!listing.contains("  conn_handler:"), "{listing}");
        let idle = listing
            .lines()
            .find_map(|l| l.strip_prefix(WITHOUT_EFFECT))
            .unwrap_or_else(|| panic!("{listing}"));
        assert!(idle.contains(" conn_handler,"), "{listing}");
        assert!(!idle.contains("router"), "{listing}");
        c.set_one("rbac", "trace").unwrap();
        // Every component is one of Envoy's names, but `tcp` (mesh-proxy's own).
        for (name, _) in COMPONENTS {
            assert!(ENVOY_LOGGERS.contains(name) || *name == "tcp", "{name}");
        }
    }
}
