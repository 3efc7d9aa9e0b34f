//! Hosts indexed for the checks that compare the hosts of every resource with
//! those of every other (IST0109, IST0145, destinations against the registry
//! and DestinationRules, VirtualService hosts against a Gateway's): the
//! candidates come in time proportional to the answer, not to the input.
//!
//! The index may return more than the hosts that overlap, never fewer: each
//! caller confirms a candidate with [`host_matches`](crate::host::host_matches)
//! or [`hosts_overlap`](crate::host::hosts_overlap), so the findings are
//! exactly those of comparing every pair.

use std::collections::HashMap;

/// Ids (the caller's positions) of hosts, by the ways two hosts can overlap.
pub(super) struct HostIndex<'a> {
    /// Hosts without a wildcard, ASCII-lowercased: they compare case-insensitively.
    exact: HashMap<String, Vec<usize>>,
    /// Wildcard hosts `*SUFFIX` by `SUFFIX` (`*` itself under the empty suffix).
    wildcard: HashMap<&'a str, Vec<usize>>,
    /// Hosts without a wildcard, reversed and sorted: those that end with a
    /// given suffix form one range.
    reversed: Vec<(String, usize)>,
    /// The suffixes of the wildcard hosts, reversed and sorted.
    reversed_wildcard: Vec<(String, usize)>,
}

impl<'a> HostIndex<'a> {
    pub fn new(hosts: impl IntoIterator<Item = (&'a str, usize)>) -> HostIndex<'a> {
        let mut index = HostIndex {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            reversed: Vec::new(),
            reversed_wildcard: Vec::new(),
        };
        for (host, id) in hosts {
            match host.strip_prefix('*') {
                Some(suffix) => {
                    index.wildcard.entry(suffix).or_default().push(id);
                    index.reversed_wildcard.push((reverse(suffix), id));
                }
                None => {
                    index
                        .exact
                        .entry(host.to_ascii_lowercase())
                        .or_default()
                        .push(id);
                    index.reversed.push((reverse(host), id));
                }
            }
        }
        index.reversed.sort_unstable();
        index.reversed_wildcard.sort_unstable();
        index
    }

    /// Pushes onto `out` the ids of every host that may overlap `host` (either
    /// matches the other), and possibly others; ids may repeat.
    pub fn overlapping(&self, host: &str, out: &mut Vec<usize>) {
        // `*` overlaps every host.
        self.wildcard_with_suffix("", out);
        match host.strip_prefix('*') {
            None => {
                if let Some(ids) = self.exact.get(&host.to_ascii_lowercase()) {
                    out.extend_from_slice(ids);
                }
                // `*SUFFIX` matches a longer host that ends with SUFFIX.
                for (i, _) in host.char_indices().skip(1) {
                    self.wildcard_with_suffix(&host[i..], out);
                }
            }
            Some(suffix) => {
                // Longer hosts ending with the suffix, and wildcards whose
                // suffix ends with it or that it ends with.
                let reversed_suffix = reverse(suffix);
                starting_with(&self.reversed, &reversed_suffix, out);
                starting_with(&self.reversed_wildcard, &reversed_suffix, out);
                for (i, _) in suffix.char_indices() {
                    self.wildcard_with_suffix(&suffix[i..], out);
                }
            }
        }
    }

    fn wildcard_with_suffix(&self, suffix: &str, out: &mut Vec<usize>) {
        if let Some(ids) = self.wildcard.get(suffix) {
            out.extend_from_slice(ids);
        }
    }
}

fn reverse(s: &str) -> String {
    s.chars().rev().collect()
}

/// Ids of the entries of `sorted` whose key starts with `prefix`.
fn starting_with(sorted: &[(String, usize)], prefix: &str, out: &mut Vec<usize>) {
    let start = sorted.partition_point(|(k, _)| k.as_str() < prefix);
    out.extend(
        sorted[start..]
            .iter()
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, id)| *id),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::hosts_overlap;

    /// The index finds every overlapping pair that comparing all pairs finds.
    #[test]
    fn finds_every_overlap() {
        let hosts = [
            "a.example.com",
            "A.Example.com",
            "b.example.com",
            "*.example.com",
            "*.b.example.com",
            "*example.com",
            "*",
            "",
            "example.com",
            "*.com",
            "x.b.example.com",
            "*.other.org",
            "a.other.org",
            "reviews.default.svc.cluster.local",
            "*.svc.cluster.local",
            "ünï.example.com",
            "*ï.example.com",
        ];
        let index = HostIndex::new(hosts.iter().enumerate().map(|(i, h)| (*h, i)));
        for q in hosts
            .iter()
            .chain(["*.b.example.com", "zzz", "*.zzz", "*ample.com"].iter())
        {
            let mut found = Vec::new();
            index.overlapping(q, &mut found);
            for (i, h) in hosts.iter().enumerate() {
                if hosts_overlap(q, h) {
                    assert!(
                        found.contains(&i),
                        "{q:?} overlaps {h:?}: not found in {found:?}"
                    );
                }
            }
        }
    }
}
