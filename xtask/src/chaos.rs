//! `cargo xtask chaos`: the local mesh under steady traffic while things break, as they do on
//! a cluster, and every request counted.
//!
//! ```text
//! meshctl up --detach --workload-cert-ttl 20s     certificates rotate every ~10 s throughout
//!   traffic lanes (soak's)                         gateway h1/h1-new/h2c, sidecars over mTLS
//!   rounds of:  control plane SIGKILLed            meshctl restarts it, proxies resync
//!               an app instance SIGKILLed          meshctl restarts it
//!               a bad file in the config dir       rejected, last good kept, then removed
//!               a proxy SIGKILLed while the control plane is stopped (SIGSTOP)
//!                                                  it must refuse (no listener, /ready 503),
//!                                                  never serve nothing, then sync on SIGCONT
//!   -> chaos.md, chaos.json: each failure attributed to the event it fell in
//! ```
//!
//! A failure is allowed only where it cannot be avoided: a request in flight on a killed
//! process (at most one per connection of the traffic), and a connection to the restarted
//! proxy while it has no configuration (refused: the clear way to refuse). Any other failure,
//! during an event or outside one, fails the run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::soak::mesh::{LocalMesh, MeshStatus, Meshctl};
use crate::soak::traffic::{self, Counters, Failure, Lane};
use crate::soak::{self, report::clock, sample};

/// The instance whose app and proxy are killed: the demo's `risky` version.
const VICTIM: &str = "helloworld-risky";
/// After an event has recovered, failures still count against it for this long (a request
/// sent just before recovery may finish just after).
const SETTLE: Duration = Duration::from_secs(2);
/// Longest wait for the mesh to recover from an event.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the control plane stays stopped while the proxy restarts.
const CONTROL_PLANE_DOWN: Duration = Duration::from_secs(4);

#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Rounds of the four events.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Total requests per second over every lane.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Seconds of steady traffic before the first event and between two events.
    #[arg(long, default_value_t = 8)]
    calm_seconds: u64,
    /// Lifetime of the workloads' certificates (renewed at about half of it).
    #[arg(long, default_value = "20s")]
    cert_ttl: String,
    /// Output directory (default: <target dir>/chaos).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Build and run the release binaries instead of the debug ones.
    #[arg(long)]
    release: bool,
    /// Run the binaries of this directory as they are, without building.
    #[arg(long, conflicts_with = "release")]
    bin_dir: Option<PathBuf>,
}

/// What is done to the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    ControlPlaneKilled,
    AppKilled,
    BadPush,
    ProxyRestartedWithoutControlPlane,
}

impl EventKind {
    pub const ROUND: [EventKind; 4] = [
        EventKind::ControlPlaneKilled,
        EventKind::AppKilled,
        EventKind::BadPush,
        EventKind::ProxyRestartedWithoutControlPlane,
    ];

    pub fn label(self) -> &'static str {
        match self {
            EventKind::ControlPlaneKilled => "control plane SIGKILLed",
            EventKind::AppKilled => "app/helloworld-risky SIGKILLed",
            EventKind::BadPush => "bad file pushed, then removed",
            EventKind::ProxyRestartedWithoutControlPlane => {
                "proxy/helloworld-risky SIGKILLed while the control plane is stopped"
            }
        }
    }

    /// Whether the event kills a process that serves requests (its in-flight requests fail).
    fn kills_a_server(self) -> bool {
        matches!(
            self,
            EventKind::AppKilled | EventKind::ProxyRestartedWithoutControlPlane
        )
    }
}

/// One event as it happened.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Event {
    pub kind: EventKind,
    pub round: u32,
    /// Seconds since the traffic started.
    pub start: f64,
    /// When the mesh was back (every process running, every proxy SYNCED).
    pub recovered: f64,
    /// What was checked during the event, and what was seen.
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    pub seen: String,
}

/// Why a failure is allowed, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// A request in flight on the killed process.
    InFlight,
    /// A connection to the restarted proxy refused while it had no configuration.
    RefusedWithoutConfig,
    Unexpected,
}

