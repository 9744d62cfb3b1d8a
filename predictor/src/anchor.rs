//! When the predicted run starts: an explicit time, now, or a CronWorkflow's next fire time.
//!
//! Argo schedules are standard five-field cron (`minute hour day month weekday`, Sunday = 0
//! or 7) evaluated in the CronWorkflow's `timezone` (UTC when none), so DST changes move the
//! fire time in UTC. The `cron` crate wants a seconds field and numbers weekdays from 1 =
//! Sunday, so schedules are translated: a `0` seconds field is prepended and numeric weekdays
//! become names (`1-5` → `MON-FRI`). Several schedules fire at the earliest of them.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use kfcache_parser::Pipeline;

use crate::error::{Error, Result};

const DAYS: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];

/// Translate a five-field (or macro) Argo schedule into the `cron` crate's syntax.
pub fn to_cron_syntax(schedule: &str) -> String {
    let trimmed = schedule.trim();
    if trimmed.starts_with('@') {
        return trimmed.to_string();
    }
    let fields: Vec<&str> = trimmed.split_whitespace().collect();
    if fields.len() != 5 {
        return trimmed.to_string();
    }
    let weekday = fields[4]
        .split(',')
        .map(|item| {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (item, None),
            };
            let named = match range.split_once('-') {
                Some((a, b)) => match (a.parse::<usize>(), b.parse::<usize>()) {
                    (Ok(a), Ok(7)) if a <= 6 && step.is_none() => {
                        if a == 0 {
                            "*".to_string()
                        } else {
                            format!("{}-SAT,SUN", DAYS[a])
                        }
                    }
                    (Ok(a), Ok(b)) if a <= 7 && b <= 7 => format!("{}-{}", DAYS[a], DAYS[b]),
                    _ => range.to_string(),
                },
                None => match range.parse::<usize>() {
                    Ok(d) if d <= 7 => DAYS[d].to_string(),
                    _ => range.to_string(),
                },
            };
            match step {
                Some(s) => format!("{named}/{s}"),
                None => named,
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "0 {} {} {} {} {}",
        fields[0], fields[1], fields[2], fields[3], weekday
    )
}

/// The first time strictly after `after` at which any of `schedules` fires in `timezone`.
pub fn next_fire(
    schedules: &[String],
    timezone: Option<&str>,
    after: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>> {
    let tz: Tz = match timezone.filter(|t| !t.is_empty()) {
        Some(name) => name.parse().map_err(|_| Error::Timezone {
            timezone: name.to_string(),
        })?,
        None => Tz::UTC,
    };
    let local = after.with_timezone(&tz);
    let mut best: Option<DateTime<Utc>> = None;
    for schedule in schedules {
        let parsed =
            cron::Schedule::from_str(&to_cron_syntax(schedule)).map_err(|source| Error::Cron {
                schedule: schedule.clone(),
                source,
            })?;
        if let Some(next) = parsed.after(&local).next() {
            let next = next.with_timezone(&Utc);
            best = Some(best.map_or(next, |b| b.min(next)));
        }
    }
    Ok(best)
}

/// The next run of a CronWorkflow after `after`.
pub fn next_run(pipeline: &Pipeline, after: DateTime<Utc>) -> Result<DateTime<Utc>> {
    next_fire(&pipeline.schedules, pipeline.timezone.as_deref(), after)?.ok_or_else(|| {
        Error::NoSchedule {
            pipeline: pipeline.name.clone(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn weekdays_are_translated() {
        assert_eq!(to_cron_syntax("0 2 * * 1-5"), "0 0 2 * * MON-FRI");
        assert_eq!(to_cron_syntax("0 2 * * 0,6"), "0 0 2 * * SUN,SAT");
        assert_eq!(to_cron_syntax("0 2 * * 5-7"), "0 0 2 * * FRI-SAT,SUN");
        assert_eq!(to_cron_syntax("@daily"), "@daily");
    }

    #[test]
    fn sunday_is_zero_as_in_argo() {
        // 2024-06-05 is a Wednesday; the next Sunday is the 9th.
        let next =
            next_fire(&["30 4 * * 0".into()], None, at("2024-06-05T00:00:00Z")).expect("valid");
        assert_eq!(next, Some(at("2024-06-09T04:30:00Z")));
    }

    #[test]
    fn next_run_follows_the_timezone_across_dst() {
        let s = vec!["0 1 * * *".to_string()];
        // Berlin leaves CET (UTC+1) for CEST (UTC+2) on 2024-03-31 at 02:00.
        let first = next_fire(&s, Some("Europe/Berlin"), at("2024-03-30T12:00:00Z")).expect("ok");
        assert_eq!(first, Some(at("2024-03-31T00:00:00Z")), "01:00 CET");
        let second = next_fire(&s, Some("Europe/Berlin"), at("2024-03-31T00:00:00Z")).expect("ok");
        assert_eq!(
            second,
            Some(at("2024-03-31T23:00:00Z")),
            "01:00 CEST, one hour earlier in UTC"
        );
        // And back in autumn (2024-10-27, CEST → CET).
        let autumn = next_fire(&s, Some("Europe/Berlin"), at("2024-10-27T00:00:00Z")).expect("ok");
        assert_eq!(autumn, Some(at("2024-10-28T00:00:00Z")));
        // New York, an earlier fire on the day the clocks spring forward (2024-03-10).
        let ny = next_fire(
            &["0 6 * * *".into()],
            Some("America/New_York"),
            at("2024-03-09T12:00:00Z"),
        )
        .expect("ok");
        assert_eq!(ny, Some(at("2024-03-10T10:00:00Z")), "06:00 EDT");
    }

    #[test]
    fn earliest_of_several_schedules_and_bad_input_is_named() {
        let s = vec!["0 12 * * *".to_string(), "0 6 * * *".to_string()];
        assert_eq!(
            next_fire(&s, None, at("2024-01-01T00:00:00Z")).expect("ok"),
            Some(at("2024-01-01T06:00:00Z"))
        );
        let err =
            next_fire(&["not cron".into()], None, at("2024-01-01T00:00:00Z")).expect_err("invalid");
        assert!(err.to_string().contains("not cron"), "{err}");
        let err = next_fire(&s, Some("Mars/Olympus"), at("2024-01-01T00:00:00Z")).expect_err("tz");
        assert!(err.to_string().contains("Mars/Olympus"), "{err}");
    }
}
