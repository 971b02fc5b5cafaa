//! Retention, upkeep and schedules on PostgreSQL.  The schedules' logic is
//! the scheduler's own (`scheduler::manage`, `scheduler::fire`), run over
//! this backend's [`ScheduleRows`]: a tick is fired once across every
//! scheduler on every host by the primary key of `schedule_fires` (an
//! `INSERT … ON CONFLICT DO NOTHING`), and schedulers take the due
//! schedules' rows `FOR UPDATE SKIP LOCKED`, so two passes at once split
//! the work instead of waiting on each other.

use std::time::Duration;

use postgres::Row;

use crate::clock::{duration_ms, Millis};
use crate::error::{Error, Result};
use crate::scheduler::fire::fire_pass;
use crate::scheduler::manage::{install_in, put_in, run_now_in, set_enabled_in};
use crate::scheduler::rows::{ScheduleRow, ScheduleRows};
use crate::scheduler::{FireRecord, FireReport, Misfire, NewSchedule, ScheduleInfo, When};
use crate::store::job::{validate_name, JobId, JobState, NewJob};
use crate::store::notify;
use crate::store::postgres::jobs::insert_validated;
use crate::store::postgres::{Db, PgStore, NOTIFY_WORK};
use crate::store::retention::check_deletable;
use crate::store::Rollup;

const PURGE_PICK: &str = "
SELECT id FROM jobs
WHERE state IN ('succeeded', 'dead', 'cancelled') AND finished_at < $1
  AND ($2::text IS NULL OR queue = $2)
LIMIT $3
FOR UPDATE SKIP LOCKED";

/// Add the tries of the picked jobs (`$1`) to the purged tallies, so that
/// counters of tries never go down (as in the file, schema/0007).
const TALLY_PURGED: &str = "
INSERT INTO purged_tries AS p (queue, outcome, tries, run_ms)
SELECT queue, outcome, count(*), coalesce(sum(run_ms), 0)
FROM (SELECT j.queue AS queue, t.outcome AS outcome, t.finished_at - t.started_at AS run_ms
      FROM jobs AS j JOIN tries AS t ON t.job_id = j.id
      WHERE j.id = ANY($1)
      UNION ALL
      SELECT j.queue, 'succeeded', j.finished_at - coalesce(j.started_at, j.finished_at)
      FROM jobs AS j
      WHERE j.id = ANY($1) AND j.state = 'succeeded') AS picked
GROUP BY queue, outcome
ON CONFLICT (queue, outcome) DO UPDATE
SET tries = p.tries + excluded.tries, run_ms = p.run_ms + excluded.run_ms";

const PURGE_PICKED: &str = "DELETE FROM jobs WHERE id = ANY($1)";

const STATE_OF: &str = "SELECT state FROM jobs WHERE id = $1 FOR UPDATE";

const PURGE_PROGRESS: &str = "
DELETE FROM progress WHERE id IN (SELECT id FROM progress WHERE at < $1 LIMIT $2)";

const PURGE_FIRES: &str = "
DELETE FROM schedule_fires AS f
WHERE fire_at < $1
  AND fire_at < (SELECT coalesce(s.last_fire_at, 0) FROM schedules AS s WHERE s.name = f.schedule)";

/// Rows deleted per transaction.
const BATCH: i64 = 5_000;

const NOW: &str = "SELECT jobd_time($1)";

const SCHEDULE_COLUMNS_ROW: &str = "
SELECT name, cron, interval_ms, timezone, queue, kind, payload, priority, max_attempts,
       timeout_ms, tenant, enabled, misfire, misfire_cap, last_fire_at, next_fire_at,
       last_error, (SELECT count(*) FROM schedule_fires AS f WHERE f.schedule = s.name),
       created_at, updated_at, notify
FROM schedules AS s WHERE name = $1";

