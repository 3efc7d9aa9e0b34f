//! `meshctl proxy-status`: per connected proxy, whether each xDS type (CDS, LDS, EDS, RDS) is
//! in step with the control plane, read from its `/debug/syncz` (istioctl's columns).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::up::http;
use crate::up::state::{self, MeshState};

/// Output format of `proxy-status`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StatusFormat {
    Table,
    Json,
}

/// Show each proxy's xDS sync state with the control plane.
#[derive(Args, Debug)]
pub struct ProxyStatusArgs {
    /// Only this proxy: its pod name, `POD.NAMESPACE` or its node id.
    pub name: Option<String>,
    /// The control plane's debug address (default: the running local mesh's).
    #[arg(long = "control-plane")]
    pub control_plane: Option<SocketAddr>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = StatusFormat::Table)]
    pub output: StatusFormat,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProxyRow {
    pub name: String,
    pub cluster: String,
    pub cds: String,
    pub lds: String,
    pub eds: String,
    pub rds: String,
    pub istiod: String,
    pub version: String,
}

/// The control plane's debug address of the local mesh in the state directory.
pub fn local_debug_address() -> anyhow::Result<SocketAddr> {
    let dir = state::state_dir()?;
    match MeshState::load(&dir)? {
        Some(s) => Ok(s.control_plane.debug_address),
        None => bail!(
            "no local mesh running (state dir {}); start one with `meshctl up` or pass --control-plane ADDR",
            dir.display()
        ),
    }
}

/// Reads `/debug/syncz` from `debug`.
pub fn fetch_syncz(debug: SocketAddr) -> anyhow::Result<Value> {
    let a = http::get(debug, "localhost", "/debug/syncz", Duration::from_secs(5))?;
    if a.status != 200 {
        bail!("{debug}/debug/syncz answered {}", a.status);
    }
    serde_json::from_str(&a.body).with_context(|| format!("{debug}/debug/syncz is not JSON"))
}

/// The rows of a `/debug/syncz` document, sorted by name; `filter` keeps one proxy.
pub fn rows(syncz: &Value, control_plane: &str, filter: Option<&str>) -> Vec<ProxyRow> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut out: Vec<ProxyRow> = Vec::new();
    for p in syncz.as_array().into_iter().flatten() {
        let id = text(&p["proxy"]);
        let pod = text(&p["pod"]);
        let ns = text(&p["namespace"]);
        let name = if pod.is_empty() {
            id.clone()
        } else {
            format!("{pod}.{ns}")
        };
        if let Some(f) = filter
            && f != pod
            && f != name
            && f != id
        {
            continue;
        }
        let status = |t: &str| {
            p["types"][t]["status"]
                .as_str()
                .unwrap_or("NOT SENT")
                .to_string()
        };
        let version = ["proxy_version", "istio_version", "version"]
            .iter()
            .find_map(|k| p[*k].as_str())
            .unwrap_or("-")
            .to_string();
        let cluster = p["cluster_id"].as_str().unwrap_or("-").to_string();
        let row = ProxyRow {
            name,
            cluster,
            cds: status("cds"),
            lds: status("lds"),
            eds: status("eds"),
            rds: status("rds"),
            istiod: control_plane.to_string(),
            version,
        };
        // A reconnecting proxy has two streams for a while: keep the most in-step one.
        match out.iter_mut().find(|r| r.name == row.name) {
            Some(r) if synced_count(&row) > synced_count(r) => *r = row,
            Some(_) => {}
            None => out.push(row),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn synced_count(r: &ProxyRow) -> usize {
    [&r.cds, &r.lds, &r.eds, &r.rds]
        .iter()
        .filter(|s| s.as_str() == "SYNCED")
        .count()
}

/// Left-aligned columns three spaces apart, as istioctl's tabwriter prints them.
pub fn render_table<S: AsRef<str>>(header: &[&str], rows: &[Vec<S>]) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(c.as_ref().chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            l.push_str(c);
            if i + 1 < cells.len() {
                let pad = widths[i] - c.chars().count() + 3;
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().take(cols).map(AsRef::as_ref).collect());
    }
    out
}

/// The table of `rows`.
pub fn render(rows: &[ProxyRow]) -> String {
    let cells: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.as_str(),
                &r.cluster,
                &r.cds,
                &r.lds,
                &r.eds,
                &r.rds,
                &r.istiod,
                &r.version,
            ]
        })
        .collect();
    render_table(
        &[
            "NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ISTIOD", "VERSION",
        ],
        &cells,
    )
}

fn run(a: &ProxyStatusArgs) -> anyhow::Result<()> {
    let debug = match a.control_plane {
        Some(addr) => addr,
        None => local_debug_address()?,
    };
    let syncz = fetch_syncz(debug)?;
    let rows = rows(&syncz, &format!("mesh-control@{debug}"), a.name.as_deref());
    if let Some(n) = &a.name
        && rows.is_empty()
    {
        bail!("no proxy named {n:?} is connected to the control plane at {debug}");
    }
    match a.output {
        StatusFormat::Table => print!("{}", render(&rows)),
        StatusFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
    }
    Ok(())
}

/// `meshctl proxy-status`.
pub fn main(a: ProxyStatusArgs) -> ExitCode {
    match run(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshctl proxy-status: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_align() {
        let t = render_table(&["A", "LONGER"], &[vec!["xxxx", "y"], vec!["z", "w"]]);
        assert_eq!(t, "A      LONGER\nxxxx   y\nz      w\n");
    }

    #[test]
    fn rows_from_syncz_keep_the_in_step_stream() {
        let syncz = serde_json::json!([
            {"proxy": "sidecar~127.0.0.1~client.default~default.svc.cluster.local",
             "pod": "client", "namespace": "default", "cluster_id": "Kubernetes",
             "types": {"cds": {"status": "STALE"}, "lds": {"status": "SYNCED"}}},
            {"proxy": "sidecar~127.0.0.1~client.default~default.svc.cluster.local",
             "pod": "client", "namespace": "default", "cluster_id": "Kubernetes",
             "types": {"cds": {"status": "SYNCED"}, "lds": {"status": "SYNCED"},
                       "eds": {"status": "SYNCED"}, "rds": {"status": "SYNCED"}}},
            {"proxy": "router~127.0.0.1~gw.istio-system~x", "pod": "gw", "namespace": "istio-system",
             "types": {}}
        ]);
        let r = rows(&syncz, "cp", None);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].name, "client.default");
        assert_eq!([&r[0].cds, &r[0].lds, &r[0].eds, &r[0].rds], ["SYNCED"; 4]);
        assert_eq!(r[1].name, "gw.istio-system");
        assert_eq!(r[1].cds, "NOT SENT");
        assert_eq!(r[1].cluster, "-");
        assert_eq!(rows(&syncz, "cp", Some("gw")).len(), 1);
        let table = render(&r);
        assert!(table.starts_with("NAME "), "{table}");
        assert!(
            table.contains("client.default    Kubernetes   SYNCED"),
            "{table}"
        );
    }
}
