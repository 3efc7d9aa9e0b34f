//! Turning repetitions into medians, and medians into a table, a JSON file and an SVG chart.

use std::fmt::Write as _;

use super::cases::Case;
use super::parse::LoadResult;
use super::stats::{Spread, added, ratio, spread};
use crate::render::{markdown, xml_escape as escape};

/// What served the requests of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proxy {
    /// No proxy: the load generator talks to the upstream.
    None,
    Envoy,
    Mesh,
}

impl Proxy {
    pub fn name(self) -> &'static str {
        match self {
            Proxy::None => "none",
            Proxy::Envoy => "envoy",
            Proxy::Mesh => "mesh-proxy",
        }
    }
}

/// One repetition of one case under one proxy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub case: Case,
    pub proxy: Proxy,
    pub rep: usize,
    /// Max-throughput run at a fixed connection count.
    pub throughput: LoadResult,
    /// Latency run (fixed rate with oha, else one closed-loop connection with wrk).
    pub latency: LoadResult,
    /// Proxy CPU (all proxy processes of the case) per request during the throughput run.
    pub cpu_us_per_req: Option<f64>,
    /// The same during the latency run.
    pub cpu_us_per_req_latency_run: Option<f64>,
    /// Sum of the proxies' RSS after the runs.
    pub rss_kib: Option<u64>,
    /// Connections the front proxy opened to its cluster over the run (`upstream_cx_total`).
    pub front_upstream_cx: Option<u64>,
    /// TLS handshakes of those connections (`ssl.handshake`), for TLS clusters.
    pub front_tls_handshakes: Option<u64>,
    /// The TLS version and suite the front proxy's sessions used.
    pub front_tls_session: Option<String>,
}

/// Medians of one case under one proxy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub case: Case,
    pub proxy: Proxy,
    pub rps: Option<Spread>,
    pub p50_us: Option<Spread>,
    pub p90_us: Option<Spread>,
    pub p99_us: Option<Spread>,
    pub p999_us: Option<Spread>,
    pub cpu_us_per_req: Option<Spread>,
    pub rss_mib: Option<Spread>,
    pub front_upstream_cx: Option<Spread>,
    pub front_tls_handshakes: Option<Spread>,
    /// The TLS version and suite negotiated, when the same in every repetition.
    pub tls_session: Option<String>,
    pub errors: u64,
}

/// mesh-proxy against Envoy on one case.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    pub case: Case,
    /// mesh / Envoy of the medians.
    pub rps_ratio: Option<f64>,
    pub cpu_ratio: Option<f64>,
    pub rss_ratio: Option<f64>,
    /// Latency added over `direct` (median of each side), microseconds.
    pub envoy_added_p50_us: Option<f64>,
    pub mesh_added_p50_us: Option<f64>,
    pub envoy_added_p90_us: Option<f64>,
    pub mesh_added_p90_us: Option<f64>,
    pub envoy_added_p99_us: Option<f64>,
    pub mesh_added_p99_us: Option<f64>,
    pub added_p50_ratio: Option<f64>,
    pub added_p99_ratio: Option<f64>,
}

fn med(s: Option<Spread>) -> Option<f64> {
    s.map(|s| s.median)
}

/// Rows in the order cases were asked for, `none` then Envoy then mesh-proxy.
pub fn summarize(cases: &[Case], samples: &[Sample]) -> Vec<Row> {
    let mut rows = Vec::new();
    for &case in cases {
        for proxy in [Proxy::None, Proxy::Envoy, Proxy::Mesh] {
            let of: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.case == case && s.proxy == proxy)
                .collect();
            if of.is_empty() {
                continue;
            }
            let pick = |f: &dyn Fn(&Sample) -> Option<f64>| {
                spread(&of.iter().filter_map(|s| f(s)).collect::<Vec<_>>())
            };
            rows.push(Row {
                case,
                proxy,
                rps: pick(&|s| Some(s.throughput.rps)),
                p50_us: pick(&|s| Some(s.latency.p50_us)),
                p90_us: pick(&|s| Some(s.latency.p90_us)),
                p99_us: pick(&|s| Some(s.latency.p99_us)),
                p999_us: pick(&|s| Some(s.latency.p999_us)),
                cpu_us_per_req: pick(&|s| s.cpu_us_per_req),
                rss_mib: pick(&|s| s.rss_kib.map(|k| k as f64 / 1024.0)),
                front_upstream_cx: pick(&|s| s.front_upstream_cx.map(|n| n as f64)),
                front_tls_handshakes: pick(&|s| s.front_tls_handshakes.map(|n| n as f64)),
                tls_session: {
                    let first = of.first().and_then(|s| s.front_tls_session.clone());
                    of.iter()
                        .all(|s| s.front_tls_session == first)
                        .then_some(first)
                        .flatten()
                },
                errors: of
                    .iter()
                    .map(|s| s.throughput.errors + s.latency.errors)
                    .sum(),
            });
        }
    }
    rows
}

