//! The explanation as text.

use super::decide::*;
use crate::proxy_config::{self};

/// The explanation in a few lines, as `istioctl x describe` would put it.
pub fn render_text(e: &Explanation) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let l = &e.listener;
    let rc = match (&l.route_config, l.inline_route_config) {
        (Some(n), false) => format!("route config {n}"),
        (Some(n), true) => format!("inline route config {n}"),
        (None, _) => "no route config".into(),
    };
    line(format!("listener {} ({}) -> {rc}", l.name, l.address));
    if let Some(vh) = &e.virtual_host {
        line(format!(
            "virtual host {} (domain {:?} matched host {:?})",
            vh.name, vh.domain, e.request.host
        ));
    }
    for r in &e.routes_tried {
        let conds: Vec<String> = r
            .conditions
            .iter()
            .filter(|c| r.matched || c.outcome != "held")
            .map(|c| {
                let mark = match c.outcome {
                    "held" => "✓",
                    "failed" => "✗",
                    _ => "(sampled per request)",
                };
                format!("{} {mark}", c.condition)
            })
            .collect();
        let name = if r.name.is_empty() {
            String::new()
        } else {
            format!(" {:?}", r.name)
        };
        if r.matched {
            line(format!(
                "route #{}{name} matched: {}",
                r.index,
                conds.join(", ")
            ));
        } else {
            line(format!(
                "route #{}{name} skipped: {}",
                r.index,
                conds.join(", ")
            ));
        }
    }
    match &e.result {
        Decision::NoRoute {
            status,
            flag,
            reason,
        } => {
            line(format!("=> {status} {flag}: {reason}"));
            for vh in &e.virtual_hosts {
                line(format!(
                    "  virtual host {}: {}",
                    vh.name,
                    proxy_config::short_domains(
                        &vh.domains.iter().map(String::as_str).collect::<Vec<_>>()
                    )
                ));
            }
        }
        Decision::Redirect {
            status, location, ..
        } => line(format!("=> redirect {status} to {location}")),
        Decision::DirectResponse { status, body, .. } => line(format!(
            "=> direct response {status}{}",
            body.as_ref().map(|b| format!(" {b:?}")).unwrap_or_default()
        )),
        Decision::Forward(f) => render_forward(f, &mut line),
    }
    if !e.skipped_resources.is_empty() {
        line(format!(
            "note: {} resource(s) of the dump could not be read (see -o json)",
            e.skipped_resources.len()
        ));
    }
    out
}

fn render_forward(f: &ForwardExplanation, line: &mut impl FnMut(String)) {
    match f.clusters.as_slice() {
        [one] if one.weight.is_none() => line(format!("  -> cluster {}", one.name)),
        many => {
            let parts: Vec<String> = many
                .iter()
                .map(|c| {
                    format!(
                        "{} weight {} ({}%)",
                        c.name,
                        c.weight.unwrap_or(0),
                        c.percent.unwrap_or(0.0)
                    )
                })
                .collect();
            line(format!("  -> weighted clusters {}", parts.join(", ")));
        }
    }
    let mut policy = vec![match &f.timeout {
        Some(t) => format!("timeout {t}"),
        None => "no timeout".to_string(),
    }];
    policy.push(match &f.retry {
        Some(r) => {
            let mut s = format!("retries {} on {}", r.num_retries, r.retry_on.join(","));
            if !r.retriable_status_codes.is_empty() {
                let codes: Vec<String> = r
                    .retriable_status_codes
                    .iter()
                    .map(u16::to_string)
                    .collect();
                s.push_str(&format!(" (codes {})", codes.join(",")));
            }
            if let Some(t) = &r.per_try_timeout {
                s.push_str(&format!(" per try {t}"));
            }
            s
        }
        None => "no retries".to_string(),
    });
    policy.push(match &f.fault {
        Some(FaultExplanation {
            delay: None,
            abort: None,
            ..
        })
        | None => "no fault".to_string(),
        Some(x) => {
            let mut parts = Vec::new();
            if let Some(d) = &x.delay {
                parts.push(format!("delay {d}"));
            }
            if let Some(a) = &x.abort {
                parts.push(format!("abort {a}"));
            }
            let mut s = format!("fault: {}", parts.join(", "));
            if !x.applies {
                s.push_str(" (not for this request: its header conditions fail)");
            }
            s
        }
    });
    if f.mirrors.is_empty() {
        policy.push("no mirror".into());
    } else {
        let m: Vec<String> = f
            .mirrors
            .iter()
            .map(|m| format!("{} ({})", m.cluster, m.percent))
            .collect();
        policy.push(format!("mirror to {}", m.join(", ")));
    }
    line(format!("  {}", policy.join(", ")));
    if let Some(p) = &f.prefix_rewrite {
        line(format!("  path prefix rewritten to {p}"));
    }
    if let Some(h) = &f.host_rewrite {
        line(format!("  host rewritten to {h}"));
    }
    if !f.request_headers.is_empty() {
        line(format!(
            "  request headers: {}",
            f.request_headers.join("; ")
        ));
    }
    if !f.response_headers.is_empty() {
        line(format!(
            "  response headers: {}",
            f.response_headers.join("; ")
        ));
    }
    if !f.hash_on.is_empty() {
        line(format!("  hash on {}", f.hash_on.join(", then ")));
    }
    for c in &f.clusters {
        if !c.known {
            line(format!(
                "cluster {}: not in the proxy's config (the proxy answers 503 NC)",
                c.name
            ));
            continue;
        }
        let mut parts = Vec::new();
        if !c.subset.is_empty() {
            parts.push(format!("subset {}", c.subset));
        }
        if let Some(lb) = &c.lb_policy {
            parts.push(lb.clone());
        }
        parts.push(match c.endpoints {
            Some(h) => format!(
                "{} endpoint{} ({} healthy)",
                h.total,
                if h.total == 1 { "" } else { "s" },
                h.healthy
            ),
            None => "endpoints unknown".into(),
        });
        if let Some(t) = &c.transport {
            let mut t = t.clone();
            if !c.peer_identities.is_empty() {
                t.push_str(&format!(" expecting {}", c.peer_identities.join(" or ")));
            }
            parts.push(t);
        }
        line(format!("cluster {}: {}", c.name, parts.join(", ")));
    }
}
