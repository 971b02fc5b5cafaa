//! Control of jobs: cancel and retry, one by id or in bulk by filter (in
//! batches, each its own transaction).

use rusqlite::{params, OptionalExtension};

use crate::clock::Millis;
use crate::error::{Error, Result};
use crate::store::job::{
    validate_name, CancelOutcome, CancelReport, JobId, JobSelection, JobState, RetryReport,
};
use crate::store::{notify, SqliteStore};

pub(crate) const JOB_STATE: &str = "SELECT state, unique_key FROM jobs WHERE id = ?1";

/// Cancel a waiting job.  The state is checked again here: a bulk cancel
/// picks its jobs before its write transaction.
pub(crate) const CANCEL_WAITING: &str = "
UPDATE jobs SET state = 'cancelled', finished_at = ?2, last_error = 'cancelled before it ran'
WHERE id = ?1 AND (state = 'scheduled' OR state = 'ready')";

pub(crate) const REQUEST_CANCEL: &str =
    "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND state = 'running'";

/// Revive a dead or cancelled job (state checked here too, as above).
pub(crate) const REVIVE: &str = "
UPDATE jobs
SET state = 'ready', run_at = ?2, attempt_limit = attempts + max_attempts, cancel_requested = 0,
    finished_at = NULL, result = NULL
WHERE id = ?1 AND (state = 'dead' OR state = 'cancelled')";

/// The next jobs in one state that a bulk retry or cancel acts on, in id
/// order after ?2 (a cursor, so each batch starts where the last ended and a
/// job left as it was is not picked again): ?3 queue, ?4 kind, ?5 tenant, ?6
/// a `LIKE` pattern of the last error (each NULL for any), at most ?7.
/// Running and scheduled jobs through their partial indexes, as `list` does.
macro_rules! pick_jobs {
    ($from:literal, $state:literal) => {
        concat!(
            "
SELECT id FROM ",
            $from,
            "
WHERE ",
            $state,
            " AND id > ?2
  AND (?3 IS NULL OR queue = ?3)
  AND (?4 IS NULL OR kind = ?4)
  AND (?5 IS NULL OR tenant = ?5)
  AND (?6 IS NULL OR last_error LIKE ?6 ESCAPE '\\')
ORDER BY id
LIMIT CAST(?7 AS INTEGER)"
        )
    };
}
pub(crate) const PICK_JOBS: &str = pick_jobs!("jobs", "state = ?1");
pub(crate) const PICK_RUNNING: &str = pick_jobs!(
    "jobs INDEXED BY jobs_running",
    "state = 'running' AND ?1 = 'running'"
);
pub(crate) const PICK_SCHEDULED: &str = pick_jobs!(
    "jobs INDEXED BY jobs_scheduled",
    "state = 'scheduled' AND ?1 = 'scheduled'"
);

/// Jobs a bulk operation changes per write transaction: the write lock is
/// given back between batches, so workers keep claiming.
pub(super) const BULK_BATCH_SIZE: i64 = 1_000;

/// The state a bulk retry revives: dead unless the selection says cancelled.
pub(super) fn retry_state(selection: &JobSelection) -> Result<JobState> {
    match selection.state {
        None => Ok(JobState::Dead),
        Some(st @ (JobState::Dead | JobState::Cancelled)) => Ok(st),
        Some(other) => Err(Error::invalid(
            "state",
            format!(
                "a retry revives dead or cancelled jobs, not {} ones",
                other.as_str()
            ),
        )),
    }
}

/// The states a bulk cancel acts on: every unfinished one unless the
/// selection names one of them.
pub(super) fn cancel_states(selection: &JobSelection) -> Result<&'static [JobState]> {
    match selection.state {
        None => Ok(&[JobState::Scheduled, JobState::Ready, JobState::Running]),
        Some(JobState::Scheduled) => Ok(&[JobState::Scheduled]),
        Some(JobState::Ready) => Ok(&[JobState::Ready]),
        Some(JobState::Running) => Ok(&[JobState::Running]),
        Some(other) => Err(Error::invalid(
            "state",
            format!(
                "a cancel stops scheduled, ready or running jobs, not {} ones",
                other.as_str()
            ),
        )),
    }
}

/// Check a bulk selection's names, and give its last-error `LIKE` pattern.
pub(super) fn checked_pattern(selection: &JobSelection) -> Result<Option<String>> {
    if let Some(q) = &selection.queue {
        validate_name("queue", q)?;
    }
    if let Some(k) = &selection.kind {
        validate_name("kind", k)?;
    }
    if let Some(t) = &selection.tenant {
        crate::store::job::validate_tenant(t)?;
    }
    Ok(error_pattern(selection.error_contains.as_deref()))
}

