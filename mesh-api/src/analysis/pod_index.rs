//! The input's pods by namespace and by label, for the checks that look for
//! the pods a selector picks (gateways, Sidecars, policies): without it each
//! selector was compared with every pod.

use std::collections::{BTreeMap, HashMap};

use crate::resource::Resource;

/// Pods with their labels, in input order, and where to find them.
pub(super) struct PodIndex<'a> {
    pub pods: Vec<(&'a Resource, &'a BTreeMap<String, String>)>,
    by_label: HashMap<(&'a str, &'a str), Vec<usize>>,
    by_namespace: HashMap<&'a str, Vec<usize>>,
}

impl<'a> PodIndex<'a> {
    pub fn new(pods: Vec<(&'a Resource, &'a BTreeMap<String, String>)>) -> PodIndex<'a> {
        let mut by_label: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
        let mut by_namespace: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, (p, labels)) in pods.iter().enumerate() {
            by_namespace
                .entry(p.meta.namespace.as_str())
                .or_default()
                .push(i);
            for (k, v) in labels.iter() {
                by_label
                    .entry((k.as_str(), v.as_str()))
                    .or_default()
                    .push(i);
            }
        }
        PodIndex {
            pods,
            by_label,
            by_namespace,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// The pods (in input order) whose labels include every label of
    /// `selector` (every pod for an empty one), only in `namespace` if given.
    pub fn selected(
        &self,
        selector: &BTreeMap<String, String>,
        namespace: Option<&str>,
    ) -> Vec<(&'a Resource, &'a BTreeMap<String, String>)> {
        const NONE: &[usize] = &[];
        // The pods with the rarest of the required labels (or namespace).
        let mut lists = selector.iter().map(|(k, v)| {
            self.by_label
                .get(&(k.as_str(), v.as_str()))
                .map_or(NONE, Vec::as_slice)
        });
        let in_namespace =
            namespace.map(|ns| self.by_namespace.get(ns).map_or(NONE, Vec::as_slice));
        let shortest = in_namespace
            .into_iter()
            .chain(&mut lists)
            .min_by_key(|l| l.len());
        let keep = |(p, labels): &(&'a Resource, &'a BTreeMap<String, String>)| {
            namespace.is_none_or(|ns| p.meta.namespace == ns)
                && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        };
        match shortest {
            Some(ids) => ids
                .iter()
                .map(|&i| self.pods[i])
                .filter(|p| keep(p))
                .collect(),
            None => self.pods.iter().copied().filter(|p| keep(p)).collect(),
        }
    }
}
