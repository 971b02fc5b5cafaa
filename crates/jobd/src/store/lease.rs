//! Leases: claim, heartbeat, progress, and the ways a try ends (complete,
//! fail, release, cancelled, or expiry found by `reap`).

use std::time::Duration;

use rusqlite::{params, OptionalExtension, Transaction};

use crate::clock::{duration_ms, Millis};
use crate::error::{Error, Result};
use crate::store::job::{
    validate_name, Backoff, ClaimedJob, Done, FailOutcome, Heartbeat, JobId, Progress, ReapReport,
};
use crate::store::rollup::{ClaimNotes, Ended, NotedSuccesses, Tally};
use crate::store::workers::json_list;
use crate::store::{notify, returning_row, steps, SqliteStore};

/// Due delayed jobs and retries become ready.
pub(crate) const PROMOTE_DUE: &str = "
UPDATE jobs SET state = 'ready'
WHERE state = 'scheduled' AND run_at <= ?1";

/// The claim: one statement picks the next ready jobs of a queue and leases
/// them to the worker.  It takes at most ?5 jobs, and no more than the queue's
/// room: none while the queue is paused, and with a concurrency limit in
/// `queues` only as many as bring its running jobs (every worker's, in every
/// process: they are counted in this write transaction, through the
/// `jobs_running` index) up to the limit.  The room is one seek into `queues`
/// per claim, and the count only for a limited queue.
///
/// `LIMIT CAST(?5 AS INTEGER)`, not `LIMIT ?5`: SQLite's planner reads a bare
/// bound LIMIT while preparing, and then recompiles the statement every time
/// that parameter is bound again — which is every call.  That recompile was
/// half the cost of a claim.  (Same for every `LIMIT` in the store; a test
/// checks that the hot statements never reprepare.)
///
/// `RETURNING` leaves out what the caller already knows (the queue, ?4, and
/// the lease's expiry, ?2): SQLite buffers every returned row in a temporary
/// b-tree before handing out the first, so each column costs per job — one
/// more integer, 1.5% of a batched claim and completion (benches/README.md).
/// So the jobs' due times (`run_at`, for the rollups' queue wait) come back
/// only from [`CLAIM_TIMED`], which the store uses for a sample of claims
/// ([`ClaimNotes::time_claim`](crate::store::rollup::ClaimNotes::time_claim)).
macro_rules! claim_returning {
    ($($more:literal)?) => {
        concat!(
            "
UPDATE jobs
SET state = 'running',
    lease_owner = ?1,
    lease_token = random(),
    lease_expires_at = ?2,
    attempts = attempts + 1,
    started_at = ?3
WHERE id IN (
    SELECT id FROM jobs
    WHERE state = 'ready' AND queue = ?4
    ORDER BY priority, run_at, id
    LIMIT CAST(coalesce(
        (SELECT CASE WHEN paused THEN 0
                     WHEN concurrency IS NULL THEN ?5
                     ELSE min(?5, max(0, concurrency - (
                         SELECT count(*) FROM jobs WHERE state = 'running' AND queue = ?4)))
                END
         FROM queues WHERE name = ?4),
        ?5) AS INTEGER))
RETURNING id, kind, payload, priority, attempts, attempt_limit, timeout_ms, tenant, lease_token"
            $(, $more)?
        )
    };
}
pub(crate) const CLAIM: &str = claim_returning!();

/// [`CLAIM`], and when each job was due (column 9).
pub(crate) const CLAIM_TIMED: &str = claim_returning!(", run_at");

pub(crate) const HEARTBEAT: &str = "
UPDATE jobs SET lease_expires_at = ?3
WHERE id = ?1 AND lease_token = ?2 AND state = 'running'
RETURNING cancel_requested";

