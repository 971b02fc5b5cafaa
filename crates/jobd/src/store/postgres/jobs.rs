//! Enqueue, claims, leases and the ends of a try on PostgreSQL.  Every
//! statement's `$1` is the time (`NULL` for the database's clock; see the
//! [module](super) doc), read through `jobd_time($1)`.

use std::time::Duration;

use postgres::Transaction;

use crate::clock::{duration_ms, Millis};
use crate::error::{Error, Result};
use crate::store::ack::{timed_out, Ack, AckOutcome, HeldTry};
use crate::store::enqueue::validate_batch;
use crate::store::job::{
    validate_name, ClaimedJob, Done, FailOutcome, Heartbeat, JobId, NewJob, Progress, ReapReport,
    RunAt,
};
use crate::store::lease::{
    claim_plan, plan_end, reaped_end, CompleteBatch, Ending, RunningTry, OVERDUE_GRACE,
};
use crate::store::notify;
use crate::store::postgres::{Db, PgStore, NOTIFY_WORK};
use crate::store::rollup::{Ended, Tally};
use crate::store::Backoff;

/// One job, unless a live job holds its unique key (then nothing: the
/// holder's id is read next), and the wake-up of listening workers — one
/// statement, its own transaction when alone.  `$1` time, `$2` run_at or
/// NULL (now), `$3` a delay in ms added to now.
const INSERT_JOB: &str = "
WITH ins AS (
INSERT INTO jobs (queue, kind, payload, state, priority, run_at, max_attempts, attempt_limit,
                  backoff_base_ms, backoff_max_ms, timeout_ms, unique_key, tenant, created_at, notify)
SELECT $4, $5, $6, CASE WHEN t.run_at > t.now THEN 'scheduled' ELSE 'ready' END, $7, t.run_at,
       $8, $8, $9, $10, $11, $12, $13, t.now, $14
FROM (SELECT jobd_time($1) AS now, coalesce($2, jobd_time($1) + $3) AS run_at) AS t
ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'ready', 'running')
DO NOTHING
RETURNING id)
SELECT id, pg_notify('jobd_work', '') FROM ins";

/// Many jobs in one statement, from arrays (one element per job, in order);
/// ids come back in the order of the rows.
const INSERT_JOBS: &str = "
INSERT INTO jobs (queue, kind, payload, state, priority, run_at, max_attempts, attempt_limit,
                  backoff_base_ms, backoff_max_ms, timeout_ms, tenant, created_at, notify)
SELECT r.queue, r.kind, r.payload,
       CASE WHEN coalesce(r.run_at, jobd_time($1) + r.delay) > jobd_time($1)
            THEN 'scheduled' ELSE 'ready' END,
       r.priority, coalesce(r.run_at, jobd_time($1) + r.delay), r.max_attempts, r.max_attempts,
       r.backoff_base_ms, r.backoff_max_ms, r.timeout_ms, r.tenant, jobd_time($1), r.notify
FROM unnest($2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], $7::int8[], $8::int8[],
            $9::int8[], $10::int8[], $11::int8[], $12::text[], $13::text[])
     WITH ORDINALITY AS r(queue, kind, payload, priority, run_at, delay, max_attempts,
                          backoff_base_ms, backoff_max_ms, timeout_ms, tenant, notify, n)
ORDER BY r.n
RETURNING id";

const LIVE_JOB_BY_KEY: &str = "
SELECT id FROM jobs WHERE unique_key = $1 AND state IN ('scheduled', 'ready', 'running')";

/// Due delayed jobs and retries become ready (rows another claimer is
/// promoting are left to it).
const PROMOTE_DUE: &str = "
UPDATE jobs SET state = 'ready'
WHERE id IN (SELECT id FROM jobs WHERE state = 'scheduled' AND run_at <= jobd_time($1)
             FOR UPDATE SKIP LOCKED)";

/// The limited or paused queues among `$1`, locked until this claim
/// commits: claims of a limited queue count its running jobs one after the
/// other, on every host.
const LOCK_LIMITED: &str = "
SELECT name FROM queues
WHERE name = ANY($1) AND (concurrency IS NOT NULL OR paused)
ORDER BY name
FOR UPDATE";

/// The claim of one queue: `$2` worker, `$3` lease in ms, `$4` queue, `$5`
/// at most this many — and no more than the queue's room.
const CLAIM: &str = "
UPDATE jobs
SET state = 'running',
    lease_owner = $2,
    lease_token = (random() * 9.2e18)::int8,
    lease_expires_at = jobd_time($1) + $3,
    attempts = attempts + 1,
    started_at = jobd_time($1)
