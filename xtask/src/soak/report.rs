//! Turning the samples into a summary per process (start after warm-up, end, max, slope), a
//! leak verdict, a CSV file, markdown tables and an SVG chart. Pure functions, unit-tested.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::sample::ProcessSample;
use super::traffic::LaneCounts;
use crate::render::{markdown, xml_escape};

/// Growth, after warm-up, above which a steady trend is flagged as a possible leak:
/// percent of the value at the start per 10 minutes.
pub const LEAK_PCT_PER_10_MIN: f64 = 10.0;
/// How well a line must fit the samples for growth to count as steady (R², 0..1): a one-off
/// step or noise around a flat line fits badly.
pub const STEADY_R2: f64 = 0.5;
/// Growth over the measured window below which nothing is flagged, whatever the percentage:
/// an allocator's arena or one more pooled connection in a short run is not a leak.
pub const MIN_RSS_GROWTH_KIB: f64 = 1024.0;
pub const MIN_FD_GROWTH: f64 = 3.0;
/// Threads: reported, flagged with the fds' floor.
pub const MIN_THREAD_GROWTH: f64 = 3.0;
/// Seconds after warm-up below which nothing is judged: a slope over a minute or two of a
/// value that moves with the connections in flight says nothing about a leak.
pub const MIN_VERDICT_WINDOW_S: f64 = 300.0;

/// A least-squares line through (seconds, value) points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Units per second.
    pub slope: f64,
    /// Coefficient of determination; `None` when the values do not vary (a flat line).
    pub r2: Option<f64>,
}

/// The least-squares line through `points`; `None` with fewer than two distinct times.
pub fn fit(points: &[(f64, f64)]) -> Option<Fit> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let r2 = (syy > 0.0).then(|| (sxy * sxy) / (sxx * syy));
    Some(Fit { slope, r2 })
}

/// One figure of one process over the run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Trend {
    /// The first sample at or after the warm-up.
    pub start: f64,
    /// The last sample.
    pub end: f64,
    /// The largest sample after the warm-up.
    pub max: f64,
    /// The largest sample of the whole run, warm-up (and start-up) included.
    pub peak: f64,
    /// Least-squares slope after warm-up, per 10 minutes.
    pub slope_per_10_min: Option<f64>,
    /// The same as a percentage of `start`.
    pub pct_per_10_min: Option<f64>,
    pub r2: Option<f64>,
    /// Seconds between the first and the last sample the slope was fitted on.
    pub window_s: f64,
    /// Grows steadily: see [`LEAK_PCT_PER_10_MIN`], [`STEADY_R2`] and the floors.
    pub growing: bool,
}

/// The trend of `points` (seconds, value) after `warmup_s`; when no point is that late (a run
/// shorter than its warm-up), of all points.
pub fn trend(points: &[(f64, f64)], warmup_s: f64, min_growth: f64) -> Option<Trend> {
    let peak = points.iter().map(|p| p.1).reduce(f64::max)?;
    let after: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.0 >= warmup_s).collect();
    let window = if after.is_empty() { points } else { &after };
    let (first, last) = (window.first()?, window.last()?);
    let max = window.iter().map(|p| p.1).fold(f64::MIN, f64::max);
    let line = fit(window);
    let slope_per_10_min = line.map(|f| f.slope * 600.0);
    let pct_per_10_min = slope_per_10_min
        .filter(|_| first.1 > 0.0)
        .map(|s| s / first.1 * 100.0);
    let growth = line.map_or(0.0, |f| f.slope * (last.0 - first.0));
    let r2 = line.and_then(|f| f.r2);
    let growing = pct_per_10_min.is_some_and(|p| p > LEAK_PCT_PER_10_MIN)
        && r2.is_some_and(|r| r >= STEADY_R2)
        && growth >= min_growth;
    Some(Trend {
        start: first.1,
        end: last.1,
        max,
        peak,
        slope_per_10_min,
        pct_per_10_min,
        r2,
        window_s: last.0 - first.0,
        growing,
    })
}

/// One process over the run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProcessSummary {
    pub process: String,
    pub pid: u32,
    pub samples: usize,
    /// When it was first seen gone, in seconds since the traffic started.
    pub exited_at_s: Option<f64>,
    pub rss_kib: Option<Trend>,
    pub fds: Option<Trend>,
    pub threads: Option<Trend>,
}

