//! Unreachable rules (IST0130) and ineffective matches (IST0131): Istio's schema analyzer reports
//! them from VirtualService validation, not a `virtualservice` analyzer, hence a file of their own.

use crate::analysis::{Index, Message, codes};
use crate::resource::Resource;

/// A match as compared by [`virtual_service_matches`]: its JSON form without `name`.
fn match_values<T: serde::Serialize>(matches: &[T]) -> Vec<serde_json::Value> {
    matches
        .iter()
        .map(|m| {
            let mut v = serde_json::to_value(m).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.remove("name");
            }
            v
        })
        .collect()
}

/// Whether HTTP match `earlier` takes every request `later` would: both match
/// the URI by prefix, `earlier`'s prefix starts `later`'s, and every other
/// condition of `earlier` is also in `later`.
fn http_match_covers(earlier: &serde_json::Value, later: &serde_json::Value) -> bool {
    let prefix = |v: &serde_json::Value| {
        v.pointer("/uri/prefix")
            .and_then(|p| p.as_str())
            .map(str::to_string)
    };
    let (Some(a), Some(b)) = (prefix(earlier), prefix(later)) else {
        return false;
    };
    if !b.starts_with(&a) {
        return false;
    }
    earlier
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != "uri")
        .all(|(k, v)| later.get(k) == Some(v))
}

/// IST0130 for rules that can never apply (after a catch-all rule, or whose
/// matches all repeat earlier ones) and IST0131 for matches that repeat or are
/// covered by an earlier match, over the HTTP, TCP and TLS rules.
pub(in crate::analysis) fn virtual_service_matches(index: &Index<'_>, out: &mut Vec<Message>) {
    for (r, vs) in index.virtual_services() {
        let http: Vec<Vec<serde_json::Value>> = vs
            .spec
            .http
            .iter()
            .map(|h| match_values(&h.matches))
            .collect();
        check_rules(r, "http", &http, true, out);
        let tcp: Vec<Vec<serde_json::Value>> = vs
            .spec
            .tcp
            .iter()
            .map(|t| match_values(&t.matches))
            .collect();
        check_rules(r, "tcp", &tcp, false, out);
        let tls: Vec<Vec<serde_json::Value>> = vs
            .spec
            .tls
            .iter()
            .map(|t| match_values(&t.matches))
            .collect();
        check_rules(r, "tls", &tls, false, out);
    }
}

fn check_rules(
    r: &Resource,
    kind: &str,
    rules: &[Vec<serde_json::Value>],
    http: bool,
    out: &mut Vec<Message>,
) {
    let mut earlier: Vec<(usize, &serde_json::Value)> = Vec::new();
    let mut catch_all: Option<usize> = None;
    for (i, matches) in rules.iter().enumerate() {
        let p = format!("spec.{kind}[{i}]");
        if let Some(prev) = catch_all {
            out.push(unreachable(
                r,
                &p,
                i,
                &format!("only the last rule can have no matches; rule #{prev} matches everything"),
            ));
            continue;
        }
        if matches.is_empty()
            || matches
                .iter()
                .any(|m| m.as_object().is_some_and(|o| o.is_empty()))
        {
            catch_all = Some(i);
        }
        let mut duplicates = 0;
        for (j, m) in matches.iter().enumerate() {
            let same_rule_before = matches[..j].iter().map(|e| (i, e));
            let candidates: Vec<(usize, &serde_json::Value)> =
                earlier.iter().copied().chain(same_rule_before).collect();
            if let Some((dup, _)) = candidates.iter().find(|(_, e)| *e == m) {
                if *dup != i {
                    duplicates += 1;
                }
                out.push(ineffective(r, &format!("{p}.match[{j}]"), i, j, *dup));
            } else if http
                && let Some((dup, _)) = candidates.iter().find(|(_, e)| http_match_covers(e, m))
            {
                out.push(ineffective(r, &format!("{p}.match[{j}]"), i, j, *dup));
            }
        }
        if !matches.is_empty() && duplicates == matches.len() {
            out.push(unreachable(r, &p, i, "all matches used by prior rules"));
        }
        earlier.extend(matches.iter().map(|m| (i, m)));
    }
}

fn unreachable(r: &Resource, path: &str, rule: usize, reason: &str) -> Message {
    Message::about(
        codes::VirtualServiceUnreachableRule,
        r,
        path,
        format!("VirtualService rule #{rule} not used ({reason})."),
    )
}

fn ineffective(r: &Resource, path: &str, rule: usize, m: usize, dup: usize) -> Message {
    Message::about(
        codes::VirtualServiceIneffectiveMatch,
        r,
        path,
        format!(
            "VirtualService rule #{rule} match #{m} is not used (duplicate/overlapping match in rule #{dup})."
        ),
    )
}
