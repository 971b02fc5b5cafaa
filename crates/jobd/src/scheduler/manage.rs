//! Managing schedules: add, replace, list, get, remove, pause, resume, run now.
//!
//! Every change is checked before anything is written: a bad cron
//! expression, an unknown timezone or a bad job (queue, kind, payload …) is
//! an [`Error::InvalidInput`] and the table is left as it was.

use std::time::Duration;

use rusqlite::{params, Row};

use crate::clock::{duration_ms, Millis};
use crate::error::{Error, Result};
use crate::scheduler::rows::{ScheduleRow, ScheduleRows, SqliteRows};
use crate::scheduler::schedule::{FireRecord, Misfire, NewSchedule, ScheduleInfo};
use crate::scheduler::when::{Timetable, When};
use crate::store::job::{validate_name, RunAt};
use crate::store::{notify, JobId, NewJob, SqliteStore};

pub(crate) const INSERT_SCHEDULE: &str = "
INSERT INTO schedules (name, cron, interval_ms, timezone, queue, kind, payload, priority,
                       max_attempts, timeout_ms, tenant, enabled, misfire, misfire_cap,
                       next_fire_at, created_at, updated_at, notify)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?16, ?17)";

/// Replace a schedule's definition, keeping its history (last fire, fires).
pub(crate) const UPDATE_SCHEDULE: &str = "
UPDATE schedules
SET cron = ?2, interval_ms = ?3, timezone = ?4, queue = ?5, kind = ?6, payload = ?7,
    priority = ?8, max_attempts = ?9, timeout_ms = ?10, tenant = ?11, enabled = ?12,
    misfire = ?13, misfire_cap = ?14, next_fire_at = ?15, last_error = NULL, updated_at = ?16,
    notify = ?17
WHERE name = ?1";

pub(crate) const LIST_SCHEDULES: &str = "
SELECT name, cron, interval_ms, timezone, queue, kind, payload, priority, max_attempts,
       timeout_ms, tenant, enabled, misfire, misfire_cap, last_fire_at, next_fire_at,
       last_error, (SELECT count(*) FROM schedule_fires AS f WHERE f.schedule = s.name),
       created_at, updated_at, notify
FROM schedules AS s ORDER BY name";

pub(crate) const GET_SCHEDULE: &str = "
SELECT name, cron, interval_ms, timezone, queue, kind, payload, priority, max_attempts,
       timeout_ms, tenant, enabled, misfire, misfire_cap, last_fire_at, next_fire_at,
       last_error, (SELECT count(*) FROM schedule_fires AS f WHERE f.schedule = s.name),
       created_at, updated_at, notify
FROM schedules AS s WHERE name = ?1";

pub(crate) const DELETE_SCHEDULE: &str = "DELETE FROM schedules WHERE name = ?1";

pub(crate) const SET_ENABLED: &str = "
UPDATE schedules
SET enabled = ?2, next_fire_at = ?3, last_error = NULL, updated_at = ?4
WHERE name = ?1";

/// Recent fires of one schedule, newest first.
pub(crate) const RECENT_FIRES: &str = "
SELECT fire_at, fired_at, job_id FROM schedule_fires
WHERE schedule = ?1 ORDER BY fire_at DESC LIMIT ?2";

/// Every named statement of this module, for the prepare-them-all test.
#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("INSERT_SCHEDULE", INSERT_SCHEDULE),
    ("UPDATE_SCHEDULE", UPDATE_SCHEDULE),
    ("LIST_SCHEDULES", LIST_SCHEDULES),
    ("GET_SCHEDULE", GET_SCHEDULE),
    ("DELETE_SCHEDULE", DELETE_SCHEDULE),
    ("SET_ENABLED", SET_ENABLED),
    ("RECENT_FIRES", RECENT_FIRES),
];

/// A schedule checked in full, ready to be written.
struct Checked<'a> {
    cron: Option<&'a str>,
    interval_ms: Option<i64>,
    timezone: String,
    payload: &'a str,
    timetable: Timetable,
}

