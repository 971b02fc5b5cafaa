//! When a schedule fires: cron expressions (5 fields, or 6 with a second
//! first, or 7 with a year last — parsed by `croner`, one POSIX numbering of
//! the weekdays in every form) in a timezone, or a fixed interval.
//!
//! Cron expressions are matched against the **wall clock** of the schedule's
//! timezone.  `croner` is asked for the matching wall-clock times
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
    /// A cron expression: `min hour day-of-month month day-of-week`, or
    /// `sec min hour dom month dow [year]`, or a shorthand such as `@daily`.
    /// Days of the week are POSIX in every form: 0 and 7 Sunday, 1 Monday.
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
    /// Matched against the wall clock of `tz`.
    Cron {
        cron: Box<croner::Cron>,
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
                cron: Box::new(parse_cron(expr)?),
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
            Kind::Cron { cron, tz } => next_cron_tick(cron, *tz, t),
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

/// Parse a cron expression with `croner`: 5 fields (minute hour
/// day-of-month month day-of-week), 6 (a second first) or 7 (a year last),
/// or a shorthand such as `@daily`.  One numbering of the days of the week
/// in every form, the POSIX one: 0 and 7 are Sunday, 1 is Monday.  When
/// both day fields are restricted, a day matching either fires (POSIX).
/// Errors quote the expression as written.
fn parse_cron(expr: &str) -> Result<croner::Cron> {
    let bad = |reason: String| Error::invalid("cron expression", format!("{expr:?}: {reason}"));
    let trimmed = expr.trim();
    if !trimmed.starts_with('@') {
        check_fields(trimmed).map_err(bad)?;
    }
    let cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Optional)
        // `2/2` (from 2 to the end, every 2nd), as cronie and jobd's
        // earlier parser read it: schedules already stored keep working.
        .sloppy_ranges(true)
        .build()
        .parse(trimmed)
        .map_err(|e| bad(e.to_string()))?;
    // An expression that matches no date at all ("30 2 31 2 *") is refused
    // here rather than stored as a schedule that silently never fires.
    let from = DateTime::<Utc>::from_timestamp(0, 0).expect("epoch");
    if cron.iter_after(from).next().is_none() {
        return Err(bad("it matches no date".into()));
    }
    Ok(cron)
}

/// One field of a cron expression: its name, its range, its names if any.
struct Field {
    name: &'static str,
    lo: u32,
    hi: u32,
    names: &'static [&'static str],
}

const SECOND: Field = Field {
    name: "second",
    lo: 0,
    hi: 59,
    names: &[],
};
const MINUTE: Field = Field {
    name: "minute",
    lo: 0,
    hi: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    lo: 0,
    hi: 23,
    names: &[],
};
const DAY: Field = Field {
    name: "day of month",
    lo: 1,
    hi: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    lo: 1,
    hi: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
const WEEKDAY: Field = Field {
    name: "day of week",
    lo: 0,
    hi: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};
const YEAR: Field = Field {
    name: "year",
    lo: 1970,
    hi: 9999,
    names: &[],
};

/// Check the count of fields and every plain number and name in them, so
/// the error names the field and its range ("minute 61 is not between 0 and
/// 59"); what croner reads beyond that (`L`, `W`, `#`) it checks itself.
fn check_fields(expr: &str) -> std::result::Result<(), String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let layout: &[Field] = match fields.len() {
        5 => &[MINUTE, HOUR, DAY, MONTH, WEEKDAY],
        6 => &[SECOND, MINUTE, HOUR, DAY, MONTH, WEEKDAY],
        7 => &[SECOND, MINUTE, HOUR, DAY, MONTH, WEEKDAY, YEAR],
        n => {
            return Err(format!(
                "{n} fields; give 5 (minute hour day-of-month month day-of-week), \
                 6 (a second first) or 7 (a second first, a year last)"
            ))
        }
    };
    for (text, field) in fields.iter().zip(layout) {
        let text = text
            .strip_prefix('+')
            .filter(|_| field.name == WEEKDAY.name)
            .unwrap_or(text);
        for item in text.split(',') {
            let range = match item.split_once('/') {
                Some((range, step)) => {
                    if !step.parse::<u32>().is_ok_and(|s| s > 0) {
                        return Err(format!(
                            "step {step:?} in {} {item:?} is not a positive number",
                            field.name
                        ));
                    }
                    range
                }
                None => item,
            };
            if range == "*" || range == "?" {
                continue;
            }
            let ends: Vec<&str> = range.splitn(2, '-').collect();
            let mut values = Vec::with_capacity(2);
            for end in &ends {
                match value(end, field)? {
                    Some(v) => values.push(v),
                    None => break,
                }
            }
            if let [a, b] = values[..] {
                if a > b {
                    return Err(format!("{} range {range:?} runs backwards", field.name));
                }
            }
        }
    }
    Ok(())
}

