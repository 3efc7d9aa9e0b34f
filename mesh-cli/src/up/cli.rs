//! The clap arguments of `up`, `down`, `status`, `apply` and `traffic`, kept here so
//! `main.rs` only lists the subcommands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::traffic::TrafficOptions;
use super::{DEFAULT_SYNC_TIMEOUT, ProxyImpl, UpOptions};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ProxyArg {
    /// The mesh's own proxy.
    Mesh,
    /// The real Envoy, on the very same bootstrap.
    Envoy,
}

/// Start a local mesh: control plane, gateway, one sidecar per workload, the workloads.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// Directory with `workloads.yaml` and Istio YAML; default: the built-in helloworld demo.
    pub dir: Option<PathBuf>,
    /// Return once every proxy is SYNCED, leaving the mesh running (stop it with `meshctl down`).
    #[arg(short, long)]
    pub detach: bool,
    /// Which proxy runs the sidecars and the gateway.
    #[arg(long, value_enum, default_value_t = ProxyArg::Mesh)]
    pub proxy: ProxyArg,
    /// Seconds to wait for every proxy to be SYNCED.
    #[arg(long, default_value_t = DEFAULT_SYNC_TIMEOUT.as_secs())]
    pub timeout: u64,
    /// Trust domain of the workloads' SPIFFE identities.
    #[arg(long, default_value = mesh_ca::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Lifetime of the workloads' certificates (e.g. 30s, 1h); every proxy renews at about
    /// half of it. Default: the CA's, 24h. Short ones exercise rotation.
    #[arg(long, value_name = "DURATION", value_parser = parse_cert_ttl)]
    pub workload_cert_ttl: Option<Duration>,
}

fn parse_cert_ttl(s: &str) -> Result<Duration, String> {
    let d = mesh_api::duration::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(2) {
        return Err(format!("{s:?}: at least 2s (a proxy renews at half of it)"));
    }
    Ok(d)
}

/// Output format of `status`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StatusFormat {
    Table,
    Json,
}

/// Show what runs where in the local mesh.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[arg(short = 'o', long = "output", value_enum, default_value_t = StatusFormat::Table)]
    pub output: StatusFormat,
}

/// Apply Istio YAML to the running local mesh (its control plane picks it up): each resource
/// replaces the one of the same kind, namespace and name. The change is analysed first with
/// the mesh's configuration: errors refuse it (unless `--force`), warnings are printed.
#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// A file or a directory (its .yaml, .yml and .json files, recursively); repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Remove the resources of the files (by kind, namespace and name) instead.
    #[arg(short = 'd', long)]
    pub delete: bool,
    /// Wait until every proxy the change affects has acknowledged it; `--wait=false` returns
    /// once the files are written.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub wait: bool,
    /// How long to wait, e.g. `30s`, `2m`.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Apply even when the analysis of the change finds errors.
    #[arg(long)]
    pub force: bool,
}

/// Send requests and count the answers by version and status.
#[derive(Args, Debug)]
pub struct TrafficArgs {
    /// `gateway` (or `istio-ingressgateway.istio-system`), or a workload whose sidecar to send
    /// through, as its app would: any name `proxy-status` prints, a short name or
    /// `deploy/NAME.NAMESPACE`.
    #[arg(long, default_value = "gateway")]
    pub via: String,
    /// Number of requests (default 100 when no --rate/--duration).
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    /// Requests per second (with --duration).
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long to send, e.g. `10s`, `500ms`, `2m`.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    #[arg(long, default_value = "/hello")]
    pub path: String,
    /// Host to call (through a sidecar the default is the mesh's first service).
    #[arg(long)]
    pub host: Option<String>,
    /// A request header, `-H 'end-user: jason'`; repeatable. `-H 'Host: x'` is --host.
    #[arg(short = 'H', long = "header", value_parser = parse_header_arg)]
    pub headers: Vec<(String, String)>,
    /// Requests in flight at once.
    #[arg(short = 'c', long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Print the final counts as JSON.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = StatusFormat::Table)]
    pub output: StatusFormat,
}

fn parse_header_arg(s: &str) -> Result<(String, String), String> {
    crate::header_arg::parse_header(s).map_err(|e| e.to_string())
}

/// `500ms`, `10s`, `2m`, `1h30m` (see [`mesh_api::duration::parse_flag_duration`]).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    mesh_api::duration::parse_flag_duration(s)
}

fn report(cmd: &str, r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshctl {cmd}: {}", mesh_api::report::one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

pub fn up(a: UpArgs) -> ExitCode {
    let opts = UpOptions {
        dir: a.dir,
        detach: a.detach,
        proxy: match a.proxy {
            ProxyArg::Mesh => ProxyImpl::Mesh,
            ProxyArg::Envoy => ProxyImpl::Envoy,
        },
        timeout: Duration::from_secs(a.timeout),
        trust_domain: a.trust_domain,
        workload_cert_ttl: a.workload_cert_ttl,
    };
    report("up", super::up(&opts))
}

pub fn down() -> ExitCode {
    report("down", super::down())
}

pub fn status(a: StatusArgs) -> ExitCode {
    report(
        "status",
        super::status(matches!(a.output, StatusFormat::Json)),
    )
}

pub fn apply(a: ApplyArgs) -> ExitCode {
    let opts = super::ApplyOptions {
        files: a.files,
        delete: a.delete,
        wait: a.wait.then_some(a.timeout),
        force: a.force,
    };
    report("apply", super::apply(&opts))
}

pub fn traffic(a: TrafficArgs) -> ExitCode {
    let opts = TrafficOptions {
        via: a.via,
        count: a.count,
        rate: a.rate,
        duration: a.duration,
        path: a.path,
        host: a.host,
        headers: a.headers,
        concurrency: usize::from(a.concurrency),
        json: matches!(a.output, StatusFormat::Json),
    };
    report("traffic", super::traffic::run(&opts).map(|_| ()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::parse_duration("500ms").unwrap().as_millis(), 500);
        assert_eq!(super::parse_duration("2m").unwrap().as_secs(), 120);
        assert!(super::parse_duration("10").is_err());
    }
}