impl NewSchedule {
    fn check(&self, max_payload: usize, now: Millis) -> Result<Checked<'_>> {
        validate_name("schedule name", &self.name)?;
        let timetable = Timetable::new(&self.when, &self.timezone)?;
        if timetable.next_after(now).is_none() {
            return Err(Error::invalid(
                "cron expression",
                format!("{}: it has no tick after now", self.when),
            ));
        }
        if !(1..=10_000).contains(&self.misfire_cap) {
            return Err(Error::invalid(
                "misfire_cap",
                format!("{} is not between 1 and 10000", self.misfire_cap),
            ));
        }
        if !matches!(self.job.run_at, RunAt::Now) {
            return Err(Error::invalid(
                "job",
                "a scheduled job runs at its tick; leave its run_at/delay unset",
            ));
        }
        if self.job.unique_key.is_some() {
            return Err(Error::invalid(
                "job",
                "a scheduled job cannot carry a unique key (each tick fires once already)",
            ));
        }
        let payload = self.job.validate(max_payload)?;
        let (cron, interval_ms) = match &self.when {
            When::Cron(expr) => (Some(expr.trim()), None),
            When::Every(d) => (None, Some(duration_ms(*d))),
        };
        // Store the zone's canonical spelling.
        let timezone = crate::scheduler::when::parse_timezone(&self.timezone)?
            .name()
            .to_string();
        Ok(Checked {
            cron,
            interval_ms,
            timezone,
            payload,
            timetable,
        })
    }
}

impl SqliteStore {
    /// Add a schedule.  Its first tick is the first one after now.  A name
    /// already taken is [`Error::ScheduleExists`]; anything malformed is
    /// [`Error::InvalidInput`]; nothing is written in either case.
    pub fn add_schedule(&self, schedule: &NewSchedule) -> Result<ScheduleInfo> {
        self.put_schedule(schedule, false)
    }

    /// Add a schedule, or replace the definition of the one with the same
    /// name (its fire history stays; its next tick is the first one after
    /// both now and its last fire, so a tick already fired never fires again).
    pub fn replace_schedule(&self, schedule: &NewSchedule) -> Result<ScheduleInfo> {
        self.put_schedule(schedule, true)
    }

    fn put_schedule(&self, s: &NewSchedule, replace: bool) -> Result<ScheduleInfo> {
        let now = self.now();
        let max = self.options().max_payload_bytes;
        let info = self.write("add schedule", |tx| {
            put_in(&mut SqliteRows(tx), s, replace, max, now)
        })?;
        tracing::info!(schedule = %info.name, when = %info.when, timezone = %info.timezone,
                       next_fire_at = ?info.next_fire_at, replace, "schedule saved");
        self.notify_work();
        Ok(info)
    }

    /// One schedule.
    pub fn schedule(&self, name: &str) -> Result<ScheduleInfo> {
        self.with_conn("get schedule", |conn| {
            SqliteRows(conn)
                .get(name)?
                .ok_or_else(|| Error::ScheduleNotFound { name: name.into() })
        })
    }