const LIST_SCHEDULES: &str = "
SELECT name, cron, interval_ms, timezone, queue, kind, payload, priority, max_attempts,
       timeout_ms, tenant, enabled, misfire, misfire_cap, last_fire_at, next_fire_at,
       last_error, (SELECT count(*) FROM schedule_fires AS f WHERE f.schedule = s.name),
       created_at, updated_at, notify
FROM schedules AS s ORDER BY name";

/// Due schedules, locked: a scheduler on another host passing at the same
/// moment skips them (and finds them advanced at its next pass).
const DUE_SCHEDULES: &str = "
SELECT name, cron, interval_ms, timezone, queue, kind, payload, priority, max_attempts,
       timeout_ms, tenant, enabled, misfire, misfire_cap, last_fire_at, next_fire_at,
       last_error, 0::int8, created_at, updated_at, notify
FROM schedules AS s
WHERE enabled AND next_fire_at <= $1
ORDER BY next_fire_at, name
FOR UPDATE SKIP LOCKED";

const NEXT_DUE: &str = "SELECT min(next_fire_at) FROM schedules WHERE enabled";

const INSERT_SCHEDULE: &str = "
INSERT INTO schedules (name, cron, interval_ms, timezone, queue, kind, payload, priority,
                       max_attempts, timeout_ms, tenant, enabled, misfire, misfire_cap,
                       next_fire_at, created_at, updated_at, notify)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16, $17)";

const UPDATE_SCHEDULE: &str = "
UPDATE schedules
SET cron = $2, interval_ms = $3, timezone = $4, queue = $5, kind = $6, payload = $7,
    priority = $8, max_attempts = $9, timeout_ms = $10, tenant = $11, enabled = $12,
    misfire = $13, misfire_cap = $14, next_fire_at = $15, last_error = NULL, updated_at = $16,
    notify = $17
WHERE name = $1";

const SET_ENABLED: &str = "
UPDATE schedules
SET enabled = $2, next_fire_at = $3, last_error = NULL, updated_at = $4
WHERE name = $1";

const DELETE_SCHEDULE: &str = "DELETE FROM schedules WHERE name = $1";

const RECENT_FIRES: &str = "
SELECT fire_at, fired_at, job_id FROM schedule_fires
WHERE schedule = $1 ORDER BY fire_at DESC LIMIT $2";

const INSERT_FIRE: &str = "
INSERT INTO schedule_fires (schedule, fire_at, fired_at) VALUES ($1, $2, $3)
ON CONFLICT (schedule, fire_at) DO NOTHING";

const SET_FIRE_JOB: &str =
    "UPDATE schedule_fires SET job_id = $3 WHERE schedule = $1 AND fire_at = $2";

const ADVANCE: &str = "
UPDATE schedules
SET last_fire_at = coalesce($2, last_fire_at), next_fire_at = $3, updated_at = $4
WHERE name = $1";

const DISABLE: &str = "
UPDATE schedules
SET enabled = false, next_fire_at = NULL, last_error = $2, updated_at = $3
WHERE name = $1";

const GET_META: &str = "SELECT value FROM meta WHERE key = $1";

const SET_META: &str = "
INSERT INTO meta (key, value) VALUES ($1, $2)
ON CONFLICT (key) DO UPDATE SET value = excluded.value";

type Tx<'a, 'b> = Db<'a, postgres::Transaction<'b>>;

impl PgStore {
    pub fn purge(&self, older_than: Duration, queue: Option<&str>) -> Result<usize> {
        if let Some(q) = queue {
            validate_name("queue", q)?;
        }
        let now = self.now_param();
        let mut total = 0;
        loop {
            let n = self.write("purge", |db| {
                let at: Millis = db.query_one(NOW, &[&now])?.get(0);
                let cutoff = at - duration_ms(older_than);
                let ids: Vec<JobId> = db
                    .query(PURGE_PICK, &[&cutoff, &queue, &BATCH])?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                if ids.is_empty() {
                    return Ok(0);
                }
                db.execute(TALLY_PURGED, &[&ids])?;
                Ok(db.execute(PURGE_PICKED, &[&ids])? as usize)
            })?;
            total += n;
            if (n as i64) < BATCH {
                break;
            }
        }
        tracing::info!(deleted = total, "purged finished jobs");
        Ok(total)
    }