WHERE id IN (
    SELECT id FROM jobs
    WHERE state = 'ready' AND queue = $4
    ORDER BY priority, run_at, id
    LIMIT coalesce(
        (SELECT CASE WHEN paused THEN 0
                     WHEN concurrency IS NULL THEN $5
                     ELSE least($5, greatest(0, concurrency - (
                         SELECT count(*) FROM jobs WHERE state = 'running' AND queue = $4)))
                END
         FROM queues WHERE name = $4),
        $5)
    FOR UPDATE SKIP LOCKED)
RETURNING id, kind, payload, priority, attempts, attempt_limit, timeout_ms, tenant, lease_token,
          lease_expires_at, started_at, run_at";

/// Finish tries that succeeded (arrays of ids, tokens, results), each only
/// while its lease is held; the ids finished come back.
const COMPLETE_MANY: &str = "
UPDATE jobs
SET state = 'succeeded', result = d.result, finished_at = jobd_time($1), progress_percent = 100,
    lease_token = NULL, lease_expires_at = NULL
FROM unnest($2::int8[], $3::int8[], $4::text[]) AS d(id, token, result)
WHERE jobs.id = d.id AND jobs.lease_token = d.token AND jobs.state = 'running'
RETURNING jobs.id, jobs.queue, jobs.started_at, jobs.run_at, jobs.finished_at";

/// A completion from a remote worker, refused past the try's deadline.
const COMPLETE_IN_TIME: &str = "
UPDATE jobs
SET state = 'succeeded', result = $4, finished_at = jobd_time($1), progress_percent = 100,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = $2 AND lease_token = $3 AND state = 'running'
  AND (timeout_ms IS NULL OR started_at + timeout_ms > jobd_time($1))
RETURNING queue, started_at, run_at, finished_at";

const OVERDUE_TRY: &str = "
SELECT timeout_ms FROM jobs
WHERE id = $2 AND lease_token = $3 AND state = 'running'
  AND timeout_ms IS NOT NULL AND started_at + timeout_ms <= jobd_time($1)";

const HEARTBEAT: &str = "
UPDATE jobs SET lease_expires_at = jobd_time($1) + $4
WHERE id = $2 AND lease_token = $3 AND state = 'running'
RETURNING cancel_requested, lease_expires_at";

const HEARTBEAT_MANY: &str = "
UPDATE jobs SET lease_expires_at = jobd_time($1) + $4
FROM unnest($2::int8[], $3::int8[]) AS held(id, token)
WHERE jobs.id = held.id AND jobs.lease_token = held.token AND jobs.state = 'running'
RETURNING jobs.id, jobs.cancel_requested, jobs.started_at + jobs.timeout_ms";

const CANCEL_REQUESTED: &str = "
SELECT jobs.id
FROM unnest($1::int8[], $2::int8[]) AS held(id, token)
JOIN jobs ON jobs.id = held.id
WHERE jobs.lease_token = held.token AND jobs.state = 'running' AND jobs.cancel_requested";

const NEXT_RUN_AT: &str = "SELECT min(run_at) FROM jobs WHERE state = 'scheduled'";

const CLAIMABLE: &str = "
SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'ready' AND queue = ANY($2))
    OR EXISTS (SELECT 1 FROM jobs WHERE state = 'scheduled' AND run_at <= jobd_time($1))";

/// The running try, locked, and the statement's time.
const RUNNING_TRY: &str = "
SELECT attempts, attempt_limit, backoff_base_ms, backoff_max_ms, lease_owner, started_at,
       cancel_requested, jobd_time($1), queue, run_at
FROM jobs
WHERE id = $2 AND lease_token = $3 AND state = 'running'
FOR UPDATE";

const END_TRY: &str = "
UPDATE jobs
SET state = $2, run_at = $3, last_error = coalesce($4, last_error), attempt_limit = $5,
    finished_at = $6, lease_token = NULL, lease_expires_at = NULL
WHERE id = $1";

const RECORD_ATTEMPT: &str = "
INSERT INTO tries (job_id, attempt, worker, started_at, finished_at, outcome, error)
VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Progress of the held try, logged with the statement's time.
const SET_PROGRESS: &str = "
WITH p AS (
    UPDATE jobs SET progress_percent = $4, progress_stage = $5, progress_detail = $6
    WHERE id = $2 AND lease_token = $3 AND state = 'running'
    RETURNING id, attempts)
