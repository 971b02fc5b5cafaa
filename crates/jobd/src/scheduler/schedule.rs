//! The types of the scheduler's API: a schedule to add, and a stored one.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::error::{Error, Result};
use crate::scheduler::when::When;
use crate::store::{JobSpec, NewJob};

/// What to do with ticks that came due while no scheduler was running (or
/// the machine was off).  A tick is on time when a scheduler fires it within
/// the grace period ([`Scheduler::misfire_grace`](crate::scheduler::Scheduler::misfire_grace),
/// 60 s by default); after that it has misfired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// Fire nothing for missed ticks; wait for the next future tick.
    Skip,
    /// Fire one catch-up job for all missed ticks together (the default: a
    /// daily backup missed during downtime runs once when jobd is back).
    #[default]
    Once,
    /// Fire every missed tick, up to the schedule's cap (the latest ones).
    All,
}

impl Misfire {
    pub fn as_str(self) -> &'static str {
        match self {
            Misfire::Skip => "skip",
            Misfire::Once => "once",
            Misfire::All => "all",
        }
    }

    pub fn parse(s: &str) -> Result<Misfire> {
        match s {
            "skip" => Ok(Misfire::Skip),
            "once" => Ok(Misfire::Once),
            "all" => Ok(Misfire::All),
            other => Err(Error::invalid(
                "misfire",
                format!("{other:?} is not one of skip, once, all"),
            )),
        }
    }
}

/// A recurring job to add with [`Store::add_schedule`](crate::store::Backend::add_schedule).
#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub(crate) name: String,
    pub(crate) when: When,
    pub(crate) timezone: String,
    pub(crate) job: NewJob,
    pub(crate) misfire: Misfire,
    pub(crate) misfire_cap: i64,
    pub(crate) enabled: bool,
}

impl NewSchedule {
    /// A schedule named `name` firing a `kind` job on `queue` at the times of
    /// the cron expression `expr` (UTC unless [`NewSchedule::timezone`] says
    /// otherwise).
    pub fn cron(
        name: impl Into<String>,
        expr: impl Into<String>,
        queue: impl Into<String>,
        kind: impl Into<String>,
    ) -> NewSchedule {
        NewSchedule::new(name, When::Cron(expr.into()), NewJob::new(queue, kind))
    }

    /// A schedule firing every `interval` of real time (aligned to the epoch).
    pub fn every(
        name: impl Into<String>,
        interval: Duration,
        queue: impl Into<String>,
        kind: impl Into<String>,
    ) -> NewSchedule {
        NewSchedule::new(name, When::Every(interval), NewJob::new(queue, kind))
    }

    /// A schedule firing `job` (its queue, kind, payload, priority, attempts,
    /// backoff, timeout and tenant; its run time is the tick's).
    pub fn new(name: impl Into<String>, when: When, job: NewJob) -> NewSchedule {
        NewSchedule {
            name: name.into(),
            when,
            timezone: "UTC".into(),
            job,
            misfire: Misfire::default(),
            misfire_cap: 24,
            enabled: true,
        }
    }

    /// An IANA timezone for the cron expression's wall clock.  Default UTC.
    pub fn timezone(mut self, tz: impl Into<String>) -> NewSchedule {
        self.timezone = tz.into();
        self
    }

    pub fn payload(mut self, payload: &impl Serialize) -> NewSchedule {
        self.job = self.job.payload(payload);
        self
    }

    pub fn payload_json(mut self, json: impl Into<String>) -> NewSchedule {
        self.job = self.job.payload_json(json);
        self
    }

    pub fn priority(mut self, priority: i64) -> NewSchedule {
        self.job = self.job.priority(priority);
        self
    }

