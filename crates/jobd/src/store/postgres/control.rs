//! Cancel and retry (one job, or in bulk by filter), reads and counts,
//! queue settings, the worker registry and API tokens on PostgreSQL.

use std::collections::BTreeMap;

use crate::clock::{duration_ms, Millis};
use crate::error::{Error, Result};
use crate::store::control::{
    bulk_error, cancel_states, checked_pattern, error_pattern, retry_state, BULK_BATCH_SIZE,
};
use crate::store::job::{
    validate_name, AttemptInfo, Backoff, CancelOutcome, CancelReport, JobId, JobInfo, JobSelection,
    JobState, JobSummary, ListFilter, PayloadMatch, Progress, ProgressEntry, QueueStats,
    RetryReport, Stats, PROGRESS_LOG_KEPT,
};
use crate::store::notify;
use crate::store::postgres::jobs::enqueue_ended;
use crate::store::postgres::{PgStore, NOTIFY_WORK};
use crate::store::tokens::{validate_token_name, Role, TokenInfo};
use crate::store::totals::TryTotals;
use crate::store::workers::{LiveWork, LiveWorker, WorkerInfo};

const JOB_STATE: &str = "SELECT state, unique_key FROM jobs WHERE id = $1 FOR UPDATE";

const CANCEL_WAITING: &str = "
UPDATE jobs SET state = 'cancelled', finished_at = jobd_time($1),
                last_error = 'cancelled before it ran'
WHERE id = ANY($2) AND state IN ('scheduled', 'ready')";

const REQUEST_CANCEL: &str = "
UPDATE jobs SET cancel_requested = true WHERE id = ANY($1) AND state = 'running'";

/// Revive dead or cancelled jobs without a unique key in one statement.
const REVIVE_KEYLESS: &str = "
UPDATE jobs
SET state = 'ready', run_at = jobd_time($1), attempt_limit = attempts + max_attempts,
    cancel_requested = false, finished_at = NULL, result = NULL
WHERE id = ANY($2) AND state IN ('dead', 'cancelled') AND unique_key IS NULL";

/// Revive one job (its unique key may be taken: a unique violation).
const REVIVE: &str = "
UPDATE jobs
SET state = 'ready', run_at = jobd_time($1), attempt_limit = attempts + max_attempts,
    cancel_requested = false, finished_at = NULL, result = NULL
WHERE id = $2 AND state IN ('dead', 'cancelled')";

const KEYED: &str = "
SELECT id FROM jobs WHERE id = ANY($1) AND state IN ('dead', 'cancelled') AND unique_key IS NOT NULL
ORDER BY id";

const LIVE_JOB_BY_KEY: &str = "
SELECT id FROM jobs WHERE unique_key = $1 AND state IN ('scheduled', 'ready', 'running')";

/// The next jobs in state `$1` a bulk operation acts on, by id after `$2`.
const PICK_JOBS: &str = "
SELECT id FROM jobs
WHERE state = $1 AND id > $2
  AND ($3::text IS NULL OR queue = $3)
  AND ($4::text IS NULL OR kind = $4)
  AND ($5::text IS NULL OR tenant = $5)
  AND ($6::text IS NULL OR last_error ILIKE $6 ESCAPE '\\')
ORDER BY id
LIMIT $7";

const GET_JOB: &str = "
SELECT id, queue, kind, state, payload, priority, run_at, attempts, max_attempts, attempt_limit,
       backoff_base_ms, backoff_max_ms, timeout_ms, unique_key, tenant, lease_owner, lease_expires_at,
       cancel_requested, progress_percent, progress_stage, progress_detail, result, last_error,
       created_at, started_at, finished_at, notify
FROM jobs WHERE id = $1";

const GET_ATTEMPTS: &str = "
SELECT attempt, worker, started_at, finished_at, outcome, error
FROM attempts WHERE job_id = $1 ORDER BY attempt";

const GET_PROGRESS: &str = "
SELECT attempt, at, percent, stage, detail
FROM progress WHERE job_id = $1 ORDER BY id DESC LIMIT $2";

const LIST_JOBS: &str = "
SELECT id, queue, kind, state, priority, attempts, attempt_limit, tenant, progress_percent,
       progress_stage, last_error, run_at, created_at, finished_at, started_at, lease_owner