INSERT INTO progress (job_id, attempt, at, percent, stage, detail)
SELECT id, attempts, jobd_time($1), $4, $5, $6 FROM p
RETURNING job_id";

/// Running tries past their deadline by more than `$2` ms.
const OVERDUE: &str = "
SELECT id, lease_token, timeout_ms FROM jobs
WHERE state = 'running' AND timeout_ms IS NOT NULL
  AND started_at + timeout_ms + $2 <= jobd_time($1)
FOR UPDATE SKIP LOCKED";

const REAP_RECORD: &str = "
INSERT INTO tries (job_id, attempt, worker, started_at, finished_at, outcome, error)
SELECT id, attempts, lease_owner, started_at, jobd_time($1), 'lost',
       'lease expired: worker ' || coalesce(lease_owner, '?') || ' stopped heartbeating'
FROM jobs
WHERE id = ANY($2)";

/// Expired leases, locked (rows another reaper holds are its).
const EXPIRED: &str = "
SELECT id FROM jobs
WHERE state = 'running' AND lease_expires_at <= jobd_time($1)
FOR UPDATE SKIP LOCKED";

const REAP_REQUEUE: &str = "
UPDATE jobs
SET state = CASE WHEN cancel_requested THEN 'cancelled'
                 WHEN attempts >= attempt_limit THEN 'dead'
                 ELSE 'ready' END,
    last_error = 'lease expired: worker ' || coalesce(lease_owner, '?') || ' stopped heartbeating'
                 || CASE WHEN NOT cancel_requested AND attempts >= attempt_limit
                         THEN ' on try ' || attempts || ' of ' || attempt_limit || '; out of tries'
                         ELSE '' END,
    finished_at = CASE WHEN cancel_requested OR attempts >= attempt_limit THEN jobd_time($1) END,
    lease_token = NULL,
    lease_expires_at = NULL
WHERE id = ANY($2)
RETURNING id, state, queue, jobd_time($1)";

/// Add a tally's counts to a queue's minute (see [`rollup`](crate::store::rollup)).
const ADD_ROLLUP: &str = "
INSERT INTO rollups (queue, minute, succeeded, failed, dead, cancelled, run_ms, wait_ms, run_10ms, run_50ms, run_100ms, run_250ms, run_500ms, run_1s, run_2500ms, run_5s, run_10s, run_30s, run_1m, run_5m, run_more, wait_10ms, wait_50ms, wait_100ms, wait_250ms, wait_500ms, wait_1s, wait_2500ms, wait_5s, wait_10s, wait_30s, wait_1m, wait_5m, wait_more)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34)
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

type Tx<'a, 'b> = Db<'a, Transaction<'b>>;

/// Write what a transaction's ended tries add to the rollups.
fn write_tally(db: &mut Tx, tally: &Tally) -> Result<()> {
    for r in tally.rows() {
        let v = r.values();
        let mut p: Vec<&(dyn postgres::types::ToSql + Sync)> = Vec::with_capacity(2 + v.len());
        p.push(&r.queue);
        p.push(&r.minute);
        p.extend(v.iter().map(|x| x as &(dyn postgres::types::ToSql + Sync)));
        db.execute(ADD_ROLLUP, &p)?;
    }
    Ok(())
}

impl PgStore {
    /// Enqueue one job (see [`SqliteStore::enqueue`](crate::SqliteStore::enqueue)).
    pub fn enqueue(&self, job: &NewJob) -> Result<JobId> {
        let payload = job.validate(self.options().max_payload_bytes)?;
        let now = self.now_param();
        let id = self.read("enqueue", |db| insert_validated(db, job, payload, now))?;
        tracing::debug!(job_id = id, queue = %job.queue, kind = %job.kind, "enqueued");
        self.notify_work();
        Ok(id)
    }

    /// Enqueue many jobs in one transaction; ids in the order given.
    pub fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<JobId>> {
        let payloads = validate_batch(jobs, self.options().max_payload_bytes)?;
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now_param();
        let ids = self.write("enqueue_many", |db| {
            let mut ids = Vec::with_capacity(jobs.len());
            // Runs without unique keys in one statement each; a job with a
            // key alone (its conflict hands back the holder).
            let mut i = 0;
            while i < jobs.len() {
                if jobs[i].unique_key.is_some() {
                    ids.push(insert_validated(db, &jobs[i], payloads[i], now)?);
                    i += 1;
                    continue;
                }
                let run = jobs[i..]
                    .iter()
                    .take_while(|j| j.unique_key.is_none())
                    .count();
                ids.extend(insert_run(
                    db,
                    &jobs[i..i + run],
                    &payloads[i..i + run],
                    now,
                )?);
                i += run;
            }
            db.query_one(NOTIFY_WORK, &[])?;
            Ok(ids)
        })?;
        tracing::debug!(count = jobs.len(), "enqueued batch");
        self.notify_work();
        Ok(ids)
    }

