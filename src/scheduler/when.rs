//! When a schedule fires: cron expressions (classic 5-field or the `cron`
//! crate's 6/7-field form) in a timezone, or a fixed interval.
//!
//! Cron expressions are matched against the **wall clock** of the schedule's
//! timezone.  The `cron` crate is asked for the matching wall-clock times
//! (computed in UTC, which has no DST), and each is then placed on the real
//! time line of the zone:
//!
//! * a wall-clock time that happens once is that instant;
//! * one that happens twice (the clock is set back) fires once, at its first
//!   occurrence;
//! * one that never happens (the clock jumps forward over it) fires once, at
//!   the first instant after the jump.  Several ticks inside the same gap
//!   become one fire.
//!
//! So a daily `30 2 * * *` in Europe/Berlin fires at 03:00 CEST on the day the
//! clocks spring forward and at the first 02:30 (CEST) on the day they fall
//! back: once a day either way.  An hourly schedule fires 23 times on the
//! spring day and 24 on the autumn day — it follows the wall clock.  Use an
//! interval for "every N minutes of real time".
//!
//! Intervals are real time, aligned to the Unix epoch: every 30 minutes fires
//! at :00 and :30 UTC, whichever process computes it.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::clock::{duration_ms, Millis};
use crate::error::{Error, Result};

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// A cron expression: `min hour day-of-month month day-of-week` (classic),
    /// `sec min hour dom month dow [year]` (the `cron` crate), or a shorthand
    /// such as `@daily`.
    Cron(String),
    /// A fixed interval of real time, aligned to the Unix epoch.
    Every(Duration),
}

impl std::fmt::Display for When {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            When::Cron(expr) => write!(f, "cron {expr}"),
            When::Every(d) => write!(f, "every {}", humantime::format_duration(*d)),
        }
    }
}

/// The shortest interval a schedule may have.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// A parsed [`When`] in a timezone: answers "what is the next tick after t?".
#[derive(Debug, Clone)]
pub struct Timetable {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// Fires when any of the schedules matches (more than one only for a
    /// classic expression restricting both day-of-month and day-of-week,
    /// which cron reads as "either").
    Cron {
        any_of: Vec<cron::Schedule>,
        tz: Tz,
    },
    Every {
        ms: i64,
    },
}

impl Timetable {
    /// Parse `when` in `timezone` (an IANA name such as `Europe/Berlin`, or
    /// `UTC`).  The error says what is wrong with which part.
    pub fn new(when: &When, timezone: &str) -> Result<Timetable> {
        let tz = parse_timezone(timezone)?;
        let kind = match when {
            When::Cron(expr) => Kind::Cron {
                any_of: parse_cron(expr)?,
                tz,
            },
            When::Every(d) => {
                if *d < MIN_INTERVAL {
                    return Err(Error::invalid(
                        "interval",
                        format!(
                            "{} is shorter than the minimum of {}",
                            humantime::format_duration(*d),
                            humantime::format_duration(MIN_INTERVAL)
                        ),
                    ));
                }
                Kind::Every {
                    ms: duration_ms(*d),
                }
            }
        };
        Ok(Timetable { kind })
    }

    /// The first tick strictly after `t`, or `None` when there is none (a
    /// cron expression limited to past years).
    pub fn next_after(&self, t: Millis) -> Option<Millis> {
        match &self.kind {
            Kind::Every { ms } => t.div_euclid(*ms).checked_add(1)?.checked_mul(*ms),
            Kind::Cron { any_of, tz } => any_of
                .iter()
                .filter_map(|s| next_cron_tick(s, *tz, t))
                .min(),
        }
    }

    /// The next `n` ticks after `t`.
    pub fn upcoming(&self, mut t: Millis, n: usize) -> Vec<Millis> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next_after(t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }
}

/// An IANA timezone name.
pub fn parse_timezone(name: &str) -> Result<Tz> {
    Tz::from_str(name).map_err(|_| {
        Error::invalid(
            "timezone",
            format!(
                "{name:?} is not a known IANA timezone; use a name such as \"UTC\", \
                 \"Europe/Berlin\" or \"America/New_York\""
            ),
        )
    })
}

/// Parse a cron expression into the `cron` crate's schedules.
fn parse_cron(expr: &str) -> Result<Vec<cron::Schedule>> {
    let bad = |reason: String| Error::invalid("cron expression", format!("{expr:?}: {reason}"));
    let trimmed = expr.trim();
    if trimmed.starts_with('@') {
        return Ok(vec![crate_schedule(trimmed).map_err(bad)?]);
    }
    let fields: Vec<&str> = trimmed.split_whitespace().collect();
    match fields.len() {
        5 => {
            let [min, hour, dom, month, dow] =
                [fields[0], fields[1], fields[2], fields[3], fields[4]];
            let days = classic_days_of_week(dow).map_err(bad)?;
            // Classic cron: when both day fields are restricted, a day matching
            // either one fires.
            let exprs = if !dom.starts_with('*') && !dow.starts_with('*') {
                vec![
                    format!("0 {min} {hour} {dom} {month} *"),
                    format!("0 {min} {hour} * {month} {days}"),
                ]
            } else {
                vec![format!("0 {min} {hour} {dom} {month} {days}")]
            };
            exprs
                .iter()
                .map(|e| crate_schedule(e).map_err(&bad))
                .collect()
        }
        6 | 7 => Ok(vec![crate_schedule(trimmed).map_err(bad)?]),
        n => Err(bad(format!(
            "{n} fields; give 5 (minute hour day-of-month month day-of-week), \
             or 6-7 (second minute hour day-of-month month day-of-week [year])"
        ))),
    }
}