/// The failures of one event (or of none: `event` is `None`), by verdict, kind and lane.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Attributed {
    pub event: Option<usize>,
    pub counts: BTreeMap<String, u64>,
    pub by_kind: BTreeMap<String, u64>,
    pub unexpected_examples: Vec<Failure>,
}

/// Sorts every failure into the event whose window it fell in, with a verdict. `in_flight`
/// is how many requests can be in flight at once (one per connection of the traffic).
pub fn attribute(events: &[Event], failures: &[Failure], in_flight: u64) -> Vec<Attributed> {
    let mut out: Vec<Attributed> = (0..events.len())
        .map(|i| Attributed {
            event: Some(i),
            ..Default::default()
        })
        .collect();
    out.push(Attributed::default());
    let outside = events.len();
    let mut in_flight_used = vec![0u64; events.len()];
    for f in failures {
        let i = events
            .iter()
            .position(|e| f.at >= e.start && f.at <= e.recovered + SETTLE.as_secs_f64())
            .unwrap_or(outside);
        let verdict = if i == outside {
            Verdict::Unexpected
        } else {
            let e = &events[i];
            let to_restarted_proxy = f.lane.starts_with(&format!("via {VICTIM} "));
            let refused = matches!(f.kind.as_str(), "connect" | "handshake" | "send" | "body");
            if e.kind == EventKind::ProxyRestartedWithoutControlPlane
                && to_restarted_proxy
                && refused
            {
                Verdict::RefusedWithoutConfig
            } else if e.kind.kills_a_server() && in_flight_used[i] < in_flight {
                in_flight_used[i] += 1;
                Verdict::InFlight
            } else {
                Verdict::Unexpected
            }
        };
        let a = &mut out[i];
        let name = serde_json::to_value(verdict)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        *a.counts.entry(name).or_default() += 1;
        *a.by_kind.entry(f.kind.clone()).or_default() += 1;
        if verdict == Verdict::Unexpected && a.unexpected_examples.len() < 5 {
            a.unexpected_examples.push(f.clone());
        }
    }
    out
}

fn unexpected(a: &Attributed) -> u64 {
    a.counts.get("unexpected").copied().unwrap_or(0)
}

