//! Free 127.0.0.1 ports for processes that must be told theirs before they start: the local
//! mesh's (the control plane puts the proxies' listener ports in its xDS, so they cannot bind
//! port 0 and report back) and the tests' (Envoy bootstraps name their ports).
//!
//! A port handed out is free only until its process binds it, and two things can take it in
//! that window:
//! - the kernel, for any process's outgoing connection or bind to port 0, inside its
//!   ephemeral range: so the ports come from below that range, where it never picks one;
//! - another `meshctl up` starting at the same time (the tests start several) that probes
//!   the same port before this one's process binds it: so each port handed out is reserved
//!   machine-wide, as a file named by the port in `$TMPDIR/meshctl-ports` holding the
//!   reserving process's pid, kept while that `up` runs (a reservation whose process is gone
//!   is taken over).
//!
//! Each port is drawn at random from the range, so two reservations rarely even meet.

use std::hash::{BuildHasher, RandomState};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::ops::Range;
use std::path::PathBuf;

/// Ports below this are left alone (well-known and commonly configured ones).
const LOWEST: u16 = 10_000;
/// Random draws before falling back to a port the kernel picks.
const ATTEMPTS: usize = 200;

/// Hands out free 127.0.0.1 ports, each probed (bound until [`Self::release_probes`]) and
/// reserved machine-wide.
pub struct PortAllocator {
    range: Option<Range<u16>>,
    random: RandomState,
    draws: u64,
    held: Vec<TcpListener>,
    reservations: Reservations,
}

/// The reservation files of one `up`, removed when dropped.
#[derive(Default)]
pub struct Reservations {
    files: Vec<PathBuf>,
}

impl Drop for Reservations {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

impl Default for PortAllocator {
    fn default() -> Self {
        sweep_stale();
        PortAllocator {
            range: below_ephemeral(ephemeral_range()),
            random: RandomState::new(),
            draws: 0,
            held: Vec::new(),
            reservations: Reservations::default(),
        }
    }
}

fn reservation_dir() -> PathBuf {
    std::env::temp_dir().join("meshctl-ports")
}

/// Whether the process that wrote a reservation still runs. A file without a pid yet (just
/// created, its pid being written) counts as alive for a while.
fn holder_alive(path: &std::path::Path) -> bool {
    let holder = std::fs::read_to_string(path).unwrap_or_default();
    match holder.trim().parse::<u32>() {
        Ok(pid) => std::path::Path::new(&format!("/proc/{pid}")).exists(),
        Err(_) => std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age < std::time::Duration::from_secs(10)),
    }
}

/// Removes reservations whose process is gone (test processes end without dropping theirs),
/// so the directory holds only live ones.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(reservation_dir()) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if !holder_alive(&path) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Reserves `port` for this process; false when a live process holds it.
fn reserve(port: u16) -> Option<PathBuf> {
    let dir = reservation_dir();
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(port.to_string());
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                let _ = write!(f, "{}", std::process::id());
                return Some(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if holder_alive(&path) {
                    return None;
                }
                // Left by an `up` that is gone: take it over.
                let _ = std::fs::remove_file(&path);
            }
            Err(_) => return None,
        }
    }
    None
}

impl PortAllocator {
    pub fn allocate(&mut self) -> std::io::Result<SocketAddr> {
        if let Some(range) = self.range.clone() {
            let span = u64::from(range.end - range.start);
            for _ in 0..ATTEMPTS {
                self.draws += 1;
                let offset = self.random.hash_one(self.draws) % span;
                let port = range.start + u16::try_from(offset).unwrap_or(0);
                let Some(file) = reserve(port) else { continue };
                match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
                    Ok(listener) => {
                        self.reservations.files.push(file);
                        return self.hold(listener);
                    }
                    Err(_) => {
                        let _ = std::fs::remove_file(file);
                    }
                }
            }
        }
        // No room below the ephemeral range (or no free port found there): let the kernel
        // choose.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        self.hold(listener)
    }

    fn hold(&mut self, listener: TcpListener) -> std::io::Result<SocketAddr> {
        let addr = listener.local_addr()?;
        self.held.push(listener);
        Ok(addr)
    }

    /// Closes the probe sockets so the processes can bind the ports; the reservations stay
    /// until the returned value is dropped (when `up` ends).
    pub fn release_probes(self) -> Reservations {
        let PortAllocator {
            held, reservations, ..
        } = self;
        drop(held);
        reservations
    }
}

/// The kernel's range for ports it picks itself (Linux; the IANA range elsewhere).
fn ephemeral_range() -> Range<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| parse_port_range(&s))
        .unwrap_or(49_152..u16::MAX)
}
fn parse_port_range(s: &str) -> Option<Range<u16>> {
    let mut it = s.split_whitespace().map(str::parse::<u16>);
    let (lo, hi) = (it.next()?.ok()?, it.next()?.ok()?);
    (lo <= hi).then(|| lo..hi.saturating_add(1))
}

/// Up to 10,000 ports just below `ephemeral`, never below [`LOWEST`]; `None` when that
/// leaves fewer than 1,000.
fn below_ephemeral(ephemeral: Range<u16>) -> Option<Range<u16>> {
    let end = ephemeral.start;
    let start = end.saturating_sub(10_000).max(LOWEST);
    (end.saturating_sub(start) >= 1_000).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_below_the_ephemeral_range_and_are_distinct() {
        let ephemeral = ephemeral_range();
        let mut alloc = PortAllocator::default();
        let ports: Vec<u16> = (0..20).map(|_| alloc.allocate().unwrap().port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        if below_ephemeral(ephemeral.clone()).is_some() {
            assert!(
                ports.iter().all(|p| (LOWEST..ephemeral.start).contains(p)),
                "{ports:?} vs ephemeral {ephemeral:?}"
            );
        }
    }

    #[test]
    fn a_port_reserved_by_a_live_process_is_not_handed_out_and_is_freed_on_drop() {
        let mut alloc = PortAllocator::default();
        let port = alloc.allocate().unwrap().port();
        if alloc.range.is_none() {
            return;
        }
        let file = reservation_dir().join(port.to_string());
        assert!(file.exists());
        // Held by this (live) process: not reservable again.
        assert!(reserve(port).is_none());
        let reservations = alloc.release_probes();
        assert!(file.exists(), "kept after the probes are released");
        drop(reservations);
        assert!(!file.exists(), "removed when up ends");
        // One left by a process that is gone is taken over, or swept by the next allocator.
        std::fs::write(&file, "4294967295").unwrap();
        let taken = reserve(port).expect("a stale reservation is taken over");
        std::fs::write(&taken, "4294967295").unwrap();
        drop(PortAllocator::default());
        assert!(!taken.exists(), "swept");
        // One whose pid is not written yet is left alone.
        std::fs::write(&file, "").unwrap();
        drop(PortAllocator::default());
        assert!(
            file.exists(),
            "a fresh reservation without its pid yet stays"
        );
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some(32768..61000));
        assert_eq!(parse_port_range("1024 65535"), Some(1024..u16::MAX));
        assert_eq!(parse_port_range("60999 32768"), None);
        assert_eq!(parse_port_range("x"), None);
        assert_eq!(below_ephemeral(32768..61000), Some(22768..32768));
        assert_eq!(below_ephemeral(15000..61000), Some(10000..15000));
        assert_eq!(below_ephemeral(10500..61000), None);
        assert_eq!(below_ephemeral(1024..u16::MAX), None);
    }
}
