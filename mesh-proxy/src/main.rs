//! `mesh-proxy --config bootstrap.yaml`: load the bootstrap, build the
//! proxy, log what it bound, serve until a signal or `/quitquitquit`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use mesh_proxy::bootstrap::load_bootstrap;
use mesh_proxy::logging;
use mesh_proxy::server::{ProxyConfig, build};

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let log_control = logging::install(&args.log_level, std::io::stderr).context("--log-level")?;
    let bootstrap = load_bootstrap(&args.config)?;
    let mut config = ProxyConfig::from_bootstrap(bootstrap.clone());
    if let Some(admin) = args.admin_address {
        config.admin_address = Some(admin);
    }
    config.logging = Some(Arc::new(log_control));
    let bound = build(config).await?;
    if let Some(admin) = bound.admin_addr {
        tracing::info!(address = %admin, "admin listening");
    }
    for (name, addr) in &bound.listeners {
        tracing::info!(listener = %name, address = %addr, "listening");
    }
    let proxy = bound.proxy;
    // Keeps the control-plane link alive while the proxy runs.
    let ads = mesh_proxy::xds::start(&bootstrap, &proxy)?;
    if ads.is_some() {
        tracing::info!("ADS client started");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
        _ = term.recv() => tracing::info!("terminated; stopping"),
        _ = proxy.stopped() => tracing::info!("quitquitquit; stopping"),
    }
    drop(ads);
    proxy.shutdown();
    Ok(())
}