impl ProcessSummary {
    fn trends(&self) -> [(&'static str, &Option<Trend>); 3] {
        [
            ("RSS", &self.rss_kib),
            ("fds", &self.fds),
            ("threads", &self.threads),
        ]
    }

    /// Whether the run after warm-up was long enough to judge growth.
    pub fn judged(&self) -> bool {
        self.rss_kib
            .as_ref()
            .is_some_and(|t| t.window_s >= MIN_VERDICT_WINDOW_S)
    }

    /// What looks wrong: `RSS`, `fds`, `threads` growing (in a run long enough to judge), or
    /// the process gone.
    pub fn flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        for (name, t) in self.trends() {
            if let Some(t) = t
                .as_ref()
                .filter(|t| t.growing && t.window_s >= MIN_VERDICT_WINDOW_S)
            {
                flags.push(format!(
                    "possible leak: {name} +{:.1} %/10 min",
                    t.pct_per_10_min.unwrap_or(0.0)
                ));
            }
        }
        if let Some(t) = self.exited_at_s {
            flags.push(format!("exited (gone at {})", clock(t)));
        }
        flags
    }
}

/// Per process, in the order they were first sampled.
pub fn summarize(samples: &[ProcessSample], warmup_s: f64) -> Vec<ProcessSummary> {
    let mut order: Vec<&str> = Vec::new();
    for s in samples {
        if !order.contains(&s.process.as_str()) {
            order.push(&s.process);
        }
    }
    order
        .into_iter()
        .map(|name| {
            let of: Vec<&ProcessSample> = samples.iter().filter(|s| s.process == name).collect();
            let series = |f: fn(&ProcessSample) -> Option<u64>| -> Vec<(f64, f64)> {
                of.iter()
                    .filter(|s| s.alive)
                    .filter_map(|s| f(s).map(|v| (s.t_s, v as f64)))
                    .collect()
            };
            ProcessSummary {
                process: name.to_string(),
                pid: of[0].pid,
                samples: of.len(),
                exited_at_s: of.iter().find(|s| !s.alive).map(|s| s.t_s),
                rss_kib: trend(&series(|s| s.rss_kib), warmup_s, MIN_RSS_GROWTH_KIB),
                fds: trend(&series(|s| s.fds), warmup_s, MIN_FD_GROWTH),
                threads: trend(&series(|s| s.threads), warmup_s, MIN_THREAD_GROWTH),
            }
        })
        .collect()
}

/// `m:ss` of a number of seconds.
pub fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// One row per process per sample.
pub fn csv(samples: &[ProcessSample]) -> String {
    let mut out = String::from(
        "t_s,process,pid,alive,rss_kib,fds,threads,downstream_cx_active,upstream_cx_active,xds_pushes\n",
    );
    for s in samples {
        let _ = writeln!(
            out,
            "{:.1},{},{},{},{},{},{},{},{},{}",
            s.t_s,
            s.process,
            s.pid,
            s.alive,
            opt(s.rss_kib),
            opt(s.fds),
            opt(s.threads),
            opt(s.downstream_cx_active),
            opt(s.upstream_cx_active),
            opt(s.xds_pushes)
        );
    }
    out
}

fn mib(kib: f64) -> String {
    format!("{:.1}", kib / 1024.0)
}

fn signed(v: f64, decimals: usize) -> String {
    // No `-0.0`: a flat line reads +0.
    let v = if v.abs() < 0.5 * 10f64.powi(-(decimals as i32)) {
        0.0
    } else {
        v
    };
    format!("{v:+.decimals$}")
}

fn slope_cell(t: &Trend, scale: f64, decimals: usize) -> String {
    match (t.slope_per_10_min, t.pct_per_10_min) {
        (Some(s), Some(p)) => format!("{} ({} %)", signed(s / scale, decimals), signed(p, 1)),
        (Some(s), None) => signed(s / scale, decimals),
        _ => "-".into(),
    }
}

