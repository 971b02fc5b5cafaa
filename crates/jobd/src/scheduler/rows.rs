//! The schedule tables as one transaction of a backend sees them: what
//! adding, pausing, running and firing schedules read and write.  The logic
//! of those (in `manage` and `fire`) is written once over this trait; each
//! backend implements it with its own statements — SQLite here, PostgreSQL
//! in [`crate::store::postgres`].

use rusqlite::{params, OptionalExtension};

use crate::clock::Millis;
use crate::error::Result;
use crate::scheduler::fire::{
    ADVANCE, DISABLE, DUE_SCHEDULES, INSERT_FIRE, NEXT_DUE, SET_FIRE_JOB,
};
use crate::scheduler::manage::{
    schedule_row, GET_SCHEDULE, INSERT_SCHEDULE, SET_ENABLED, UPDATE_SCHEDULE,
};
use crate::scheduler::schedule::ScheduleInfo;
use crate::store::enqueue::insert_validated;
use crate::store::{meta, JobId, NewJob};

/// A schedule's row as written (checked first by `manage::put_in`).
pub(crate) struct ScheduleRow<'a> {
    pub name: &'a str,
    pub cron: Option<&'a str>,
    pub interval_ms: Option<i64>,
    pub timezone: &'a str,
    pub queue: &'a str,
    pub kind: &'a str,
    pub payload: &'a str,
    pub priority: i64,
    pub max_attempts: i64,
    pub timeout_ms: Option<i64>,
    pub tenant: Option<&'a str>,
    pub enabled: bool,
    pub misfire: &'a str,
    pub misfire_cap: i64,
    pub next_fire_at: Option<Millis>,
    pub now: Millis,
    pub notify: Option<String>,
}

/// The schedule tables inside one write transaction.
pub(crate) trait ScheduleRows {
    fn get(&mut self, name: &str) -> Result<Option<ScheduleInfo>>;
    /// Insert the row, or with `update` replace the one of that name.
    fn save(&mut self, row: &ScheduleRow<'_>, update: bool) -> Result<()>;
    fn set_enabled(
        &mut self,
        name: &str,
        enabled: bool,
        next: Option<Millis>,
        now: Millis,
    ) -> Result<()>;
    /// Enqueue a schedule's (validated) job.
    fn enqueue(&mut self, job: &NewJob, payload: &str, now: Millis) -> Result<JobId>;
    /// Enabled schedules due by `now`, earliest first.
    fn due(&mut self, now: Millis) -> Result<Vec<ScheduleInfo>>;
    fn next_due(&mut self) -> Result<Option<Millis>>;
    /// Record the tick as fired; false when it already was.
    fn claim_tick(&mut self, name: &str, fire_at: Millis, now: Millis) -> Result<bool>;
    fn set_fire_job(&mut self, name: &str, fire_at: Millis, job: JobId) -> Result<()>;
    fn advance(
        &mut self,
        name: &str,
        last_fired: Option<Millis>,
        next: Option<Millis>,
        now: Millis,
    ) -> Result<()>;
    fn disable(&mut self, name: &str, reason: &str, now: Millis) -> Result<()>;
    fn meta_get(&mut self, key: &str) -> Result<Option<String>>;
    fn meta_set(&mut self, key: &str, value: &str) -> Result<()>;
}

/// The SQLite file's schedule tables, in the caller's transaction.
pub(crate) struct SqliteRows<'a>(pub &'a rusqlite::Connection);

impl ScheduleRows for SqliteRows<'_> {
    fn get(&mut self, name: &str) -> Result<Option<ScheduleInfo>> {
        Ok(self
            .0
            .prepare_cached(GET_SCHEDULE)?
            .query_row([name], schedule_row)
            .optional()?)
    }

    fn save(&mut self, r: &ScheduleRow<'_>, update: bool) -> Result<()> {
        let sql = if update {
            UPDATE_SCHEDULE
        } else {
            INSERT_SCHEDULE
        };
        self.0.prepare_cached(sql)?.execute(params![
            r.name,
            r.cron,
            r.interval_ms,
            r.timezone,
            r.queue,
            r.kind,
            r.payload,
            r.priority,
            r.max_attempts,
            r.timeout_ms,
            r.tenant,
            r.enabled,
            r.misfire,
            r.misfire_cap,
            r.next_fire_at,
            r.now,
            r.notify,
        ])?;
        Ok(())
    }

    fn set_enabled(
        &mut self,
        name: &str,
        enabled: bool,
        next: Option<Millis>,
        now: Millis,
    ) -> Result<()> {
        self.0
            .prepare_cached(SET_ENABLED)?
            .execute(params![name, enabled, next, now])?;
        Ok(())
    }

    fn enqueue(&mut self, job: &NewJob, payload: &str, now: Millis) -> Result<JobId> {
        insert_validated(self.0, job, payload, now)
    }

    fn due(&mut self, now: Millis) -> Result<Vec<ScheduleInfo>> {
        Ok(self
            .0
            .prepare_cached(DUE_SCHEDULES)?
            .query_map([now], schedule_row)?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn next_due(&mut self) -> Result<Option<Millis>> {
        Ok(self
            .0
            .prepare_cached(NEXT_DUE)?
            .query_row([], |r| r.get(0))?)
    }

    fn claim_tick(&mut self, name: &str, fire_at: Millis, now: Millis) -> Result<bool> {
        Ok(self
            .0
            .prepare_cached(INSERT_FIRE)?
            .execute(params![name, fire_at, now])?
            > 0)
    }

    fn set_fire_job(&mut self, name: &str, fire_at: Millis, job: JobId) -> Result<()> {
        self.0
            .prepare_cached(SET_FIRE_JOB)?
            .execute(params![name, fire_at, job])?;
        Ok(())
    }

    fn advance(
        &mut self,
        name: &str,
        last_fired: Option<Millis>,
        next: Option<Millis>,
        now: Millis,
    ) -> Result<()> {
        self.0
            .prepare_cached(ADVANCE)?
            .execute(params![name, last_fired, next, now])?;
        Ok(())
    }

    fn disable(&mut self, name: &str, reason: &str, now: Millis) -> Result<()> {
        self.0
            .prepare_cached(DISABLE)?
            .execute(params![name, reason, now])?;
        Ok(())
    }

    fn meta_get(&mut self, key: &str) -> Result<Option<String>> {
        meta::get(self.0, key)
    }

    fn meta_set(&mut self, key: &str, value: &str) -> Result<()> {
        meta::set(self.0, key, value)
    }
}
