//! `meshctl traffic`: what `while true; do curl ...; done` does, counted. Sends requests
//! through the gateway or a sidecar's `http_proxy` listener and shows, live, how answers
//! split by version (`Hello version: X, ...`) and by status. `-H` adds request headers (a
//! `Host` header there replaces `--host`); `--concurrency N` keeps N requests in flight.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use super::state::{self, MeshState};
use crate::admin_client::{AdminClient, AdminError, Request, Response};

/// Requests sent when neither a count nor a rate is given.
pub const DEFAULT_COUNT: u64 = 100;
/// Per-request timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how much.
#[derive(Debug, Clone)]
pub struct TrafficOptions {
    /// `gateway` or a workload name (its sidecar).
    pub via: String,
    pub count: Option<u64>,
    /// Requests per second, with `duration`.
    pub rate: Option<f64>,
    pub duration: Option<Duration>,
    pub path: String,
    /// Host to call (default: the gateway takes any; through a sidecar, the first service).
    pub host: Option<String>,
    /// Extra request headers, in order.
    pub headers: Vec<(String, String)>,
    /// Requests in flight at once (at least 1).
    pub concurrency: usize,
    pub json: bool,
}

/// The counts.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Tally {
    pub total: u64,
    /// By version parsed from the body; `-` when the body names none.
    pub versions: BTreeMap<String, u64>,
    /// By HTTP status; `error` when no answer came.
    pub statuses: BTreeMap<String, u64>,
    /// A sample of the errors seen (first few).
    pub errors: Vec<String>,
}

impl Tally {
    pub fn record(&mut self, result: Result<Response, AdminError>) {
        self.total += 1;
        match result {
            Ok(a) => {
                *self
                    .statuses
                    .entry(a.status.as_u16().to_string())
                    .or_default() += 1;
                let v = version_of(&a.text()).unwrap_or("-").to_string();
                *self.versions.entry(v).or_default() += 1;
            }
            Err(e) => {
                *self.statuses.entry("error".into()).or_default() += 1;
                if self.errors.len() < 5 {
                    self.errors.push(e.to_string());
                }
            }
        }
    }

    fn line(&self) -> String {
        let share = |n: u64| 100.0 * n as f64 / self.total.max(1) as f64;
        let versions: Vec<String> = self
            .versions
            .iter()
            .map(|(v, n)| format!("{v} {n} ({:.1}%)", share(*n)))
            .collect();
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        format!(
            "{} requests | version: {} | status: {}",
            self.total,
            versions.join(", "),
            statuses.join(", ")
        )
    }

    /// The final table.
    pub fn table(&self) -> String {
        let share = |n: u64| 100.0 * n as f64 / self.total.max(1) as f64;
        let mut out = format!("{:<16} {:>7} {:>7}\n", "VERSION", "COUNT", "SHARE");
        for (v, n) in &self.versions {
            out.push_str(&format!("{v:<16} {n:>7} {:>6.1}%\n", share(*n)));
        }
        out.push_str(&format!(
            "\n{:<16} {:>7} {:>7}\n",
            "STATUS", "COUNT", "SHARE"
        ));
        for (s, n) in &self.statuses {
            out.push_str(&format!("{s:<16} {n:>7} {:>6.1}%\n", share(*n)));
        }
        for e in &self.errors {
            out.push_str(&format!("error: {e}\n"));
        }
        out
    }
}

/// `X` of `Hello version: X, instance: Y`.
pub fn version_of(body: &str) -> Option<&str> {
    let rest = body.split("version: ").nth(1)?;
    let v = rest.split([',', '\n', '\r', ' ']).next()?.trim();
    (!v.is_empty()).then_some(v)
}