pub fn compare(rows: &[Row]) -> Vec<Comparison> {
    let find = |case: Case, proxy: Proxy| rows.iter().find(|r| r.case == case && r.proxy == proxy);
    let direct = find(Case::Direct, Proxy::None);
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for row in rows {
        if seen.contains(&row.case) || !row.case.has_proxy() {
            continue;
        }
        seen.push(row.case);
        let (Some(e), Some(m)) = (find(row.case, Proxy::Envoy), find(row.case, Proxy::Mesh)) else {
            continue;
        };
        let d = |f: fn(&Row) -> Option<Spread>| direct.and_then(|r| med(f(r)));
        let add = |r: &Row, f: fn(&Row) -> Option<Spread>| added(med(f(r)), d(f));
        let (ea50, ma50) = (add(e, |r| r.p50_us), add(m, |r| r.p50_us));
        let (ea99, ma99) = (add(e, |r| r.p99_us), add(m, |r| r.p99_us));
        out.push(Comparison {
            case: row.case,
            rps_ratio: ratio(med(m.rps), med(e.rps)),
            cpu_ratio: ratio(med(m.cpu_us_per_req), med(e.cpu_us_per_req)),
            rss_ratio: ratio(med(m.rss_mib), med(e.rss_mib)),
            envoy_added_p50_us: ea50,
            mesh_added_p50_us: ma50,
            envoy_added_p90_us: add(e, |r| r.p90_us),
            mesh_added_p90_us: add(m, |r| r.p90_us),
            envoy_added_p99_us: ea99,
            mesh_added_p99_us: ma99,
            added_p50_ratio: added_ratio(ma50, ea50),
            added_p99_ratio: added_ratio(ma99, ea99),
        });
    }
    out
}

/// A ratio of added latencies means something only when Envoy added some: under jitter a
/// proxy's percentile can fall below direct's.
fn added_ratio(mesh: Option<f64>, envoy: Option<f64>) -> Option<f64> {
    ratio(mesh.filter(|m| *m >= 0.0), envoy.filter(|e| *e > 0.0))
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) => format!("{v:.decimals$}"),
        None => "-".into(),
    }
}

fn cell_spread(s: Option<Spread>, decimals: usize) -> String {
    match s {
        Some(s) if s.n > 1 => format!(
            "{:.d$} ({:.d$}-{:.d$})",
            s.median,
            s.min,
            s.max,
            d = decimals
        ),
        Some(s) => format!("{:.d$}", s.median, d = decimals),
        None => "-".into(),
    }
}

/// "connections" or "connections (TLS handshakes)"; `None` without a connection count.
pub fn connections_cell(cx: Option<u64>, tls: Option<u64>) -> Option<String> {
    let cx = cx?;
    Some(match tls {
        Some(t) => format!("{cx} ({t} TLS)"),
        None => cx.to_string(),
    })
}

fn cell_ratio(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}x")).unwrap_or_else(|| "-".into())
}

