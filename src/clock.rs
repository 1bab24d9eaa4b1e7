//! Time, in seconds since the epoch, and its UTC calendar form (the bottom layer: the
//! state directory, backups and plans all write and read it).

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `2026-11-22 04:05:06 UTC` for seconds since the epoch.
pub fn format_time(secs: u64) -> String {
    timestamp(secs)
        .strftime("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

/// `2026-11-22T04:05:06Z` (RFC 3339, UTC) for seconds since the epoch.
pub fn rfc3339(secs: u64) -> String {
    timestamp(secs).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Seconds since the epoch as a timestamp (the latest one jiff knows for later ones).
fn timestamp(secs: u64) -> jiff::Timestamp {
    i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .unwrap_or(jiff::Timestamp::MAX)
}

/// The UTC calendar date (year, month, day) of seconds since the epoch.
pub fn civil(secs: u64) -> (i64, i64, i64) {
    let date = timestamp(secs).to_zoned(jiff::tz::TimeZone::UTC).date();
    (
        i64::from(date.year()),
        i64::from(date.month()),
        i64::from(date.day()),
    )
}

/// Seconds and nanoseconds since the epoch of a UTC time as the engine writes it
/// (`2026-12-06T23:35:28.123456789Z`); `None` for another form or a time before the epoch
/// (the engine's `0001-01-01T00:00:00Z` for never).
pub fn parse_utc(t: &str) -> Option<(u64, u32)> {
    if !t.ends_with('Z') {
        return None;
    }
    let ts: jiff::Timestamp = t.parse().ok()?;
    let secs = u64::try_from(ts.as_second()).ok()?;
    Some((secs, u32::try_from(ts.subsec_nanosecond()).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_civil_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(1_795_320_306), "2026-11-22 04:05:06 UTC");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00:00 UTC");
        // RFC 3339, as JSON output gives it, and read back as the engine's are.
        assert_eq!(rfc3339(1_795_320_306), "2026-11-22T04:05:06Z");
        assert_eq!(parse_utc(&rfc3339(951_782_399)), Some((951_782_399, 0)));
    }

    #[test]
    fn the_engines_times_are_read_back() {
        assert_eq!(parse_utc("2026-11-22T04:05:06Z"), Some((1_795_320_306, 0)));
        assert_eq!(
            parse_utc("2000-02-29T00:00:00.5Z"),
            Some((951_782_400, 500_000_000))
        );
        assert_eq!(parse_utc("1970-01-01T00:00:01.000000007Z"), Some((1, 7)));
        assert_eq!(parse_utc("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_utc("2026-11-22 04:05:06"), None);
        // Every day of a leap and a common year, through `format_time`.
        for secs in (946_684_800..1_009_843_200).step_by(86_400 + 3_661) {
            let (y, m, d) = civil(secs);
            let rem = secs % 86_400;
            let t = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
                rem / 3600,
                (rem % 3600) / 60,
                rem % 60
            );
            assert_eq!(parse_utc(&t), Some((secs, 0)), "{t}");
        }
    }
}
