//! `meshctl status`: the recorded mesh and whether each proxy is in step (`/debug/syncz`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::admin_client::AdminClient;

use super::state::MeshState;

use super::*;

/// Per connected proxy id, `SYNCED` when CDS and LDS are ACKed at the latest version and EDS
/// and RDS are too (or have nothing to send), else the first type that is behind.
pub fn sync_statuses(debug: SocketAddr) -> anyhow::Result<BTreeMap<String, String>> {
    let a = AdminClient::new(debug, Duration::from_secs(3)).get("/debug/syncz")?;
    if a.status != 200 {
        bail!("/debug/syncz answered {}", a.status.as_u16());
    }
    let v: serde_json::Value =
        serde_json::from_slice(&a.body).context("/debug/syncz is not JSON")?;
    Ok(summarize_syncz(&v))
}

/// The rule of [`sync_statuses`], on a `/debug/syncz` document.
pub fn summarize_syncz(v: &serde_json::Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in v.as_array().into_iter().flatten() {
        let Some(id) = p["proxy"].as_str() else {
            continue;
        };
        let mut status = "SYNCED".to_string();
        for t in ["cds", "lds", "eds", "rds"] {
            let s = p["types"][t]["status"].as_str().unwrap_or("NOT SENT");
            let nothing_asked = p["types"][t]["requested"]
                .as_array()
                .is_none_or(|r| r.is_empty());
            let ok =
                s == "SYNCED" || (s == "NOT SENT" && matches!(t, "eds" | "rds") && nothing_asked);
            if !ok {
                status = format!("{} {s}", t.to_uppercase());
                break;
            }
        }
        // Several streams of one proxy (a reconnect): any SYNCED one counts.
        let e = out.entry(id.to_string()).or_insert_with(|| status.clone());
        if status == "SYNCED" {
            *e = status;
        }
    }
    out
}