pub fn run(args: ChaosArgs) -> anyhow::Result<()> {
    if args.rounds == 0 || !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rounds and --rate must be more than 0");
    }
    let (workspace, target, out) = soak::directories(args.out.as_deref(), "chaos")?;
    let (bin_dir, binaries) = soak::binaries(
        "chaos",
        args.release,
        args.bin_dir.as_deref(),
        &workspace,
        &target,
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    let stop = runtime.block_on(soak::stop_on_signal())?;
    let mesh = LocalMesh::up_with(
        "chaos",
        bin_dir.join("meshctl"),
        bin_dir.clone(),
        &["--workload-cert-ttl", &args.cert_ttl],
    )?;
    let status = mesh.ctl.status()?;
    let lanes = traffic::plan_for(args.rate, &status)?;
    let in_flight: u64 = lanes.iter().map(|l| l.connections.max(1) as u64).sum();
    println!(
        "chaos: {} lanes, {:.0} req/s; {} rounds of: {}",
        lanes.len(),
        args.rate,
        args.rounds,
        EventKind::ROUND.map(EventKind::label).join("; ")
    );

    let counters = Arc::new(Counters::default());
    let mut tasks = JoinSet::new();
    {
        let _guard = runtime.enter();
        traffic::spawn(&lanes, &counters, &mut tasks);
    }
    let calm = Duration::from_secs(args.calm_seconds);
    let mut events = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        pause(calm, &stop)?;
        for round in 1..=args.rounds {
            for kind in EventKind::ROUND {
                let event = inject(kind, round, &mesh.ctl, &counters, &runtime, &stop)?;
                let failed: Vec<&Check> = event.checks.iter().filter(|c| !c.ok).collect();
                println!(
                    "chaos: {} round {round}: {} (back in {:.1}s){}",
                    clock(event.start),
                    kind.label(),
                    event.recovered - event.start,
                    if failed.is_empty() {
                        String::new()
                    } else {
                        format!("; FAILED CHECK: {}", failed[0].what)
                    }
                );
                events.push(event);
                pause(calm, &stop)?;
            }
        }
        Ok(())
    })();
    let seconds = counters.elapsed();
    runtime.block_on(tasks.shutdown());
    let log = mesh.ctl.state_dir.join("logs/control-plane.log");
    let certificates = issued_certificates(&std::fs::read_to_string(&log).unwrap_or_default());
    let restarts: BTreeMap<String, u32> = mesh
        .ctl
        .status()
        .map(|s| {
            s.processes
                .iter()
                .map(|p| (p.name.clone(), p.restarts))
                .collect()
        })
        .unwrap_or_default();
    mesh.stop_keeping_logs("chaos", &out.join("logs"));
    runtime.shutdown_timeout(Duration::from_secs(2));
    result?;

    let failures = counters.failures();
    let attributed = attribute(&events, &failures, in_flight);
    let (requests, failed) = counters.totals();
    let report = Report {
        binaries,
        rate: args.rate,
        cert_ttl: args.cert_ttl.clone(),
        seconds,
        requests,
        failed,
        in_flight_bound: in_flight,
        lanes: &lanes,
        traffic: counters.snapshot(),
        events: &events,
        attributed: &attributed,
        certificates: &certificates,
        restarts: &restarts,
    };
    let md = report.markdown();
    std::fs::write(out.join("chaos.md"), &md)?;
    std::fs::write(
        out.join("chaos.json"),
        serde_json::to_vec_pretty(&report.json())?,
    )?;
    println!("\n{md}");
    println!("chaos: report in {}", out.display());
    if !report.passed() {
        bail!(
            "chaos: unexpected failures or failed checks (see {})",
            out.join("chaos.md").display()
        );
    }
    Ok(())
}

/// Sleeps `d` unless a stop was asked.
fn pause(d: Duration, stop: &watch::Receiver<bool>) -> anyhow::Result<()> {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if *stop.borrow() {
            bail!("interrupted");
        }
        std::thread::sleep(Duration::from_millis(100).min(until - Instant::now()));
    }
    Ok(())
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .context("run kill")?
        .success();
    if !ok {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}

/// Polls `meshctl status` until `ready` says the mesh is back; its time, or an error naming
/// what was last seen.
fn wait_until(
    ctl: &Meshctl,
    stop: &watch::Receiver<bool>,
    what: &str,
    ready: impl Fn(&MeshStatus) -> bool,
) -> anyhow::Result<MeshStatus> {
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    loop {
        let last = ctl.status();
        if let Ok(s) = &last
            && ready(s)
        {
            return Ok(s.clone());
        }
        if Instant::now() >= deadline {
            bail!("{what}: not within {RECOVERY_TIMEOUT:?}; last status: {last:?}");
        }
        pause(Duration::from_millis(200), stop)?;
    }
}

/// Polls the control plane's `/debug/configz` until `done` says yes (true) or
/// [`RECOVERY_TIMEOUT`] passes (false).
fn configz_until(
    runtime: &tokio::runtime::Runtime,
    debug: std::net::SocketAddr,
    stop: &watch::Receiver<bool>,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    loop {
        let page = runtime
            .block_on(sample::get(debug, "/debug/configz"))
            .unwrap_or_default();
        if done(&page) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        pause(Duration::from_millis(100), stop)?;
    }
}

/// Every process running and every proxy SYNCED, `name` with another pid than `old_pid`.
fn back(name: &str, old_pid: u32) -> impl Fn(&MeshStatus) -> bool + '_ {
    move |s: &MeshStatus| {
        s.processes.iter().all(|p| p.running)
            && s.all_synced()
            && s.process(name).is_ok_and(|p| p.pid != old_pid)
    }
}