/// A plain-text table, also valid Markdown.
pub fn table(rows: &[Row], comparisons: &[Comparison], latency_source: &str) -> String {
    let mut grid: Vec<Vec<String>> = vec![vec![
        "case".into(),
        "proxy".into(),
        "req/s".into(),
        "p50 µs".into(),
        "p90 µs".into(),
        "p99 µs".into(),
        "p99.9 µs".into(),
        "CPU µs/req".into(),
        "RSS MiB".into(),
        "upstream cx".into(),
        "errors".into(),
    ]];
    for r in rows {
        grid.push(vec![
            r.case.name().into(),
            r.proxy.name().into(),
            cell_spread(r.rps, 0),
            cell_spread(r.p50_us, 0),
            cell(med(r.p90_us), 0),
            cell(med(r.p99_us), 0),
            cell(med(r.p999_us), 0),
            cell_spread(r.cpu_us_per_req, 1),
            cell(med(r.rss_mib), 1),
            connections_cell(
                med(r.front_upstream_cx).map(|n| n.round() as u64),
                med(r.front_tls_handshakes).map(|n| n.round() as u64),
            )
            .unwrap_or_else(|| "-".into()),
            r.errors.to_string(),
        ]);
    }
    let mut out = markdown(&grid);
    if !comparisons.is_empty() {
        let mut grid: Vec<Vec<String>> = vec![vec![
            "case".into(),
            "req/s mesh/envoy".into(),
            "CPU/req mesh/envoy".into(),
            "RSS mesh/envoy".into(),
            "added p50 envoy/mesh µs".into(),
            "added p90 envoy/mesh µs".into(),
            "added p99 envoy/mesh µs".into(),
            "added p50 mesh/envoy".into(),
            "added p99 mesh/envoy".into(),
        ]];
        for c in comparisons {
            grid.push(vec![
                c.case.name().into(),
                cell_ratio(c.rps_ratio),
                cell_ratio(c.cpu_ratio),
                cell_ratio(c.rss_ratio),
                format!(
                    "{} / {}",
                    cell(c.envoy_added_p50_us, 0),
                    cell(c.mesh_added_p50_us, 0)
                ),
                format!(
                    "{} / {}",
                    cell(c.envoy_added_p90_us, 0),
                    cell(c.mesh_added_p90_us, 0)
                ),
                format!(
                    "{} / {}",
                    cell(c.envoy_added_p99_us, 0),
                    cell(c.mesh_added_p99_us, 0)
                ),
                cell_ratio(c.added_p50_ratio),
                cell_ratio(c.added_p99_ratio),
            ]);
        }
        out.push('\n');
        out.push_str(&markdown(&grid));
    }
    let sessions: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            let s = r.tls_session.as_ref()?;
            Some(format!("{} {}: {s}", r.case.name(), r.proxy.name()))
        })
        .collect();
    if !sessions.is_empty() {
        let _ = writeln!(
            out,
            "\nTLS between the proxies (front proxy's `ssl.versions.*`, `ssl.ciphers.*`): {}.",
            sessions.join("; ")
        );
    }
    let _ = writeln!(
        out,
        "\nreq/s and CPU: max-throughput runs; latency: {latency_source}. Medians, (min-max) over repetitions. \
         upstream cx: connections the front proxy opened to its cluster over a whole run (warm-up included), \
         with the TLS handshakes among them; kept-alive connections keep it near the load generator's connection count."
    );
    out
}

const ENVOY_COLOUR: &str = "#7b8794";
const MESH_COLOUR: &str = "#2f80ed";