/// `meshctl status`.
pub fn status(json: bool) -> anyhow::Result<()> {
    let dir = state::state_dir()?;
    let Some(state) = MeshState::load(&dir)? else {
        bail!(
            "no local mesh running (state dir {}); start one with `meshctl up`",
            dir.display()
        );
    };
    let syncz = sync_statuses(state.control_plane.debug_address).ok();
    if json {
        let mut v = serde_json::to_value(&state)?;
        for p in v["processes"].as_array_mut().into_iter().flatten() {
            let pid = p["pid"].as_u64().unwrap_or(0) as u32;
            let program = p["program"].as_str().unwrap_or("").to_string();
            p["running"] = process::is_running(pid, &program).into();
        }
        v["sync"] = serde_json::to_value(&syncz)?;
        // A state file written before `address` existed: from the URL.
        if state.gateway.address.is_empty() {
            v["gateway"]["address"] = state.gateway.url.trim_start_matches("http://").into();
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{}", render_status(&state, syncz.as_ref()));
    }
    Ok(())
}

/// The table `up` and `status` print.
pub fn render_status(state: &MeshState, syncz: Option<&BTreeMap<String, String>>) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "ROLE".into(),
        "LISTENS".into(),
        "ADMIN".into(),
        "STATE".into(),
    ]];
    let proc_state = |name: &str| -> String {
        state
            .processes
            .iter()
            .find(|p| p.name == name)
            .map(|p| {
                if process::is_running(p.pid, &p.program) && p.restarts > 0 {
                    format!("pid {} (restarts {})", p.pid, p.restarts)
                } else if process::is_running(p.pid, &p.program) {
                    format!("pid {}", p.pid)
                } else if p.restarts > 0 || state.supervisor_pid.is_some() {
                    "EXITED (restarting)".into()
                } else {
                    "EXITED".into()
                }
            })
            .unwrap_or_else(|| "-".into())
    };
    let sync = |id: &str| -> String {
        syncz
            .map(|m| {
                format!(
                    " {}",
                    m.get(id).map(String::as_str).unwrap_or("not connected")
                )
            })
            .unwrap_or_default()
    };
    rows.push([
        "mesh-control".into(),
        "control plane".into(),
        match state.control_plane.secure_xds_address {
            Some(secure) => format!(
                "xds {} secure {secure} debug {}",
                state.control_plane.xds_address, state.control_plane.debug_address
            ),
            None => format!(
                "xds {} debug {}",
                state.control_plane.xds_address, state.control_plane.debug_address
            ),
        },
        "-".into(),
        proc_state("control-plane"),
    ]);
    let gw = &state.gateway;
    rows.push([
        gw.name.clone(),
        "ingress gateway".into(),
        gw.ports
            .iter()
            .map(|(p, a)| format!("{p} -> http://{a}"))
            .collect::<Vec<_>>()
            .join(", "),
        gw.admin_address.to_string(),
        format!(
            "{}{}",
            proc_state(&format!("proxy/{}", gw.name)),
            sync(&gw.node_id)
        ),
    ]);
    for s in &state.sidecars {
        rows.push([
            format!("{}.{}", s.workload, s.namespace),
            "sidecar".into(),
            format!(
                "http_proxy {} inbound {}",
                s.outbound_address, s.inbound_address
            ),
            s.admin_address.to_string(),
            format!(
                "{}{}",
                proc_state(&format!("proxy/{}", s.workload)),
                sync(&s.node_id)
            ),
        ]);
        if state
            .processes
            .iter()
            .any(|p| p.name == format!("app/{}", s.workload))
        {
            rows.push([
                format!("  app {}", s.workload),
                s.service
                    .as_ref()
                    .map(|x| format!("serves {x}"))
                    .unwrap_or_else(|| "workload".into()),
                s.app_address.to_string(),
                "-".into(),
                proc_state(&format!("app/{}", s.workload)),
            ]);
        }
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&format!(
        "\nGateway URL: {}\nProxies: {}\nConfig dir (watched): {}",
        gw.url,
        state.proxy,
        state.config_dir.display(),
    ));
    if let Some(id) = &state.identity {
        out.push_str(&format!(
            "\nCA: {} (trust domain {}; root {})",
            id.ca_dir.display(),
            id.trust_domain,
            id.root_cert.display()
        ));
    }
    out.push_str(&format!("\nLogs: {}", state.log_dir.display()));
    out
}

/// What to try next, with the command that runs this `meshctl` (see [`invocation`]); one
/// command per line, none of them piped into another.
pub fn next_steps(state: &MeshState, meshctl: &str) -> String {
    let mut lines = vec![(
        format!("curl {}/hello", state.gateway.url),
        "through the ingress gateway".to_string(),
    )];
    if let Some(s) = state.sidecars.iter().find(|s| s.service.is_some()) {
        let service = s.service.as_deref().unwrap_or_default();
        let (name, port) = service
            .split_once(':')
            .map(|(h, p)| (h.split('.').next().unwrap_or(h), p))
            .unwrap_or((service, ""));
        lines.push((
            format!(
                "http_proxy=http://{} curl http://{name}:{port}/hello",
                s.outbound_address
            ),
            format!("through {}'s sidecar", s.workload),
        ));
    }
    lines.push((
        format!("{meshctl} traffic -n 100"),
        "the distribution of answers by version".into(),
    ));
    if let Some(s) = state.sidecars.first() {
        lines.push((
            format!("{meshctl} proxy-config secret {}", s.workload),
            "its certificate (mTLS between sidecars is automatic)".into(),
        ));
    }
    lines.push((
        format!("{meshctl} apply -f FILE.yaml"),
        "change the rules; returns once the proxies have them".into(),
    ));
    lines.push((
        format!("{meshctl} logs gateway -f"),
        "the gateway's access log".into(),
    ));
    lines.push((format!("{meshctl} status"), "what runs where".into()));
    lines.push((format!("{meshctl} down"), "stop the mesh".into()));
    let width = lines.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
    let mut out = String::from("Try:\n");
    for (cmd, why) in lines {
        out.push_str(&format!("  {cmd:<width$}   # {why}\n"));
    }
    out
}
