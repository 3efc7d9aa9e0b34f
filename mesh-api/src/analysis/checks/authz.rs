//! Istio's `authz.AuthorizationPoliciesAnalyzer`: IST0127, IST0101.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use super::{not_found, pods, selector_string};
use crate::analysis::{Index, Message, codes};
use crate::constants::ROOT_NAMESPACE;

/// IST0127 for policies that select no pod, IST0101 for unknown source namespaces.
/// Only run when the input holds pods.
pub(in crate::analysis) fn authorization_policies(index: &Index<'_>, out: &mut Vec<Message>) {
    let pods = pods(index);
    if pods.is_empty() {
        return;
    }
    let namespaces: BTreeSet<&str> = index
        .namespaces()
        .map(|(r, _)| r.meta.name.as_str())
        .chain(index.resources.iter().map(|r| r.meta.namespace.as_str()))
        .collect();
    for (r, ap) in index.authorization_policies() {
        let mesh_wide = r.meta.namespace == ROOT_NAMESPACE;
        let labels = ap.spec.selector.as_ref().map(|s| &s.match_labels);
        let any_pod = BTreeMap::new();
        let namespace = (!mesh_wide).then_some(r.meta.namespace.as_str());
        let matches = !pods
            .selected(labels.unwrap_or(&any_pod), namespace)
            .is_empty();
        if !matches && ap.spec.target_ref.is_none() && ap.spec.target_refs.is_empty() {
            out.push(Message::about(
                codes::NoMatchingWorkloadsFound,
                r,
                "spec.selector",
                format!(
                    "No matching workloads for this resource with the following labels: {}",
                    labels.map(selector_string).unwrap_or_default()
                ),
            ));
        }
        for (i, rule) in ap.spec.rules.iter().enumerate() {
            for (j, from) in rule.from.iter().enumerate() {
                let Some(src) = &from.source else { continue };
                for (field, list) in [
                    ("namespaces", &src.namespaces),
                    ("notNamespaces", &src.not_namespaces),
                ] {
                    for ns in list {
                        let exists = if ns == "*" {
                            !namespaces.is_empty()
                        } else if let Some(prefix) = ns.strip_suffix('*') {
                            // Names with a prefix follow the prefix itself in order.
                            namespaces
                                .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                                .next()
                                .is_some_and(|n| n.starts_with(prefix))
                        } else if let Some(suffix) = ns.strip_prefix('*') {
                            namespaces.iter().any(|n| n.ends_with(suffix))
                        } else {
                            namespaces.contains(ns.as_str())
                        };
                        if exists {
                            continue;
                        }
                        out.push(not_found(
                            r,
                            &format!("spec.rules[{i}].from[{j}].source.{field}"),
                            "namespace",
                            ns,
                        ));
                    }
                }
            }
        }
    }
}
