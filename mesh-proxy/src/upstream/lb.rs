//! Load balancers: pick one host of a cluster for one request.
//!
//! Each balancer is built for one immutable host set (a new set builds a
//! new balancer) and works on the highest priority level that has a
//! routable host. Hash-based balancers take the request hash computed from
//! the route's `hash_policy` (see [`super::hash`]).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use xxhash_rust::xxh64::xxh64;

use super::cluster::{Host, HostSet};
use crate::model::LbPolicy;

#[derive(Debug)]
pub struct LoadBalancer {
    kind: Kind,
    /// One entry per priority level of the host set, same order.
    levels: Vec<LevelState>,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    RoundRobin,
    Random,
    LeastRequest { choices: u32 },
    RingHash,
    Maglev,
}

#[derive(Debug)]
enum LevelState {
    None,
    RoundRobin(RoundRobin),
    Ring(Ring),
    Maglev(Vec<usize>),
}

impl LoadBalancer {
    pub fn new(policy: &LbPolicy, set: &HostSet) -> LoadBalancer {
        let kind = match policy {
            LbPolicy::RoundRobin => Kind::RoundRobin,
            LbPolicy::Random => Kind::Random,
            LbPolicy::LeastRequest { choice_count } => Kind::LeastRequest {
                choices: (*choice_count).max(1),
            },
            LbPolicy::RingHash { .. } => Kind::RingHash,
            LbPolicy::Maglev { .. } => Kind::Maglev,
        };
        let levels = set
            .levels
            .iter()
            .map(|level| &level.hosts)
            .map(|hosts| match policy {
                LbPolicy::RoundRobin => LevelState::RoundRobin(RoundRobin::new(hosts)),
                LbPolicy::RingHash {
                    minimum_ring_size,
                    maximum_ring_size,
                } => LevelState::Ring(Ring::new(hosts, *minimum_ring_size, *maximum_ring_size)),
                LbPolicy::Maglev { table_size } => {
                    LevelState::Maglev(maglev_table(hosts, *table_size))
                }
                _ => LevelState::None,
            })
            .collect();
        LoadBalancer { kind, levels }
    }

    /// Chooses a priority level by load, then a host in it; `hash` is the
    /// request hash for RING_HASH and MAGLEV (a random host without one, as
    /// Envoy does). `None` when the cluster has no host to send to.
    pub fn pick(&self, set: &HostSet, hash: Option<u64>) -> Option<Arc<Host>> {
        let index = set.choose_level()?;
        let hosts = &set.levels.get(index)?.hosts;
        let state = self.levels.get(index)?;
        let chosen = match (self.kind, state) {
            (Kind::RoundRobin, LevelState::RoundRobin(rr)) => rr.pick(),
            (Kind::Random, _) => weighted_random(hosts),
            (Kind::LeastRequest { choices }, _) => {
                // Power of N choices with replacement: each draw is uniform.
                (0..choices)
                    .map(|_| rand::random_range(0..hosts.len()))
                    .min_by_key(|&i| hosts[i].state.stats.rq_active.get())
            }
            (Kind::RingHash, LevelState::Ring(ring)) => {
                ring.lookup(hash.unwrap_or_else(rand::random))
            }
            (Kind::Maglev, LevelState::Maglev(table)) if !table.is_empty() => {
                let h = hash.unwrap_or_else(rand::random);
                Some(table[(h % table.len() as u64) as usize])
            }
            _ => Some(0),
        };
        chosen.and_then(|i| hosts.get(i)).cloned()
    }
}

fn weighted_random(hosts: &[Arc<Host>]) -> Option<usize> {
    let total: u64 = hosts.iter().map(|h| u64::from(h.weight.max(1))).sum();
    let mut roll = rand::random_range(0..total.max(1));
    for (i, h) in hosts.iter().enumerate() {
        let w = u64::from(h.weight.max(1));
        if roll < w {
            return Some(i);
        }
        roll -= w;
    }
    None
}

/// Plain rotation when all weights are equal; smooth weighted round robin
/// otherwise, which spreads a heavy host's turns instead of bunching them.
#[derive(Debug)]
struct RoundRobin {
    next: AtomicUsize,
    len: usize,
    weighted: Option<Mutex<Vec<(i64, i64)>>>,
}

impl RoundRobin {
    fn new(hosts: &[Arc<Host>]) -> RoundRobin {
        let equal = hosts.windows(2).all(|w| w[0].weight == w[1].weight);
        let weighted = (!equal).then(|| {
            Mutex::new(
                hosts
                    .iter()
                    .map(|h| (i64::from(h.weight.max(1)), 0))
                    .collect(),
            )
        });
        let start = if hosts.is_empty() {
            0
        } else {
            rand::random_range(0..hosts.len())
        };
        RoundRobin {
            next: AtomicUsize::new(start),
            len: hosts.len(),
            weighted,
        }
    }

