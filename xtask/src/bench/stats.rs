//! Medians with their spread, and the ratios the report quotes.

/// The median of several repetitions with the smallest and largest seen.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

/// `None` for no samples; NaNs are dropped first.
pub fn spread(samples: &[f64]) -> Option<Spread> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Spread {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

/// mesh / envoy, `None` when Envoy's figure is zero or missing.
pub fn ratio(mesh: Option<f64>, envoy: Option<f64>) -> Option<f64> {
    match (mesh, envoy) {
        (Some(m), Some(e)) if e != 0.0 => Some(m / e),
        _ => None,
    }
}

/// Latency a proxy adds over the direct path.
pub fn added(proxied: Option<f64>, direct: Option<f64>) -> Option<f64> {
    Some(proxied? - direct?)
}

/// CPU microseconds per request (equal to CPU milliseconds per 1,000 requests).
pub fn cpu_us_per_request(ticks: u64, clock_ticks_per_sec: u64, requests: u64) -> Option<f64> {
    if requests == 0 || clock_ticks_per_sec == 0 {
        return None;
    }
    Some(ticks as f64 / clock_ticks_per_sec as f64 * 1e6 / requests as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = spread(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = spread(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert_eq!(spread(&[]), None);
        assert_eq!(spread(&[f64::NAN, 5.0]).unwrap().median, 5.0);
    }

    #[test]
    fn ratios_and_added_latency() {
        assert_eq!(ratio(Some(50.0), Some(100.0)), Some(0.5));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(added(Some(450.0), Some(200.0)), Some(250.0));
        assert_eq!(added(Some(450.0), None), None);
    }

    #[test]
    fn cpu_per_request() {
        // 57 ticks of 10 ms over 10,000 requests: 57 µs each.
        let v = cpu_us_per_request(57, 100, 10_000).unwrap();
        assert!((v - 57.0).abs() < 1e-9);
        assert_eq!(cpu_us_per_request(1, 100, 0), None);
    }
}
