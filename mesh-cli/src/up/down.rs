//! `meshctl down`: stop every process of the recorded mesh.

use std::time::{Duration, Instant};

use super::state::MeshState;

use super::*;

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
