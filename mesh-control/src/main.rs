//! `mesh-control`: reads the arguments, builds the control plane, logs the
//! bound addresses, waits for SIGTERM or Ctrl-C and drains.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use std::time::Duration;

use mesh_control::kube_ca::LeaseTiming;
use mesh_control::secure::{DEFAULT_SECURE_XDS_ADDRESS, parse_duration, parse_secure_address};
use mesh_control::server::{
    DEFAULT_DEBUG_ADDRESS, DEFAULT_XDS_ADDRESS, KubernetesCa, ServerConfig,
};
use mesh_control::source::{ConfigSource, DirectorySource, KubernetesSource};
use mesh_control::token_review::TokenReviewAuthenticator;

/// Istio's maximum workload certificate lifetime, as `--max-cert-ttl` is written.
const DEFAULT_MAX_CERT_TTL: &str = "90d";

/// The mesh control plane: serves Istio configuration to proxies as Envoy xDS.
#[derive(Debug, Parser)]
#[command(name = "mesh-control", version, about, long_about = None)]
// Where the configuration comes from: a directory, a cluster, or both.
#[command(group(clap::ArgGroup::new("source").required(true).multiple(true)
    .args(["config", "kubeconfig", "kubernetes"])))]
struct Args {
    /// Directory of Istio YAML (VirtualService, DestinationRule, Gateway,
    /// ServiceEntry, WorkloadEntry, ...), read recursively and watched: edits
    /// are pushed to every proxy; a file that fails to load keeps its last
    /// good version in force.
    #[arg(long, value_name = "DIR", env = "MESH_CONFIG_DIR")]
    config: Option<PathBuf>,

    /// Watch the Kubernetes cluster of this kubeconfig (its current context unless
    /// --context): Services, EndpointSlices, Pods, Namespaces and the Istio kinds. May be
    /// combined with --config.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use with --kubeconfig.
    #[arg(long, value_name = "NAME", requires = "kubeconfig")]
    context: Option<String>,

    /// The control plane's namespace in Kubernetes mode: the CA's root Secret (`cacerts`, else
    /// `istio-ca-secret`) and the leader Lease live there.
    #[arg(
        long,
        value_name = "NS",
        env = "POD_NAMESPACE",
        default_value = "istio-system"
    )]
    namespace: String,

    /// Watch the cluster kube-rs finds by itself: the pod's service account when running in
    /// Kubernetes, else $KUBECONFIG or ~/.kube/config.
    #[arg(long, conflicts_with = "kubeconfig")]
    kubernetes: bool,

    /// Address of the plaintext xDS (ADS) gRPC server.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_XDS_ADDRESS)]
    xds_address: SocketAddr,

    /// Address of the debug and metrics HTTP server (/debug/syncz,
    /// /debug/registryz, /debug/configz, /metrics, /ready).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_DEBUG_ADDRESS)]
    debug_address: SocketAddr,

    /// Address of the TLS port serving the CA's CSR service
    /// (istio.v1.auth.IstioCertificateService), ADS, and secrets (SDS) to
    /// authenticated proxies; `off` disables it, the CA and SDS.
    #[arg(long, value_name = "ADDR|off", default_value = DEFAULT_SECURE_XDS_ADDRESS,
          value_parser = parse_secure)]
    secure_xds_address: SecureAddress,

    /// Directory of the mesh CA in Istio's layout (ca-cert.pem, ca-key.pem,
    /// root-cert.pem, cert-chain.pem): a plugged-in CA when those files exist,
    /// otherwise a root is generated and kept there. Without it the root is
    /// generated in memory and lost on exit.
    #[arg(long, value_name = "DIR")]
    ca_dir: Option<PathBuf>,

    /// Trust domain of every SPIFFE identity (spiffe://TRUST_DOMAIN/ns/NS/sa/SA).
    #[arg(long, value_name = "DOMAIN", default_value = mesh_ca::DEFAULT_TRUST_DOMAIN,
          value_parser = parse_trust_domain)]
    trust_domain: String,

    /// File of bearer tokens for the secure port, one workload per line:
    /// `TOKEN NAMESPACE SERVICE_ACCOUNT` (# comments). A caller with a token
    /// gets certificates for that identity only. Without it only callers with
    /// a mesh client certificate authenticate.
    #[arg(long, value_name = "FILE")]
    ca_tokens: Option<PathBuf>,

    /// Longest certificate lifetime the CA grants (e.g. 90d, 24h, 30m);
    /// longer requests are refused.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_MAX_CERT_TTL,
          value_parser = parse_duration)]
    max_cert_ttl: Duration,

    /// Lifetime of the certificates generated for Envoys over SDS (renewed
    /// and pushed at half life); default: the CA's, 24h. At most --max-cert-ttl.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    workload_cert_ttl: Option<Duration>,
}