FROM jobs
WHERE ($1::text IS NULL OR queue = $1)
  AND ($2::text IS NULL OR state = $2)
  AND ($3::text IS NULL OR kind = $3)
  AND ($4::text IS NULL OR tenant = $4)
  AND ($5::int8 IS NULL OR id < $5)
  AND ($10::int8 IS NULL OR id > $10)
  AND ($7::text IS NULL OR last_error ILIKE $7 ESCAPE '\\')
  AND ($8::text[] IS NULL OR payload::jsonb #> $8 = $9::text::jsonb)
ORDER BY id DESC
LIMIT $6";

/// Counts per queue and state in one pass (PostgreSQL aggregates by hash),
/// with the run time of succeeded jobs, retries waiting, and the oldest
/// ready job; in the read's snapshot with the rest of [`PgStore::stats`].
const COUNTS: &str = "
SELECT queue, state, count(*),
       count(*) FILTER (WHERE state = 'scheduled' AND attempts > 0),
       coalesce(sum(finished_at - coalesce(started_at, finished_at))
                FILTER (WHERE state = 'succeeded'), 0)::int8,
       min(run_at) FILTER (WHERE state = 'ready')
FROM jobs GROUP BY queue, state";

const PURGED_SUCCEEDED: &str =
    "SELECT queue, tries, run_ms FROM purged_tries WHERE outcome = 'succeeded'";

const QUEUE_SETTINGS: &str = "SELECT name, paused, concurrency FROM queues";

const LIVE_WORKERS: &str =
    "SELECT count(*) FROM workers WHERE last_heartbeat_at >= jobd_time($1) - $2";

const LIVE_WORK: &str =
    "SELECT queues, kinds FROM workers WHERE last_heartbeat_at >= jobd_time($1) - $2";

const NOW: &str = "SELECT jobd_time($1)";

const WORKER_LIST: &str = "
SELECT w.id, w.host, w.pid::int8, w.queues, w.kinds, w.started_at, w.last_heartbeat_at,
       (SELECT count(*) FROM jobs WHERE state = 'running' AND lease_owner = w.id)
FROM workers AS w WHERE w.last_heartbeat_at >= jobd_time($1) - $2
ORDER BY w.started_at, w.id";

/// Tries that ended without success per queue and outcome, with their run
/// time, and the purged ones' tallies (the file's `TRY_TOTALS`).
const TRY_TOTALS: &str = "
SELECT j.queue, t.outcome, count(*), coalesce(sum(t.finished_at - t.started_at), 0)::int8
FROM tries AS t JOIN jobs AS j ON j.id = t.job_id
GROUP BY j.queue, t.outcome
UNION ALL
SELECT queue, outcome, tries, run_ms FROM purged_tries WHERE outcome != 'succeeded'";

const SET_PAUSED: &str = "
INSERT INTO queues (name, paused, updated_at) VALUES ($2, $3, jobd_time($1))
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at";

const SET_CONCURRENCY: &str = "
INSERT INTO queues (name, concurrency, updated_at) VALUES ($2, $3, jobd_time($1))
ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency,
                                 updated_at = excluded.updated_at";

const QUEUE_KNOWN: &str = "
SELECT EXISTS (SELECT 1 FROM queues WHERE name = $1)
    OR EXISTS (SELECT 1 FROM purged_tries WHERE queue = $1)
    OR EXISTS (SELECT 1 FROM workers WHERE queues::jsonb ? $1)
    OR EXISTS (SELECT 1 FROM jobs WHERE queue = $1)";

const REGISTER_WORKER: &str = "
INSERT INTO workers (id, host, pid, queues, kinds, started_at, last_heartbeat_at)
VALUES ($2, $3, $4, $5, $6, jobd_time($1), jobd_time($1))
ON CONFLICT (id) DO UPDATE SET queues = excluded.queues, kinds = excluded.kinds,
                               last_heartbeat_at = excluded.last_heartbeat_at";

const WORKER_HEARTBEAT: &str = "UPDATE workers SET last_heartbeat_at = jobd_time($1) WHERE id = $2";

const DEREGISTER_WORKER: &str = "DELETE FROM workers WHERE id = $1";

const ADD_TOKEN: &str = "
INSERT INTO api_tokens (name, role, sha256, created_at) VALUES ($2, $3, $4, jobd_time($1))
ON CONFLICT (name) DO NOTHING";

const TOKEN_BY_HASH: &str = "SELECT name, role FROM api_tokens WHERE sha256 = $1";

const LIST_TOKENS: &str = "SELECT name, role, created_at FROM api_tokens ORDER BY name";

const REVOKE_TOKEN: &str = "DELETE FROM api_tokens WHERE name = $1";

/// The SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";

impl PgStore {
    /// Cancel a job (see [`SqliteStore::cancel`](crate::SqliteStore::cancel)).
    pub fn cancel(&self, id: JobId) -> Result<CancelOutcome> {
        let now = self.now_param();
        let mut notified = 0;
        let outcome = self.write("cancel", |db| {
            let state: String = db
                .query_opt(JOB_STATE, &[&id])?
                .ok_or(Error::NotFound { job_id: id })?
                .get(0);
            match state.as_str() {
                "scheduled" | "ready" => {
                    db.execute(CANCEL_WAITING, &[&now, &vec![id]])?;
                    notified = enqueue_ended(db, now)?;
                    Ok(CancelOutcome::Cancelled)
                }
                "running" => {
                    db.execute(REQUEST_CANCEL, &[&vec![id]])?;
                    db.query_one(NOTIFY_WORK, &[])?;
                    Ok(CancelOutcome::Requested)
                }
                "cancelled" => Ok(CancelOutcome::AlreadyCancelled),
                _ => Err(Error::InvalidState {
                    job_id: id,
                    state,
                    operation: "cancel a finished job",
                }),
            }
        })?;
        tracing::info!(job_id = id, ?outcome, "cancel");
        if outcome == CancelOutcome::Requested {
            self.notify_cancel();
        }
        if notified > 0 {
            self.notify_work();
        }
        Ok(outcome)
    }

    /// Revive a dead or cancelled job: ready now, with a fresh set of tries.
    pub fn retry(&self, id: JobId) -> Result<()> {
        let now = self.now_param();
        let revived = self.write("retry", |db| {
            let row = db
                .query_opt(JOB_STATE, &[&id])?
                .ok_or(Error::NotFound { job_id: id })?;
            let (state, key): (String, Option<String>) = (row.get(0), row.get(1));
            if state != "dead" && state != "cancelled" {
                return Err(Error::InvalidState {
                    job_id: id,
                    state,
                    operation: "retry (only dead or cancelled jobs)",
                });
            }
            match revive_one(db, id, now)? {
                true => {
                    db.query_one(NOTIFY_WORK, &[])?;
                    Ok(Ok(()))
                }
                false => {
                    let key = key.unwrap_or_default();
                    let holder: JobId = db.query_one(LIVE_JOB_BY_KEY, &[&key])?.get(0);
                    Ok(Err(Error::Conflict {
                        key,
                        job_id: holder,
                    }))
                }
            }
        })?;
        revived?;
        tracing::info!(job_id = id, "retry");
        self.notify_work();
        Ok(())
    }

    pub fn retry_matching(&self, selection: &JobSelection) -> Result<RetryReport> {
        let state = retry_state(selection)?;
        let pattern = checked_pattern(selection)?;
        let mut report = RetryReport::default();
        let outcome = self.pick_batches(selection, pattern.as_deref(), state, |ids| {
            let now = self.now_param();
            let (retried, key_taken) = self.write("bulk retry", |db| {
                let mut retried = db.execute(REVIVE_KEYLESS, &[&now, &ids])? as usize;
                let mut key_taken = Vec::new();
                let keyed: Vec<JobId> =
                    db.query(KEYED, &[&ids])?.iter().map(|r| r.get(0)).collect();
                for id in keyed {
                    match revive_one(db, id, now)? {
                        true => retried += 1,
                        false => key_taken.push(id),
                    }
                }
                if retried > 0 {
                    db.query_one(NOTIFY_WORK, &[])?;
                }
                Ok((retried, key_taken))
            })?;
            report.retried += retried;
            report.key_taken.extend(key_taken);
            Ok(())
        });
        if report.retried > 0 {
            self.notify_work();
        }
        tracing::info!(
            retried = report.retried,
            key_taken = report.key_taken.len(),
            state = state.as_str(),
            "bulk retry"
        );
        outcome.map_err(|e| bulk_error(e, "retried", report.retried))?;
        Ok(report)
    }

    pub fn cancel_matching(&self, selection: &JobSelection) -> Result<CancelReport> {
        let states = cancel_states(selection)?;
        let pattern = checked_pattern(selection)?;
        let mut report = CancelReport::default();
        let mut outcome = Ok(());
        for &state in states {
            let running = state == JobState::Running;
            outcome = self.pick_batches(selection, pattern.as_deref(), state, |ids| {
                let now = self.now_param();
                let mut notified = 0;
                let changed = self.write("bulk cancel", |db| {
                    if running {
                        let n = db.execute(REQUEST_CANCEL, &[&ids])?;
                        db.query_one(NOTIFY_WORK, &[])?;
                        Ok(n as usize)
                    } else {
                        let n = db.execute(CANCEL_WAITING, &[&now, &ids])?;
                        notified = enqueue_ended(db, now)?;
                        Ok(n as usize)
                    }
                })?;
                if running {
                    report.requested += changed;
                } else {
                    report.cancelled += changed;
                }
                if notified > 0 {
                    self.notify_work();
                }
                Ok(())
            });
            if outcome.is_err() {
                break;
            }
        }
        if report.requested > 0 {
            self.notify_cancel();
        }
        tracing::info!(
            cancelled = report.cancelled,
            requested = report.requested,
            "bulk cancel"
        );
        let done = report.cancelled + report.requested;
        outcome.map_err(|e| bulk_error(e, "cancelled or asked to stop", done))?;
        Ok(report)
    }

    pub fn count_retryable(&self, selection: &JobSelection) -> Result<usize> {
        let state = retry_state(selection)?;
        let pattern = checked_pattern(selection)?;
        let mut n = 0;
        self.pick_batches(selection, pattern.as_deref(), state, |ids| {
            n += ids.len();
            Ok(())
        })?;
        Ok(n)
    }

    pub fn count_cancellable(&self, selection: &JobSelection) -> Result<CancelReport> {
        let states = cancel_states(selection)?;
        let pattern = checked_pattern(selection)?;
        let mut report = CancelReport::default();
        for &state in states {
            let mut n = 0;
            self.pick_batches(selection, pattern.as_deref(), state, |ids| {
                n += ids.len();
                Ok(())
            })?;
            if state == JobState::Running {
                report.requested += n;
            } else {
                report.cancelled += n;
            }
        }
        Ok(report)
    }

    /// The jobs in `state` matching `selection`, a batch at a time, each
    /// batch handed to `each` before the next is picked.
    fn pick_batches(
        &self,
        selection: &JobSelection,
        pattern: Option<&str>,
        state: JobState,
        mut each: impl FnMut(&Vec<JobId>) -> Result<()>,
    ) -> Result<()> {
        let mut after: JobId = 0;
        loop {
            let ids: Vec<JobId> = self.read("picking jobs", |db| {
                Ok(db
                    .query(
                        PICK_JOBS,
                        &[
                            &state.as_str(),
                            &after,
                            &selection.queue,
                            &selection.kind,
                            &selection.tenant,
                            &pattern,
                            &BULK_BATCH_SIZE,
                        ],
                    )?
                    .iter()
                    .map(|r| r.get(0))
                    .collect())
            })?;
            let Some(&last) = ids.last() else {
                return Ok(());
            };
            after = last;
            each(&ids)?;
            if (ids.len() as i64) < BULK_BATCH_SIZE {
                return Ok(());
            }
        }
    }

    pub fn get(&self, id: JobId) -> Result<JobInfo> {
        self.read("get", |db| {
            let r = db
                .query_opt(GET_JOB, &[&id])?
                .ok_or(Error::NotFound { job_id: id })?;
            let mut job = JobInfo {
                id: r.get(0),
                queue: r.get(1),
                kind: r.get(2),
                state: r.get::<_, &str>(3).parse()?,
                payload: json(r.get(4)),
                priority: r.get(5),
                run_at: r.get(6),
                attempts: r.get(7),
                max_attempts: r.get(8),
                attempt_limit: r.get(9),
                backoff: Backoff {
                    base_ms: r.get(10),
                    max_ms: r.get(11),
                },
                timeout_ms: r.get(12),
                unique_key: r.get(13),
                tenant: r.get(14),
                worker: r.get(15),
                lease_expires_at: r.get(16),
                cancel_requested: r.get(17),
                progress: Progress {
                    percent: r.get(18),
                    stage: r.get(19),
                    detail: r.get(20),
                },
                result: r.get::<_, Option<&str>>(21).map(json),
                last_error: r.get(22),
                created_at: r.get(23),
                started_at: r.get(24),
                finished_at: r.get(25),
                notify: notify::parse_stored(r.get(26)),
                attempt_log: Vec::new(),
                progress_log: Vec::new(),
            };
            job.attempt_log = db
                .query(GET_ATTEMPTS, &[&id])?
                .iter()
                .map(|r| AttemptInfo {
                    attempt: r.get(0),
                    worker: r.get(1),
                    started_at: r.get(2),
                    finished_at: r.get(3),
                    outcome: r.get(4),
                    error: r.get(5),
                })
                .collect();
            job.progress_log = db
                .query(GET_PROGRESS, &[&id, &PROGRESS_LOG_KEPT])?
                .iter()
                .rev()
                .map(|r| ProgressEntry {
                    attempt: r.get(0),
                    at: r.get(1),
                    percent: r.get(2),
                    stage: r.get(3),
                    detail: r.get(4),
                })
                .collect();
            Ok(job)
        })
    }

    pub fn list(&self, filter: &ListFilter) -> Result<Vec<JobSummary>> {
        if let Some(q) = &filter.queue {
            validate_name("queue", q)?;
        }
        let limit = filter.limit.unwrap_or(100);
        if !(1..=10_000).contains(&limit) {
            return Err(Error::invalid(
                "limit",
                format!("{limit} is not between 1 and 10000"),
            ));
        }
        let pattern = error_pattern(filter.error_contains.as_deref());
        let payload = filter
            .payload
            .as_deref()
            .map(PayloadMatch::parse)
            .transpose()?;
        let (path, value) = match &payload {
            Some(p) => (Some(p.path.clone()), Some(p.value.clone())),
            None => (None, None),
        };
        self.read("list", |db| {
            db.query(
                LIST_JOBS,
                &[
                    &filter.queue,
                    &filter.state.map(JobState::as_str),
                    &filter.kind,
                    &filter.tenant,
                    &filter.before_id,
                    &limit,
                    &pattern,
                    &path,
                    &value,
                    &filter.after_id,
                ],
            )?
            .iter()
            .map(summary_row)
            .collect()
        })
    }

    /// Counts per queue and state, the oldest ready job and the live
    /// workers, from one snapshot (a repeatable-read transaction).
    pub fn stats(&self) -> Result<Stats> {
        let now = self.now_param();
        let live = duration_ms(self.options().worker_liveness);
        self.write("stats", |db| {
            db.client
                .batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
            let at: Millis = db.query_one(NOW, &[&now])?.get(0);
            let mut queues: BTreeMap<String, QueueStats> = BTreeMap::new();
            for r in db.query(COUNTS, &[])? {
                let name: &str = r.get(0);
                let q = queues
                    .entry(name.to_string())
                    .or_insert_with(|| QueueStats::named(name));
                let n: i64 = r.get(2);
                match r.get::<_, &str>(1) {
                    "scheduled" => {
                        q.scheduled = n;
                        q.failed += r.get::<_, i64>(3);
                    }
                    "ready" => {
                        q.ready = n;
                        let earliest: Option<Millis> = r.get(5);
                        q.oldest_ready_age_ms = earliest.map(|e| (at - e).max(0));
                    }
                    "running" => q.running = n,
                    "succeeded" => {
                        q.succeeded = n;
                        q.succeeded_run_ms = r.get(4);
                    }
                    "dead" => {
                        q.dead = n;
                        q.failed += n;
                    }
                    _ => q.cancelled = n,
                }
            }
            for r in db.query(PURGED_SUCCEEDED, &[])? {
                let name: &str = r.get(0);
                let q = queues
                    .entry(name.to_string())
                    .or_insert_with(|| QueueStats::named(name));
                q.succeeded_total += r.get::<_, i64>(1);
                q.succeeded_total_run_ms += r.get::<_, i64>(2);
            }
            for q in queues.values_mut() {
                q.succeeded_total += q.succeeded;
                q.succeeded_total_run_ms += q.succeeded_run_ms;
            }
            for r in db.query(QUEUE_SETTINGS, &[])? {
                let name: &str = r.get(0);
                let q = queues
                    .entry(name.to_string())
                    .or_insert_with(|| QueueStats::named(name));
                q.paused = r.get(1);
                q.concurrency = r.get(2);
            }
            let live_workers = db.query_one(LIVE_WORKERS, &[&now, &live])?.get(0);
            Ok(Stats {
                queues: queues.into_values().collect(),
                live_workers,
                finished_age_ms: 0,
            })
        })
    }

    /// [`PgStore::stats`]: PostgreSQL counts a million jobs by hash in a
    /// fraction of the file's time, and every host's counts change, so
    /// nothing is reused.
    pub fn stats_recent(&self) -> Result<Stats> {
        self.stats()
    }

    /// Finished tries per (queue, outcome), as the file counts them: the
    /// succeeded ones from `stats`.
    pub fn try_totals(&self, stats: &Stats) -> Result<TryTotals> {
        let mut totals = TryTotals::new();
        for r in self.read("try totals", |db| db.query(TRY_TOTALS, &[]))? {
            let t = totals.entry((r.get(0), r.get(1))).or_default();
            t.0 += r.get::<_, i64>(2);
            t.1 += r.get::<_, i64>(3);
        }
        for q in stats.queues.iter().filter(|q| q.succeeded_total > 0) {
            let t = totals
                .entry((q.queue.clone(), "succeeded".to_string()))
                .or_default();
            t.0 += q.succeeded_total;
            t.1 += q.succeeded_total_run_ms;
        }
        Ok(totals)
    }

    pub fn pause(&self, queue: &str) -> Result<()> {
        self.set_paused(queue, true)
    }

    pub fn resume(&self, queue: &str) -> Result<()> {
        self.set_paused(queue, false)
    }

    fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        validate_name("queue", queue)?;
        let now = self.now_param();
        self.write("pause/resume", |db| {
            db.execute(SET_PAUSED, &[&now, &queue, &paused])?;
            db.query_one(NOTIFY_WORK, &[])?;
            Ok(())
        })?;
        tracing::info!(queue, paused, "queue paused state changed");
        self.notify_work();
        Ok(())
    }

    pub fn knows_queue(&self, queue: &str) -> Result<bool> {
        validate_name("queue", queue)?;
        self.read("looking up a queue", |db| {
            Ok(db.query_one(QUEUE_KNOWN, &[&queue])?.get(0))
        })
    }

    pub fn set_concurrency(&self, queue: &str, limit: Option<i64>) -> Result<()> {
        validate_name("queue", queue)?;
        if let Some(n) = limit {
            if n < 1 {
                return Err(Error::invalid("concurrency", format!("{n} is less than 1")));
            }
        }
        let now = self.now_param();
        self.write("set_concurrency", |db| {
            db.execute(SET_CONCURRENCY, &[&now, &queue, &limit])?;
            db.query_one(NOTIFY_WORK, &[])?;
            Ok(())
        })?;
        tracing::info!(queue, limit, "queue concurrency limit changed");
        self.notify_work();
        Ok(())
    }

    pub fn live_workers(&self) -> Result<i64> {
        let now = self.now_param();
        let live = duration_ms(self.options().worker_liveness);
        self.read("live workers", |db| {
            Ok(db.query_one(LIVE_WORKERS, &[&now, &live])?.get(0))
        })
    }

    pub fn live_work(&self) -> Result<LiveWork> {
        let now = self.now_param();
        let live = duration_ms(self.options().worker_liveness);
        self.read("live work", |db| {
            let mut work = LiveWork::default();
            for r in db.query(LIVE_WORK, &[&now, &live])? {
                let names = |i| -> Vec<String> {
                    serde_json::from_str(r.get::<_, &str>(i)).unwrap_or_default()
                };
                work.workers.push(LiveWorker {
                    queues: names(0).into_iter().collect(),
                    kinds: names(1).into_iter().collect(),
                });
            }
            Ok(work)
        })
    }

    pub fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let now = self.now_param();
        let live = duration_ms(self.options().worker_liveness);
        self.read("workers", |db| {
            Ok(db
                .query(WORKER_LIST, &[&now, &live])?
                .iter()
                .map(|r| {
                    let names = |i| -> Vec<String> {
                        serde_json::from_str(r.get::<_, &str>(i)).unwrap_or_default()
                    };
                    WorkerInfo {
                        id: r.get(0),
                        host: r.get(1),
                        pid: r.get(2),
                        queues: names(3),
                        kinds: names(4),
                        started_at: r.get(5),
                        last_heartbeat_at: r.get(6),
                        running: r.get(7),
                    }
                })
                .collect())
        })
    }

    pub fn register_worker(
        &self,
        worker: &str,
        host: &str,
        pid: u32,
        queues: &[&str],
        kinds: &[&str],
    ) -> Result<()> {
        let queues = crate::store::workers::json_list("queues", &queues)?;
        let kinds = crate::store::workers::json_list("kinds", &kinds)?;
        let now = self.now_param();
        self.read("register_worker", |db| {
            db.execute(
                REGISTER_WORKER,
                &[&now, &worker, &host, &(pid as i64), &queues, &kinds],
            )
            .map(drop)
        })
    }

    pub fn worker_heartbeat(&self, worker: &str) -> Result<()> {
        let now = self.now_param();
        self.read("worker_heartbeat", |db| {
            db.execute(WORKER_HEARTBEAT, &[&now, &worker]).map(drop)
        })
    }

    pub fn deregister_worker(&self, worker: &str) -> Result<()> {
        self.read("deregister_worker", |db| {
            db.execute(DEREGISTER_WORKER, &[&worker]).map(drop)
        })
    }

    pub fn add_api_token(&self, name: &str, role: Role, sha256: &[u8; 32]) -> Result<()> {
        validate_token_name(name)?;
        let now = self.now_param();
        let hash: &[u8] = &sha256[..];
        let added = self.read("adding an API token", |db| {
            db.execute(ADD_TOKEN, &[&now, &name, &role.as_str(), &hash])
        })?;
        if added == 0 {
            return Err(Error::invalid(
                "token name",
                format!("{name:?} is taken (jobd token revoke {name} first)"),
            ));
        }
        Ok(())
    }

    pub fn api_token(&self, sha256: &[u8; 32]) -> Result<Option<(String, Role)>> {
        let hash: &[u8] = &sha256[..];
        let row = self.read("looking up an API token", |db| {
            db.query_opt(TOKEN_BY_HASH, &[&hash])
        })?;
        Ok(row.and_then(|r| {
            let role: &str = r.get(1);
            Role::parse(role).ok().map(|role| (r.get(0), role))
        }))
    }

    pub fn api_tokens(&self) -> Result<Vec<TokenInfo>> {
        self.read("listing API tokens", |db| {
            Ok(db
                .query(LIST_TOKENS, &[])?
                .iter()
                .map(|r| TokenInfo {
                    name: r.get(0),
                    role: Role::parse(r.get(1)).unwrap_or(Role::Worker),
                    created_at: r.get(2),
                })
                .collect())
        })
    }

    pub fn revoke_api_token(&self, name: &str) -> Result<bool> {
        self.read("revoking an API token", |db| {
            Ok(db.execute(REVOKE_TOKEN, &[&name])? > 0)
        })
    }
}