    pub fn delete(&self, id: JobId) -> Result<JobState> {
        let state = self.write("delete", |db| {
            let state: String = db
                .query_opt(STATE_OF, &[&id])?
                .ok_or(Error::NotFound { job_id: id })?
                .get(0);
            check_deletable(id, &state)?;
            let ids = vec![id];
            db.execute(TALLY_PURGED, &[&ids])?;
            db.execute(PURGE_PICKED, &[&ids])?;
            Ok(state)
        })?;
        tracing::info!(job_id = id, state = %state, "deleted a job");
        state.parse()
    }

    pub fn purge_progress(&self, cutoff: Millis) -> Result<usize> {
        let mut purged = 0;
        loop {
            let n = self.read("purge progress", |db| {
                db.execute(PURGE_PROGRESS, &[&cutoff, &BATCH])
            })? as usize;
            purged += n;
            if (n as i64) < BATCH {
                return Ok(purged);
            }
        }
    }

    /// Every queue's rollups from minute `since_minute` on, oldest first.
    pub fn rollups(&self, since_minute: i64) -> Result<Vec<Rollup>> {
        let since = since_minute.max(1);
        self.read("rollups", |db| {
            Ok(db
                .query(ROLLUPS_SINCE, &[&since])?
                .iter()
                .map(rollup_row)
                .collect())
        })
    }

    /// Per queue, every try the database has counted (purged minutes
    /// included).
    pub fn rollup_totals(&self) -> Result<Vec<Rollup>> {
        self.read("rollup totals", |db| {
            Ok(db
                .query(ROLLUP_TOTALS, &[])?
                .iter()
                .map(rollup_row)
                .collect())
        })
    }

    /// Fold the minutes before `cutoff` into each queue's minute 0 and
    /// delete them.
    pub fn purge_rollups(&self, cutoff: Millis) -> Result<usize> {
        let minute = cutoff.div_euclid(60_000);
        self.write("purge rollups", |db| {
            db.execute(FOLD_OLD_ROLLUPS, &[&minute])?;
            Ok(db.execute(PURGE_ROLLUPS, &[&minute])? as usize)
        })
    }

    pub fn purge_fires(&self, cutoff: Millis) -> Result<usize> {
        self.read("purge fired ticks", |db| {
            Ok(db.execute(PURGE_FIRES, &[&cutoff])? as usize)
        })
    }

    /// `ANALYZE` of jobd's tables: fresh statistics for the planner
    /// (autovacuum keeps them too; this is the file's `PRAGMA optimize`).
    pub fn optimize(&self) -> Result<()> {
        self.read("optimize", |db| {
            Ok(db.client.batch_execute(
                "ANALYZE jobs, tries, progress, queues, workers, schedules, schedule_fires",
            )?)
        })
    }

    /// Nothing to do: PostgreSQL checkpoints its own write-ahead log.
    pub fn checkpoint(&self) -> Result<()> {
        Ok(())
    }

    /// The file's `PRAGMA integrity_check` has no PostgreSQL counterpart
    /// jobd can run (checking a cluster is the server's, with `amcheck` or
    /// `pg_checksums`): refused, saying so.
    pub fn integrity_check(&self) -> Result<()> {
        Err(Error::Unsupported {
            what: "an integrity check of the queue (use PostgreSQL's amcheck)",
            backend: "PostgreSQL",
        })
    }

