//! One sample of every process of the mesh: memory, open files and threads from `/proc`, and
//! for the proxies their open connections from the admin `/stats`, for the control plane the
//! xDS pushes it has made from its `/metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};

use super::mesh::MeshStatus;
use crate::procfs;

/// An admin or debug page that does not answer within this is left out of the sample.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// One process at one time.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProcessSample {
    /// Seconds since the traffic started.
    pub t_s: f64,
    /// `control-plane`, `proxy/NAME`, `app/NAME`.
    pub process: String,
    pub pid: u32,
    pub alive: bool,
    pub rss_kib: Option<u64>,
    pub fds: Option<u64>,
    pub threads: Option<u64>,
    /// Proxies: downstream connections open, over every HTTP connection manager
    /// (`http.*.downstream_cx_active`).
    pub downstream_cx_active: Option<u64>,
    /// Proxies: upstream connections open, over every cluster (`cluster.*.upstream_cx_active`).
    pub upstream_cx_active: Option<u64>,
    /// Control plane: xDS pushes so far, every type (`pilot_xds_pushes_total`).
    pub xds_pushes: Option<u64>,
}

/// Samples every process of `status` at `t_s`.
pub async fn sample_all(status: &MeshStatus, t_s: f64) -> Vec<ProcessSample> {
    let mut out = Vec::with_capacity(status.processes.len());
    for p in &status.processes {
        let alive = procfs::is_alive(p.pid);
        let proc_status = procfs::read_status(p.pid).ok();
        let mut s = ProcessSample {
            t_s,
            process: p.name.clone(),
            pid: p.pid,
            alive,
            rss_kib: proc_status.as_deref().and_then(|t| procfs::rss_kib(t).ok()),
            fds: procfs::read_fd_count(p.pid).ok(),
            threads: proc_status.as_deref().and_then(|t| procfs::threads(t).ok()),
            downstream_cx_active: None,
            upstream_cx_active: None,
            xds_pushes: None,
        };
        if alive {
            if let Some(admin) = status.admin_of(&p.name) {
                if let Ok(page) = get(admin, "/stats").await {
                    s.downstream_cx_active = sum_stats(&page, "http.", ".downstream_cx_active");
                    s.upstream_cx_active = sum_stats(&page, "cluster.", ".upstream_cx_active");
                }
            } else if p.name == "control-plane"
                && let Ok(page) = get(status.control_plane.debug_address, "/metrics").await
            {
                s.xds_pushes = prometheus_sum(&page, "pilot_xds_pushes_total");
            }
        }
        out.push(s);
    }
    out
}

/// The sum of the `name: value` lines of an Envoy-style `/stats` page whose name starts with
/// `prefix` and ends with `suffix`; `None` when there is none.
pub fn sum_stats(page: &str, prefix: &str, suffix: &str) -> Option<u64> {
    page.lines()
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(':')?;
            let name = name.trim();
            (name.starts_with(prefix) && name.ends_with(suffix))
                .then(|| value.trim().parse::<u64>().ok())
                .flatten()
        })
        .reduce(|a, b| a + b)
}

/// The sum of every series of a Prometheus metric (`name{labels} value` or `name value`).
pub fn prometheus_sum(page: &str, metric: &str) -> Option<u64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(metric)?;
            let value = if let Some(labelled) = rest.strip_prefix('{') {
                labelled.rsplit_once('}')?.1
            } else if rest.starts_with(' ') {
                rest
            } else {
                return None; // another metric sharing the prefix
            };
            let value: f64 = value.split_whitespace().next()?.parse().ok()?;
            Some(value as u64)
        })
        .reduce(|a, b| a + b)
}

/// The body of `GET path` on a local admin or debug listener.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    tokio::time::timeout(PAGE_TIMEOUT, async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = http::Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(req).await?;
        if !response.status().is_success() {
            bail!("GET {path}: {}", response.status());
        }
        let body = response.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    })
    .await
    .with_context(|| format!("GET http://{addr}{path}: no answer within {PAGE_TIMEOUT:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_summed_by_prefix_and_suffix() {
        // Names with `|` and `:` as mesh-proxy and Envoy print them.
        let page = "\
cluster.outbound|5000||helloworld.default.svc.cluster.local.upstream_cx_active: 2
cluster.xds-grpc.upstream_cx_active: 1
cluster.xds-grpc.upstream_cx_active_total: 7
http.inbound|42947||.downstream_cx_active: 1
http.outbound_http_proxy.downstream_cx_active: 3
listener.127.0.0.1:37871.downstream_cx_total: 9
";
        assert_eq!(sum_stats(page, "http.", ".downstream_cx_active"), Some(4));
        assert_eq!(sum_stats(page, "cluster.", ".upstream_cx_active"), Some(3));
        assert_eq!(sum_stats(page, "http.", ".downstream_rq_active"), None);
    }

    #[test]
    fn prometheus_series_are_summed_and_other_metrics_left_out() {
        let page = "\
# HELP pilot_xds_pushes_total pushes
pilot_xds_pushes_total{type=\"eds\"} 3
pilot_xds_pushes_total{type=\"rds\"} 5.0
pilot_xds_pushes_total_other 100
pilot_xds 3
";
        assert_eq!(prometheus_sum(page, "pilot_xds_pushes_total"), Some(8));
        assert_eq!(prometheus_sum(page, "pilot_xds"), Some(3));
        assert_eq!(prometheus_sum(page, "absent"), None);
    }
}
