//! `meshctl`: thin commands over the library crates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "meshctl", version, about = "Command line of the mesh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Analyse Istio configuration as `istioctl analyze` does: files (together with the
    /// running local mesh's configuration when one runs), or the running mesh; exits 79 when
    /// an error-level message is found.
    Analyze(AnalyzeArgs),
    /// Start a local mesh (control plane, gateway, a sidecar per workload, the workloads);
    /// default: the built-in helloworld demo.
    Up(mesh_cli::up::cli::UpArgs),
    /// Stop the local mesh recorded in the state directory.
    Down,
    /// Show what runs where in the local mesh.
    Status(mesh_cli::up::cli::StatusArgs),
    /// Print a process's log by its name: `control-plane`, a proxy (`gateway`,
    /// `helloworld-safe`, ...) or `app/WORKLOAD`; `-f` follows it.
    Logs(mesh_cli::logs::LogsArgs),
    /// Apply Istio YAML to the running local mesh and wait until the proxies it affects have it.
    Apply(mesh_cli::up::cli::ApplyArgs),
    /// Wait until the proxies have ACKed a resource, files, or the whole configuration
    /// (`istioctl x wait`).
    Wait(mesh_cli::wait::WaitArgs),
    /// Send requests through the gateway or a sidecar and count answers by version and status.
    Traffic(mesh_cli::up::cli::TrafficArgs),
    /// Each proxy's xDS sync state (CDS, LDS, EDS, RDS) from the control plane.
    ProxyStatus(mesh_cli::proxy_status::ProxyStatusArgs),
    /// A proxy's clusters, listeners, routes, endpoints or log levels, from its admin.
    #[command(subcommand)]
    ProxyConfig(mesh_cli::proxy_config::ProxyConfigCmd),
    /// Which listener, route, cluster and policies a proxy applies to a request, and why.
    Explain(mesh_cli::explain::ExplainArgs),
}

#[derive(clap::Args)]
struct AnalyzeArgs {
    /// Files or directories (searched recursively for .yaml, .yml, .json); `-` reads stdin.
    /// None: the running local mesh's configuration.
    paths: Vec<PathBuf>,
    /// Analyse the files together with the running local mesh's configuration, when one runs
    /// (istioctl's `--use-kube`); `--use-mesh=false` analyses the files alone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    use_mesh: bool,
    /// Analyse a Kubernetes cluster's live configuration (the Istio kinds, Services, Pods,
    /// EndpointSlices, Namespaces), with the files if any, instead of the local mesh's.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, requires = "kubeconfig")]
    context: Option<String>,
    /// Only report on this namespace's resources (with --kubeconfig the default is the
    /// context's namespace, as istioctl's; the local mesh's default is every namespace).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Every namespace (with --kubeconfig).
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    output: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
    Yaml,
}

/// What `analyze` analyses the files with: a cluster, the running local mesh, or nothing.
fn analyze_context(args: &AnalyzeArgs) -> anyhow::Result<Option<mesh_cli::analyze::MeshContext>> {
    if let Some(kubeconfig) = &args.kubeconfig {
        let scope = match (&args.namespace, args.all_namespaces) {
            (_, true) => mesh_cli::analyze::Scope::All,
            (Some(ns), false) => mesh_cli::analyze::Scope::Namespace(ns.clone()),
            (None, false) => mesh_cli::analyze::Scope::ContextNamespace,
        };
        return mesh_cli::analyze::cluster_mesh(kubeconfig, args.context.as_deref(), scope)
            .map(Some);
    }
    let mesh = args
        .use_mesh
        .then(mesh_cli::analyze::running_mesh)
        .flatten();
    Ok(mesh.map(|m| mesh_cli::analyze::MeshContext {
        namespace: args.namespace.clone(),
        ..m
    }))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Up(a) => mesh_cli::up::cli::up(a),
        Command::Down => mesh_cli::up::cli::down(),
        Command::Status(a) => mesh_cli::up::cli::status(a),
        Command::Logs(a) => mesh_cli::logs::main(a),
        Command::Apply(a) => mesh_cli::up::cli::apply(a),
        Command::Wait(a) => mesh_cli::wait::main(a),
        Command::Traffic(a) => mesh_cli::up::cli::traffic(a),
        Command::ProxyStatus(a) => mesh_cli::proxy_status::main(a),
        Command::ProxyConfig(c) => mesh_cli::proxy_config::main(c),
        Command::Explain(a) => mesh_cli::explain::main(a),
        Command::Analyze(args) => match analyze_context(&args)
            .and_then(|mesh| mesh_cli::analyze::run(&args.paths, args.output.into(), mesh))
        {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!(
                    "meshctl analyze: {}",
                    mesh_api::report::one_line(e.as_ref())
                );
                ExitCode::FAILURE
            }
        },
    }
}

impl From<Format> for mesh_cli::analyze::OutputFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Text => Self::Text,
            Format::Json => Self::Json,
            Format::Yaml => Self::Yaml,
        }
    }
}