/// `meshctl traffic`.
pub fn run(opts: &TrafficOptions) -> anyhow::Result<Tally> {
    let dir = state::state_dir()?;
    let state = MeshState::load(&dir)?.with_context(|| {
        format!(
            "no local mesh running (state dir {}); start one with `meshctl up`",
            dir.display()
        )
    })?;
    // `-H 'Host: x'` wins over --host, as with curl.
    let mut opts = opts.clone();
    if let Some((_, h)) = opts
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
    {
        opts.host = Some(h.clone());
    }
    let opts = &opts;
    let (addr, host, target) = target(&state, opts)?;
    let headers: Vec<(String, String)> = opts
        .headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
        .cloned()
        .collect();
    let concurrency = opts.concurrency.max(1);
    let live = !opts.json && std::io::stderr().is_terminal();
    if !opts.json {
        let extra: String = headers.iter().map(|(k, v)| format!(", {k}: {v}")).collect();
        eprintln!(
            "sending GET {target} (Host: {host}{extra}) to {addr} via {}{}",
            opts.via,
            if concurrency > 1 {
                format!(", {concurrency} at a time")
            } else {
                String::new()
            }
        );
    }
    let started = Instant::now();
    let interval = opts
        .rate
        .map(|r| Duration::from_secs_f64(1.0 / r.max(0.001)));
    let (count, until) = match (opts.count, opts.rate, opts.duration) {
        (Some(n), _, d) => (Some(n), d.map(|d| started + d)),
        (None, Some(_), Some(d)) => (None, Some(started + d)),
        (None, Some(_), None) => bail!("--rate needs --duration"),
        (None, None, Some(d)) => (None, Some(started + d)),
        (None, None, None) => (Some(DEFAULT_COUNT), None),
    };
    let tally = Mutex::new(Tally::default());
    // The index of the next request: each sender takes one, so N senders never send more
    // than the count and share one rate schedule.
    let next = AtomicU64::new(0);
    let client = AdminClient::new(addr, REQUEST_TIMEOUT).with_host(host.as_str());
    let sender = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if count.is_some_and(|n| i >= n) || until.is_some_and(|u| Instant::now() >= u) {
                return;
            }
            if let Some(step) = interval {
                let due = started + step.mul_f64(i as f64);
                if until.is_some_and(|u| due >= u) {
                    return;
                }
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            let answer = client.send(Request::get(target.as_str()).headers(&headers));
            lock(&tally).record(answer);
        }
    };
    std::thread::scope(|scope| {
        let senders: Vec<_> = (0..concurrency).map(|_| scope.spawn(sender)).collect();
        let mut last_print = Instant::now();
        while !senders.iter().all(|h| h.is_finished()) {
            // Only the display waits here; the senders run at their own pace.
            std::thread::sleep(Duration::from_millis(50));
            if live && last_print.elapsed() >= Duration::from_millis(200) {
                eprint!("\r\x1b[2K{}", lock(&tally).line());
                let _ = std::io::stderr().flush();
                last_print = Instant::now();
            } else if !live && !opts.json && last_print.elapsed() >= Duration::from_secs(2) {
                eprintln!("{}", lock(&tally).line());
                last_print = Instant::now();
            }
        }
    });
    let tally = tally.into_inner().unwrap_or_else(|e| e.into_inner());
    if live {
        eprintln!("\r\x1b[2K{}", tally.line());
    }
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&tally)?);
    } else {
        println!("{}", tally.table());
    }
    Ok(tally)
}

fn lock(t: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    // A sender that panicked leaves plain counts behind: keep counting.
    t.lock().unwrap_or_else(|e| e.into_inner())
}

/// Address to connect to, Host, request target.
fn target(
    state: &MeshState,
    opts: &TrafficOptions,
) -> anyhow::Result<(SocketAddr, String, String)> {
    let path = if opts.path.starts_with('/') {
        opts.path.clone()
    } else {
        format!("/{}", opts.path)
    };
    let sidecar = match super::names::resolve(state, &opts.via)
        .with_context(|| format!("--via {}", opts.via))?
    {
        super::names::ProxyRef::Gateway(gateway) => {
            let addr = gateway
                .ports
                .get(&super::meshdir::DEFAULT_GATEWAY_PORT)
                .or_else(|| gateway.ports.values().next())
                .copied()
                .context("the gateway has no port")?;
            let host = opts.host.clone().unwrap_or_else(|| addr.to_string());
            return Ok((addr, host, path));
        }
        super::names::ProxyRef::Sidecar(sidecar) => sidecar,
    };
    let host = match &opts.host {
        Some(h) => h.clone(),
        None => {
            let service = state
                .sidecars
                .iter()
                .find_map(|s| s.service.clone())
                .context("no service in the mesh to call; give --host")?;
            // `helloworld.default:5000` -> `helloworld:5000` when in the sidecar's namespace.
            match service.split_once(':') {
                Some((h, p)) => {
                    let short = h
                        .strip_suffix(&format!(".{}", sidecar.namespace))
                        .unwrap_or(h);
                    format!("{short}:{p}")
                }
                None => service,
            }
        }
    };
    // Absolute form, as an http_proxy client sends it.
    Ok((
        sidecar.outbound_address,
        host.clone(),
        format!("http://{host}{path}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_statuses_are_counted() {
        assert_eq!(
            version_of("Hello version: risky, instance: helloworld-risky\n"),
            Some("risky")
        );
        assert_eq!(version_of("no route"), None);
        let mut t = Tally::default();
        let answer = |status: u16, body: &str| Response {
            status: http::StatusCode::from_u16(status).unwrap(),
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
        };
        let ok = |body: &str| Ok(answer(200, body));
        t.record(ok("Hello version: safe, instance: a"));
        t.record(ok("Hello version: safe, instance: a"));
        t.record(Ok(answer(503, "no healthy upstream")));
        assert_eq!(t.total, 3);
        assert_eq!(t.versions["safe"], 2);
        assert_eq!(t.versions["-"], 1);
        assert_eq!(t.statuses["503"], 1);
        assert!(t.table().contains("safe"));
    }
}
