//! `mesh-control`: reads the arguments, builds the control plane, logs the
//! bound addresses, waits for SIGTERM or Ctrl-C and drains.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use mesh_control::server::{DEFAULT_DEBUG_ADDRESS, DEFAULT_XDS_ADDRESS, ServerConfig};

/// The mesh control plane: serves Istio configuration to proxies as Envoy xDS.
#[derive(Debug, Parser)]
#[command(name = "mesh-control", version, about, long_about = None)]
struct Args {
    /// Directory of Istio YAML (VirtualService, DestinationRule, Gateway,
    /// ServiceEntry, WorkloadEntry, ...), read recursively and watched: edits
    /// are pushed to every proxy; a file that fails to load keeps its last
    /// good version in force.
    #[arg(long, value_name = "DIR", env = "MESH_CONFIG_DIR")]
    config: PathBuf,

    /// Address of the plaintext xDS (ADS) gRPC server.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_XDS_ADDRESS)]
    xds_address: SocketAddr,

    /// Address of the debug and metrics HTTP server (/debug/syncz,
    /// /debug/registryz, /debug/configz, /metrics, /ready).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_DEBUG_ADDRESS)]
    debug_address: SocketAddr,
    // `--secure-xds-address` (xDS and CA over mTLS, 15012) comes with the mTLS work.
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole cause chain, no backtrace: this is a
            // user-facing error (bad directory, address in use).
            eprintln!("mesh-control: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let config = ServerConfig {
        xds_address: args.xds_address,
        debug_address: args.debug_address,
        ..ServerConfig::new(args.config)
    };
    let bound = mesh_control::build(config).await.context("cannot start")?;
    tracing::info!(
        xds = %bound.xds_address(),
        debug = %bound.debug_address(),
        "mesh-control serving"
    );
    wait_for_signal().await?;
    tracing::info!("shutting down: draining xDS streams");
    bound.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