    /// "ok" when the server answers and the schema is jobd's current one.
    pub fn quick_check(&self) -> Result<String> {
        self.read("quick check", |db| {
            let v: i64 = db.query_one(super::SCHEMA_VERSION_NOW, &[])?.get(0);
            Ok(if v == super::SCHEMA_VERSION {
                "ok".to_string()
            } else {
                format!("schema version {v}, expected {}", super::SCHEMA_VERSION)
            })
        })
    }

    /// A write with the statement time read first (the scheduler's logic
    /// computes ticks from it).
    fn schedule_write<T: Send>(
        &self,
        operation: &'static str,
        mut f: impl FnMut(&mut PgRows<'_, '_, '_>, Millis) -> Result<T> + Send,
    ) -> Result<T> {
        let now = self.now_param();
        self.write(operation, |db| {
            let at: Millis = db.query_one(NOW, &[&now])?.get(0);
            f(&mut PgRows { db, now }, at)
        })
    }

    pub fn add_schedule(&self, schedule: &NewSchedule) -> Result<ScheduleInfo> {
        self.put_schedule(schedule, false)
    }

    pub fn replace_schedule(&self, schedule: &NewSchedule) -> Result<ScheduleInfo> {
        self.put_schedule(schedule, true)
    }

    fn put_schedule(&self, s: &NewSchedule, replace: bool) -> Result<ScheduleInfo> {
        let max = self.options().max_payload_bytes;
        let info = self.schedule_write("add schedule", |rows, now| {
            put_in(rows, s, replace, max, now)
        })?;
        tracing::info!(schedule = %info.name, when = %info.when, timezone = %info.timezone,
                       next_fire_at = ?info.next_fire_at, replace, "schedule saved");
        self.notify_work();
        Ok(info)
    }

    pub fn schedule(&self, name: &str) -> Result<ScheduleInfo> {
        self.read("get schedule", |db| {
            db.query_opt(SCHEDULE_COLUMNS_ROW, &[&name])?
                .map(|r| schedule_row(&r))
                .transpose()?
                .ok_or_else(|| Error::ScheduleNotFound { name: name.into() })
        })
    }

    pub fn schedules(&self) -> Result<Vec<ScheduleInfo>> {
        self.read("list schedules", |db| {
            db.query(LIST_SCHEDULES, &[])?
                .iter()
                .map(schedule_row)
                .collect()
        })
    }

    pub fn schedule_fires(&self, name: &str, limit: usize) -> Result<Vec<FireRecord>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read("list schedule fires", |db| {
            Ok(db
                .query(RECENT_FIRES, &[&name, &limit])?
                .iter()
                .map(|r| FireRecord {
                    fire_at: r.get(0),
                    fired_at: r.get(1),
                    job_id: r.get(2),
                })
                .collect())
        })
    }

    pub fn remove_schedule(&self, name: &str) -> Result<()> {
        let n = self.read("remove schedule", |db| {
            db.execute(DELETE_SCHEDULE, &[&name])
        })?;
        if n == 0 {
            return Err(Error::ScheduleNotFound { name: name.into() });
        }
        tracing::info!(schedule = name, "schedule removed");
        Ok(())
    }

    pub fn pause_schedule(&self, name: &str) -> Result<()> {
        self.set_schedule_enabled(name, false)
    }

    pub fn resume_schedule(&self, name: &str) -> Result<()> {
        self.set_schedule_enabled(name, true)
    }

    fn set_schedule_enabled(&self, name: &str, enabled: bool) -> Result<()> {
        self.schedule_write("pause or resume schedule", |rows, now| {
            set_enabled_in(rows, name, enabled, now)?;
            rows.db.query_one(NOTIFY_WORK, &[])?;
            Ok(())
        })?;
        tracing::info!(schedule = name, enabled, "schedule enabled changed");
        self.notify_work();
        Ok(())
    }

    pub fn run_schedule_now(&self, name: &str) -> Result<JobId> {
        let max = self.options().max_payload_bytes;
        let id = self.schedule_write("run schedule now", |rows, now| {
            run_now_in(rows, name, max, now)
        })?;
        tracing::info!(schedule = name, job_id = id, "schedule run now");
        self.notify_work();
        Ok(id)
    }

