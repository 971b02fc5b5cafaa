//! Acknowledgements from workers outside the process (the HTTP worker
//! protocol): many tries ended — completed, failed or released — and the
//! worker's next claim, in one transaction; the held tries' heartbeat with
//! their deadlines.  A try past its deadline (the job's timeout from its
//! start) cannot complete: the completion ends it as timed out instead.

use std::time::Duration;

use rusqlite::params;

use crate::clock::{duration_ms, Millis};
use crate::error::{Error, Result};
use crate::store::job::{ClaimedJob, FailOutcome, JobId};
use crate::store::lease::{claim_in, claim_plan, end_try_in, Ending, RUNNING_TIMES};
use crate::store::notify;
use crate::store::rollup::{Ended, Tally};
use crate::store::workers::json_list;
use crate::store::SqliteStore;

/// [`lease::COMPLETE`](super::lease) that also refuses a try past its deadline.
pub(crate) const COMPLETE_IN_TIME: &str = "
UPDATE jobs
SET state = 'succeeded', result = ?3, finished_at = ?4, progress_percent = 100,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = ?1 AND lease_token = ?2 AND state = 'running'
  AND (timeout_ms IS NULL OR started_at + timeout_ms > ?4)";

/// The running try's timeout, when it is held and past it.
pub(crate) const OVERDUE_TRY: &str = "
SELECT timeout_ms FROM jobs
WHERE id = ?1 AND lease_token = ?2 AND state = 'running'
  AND timeout_ms IS NOT NULL AND started_at + timeout_ms <= ?3";

/// Extend the leases of held tries (?1: `[[id, token], …]`), with what each
/// try's worker must know: a cancel asked, and its deadline.
pub(crate) const HEARTBEAT_HELD: &str = "
UPDATE jobs SET lease_expires_at = ?2
FROM (SELECT value ->> 0 AS id, value ->> 1 AS token FROM json_each(?1)) AS held
WHERE jobs.id = held.id AND jobs.lease_token = held.token AND +jobs.state = 'running'
RETURNING jobs.id, jobs.cancel_requested, jobs.started_at + jobs.timeout_ms";

/// Running tries past their deadline by more than ?2 ms: their worker did
/// not end them (a remote worker that went quiet, a handler that never
/// yields).  Through the `jobs_running` index.
pub(crate) const OVERDUE: &str = "
SELECT id, lease_token, timeout_ms FROM jobs
WHERE state = 'running' AND timeout_ms IS NOT NULL AND started_at + timeout_ms + ?2 <= ?1";

/// Whether a claim on these queues (?1, a JSON array) could find a job: a
/// ready one (through `jobs_ready`), or a delayed one due by ?2.  A read:
/// a long-polling worker woken by some commit looks before it writes.
pub(crate) const CLAIMABLE: &str = "
SELECT EXISTS (SELECT 1 FROM jobs
               WHERE state = 'ready' AND queue IN (SELECT value FROM json_each(?1)))
    OR EXISTS (SELECT 1 FROM jobs WHERE state = 'scheduled' AND run_at <= ?2)";

#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("CLAIMABLE", CLAIMABLE),
    ("COMPLETE_IN_TIME", COMPLETE_IN_TIME),
    ("OVERDUE_TRY", OVERDUE_TRY),
    ("HEARTBEAT_HELD", HEARTBEAT_HELD),
    ("OVERDUE", OVERDUE),
];

/// How a worker ends one try.
#[derive(Debug, Clone, PartialEq)]
pub enum Ack {
    /// Succeeded, with a result (JSON text, checked by the caller).
    Complete { result: Option<String> },
    /// Failed; retried after the job's backoff while tries remain and
    /// `retryable`.
    Fail { error: String, retryable: bool },
    /// Given back uncounted (the worker stops): ready again at once.
    Release,
}

/// What became of one acknowledged try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum AckOutcome {
    Completed,
    /// Failed, to run again at `run_at`.
    Retrying {
        run_at: Millis,
    },
    Dead,
    Cancelled,
    Released,
    /// The lease was gone (the job re-claimed, finished elsewhere, or its
    /// token wrong): nothing changed.
    Lost,
    /// The completion came after the try's deadline: the try failed as
    /// timed out, the result was not kept.
    TimedOut,
}

impl AckOutcome {
    pub(super) fn of(outcome: FailOutcome) -> AckOutcome {
        match outcome {
            FailOutcome::Retrying { run_at } => AckOutcome::Retrying { run_at },
            FailOutcome::Dead => AckOutcome::Dead,
            FailOutcome::Cancelled => AckOutcome::Cancelled,
        }
    }
}

/// A held try's state, as its heartbeat found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldTry {
    pub id: JobId,
    pub cancel_requested: bool,
    /// When the try times out (its start plus the job's timeout).
    pub deadline: Option<Millis>,
}

/// The error of a try that ran past its timeout.
pub(crate) fn timed_out(timeout_ms: i64) -> String {
    let t = Duration::from_millis(timeout_ms.max(0) as u64);
    format!(
        "timed out after {}",
        humantime::format_duration(Duration::from_secs(t.as_secs().max(1)))
    )
}

