//! Istio's `sidecar.SelectorAnalyzer`: IST0101, IST0110, IST0111, IST0167.

use std::collections::{BTreeMap, BTreeSet};

use super::{not_found, pods, selector_string};
use crate::analysis::{Index, Message, codes};
use crate::resource::Resource;

/// Namespace label putting workloads in ambient mode (no sidecars).
const LABEL_DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
/// Pod annotation set on workloads redirected to the ambient data plane.
const ANNOTATION_AMBIENT_REDIRECTION: &str = "ambient.istio.io/redirection";

/// IST0111/IST0110/IST0101 for Sidecars: several without selector in a
/// namespace, several selecting one pod, a selector that matches no pod.
pub(in crate::analysis) fn sidecar_selectors(index: &Index<'_>, out: &mut Vec<Message>) {
    let pods = pods(index);
    let ambient_namespaces: BTreeSet<&str> = index
        .namespaces()
        .filter(|(r, _)| {
            r.meta.labels.get(LABEL_DATAPLANE_MODE).map(String::as_str) == Some("ambient")
                && r.meta
                    .labels
                    .get(crate::constants::LABEL_ISTIO_INJECTION)
                    .map(String::as_str)
                    != Some(crate::constants::INJECTION_ENABLED)
                && !r
                    .meta
                    .labels
                    .contains_key(crate::constants::LABEL_ISTIO_REV)
        })
        .map(|(r, _)| r.meta.name.as_str())
        .collect();
    let ineffective = |r: &Resource, reason: &str| {
        Message::about(
            codes::IneffectivePolicy,
            r,
            "spec",
            format!("The policy has no impact: {reason}, the policy has no impact."),
        )
    };
    let mut no_selector: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
    let mut per_pod: BTreeMap<(String, String), Vec<&Resource>> = BTreeMap::new();
    for (r, sc) in index.sidecars() {
        let labels = sc
            .spec
            .workload_selector
            .as_ref()
            .map(|s| &s.labels)
            .filter(|l| !l.is_empty());
        let Some(labels) = labels else {
            if ambient_namespaces.contains(r.meta.namespace.as_str()) {
                out.push(ineffective(r, "namespace is in ambient mode"));
                continue;
            }
            no_selector.entry(&r.meta.namespace).or_default().push(r);
            continue;
        };
        let matching: Vec<&Resource> = pods
            .selected(labels, Some(&r.meta.namespace))
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        if matching.is_empty() {
            if !pods.is_empty() {
                out.push(not_found(
                    r,
                    "spec.workloadSelector",
                    "selector",
                    &selector_string(labels),
                ));
            }
            continue;
        }
        if matching.iter().any(|p| {
            p.meta
                .annotations
                .get(ANNOTATION_AMBIENT_REDIRECTION)
                .map(String::as_str)
                == Some("enabled")
        }) {
            out.push(ineffective(r, "selected workload is in ambient mode"));
            continue;
        }
        for p in matching {
            per_pod
                .entry((p.meta.namespace.clone(), p.meta.name.clone()))
                .or_default()
                .push(r);
        }
    }
    for (ns, list) in no_selector {
        let mut names: Vec<&str> = list.iter().map(|r| r.meta.name.as_str()).collect();
        names.sort();
        names.dedup();
        if names.len() < 2 {
            continue;
        }
        for r in &list {
            out.push(Message::about(
                codes::MultipleSidecarsWithoutWorkloadSelectors,
                r,
                "spec",
                format!(
                    "The Sidecars [{}] in namespace {ns:?} have no workload selector, which can lead to undefined behavior.",
                    names.join(" ")
                ),
            ));
        }
    }
    let mut reported = BTreeSet::new();
    for ((ns, pod), list) in per_pod {
        let mut names: Vec<&str> = list.iter().map(|r| r.meta.name.as_str()).collect();
        names.sort();
        names.dedup();
        if names.len() < 2 {
            continue;
        }
        for r in &list {
            if reported.insert(r.meta.key()) {
                out.push(Message::about(
                    codes::ConflictingSidecarWorkloadSelectors,
                    r,
                    "spec.workloadSelector",
                    format!(
                        "The Sidecars [{}] in namespace {ns:?} select the same workload pod {pod:?}, which can lead to undefined behavior.",
                        names.join(" ")
                    ),
                ));
            }
        }
    }
}