    pub fn max_attempts(mut self, n: i64) -> NewSchedule {
        self.job = self.job.max_attempts(n);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> NewSchedule {
        self.job = self.job.timeout(timeout);
        self
    }

    pub fn tenant(mut self, tenant: impl Into<String>) -> NewSchedule {
        self.job = self.job.tenant(tenant);
        self
    }

    /// Notifications when each job it fires ends.
    pub fn notify(mut self, list: Vec<crate::store::Notify>) -> NewSchedule {
        self.job = self.job.notify(list);
        self
    }

    pub fn misfire(mut self, misfire: Misfire) -> NewSchedule {
        self.misfire = misfire;
        self
    }

    /// The most missed ticks policy [`Misfire::All`] fires at once.  Default 24.
    pub fn misfire_cap(mut self, cap: i64) -> NewSchedule {
        self.misfire_cap = cap;
        self
    }

    /// Added paused when `false`.
    pub fn enabled(mut self, enabled: bool) -> NewSchedule {
        self.enabled = enabled;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A stored schedule, as [`Store::schedules`](crate::store::Backend::schedules) lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleInfo {
    pub name: String,
    pub when: When,
    pub timezone: String,
    pub queue: String,
    pub kind: String,
    /// The jobs' payload, as JSON text.
    pub payload: String,
    pub priority: i64,
    pub max_attempts: i64,
    pub timeout_ms: Option<i64>,
    pub tenant: Option<String>,
    pub enabled: bool,
    pub misfire: Misfire,
    pub misfire_cap: i64,
    /// The due time of the latest tick fired.
    pub last_fire_at: Option<Millis>,
    /// The next tick; `None` when paused, or when the expression has no
    /// future tick.
    pub next_fire_at: Option<Millis>,
    /// Why the scheduler disabled the schedule, if it did.
    pub last_error: Option<String>,
    /// Ticks fired so far.
    pub fires: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Notifications when each of its jobs ends.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<crate::store::Notify>,
}

/// A tick in a schedule's fire history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FireRecord {
    /// When the tick was due.
    pub fire_at: Millis,
    /// When a scheduler fired it.
    pub fired_at: Option<Millis>,
    /// The job it enqueued (gone once the job is purged).
    pub job_id: Option<i64>,
}

/// One tick fired by [`Scheduler::tick`](crate::scheduler::Scheduler::tick).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fired {
    pub schedule: String,
    /// When the tick was due.
    pub fire_at: Millis,
    pub job_id: i64,
}

/// What one pass of the scheduler did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FireReport {
    pub fired: Vec<Fired>,
    /// Missed ticks that the schedules' misfire policies chose not to fire.
    pub skipped: u64,
    /// Schedules disabled because they could no longer be fired.
    pub disabled: Vec<String>,
    /// The earliest next tick of any enabled schedule.
    pub next_fire_at: Option<Millis>,
}

/// A schedule as JSON (the HTTP API's body): `cron` or `every` (a duration
/// such as `"30m"`), the options, and beside them the fields of the job it
/// enqueues — a [`JobSpec`] without `run_at`, `delay_ms`, `backoff` or
/// `unique_key`.  Unknown fields are refused.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleSpec {
    pub name: String,
    pub cron: Option<String>,
    pub every: Option<String>,
    pub timezone: Option<String>,
    pub misfire: Option<Misfire>,
    pub misfire_cap: Option<i64>,
    pub enabled: Option<bool>,
    #[serde(flatten)]
    pub job: JobSpec,
}

/// The schedule's own fields of a [`ScheduleSpec`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Timing {
    name: String,
    #[serde(default)]
    cron: Option<String>,
    #[serde(default)]
    every: Option<String>,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    misfire: Option<Misfire>,
    #[serde(default)]
    misfire_cap: Option<i64>,
    #[serde(default)]
    enabled: Option<bool>,
}

const TIMING_FIELDS: &[&str] = &[
    "name",
    "cron",
    "every",
    "timezone",
    "misfire",
    "misfire_cap",
    "enabled",
];

/// Fields of a job that a schedule's jobs cannot have: each tick sets its
/// own run time, and the schedule is what keeps its jobs unique.
const NOT_FOR_SCHEDULES: &[&str] = &["run_at", "delay_ms", "backoff", "unique_key"];

impl<'de> Deserialize<'de> for ScheduleSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut job = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        if let Some(key) = NOT_FOR_SCHEDULES.iter().find(|k| job.contains_key(**k)) {
            return Err(D::Error::custom(format!(
                "unknown field `{key}`: a schedule's jobs take no {key}"
            )));
        }
        let timing: serde_json::Map<_, _> = TIMING_FIELDS
            .iter()
            .filter_map(|k| job.remove(*k).map(|v| (k.to_string(), v)))
            .collect();
        let t: Timing = serde_json::from_value(timing.into()).map_err(D::Error::custom)?;
        let job: JobSpec = serde_json::from_value(job.into()).map_err(D::Error::custom)?;
        Ok(ScheduleSpec {
            name: t.name,
            cron: t.cron,
            every: t.every,
            timezone: t.timezone,
            misfire: t.misfire,
            misfire_cap: t.misfire_cap,
            enabled: t.enabled,
            job,
        })
    }
}

impl ScheduleSpec {
    pub fn into_new_schedule(self) -> Result<NewSchedule> {
        let when = match (self.cron, self.every) {
            (Some(expr), None) => When::Cron(expr),
            (None, Some(every)) => When::Every(humantime::parse_duration(&every).map_err(|e| {
                Error::invalid(
                    "every",
                    format!("{every:?}: {e} (try \"30m\", \"1h\", \"90s\")"),
                )
            })?),
            _ => {
                return Err(Error::invalid(
                    "schedule",
                    "give exactly one of cron, every",
                ))
            }
        };
        let job = self.job.into_new_job()?;
        let mut s = NewSchedule::new(self.name, when, job);
        if let Some(tz) = self.timezone {
            s = s.timezone(tz);
        }
        if let Some(m) = self.misfire {
            s = s.misfire(m);
        }
        if let Some(c) = self.misfire_cap {
            s = s.misfire_cap(c);
        }
        if let Some(e) = self.enabled {
            s = s.enabled(e);
        }
        Ok(s)
    }
}