fn inject(
    kind: EventKind,
    round: u32,
    ctl: &Meshctl,
    counters: &Counters,
    runtime: &tokio::runtime::Runtime,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Event> {
    let before = ctl.status()?;
    let mut checks = Vec::new();
    let start = counters.elapsed();
    match kind {
        EventKind::ControlPlaneKilled => {
            let cp = before.process("control-plane")?.pid;
            signal(cp, "KILL")?;
            wait_until(ctl, stop, kind.label(), back("control-plane", cp))?;
        }
        EventKind::AppKilled => {
            let name = format!("app/{VICTIM}");
            let app = before.process(&name)?.pid;
            signal(app, "KILL")?;
            wait_until(ctl, stop, kind.label(), back(&name, app))?;
        }
        EventKind::BadPush => {
            // As a GitOps tool would: straight into the watched directory, past `apply`'s
            // validation. The control plane must reject it and keep serving the last good.
            let bad = before.config_dir.join(format!("chaos-bad-{round}.yaml"));
            std::fs::write(
                &bad,
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: helloworld, namespace: default}\nspec:\n  hosts: 3\n",
            )
            .with_context(|| format!("write {}", bad.display()))?;
            let name = bad
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let debug = before.control_plane.debug_address;
            let listed = format!("{name}: document 1");
            let rejected = configz_until(runtime, debug, stop, |page| page.contains(&listed))?;
            checks.push(Check {
                what: format!("the control plane rejects {name}"),
                ok: rejected,
                seen: if rejected {
                    "listed in /debug/configz errors"
                } else {
                    "never listed"
                }
                .into(),
            });
            let during = ctl.status()?;
            checks.push(Check {
                what: "every proxy stays SYNCED on the last good configuration".into(),
                ok: during.all_synced(),
                seen: format!("{:?}", during.sync),
            });
            std::fs::remove_file(&bad).with_context(|| format!("remove {}", bad.display()))?;
            configz_until(runtime, debug, stop, |page| !page.contains(&name))?;
        }
        EventKind::ProxyRestartedWithoutControlPlane => {
            let cp = before.process("control-plane")?.pid;
            let name = format!("proxy/{VICTIM}");
            let proxy = before.process(&name)?.pid;
            let admin = before
                .admin_of(&name)
                .with_context(|| format!("{name}'s admin address"))?;
            let outbound = before
                .sidecars
                .iter()
                .find(|s| s.workload == VICTIM)
                .map(|s| s.outbound_address)
                .context("the victim's sidecar")?;
            signal(cp, "STOP")?;
            let stopped_at = Instant::now();
            let result = (|| -> anyhow::Result<()> {
                signal(proxy, "KILL")?;
                // The supervisor starts it again at once; the control plane cannot answer it.
                let restarted = wait_until(ctl, stop, "the proxy started again", |s| {
                    s.process(&name).is_ok_and(|p| p.running && p.pid != proxy)
                })?;
                let new_pid = restarted.process(&name)?.pid;
                pause(
                    CONTROL_PLANE_DOWN.saturating_sub(stopped_at.elapsed()),
                    stop,
                )?;
                // Not ready: /ready 503, or no admin listener yet (still waiting for its
                // certificate from the stopped CA).
                let ready = runtime.block_on(sample::get(admin, "/ready"));
                checks.push(Check {
                    what: format!(
                        "the restarted proxy (pid {new_pid}) says it is not ready without configuration"
                    ),
                    ok: ready.as_ref().is_err_and(|e| {
                        let e = format!("{e:#}");
                        e.contains("503") || e.contains("refused")
                    }),
                    seen: match &ready {
                        Ok(body) => format!("/ready 200: {}", body.trim()),
                        Err(e) => format!("{e:#}"),
                    },
                });
                let refused =
                    std::net::TcpStream::connect_timeout(&outbound, Duration::from_secs(1));
                checks.push(Check {
                    what: "its outbound listener refuses connections rather than serving nothing"
                        .into(),
                    ok: refused.is_err(),
                    seen: match refused {
                        Ok(_) => format!("{outbound} accepted a connection"),
                        Err(e) => format!("{outbound}: {e}"),
                    },
                });
                Ok(())
            })();
            // Whatever happened, the control plane runs again.
            signal(cp, "CONT")?;
            result?;
            wait_until(ctl, stop, kind.label(), back(&name, proxy))?;
        }
    }
    Ok(Event {
        kind,
        round,
        start,
        recovered: counters.elapsed(),
        checks,
    })
}