/// Extend many leases at once (the worker's heartbeat): ?1 is a JSON array of
/// `[id, token]` pairs.  Returns the jobs still held, with their cancel flag.
pub(crate) const HEARTBEAT_MANY: &str = "
UPDATE jobs SET lease_expires_at = ?2
FROM (SELECT value ->> 0 AS id, value ->> 1 AS token FROM json_each(?1)) AS held
WHERE jobs.id = held.id AND jobs.lease_token = held.token AND +jobs.state = 'running'
RETURNING jobs.id, jobs.cancel_requested";

/// Which of the held tries (?1: a JSON array of `[id, token]` pairs) have a
/// cancel request.  Read-only: a worker looks whenever the file changes.
pub(crate) const CANCEL_REQUESTED: &str = "
SELECT jobs.id
FROM (SELECT value ->> 0 AS id, value ->> 1 AS token FROM json_each(?1)) AS held
JOIN jobs ON jobs.id = held.id
WHERE jobs.lease_token = held.token AND +jobs.state = 'running' AND jobs.cancel_requested";

/// When the next delayed job or retry falls due.
pub(crate) const NEXT_RUN_AT: &str = "
SELECT min(run_at) FROM jobs WHERE state = 'scheduled'";

/// The try succeeded: finish the job — only while the lease is still held,
/// so no row changed means the lease was lost.  The job row is the record of
/// its successful try (schema/0005: the `attempts` view reads it from here);
/// only tries that end otherwise get a row in `tries`.
pub(crate) const COMPLETE: &str = "
UPDATE jobs
SET state = 'succeeded', result = ?3, finished_at = ?4, progress_percent = 100,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = ?1 AND lease_token = ?2 AND state = 'running'";

/// The queue and times of a running try, for the rollups of a completion
/// of a try this store handle did not claim.
pub(crate) const RUNNING_TIMES: &str = "
SELECT queue, started_at, run_at FROM jobs
WHERE id = ?1 AND lease_token = ?2 AND state = 'running'";

/// The queue and times of the jobs of a JSON list of ids (completions of
/// tries this store handle did not claim, after the batch).
pub(crate) const TIMES_OF: &str = "
SELECT queue, started_at, run_at FROM jobs WHERE id IN (SELECT value FROM json_each(?1))";

/// The running try of a job, fenced by its token.
pub(crate) const RUNNING_TRY: &str = "
SELECT attempts, attempt_limit, backoff_base_ms, backoff_max_ms, lease_owner, started_at, cancel_requested,
       queue, run_at
FROM jobs
WHERE id = ?1 AND lease_token = ?2 AND state = 'running'";

/// Ends a try that did not succeed.  ?3 is the new state.
pub(crate) const END_TRY: &str = "
UPDATE jobs
SET state = ?2, run_at = ?3, last_error = coalesce(?4, last_error), attempt_limit = ?5,
    finished_at = ?6, lease_token = NULL, lease_expires_at = NULL
WHERE id = ?1";

pub(crate) const RECORD_ATTEMPT: &str = "
INSERT INTO tries (job_id, attempt, worker, started_at, finished_at, outcome, error)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

pub(crate) const SET_PROGRESS: &str = "
UPDATE jobs SET progress_percent = ?3, progress_stage = ?4, progress_detail = ?5
WHERE id = ?1 AND lease_token = ?2 AND state = 'running'
RETURNING attempts";

pub(crate) const LOG_PROGRESS: &str = "
INSERT INTO progress (job_id, attempt, at, percent, stage, detail)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// Record a lost try for every running job whose lease has expired.
pub(crate) const REAP_RECORD: &str = "
INSERT INTO tries (job_id, attempt, worker, started_at, finished_at, outcome, error)
SELECT id, attempts, lease_owner, started_at, ?1, 'lost',
       'lease expired: worker ' || coalesce(lease_owner, '?') || ' stopped heartbeating'
FROM jobs
WHERE state = 'running' AND lease_expires_at <= ?1";

