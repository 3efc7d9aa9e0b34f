//! Ports for the local mesh's processes, chosen before they start (the control plane puts
//! the proxies' listener ports in its xDS, so they cannot bind port 0 and report back).
//!
//! The ports come from just below the kernel's ephemeral range. A port handed out is only
//! free until its process binds it; inside the ephemeral range, any outgoing connection of
//! any process on the machine (a browser, a test's client, the mesh's own traffic) can take
//! it in that window, and the proxy then fails to start with "address in use". Below the
//! range, the kernel never picks a port by itself: only another program that chooses ports
//! explicitly can collide, and a random starting point makes that rare.

use std::hash::{BuildHasher, RandomState};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::ops::Range;

use anyhow::Context as _;

/// Ports below this are left alone (well-known and commonly configured ones).
const LOWEST: u16 = 10_000;

/// Hands out free 127.0.0.1 ports. Each probe socket stays bound until the allocator is
/// dropped, so one `up` never hands out the same port twice; the processes that get the ports
/// bind them soon after the allocator is dropped.
pub struct PortAllocator {
    range: Option<Range<u16>>,
    cursor: u16,
    held: Vec<TcpListener>,
}

impl Default for PortAllocator {
    fn default() -> Self {
        let range = below_ephemeral(ephemeral_range());
        // One random start per `up`, then consecutive ports: two `up`s running at once
        // collide only when their starts fall within a few ports of each other.
        let cursor = range.as_ref().map_or(0, |r| {
            let span = u64::from(r.end - r.start);
            r.start
                + u16::try_from(RandomState::new().hash_one(std::process::id()) % span).unwrap_or(0)
        });
        Self {
            range,
            cursor,
            held: Vec::new(),
        }
    }
}

impl PortAllocator {
    pub fn next(&mut self) -> anyhow::Result<SocketAddr> {
        if let Some(range) = self.range.clone() {
            for _ in 0..range.len().min(512) {
                let port = self.cursor;
                self.cursor = if port + 1 >= range.end {
                    range.start
                } else {
                    port + 1
                };
                if let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
                    return self.hold(listener);
                }
            }
        }
        // No room below the ephemeral range (or every probe there was taken): let the
        // kernel choose, as before.
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("allocating a 127.0.0.1 port")?;
        self.hold(listener)
    }

    fn hold(&mut self, listener: TcpListener) -> anyhow::Result<SocketAddr> {
        let addr = listener
            .local_addr()
            .context("allocating a 127.0.0.1 port")?;
        self.held.push(listener);
        Ok(addr)
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
        let ports: Vec<u16> = (0..20).map(|_| alloc.next().unwrap().port()).collect();
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