fn crate_schedule(expr: &str) -> std::result::Result<cron::Schedule, String> {
    let schedule = cron::Schedule::from_str(expr).map_err(|e| e.to_string())?;
    // An expression that matches no date at all ("30 2 31 2 *") is refused
    // here rather than stored as a schedule that silently never fires.
    let from = DateTime::<Utc>::from_timestamp(0, 0).expect("epoch");
    if schedule.after(&from).next().is_none() {
        return Err("it matches no date".into());
    }
    Ok(schedule)
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A classic day-of-week field (0-7, both 0 and 7 Sunday, names allowed,
/// lists, ranges and steps) as the `cron` crate's field (1-7 from Sunday):
/// written out as day names so there is nothing to renumber.
fn classic_days_of_week(field: &str) -> std::result::Result<String, String> {
    if field == "*" || field == "?" {
        return Ok("*".into());
    }
    let day = |s: &str| -> std::result::Result<u32, String> {
        if let Ok(n) = s.parse::<u32>() {
            return if n <= 7 {
                Ok(n)
            } else {
                Err(format!("day of week {n} is not between 0 and 7"))
            };
        }
        DAY_NAMES
            .iter()
            .position(|d| d.eq_ignore_ascii_case(s))
            .map(|i| i as u32)
            .ok_or_else(|| format!("{s:?} is not a day of the week (0-7 or SUN-SAT)"))
    };
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 =
                    s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!("step {s:?} in {item:?} is not a positive number")
                    })?;
                (r, Some(step))
            }
            None => (item, None),
        };
        let (lo, hi) = match range {
            "*" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => (day(a)?, day(b)?),
                None if step.is_some() => (day(r)?, 7),
                None => (day(r)?, day(r)?),
            },
        };
        if lo > hi {
            return Err(format!("range {range:?} runs backwards"));
        }
        for d in (lo..=hi).step_by(step.unwrap_or(1) as usize) {
            days[(d % 7) as usize] = true;
        }
    }
    if days.iter().all(|d| *d) {
        return Ok("*".into());
    }
    let names: Vec<&str> = (0..7).filter(|d| days[*d]).map(|d| DAY_NAMES[d]).collect();
    Ok(names.join(","))
}

/// The first instant after `t` at which `schedule` matches the wall clock of `tz`.
fn next_cron_tick(schedule: &cron::Schedule, tz: Tz, t: Millis) -> Option<Millis> {
    let now = DateTime::<Utc>::from_timestamp_millis(t)?;
    let wall = now.with_timezone(&tz).naive_local();
    // Wall-clock times at or before `wall` land at or before `t` (their first
    // occurrence is no later than `t`'s), so the search starts after `wall`;
    // times whose first occurrence is still not after `t` (inside a repeated
    // hour, or gaps folding onto one instant) are passed over.
    schedule
        .after(&Utc.from_utc_datetime(&wall))
        .take(100_000)
        .filter_map(|tick| place_on_timeline(tz, tick.naive_utc()))
        .find(|at| *at > t)
}