    /// Completions and the next claims in one transaction (one statement
    /// for all the completions, one per queue claimed from).
    pub fn exchange(
        &self,
        done: &[Done],
        worker: &str,
        claims: &[(&str, usize)],
        most: usize,
        lease: Duration,
    ) -> Result<(CompleteBatch, Vec<ClaimedJob>)> {
        let (claims, most) = claim_plan(worker, claims, most)?;
        let mut seen = std::collections::HashSet::new();
        let done: Vec<&Done> = done
            .iter()
            .filter(|d| seen.insert((d.id, d.token)))
            .collect();
        if done.is_empty() && most == 0 {
            return Ok((CompleteBatch::default(), Vec::new()));
        }
        let now = self.now_param();
        let lease_ms = duration_ms(lease);
        let mut notified = 0;
        let (lost, mut claimed) = self.write("complete_and_claim", |db| {
            let mut lost = Vec::new();
            if !done.is_empty() {
                let ids: Vec<JobId> = done.iter().map(|d| d.id).collect();
                let tokens: Vec<i64> = done.iter().map(|d| d.token).collect();
                let results: Vec<Option<&str>> = done.iter().map(|d| d.result.as_deref()).collect();
                let mut tally = Tally::default();
                let finished: std::collections::HashSet<JobId> = db
                    .query(COMPLETE_MANY, &[&now, &ids, &tokens, &results])?
                    .iter()
                    .map(|r| {
                        tally.ended(r.get(1), r.get(4), Ended::Succeeded, r.get(2), r.get(3));
                        r.get(0)
                    })
                    .collect();
                write_tally(db, &tally)?;
                lost = ids
                    .into_iter()
                    .filter(|id| !finished.contains(id))
                    .collect();
                notified = enqueue_ended(db, now)?;
            }
            let claimed = claim_in(db, worker, &claims, most, now, lease_ms)?;
            Ok((lost, claimed))
        })?;
        claimed.sort_by_key(|j| (j.priority, j.id));
        for job in &claimed {
            tracing::debug!(job_id = job.id, queue = %job.queue, kind = %job.kind, attempt = job.attempt, worker, "claimed");
        }
        if notified > 0 {
            self.notify_work();
        }
        Ok((
            CompleteBatch {
                completed: done.len() - lost.len(),
                lost,
            },
            claimed,
        ))
    }

    pub fn heartbeat(&self, id: JobId, token: i64, lease: Duration) -> Result<Heartbeat> {
        let now = self.now_param();
        let row = self.read("heartbeat", |db| {
            db.query_opt(HEARTBEAT, &[&now, &id, &token, &duration_ms(lease)])
        })?;
        match row {
            Some(r) => Ok(Heartbeat {
                cancel_requested: r.get(0),
                lease_expires_at: r.get(1),
            }),
            None => Err(Error::LeaseLost { job_id: id }),
        }
    }

    pub fn heartbeat_many(
        &self,
        held: &[(JobId, i64)],
        lease: Duration,
    ) -> Result<Vec<(JobId, bool)>> {
        Ok(self
            .heartbeat_held(held, lease)?
            .into_iter()
            .map(|h| (h.id, h.cancel_requested))
            .collect())
    }