/// ...and send those jobs back: ready, or dead on their last try, or cancelled
/// when that was asked for.
pub(crate) const REAP_REQUEUE: &str = "
UPDATE jobs
SET state = CASE WHEN cancel_requested THEN 'cancelled'
                 WHEN attempts >= attempt_limit THEN 'dead'
                 ELSE 'ready' END,
    last_error = 'lease expired: worker ' || coalesce(lease_owner, '?') || ' stopped heartbeating'
                 || CASE WHEN NOT cancel_requested AND attempts >= attempt_limit
                         THEN ' on try ' || attempts || ' of ' || attempt_limit || '; out of tries'
                         ELSE '' END,
    finished_at = CASE WHEN cancel_requested OR attempts >= attempt_limit THEN ?1 END,
    lease_token = NULL,
    lease_expires_at = NULL
WHERE state = 'running' AND lease_expires_at <= ?1
RETURNING id, state, queue";

/// How long past its deadline a running try may go before the reap fails
/// it: an in-process worker ends its own at the deadline, and takes up to
/// its stop grace to; the reap is for tries nobody ends (a remote worker
/// gone quiet with its lease still fresh, a handler that never yields).
pub const OVERDUE_GRACE: Duration = Duration::from_secs(5);

/// Every named statement of this module, for the prepare-them-all test.
#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("PROMOTE_DUE", PROMOTE_DUE),
    ("CLAIM", CLAIM),
    ("CLAIM_TIMED", CLAIM_TIMED),
    ("HEARTBEAT", HEARTBEAT),
    ("HEARTBEAT_MANY", HEARTBEAT_MANY),
    ("CANCEL_REQUESTED", CANCEL_REQUESTED),
    ("NEXT_RUN_AT", NEXT_RUN_AT),
    ("COMPLETE", COMPLETE),
    ("RUNNING_TIMES", RUNNING_TIMES),
    ("TIMES_OF", TIMES_OF),
    ("RUNNING_TRY", RUNNING_TRY),
    ("END_TRY", END_TRY),
    ("RECORD_ATTEMPT", RECORD_ATTEMPT),
    ("SET_PROGRESS", SET_PROGRESS),
    ("LOG_PROGRESS", LOG_PROGRESS),
    ("REAP_RECORD", REAP_RECORD),
    ("REAP_REQUEUE", REAP_REQUEUE),
];

/// What [`Backend::complete_many`](crate::store::Backend::complete_many) (or the completing half of
/// [`Backend::complete_and_claim`](crate::store::Backend::complete_and_claim)) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompleteBatch {
    pub completed: usize,
    /// Jobs whose lease was lost: their results were discarded.
    pub lost: Vec<JobId>,
}

/// How a try that did not succeed ends.
pub(super) enum Ending<'a> {
    Failed {
        error: &'a str,
        retryable: bool,
    },
    /// Given back uncounted, to be claimed again after `after_ms`, with a
    /// note saying why.
    Released {
        after_ms: i64,
        note: Option<&'a str>,
    },
    Cancelled {
        reason: &'a str,
    },
}

pub(super) struct RunningTry {
    pub attempt: i64,
    pub attempt_limit: i64,
    pub backoff: Backoff,
    pub worker: Option<String>,
    pub started_at: Millis,
    pub cancel_requested: bool,
    pub queue: String,
    /// When the try was due (its queue wait ran from here to `started_at`).
    pub due_at: Millis,
}