    pub fn install_schedules_once(
        &self,
        key: &str,
        schedules: &[NewSchedule],
        again: bool,
    ) -> Result<Vec<String>> {
        let max = self.options().max_payload_bytes;
        let added = self.schedule_write("install schedules", |rows, now| {
            install_in(rows, key, schedules, again, max, now)
        })?;
        if !added.is_empty() {
            tracing::info!(schedules = ?added, key, "schedules installed");
            self.notify_work();
        }
        Ok(added)
    }

    pub fn next_schedule_tick(&self) -> Result<Option<Millis>> {
        self.read("read next tick", |db| {
            Ok(db.query_one(NEXT_DUE, &[])?.get(0))
        })
    }

    pub fn fire_due_schedules(&self, grace: Duration) -> Result<FireReport> {
        let now = self.now_param();
        // A read first: a transaction only when something is due.
        let (next, at): (Option<Millis>, Millis) = self.read("read next tick", |db| {
            let next = db.query_one(NEXT_DUE, &[])?.get(0);
            Ok((next, db.query_one(NOW, &[&now])?.get(0)))
        })?;
        if next.is_none_or(|next| next > at) {
            return Ok(FireReport {
                next_fire_at: next,
                ..FireReport::default()
            });
        }
        let max_payload = self.options().max_payload_bytes;
        let grace_ms = duration_ms(grace);
        let report = self.schedule_write("fire schedules", |rows, now| {
            fire_pass(rows, now, grace_ms, max_payload)
        })?;
        if !report.fired.is_empty() {
            self.notify_work();
        }
        Ok(report)
    }
}

/// The schedule tables in one PostgreSQL transaction.
struct PgRows<'r, 'a, 'b> {
    db: &'r mut Tx<'a, 'b>,
    /// The statement time parameter (`None`: the database's clock).
    now: Option<Millis>,
}

impl ScheduleRows for PgRows<'_, '_, '_> {
    fn get(&mut self, name: &str) -> Result<Option<ScheduleInfo>> {
        self.db
            .query_opt(SCHEDULE_COLUMNS_ROW, &[&name])?
            .map(|r| schedule_row(&r))
            .transpose()
    }

    fn save(&mut self, r: &ScheduleRow<'_>, update: bool) -> Result<()> {
        let sql = if update {
            UPDATE_SCHEDULE
        } else {
            INSERT_SCHEDULE
        };
        self.db.execute(
            sql,
            &[
                &r.name,
                &r.cron,
                &r.interval_ms,
                &r.timezone,
                &r.queue,
                &r.kind,
                &r.payload,
                &r.priority,
                &r.max_attempts,
                &r.timeout_ms,
                &r.tenant,
                &r.enabled,
                &r.misfire,
                &r.misfire_cap,
                &r.next_fire_at,
                &r.now,
                &r.notify,
            ],
        )?;
        self.db.query_one(NOTIFY_WORK, &[])?;
        Ok(())
    }

    fn set_enabled(
        &mut self,
        name: &str,
        enabled: bool,
        next: Option<Millis>,
        now: Millis,
    ) -> Result<()> {
        self.db
            .execute(SET_ENABLED, &[&name, &enabled, &next, &now])
            .map(drop)
    }

    fn enqueue(&mut self, job: &NewJob, payload: &str, _now: Millis) -> Result<JobId> {
        insert_validated(self.db, job, payload, self.now)
    }

    fn due(&mut self, now: Millis) -> Result<Vec<ScheduleInfo>> {
        self.db
            .query(DUE_SCHEDULES, &[&now])?
            .iter()
            .map(schedule_row)
            .collect()
    }

    fn next_due(&mut self) -> Result<Option<Millis>> {
        Ok(self.db.query_one(NEXT_DUE, &[])?.get(0))
    }

    fn claim_tick(&mut self, name: &str, fire_at: Millis, now: Millis) -> Result<bool> {
        Ok(self.db.execute(INSERT_FIRE, &[&name, &fire_at, &now])? > 0)
    }

    fn set_fire_job(&mut self, name: &str, fire_at: Millis, job: JobId) -> Result<()> {
        self.db
            .execute(SET_FIRE_JOB, &[&name, &fire_at, &job])
            .map(drop)
    }

    fn advance(
        &mut self,
        name: &str,
        last_fired: Option<Millis>,
        next: Option<Millis>,
        now: Millis,
    ) -> Result<()> {
        self.db
            .execute(ADVANCE, &[&name, &last_fired, &next, &now])
            .map(drop)
    }

    fn disable(&mut self, name: &str, reason: &str, now: Millis) -> Result<()> {
        self.db.execute(DISABLE, &[&name, &reason, &now]).map(drop)
    }

    fn meta_get(&mut self, key: &str) -> Result<Option<String>> {
        Ok(self.db.query_opt(GET_META, &[&key])?.map(|r| r.get(0)))
    }

    fn meta_set(&mut self, key: &str, value: &str) -> Result<()> {
        self.db.execute(SET_META, &[&key, &value]).map(drop)
    }
}