    pub fn heartbeat_held(&self, held: &[(JobId, i64)], lease: Duration) -> Result<Vec<HeldTry>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, tokens): (Vec<JobId>, Vec<i64>) = held.iter().copied().unzip();
        let now = self.now_param();
        let rows = self.read("heartbeat", |db| {
            db.query(HEARTBEAT_MANY, &[&now, &ids, &tokens, &duration_ms(lease)])
        })?;
        Ok(rows
            .iter()
            .map(|r| HeldTry {
                id: r.get(0),
                cancel_requested: r.get(1),
                deadline: r.get(2),
            })
            .collect())
    }

    pub fn cancel_requested(&self, held: &[(JobId, i64)]) -> Result<Vec<JobId>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, tokens): (Vec<JobId>, Vec<i64>) = held.iter().copied().unzip();
        let rows = self.read("cancel_requested", |db| {
            db.query(CANCEL_REQUESTED, &[&ids, &tokens])
        })?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub fn next_run_at(&self) -> Result<Option<Millis>> {
        self.read("next_run_at", |db| {
            Ok(db.query_one(NEXT_RUN_AT, &[])?.get(0))
        })
    }

    pub fn claimable(&self, queues: &[&str]) -> Result<bool> {
        for q in queues {
            validate_name("queue", q)?;
        }
        let now = self.now_param();
        self.read("claimable", |db| {
            Ok(db.query_one(CLAIMABLE, &[&now, &queues])?.get(0))
        })
    }

    pub fn complete(
        &self,
        id: JobId,
        token: i64,
        result: Option<&serde_json::Value>,
    ) -> Result<()> {
        let result = result.map(|v| v.to_string());
        let done = Done { id, token, result };
        let (batch, _) = self.exchange(&[done], "", &[], 0, Duration::ZERO)?;
        if batch.completed == 0 {
            return Err(Error::LeaseLost { job_id: id });
        }
        tracing::debug!(job_id = id, "completed");
        Ok(())
    }

    pub fn fail(&self, id: JobId, token: i64, error: &str, retryable: bool) -> Result<FailOutcome> {
        self.end_try(id, token, Ending::Failed { error, retryable })
    }

    pub fn release(&self, id: JobId, token: i64) -> Result<()> {
        let ending = Ending::Released {
            after_ms: 0,
            note: None,
        };
        self.end_try(id, token, ending).map(drop)
    }

    pub fn release_for(&self, id: JobId, token: i64, after: Duration, note: &str) -> Result<()> {
        let ending = Ending::Released {
            after_ms: duration_ms(after),
            note: Some(note),
        };
        self.end_try(id, token, ending).map(drop)
    }

    pub fn cancelled(&self, id: JobId, token: i64, reason: &str) -> Result<()> {
        self.end_try(id, token, Ending::Cancelled { reason })
            .map(drop)
    }

    fn end_try(&self, id: JobId, token: i64, ending: Ending<'_>) -> Result<FailOutcome> {
        let now = self.now_param();
        let mut notified = 0;
        let outcome = self.write("ending a try", |db| {
            let outcome = end_try_in(db, id, token, &ending, now)?;
            if matches!(outcome, FailOutcome::Retrying { .. }) {
                db.query_one(NOTIFY_WORK, &[])?;
            }
            notified = enqueue_ended(db, now)?;
            Ok(outcome)
        })?;
        tracing::debug!(job_id = id, ?outcome, "try ended");
        if matches!(outcome, FailOutcome::Retrying { .. }) || notified > 0 {
            self.notify_work();
        }
        Ok(outcome)
    }

    pub fn set_progress(&self, id: JobId, token: i64, progress: &Progress) -> Result<()> {
        crate::store::lease::check_progress(progress)?;
        let now = self.now_param();
        let p = progress;
        let row = self.read("set_progress", |db| {
            db.query_opt(
                SET_PROGRESS,
                &[&now, &id, &token, &p.percent, &p.stage, &p.detail],
            )
        })?;
        row.map(drop).ok_or(Error::LeaseLost { job_id: id })
    }

    pub fn ack_and_claim(
        &self,
        acks: &[(JobId, i64, Ack)],
        worker: &str,
        claims: &[(&str, usize)],
        most: usize,
        lease: Duration,
    ) -> Result<(Vec<AckOutcome>, Vec<ClaimedJob>)> {
        let (claims, most) = claim_plan(worker, claims, most)?;
        if acks.is_empty() && most == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let now = self.now_param();
        let lease_ms = duration_ms(lease);
        let mut notified = 0;
        let (outcomes, mut claimed) = self.write("ack_and_claim", |db| {
            let mut outcomes = Vec::with_capacity(acks.len());
            let mut tally = Tally::default();
            for (id, token, ack) in acks {
                outcomes.push(ack_in(db, *id, *token, ack, now, &mut tally)?);
            }
            write_tally(db, &tally)?;
            if outcomes
                .iter()
                .any(|o| matches!(o, AckOutcome::Retrying { .. } | AckOutcome::Released))
            {
                db.query_one(NOTIFY_WORK, &[])?;
            }
            if !acks.is_empty() {
                notified = enqueue_ended(db, now)?;
            }
            let claimed = claim_in(db, worker, &claims, most, now, lease_ms)?;
            Ok((outcomes, claimed))
        })?;
        claimed.sort_by_key(|j| (j.priority, j.id));
        let retrying = outcomes
            .iter()
            .any(|o| matches!(o, AckOutcome::Retrying { .. } | AckOutcome::Released));
        for ((id, _, _), outcome) in acks.iter().zip(&outcomes) {
            tracing::debug!(job_id = id, ?outcome, "try acknowledged");
        }
        if retrying || notified > 0 {
            self.notify_work();
        }
        Ok((outcomes, claimed))
    }

    /// Send back every running job whose lease expired, after failing tries
    /// past their deadline (see [`SqliteStore::reap`](crate::SqliteStore::reap)).
    /// Reapers on several hosts skip each other's rows.  No check for steps
    /// of the clock: the database's is the one clock of every lease.
    pub fn reap(&self) -> Result<ReapReport> {
        let now = self.now_param();
        let grace = duration_ms(OVERDUE_GRACE);
        let mut notified = 0;
        let report = self.write("reap", |db| {
            let mut report = ReapReport::default();
            let overdue: Vec<(JobId, i64, i64)> = db
                .query(OVERDUE, &[&now, &grace])?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            for (id, token, timeout_ms) in overdue {
                let error = format!("{}; its worker did not end it", timed_out(timeout_ms));
                let ending = Ending::Failed {
                    error: &error,
                    retryable: true,
                };
                end_try_in(db, id, token, &ending, now)?;
                report.timed_out.push(id);
            }
            let expired: Vec<JobId> = db
                .query(EXPIRED, &[&now])?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if !expired.is_empty() {
                db.execute(REAP_RECORD, &[&now, &expired])?;
                let mut tally = Tally::default();
                for r in db.query(REAP_REQUEUE, &[&now, &expired])? {
                    let (id, state): (JobId, &str) = (r.get(0), r.get(1));
                    match state {
                        "dead" => report.dead.push(id),
                        "cancelled" => report.cancelled.push(id),
                        _ => report.requeued.push(id),
                    }
                    if let Some(ended) = reaped_end(state) {
                        let at: Millis = r.get(3);
                        tally.ended(r.get(2), at, ended, None, None);
                    }
                }
                write_tally(db, &tally)?;
            }
            if !report.requeued.is_empty() || !report.timed_out.is_empty() {
                db.query_one(NOTIFY_WORK, &[])?;
            }
            notified = enqueue_ended(db, now)?;
            Ok(report)
        })?;
        if report.total() > 0 {
            tracing::warn!(
                requeued = report.requeued.len(),
                dead = report.dead.len(),
                cancelled = report.cancelled.len(),
                timed_out = report.timed_out.len(),
                "reaped jobs whose lease expired or whose timeout passed"
            );
        }
        if !report.requeued.is_empty() || !report.timed_out.is_empty() || notified > 0 {
            self.notify_work();
        }
        Ok(report)
    }
}