    /// Every schedule, by name.
    pub fn schedules(&self) -> Result<Vec<ScheduleInfo>> {
        self.with_conn("list schedules", |conn| {
            let mut stmt = conn.prepare_cached(LIST_SCHEDULES)?;
            let rows = stmt.query_map([], schedule_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// The latest `limit` fired ticks of a schedule, newest first:
    pub fn schedule_fires(&self, name: &str, limit: usize) -> Result<Vec<FireRecord>> {
        self.with_conn("list schedule fires", |conn| {
            let mut stmt = conn.prepare_cached(RECENT_FIRES)?;
            let rows = stmt.query_map(params![name, limit as i64], |r| {
                Ok(FireRecord {
                    fire_at: r.get(0)?,
                    fired_at: r.get(1)?,
                    job_id: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Remove a schedule and its fire history.  Jobs it already enqueued stay.
    pub fn remove_schedule(&self, name: &str) -> Result<()> {
        let n = self.with_conn("remove schedule", |conn| {
            Ok(conn.prepare_cached(DELETE_SCHEDULE)?.execute([name])?)
        })?;
        if n == 0 {
            return Err(Error::ScheduleNotFound { name: name.into() });
        }
        tracing::info!(schedule = name, "schedule removed");
        Ok(())
    }

    /// Stop firing a schedule.  Ticks that pass while it is paused are not
    /// fired later: resuming starts from the next tick after the resume.
    pub fn pause_schedule(&self, name: &str) -> Result<()> {
        self.set_schedule_enabled(name, false)
    }

    /// Fire a paused (or scheduler-disabled) schedule again, from its next
    /// tick after now.
    pub fn resume_schedule(&self, name: &str) -> Result<()> {
        self.set_schedule_enabled(name, true)
    }

    fn set_schedule_enabled(&self, name: &str, enabled: bool) -> Result<()> {
        let now = self.now();
        self.write("pause or resume schedule", |tx| {
            set_enabled_in(&mut SqliteRows(tx), name, enabled, now)
        })?;
        tracing::info!(schedule = name, enabled, "schedule enabled changed");
        self.notify_work();
        Ok(())
    }

    /// Enqueue the schedule's job now, outside its timetable (its ticks are
    /// not affected).  Returns the job's id.
    pub fn run_schedule_now(&self, name: &str) -> Result<JobId> {
        let now = self.now();
        let max = self.options().max_payload_bytes;
        let id = self.write("run schedule now", |tx| {
            run_now_in(&mut SqliteRows(tx), name, max, now)
        })?;
        tracing::info!(schedule = name, job_id = id, "schedule run now");
        self.notify_work();
        Ok(id)
    }
}

impl SqliteStore {
    /// Install `schedules` once per file: the first call under `key` adds
    /// the ones missing and records `key` in the file; later calls add
    /// nothing (so a schedule the user removed stays removed) unless
    /// `again` is set, which re-adds the missing ones.  Returns the names
    /// added.  What a library calls to ship default schedules.
    pub fn install_schedules_once(
        &self,
        key: &str,
        schedules: &[NewSchedule],
        again: bool,
    ) -> Result<Vec<String>> {
        let now = self.now();
        let max = self.options().max_payload_bytes;
        let added = self.write("install schedules", |tx| {
            install_in(&mut SqliteRows(tx), key, schedules, again, max, now)
        })?;
        if !added.is_empty() {
            tracing::info!(schedules = ?added, key, "schedules installed");
            self.notify_work();
        }
        Ok(added)
    }
}

/// Insert (or with `replace`, update) a schedule inside the caller's transaction.
pub(crate) fn put_in(
    rows: &mut impl ScheduleRows,
    s: &NewSchedule,
    replace: bool,
    max_payload: usize,
    now: Millis,
) -> Result<ScheduleInfo> {
    let c = s.check(max_payload, now)?;
    let job = &s.job;
    let existing = rows.get(&s.name)?;
    if existing.is_some() && !replace {
        return Err(Error::ScheduleExists {
            name: s.name.clone(),
        });
    }
    // Never before the last fire: a replaced schedule does not re-fire a tick.
    let after = existing
        .as_ref()
        .and_then(|e| e.last_fire_at)
        .map_or(now, |last| last.max(now));
    let next = if s.enabled {
        c.timetable.next_after(after)
    } else {
        None
    };
    let row = ScheduleRow {
        name: &s.name,
        cron: c.cron,
        interval_ms: c.interval_ms,
        timezone: &c.timezone,
        queue: &job.queue,
        kind: &job.kind,
        payload: c.payload,
        priority: job.priority,
        max_attempts: job.max_attempts,
        timeout_ms: job.timeout.map(duration_ms),
        tenant: job.tenant.as_deref(),
        enabled: s.enabled,
        misfire: s.misfire.as_str(),
        misfire_cap: s.misfire_cap,
        next_fire_at: next,
        now,
        notify: notify::stored_list(&job.notify)?,
    };
    rows.save(&row, existing.is_some())?;
    rows.get(&s.name)?.ok_or_else(|| Error::ScheduleNotFound {
        name: s.name.clone(),
    })
}

/// Pause (`enabled` false) or resume a schedule in the caller's transaction:
/// resumed, it fires from its next tick after now (and after its last fire).
pub(crate) fn set_enabled_in(
    rows: &mut impl ScheduleRows,
    name: &str,
    enabled: bool,
    now: Millis,
) -> Result<()> {
    let s = rows
        .get(name)?
        .ok_or_else(|| Error::ScheduleNotFound { name: name.into() })?;
    let next = if enabled {
        let after = s.last_fire_at.map_or(now, |last| last.max(now));
        Timetable::new(&s.when, &s.timezone)?.next_after(after)
    } else {
        None
    };
    rows.set_enabled(name, enabled, next, now)
}

/// Enqueue a schedule's job now, in the caller's transaction.
pub(crate) fn run_now_in(
    rows: &mut impl ScheduleRows,
    name: &str,
    max_payload: usize,
    now: Millis,
) -> Result<JobId> {
    let s = rows
        .get(name)?
        .ok_or_else(|| Error::ScheduleNotFound { name: name.into() })?;
    let job = schedule_job(&s, RunAt::Now);
    let payload = job.validate(max_payload)?;
    rows.enqueue(&job, payload, now)
}

/// [`SqliteStore::install_schedules_once`] in the caller's transaction.
pub(crate) fn install_in(
    rows: &mut impl ScheduleRows,
    key: &str,
    schedules: &[NewSchedule],
    again: bool,
    max_payload: usize,
    now: Millis,
) -> Result<Vec<String>> {
    let installed = rows.meta_get(key)?;
    if installed.is_some() && !again {
        return Ok(Vec::new());
    }
    let mut added = Vec::new();
    for s in schedules {
        if rows.get(s.name())?.is_none() {
            put_in(rows, s, false, max_payload, now)?;
            added.push(s.name().to_string());
        }
    }
    rows.meta_set(key, &now.to_string())?;
    Ok(added)
}

/// The job a schedule enqueues, due at `run_at`.
pub(crate) fn schedule_job(s: &ScheduleInfo, run_at: RunAt) -> NewJob {
    let mut job = NewJob::new(&s.queue, &s.kind)
        .payload_json(s.payload.clone())
        .priority(s.priority)
        .max_attempts(s.max_attempts);
    job.run_at = run_at;
    if let Some(ms) = s.timeout_ms {
        job = job.timeout(Duration::from_millis(ms.max(1) as u64));
    }
    if let Some(t) = &s.tenant {
        job = job.tenant(t);
    }
    job.notify(s.notify.clone())
}

pub(crate) fn schedule_row(r: &Row) -> rusqlite::Result<ScheduleInfo> {
    let bad = |i: usize, e: Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    };
    let cron: Option<String> = r.get(1)?;
    let interval_ms: Option<i64> = r.get(2)?;
    let when = match (cron, interval_ms) {
        (Some(expr), _) => When::Cron(expr),
        (None, Some(ms)) => When::Every(Duration::from_millis(ms.max(0) as u64)),
        (None, None) => {
            return Err(bad(
                1,
                Error::invalid("schedule", "neither cron nor interval_ms is set"),
            ))
        }
    };
    let misfire: String = r.get(12)?;
    Ok(ScheduleInfo {
        name: r.get(0)?,
        when,
        timezone: r.get(3)?,
        queue: r.get(4)?,
        kind: r.get(5)?,
        payload: r.get(6)?,
        priority: r.get(7)?,
        max_attempts: r.get(8)?,
        timeout_ms: r.get(9)?,
        tenant: r.get(10)?,
        enabled: r.get(11)?,
        misfire: Misfire::parse(&misfire).map_err(|e| bad(12, e))?,
        misfire_cap: r.get(13)?,
        last_fire_at: r.get(14)?,
        next_fire_at: r.get(15)?,
        last_error: r.get(16)?,
        fires: r.get(17)?,
        created_at: r.get(18)?,
        updated_at: r.get(19)?,
        notify: notify::parse_stored(r.get_ref(20)?.as_str_or_null()?),
    })
}