    fn pick(&self) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        match &self.weighted {
            None => Some(self.next.fetch_add(1, Ordering::Relaxed) % self.len),
            Some(state) => {
                let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
                let total: i64 = state.iter().map(|(w, _)| *w).sum();
                let mut best = 0;
                for i in 0..state.len() {
                    state[i].1 += state[i].0;
                    if state[i].1 > state[best].1 {
                        best = i;
                    }
                }
                state[best].1 -= total;
                Some(best)
            }
        }
    }
}

/// Envoy's ketama-style ring: each host owns a number of points in
/// proportion to its weight, hashed from `ADDRESS_N` with xxHash64.
#[derive(Debug)]
struct Ring {
    points: Vec<(u64, usize)>,
}

impl Ring {
    fn new(hosts: &[Arc<Host>], min_size: u64, max_size: u64) -> Ring {
        if hosts.is_empty() {
            return Ring { points: Vec::new() };
        }
        let total: f64 = hosts.iter().map(|h| f64::from(h.weight.max(1))).sum();
        let min_norm = hosts
            .iter()
            .map(|h| f64::from(h.weight.max(1)) / total)
            .fold(f64::MAX, f64::min);
        let scale = ((min_norm * min_size as f64).ceil() / min_norm).min(max_size as f64);
        let mut points = Vec::new();
        let mut current = 0.0f64;
        let mut target = 0.0f64;
        for (i, h) in hosts.iter().enumerate() {
            let address = h.state.address.to_string();
            target += scale * f64::from(h.weight.max(1)) / total;
            let mut n = 0u64;
            while current < target {
                let key = format!("{address}_{n}");
                points.push((xxh64(key.as_bytes(), 0), i));
                n += 1;
                current += 1.0;
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    fn lookup(&self, hash: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let at = self.points.partition_point(|(h, _)| *h < hash);
        Some(self.points[at % self.points.len()].1)
    }
}

/// Maglev lookup table: entry `i` holds the index of the host for hashes
/// `≡ i (mod size)`. Weighted as Envoy weights it: a host with a fraction of
/// the largest weight takes a turn only every so many rounds.
fn maglev_table(hosts: &[Arc<Host>], size: u64) -> Vec<usize> {
    if hosts.is_empty() || size < 2 {
        return Vec::new();
    }
    let max_w = hosts
        .iter()
        .map(|h| f64::from(h.weight.max(1)))
        .fold(0.0, f64::max);
    struct Entry {
        offset: u64,
        skip: u64,
        weight: f64,
        target: f64,
        next: u64,
    }
    let mut entries: Vec<Entry> = hosts
        .iter()
        .map(|h| {
            let key = h.state.address.to_string();
            Entry {
                offset: xxh64(key.as_bytes(), 0) % size,
                skip: xxh64(key.as_bytes(), 1) % (size - 1) + 1,
                weight: f64::from(h.weight.max(1)) / max_w,
                target: 0.0,
                next: 0,
            }
        })
        .collect();
    let mut table: Vec<Option<usize>> = vec![None; size as usize];
    let mut filled = 0u64;
    let mut iteration = 1u64;
    while filled < size {
        for (i, e) in entries.iter_mut().enumerate() {
            if filled >= size {
                break;
            }
            if (iteration as f64) * e.weight < e.target {
                continue;
            }
            e.target += 1.0;
            loop {
                let c = ((e.offset + e.skip * e.next) % size) as usize;
                e.next += 1;
                if table[c].is_none() {
                    table[c] = Some(i);
                    filled += 1;
                    break;
                }
            }
        }
        iteration += 1;
    }
    table.into_iter().map(|e| e.unwrap_or(0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DEFAULT_RING_MAX, DEFAULT_RING_MIN, HealthStatus};
    use crate::upstream::cluster::tests::host;
    use std::collections::HashMap;
    use std::net::SocketAddr;

    fn set(hosts: Vec<Arc<Host>>) -> HostSet {
        HostSet::new(hosts)
    }

    fn addr(h: &Arc<Host>) -> SocketAddr {
        h.state.address
    }

    #[test]
    fn round_robin_alternates_and_weights() {
        let s = set(vec![
            host(1, 1, 0, HealthStatus::Healthy),
            host(2, 1, 0, HealthStatus::Healthy),
        ]);
        let lb = LoadBalancer::new(&LbPolicy::RoundRobin, &s);
        let picks: Vec<_> = (0..6).map(|_| addr(&lb.pick(&s, None).unwrap())).collect();
        for w in picks.windows(2) {
            assert_ne!(w[0], w[1]);
        }
        let s = set(vec![
            host(1, 3, 0, HealthStatus::Healthy),
            host(2, 1, 0, HealthStatus::Healthy),
        ]);
        let lb = LoadBalancer::new(&LbPolicy::RoundRobin, &s);
        let mut counts = HashMap::new();
        for _ in 0..400 {
            *counts
                .entry(lb.pick(&s, None).unwrap().state.address.port())
                .or_insert(0) += 1;
        }
        assert_eq!(counts[&1], 300);
        assert_eq!(counts[&2], 100);
    }

    #[test]
    fn health_and_priority() {
        use HealthStatus::*;
        let s = set(vec![
            host(1, 1, 0, Unhealthy),
            host(2, 1, 1, Healthy),
            host(3, 1, 2, Healthy),
        ]);
        let lb = LoadBalancer::new(&LbPolicy::Random, &s);
        for _ in 0..20 {
            assert_eq!(lb.pick(&s, None).unwrap().state.address.port(), 2);
        }
        // One of two healthy in P0: 50% x 1.4 = 70% stays, 30% spills to P1.
        let s = set(vec![
            host(1, 1, 0, Healthy),
            host(2, 1, 0, Unhealthy),
            host(3, 1, 1, Healthy),
        ]);
        let loads: Vec<u32> = s.levels.iter().map(|l| l.load).collect();
        assert_eq!(loads, vec![70, 30]);
        // Nothing healthy anywhere: panic, balance over every host of P0.
        let s = set(vec![host(1, 1, 0, Draining), host(2, 1, 1, Unhealthy)]);
        assert!(s.levels[0].panic);
        let lb = LoadBalancer::new(&LbPolicy::RoundRobin, &s);
        assert_eq!(lb.pick(&s, None).unwrap().state.address.port(), 1);
        // Under 100% total health, a level under the 50% threshold panics.
        let s = set(vec![
            host(1, 1, 0, Healthy),
            host(2, 1, 0, Unhealthy),
            host(3, 1, 0, Unhealthy),
        ]);
        assert!(s.levels[0].panic && s.levels[0].hosts.len() == 3);
        // No hosts at all: nothing to pick.
        let s = set(vec![]);
        assert!(
            LoadBalancer::new(&LbPolicy::RoundRobin, &s)
                .pick(&s, None)
                .is_none()
        );
    }

    #[test]
    fn ring_hash_is_consistent_and_moves_few_keys() {
        let policy = LbPolicy::RingHash {
            minimum_ring_size: DEFAULT_RING_MIN,
            maximum_ring_size: DEFAULT_RING_MAX,
        };
        let hosts: Vec<_> = (1..=4)
            .map(|p| host(p, 1, 0, HealthStatus::Healthy))
            .collect();
        let s4 = set(hosts.clone());
        let lb4 = LoadBalancer::new(&policy, &s4);
        let mut more = hosts;
        more.push(host(5, 1, 0, HealthStatus::Healthy));
        let s5 = set(more);
        let lb5 = LoadBalancer::new(&policy, &s5);
        let mut moved = 0;
        for k in 0..1000u64 {
            let h = xxh64(&k.to_le_bytes(), 0);
            let a = lb4.pick(&s4, Some(h)).unwrap().state.address;
            assert_eq!(a, lb4.pick(&s4, Some(h)).unwrap().state.address);
            if a != lb5.pick(&s5, Some(h)).unwrap().state.address {
                moved += 1;
            }
        }
        // Ideal is 1/5 of the keys; all of them would be a broken ring.
        assert!((100..=350).contains(&moved), "moved {moved}");
    }

    #[test]
    fn maglev_spreads_and_is_consistent() {
        let hosts: Vec<_> = (1..=3)
            .map(|p| host(p, 1, 0, HealthStatus::Healthy))
            .collect();
        let s = set(hosts);
        let lb = LoadBalancer::new(&LbPolicy::Maglev { table_size: 65537 }, &s);
        let mut counts = HashMap::new();
        for k in 0..3000u64 {
            let h = xxh64(&k.to_le_bytes(), 0);
            let a = lb.pick(&s, Some(h)).unwrap().state.address.port();
            assert_eq!(a, lb.pick(&s, Some(h)).unwrap().state.address.port());
            *counts.entry(a).or_insert(0) += 1;
        }
        assert!(counts.values().all(|&c| c > 700), "{counts:?}");
    }
}