/// `--secure-xds-address`: an address, or `off` (`None`).
#[derive(Debug, Clone, Copy)]
struct SecureAddress(Option<SocketAddr>);

fn parse_secure(s: &str) -> Result<SecureAddress, String> {
    parse_secure_address(s).map(SecureAddress)
}

fn parse_trust_domain(s: &str) -> Result<String, String> {
    mesh_ca::spiffe::validate_trust_domain(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole cause chain, no backtrace: this is a
            // user-facing error (bad directory, address in use).
            eprintln!("mesh-control: {}", mesh_api::report::one_line(e.as_ref()));
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
    let mut config = ServerConfig {
        xds_address: args.xds_address,
        debug_address: args.debug_address,
        secure_xds_address: args.secure_xds_address.0,
        ca_dir: args.ca_dir,
        trust_domain: args.trust_domain,
        ca_tokens: args.ca_tokens,
        max_cert_ttl: args.max_cert_ttl,
        sds_cert_ttl: args.workload_cert_ttl,
        ..ServerConfig::new(args.config.clone().unwrap_or_default())
    };
    let mut sources: Vec<Box<dyn ConfigSource>> = Vec::new();
    if let Some(dir) = &args.config {
        sources.push(Box::new(
            DirectorySource::new(dir).with_timing(config.poll_interval, config.file_debounce),
        ));
    }
    if args.kubeconfig.is_some() || args.kubernetes {
        let source = KubernetesSource::connect(args.kubeconfig.as_deref(), args.context.as_deref())
            .await
            .context("cannot start")?;
        if config.ca_dir.is_none() {
            config.kubernetes_ca = Some(KubernetesCa {
                client: source.client(),
                namespace: args.namespace.clone(),
                identity: replica_identity(),
                lease: LeaseTiming::default(),
            });
        }
        config.token_review = Some(TokenReviewAuthenticator::new(
            source.client(),
            config.trust_domain.clone(),
        ));
        sources.push(Box::new(source));
    }
    // Before the "serving" line: a SIGTERM sent as soon as it is logged must drain, not
    // meet the default action and kill the process.
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let bound = mesh_control::server::build_with_sources(config, sources)
        .await
        .context("cannot start")?;
    let secure = bound
        .secure_xds_address()
        .map_or_else(|| "off".to_string(), |a| a.to_string());
    tracing::info!(
        xds = %bound.xds_address(),
        secure = %secure,
        debug = %bound.debug_address(),
        "mesh-control serving"
    );
    wait_for_signal(term).await?;
    tracing::info!("shutting down: draining xDS streams");
    bound.shutdown().await;
    Ok(())
}

/// This replica's name in the leader Lease: its pod name (`POD_NAME`, from the downward API),
/// else host name and pid.
fn replica_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "mesh-control".to_string());
    format!("{host}-{}", std::process::id())
}

async fn wait_for_signal(mut term: tokio::signal::unix::Signal) -> anyhow::Result<()> {
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