impl SqliteStore {
    /// End the tries in `acks` (`(id, lease token, how)`) and claim for
    /// `worker` as [`Backend::complete_and_claim`](crate::store::Backend::complete_and_claim) does, in one transaction.
    /// Each try's outcome comes back in order; a try whose lease is gone is
    /// [`AckOutcome::Lost`] and changes nothing.
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
        let now = self.now();
        let expires = now.saturating_add(duration_ms(lease));
        let mut notified = 0;
        let (outcomes, mut claimed) = self.write("ack_and_claim", |tx| {
            let mut outcomes = Vec::with_capacity(acks.len());
            let mut tally = Tally::default();
            for (id, token, ack) in acks {
                outcomes.push(ack_in(tx, *id, *token, ack, now, &mut tally)?);
            }
            tally.write(tx)?;
            if !acks.is_empty() {
                notified = notify::enqueue_ended(tx, now)?;
            }
            let claimed = claim_in(tx, &self.inner.claims, worker, &claims, most, now, expires)?;
            Ok((outcomes, claimed))
        })?;
        claimed.sort_by_key(|j| (j.priority, j.id));
        self.inner.claims.forget(acks.iter().map(|(id, _, _)| *id));
        let retrying = outcomes
            .iter()
            .any(|o| matches!(o, AckOutcome::Retrying { .. } | AckOutcome::Released));
        for ((id, _, _), outcome) in acks.iter().zip(&outcomes) {
            tracing::debug!(job_id = id, ?outcome, "try acknowledged");
        }
        for job in &claimed {
            tracing::debug!(job_id = job.id, queue = %job.queue, kind = %job.kind, attempt = job.attempt, worker, "claimed");
        }
        if retrying || notified > 0 {
            self.notify_work();
        }
        Ok((outcomes, claimed))
    }

    /// Whether a claim on `queues` could find a job now (a ready one, or a
    /// delayed one due): one read, no write lock.  A paused or full queue
    /// may still claim nothing.
    pub fn claimable(&self, queues: &[&str]) -> Result<bool> {
        let list = json_list("queues", &queues)?;
        let now = self.now();
        self.with_conn("claimable", |c| {
            Ok(c.prepare_cached(CLAIMABLE)?
                .query_row(params![list, now], |r| r.get(0))?)
        })
    }

    /// Extend the leases of `held` tries by `lease`; each one still held
    /// comes back with its cancel flag and deadline.
    pub fn heartbeat_held(&self, held: &[(JobId, i64)], lease: Duration) -> Result<Vec<HeldTry>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let expires = self.now().saturating_add(duration_ms(lease));
        let held_json = json_list("held", &held)?;
        self.write("heartbeat", |tx| {
            let mut stmt = tx.prepare_cached(HEARTBEAT_HELD)?;
            let rows = stmt.query_map(params![held_json, expires], |r| {
                Ok(HeldTry {
                    id: r.get(0)?,
                    cancel_requested: r.get(1)?,
                    deadline: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
}

fn ack_in(
    tx: &rusqlite::Transaction,
    id: JobId,
    token: i64,
    ack: &Ack,
    now: Millis,
    tally: &mut Tally,
) -> Result<AckOutcome> {
    let ending = match ack {
        Ack::Complete { result } => {
            let times: Option<(String, Millis, Millis)> = rusqlite::OptionalExtension::optional(
                tx.prepare_cached(RUNNING_TIMES)?
                    .query_row(params![id, token], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    }),
            )?;
            let Some((queue, started_at, due_at)) = times else {
                return Ok(AckOutcome::Lost);
            };
            let done = tx
                .prepare_cached(COMPLETE_IN_TIME)?
                .execute(params![id, token, result, now])?;
            if done > 0 {
                tally.ended(
                    &queue,
                    now,
                    Ended::Succeeded,
                    Some(started_at),
                    Some(due_at),
                );
                return Ok(AckOutcome::Completed);
            }
            let overdue: Option<i64> = rusqlite::OptionalExtension::optional(
                tx.prepare_cached(OVERDUE_TRY)?
                    .query_row(params![id, token, now], |r| r.get(0)),
            )?;
            let Some(timeout_ms) = overdue else {
                return Ok(AckOutcome::Lost);
            };
            let error = format!("{}; the completion came late", timed_out(timeout_ms));
            let ending = Ending::Failed {
                error: &error,
                retryable: true,
            };
            end_try_in(tx, id, token, &ending, now)?;
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
    match end_try_in(tx, id, token, &ending, now) {
        Ok(_) if matches!(ack, Ack::Release) => Ok(AckOutcome::Released),
        Ok(outcome) => Ok(AckOutcome::of(outcome)),
        Err(Error::LeaseLost { .. }) => Ok(AckOutcome::Lost),
        Err(e) => Err(e),
    }
}

/// Fail every running try past its deadline by more than `grace` (in the
/// reap's transaction): retried after its backoff while tries remain.
pub(super) fn fail_overdue(
    tx: &rusqlite::Transaction,
    now: Millis,
    grace: Duration,
) -> Result<Vec<(JobId, FailOutcome)>> {
    let overdue: Vec<(JobId, i64, i64)> = {
        let mut stmt = tx.prepare_cached(OVERDUE)?;
        let rows = stmt.query_map(params![now, duration_ms(grace)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut ended = Vec::with_capacity(overdue.len());
    for (id, token, timeout_ms) in overdue {
        let error = format!("{}; its worker did not end it", timed_out(timeout_ms));
        let ending = Ending::Failed {
            error: &error,
            retryable: true,
        };
        ended.push((id, end_try_in(tx, id, token, &ending, now)?));
    }
    Ok(ended)
}