/// A schedule's row, in the column order of the statements above.
fn schedule_row(r: &Row) -> Result<ScheduleInfo> {
    let cron: Option<String> = r.get(1);
    let interval_ms: Option<i64> = r.get(2);
    let when = match (cron, interval_ms) {
        (Some(expr), _) => When::Cron(expr),
        (None, Some(ms)) => When::Every(Duration::from_millis(ms.max(0) as u64)),
        (None, None) => {
            return Err(Error::invalid(
                "schedule",
                "neither cron nor interval_ms is set",
            ))
        }
    };
    Ok(ScheduleInfo {
        name: r.get(0),
        when,
        timezone: r.get(3),
        queue: r.get(4),
        kind: r.get(5),
        payload: r.get(6),
        priority: r.get(7),
        max_attempts: r.get(8),
        timeout_ms: r.get(9),
        tenant: r.get(10),
        enabled: r.get(11),
        misfire: Misfire::parse(r.get(12))?,
        misfire_cap: r.get(13),
        last_fire_at: r.get(14),
        next_fire_at: r.get(15),
        last_error: r.get(16),
        fires: r.get(17),
        created_at: r.get(18),
        updated_at: r.get(19),
        notify: notify::parse_stored(r.get(20)),
    })
}

const ROLLUPS_SINCE: &str = "
SELECT * FROM rollups WHERE minute >= $1 ORDER BY minute, queue";

const ROLLUP_TOTALS: &str = "
SELECT queue, 0::int8, sum(succeeded)::int8, sum(failed)::int8, sum(dead)::int8, sum(cancelled)::int8, sum(run_ms)::int8, sum(wait_ms)::int8, sum(run_10ms)::int8, sum(run_50ms)::int8, sum(run_100ms)::int8, sum(run_250ms)::int8, sum(run_500ms)::int8, sum(run_1s)::int8, sum(run_2500ms)::int8, sum(run_5s)::int8, sum(run_10s)::int8, sum(run_30s)::int8, sum(run_1m)::int8, sum(run_5m)::int8, sum(run_more)::int8, sum(wait_10ms)::int8, sum(wait_50ms)::int8, sum(wait_100ms)::int8, sum(wait_250ms)::int8, sum(wait_500ms)::int8, sum(wait_1s)::int8, sum(wait_2500ms)::int8, sum(wait_5s)::int8, sum(wait_10s)::int8, sum(wait_30s)::int8, sum(wait_1m)::int8, sum(wait_5m)::int8, sum(wait_more)::int8
FROM rollups GROUP BY queue ORDER BY queue";

