//! Durations as Istio writes them in YAML (`1s`, `0.5s`, `100ms`, `1m`, `1h`,
//! `1h30m`), held as [`std::time::Duration`].
//!
//! Istio accepts Go's duration syntax as well as protobuf's `N.NNNs`; both are
//! read here. Output uses the protobuf JSON form (`5s`, `0.100s`), which every
//! Istio version reads back. Negative durations have no `std` representation and
//! are rejected while parsing, with the offending text in the error.

use std::fmt;
use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("negative duration {0:?} is not allowed")]
    Negative(String),
    #[error(
        "invalid duration {0:?}: expected a number followed by a unit (h, m, s, ms, us, ns), e.g. \"1s\" or \"100ms\""
    )]
    Syntax(String),
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// The units of Istio's durations, in nanoseconds.
const UNITS: &[(&str, u128)] = &[
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ns", 1),
];

/// Days, which command lines take beside [`UNITS`] and Istio's fields do not.
const DAY: (&str, u128) = ("d", 86_400_000_000_000);

/// A duration given on a command line: Istio's form ([`parse_duration`]: `500ms`, `1.5s`,
/// `1h30m`) and days (`90d`), as operators write certificate lifetimes. The error names the
/// text and what is wrong with it (no unit, an unknown unit, a unit with no number).
pub fn parse_flag_duration(text: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "d, h, m, s, ms, us or ns, e.g. 90d, 1h30m, 500ms";
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("empty duration; use {EXPECTED}"));
    }
    if !s.chars().any(char::is_alphabetic) {
        return Err(format!("{s:?} has no unit; use {EXPECTED}"));
    }
    let numeric = |c: char| c.is_ascii_digit() || c == '.' || c == '-' || c == '+';
    for unit in s.split(numeric).filter(|u| !u.is_empty()) {
        if unit != DAY.0 && !UNITS.iter().any(|(name, _)| *name == unit) {
            return Err(format!("{s:?}: unknown unit {unit:?}; use {EXPECTED}"));
        }
    }
    if s.starts_with(char::is_alphabetic) {
        return Err(format!("{s:?}: a number must come before each unit"));
    }
    parse_with(s, true).map_err(|e| e.to_string())
}

/// Parses `1s`, `0.5s`, `100ms`, `1m`, `1h`, `1h30m`, `2.5us`, `10ns`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    parse_with(text, false)
}

fn parse_with(text: &str, days: bool) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let (negative, mut rest) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(DurationError::Syntax(text.to_string()));
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| DurationError::Syntax(text.to_string()))?;
        let number = &rest[..num_end];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(DurationError::Syntax(text.to_string()));
        }
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let mut known = UNITS.iter().chain(days.then_some(&DAY));
        let unit_nanos: u128 = match known.find(|(name, _)| *name == unit) {
            Some((_, nanos)) => *nanos,
            None => return Err(DurationError::Syntax(text.to_string())),
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole
                .parse()
                .map_err(|_| DurationError::Overflow(text.to_string()))?
        };
        let mut part = whole
            .checked_mul(unit_nanos)
            .ok_or_else(|| DurationError::Overflow(text.to_string()))?;
        // Fractions beyond nanosecond precision are truncated, as Go does.
        let mut scale = unit_nanos;
        for digit in frac.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            part += u128::from(digit - b'0') * scale;
        }
        total_nanos = total_nanos
            .checked_add(part)
            .ok_or_else(|| DurationError::Overflow(text.to_string()))?;
    }
    if negative && total_nanos != 0 {
        return Err(DurationError::Negative(text.to_string()));
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000)
        .map_err(|_| DurationError::Overflow(text.to_string()))?;
    Ok(Duration::new(secs, (total_nanos % 1_000_000_000) as u32))
}

/// Formats a duration the way protobuf's JSON mapping (and so Istio) writes it.
pub fn format_duration(d: Duration) -> String {
    DisplayDuration(d).to_string()
}

/// `Display` adapter for [`format_duration`].
#[derive(Debug, Clone, Copy)]
pub struct DisplayDuration(pub Duration);

impl fmt::Display for DisplayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let nanos = self.0.subsec_nanos();
        if nanos == 0 {
            write!(f, "{secs}s")
        } else if nanos.is_multiple_of(1_000_000) {
            write!(f, "{secs}.{:03}s", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            write!(f, "{secs}.{:06}s", nanos / 1_000)
        } else {
            write!(f, "{secs}.{nanos:09}s")
        }
    }
}

/// A duration as written: Istio wants a string, but a bare number (`10`) is a
/// common mistake that deserves a duration error rather than a type error.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Text(String),
    Number(serde_json::Number),
}

impl RawDuration {
    fn parse(self) -> Result<Duration, DurationError> {
        match self {
            RawDuration::Text(t) => parse_duration(&t),
            RawDuration::Number(n) => Err(DurationError::Syntax(n.to_string())),
        }
    }
}

/// Serde adapter for `Option<Duration>` fields (`#[serde(with = "crate::duration::option")]`).
pub mod option {
    use super::format_duration;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Option<Duration>, ser: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => ser.serialize_str(&format_duration(*d)),
            None => ser.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
        let raw: Option<super::RawDuration> = Option::deserialize(de)?;
        raw.map(|r| r.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Serde adapter for required `Duration` fields.
pub mod required {
    use super::format_duration;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Duration, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
        super::RawDuration::deserialize(de)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_forms() {
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("0.5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2.5us").unwrap(), Duration::from_nanos(2500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration(".25s").unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn rejects_bad_forms() {
        assert!(matches!(
            parse_duration("-1s"),
            Err(DurationError::Negative(_))
        ));
        assert!(matches!(
            parse_duration("10"),
            Err(DurationError::Syntax(_))
        ));
        assert!(matches!(
            parse_duration("1x"),
            Err(DurationError::Syntax(_))
        ));
        assert!(matches!(parse_duration("s"), Err(DurationError::Syntax(_))));
        assert!(matches!(
            parse_duration("1..2s"),
            Err(DurationError::Syntax(_))
        ));
        assert!(matches!(parse_duration(""), Err(DurationError::Empty)));
    }

    #[test]
    fn flags_take_days_and_say_what_is_wrong() {
        let d = |t| parse_flag_duration(t);
        assert_eq!(d("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(d("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(d("1.5s"), Ok(Duration::from_millis(1_500)));
        assert_eq!(d(" 500ms "), Ok(Duration::from_millis(500)));
        assert!(d("10").unwrap_err().contains("has no unit"));
        assert!(d("10w").unwrap_err().contains("unknown unit \"w\""));
        assert!(d("h").unwrap_err().contains("a number must come before"));
        assert!(d("").unwrap_err().contains("empty duration"));
        assert!(d("-5s").unwrap_err().contains("negative"));
        // Istio's own fields take no days.
        assert!(parse_duration("1d").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for text in ["1s", "0.5s", "100ms", "1m", "1h", "3.000001s", "7ns"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d, "{text}");
        }
        assert_eq!(format_duration(Duration::from_millis(100)), "0.100s");
        assert_eq!(format_duration(Duration::from_secs(60)), "60s");
    }
}