impl SqliteStore {
    /// [`Backend::complete_and_claim`](crate::store::Backend::complete_and_claim) with the results as JSON text (the
    /// worker runtime serializes them in the runs, not in the writer).
    pub(crate) fn exchange(
        &self,
        done: &[Done],
        worker: &str,
        claims: &[(&str, usize)],
        most: usize,
        lease: Duration,
    ) -> Result<(CompleteBatch, Vec<ClaimedJob>)> {
        let (claims, most) = claim_plan(worker, claims, most)?;
        // One entry per try (a repeated entry would find its job finished and
        // be reported lost).  Repeats are rare: look for one in a sorted copy
        // of the keys before paying for a set.
        let mut keys: Vec<(JobId, i64)> = done.iter().map(|d| (d.id, d.token)).collect();
        keys.sort_unstable();
        let repeats = keys.windows(2).any(|w| w[0] == w[1]);
        let mut seen = std::collections::HashSet::new();
        let done: Vec<&Done> = done
            .iter()
            .filter(|d| !repeats || seen.insert((d.id, d.token)))
            .collect();
        if done.is_empty() && most == 0 {
            return Ok((CompleteBatch::default(), Vec::new()));
        }
        let now = self.now();
        let expires = now.saturating_add(duration_ms(lease));
        let mut notified = 0;
        let (lost, mut claimed) = self.write("complete_and_claim", |tx| {
            let mut lost = Vec::new();
            if !done.is_empty() {
                let mut tally = Tally::default();
                // Completions of tries this handle did not claim: their
                // times read in one statement after the batch.
                let mut untimed = Vec::new();
                let mut finish = tx.prepare_cached(COMPLETE)?;
                let mut notes = self.inner.claims.lock();
                let mut noted = NotedSuccesses::default();
                for d in &done {
                    let note = notes.take(d.id, d.token);
                    if finish.execute(params![d.id, d.token, d.result, now])? == 0 {
                        lost.push(d.id);
                        continue;
                    }
                    match note {
                        Some(n) => noted.add(&notes, n, now, &mut tally),
                        None => untimed.push(d.id),
                    }
                }
                noted.flush(&notes, now, &mut tally);
                drop(notes);
                if !untimed.is_empty() {
                    let ids = serde_json::Value::from(untimed).to_string();
                    let mut stmt = tx.prepare_cached(TIMES_OF)?;
                    let mut rows = stmt.query([ids])?;
                    while let Some(r) = rows.next()? {
                        let queue: String = r.get(0)?;
                        tally.ended(&queue, now, Ended::Succeeded, r.get(1)?, r.get(2)?);
                    }
                }
                tally.write(tx)?;
                notified = notify::enqueue_ended(tx, now)?;
            }
            let claimed = claim_in(tx, &self.inner.claims, worker, &claims, most, now, expires)?;
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

    /// Extend the lease of a running try.  Tells whether cancellation was asked.
    pub fn heartbeat(&self, id: JobId, token: i64, lease: Duration) -> Result<Heartbeat> {
        let expires = self.now().saturating_add(duration_ms(lease));
        let cancel: Option<bool> = self.with_conn("heartbeat", |conn| {
            Ok(returning_row(
                conn,
                HEARTBEAT,
                params![id, token, expires],
                |r| r.get(0),
            )?)
        })?;
        match cancel {
            Some(cancel_requested) => Ok(Heartbeat {
                lease_expires_at: expires,
                cancel_requested,
            }),
            None => Err(Error::LeaseLost { job_id: id }),
        }
    }

    /// Extend the leases of many running tries in one statement (a worker
    /// process's heartbeat).  Returns, for each try still held, whether
    /// cancellation was asked; a try missing from the answer has lost its
    /// lease (reaped, re-claimed or finished elsewhere).
    pub fn heartbeat_many(
        &self,
        held: &[(JobId, i64)],
        lease: Duration,
    ) -> Result<Vec<(JobId, bool)>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let expires = self.now().saturating_add(duration_ms(lease));
        let held_json = json_list("held", &held)?;
        self.write("heartbeat_many", |tx| {
            let mut stmt = tx.prepare_cached(HEARTBEAT_MANY)?;
            let rows =
                stmt.query_map(params![held_json, expires], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Which of these running tries (`[id, token]`) have been asked to
    /// cancel — a read, without extending any lease.  A try that is no
    /// longer held is not in the answer (the heartbeat tells it apart).
    pub fn cancel_requested(&self, held: &[(JobId, i64)]) -> Result<Vec<JobId>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let held_json = json_list("held", &held)?;
        self.with_conn("cancel_requested", |c| {
            let mut stmt = c.prepare_cached(CANCEL_REQUESTED)?;
            let rows = stmt.query_map([&held_json], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// When the earliest delayed job or retry falls due, if any.
    pub fn next_run_at(&self) -> Result<Option<crate::clock::Millis>> {
        self.with_conn("next_run_at", |c| {
            Ok(c.prepare_cached(NEXT_RUN_AT)?.query_row([], |r| r.get(0))?)
        })
    }

    /// The try succeeded: store `result` (JSON) and finish the job.
    pub fn complete(
        &self,
        id: JobId,
        token: i64,
        result: Option<&serde_json::Value>,
    ) -> Result<()> {
        let result = result.map(|v| v.to_string());
        let now = self.now();
        let note = self.inner.claims.take_one(id, token);
        let notified = self.write("complete", |tx| {
            let mut tally = Tally::default();
            let times = note.as_ref().map(|(q, s, d)| (q.as_str(), *s, *d));
            if !complete_in(tx, id, token, result.as_deref(), now, times, &mut tally)? {
                return Err(Error::LeaseLost { job_id: id });
            }
            tally.write(tx)?;
            Ok(notify::enqueue_ended(tx, now)?)
        })?;
        tracing::debug!(job_id = id, "completed");
        if notified > 0 {
            self.notify_work();
        }
        Ok(())
    }

    /// The try failed.  A retryable failure with tries left is scheduled again
    /// after the job's backoff; otherwise the job is dead.
    pub fn fail(&self, id: JobId, token: i64, error: &str, retryable: bool) -> Result<FailOutcome> {
        self.end_try(id, token, Ending::Failed { error, retryable })
    }

    /// Give the job back without counting the try (graceful shutdown): it is
    /// ready again at once for any worker.
    pub fn release(&self, id: JobId, token: i64) -> Result<()> {
        let ending = Ending::Released {
            after_ms: 0,
            note: None,
        };
        self.end_try(id, token, ending).map(|_| ())
    }

    /// Give the job back without counting the try, to be claimed again no
    /// sooner than `after` from now (`scheduled` until then), with `note` as
    /// the try's error: for a worker that claimed a job another worker
    /// should run (one with a handler for its kind).
    pub fn release_for(&self, id: JobId, token: i64, after: Duration, note: &str) -> Result<()> {
        let ending = Ending::Released {
            after_ms: duration_ms(after),
            note: Some(note),
        };
        self.end_try(id, token, ending).map(|_| ())
    }

    /// The worker stopped the try because cancellation was asked: the job is
    /// cancelled.
    pub fn cancelled(&self, id: JobId, token: i64, reason: &str) -> Result<()> {
        self.end_try(id, token, Ending::Cancelled { reason })
            .map(|_| ())
    }

    fn end_try(&self, id: JobId, token: i64, ending: Ending<'_>) -> Result<FailOutcome> {
        let now = self.now();
        let mut notified = 0;
        let outcome = self.write("ending a try", |tx| {
            let outcome = end_try_in(tx, id, token, &ending, now)?;
            notified = notify::enqueue_ended(tx, now)?;
            Ok(outcome)
        })?;
        self.inner.claims.forget(std::iter::once(id));
        tracing::debug!(job_id = id, ?outcome, "try ended");
        if matches!(outcome, FailOutcome::Retrying { .. }) || notified > 0 {
            self.notify_work();
        }
        Ok(outcome)
    }

    /// Record progress of a running try; readable through [`Store::get`](crate::store::Backend::get) and
    /// kept as a log in the `progress` table.
    pub fn set_progress(&self, id: JobId, token: i64, progress: &Progress) -> Result<()> {
        check_progress(progress)?;
        let now = self.now();
        self.write("set_progress", |tx| {
            let p = progress;
            let attempt: i64 = returning_row(
                tx,
                SET_PROGRESS,
                params![id, token, p.percent, p.stage, p.detail],
                |r| r.get(0),
            )?
            .ok_or(Error::LeaseLost { job_id: id })?;
            tx.prepare_cached(LOG_PROGRESS)?
                .execute(params![id, attempt, now, p.percent, p.stage, p.detail])?;
            Ok(())
        })
    }

    /// Send back every running job whose lease expired: the try is recorded
    /// as `lost`; the job is ready again, or dead when that was its last try
    /// (a job that kills its worker every time does not loop forever).
    /// First, tries more than [`OVERDUE_GRACE`] past their timeout fail as
    /// timed out.
    pub fn reap(&self) -> Result<ReapReport> {
        let now = self.now();
        let steady = self.clock().steady();
        let hold = crate::clock::duration_ms(self.inner.opts.worker_liveness);
        let mut notified = 0;
        let report = self.write("reap", |tx| {
            if let steps::Verdict::Hold(ms) = steps::check(tx, now, steady, hold)? {
                tracing::debug!(hold_ms = ms, "reap held after a step of the wall clock");
                return Ok(ReapReport::default());
            }
            let mut report = ReapReport::default();
            for (id, _) in super::ack::fail_overdue(tx, now, OVERDUE_GRACE)? {
                report.timed_out.push(id);
            }
            tx.prepare_cached(REAP_RECORD)?.execute([now])?;
            let mut stmt = tx.prepare_cached(REAP_REQUEUE)?;
            let rows = stmt.query_map([now], |r| {
                Ok((
                    r.get::<_, JobId>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            let mut tally = Tally::default();
            for row in rows {
                let (id, state, queue) = row?;
                match state.as_str() {
                    "dead" => report.dead.push(id),
                    "cancelled" => report.cancelled.push(id),
                    _ => report.requeued.push(id),
                }
                if let Some(ended) = reaped_end(&state) {
                    tally.ended(&queue, now, ended, None, None);
                }
            }
            drop(stmt);
            tally.write(tx)?;
            notified = notify::enqueue_ended(tx, now)?;
            Ok(report)
        })?;
        let ended = report
            .requeued
            .iter()
            .chain(&report.dead)
            .chain(&report.cancelled);
        self.inner
            .claims
            .forget(ended.chain(&report.timed_out).copied());
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

/// Progress a try may report: a percent from 0 to 100, a stage of up to 256
/// bytes, a detail of up to 4096.
pub(super) fn check_progress(progress: &Progress) -> Result<()> {
    if let Some(p) = progress.percent {
        if !(0.0..=100.0).contains(&p) {
            return Err(Error::invalid(
                "progress percent",
                format!("{p} is not between 0 and 100"),
            ));
        }
    }
    if progress.stage.as_ref().is_some_and(|s| s.len() > 256) {
        return Err(Error::invalid("progress stage", "longer than 256 bytes"));
    }
    if progress.detail.as_ref().is_some_and(|s| s.len() > 4096) {
        return Err(Error::invalid("progress detail", "longer than 4096 bytes"));
    }
    Ok(())
}

/// A turn's claims checked and in SQLite's terms: the queues with a count
/// above 0 (counts capped, so that a huge `usize` never wraps into
/// SQLite's "no limit"), and the most in all (0 without any).
pub(super) fn claim_plan<'a>(
    worker: &str,
    claims: &[(&'a str, usize)],
    most: usize,
) -> Result<(Vec<(&'a str, i64)>, i64)> {
    for (q, _) in claims {
        validate_name("queue", q)?;
    }
    let claims: Vec<(&str, i64)> = claims
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(q, n)| (*q, (*n).min(i64::MAX as usize) as i64))
        .collect();
    let most = if claims.is_empty() {
        0
    } else {
        most.min(i64::MAX as usize) as i64
    };
    if most > 0 && worker.is_empty() {
        return Err(Error::invalid("worker", "must not be empty"));
    }
    Ok((claims, most))
}

/// The claims of a turn, in its transaction: due jobs promoted, then up to
/// each queue's count in `claims`, queues in order, at most `most` in all.
pub(super) fn claim_in(
    tx: &Transaction,
    notes: &ClaimNotes,
    worker: &str,
    claims: &[(&str, i64)],
    most: i64,
    now: Millis,
    expires: Millis,
) -> Result<Vec<ClaimedJob>> {
    let mut claimed = Vec::new();
    if most <= 0 {
        return Ok(claimed);
    }
    tx.prepare_cached(PROMOTE_DUE)?.execute([now])?;
    claimed.reserve(most.min(1024) as usize);
    for (queue, want) in claims {
        let want = (*want).min(most - claimed.len() as i64);
        let timed = notes.time_claim(queue, now);
        let mut stmt = tx.prepare_cached(if timed { CLAIM_TIMED } else { CLAIM })?;
        let rows = stmt.query_map(params![worker, expires, now, queue, want], |r| {
            Ok(ClaimedJob {
                id: r.get(0)?,
                queue: queue.to_string(),
                kind: r.get(1)?,
                payload: r.get(2)?,
                priority: r.get(3)?,
                attempt: r.get(4)?,
                attempt_limit: r.get(5)?,
                timeout: r
                    .get::<_, Option<i64>>(6)?
                    .map(|ms| Duration::from_millis(ms.max(0) as u64)),
                tenant: r.get(7)?,
                lease_token: r.get(8)?,
                lease_expires_at: expires,
                started_at: now,
                due_at: if timed { r.get(9)? } else { None },
            })
        })?;
        let from = claimed.len();
        for job in rows {
            claimed.push(job?);
        }
        notes.claimed(queue, &claimed[from..], now);
        if claimed.len() as i64 >= most {
            break;
        }
    }
    Ok(claimed)
}

/// What ending a try writes: the job's new state, when it runs next, the
/// error kept, its new attempt limit and finish time, and the try's outcome.
/// The same decision on every backend.
pub(super) struct TryEnd<'a> {
    pub state: &'static str,
    pub run_at: Millis,
    pub error: Option<&'a str>,
    pub attempt_limit: i64,
    pub finished_at: Option<Millis>,
    pub outcome: &'static str,
    pub result: FailOutcome,
}

impl TryEnd<'_> {
    /// What the rollups count of this end (a try given back counts nothing).
    pub(super) fn ended(&self) -> Option<Ended> {
        match self.result {
            _ if self.outcome == "released" => None,
            FailOutcome::Cancelled => Some(Ended::Cancelled),
            FailOutcome::Retrying { .. } => Some(Ended::Failed { dead: false }),
            FailOutcome::Dead => Some(Ended::Failed { dead: true }),
        }
    }
}

/// What the rollups count of a reaped try that left its job in `state` (a
/// lost try's run time is unknown: its worker stopped saying).
pub(super) fn reaped_end(state: &str) -> Option<Ended> {
    match state {
        "dead" => Some(Ended::Failed { dead: true }),
        "cancelled" => Some(Ended::Cancelled),
        _ => None,
    }
}

/// How the running try `t` of job `id` ends with `ending` at `now`.
pub(super) fn plan_end<'a>(
    t: &RunningTry,
    id: JobId,
    ending: &Ending<'a>,
    now: Millis,
) -> TryEnd<'a> {
    let end = |state, run_at, error, attempt_limit, finished_at, outcome, result| TryEnd {
        state,
        run_at,
        error,
        attempt_limit,
        finished_at,
        outcome,
        result,
    };
    match *ending {
        Ending::Released { after_ms, note } => {
            let at = now.saturating_add(after_ms.max(0));
            end(
                if at > now { "scheduled" } else { "ready" },
                at,
                note,
                t.attempt_limit + 1,
                None,
                "released",
                FailOutcome::Retrying { run_at: at },
            )
        }
        Ending::Cancelled { reason } => end(
            "cancelled",
            now,
            Some(reason),
            t.attempt_limit,
            Some(now),
            "cancelled",
            FailOutcome::Cancelled,
        ),
        Ending::Failed { error, .. } if t.cancel_requested => end(
            "cancelled",
            now,
            Some(error),
            t.attempt_limit,
            Some(now),
            "failed",
            FailOutcome::Cancelled,
        ),
        Ending::Failed { error, retryable } if retryable && t.attempt < t.attempt_limit => {
            let at = now.saturating_add(t.backoff.delay_ms(id, t.attempt));
            end(
                "scheduled",
                at,
                Some(error),
                t.attempt_limit,
                None,
                "failed",
                FailOutcome::Retrying { run_at: at },
            )
        }
        Ending::Failed { error, .. } => end(
            "dead",
            now,
            Some(error),
            t.attempt_limit,
            Some(now),
            "failed",
            FailOutcome::Dead,
        ),
    }
}

/// End the running try `id`/`token` in `tx` (see [`Ending`]).
pub(super) fn end_try_in(
    tx: &Transaction,
    id: JobId,
    token: i64,
    ending: &Ending<'_>,
    now: Millis,
) -> Result<FailOutcome> {
    let t = running_try(tx, id, token)?;
    let e = plan_end(&t, id, ending, now);
    tx.prepare_cached(END_TRY)?.execute(params![
        id,
        e.state,
        e.run_at,
        e.error,
        e.attempt_limit,
        e.finished_at
    ])?;
    record_attempt(tx, id, &t, now, e.outcome, e.error)?;
    if let Some(ended) = e.ended() {
        let mut tally = Tally::default();
        tally.ended(&t.queue, now, ended, Some(t.started_at), Some(t.due_at));
        tally.write(tx)?;
    }
    Ok(e.result)
}

/// Finish the try `id`/`token` in `tx` and count it in `tally`, with the
/// claim's `times` (queue, started, due) when the caller has them — else
/// read from the row first.  False when the lease was lost.
pub(super) fn complete_in(
    tx: &Transaction,
    id: JobId,
    token: i64,
    result: Option<&str>,
    now: Millis,
    times: Option<(&str, Millis, Option<Millis>)>,
    tally: &mut Tally,
) -> Result<bool> {
    let read;
    let (queue, started_at, due_at) = match times {
        Some(t) => t,
        None => {
            read = tx
                .prepare_cached(RUNNING_TIMES)?
                .query_row(params![id, token], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Millis>(1)?, r.get(2)?))
                })
                .optional()?;
            match &read {
                Some((q, s, d)) => (q.as_str(), *s, Some(*d)),
                None => return Ok(false),
            }
        }
    };
    let finished = tx
        .prepare_cached(COMPLETE)?
        .execute(params![id, token, result, now])?;
    if finished == 0 {
        return Ok(false);
    }
    tally.ended(queue, now, Ended::Succeeded, Some(started_at), due_at);
    Ok(true)
}

fn running_try(tx: &Transaction, id: JobId, token: i64) -> Result<RunningTry> {
    tx.prepare_cached(RUNNING_TRY)?
        .query_row(params![id, token], |r| {
            Ok(RunningTry {
                attempt: r.get(0)?,
                attempt_limit: r.get(1)?,
                backoff: Backoff {
                    base_ms: r.get(2)?,
                    max_ms: r.get(3)?,
                },
                worker: r.get(4)?,
                started_at: r.get(5)?,
                cancel_requested: r.get(6)?,
                queue: r.get(7)?,
                due_at: r.get(8)?,
            })
        })
        .optional()?
        .ok_or(Error::LeaseLost { job_id: id })
}

fn record_attempt(
    tx: &Transaction,
    id: JobId,
    t: &RunningTry,
    now: Millis,
    outcome: &str,
    error: Option<&str>,
) -> Result<()> {
    tx.prepare_cached(RECORD_ATTEMPT)?.execute(params![
        id,
        t.attempt,
        t.worker,
        t.started_at,
        now,
        outcome,
        error
    ])?;
    Ok(())
}
