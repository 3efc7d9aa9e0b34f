//! Keeping the local mesh running, as a Deployment keeps its pods: every child that exits
//! after start-up is started again, after a back-off that doubles while it keeps exiting,
//! and the state file is rewritten with its new pid and its restart count. `meshctl up`
//! supervises in the foreground; `--detach` starts a second `meshctl up` in the background
//! that does the same, and returns once that one reports the mesh up.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::process;
use super::state::{MeshState, Process, STATE_DIR_ENV};
use super::{STOP_GRACE, progress};

/// First wait before a restart; it doubles while the child keeps exiting, up to
/// [`RESTART_MAX`], and starts over once the child has run for [`RESTART_RESET`].
pub const RESTART_FIRST: Duration = Duration::from_millis(500);
pub const RESTART_MAX: Duration = Duration::from_secs(16);
pub const RESTART_RESET: Duration = Duration::from_secs(30);

/// Set on the background `meshctl up` that `--detach` starts: it supervises the mesh.
const DETACHED_ENV: &str = "MESH_UP_DETACHED";
/// Printed by the background `meshctl up` once the mesh is up; the first `meshctl up`
/// returns on it and does not show it.
const READY_MARK: &str = "meshctl up: supervising";
/// The background supervisor's output, in the state directory.
pub const SUPERVISOR_OUT: &str = "supervisor.out";
pub const SUPERVISOR_LOG: &str = "supervisor.log";

/// How to start a child (again).
#[derive(Debug, Clone)]
pub struct Spec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub log: PathBuf,
}

impl Spec {
    fn spawn(&self) -> anyhow::Result<Child> {
        process::spawn(&self.program, &self.args, &self.env, &self.cwd, &self.log)
    }
}

/// One child of the mesh: what runs now and how to start it again.
pub struct Supervised {
    pub record: Process,
    child: Child,
    spec: Spec,
    started: Instant,
    /// Exits in a row, each before [`RESTART_RESET`]: the back-off's exponent.
    quick_exits: u32,
    /// Set while the child is down: when to start it again.
    restart_at: Option<Instant>,
}

/// What `up` started, stopped in reverse order on failure, Ctrl-C or `meshctl down`.
#[derive(Default)]
pub struct Running {
    pub children: Vec<Supervised>,
}

impl Running {
    pub fn start(&mut self, name: &str, spec: Spec) -> anyhow::Result<()> {
        let child = spec.spawn().with_context(|| format!("starting {name}"))?;
        self.children.push(Supervised {
            record: Process {
                name: name.to_string(),
                pid: child.id(),
                program: spec.program.display().to_string(),
                log: spec.log.clone(),
                restarts: 0,
            },
            child,
            spec,
            started: Instant::now(),
            quick_exits: 0,
            restart_at: None,
        });
        Ok(())
    }

    pub fn records(&self) -> Vec<Process> {
        self.children.iter().map(|c| c.record.clone()).collect()
    }

    /// The first child that exited, with its status (during start-up, where an exit is
    /// an error rather than something to restart).
    pub fn exited(&mut self) -> Option<(Process, String)> {
        for c in &mut self.children {
            if let Ok(Some(status)) = c.child.try_wait() {
                return Some((c.record.clone(), status.to_string()));
            }
        }
        None
    }

    /// Notices the children that exited and starts again those whose back-off is over.
    /// True when a pid changed, so the state file must be rewritten.
    pub fn restart_exited(&mut self) -> bool {
        let now = Instant::now();
        let mut changed = false;
        for c in &mut self.children {
            match c.restart_at {
                None => {
                    let Ok(Some(status)) = c.child.try_wait() else {
                        continue;
                    };
                    if c.started.elapsed() >= RESTART_RESET {
                        c.quick_exits = 0;
                    }
                    let wait = backoff(c.quick_exits);
                    c.quick_exits = c.quick_exits.saturating_add(1);
                    c.restart_at = Some(now + wait);
                    let line = format!(
                        "{} exited ({status}); starting it again in {:.1}s (restart {})",
                        c.record.name,
                        wait.as_secs_f64(),
                        c.record.restarts + 1
                    );
                    progress(format!(
                        "{line}; last lines of {}:\n{}",
                        c.record.log.display(),
                        process::log_tail(&c.record.log, 5)
                    ));
                    append_line(&c.record.log, &format!("meshctl: {line}"));
                }
                Some(at) if at <= now => match c.spec.spawn() {
                    Ok(child) => {
                        c.record.pid = child.id();
                        c.record.restarts += 1;
                        c.child = child;
                        c.started = now;
                        c.restart_at = None;
                        changed = true;
                        progress(format!(
                            "{} started again: pid {}",
                            c.record.name, c.record.pid
                        ));
                    }
                    Err(e) => {
                        let wait = backoff(c.quick_exits);
                        c.quick_exits = c.quick_exits.saturating_add(1);
                        c.restart_at = Some(now + wait);
                        progress(format!(
                            "{}: {}; trying again in {:.1}s",
                            c.record.name,
                            mesh_api::report::one_line(e.as_ref()),
                            wait.as_secs_f64()
                        ));
                    }
                },
                Some(_) => {}
            }
        }
        changed
    }

