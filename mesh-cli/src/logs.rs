//! `meshctl logs NAME [-f] [--tail N]`: any process's log of the local mesh by its name, as
//! `kubectl logs` reads a container's: the control plane (`control-plane`, `mesh-control` or
//! `istiod`), a proxy by any of its names (`gateway`, `helloworld-safe.default`,
//! `deploy/NAME.NS`; see [`crate::up::names`]), or a workload's app (`app/NAME`). After
//! `meshctl down` the logs of the last run are still read from `STATE/logs/`.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use crate::up::names::{self, ProxyRef};
use crate::up::state::{self, MeshState};

/// How often `-f` looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Print a process's log.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// `control-plane` (or `mesh-control`, `istiod`), a proxy (`gateway`,
    /// `istio-ingressgateway.istio-system`, `helloworld-safe`, `deploy/NAME.NS`, ...) or
    /// `app/WORKLOAD`.
    pub name: String,
    /// Keep printing lines as they are written, until interrupted.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines (then new ones with -f).
    #[arg(long)]
    pub tail: Option<usize>,
}

/// The process name (`control-plane`, `proxy/WORKLOAD`, `app/WORKLOAD`) that `name` stands
/// for, by the names of `state`.
pub fn process_name(state: &MeshState, name: &str) -> anyhow::Result<String> {
    if matches!(name, "control-plane" | "mesh-control" | "istiod") {
        return Ok("control-plane".into());
    }
    let proxy_of = |n: &str| -> anyhow::Result<String> {
        Ok(match names::resolve(state, n)? {
            ProxyRef::Gateway(g) => g.name.clone(),
            ProxyRef::Sidecar(s) => s.workload.clone(),
        })
    };
    if let Some(app) = name.strip_prefix("app/") {
        let workload = match names::resolve(state, app)? {
            ProxyRef::Sidecar(s) => s.workload.clone(),
            ProxyRef::Gateway(_) => bail!("the gateway has no app: `meshctl logs gateway`"),
        };
        return Ok(format!("app/{workload}"));
    }
    let proxy = name.strip_prefix("proxy/").unwrap_or(name);
    Ok(format!("proxy/{}", proxy_of(proxy)?))
}

/// The log file of `name`: from the running mesh's state, else (after `down`) from the state
/// directory's `logs/` by the same naming (`proxy/NAME` -> `proxy-NAME.log`).
fn log_file(name: &str) -> anyhow::Result<PathBuf> {
    let dir = state::state_dir()?;
    match MeshState::load(&dir)? {
        Some(s) => {
            let process = process_name(&s, name)?;
            s.processes
                .iter()
                .find(|p| p.name == process)
                .map(|p| p.log.clone())
                .with_context(|| format!("{process} is not a process of the local mesh"))
        }
        None => {
            let logs = dir.join("logs");
            let bare = name
                .trim_start_matches("deploy/")
                .trim_start_matches("pod/");
            let bare = bare.split('.').next().unwrap_or(bare);
            let candidates = [
                format!("{}.log", bare.replace('/', "-")),
                format!("proxy-{bare}.log"),
                match bare {
                    "gateway" => "proxy-istio-ingressgateway.log".to_string(),
                    "mesh-control" | "istiod" => "control-plane.log".to_string(),
                    _ => String::new(),
                },
            ];
            candidates
                .iter()
                .filter(|c| !c.is_empty())
                .map(|c| logs.join(c))
                .find(|p| p.is_file())
                .with_context(|| {
                    format!(
                        "no local mesh running and no log of {name:?} in {}",
                        logs.display()
                    )
                })
        }
    }
}

/// The offset of the last `n` lines of `text`.
fn tail_start(text: &[u8], n: usize) -> usize {
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    if n == 0 { text.len() } else { 0 }
}

fn print_log(path: &Path, follow: bool, tail: Option<usize>) -> anyhow::Result<()> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    let start = tail.map(|n| tail_start(&text, n)).unwrap_or(0);
    let mut out = std::io::stdout().lock();
    out.write_all(&text[start..])?;
    out.flush()?;
    if !follow {
        return Ok(());
    }
    let mut offset = text.len() as u64;
    let mut buf = Vec::new();
    loop {
        std::thread::sleep(FOLLOW_POLL);
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(offset);
        if len < offset {
            // The file was started over (a new `up`): from its beginning.
            offset = 0;
        }
        if len == offset {
            continue;
        }
        file.seek(SeekFrom::Start(offset))?;
        buf.clear();
        file.read_to_end(&mut buf)?;
        offset += buf.len() as u64;
        // A reader gone (`| head`) ends the command quietly.
        if out.write_all(&buf).and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
    }
}

/// `meshctl logs`.
pub fn main(a: LogsArgs) -> ExitCode {
    match log_file(&a.name).and_then(|p| print_log(&p, a.follow, a.tail)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshctl logs: {}", mesh_api::report::one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_count_lines_from_the_end() {
        let t = b"a\nb\nc\n";
        assert_eq!(&t[tail_start(t, 2)..], b"b\nc\n");
        assert_eq!(&t[tail_start(t, 5)..], b"a\nb\nc\n");
        assert_eq!(&t[tail_start(t, 0)..], b"");
        assert_eq!(&b"a\nb"[tail_start(b"a\nb", 1)..], b"b");
    }
}