/// Where the wall-clock time `wall` of `tz` happens: its first occurrence, or
/// for a time skipped by a jump forward, the first instant after the jump.
fn place_on_timeline(tz: Tz, wall: NaiveDateTime) -> Option<Millis> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => Some(at.timestamp_millis()),
        LocalResult::None => {
            // Zone transitions fall on whole minutes: step minute by minute
            // (a gap is at most a day long) to the first time that exists.
            let mut probe = wall.with_second(0)?.with_nanosecond(0)?;
            for _ in 0..(26 * 60) {
                probe += chrono::Duration::minutes(1);
                if let Some(at) = tz.from_local_datetime(&probe).earliest() {
                    return Some(at.timestamp_millis());
                }
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> Millis {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    fn iso(t: Millis) -> String {
        DateTime::<Utc>::from_timestamp_millis(t)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    fn next(expr: &str, tz: &str, after: &str) -> String {
        let t = Timetable::new(&When::Cron(expr.into()), tz).unwrap();
        iso(t.next_after(ms(after)).unwrap())
    }

    #[test]
    fn classic_and_crate_forms_agree() {
        let after = "2026-11-23T10:17:00Z"; // a Monday
        assert_eq!(next("30 2 * * *", "UTC", after), "2026-11-24T02:30:00Z");
        assert_eq!(next("0 30 2 * * *", "UTC", after), "2026-11-24T02:30:00Z");
        assert_eq!(next("*/30 * * * *", "UTC", after), "2026-11-23T10:30:00Z");
        assert_eq!(next("@daily", "UTC", after), "2026-11-24T00:00:00Z");
        // Classic day-of-week numbers: 0 and 7 are Sunday, 1 is Monday.
        assert_eq!(next("0 3 * * 0", "UTC", after), "2026-11-29T03:00:00Z");
        assert_eq!(next("0 3 * * 7", "UTC", after), "2026-11-29T03:00:00Z");
        assert_eq!(next("0 3 * * 1", "UTC", after), "2026-11-30T03:00:00Z");
        assert_eq!(next("0 3 * * sun", "UTC", after), "2026-11-29T03:00:00Z");
        assert_eq!(next("0 3 * * 5-7", "UTC", after), "2026-11-27T03:00:00Z");
        assert_eq!(next("0 3 * * 2/2", "UTC", after), "2026-11-24T03:00:00Z");
        // Both day fields restricted: either matches (the 1st, or a Friday).
        assert_eq!(next("0 0 1 * 5", "UTC", after), "2026-11-27T00:00:00Z");
        assert_eq!(
            next("0 0 1 * 5", "UTC", "2026-11-28T00:00:00Z"),
            "2026-12-01T00:00:00Z"
        );
    }

    #[test]
    fn intervals_are_aligned_to_the_epoch() {
        let t = Timetable::new(&When::Every(Duration::from_secs(1800)), "UTC").unwrap();
        assert_eq!(
            iso(t.next_after(ms("2026-11-23T10:17:00Z")).unwrap()),
            "2026-11-23T10:30:00Z"
        );
        assert_eq!(
            iso(t.next_after(ms("2026-11-23T10:30:00Z")).unwrap()),
            "2026-11-23T11:00:00Z"
        );
    }

    #[test]
    fn zones_follow_the_wall_clock_across_dst() {
        let z = "Europe/Berlin";
        // Spring forward 2026-03-29: 02:00 CET jumps to 03:00 CEST.
        assert_eq!(
            next("30 2 * * *", z, "2026-03-28T12:00:00Z"),
            "2026-03-29T01:00:00Z"
        );
        assert_eq!(
            next("30 2 * * *", z, "2026-03-29T01:00:00Z"),
            "2026-03-30T00:30:00Z"
        );
        // Fall back 2026-10-25: 03:00 CEST goes back to 02:00 CET; the first 02:30 fires.
        assert_eq!(
            next("30 2 * * *", z, "2026-10-24T12:00:00Z"),
            "2026-10-25T00:30:00Z"
        );
        assert_eq!(
            next("30 2 * * *", z, "2026-10-25T00:30:00Z"),
            "2026-10-26T01:30:00Z"
        );
        // Asked from inside the repeated hour, the first 02:30 is past: tomorrow.
        assert_eq!(
            next("30 2 * * *", z, "2026-10-25T01:10:00Z"),
            "2026-10-26T01:30:00Z"
        );
        // Hourly on the spring day: 01:00, then 03:00 CEST (02:00 folds onto it), 04:00.
        let t = Timetable::new(&When::Cron("0 * * * *".into()), z).unwrap();
        let hours: Vec<String> = t
            .upcoming(ms("2026-03-28T23:30:00Z"), 3)
            .into_iter()
            .map(iso)
            .collect();
        assert_eq!(
            hours,
            [
                "2026-03-29T00:00:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T02:00:00Z"
            ]
        );
    }

    #[test]
    fn bad_expressions_and_zones_say_what_is_wrong() {
        let err = |when: When, tz: &str| Timetable::new(&when, tz).unwrap_err().to_string();
        let e = err(When::Cron("0 2 * *".into()), "UTC");
        assert!(e.contains("4 fields") && e.contains("give 5"), "{e}");
        let e = err(When::Cron("61 2 * * *".into()), "UTC");
        assert!(e.contains("cron expression") && e.contains("61"), "{e}");
        let e = err(When::Cron("0 2 * * 8".into()), "UTC");
        assert!(e.contains("day of week 8"), "{e}");
        let e = err(When::Cron("0 2 * * mo".into()), "UTC");
        assert!(e.contains("\"mo\" is not a day"), "{e}");
        let e = err(When::Cron("30 2 31 2 *".into()), "UTC");
        assert!(e.contains("matches no date"), "{e}");
        let e = err(When::Cron("0 2 * * *".into()), "Europe/Berln");
        assert!(
            e.contains("\"Europe/Berln\" is not a known IANA timezone"),
            "{e}"
        );
        let e = err(When::Every(Duration::from_millis(1)), "UTC");
        assert!(e.contains("shorter than the minimum"), "{e}");
    }
}