/// One panel per figure, one pair of bars (Envoy, mesh-proxy) per proxied case.
pub fn svg(rows: &[Row], comparisons: &[Comparison], title: &str) -> String {
    type Figure = (&'static str, fn(&Row, Option<&Comparison>) -> Option<f64>);
    let figures: [Figure; 4] = [
        ("max throughput, req/s", |r, _| med(r.rps)),
        ("latency added over direct, p50 µs", |r, c| {
            let c = c?;
            match r.proxy {
                Proxy::Envoy => c.envoy_added_p50_us,
                _ => c.mesh_added_p50_us,
            }
        }),
        ("proxy CPU per request, µs", |r, _| med(r.cpu_us_per_req)),
        ("proxy RSS after the run, MiB", |r, _| med(r.rss_mib)),
    ];
    let cases: Vec<Case> = {
        let mut v = Vec::new();
        for r in rows {
            if r.proxy != Proxy::None && !v.contains(&r.case) {
                v.push(r.case);
            }
        }
        v
    };
    let (panel_w, panel_h, top, label_h) = (440.0_f64, 220.0_f64, 50.0_f64, 40.0_f64);
    let width = panel_w * 2.0 + 30.0;
    let height = top + (panel_h + label_h + 30.0) * 2.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let _ = writeln!(
        s,
        r#"<rect x="10" y="30" width="10" height="10" fill="{ENVOY_COLOUR}"/><text x="24" y="39">Envoy</text><rect x="80" y="30" width="10" height="10" fill="{MESH_COLOUR}"/><text x="94" y="39">mesh-proxy</text>"#
    );
    for (i, (name, value)) in figures.iter().enumerate() {
        let x0 = 10.0 + (i % 2) as f64 * (panel_w + 10.0);
        let y0 = top + (i / 2) as f64 * (panel_h + label_h + 30.0);
        let _ = writeln!(
            s,
            r#"<text x="{x}" y="{y}" font-weight="bold">{}</text>"#,
            escape(name),
            x = x0,
            y = y0 + 14.0
        );
        let bars: Vec<(Case, Option<f64>, Option<f64>)> = cases
            .iter()
            .map(|&case| {
                let cmp = comparisons.iter().find(|c| c.case == case);
                let of = |p: Proxy| {
                    rows.iter()
                        .find(|r| r.case == case && r.proxy == p)
                        .and_then(|r| value(r, cmp))
                };
                (case, of(Proxy::Envoy), of(Proxy::Mesh))
            })
            .collect();
        let max = bars
            .iter()
            .flat_map(|(_, e, m)| [*e, *m])
            .flatten()
            .fold(0.0_f64, |a, b| a.max(b.abs()));
        let base = y0 + panel_h;
        let plot_h = panel_h - 40.0;
        let _ = writeln!(
            s,
            "<line x1=\"{x0}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#333\"/>",
            x0 + panel_w
        );
        let group_w = panel_w / bars.len().max(1) as f64;
        let bar_w = (group_w / 3.0).min(40.0);
        for (g, (case, e, m)) in bars.iter().enumerate() {
            let gx = x0 + g as f64 * group_w + group_w / 2.0;
            for (k, (v, colour)) in [(e, ENVOY_COLOUR), (m, MESH_COLOUR)].iter().enumerate() {
                let Some(v) = v else { continue };
                let h = if max > 0.0 {
                    v.max(0.0) / max * plot_h
                } else {
                    0.0
                };
                let x = gx - bar_w + k as f64 * bar_w;
                let _ = writeln!(
                    s,
                    r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{colour}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{}</text>"#,
                    base - h,
                    bar_w - 2.0,
                    x + bar_w / 2.0 - 1.0,
                    base - h - 3.0,
                    short(*v)
                );
            }
            let _ = writeln!(
                s,
                r#"<text x="{gx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                base + 14.0,
                case.name()
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn short(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(rps: f64, p50: f64, p99: f64) -> LoadResult {
        LoadResult {
            requests: (rps * 2.0) as u64,
            errors: 0,
            seconds: 2.0,
            rps,
            p50_us: p50,
            p90_us: p50 * 1.5,
            p99_us: p99,
            p999_us: p99 * 2.0,
        }
    }

    fn sample(case: Case, proxy: Proxy, rep: usize, rps: f64, p50: f64, cpu: f64) -> Sample {
        Sample {
            case,
            proxy,
            rep,
            throughput: load(rps, p50, p50 * 4.0),
            latency: load(1000.0, p50, p50 * 4.0),
            cpu_us_per_req: (proxy != Proxy::None).then_some(cpu),
            cpu_us_per_req_latency_run: None,
            rss_kib: (proxy != Proxy::None).then_some(64 * 1024),
            front_upstream_cx: (proxy != Proxy::None).then_some(48),
            front_tls_handshakes: None,
            front_tls_session: None,
        }
    }

    fn samples() -> Vec<Sample> {
        let mut v = Vec::new();
        for rep in 0..3 {
            let jitter = rep as f64;
            v.push(sample(
                Case::Direct,
                Proxy::None,
                rep,
                30000.0,
                100.0 + jitter,
                0.0,
            ));
            v.push(sample(
                Case::Hop1,
                Proxy::Envoy,
                rep,
                14000.0,
                350.0 + jitter,
                57.0,
            ));
            v.push(sample(
                Case::Hop1,
                Proxy::Mesh,
                rep,
                21000.0,
                200.0 + jitter,
                28.5,
            ));
        }
        v
    }

    #[test]
    fn medians_and_comparisons() {
        let rows = summarize(&[Case::Direct, Case::Hop1], &samples());
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].proxy, Proxy::Envoy);
        assert_eq!(rows[1].p50_us.unwrap().median, 351.0);
        assert_eq!(rows[1].p50_us.unwrap().min, 350.0);
        let cmp = compare(&rows);
        assert_eq!(cmp.len(), 1);
        let c = &cmp[0];
        assert_eq!(c.case, Case::Hop1);
        assert!((c.rps_ratio.unwrap() - 1.5).abs() < 1e-9);
        assert!((c.cpu_ratio.unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(c.envoy_added_p50_us, Some(250.0));
        assert_eq!(c.mesh_added_p50_us, Some(100.0));
        assert!((c.added_p50_ratio.unwrap() - 0.4).abs() < 1e-9);
        assert_eq!(c.rss_ratio, Some(1.0));
    }

    #[test]
    fn comparison_needs_both_proxies() {
        let only_envoy: Vec<Sample> = samples()
            .into_iter()
            .filter(|s| s.proxy != Proxy::Mesh)
            .collect();
        let rows = summarize(&[Case::Direct, Case::Hop1], &only_envoy);
        assert!(compare(&rows).is_empty());
    }

    #[test]
    fn table_lists_every_row_and_the_ratios() {
        let rows = summarize(&[Case::Direct, Case::Hop1], &samples());
        let t = table(&rows, &compare(&rows), "wrk, 1 connection");
        assert!(t.contains("| direct"), "{t}");
        assert!(t.contains("mesh-proxy"), "{t}");
        assert!(t.contains("14000 (14000-14000)"), "{t}");
        assert!(t.contains("0.50x"), "{t}");
        assert!(t.contains("250 / 100"), "{t}");
        assert!(t.contains("latency: wrk, 1 connection"), "{t}");
        assert!(t.contains("| 48 "), "{t}");
        // Every line of a table has the same width.
        let first_table: Vec<&str> = t.split("\n\n").next().unwrap().lines().collect();
        let w = first_table[0].chars().count();
        assert!(first_table.iter().all(|l| l.chars().count() == w), "{t}");
    }

    #[test]
    fn svg_has_a_bar_per_proxy_and_figure_and_escapes_the_title() {
        let rows = summarize(&[Case::Direct, Case::Hop1], &samples());
        let svg = svg(&rows, &compare(&rows), "bench <quick> & loaded");
        assert!(svg.starts_with("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("bench &lt;quick&gt; &amp; loaded"));
        // 4 figures x 2 proxies, plus the 2 legend swatches and the background.
        assert_eq!(svg.matches("<rect").count(), 4 * 2 + 2 + 1);
        assert!(svg.contains(">hop1<"));
        assert!(!svg.contains(">direct<"), "direct has no proxy bars");
        // The tallest bar of a panel fills the plot height.
        assert!(svg.contains("height=\"180.0\""), "{svg}");
    }

    #[test]
    fn added_latency_ratio_needs_envoy_to_add_some() {
        assert_eq!(added_ratio(Some(50.0), Some(100.0)), Some(0.5));
        assert_eq!(added_ratio(Some(50.0), Some(-10.0)), None);
        assert_eq!(added_ratio(Some(-5.0), Some(10.0)), None);
    }

    #[test]
    fn connections_cell_shows_tls_handshakes_when_counted() {
        assert_eq!(connections_cell(Some(48), None).as_deref(), Some("48"));
        assert_eq!(
            connections_cell(Some(48), Some(47)).as_deref(),
            Some("48 (47 TLS)")
        );
        assert_eq!(connections_cell(None, Some(3)), None);
    }

    #[test]
    fn short_numbers() {
        assert_eq!(short(14234.0), "14.2k");
        assert_eq!(short(250.4), "250");
        assert_eq!(short(57.25), "57.2");
    }
}
