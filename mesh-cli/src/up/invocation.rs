//! How the user runs `meshctl`, so that printed hints can be pasted as they are: `meshctl`
//! when that is what `PATH` finds, `cargo run -q -p mesh-cli --` when cargo started it, else
//! the binary's path.

use std::path::{Path, PathBuf};

/// The command that runs this `meshctl`.
pub fn meshctl_command() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "meshctl".into();
    };
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("meshctl"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.is_file());
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if on_path.as_deref().is_some_and(|p| same(p, &exe)) {
        return "meshctl".into();
    }
    if parent_is_cargo() {
        let release = exe
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|d| d == "release");
        return format!(
            "cargo run -q{} -p mesh-cli --",
            if release { " --release" } else { "" }
        );
    }
    display_path(&exe)
}

/// `./target/debug/meshctl` under the working directory, else the absolute path.
fn display_path(exe: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    match exe.strip_prefix(&cwd) {
        Ok(rel) => format!("./{}", rel.display()),
        Err(_) => exe.display().to_string(),
    }
}

/// Whether the parent process is cargo (`cargo run`), from `/proc`.
fn parent_is_cargo() -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return false;
    };
    // `PID (COMM) STATE PPID ...`: COMM may hold spaces and parentheses.
    let ppid = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .unwrap_or_default();
    std::fs::read_to_string(PathBuf::from("/proc").join(ppid).join("comm"))
        .is_ok_and(|c| c.trim() == "cargo")
}