/// The `LIKE` pattern of an error-text filter (none for an empty one).
pub(super) fn error_pattern(needle: Option<&str>) -> Option<String> {
    needle.filter(|t| !t.is_empty()).map(like_pattern)
}

/// A bulk operation failed part-way: say how many jobs it changed before.
pub(super) fn bulk_error(e: Error, what: &'static str, done: usize) -> Error {
    if done == 0 {
        return e;
    }
    Error::PartlyDone {
        done,
        what,
        source: Box::new(e),
    }
}

/// A `LIKE … ESCAPE '\'` pattern matching any text that contains `needle`
/// (ASCII letters in any case): its `%`, `_` and `\` taken literally.
fn like_pattern(needle: &str) -> String {
    let mut p = String::with_capacity(needle.len() + 2);
    p.push('%');
    for c in needle.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("JOB_STATE", JOB_STATE),
    ("CANCEL_WAITING", CANCEL_WAITING),
    ("REQUEST_CANCEL", REQUEST_CANCEL),
    ("REVIVE", REVIVE),
    ("PICK_JOBS", PICK_JOBS),
    ("PICK_RUNNING", PICK_RUNNING),
    ("PICK_SCHEDULED", PICK_SCHEDULED),
];

impl SqliteStore {
    /// Cancel a job: a waiting one at once; a running one is flagged, and its
    /// worker sees the flag at once when it runs in this process, else as
    /// soon as its process notices the commit.
    pub fn cancel(&self, id: JobId) -> Result<CancelOutcome> {
        let now = self.now();
        let mut notified = 0;
        let outcome = self.write("cancel", |tx| {
            let state: String = tx
                .prepare_cached(JOB_STATE)?
                .query_row([id], |r| r.get(0))
                .optional()?
                .ok_or(Error::NotFound { job_id: id })?;
            match state.as_str() {
                "scheduled" | "ready" => {
                    tx.prepare_cached(CANCEL_WAITING)?
                        .execute(params![id, now])?;
                    notified = notify::enqueue_ended(tx, now)?;
                    Ok(CancelOutcome::Cancelled)
                }
                "running" => {
                    tx.prepare_cached(REQUEST_CANCEL)?.execute([id])?;
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

    /// Revive a dead or cancelled job: ready now, with a fresh set of
    /// `max_attempts` tries.
    pub fn retry(&self, id: JobId) -> Result<()> {
        let now = self.now();
        self.write("retry", |tx| {
            let (state, key): (String, Option<String>) = tx
                .prepare_cached(JOB_STATE)?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .ok_or(Error::NotFound { job_id: id })?;
            if state != "dead" && state != "cancelled" {
                return Err(Error::InvalidState {
                    job_id: id,
                    state,
                    operation: "retry (only dead or cancelled jobs)",
                });
            }
            match tx.prepare_cached(REVIVE)?.execute(params![id, now]) {
                Ok(_) => Ok(()),
                Err(e)
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) =>
                {
                    let key = key.unwrap_or_default();
                    let holder: JobId = tx
                        .prepare_cached(crate::store::enqueue::LIVE_JOB_BY_KEY)?
                        .query_row([&key], |r| r.get(0))?;
                    Err(Error::Conflict {
                        key,
                        job_id: holder,
                    })
                }
                Err(e) => Err(e.into()),
            }
        })?;
        tracing::info!(job_id = id, "retry");
        self.notify_work();
        Ok(())
    }

    /// Revive every job matching `selection` that is dead (or, with
    /// `state: Some(Cancelled)`, cancelled): ready now, each with a fresh set
    /// of tries — what [`Store::retry`](crate::store::Backend::retry) does to one job.  A job whose unique
    /// key a waiting or running job holds stays as it was and is reported.
    ///
    /// Jobs go in batches of 1,000, each its own write transaction (the
    /// write lock is given back between them, so workers keep claiming): a
    /// failure part-way reports how many were retried before it.
    pub fn retry_matching(&self, selection: &JobSelection) -> Result<RetryReport> {
        let state = retry_state(selection)?;
        let pattern = checked_pattern(selection)?;
        let mut report = RetryReport::default();
        let outcome = self.for_each_batch(
            selection,
            pattern.as_deref(),
            state,
            |tx, ids, now| {
                let mut revive = tx.prepare_cached(REVIVE)?;
                let (mut retried, mut key_taken) = (0, Vec::new());
                for &id in ids {
                    match revive.execute(params![id, now]) {
                        Ok(n) => retried += n,
                        Err(e)
                            if e.sqlite_error_code()
                                == Some(rusqlite::ErrorCode::ConstraintViolation) =>
                        {
                            key_taken.push(id)
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok((retried, key_taken))
            },
            |(retried, key_taken)| {
                report.retried += retried;
                report.key_taken.extend(key_taken);
            },
        );
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

    /// Cancel every unfinished job matching `selection` (or only those in
    /// its `state`: scheduled, ready or running) — what [`Store::cancel`](crate::store::Backend::cancel)
    /// does to one job: a waiting job is cancelled at once, a running one is
    /// asked to stop.  In batches, like [`Store::retry_matching`](crate::store::Backend::retry_matching).
    pub fn cancel_matching(&self, selection: &JobSelection) -> Result<CancelReport> {
        let states = cancel_states(selection)?;
        let pattern = checked_pattern(selection)?;
        let mut report = CancelReport::default();
        let mut outcome = Ok(());
        for &state in states {
            let running = state == JobState::Running;
            let count = if running {
                &mut report.requested
            } else {
                &mut report.cancelled
            };
            outcome = self.for_each_batch(
                selection,
                pattern.as_deref(),
                state,
                |tx, ids, now| {
                    let mut changed = 0;
                    if running {
                        let mut request = tx.prepare_cached(REQUEST_CANCEL)?;
                        for &id in ids {
                            changed += request.execute([id])?;
                        }
                    } else {
                        let mut cancel = tx.prepare_cached(CANCEL_WAITING)?;
                        for &id in ids {
                            changed += cancel.execute(params![id, now])?;
                        }
                    }
                    Ok(changed)
                },
                |changed| *count += changed,
            );
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

    /// Pick the jobs in `state` matching `selection` (its last-error
    /// `pattern` from [`checked_pattern`]) a batch at a time (a read), and
    /// run `apply` on each batch in its own write transaction; `tally` gets
    /// what each committed batch returned.
    fn for_each_batch<T>(
        &self,
        selection: &JobSelection,
        pattern: Option<&str>,
        state: JobState,
        mut apply: impl FnMut(&rusqlite::Transaction, &[JobId], Millis) -> Result<T>,
        mut tally: impl FnMut(T),
    ) -> Result<()> {
        self.pick_batches(selection, pattern, state, |ids| {
            let now = self.now();
            let mut notified = 0;
            tally(self.write("bulk change", |tx| {
                let applied = apply(tx, ids, now)?;
                notified = notify::enqueue_ended(tx, now)?;
                Ok(applied)
            })?);
            if notified > 0 {
                self.notify_work();
            }
            Ok(())
        })
    }

    /// How many jobs [`Store::retry_matching`](crate::store::Backend::retry_matching) would revive now: a read
    /// that changes nothing (the same jobs it would pick; one whose unique
    /// key is taken is counted — only the retry can tell it apart).
    pub fn count_retryable(&self, selection: &JobSelection) -> Result<usize> {
        let state = retry_state(selection)?;
        let pattern = checked_pattern(selection)?;
        self.count_picked(selection, pattern.as_deref(), state)
    }

    /// What [`Store::cancel_matching`](crate::store::Backend::cancel_matching) would do now: how many waiting jobs
    /// it would cancel and how many running ones it would ask to stop.  A
    /// read that changes nothing.
    pub fn count_cancellable(&self, selection: &JobSelection) -> Result<CancelReport> {
        let states = cancel_states(selection)?;
        let pattern = checked_pattern(selection)?;
        let mut report = CancelReport::default();
        for &state in states {
            let n = self.count_picked(selection, pattern.as_deref(), state)?;
            if state == JobState::Running {
                report.requested += n;
            } else {
                report.cancelled += n;
            }
        }
        Ok(report)
    }

    fn count_picked(
        &self,
        selection: &JobSelection,
        pattern: Option<&str>,
        state: JobState,
    ) -> Result<usize> {
        let mut n = 0;
        self.pick_batches(selection, pattern, state, |ids| {
            n += ids.len();
            Ok(())
        })?;
        Ok(n)
    }

    /// Pick the jobs in `state` matching `selection` in batches of
    /// [`BULK_BATCH_SIZE`], each a read that seeks past the last, and hand
    /// each batch to `each` before picking the next.
    fn pick_batches(
        &self,
        selection: &JobSelection,
        pattern: Option<&str>,
        state: JobState,
        mut each: impl FnMut(&[JobId]) -> Result<()>,
    ) -> Result<()> {
        let pick = match state {
            JobState::Running => PICK_RUNNING,
            JobState::Scheduled => PICK_SCHEDULED,
            _ => PICK_JOBS,
        };
        let mut after: JobId = 0;
        loop {
            let ids: Vec<JobId> = self.with_conn("picking jobs", |c| {
                let mut stmt = c.prepare_cached(pick)?;
                let rows = stmt.query_map(
                    params![
                        state.as_str(),
                        after,
                        selection.queue,
                        selection.kind,
                        selection.tenant,
                        pattern,
                        BULK_BATCH_SIZE
                    ],
                    |r| r.get(0),
                )?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
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
}