/// The summary table: per process RSS and fds at the start (after warm-up), at the end, their
/// maximum and their slope after warm-up, the RSS peak of the whole run, threads, and what
/// looks wrong.
pub fn table(summaries: &[ProcessSummary]) -> String {
    let mut grid = vec![
        [
            "process",
            "RSS start MiB",
            "RSS end MiB",
            "RSS max MiB",
            "RSS slope MiB/10 min",
            "RSS peak MiB",
            "fds start",
            "fds end",
            "fds max",
            "fds slope /10 min",
            "threads start/end/max",
            "verdict",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for s in summaries {
        let mut row = vec![s.process.clone()];
        match &s.rss_kib {
            Some(t) => row.extend([
                mib(t.start),
                mib(t.end),
                mib(t.max),
                slope_cell(t, 1024.0, 2),
                mib(t.peak),
            ]),
            None => row.extend([
                "-".to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]),
        }
        match &s.fds {
            Some(t) => row.extend([
                format!("{:.0}", t.start),
                format!("{:.0}", t.end),
                format!("{:.0}", t.max),
                slope_cell(t, 1.0, 1),
            ]),
            None => row.extend(["-".to_string(), "-".into(), "-".into(), "-".into()]),
        }
        row.push(s.threads.as_ref().map_or("-".into(), |t| {
            format!("{:.0}/{:.0}/{:.0}", t.start, t.end, t.max)
        }));
        let flags = s.flags();
        row.push(if !flags.is_empty() {
            flags.join("; ")
        } else if s.judged() {
            "flat".into()
        } else {
            "too short to judge".into()
        });
        grid.push(row);
    }
    markdown(&grid)
}

/// Traffic per lane: requests, rate, answers by status, failures by kind, versions, latency.
pub fn traffic_table(lanes: &BTreeMap<String, LaneCounts>, seconds: f64) -> String {
    let mut grid = vec![
        [
            "lane",
            "requests",
            "req/s",
            "statuses",
            "errors",
            "versions",
            "connections",
            "mean ms",
            "max ms",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut total = LaneCounts::default();
    let join = |m: &BTreeMap<String, u64>| {
        if m.is_empty() {
            "0".to_string()
        } else {
            m.iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let row = |name: &str, c: &LaneCounts| -> Vec<String> {
        let answered: u64 = c.statuses.values().sum();
        let statuses: BTreeMap<String, u64> = c
            .statuses
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        vec![
            name.to_string(),
            c.requests.to_string(),
            format!("{:.1}", c.requests as f64 / seconds.max(1e-9)),
            join(&statuses),
            join(&c.errors),
            join(&c.versions),
            c.connections.to_string(),
            if answered > 0 {
                format!("{:.2}", c.latency_sum_us as f64 / answered as f64 / 1000.0)
            } else {
                "-".into()
            },
            format!("{:.1}", c.latency_max_us as f64 / 1000.0),
        ]
    };
    for (name, c) in lanes {
        grid.push(row(name, c));
        total.requests += c.requests;
        for (k, v) in &c.statuses {
            *total.statuses.entry(*k).or_default() += v;
        }
        for (k, v) in &c.errors {
            *total.errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &c.versions {
            *total.versions.entry(k.clone()).or_default() += v;
        }
        total.connections += c.connections;
        total.latency_sum_us += c.latency_sum_us;
        total.latency_max_us = total.latency_max_us.max(c.latency_max_us);
    }
    grid.push(row("total", &total));
    markdown(&grid)
}

const COLOURS: [&str; 8] = [
    "#2f80ed", "#eb5757", "#27ae60", "#f2994a", "#9b51e0", "#00a3a3", "#333333", "#b8860b",
];

/// Small multiples: one row per process, RSS (MiB) on the left and open fds on the right, each
/// panel on its own scale from 0, the warm-up shaded. `subtitle` goes under the title.
pub fn svg(samples: &[ProcessSample], warmup_s: f64, title: &str, subtitle: &str) -> String {
    let mut processes: Vec<&str> = Vec::new();
    for s in samples {
        if !processes.contains(&s.process.as_str()) {
            processes.push(&s.process);
        }
    }
    let end_s = samples
        .iter()
        .map(|s| s.t_s)
        .fold(0.0_f64, f64::max)
        .max(1.0);
    type Figure = (&'static str, fn(&ProcessSample) -> Option<f64>);
    let figures: [Figure; 2] = [
        ("RSS, MiB", |s| s.rss_kib.map(|k| k as f64 / 1024.0)),
        ("open fds", |s| s.fds.map(|n| n as f64)),
    ];
    let (left, plot_w, right) = (50.0_f64, 380.0_f64, 20.0_f64);
    let (top, plot_h, row_gap) = (64.0_f64, 90.0_f64, 44.0_f64);
    let col_w = left + plot_w + right;
    let width = 2.0 * col_w;
    let height = top + processes.len().max(1) as f64 * (plot_h + row_gap) + 20.0;
    let step = minute_step(end_s / 60.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{}</text><text x=\"10\" y=\"38\" fill=\"#555\">{}</text>",
        xml_escape(title),
        xml_escape(subtitle)
    );
    for (row, process) in processes.iter().enumerate() {
        let colour = COLOURS[row % COLOURS.len()];
        let of: Vec<&ProcessSample> = samples
            .iter()
            .filter(|s| s.process == *process && s.alive)
            .collect();
        let y0 = top + row as f64 * (plot_h + row_gap);
        let base = y0 + plot_h;
        for (col, (name, value)) in figures.iter().enumerate() {
            let x0 = col as f64 * col_w + left;
            let x_of = |t: f64| x0 + t / end_s * plot_w;
            let values: Vec<(f64, f64)> = of
                .iter()
                .filter_map(|s| value(s).map(|v| (s.t_s, v)))
                .collect();
            let y_top = nice_ceiling(values.iter().map(|p| p.1).fold(0.0, f64::max) * 1.1);
            let y_of = |v: f64| base - v / y_top * plot_h;
            let last = values.last().map_or(String::new(), |p| {
                format!(" (end {})", axis_number((p.1 * 10.0).round() / 10.0))
            });
            let _ = writeln!(
                s,
                r#"<text x="{x0}" y="{:.1}" font-weight="bold">{} <tspan font-weight="normal">{}{last}</tspan></text>"#,
                y0 - 8.0,
                xml_escape(process),
                xml_escape(name)
            );
            if warmup_s > 0.0 {
                let _ = writeln!(
                    s,
                    "<rect x=\"{x0}\" y=\"{y0}\" width=\"{:.1}\" height=\"{plot_h}\" fill=\"#f0f0f0\"/>",
                    x_of(warmup_s.min(end_s)) - x0
                );
                if row == 0 {
                    let _ = writeln!(
                        s,
                        "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#888\" font-size=\"10\">warm-up</text>",
                        x0 + 4.0,
                        y0 + 12.0
                    );
                }
            }
            for k in 0..=2 {
                let v = y_top * k as f64 / 2.0;
                let y = y_of(v);
                let _ = writeln!(
                    s,
                    "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                    x0 + plot_w,
                    x0 - 6.0,
                    y + 4.0,
                    axis_number(v)
                );
            }
            let mut m = 0.0;
            while m * 60.0 <= end_s + 1e-6 {
                let x = x_of(m * 60.0);
                let _ = writeln!(
                    s,
                    "<line x1=\"{x:.1}\" y1=\"{base}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#333\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"9\">{}</text>",
                    base + 3.0,
                    base + 13.0,
                    axis_number(m)
                );
                m += step;
            }
            let _ = writeln!(
                s,
                "<line x1=\"{x0}\" y1=\"{base}\" x2=\"{:.1}\" y2=\"{base}\" stroke=\"#333\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"9\" fill=\"#555\">minutes</text>",
                x0 + plot_w,
                x0 + plot_w,
                base + 24.0
            );
            let points: Vec<String> = values
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", x_of(*t), y_of(*v)))
                .collect();
            if !points.is_empty() {
                let _ = writeln!(
                    s,
                    r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
                    points.join(" ")
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

/// The smallest of 1, 2, 2.5, 5 x 10^k at or above `v` (an axis top).
pub fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|c| *c >= v - 1e-9)
        .unwrap_or(10.0 * magnitude)
}

/// Minutes between x-axis ticks: about 6 to 10 ticks.
fn minute_step(minutes: f64) -> f64 {
    [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0]
        .into_iter()
        .find(|s| minutes / s <= 10.0)
        .unwrap_or(120.0)
}

fn axis_number(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_s: f64, process: &str, rss_kib: u64, fds: u64) -> ProcessSample {
        ProcessSample {
            t_s,
            process: process.into(),
            pid: 7,
            alive: true,
            rss_kib: Some(rss_kib),
            fds: Some(fds),
            threads: Some(4),
            downstream_cx_active: None,
            upstream_cx_active: None,
            xds_pushes: None,
        }
    }

    /// 10 minutes every 5 s: `flat` stays at 20 MiB (with a tiny ripple), `leaky` grows by
    /// 4 MiB and 20 fds per 10 minutes from 20 MiB / 30 fds after warm-up.
    fn run() -> Vec<ProcessSample> {
        let mut v = Vec::new();
        for i in 0..=120 {
            let t = i as f64 * 5.0;
            let ripple = if i % 2 == 0 { 0 } else { 64 };
            v.push(sample(t, "proxy/flat", 20 * 1024 + ripple, 30));
            let grown = (t - 60.0).max(0.0) / 600.0;
            v.push(sample(
                t,
                "proxy/leaky",
                20 * 1024 + (4096.0 * grown) as u64,
                30 + (20.0 * grown) as u64,
            ));
        }
        v
    }

    #[test]
    fn slope_of_a_line_and_of_nothing() {
        let f = fit(&[(0.0, 1.0), (10.0, 21.0), (20.0, 41.0)]).unwrap();
        assert!((f.slope - 2.0).abs() < 1e-9);
        assert!((f.r2.unwrap() - 1.0).abs() < 1e-9);
        let flat = fit(&[(0.0, 5.0), (10.0, 5.0)]).unwrap();
        assert_eq!(flat.slope, 0.0);
        assert_eq!(flat.r2, None, "a flat line has no variance to explain");
        assert_eq!(fit(&[(1.0, 1.0)]), None);
        assert_eq!(fit(&[(1.0, 1.0), (1.0, 2.0)]), None, "one time only");
    }

    #[test]
    fn start_and_max_are_after_warm_up_and_the_peak_is_over_the_run() {
        let pts = [(0.0, 50.0), (30.0, 10.0), (60.0, 11.0), (120.0, 12.0)];
        let t = trend(&pts, 60.0, 0.0).unwrap();
        assert_eq!((t.start, t.end, t.max, t.peak), (11.0, 12.0, 12.0, 50.0));
        assert!((t.slope_per_10_min.unwrap() - 10.0).abs() < 1e-9, "{t:?}");
        assert!((t.pct_per_10_min.unwrap() - 10.0 / 11.0 * 100.0).abs() < 1e-9);
        // A run shorter than its warm-up uses every point.
        let t = trend(&pts[..2], 60.0, 0.0).unwrap();
        assert_eq!(t.start, 50.0);
        assert_eq!(trend(&[], 60.0, 0.0), None);
    }

    #[test]
    fn steady_growth_is_flagged_and_flat_or_small_is_not() {
        let s = summarize(&run(), 60.0);
        assert_eq!(s.len(), 2);
        let (flat, leaky) = (&s[0], &s[1]);
        assert_eq!(flat.process, "proxy/flat");
        assert_eq!(flat.samples, 121);
        assert!(flat.flags().is_empty(), "{flat:?}");
        let rss = leaky.rss_kib.as_ref().unwrap();
        assert!(
            (rss.slope_per_10_min.unwrap() - 4096.0).abs() < 20.0,
            "{rss:?}"
        );
        assert!(rss.growing && leaky.fds.as_ref().unwrap().growing);
        assert!(!leaky.threads.as_ref().unwrap().growing);
        let flags = leaky.flags();
        assert_eq!(flags.len(), 2, "{flags:?}");
        assert!(flags[0].starts_with("possible leak: RSS +20."), "{flags:?}");
        assert!(flags[1].starts_with("possible leak: fds +"), "{flags:?}");

        // Steep in percent but below the floor: one fd more in a minute.
        let pts: Vec<(f64, f64)> = (0..12)
            .map(|i| (i as f64 * 5.0, if i < 6 { 10.0 } else { 11.0 }))
            .collect();
        assert!(!trend(&pts, 0.0, MIN_FD_GROWTH).unwrap().growing);
        // Large but not steady: one step down, then back up.
        let pts = [
            (0.0, 100.0),
            (5.0, 10.0),
            (10.0, 100.0),
            (15.0, 10.0),
            (20.0, 110.0),
        ];
        assert!(!trend(&pts, 0.0, 1.0).unwrap().growing);
        // Shrinking is never a leak.
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 100.0 - i as f64)).collect();
        assert!(!trend(&pts, 0.0, 0.0).unwrap().growing);
    }

    #[test]
    fn a_short_run_is_not_judged() {
        // Two minutes, one after warm-up, growing fast and steadily: not long enough.
        let v: Vec<ProcessSample> = (0..=24)
            .map(|i| sample(i as f64 * 5.0, "proxy/x", 10_000 + i * 1000, 10 + i))
            .collect();
        let s = summarize(&v, 60.0);
        let rss = s[0].rss_kib.as_ref().unwrap();
        assert!(rss.growing && rss.window_s == 60.0, "{rss:?}");
        assert!(s[0].flags().is_empty() && !s[0].judged());
        assert!(
            table(&s).contains("| too short to judge |"),
            "{}",
            table(&s)
        );
    }

    #[test]
    fn an_exited_process_is_reported() {
        let mut v = vec![sample(0.0, "app/x", 100, 5), sample(5.0, "app/x", 100, 5)];
        v.push(ProcessSample {
            alive: false,
            rss_kib: None,
            fds: None,
            threads: None,
            ..sample(10.0, "app/x", 0, 0)
        });
        let s = summarize(&v, 0.0);
        assert_eq!(s[0].exited_at_s, Some(10.0));
        assert_eq!(s[0].flags(), ["exited (gone at 0:10)"]);
        assert_eq!(
            s[0].rss_kib.as_ref().unwrap().end,
            100.0,
            "the gone sample is left out"
        );
    }

    #[test]
    fn csv_has_a_header_and_a_row_per_sample_with_empty_unknowns() {
        let mut s = sample(5.0, "control-plane", 1000, 12);
        s.xds_pushes = Some(42);
        let text = csv(&[s, sample(10.0, "proxy/a", 2000, 13)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            "t_s,process,pid,alive,rss_kib,fds,threads,downstream_cx_active,upstream_cx_active,xds_pushes"
        );
        assert_eq!(lines[1], "5.0,control-plane,7,true,1000,12,4,,,42");
        assert_eq!(lines[2], "10.0,proxy/a,7,true,2000,13,4,,,");
    }

    #[test]
    fn table_shows_values_slopes_and_verdicts() {
        let text = table(&summarize(&run(), 60.0));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("| process"), "{text}");
        assert!(
            lines[2].contains("| proxy/flat ") && lines[2].contains("| flat "),
            "{text}"
        );
        assert!(
            lines[2].contains("| +0.00 ("),
            "a flat slope reads +0: {text}"
        );
        // 20 MiB at the start, 4 MiB (+20 %) per 10 minutes.
        assert!(
            lines[3].contains("| 20.0 ") && lines[3].contains("| +4.0"),
            "{text}"
        );
        assert!(lines[3].contains("possible leak: RSS"), "{text}");
        assert!(lines[3].contains("| 4/4/4 "), "{text}");
    }

    #[test]
    fn traffic_table_totals_every_lane() {
        let mut a = LaneCounts {
            requests: 3,
            connections: 1,
            latency_sum_us: 3000,
            latency_max_us: 1500,
            ..Default::default()
        };
        a.statuses.insert(200, 2);
        a.errors.insert("timeout".into(), 1);
        a.versions.insert("safe".into(), 2);
        let mut b = LaneCounts {
            requests: 2,
            ..Default::default()
        };
        b.statuses.insert(503, 2);
        let lanes = BTreeMap::from([("a".to_string(), a), ("b".to_string(), b)]);
        let text = traffic_table(&lanes, 1.0);
        let total = text.lines().last().unwrap();
        assert!(total.starts_with("| total "), "{text}");
        assert!(
            total.contains("| 5 ") && total.contains("200: 2, 503: 2"),
            "{text}"
        );
        assert!(
            total.contains("timeout: 1") && total.contains("safe: 2"),
            "{text}"
        );
        assert!(
            text.contains("| 1.50 "),
            "mean over answered requests: {text}"
        );
    }

    #[test]
    fn svg_draws_a_panel_per_process_and_figure_and_escapes() {
        let svg = svg(&run(), 60.0, "soak <debug> & co", "300 req/s");
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("soak &lt;debug&gt; &amp; co") && svg.contains(">300 req/s<"));
        assert_eq!(
            svg.matches("<polyline").count(),
            2 * 2,
            "2 processes x (RSS, fds)"
        );
        assert_eq!(
            svg.matches(">warm-up<").count(),
            2,
            "labelled on the first row"
        );
        // 20 MiB + 4 MiB x 540/600 at the end; 30 + 20 x 0.9 fds.
        assert!(
            svg.contains("proxy/leaky <tspan font-weight=\"normal\">RSS, MiB (end 23.6)"),
            "{svg}"
        );
        assert!(svg.contains("open fds (end 48)"), "{svg}");
        // 0..10 minutes: a tick every minute, labelled.
        assert!(svg.contains(">10</text>") && svg.contains(">minutes<"));
    }

    #[test]
    fn axis_helpers() {
        assert_eq!(nice_ceiling(22.0), 25.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
        assert_eq!(nice_ceiling(101.0), 200.0);
        assert_eq!(minute_step(2.0), 0.25);
        assert_eq!(minute_step(30.0), 5.0);
        assert_eq!(axis_number(2.5), "2.5");
        assert_eq!(axis_number(0.25), "0.25");
        assert_eq!(axis_number(4.0), "4");
        assert_eq!(clock(65.4), "1:05");
        assert_eq!(signed(-0.001, 2), "+0.00");
    }
}