/// Revive job `id` inside a savepoint: false (and nothing changed) when
/// its unique key is taken by a live job.
fn revive_one(
    db: &mut crate::store::postgres::Db<'_, postgres::Transaction<'_>>,
    id: JobId,
    now: Option<Millis>,
) -> Result<bool> {
    db.client.batch_execute("SAVEPOINT revive")?;
    match db.execute(REVIVE, &[&now, &id]) {
        Ok(_) => {
            db.client.batch_execute("RELEASE SAVEPOINT revive")?;
            Ok(true)
        }
        Err(Error::Postgres { code, .. }) if code == UNIQUE_VIOLATION => {
            db.client.batch_execute("ROLLBACK TO SAVEPOINT revive")?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// A row of [`LIST_JOBS`] or [`DEAD_SINCE`] (the same columns).
fn summary_row(r: &postgres::Row) -> Result<JobSummary> {
    Ok(JobSummary {
        id: r.get(0),
        queue: r.get(1),
        kind: r.get(2),
        state: r.get::<_, &str>(3).parse()?,
        priority: r.get(4),
        attempts: r.get(5),
        attempt_limit: r.get(6),
        tenant: r.get(7),
        progress_percent: r.get(8),
        progress_stage: r.get(9),
        last_error: r.get(10),
        run_at: r.get(11),
        created_at: r.get(12),
        finished_at: r.get(13),
        started_at: r.get(14),
        worker: r.get(15),
    })
}

/// A JSON column: text that is not JSON comes back as a JSON string of it.
fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_string()))
}