/// The values of one job's row that the inserts bind: run_at as a time or
/// a delay from the statement's time, the timeout, the notify list as stored.
fn row_times(job: &NewJob) -> (Option<Millis>, i64, Option<i64>, Option<String>) {
    let (at, delay) = match job.run_at {
        RunAt::Now => (None, 0),
        RunAt::At(at) => (Some(at), 0),
        RunAt::After(d) => (None, duration_ms(d)),
    };
    let notify = if job.notify.is_empty() {
        None
    } else {
        // Checked by `NewJob::validate` before any row is built.
        notify::stored_list(&job.notify).ok().flatten()
    };
    (at, delay, job.timeout.map(duration_ms), notify)
}

pub(super) fn insert_validated<C: postgres::GenericClient>(
    db: &mut Db<'_, C>,
    job: &NewJob,
    payload: &str,
    now: Option<Millis>,
) -> Result<JobId> {
    let (at, delay, timeout, notify) = row_times(job);
    let row = db.query_opt(
        INSERT_JOB,
        &[
            &now,
            &at,
            &delay,
            &job.queue,
            &job.kind,
            &payload,
            &job.priority,
            &job.max_attempts,
            &job.backoff.base_ms,
            &job.backoff.max_ms,
            &timeout,
            &job.unique_key,
            &job.tenant,
            &notify,
        ],
    )?;
    if let Some(r) = row {
        return Ok(r.get(0));
    }
    let key = job.unique_key.as_deref().unwrap_or_default();
    let existing: JobId = db.query_one(LIVE_JOB_BY_KEY, &[&key])?.get(0);
    tracing::debug!(
        job_id = existing,
        unique_key = key,
        "unique key already live; returning existing job"
    );
    Ok(existing)
}

