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
    let (date, time) = date_and_time(secs);
    format!("{date} {time} UTC")
}

/// `2026-11-22T04:05:06Z` (RFC 3339, UTC) for seconds since the epoch.
pub fn rfc3339(secs: u64) -> String {
    let (date, time) = date_and_time(secs);
    format!("{date}T{time}Z")
}

/// `2026-11-22` and `04:05:06`.
fn date_and_time(secs: u64) -> (String, String) {
    let (y, m, d) = civil(secs);
    let rem = secs % 86_400;
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", rem / 3600, (rem % 3600) / 60, rem % 60),
    )
}

/// The UTC calendar date (year, month, day) of seconds since the epoch.
pub fn civil(secs: u64) -> (i64, i64, i64) {
    let days = secs / 86_400;
    // Civil from days (Howard Hinnant's algorithm), proleptic Gregorian, UTC.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (y, m, d)
}

/// Seconds and nanoseconds since the epoch of a UTC time as the engine writes it
/// (`2026-12-06T23:35:28.123456789Z`); `None` for another form or a time before the epoch
/// (the engine's `0001-01-01T00:00:00Z` for never).
pub fn parse_utc(t: &str) -> Option<(u64, u32)> {
    let t = t.strip_suffix('Z')?;
    let (date, time) = t.split_once('T')?;
    let mut ymd = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut hms = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, mi, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || frac.len() > 9 {
        return None;
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        frac.parse::<u32>().ok()? * 10u32.pow(9 - frac.len() as u32)
    };
    // Days from civil (Howard Hinnant's algorithm), the inverse of `civil`.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec;
    Some((u64::try_from(secs).ok()?, nanos))
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