const GET_STATE: &str = "SELECT value, updated_at, expires_at FROM state WHERE key = $1";

const PUT_STATE: &str = "
INSERT INTO state (key, value, updated_at, expires_at) VALUES ($2, $3, jobd_time($1), $4)
ON CONFLICT (key) DO UPDATE
SET value = excluded.value, updated_at = excluded.updated_at, expires_at = excluded.expires_at";

const PURGE_STATE: &str = "DELETE FROM state WHERE expires_at <= $2 AND key LIKE $1 ESCAPE '\\'";

impl PgStore {
    pub fn state_get(&self, key: &str) -> Result<Option<crate::store::StateEntry>> {
        crate::store::state::check_key(key)?;
        let row = self.read("reading state", |db| db.query_opt(GET_STATE, &[&key]))?;
        Ok(row.map(|r| crate::store::StateEntry {
            value: r.get(0),
            updated_at: r.get(1),
            expires_at: r.get(2),
        }))
    }

    pub fn state_put(&self, key: &str, value: &str, expires_at: Option<Millis>) -> Result<()> {
        crate::store::state::check_key(key)?;
        let now = self.now_param();
        self.read("writing state", |db| {
            db.execute(PUT_STATE, &[&now, &key, &value, &expires_at])
                .map(drop)
        })
    }