fn insert_run(
    db: &mut Tx,
    jobs: &[NewJob],
    payloads: &[&str],
    now: Option<Millis>,
) -> Result<Vec<JobId>> {
    let n = jobs.len();
    let (mut queue, mut kind, mut payload) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut priority, mut run_at, mut delay, mut attempts) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut base, mut max, mut timeout, mut tenant, mut notify) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (job, p) in jobs.iter().zip(payloads) {
        let (at, d, t, nl) = row_times(job);
        queue.push(job.queue.as_str());
        kind.push(job.kind.as_str());
        payload.push(*p);
        priority.push(job.priority);
        run_at.push(at);
        delay.push(d);
        attempts.push(job.max_attempts);
        base.push(job.backoff.base_ms);
        max.push(job.backoff.max_ms);
        timeout.push(t);
        tenant.push(job.tenant.as_deref());
        notify.push(nl);
    }
    let rows = db.query(
        INSERT_JOBS,
        &[
            &now, &queue, &kind, &payload, &priority, &run_at, &delay, &attempts, &base, &max,
            &timeout, &tenant, &notify,
        ],
    )?;
    // RETURNING gives the rows in insert order, which follows ORDER BY n;
    // identity values are handed out in that order too.
    let mut ids: Vec<JobId> = rows.iter().map(|r| r.get(0)).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// The claims of a turn: due jobs promoted, limited queues locked, then up
/// to each queue's count, queues in order, at most `most` in all.
fn claim_in(
    db: &mut Tx,
    worker: &str,
    claims: &[(&str, i64)],
    most: i64,
    now: Option<Millis>,
    lease_ms: i64,
) -> Result<Vec<ClaimedJob>> {
    let mut claimed = Vec::new();
    if most <= 0 {
        return Ok(claimed);
    }
    db.execute(PROMOTE_DUE, &[&now])?;
    let names: Vec<&str> = claims.iter().map(|(q, _)| *q).collect();
    db.query(LOCK_LIMITED, &[&names])?;
    for (queue, want) in claims {
        let want = (*want).min(most - claimed.len() as i64);
        for r in db.query(CLAIM, &[&now, &worker, &lease_ms, queue, &want])? {
            claimed.push(ClaimedJob {
                id: r.get(0),
                queue: queue.to_string(),
                kind: r.get(1),
                payload: r.get(2),
                priority: r.get(3),
                attempt: r.get(4),
                attempt_limit: r.get(5),
                timeout: r
                    .get::<_, Option<i64>>(6)
                    .map(|ms| Duration::from_millis(ms.max(0) as u64)),
                tenant: r.get(7),
                lease_token: r.get(8),
                lease_expires_at: r.get(9),
                started_at: r.get(10),
                due_at: r.get(11),
            });
        }
        if claimed.len() as i64 >= most {
            break;
        }
    }
    Ok(claimed)
}

/// End the running try `id`/`token` (locked first) as the file does.
fn end_try_in(
    db: &mut Tx,
    id: JobId,
    token: i64,
    ending: &Ending<'_>,
    now: Option<Millis>,
) -> Result<FailOutcome> {
    let row = db
        .query_opt(RUNNING_TRY, &[&now, &id, &token])?
        .ok_or(Error::LeaseLost { job_id: id })?;
    let t = RunningTry {
        attempt: row.get(0),
        attempt_limit: row.get(1),
        backoff: Backoff {
            base_ms: row.get(2),
            max_ms: row.get(3),
        },
        worker: row.get(4),
        started_at: row.get(5),
        cancel_requested: row.get(6),
        queue: row.get(8),
        due_at: row.get(9),
    };
    let at: Millis = row.get(7);
    let e = plan_end(&t, id, ending, at);
    db.execute(
        END_TRY,
        &[
            &id,
            &e.state,
            &e.run_at,
            &e.error,
            &e.attempt_limit,
            &e.finished_at,
        ],
    )?;
    db.execute(
        RECORD_ATTEMPT,
        &[
            &id,
            &t.attempt,
            &t.worker,
            &t.started_at,
            &at,
            &e.outcome,
            &e.error,
        ],
    )?;
    if let Some(ended) = e.ended() {
        let mut tally = Tally::default();
        tally.ended(&t.queue, at, ended, Some(t.started_at), Some(t.due_at));
        write_tally(db, &tally)?;
    }
    Ok(e.result)
}