    pub fn stop(&mut self) {
        let procs: Vec<(String, u32, String)> = self
            .children
            .iter()
            .rev()
            .filter(|c| c.restart_at.is_none())
            .map(|c| {
                (
                    c.record.name.clone(),
                    c.record.pid,
                    c.record.program.clone(),
                )
            })
            .collect();
        for name in process::stop_all(&procs, STOP_GRACE) {
            progress(format!("  {name} did not stop in time: killed"));
        }
        for c in &mut self.children {
            let _ = c.child.wait();
        }
    }
}

/// The wait before restart number `quick_exits + 1` of a child that keeps exiting.
pub fn backoff(quick_exits: u32) -> Duration {
    RESTART_FIRST
        .saturating_mul(1u32.checked_shl(quick_exits.min(16)).unwrap_or(u32::MAX))
        .min(RESTART_MAX)
}

fn append_line(path: &Path, line: &str) {
    if let Ok(mut f) = File::options().append(true).open(path) {
        let _ = writeln!(f, "{line}");
    }
}

/// Keeps the mesh running until Ctrl-C or SIGTERM (`meshctl down` sends it), restarting
/// what exits and keeping the state file's pids true.
pub fn supervise(running: &mut Running, state: &mut MeshState) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(supervise_until_stopped(running, state))
}

async fn supervise_until_stopped(
    running: &mut Running,
    state: &mut MeshState,
) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            // Biased: a stop asked at the same time as an exit is not met by a restart.
            biased;
            r = &mut ctrl_c => {
                r?;
                return Ok(());
            }
            _ = term.recv() => return Ok(()),
            _ = tick.tick() => {
                if running.restart_exited() {
                    state.processes = running.records();
                    if let Err(e) = state.save() {
                        progress(format!("recording the new pids: {e:#}"));
                    }
                }
            }
        }
    }
}

/// Whether this `meshctl up` is the background one `--detach` started.
pub fn is_detached_supervisor() -> bool {
    std::env::var_os(DETACHED_ENV).is_some()
}

/// Said by the background `meshctl up` once the mesh is up and recorded.
pub fn announce_ready() {
    println!("{READY_MARK}");
    let _ = std::io::stdout().flush();
}

/// `meshctl up --detach`: starts this same command again in the background (its own
/// process group, output to files in the state directory), shows its output until it
/// reports the mesh up, and returns; if it fails instead, exits with its exit code (its
/// error already shown).
pub fn detach(state_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let out_path = state_dir.join(SUPERVISOR_OUT);
    let log_path = state_dir.join(SUPERVISOR_LOG);
    let create = |p: &PathBuf| File::create(p).with_context(|| format!("creating {}", p.display()));
    let (out, log) = (create(&out_path)?, create(&log_path)?);
    let exe = std::env::current_exe().context("finding meshctl's own path")?;
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(DETACHED_ENV, "1")
        .env(STATE_DIR_ENV, state_dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the background meshctl up")?;
    let mut out = Relay::open(&out_path)?;
    let mut log = Relay::open(&log_path)?;
    loop {
        let exited = child.try_wait()?;
        log.relay(&mut std::io::stderr(), None);
        if out.relay(&mut std::io::stdout(), Some(READY_MARK)) {
            return Ok(());
        }
        if let Some(status) = exited {
            log.relay(&mut std::io::stderr(), None);
            out.relay(&mut std::io::stdout(), None);
            // Its error is already on the screen: only its exit code is left to pass on.
            std::process::exit(status.code().unwrap_or(1));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Copies whole lines appended to a file.
struct Relay {
    file: File,
    partial: Vec<u8>,
}

impl Relay {
    fn open(path: &Path) -> anyhow::Result<Relay> {
        Ok(Relay {
            file: File::open(path).with_context(|| format!("reading {}", path.display()))?,
            partial: Vec::new(),
        })
    }

    /// Writes the new whole lines to `to`; true when one of them is `until` (not written,
    /// nor what follows it).
    fn relay(&mut self, to: &mut impl Write, until: Option<&str>) -> bool {
        let _ = self.file.read_to_end(&mut self.partial);
        while let Some(i) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            if until.is_some_and(|u| line.trim_ascii_end() == u.as_bytes()) {
                let _ = to.flush();
                return true;
            }
            let _ = to.write_all(&line);
        }
        let _ = to.flush();
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap() {
        let waits: Vec<u64> = (0..8).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 16000, 16000]);
        assert_eq!(backoff(u32::MAX), RESTART_MAX);
    }

    #[test]
    fn relay_stops_at_the_mark_and_keeps_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        std::fs::write(&path, "one\ntw").unwrap();
        let mut relay = Relay::open(&path).unwrap();
        let mut shown = Vec::new();
        assert!(!relay.relay(&mut shown, Some(READY_MARK)));
        assert_eq!(shown, b"one\n");
        let mut f = File::options().append(true).open(&path).unwrap();
        write!(f, "o\n{READY_MARK}\nafter\n").unwrap();
        assert!(relay.relay(&mut shown, Some(READY_MARK)));
        assert_eq!(String::from_utf8(shown).unwrap(), "one\ntwo\n");
    }
}