    pub fn state_purge(&self, prefix: &str, now: Millis) -> Result<usize> {
        let pattern = crate::store::state::prefix_pattern(prefix);
        self.read("purging state", |db| {
            Ok(db.execute(PURGE_STATE, &[&pattern, &now])? as usize)
        })
    }
}

const GET_STATE_LOCKED: &str = "SELECT value FROM state WHERE key = $1 FOR UPDATE";

/// A new key (a concurrent swap that inserted it first wins: nothing here).
const INSERT_STATE: &str = "
INSERT INTO state (key, value, updated_at) VALUES ($2, $3, jobd_time($1))
ON CONFLICT (key) DO NOTHING";

const SET_STATE: &str =
    "UPDATE state SET value = $3, updated_at = jobd_time($1), expires_at = NULL WHERE key = $2";

const DEAD_SINCE: &str = "
SELECT id, queue, kind, state, priority, attempts, attempt_limit, tenant, progress_percent,
       progress_stage, last_error, run_at, created_at, finished_at, started_at, lease_owner
FROM jobs
WHERE state = 'dead' AND (finished_at, id) > ($1, $2) AND finished_at <= $3
ORDER BY finished_at, id";

impl PgStore {
    pub fn state_swap(
        &self,
        key: &str,
        expected: Option<&str>,
        value: &str,
        job: Option<&crate::store::NewJob>,
    ) -> Result<crate::store::Swap> {
        use crate::store::Swap;
        crate::store::state::check_key(key)?;
        let max = self.options().max_payload_bytes;
        let payload = job.map(|j| j.validate(max)).transpose()?;
        let now = self.now_param();
        let swap = self.write("swapping state", |db| {
            let current: Option<String> =
                db.query_opt(GET_STATE_LOCKED, &[&key])?.map(|r| r.get(0));
            if current.as_deref() != expected {
                return Ok(Swap::Changed);
            }
            let written = match current {
                None => db.execute(INSERT_STATE, &[&now, &key, &value])?,
                Some(_) => db.execute(SET_STATE, &[&now, &key, &value])?,
            };
            if written == 0 {
                return Ok(Swap::Changed);
            }
            let job_id = match (job, payload) {
                (Some(j), Some(p)) => Some(crate::store::postgres::jobs::insert_validated(
                    db, j, p, now,
                )?),
                _ => None,
            };
            Ok(Swap::Done { job_id })
        })?;
        if matches!(swap, Swap::Done { job_id: Some(_) }) {
            self.notify_work();
        }
        Ok(swap)
    }

    pub fn dead_since(&self, after: (Millis, JobId), until: Millis) -> Result<Vec<JobSummary>> {
        self.read("reading dead jobs", |db| {
            db.query(DEAD_SINCE, &[&after.0, &after.1, &until])?
                .iter()
                .map(summary_row)
                .collect()
        })
    }
}