fn ack_in(
    db: &mut Tx,
    id: JobId,
    token: i64,
    ack: &Ack,
    now: Option<Millis>,
    tally: &mut Tally,
) -> Result<AckOutcome> {
    let ending = match ack {
        Ack::Complete { result } => {
            if let Some(r) = db.query_opt(COMPLETE_IN_TIME, &[&now, &id, &token, result])? {
                tally.ended(r.get(0), r.get(3), Ended::Succeeded, r.get(1), r.get(2));
                return Ok(AckOutcome::Completed);
            }
            let Some(row) = db.query_opt(OVERDUE_TRY, &[&now, &id, &token])? else {
                return Ok(AckOutcome::Lost);
            };
            let error = format!("{}; the completion came late", timed_out(row.get(0)));
            let ending = Ending::Failed {
                error: &error,
                retryable: true,
            };
            end_try_in(db, id, token, &ending, now)?;
            return Ok(AckOutcome::TimedOut);
        }
        Ack::Fail { error, retryable } => Ending::Failed {
            error,
            retryable: *retryable,
        },
        Ack::Release => Ending::Released {
            after_ms: 0,
            note: None,
        },
    };
    match end_try_in(db, id, token, &ending, now) {
        Ok(_) if matches!(ack, Ack::Release) => Ok(AckOutcome::Released),
        Ok(outcome) => Ok(AckOutcome::of(outcome)),
        Err(Error::LeaseLost { .. }) => Ok(AckOutcome::Lost),
        Err(e) => Err(e),
    }
}

/// The ended jobs whose notifications are not enqueued yet.
const PENDING: &str = "
SELECT id FROM jobs
WHERE notify IS NOT NULL AND finished_at IS NOT NULL AND notified_at IS DISTINCT FROM finished_at
  AND state IN ('succeeded', 'dead', 'cancelled')";

/// The notification jobs of job `$2`'s end (see [`notify`]): one per entry
/// naming its state.
const INSERT_NOTIFICATIONS: &str = "
INSERT INTO jobs (queue, kind, payload, state, priority, run_at, max_attempts,
                  attempt_limit, backoff_base_ms, backoff_max_ms, tenant, created_at)
SELECT 'notify', 'notify',
       jsonb_build_object(
           'job', jsonb_build_object(
               'id', j.id, 'queue', j.queue, 'kind', j.kind, 'state', j.state,
               'attempts', j.attempts, 'tenant', j.tenant,
               'result', CASE WHEN j.state = 'succeeded' THEN j.result::jsonb END,
               'error', CASE WHEN j.state <> 'succeeded' THEN j.last_error END,
               'finished_at', j.finished_at),
           'notify', n.value)::text,
       'ready', 0, jobd_time($1),
       coalesce((n.value ->> 'max_attempts')::int8, $3),
       coalesce((n.value ->> 'max_attempts')::int8, $3),
       coalesce((n.value ->> 'backoff_ms')::int8, $4),
       greatest(coalesce((n.value ->> 'backoff_ms')::int8, $4), 3600000),
       j.tenant, jobd_time($1)
FROM jobs AS j, jsonb_array_elements(j.notify::jsonb) WITH ORDINALITY AS n(value, key)
WHERE j.id = $2
  AND j.state IN (SELECT jsonb_array_elements_text(
                      CASE jsonb_typeof(n.value -> 'on') WHEN 'array' THEN n.value -> 'on'
                           ELSE jsonb_build_array(n.value -> 'on') END))
ORDER BY n.key";

const MARK_NOTIFIED: &str = "UPDATE jobs SET notified_at = finished_at WHERE id = $1";

/// Enqueue the notifications of every job that ended and was not notified
/// of that end; how many.  Run by every write that ends jobs, before it
/// commits.
pub(super) fn enqueue_ended(db: &mut Tx, now: Option<Millis>) -> Result<usize> {
    let ended: Vec<JobId> = db.query(PENDING, &[])?.iter().map(|r| r.get(0)).collect();
    let mut enqueued = 0;
    for id in ended {
        enqueued += db.execute(
            INSERT_NOTIFICATIONS,
            &[
                &now,
                &id,
                &notify::DEFAULT_ATTEMPTS,
                &notify::DEFAULT_BACKOFF_MS,
            ],
        )? as usize;
        db.execute(MARK_NOTIFIED, &[&id])?;
        tracing::debug!(job_id = id, "notifications enqueued");
    }
    if enqueued > 0 {
        db.query_one(NOTIFY_WORK, &[])?;
    }
    Ok(enqueued)
}