/// A number or name in `field`: `Some(value)`, `None` for what croner reads
/// itself (`L`, `5L`, `15W`, `5#2`), or what is wrong with it.
fn value(token: &str, field: &Field) -> std::result::Result<Option<u32>, String> {
    if let Ok(n) = token.parse::<u32>() {
        return if (field.lo..=field.hi).contains(&n) {
            Ok(Some(n))
        } else {
            Err(format!(
                "{} {n} is not between {} and {}",
                field.name, field.lo, field.hi
            ))
        };
    }
    if let Some(i) = field
        .names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(token))
    {
        // Months are numbered from 1, days of the week from 0.
        return Ok(Some(i as u32 + field.lo));
    }
    if token.contains(['L', 'l', 'W', 'w', '#'])
        && token
            .chars()
            .any(|c| c.is_ascii_digit() || c.eq_ignore_ascii_case(&'L'))
    {
        return Ok(None);
    }
    let names = match field.names {
        [] => String::new(),
        names => format!(" or {}-{}", names[0], names[names.len() - 1]),
    };
    Err(format!(
        "{token:?} is not a {} ({}-{}{names})",
        field.name, field.lo, field.hi
    ))
}

/// The first instant after `t` at which `schedule` matches the wall clock of `tz`.
fn next_cron_tick(schedule: &croner::Cron, tz: Tz, t: Millis) -> Option<Millis> {
    let now = DateTime::<Utc>::from_timestamp_millis(t)?;
    let wall = now.with_timezone(&tz).naive_local();
    // Wall-clock times at or before `wall` land at or before `t` (their first
    // occurrence is no later than `t`'s), so the search starts after `wall`;
    // times whose first occurrence is still not after `t` (inside a repeated
    // hour, or gaps folding onto one instant) are passed over.
    schedule
        .iter_after(Utc.from_utc_datetime(&wall))
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

    /// `0 0 2 * * 1` (6 fields) fired on Sundays while the
    /// 5-field `1` meant Monday.  One numbering in every form, the POSIX one.
    #[test]
    fn every_form_numbers_the_weekdays_the_posix_way() {
        let after = "2026-11-23T10:17:00Z"; // a Monday, after 02:00
        let monday = "2026-11-30T02:00:00Z";
        let sunday = "2026-11-29T02:00:00Z";
        assert_eq!(next("0 2 * * 1", "UTC", after), monday);
        assert_eq!(next("0 0 2 * * 1", "UTC", after), monday);
        assert_eq!(next("0 0 2 * * 1 *", "UTC", after), monday);
        assert_eq!(next("0 0 2 * * MON", "UTC", after), monday);
        for sun in ["0", "7", "SUN"] {
            assert_eq!(next(&format!("0 2 * * {sun}"), "UTC", after), sunday);
            assert_eq!(next(&format!("0 0 2 * * {sun}"), "UTC", after), sunday);
        }
        assert_eq!(next("0 0 2 * * 1-5", "UTC", "2026-11-27T10:00:00Z"), monday);
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
        // The expression as the user wrote it, and the field's real range.
        let e = err(When::Cron("61 2 * * *".into()), "UTC");
        assert!(
            e.contains("\"61 2 * * *\": minute 61 is not between 0 and 59"),
            "{e}"
        );
        let e = err(When::Cron("0 61 2 * * *".into()), "UTC");
        assert!(e.contains("minute 61 is not between 0 and 59"), "{e}");
        let e = err(When::Cron("0 24 * * *".into()), "UTC");
        assert!(e.contains("hour 24 is not between 0 and 23"), "{e}");
        let e = err(When::Cron("0 2 * 13 *".into()), "UTC");
        assert!(e.contains("month 13 is not between 1 and 12"), "{e}");
        let e = err(When::Cron("0 2 * * 8".into()), "UTC");
        assert!(
            e.contains("\"0 2 * * 8\": day of week 8 is not between 0 and 7"),
            "{e}"
        );
        let e = err(When::Cron("0 2 * * 5-1".into()), "UTC");
        assert!(e.contains("runs backwards"), "{e}");
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
