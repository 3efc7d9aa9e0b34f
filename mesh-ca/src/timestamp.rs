//! Times in logs and messages as RFC 3339 (`2026-11-27T18:20:01Z`), not as `SystemTime`'s
//! debug form (`SystemTime { tv_sec: ..., tv_nsec: ... }`).

use std::time::SystemTime;

use time::OffsetDateTime;

/// `t` in UTC to the second, `2026-11-27T18:20:01Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let t = OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `t` in UTC to the millisecond, `2026-11-27T18:20:01.250Z`: for debug pages that order
/// events closer than a second apart.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let seconds = rfc3339(t);
    let millis = OffsetDateTime::from(t).millisecond();
    format!("{}.{millis:03}Z", seconds.trim_end_matches('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_utc_seconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_708_800_250);
        assert_eq!(rfc3339(t), "2026-11-26T16:00:00Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_millis(t), "2026-11-26T16:00:00.250Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339_millis(leap), "2000-02-29T00:00:00.000Z");
    }
}
