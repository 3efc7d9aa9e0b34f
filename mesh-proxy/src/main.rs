//! `mesh-proxy --config bootstrap.yaml [--concurrency N] [--ca-address HOST:PORT ...]`:
//! load the bootstrap, obtain the workload certificate when a CA is given,
//! build the proxy on a runtime of N worker threads, log what it bound, serve
//! until a signal or `/quitquitquit`.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use mesh_proxy::bootstrap::load_bootstrap;
use mesh_proxy::http::reason_header::ReasonHeader;
use mesh_proxy::identity::{
    self, DEFAULT_TRUST_DOMAIN, DeferredSink, IdentityConfig, WorkloadIdentity, parse_duration,
};
use mesh_proxy::logging;
use mesh_proxy::server::{ProxyConfig, build};
use mesh_proxy::xds::AdsClientConfig;

#[derive(Debug, Parser)]
#[command(
    name = "mesh-proxy",
    version,
    about = "The mesh's sidecar and gateway proxy (Envoy xDS v3)"
)]
struct Args {
    /// Envoy v3 bootstrap, YAML or JSON.
    #[arg(short = 'c', long = "config")]
    config: PathBuf,
    /// Overrides the bootstrap's `admin.address` (e.g. 127.0.0.1:15000).
    #[arg(long)]
    admin_address: Option<SocketAddr>,
    /// trace, debug, info, warning, error, critical or off.
    #[arg(short = 'l', long, default_value = "info")]
    log_level: String,
    /// HOST:PORT of the mesh CA (the control plane's 15012); enables the
    /// workload identity (`default` and `ROOTCA` secrets).
    #[arg(long, requires = "ca_root_cert")]
    ca_address: Option<String>,
    /// PEM roots that verify the CA server; also part of `ROOTCA`.
    #[arg(long, requires = "ca_address")]
    ca_root_cert: Option<PathBuf>,
    /// File holding the bearer token for the CA, re-read for every request.
    #[arg(long, requires = "ca_address")]
    token_file: Option<PathBuf>,
    /// Trust domain of the workload's SPIFFE ID.
    #[arg(long, default_value = DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// Requested certificate validity (e.g. 30s, 24h); default: the CA's.
    #[arg(long, value_parser = parse_duration)]
    cert_ttl: Option<Duration>,
    /// How long start waits for the first certificate before failing.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    ca_timeout: Duration,
    /// Worker threads serving connections (Envoy's `--concurrency`); default:
    /// the CPUs this process may run on.
    #[arg(long)]
    concurrency: Option<NonZeroUsize>,
    /// Who sees why a local reply failed (`x-mesh-reason` and a detailed
    /// body): `mesh` hides it at the edge (connection managers with
    /// `use_remote_address: true`), `always` shows it to every client,
    /// `never` to none.
    #[arg(long, value_enum, default_value_t = ReasonHeader::Mesh)]
    reason_header: ReasonHeader,
}

impl Args {
    /// Worker threads to run: `--concurrency`, else one per CPU available to
    /// the process (which honours `taskset` and cgroup CPU sets), as Envoy
    /// defaults to one worker per hardware thread.
    fn worker_threads(&self) -> usize {
        self.concurrency
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get)
    }

    /// The identity manager's settings, when `--ca-address` is given.
    fn identity_config(&self) -> Option<IdentityConfig> {
        let (address, roots) = (self.ca_address.as_ref()?, self.ca_root_cert.as_ref()?);
        Some(IdentityConfig {
            token_file: self.token_file.clone(),
            trust_domain: self.trust_domain.clone(),
            cert_ttl: self.cert_ttl,
            ca_timeout: self.ca_timeout,
            ..IdentityConfig::new(address, roots)
        })
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Built by hand rather than with `#[tokio::main]` so that the worker count
    // is a flag, not tokio's TOKIO_WORKER_THREADS environment variable.
    // One worker is a runtime on this thread: no work-stealing queues, no
    // cross-thread wake-ups, and the sidecar's usual size (Linkerd's proxy
    // does the same with one core).
    let workers = args.worker_threads();
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let runtime = builder
        .thread_name("mesh-worker")
        .enable_all()
        .build()
        .context("start the runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let log_control = logging::install(&args.log_level, std::io::stderr).context("--log-level")?;
    match mesh_proxy::fd_limit::raise_to_hard_limit() {
        Ok(l) if l.after > l.before => {
            tracing::info!(from = l.before, to = l.after, "open file limit raised")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the open file limit: {e}"),
    }
    let bootstrap = load_bootstrap(&args.config)?;

    // The certificate comes first, so that TLS listeners never serve without it.
    let workload = match args.identity_config() {
        Some(config) => {
            let id = identity::workload_identity(&bootstrap.node, &config.trust_domain)?;
            tracing::info!(identity = %id, ca = %config.ca_address, "requesting the workload certificate");
            let sink = Arc::new(DeferredSink::default());
            let workload = WorkloadIdentity::start(config, id, sink.clone())
                .await
                .context("workload identity")?;
            Some((workload, sink))
        }
        None => None,
    };

    // Taken before the bootstrap moves into the proxy's configuration, so
    // that no second copy of it lives as long as the process.
    let ads_config = AdsClientConfig::from_bootstrap(&bootstrap)?;
    let mut config = ProxyConfig::from_bootstrap(bootstrap);
    if let Some(admin) = args.admin_address {
        config.admin_address = Some(admin);
    }
    config.logging = Some(Arc::new(log_control));
    config.reason_header = args.reason_header;
    let bound = build(config).await?;
    // Handlers first, then the lines that tell a supervisor the proxy is up: a stop it
    // sends once it read them must drain, not kill.
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    if let Some((_, sink)) = &workload {
        sink.attach(bound.proxy.secrets().clone());
    }
    if let Some(admin) = bound.admin_addr {
        tracing::info!(address = %admin, "admin listening");
    }
    for (name, addr) in &bound.listeners {
        tracing::info!(listener = %name, address = %addr, "listening");
    }
    let proxy = bound.proxy;
    // Keeps the control-plane link alive while the proxy runs.
    let ads = ads_config.map(|config| mesh_proxy::xds::start_client(config, &proxy));
    if ads.is_some() {
        tracing::info!("ADS client started");
    }
    tokio::select! {
        _ = int.recv() => tracing::info!("interrupted; stopping"),
        _ = term.recv() => tracing::info!("terminated; stopping"),
        _ = proxy.stopped() => tracing::info!("quitquitquit; stopping"),
    }
    drop(ads);
    drop(workload);
    proxy.shutdown();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(["mesh-proxy", "-c", "bootstrap.yaml"].iter().chain(extra))
    }

    #[test]
    fn concurrency_sets_the_worker_count() {
        assert_eq!(parse(&["--concurrency", "3"]).unwrap().worker_threads(), 3);
        assert_eq!(parse(&["--concurrency=1"]).unwrap().worker_threads(), 1);
    }

    #[test]
    fn concurrency_defaults_to_the_available_cpus() {
        let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        assert_eq!(parse(&[]).unwrap().worker_threads(), cpus);
    }

    #[test]
    fn concurrency_must_be_a_positive_number() {
        for bad in ["0", "-1", "two"] {
            let arg = format!("--concurrency={bad}");
            let err = parse(&[&arg]).unwrap_err().to_string();
            assert!(err.contains("--concurrency"), "{bad}: {err}");
        }
    }
}