/// Certificates the CA issued, by identity, from the control plane's log.
pub fn issued_certificates(log: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in log
        .lines()
        .filter(|l| l.contains("issued workload certificate"))
    {
        if let Some(id) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("identity="))
        {
            *out.entry(id.to_string()).or_default() += 1;
        }
    }
    out
}

struct Report<'a> {
    binaries: String,
    rate: f64,
    cert_ttl: String,
    seconds: f64,
    requests: u64,
    failed: u64,
    in_flight_bound: u64,
    lanes: &'a [Lane],
    traffic: BTreeMap<String, traffic::LaneCounts>,
    events: &'a [Event],
    attributed: &'a [Attributed],
    certificates: &'a BTreeMap<String, u64>,
    /// Restarts by meshctl's supervisor, per process, at the end.
    restarts: &'a BTreeMap<String, u32>,
}

impl Report<'_> {
    /// Rotations seen: every identity got certificates after its first.
    fn rotated(&self) -> bool {
        !self.certificates.is_empty() && self.certificates.values().all(|n| *n >= 3)
    }

    fn passed(&self) -> bool {
        self.attributed.iter().all(|a| unexpected(a) == 0)
            && self.events.iter().all(|e| e.checks.iter().all(|c| c.ok))
            && self.rotated()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "passed": self.passed(),
            "binaries": self.binaries,
            "rate": self.rate,
            "cert_ttl": self.cert_ttl,
            "seconds": self.seconds,
            "requests": self.requests,
            "failed": self.failed,
            "in_flight_bound": self.in_flight_bound,
            "lanes": self.lanes,
            "traffic": self.traffic,
            "events": self.events,
            "attributed": self.attributed,
            "certificates_issued": self.certificates,
            "restarts": self.restarts,
        })
    }

    fn markdown(&self) -> String {
        let mut md = String::new();
        md.push_str(&format!(
            "## Chaos: {}\n\n{} requests in {} ({:.0}/s asked, {} binaries), {} failed; certificates \
             of {} renewed throughout ({} issued: {}).\n\n",
            if self.passed() { "PASSED" } else { "FAILED" },
            self.requests,
            clock(self.seconds),
            self.rate,
            self.binaries,
            self.failed,
            self.cert_ttl,
            self.certificates.values().sum::<u64>(),
            self.certificates
                .iter()
                .map(|(id, n)| format!("{} {n}", id.rsplit('/').next().unwrap_or(id)))
                .collect::<Vec<_>>()
                .join(", "),
        ));
        md.push_str(
            "| at | round | event | back in | failures: in flight / refused without config / unexpected | checks |\n|---|---|---|---|---|---|\n",
        );
        for (e, a) in self.events.iter().zip(self.attributed) {
            let n = |k: &str| a.counts.get(k).copied().unwrap_or(0);
            md.push_str(&format!(
                "| {} | {} | {} | {:.1} s | {} / {} / {} | {} |\n",
                clock(e.start),
                e.round,
                e.kind.label(),
                e.recovered - e.start,
                n("in-flight"),
                n("refused-without-config"),
                n("unexpected"),
                if e.checks.is_empty() {
                    "-".to_string()
                } else {
                    e.checks
                        .iter()
                        .map(|c| {
                            format!(
                                "{} {}: {}",
                                if c.ok { "ok" } else { "FAILED" },
                                c.what,
                                c.seen
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("<br>")
                }
            ));
        }
        if let Some(outside) = self.attributed.last() {
            md.push_str(&format!(
                "| | | outside any event | | 0 / 0 / {} | |\n",
                unexpected(outside)
            ));
        }
        let examples: Vec<&Failure> = self
            .attributed
            .iter()
            .flat_map(|a| &a.unexpected_examples)
            .collect();
        if !examples.is_empty() {
            md.push_str("\nUnexpected failures (first ones):\n\n");
            for f in examples {
                md.push_str(&format!(
                    "- {} {}: {} {}\n",
                    clock(f.at),
                    f.lane,
                    f.kind,
                    f.message
                ));
            }
        }
        md.push_str(&format!(
            "\nRestarts by meshctl's supervisor: {}.\n",
            self.restarts
                .iter()
                .map(|(p, n)| format!("{p} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        md.push_str(&format!(
            "\nIn flight at once: at most {} requests (one per connection of the traffic); failures \
             of a kill beyond that are unexpected.\n",
            self.in_flight_bound
        ));
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, start: f64, recovered: f64) -> Event {
        Event {
            kind,
            round: 1,
            start,
            recovered,
            checks: vec![],
        }
    }

    fn failure(at: f64, lane: &str, kind: &str) -> Failure {
        Failure {
            at,
            lane: lane.into(),
            kind: kind.into(),
            message: String::new(),
        }
    }

    #[test]
    fn failures_are_allowed_only_where_they_cannot_be_avoided() {
        let events = [
            event(EventKind::ControlPlaneKilled, 10.0, 12.0),
            event(EventKind::AppKilled, 20.0, 22.0),
            event(EventKind::ProxyRestartedWithoutControlPlane, 30.0, 36.0),
        ];
        let failures = [
            // The control plane's death costs no request.
            failure(11.0, "gateway h2c", "status 503"),
            // Two in flight on the killed app; the bound is 2, so the third is unexpected.
            failure(20.1, "gateway h1 keep-alive", "status 503"),
            failure(20.2, "gateway h2c", "status 503"),
            failure(23.5, "gateway h2c", "status 503"),
            // The restarted proxy refuses its own lanes' connections: allowed, however many.
            failure(
                31.0,
                "via helloworld-risky h1 new connection (mTLS)",
                "connect",
            ),
            failure(
                32.0,
                "via helloworld-risky h1 new connection (mTLS)",
                "connect",
            ),
            failure(33.0, "via helloworld-risky h1 keep-alive (mTLS)", "send"),
            // ... but a 503 elsewhere is in flight (within the bound) ...
            failure(30.1, "gateway h1 keep-alive", "status 503"),
            // Outside any window (after the settle time of the last event).
            failure(40.0, "gateway h1 keep-alive", "timeout"),
        ];
        let a = attribute(&events, &failures, 2);
        assert_eq!(a.len(), 4);
        assert_eq!(a[0].counts["unexpected"], 1);
        assert_eq!(a[1].counts["in-flight"], 2);
        assert_eq!(
            a[1].counts["unexpected"], 1,
            "23.5 is within the settle time"
        );
        assert_eq!(a[2].counts["refused-without-config"], 3);
        assert_eq!(a[2].counts["in-flight"], 1);
        assert_eq!(a[3].event, None);
        assert_eq!(a[3].counts["unexpected"], 1);
        assert_eq!(a[3].unexpected_examples[0].kind, "timeout");
        assert_eq!(a[2].by_kind["connect"], 2);
    }

    #[test]
    fn certificates_are_counted_by_identity() {
        let log = "\
2026-12-07T21:08:29Z  INFO mesh_ca::service: issued workload certificate remote=127.0.0.1:1 identity=spiffe://cluster.local/ns/default/sa/helloworld not_after=x
2026-12-07T21:08:30Z  INFO mesh_control: proxy connected
2026-12-07T21:08:31Z  INFO mesh_ca::service: issued workload certificate remote=127.0.0.1:2 identity=spiffe://cluster.local/ns/default/sa/helloworld not_after=y
";
        let c = issued_certificates(log);
        assert_eq!(c.len(), 1);
        assert_eq!(c["spiffe://cluster.local/ns/default/sa/helloworld"], 2);
    }
}