const FOLD_OLD_ROLLUPS: &str = "
INSERT INTO rollups
SELECT queue, 0, sum(succeeded)::int8, sum(failed)::int8, sum(dead)::int8, sum(cancelled)::int8, sum(run_ms)::int8, sum(wait_ms)::int8, sum(run_10ms)::int8, sum(run_50ms)::int8, sum(run_100ms)::int8, sum(run_250ms)::int8, sum(run_500ms)::int8, sum(run_1s)::int8, sum(run_2500ms)::int8, sum(run_5s)::int8, sum(run_10s)::int8, sum(run_30s)::int8, sum(run_1m)::int8, sum(run_5m)::int8, sum(run_more)::int8, sum(wait_10ms)::int8, sum(wait_50ms)::int8, sum(wait_100ms)::int8, sum(wait_250ms)::int8, sum(wait_500ms)::int8, sum(wait_1s)::int8, sum(wait_2500ms)::int8, sum(wait_5s)::int8, sum(wait_10s)::int8, sum(wait_30s)::int8, sum(wait_1m)::int8, sum(wait_5m)::int8, sum(wait_more)::int8
FROM rollups WHERE minute > 0 AND minute < $1
GROUP BY queue
ON CONFLICT (queue, minute) DO UPDATE SET
    succeeded = rollups.succeeded + excluded.succeeded,
    failed = rollups.failed + excluded.failed,
    dead = rollups.dead + excluded.dead,
    cancelled = rollups.cancelled + excluded.cancelled,
    run_ms = rollups.run_ms + excluded.run_ms,
    wait_ms = rollups.wait_ms + excluded.wait_ms,
    run_10ms = rollups.run_10ms + excluded.run_10ms,
    run_50ms = rollups.run_50ms + excluded.run_50ms,
    run_100ms = rollups.run_100ms + excluded.run_100ms,
    run_250ms = rollups.run_250ms + excluded.run_250ms,
    run_500ms = rollups.run_500ms + excluded.run_500ms,
    run_1s = rollups.run_1s + excluded.run_1s,
    run_2500ms = rollups.run_2500ms + excluded.run_2500ms,
    run_5s = rollups.run_5s + excluded.run_5s,
    run_10s = rollups.run_10s + excluded.run_10s,
    run_30s = rollups.run_30s + excluded.run_30s,
    run_1m = rollups.run_1m + excluded.run_1m,
    run_5m = rollups.run_5m + excluded.run_5m,
    run_more = rollups.run_more + excluded.run_more,
    wait_10ms = rollups.wait_10ms + excluded.wait_10ms,
    wait_50ms = rollups.wait_50ms + excluded.wait_50ms,
    wait_100ms = rollups.wait_100ms + excluded.wait_100ms,
    wait_250ms = rollups.wait_250ms + excluded.wait_250ms,
    wait_500ms = rollups.wait_500ms + excluded.wait_500ms,
    wait_1s = rollups.wait_1s + excluded.wait_1s,
    wait_2500ms = rollups.wait_2500ms + excluded.wait_2500ms,
    wait_5s = rollups.wait_5s + excluded.wait_5s,
    wait_10s = rollups.wait_10s + excluded.wait_10s,
    wait_30s = rollups.wait_30s + excluded.wait_30s,
    wait_1m = rollups.wait_1m + excluded.wait_1m,
    wait_5m = rollups.wait_5m + excluded.wait_5m,
    wait_more = rollups.wait_more + excluded.wait_more";

const PURGE_ROLLUPS: &str = "
DELETE FROM rollups WHERE minute > 0 AND minute < $1";

/// A row of `queue, minute, <counters in the schema's order>`.
fn rollup_row(r: &postgres::Row) -> Rollup {
    let v: Vec<i64> = (2..2 + crate::store::rollup::COUNTERS)
        .map(|i| r.get::<_, i64>(i))
        .collect();
    Rollup::from_values(r.get(0), r.get(1), &v)
}
