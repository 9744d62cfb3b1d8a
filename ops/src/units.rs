//! Units as people write them in flags, settings and profiles, and as reports print them:
//! sizes (`4MiB`, `100MB` → `4.0 MiB`), durations (`1h30m` → `1h30m00s`) and times
//! (RFC 3339, and offsets in seconds from a run's start).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

/// Parses `4MiB`, `512KiB`, `1GiB`, `10MB`, `123` (bytes).
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?} (examples: 4MiB, 512KiB, 1048576)"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?} (B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("size {text:?} is out of range"));
    }
    Ok(bytes.round() as u64)
}

/// `4.0 MiB`, `512 B`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `90s`, `30m`, `2h`, `1h30m`, `1d`, `45` (seconds), `0.5h`: a bare number of seconds, else
/// the units [`kfcache_sidecar::spec::parse_duration`] reads.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (examples: 90s, 30m, 2h, 1h30m)");
    match text.trim().parse::<f64>() {
        Ok(seconds) => Duration::try_from_secs_f64(seconds).map_err(|_| bad()),
        Err(_) => kfcache_sidecar::spec::parse_duration(text).ok_or_else(bad),
    }
}

/// Seconds as people read them: `0s`, `1m01s`, `2h00m05s`.
pub fn duration(seconds: f64) -> String {
    let total = seconds.round().max(0.0) as u64;
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// An RFC 3339 time, in any offset, as UTC.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 time ({e}), e.g. 2024-06-01T02:00:00Z"))
}

/// `t` in RFC 3339, to the second, `Z` for UTC.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The time `seconds` after `anchor` (a run's start), to the millisecond.
pub fn at(anchor: DateTime<Utc>, seconds: f64) -> DateTime<Utc> {
    anchor + chrono::Duration::milliseconds((seconds * 1000.0).round() as i64)
}

/// Seconds from `anchor` to `t`, to the millisecond.
pub fn seconds_since(anchor: DateTime<Utc>, t: DateTime<Utc>) -> f64 {
    (t - anchor).num_milliseconds() as f64 / 1000.0
}

/// The end of `text` in at most `max` characters, `…` for what is cut.
pub fn tail(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    format!(
        "…{}",
        text.chars().skip(count + 1 - max).collect::<String>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip_through_their_units() {
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("4 parsecs").is_err());
        assert_eq!(human_size(4 << 20), "4.0 MiB");
        assert_eq!(human_size(512), "512 B");
    }

    #[test]
    fn durations_read_and_print_naturally() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("0.5h"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        for bad in ["", "m", "30x", "-5m", "h1", "soon"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(duration(0.0), "0s");
        assert_eq!(duration(61.0), "1m01s");
        assert_eq!(duration(7205.0), "2h00m05s");
    }

    #[test]
    fn times_are_rfc3339_in_utc_and_offsets_from_an_anchor() {
        let t = parse_time("2024-06-01T04:00:00+02:00").expect("valid time");
        assert_eq!(rfc3339(t), "2024-06-01T02:00:00Z");
        assert_eq!(rfc3339(at(t, 61.4)), "2024-06-01T02:01:01Z");
        assert_eq!(seconds_since(t, at(t, 2.5)), 2.5);
        assert!(parse_time("tomorrow").is_err());
        assert_eq!(tail("abcdef", 4), "…def");
        assert_eq!(tail("abc", 4), "abc");
    }
}
