//! Retention: what old rows the queue file may drop — finished jobs (their
//! tries tallied per queue first, so that the counters of `/metrics` never
//! go down), progress reports and fired-tick records past a cutoff — and
//! `PRAGMA optimize`.

use std::time::Duration;

use rusqlite::{params, OptionalExtension};

use crate::clock::{duration_ms, Millis};
use crate::error::{Error, Result};
use crate::store::job::{validate_name, JobId, JobState};

/// A running job is not deleted: its worker would go on with it.
pub(super) fn check_deletable(id: JobId, state: &str) -> Result<()> {
    if state == "running" {
        return Err(Error::InvalidState {
            job_id: id,
            state: state.to_string(),
            operation: "delete a running job (cancel it, and delete it once it has stopped)",
        });
    }
    Ok(())
}
use crate::store::SqliteStore;

/// Finished jobs older than a cut-off, a bounded batch at a time so that the
/// write lock is never held for long.
pub(crate) const PURGE_PICK: &str = "
SELECT id FROM jobs
WHERE state IN ('succeeded', 'dead', 'cancelled') AND finished_at < ?1
  AND (?2 IS NULL OR queue = ?2)
LIMIT CAST(?3 AS INTEGER)";

/// Add the tries of the picked jobs (?1, a JSON array of ids) to the purged
/// tallies (schema/0007), so that counters of tries never go down: the
/// `tries` rows, and the succeeded try each succeeded job is the record of.
pub(crate) const TALLY_PURGED: &str = "
INSERT INTO purged_tries (queue, outcome, tries, run_ms)
SELECT queue, outcome, count(*), coalesce(sum(run_ms), 0)
FROM (SELECT j.queue AS queue, t.outcome AS outcome, t.finished_at - t.started_at AS run_ms
      FROM json_each(?1) AS p
      JOIN jobs AS j ON j.id = p.value
      JOIN tries AS t ON t.job_id = j.id
      UNION ALL
      SELECT j.queue, 'succeeded', j.finished_at - coalesce(j.started_at, j.finished_at)
      FROM json_each(?1) AS p
      JOIN jobs AS j ON j.id = p.value
      WHERE j.state = 'succeeded')
WHERE true
GROUP BY queue, outcome
ON CONFLICT (queue, outcome) DO UPDATE
SET tries = tries + excluded.tries, run_ms = run_ms + excluded.run_ms";

/// Delete the picked jobs (?1); their tries and progress go with them.
pub(crate) const PURGE_PICKED: &str = "
DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?1))";

/// Progress rows older than the cutoff (the latest report stays on the job row).
pub(crate) const PURGE_PROGRESS: &str = "
DELETE FROM progress WHERE id IN (
    SELECT id FROM progress WHERE at < ?1 LIMIT CAST(?2 AS INTEGER))";

/// Fired-tick rows older than the cutoff, never a schedule's latest: the
/// latest stays as the guard against firing it again.
pub(crate) const PURGE_FIRES: &str = "
DELETE FROM schedule_fires
WHERE fire_at < ?1
  AND fire_at < (SELECT coalesce(s.last_fire_at, 0) FROM schedules AS s
                 WHERE s.name = schedule_fires.schedule)";

#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("PURGE_PICK", PURGE_PICK),
    ("TALLY_PURGED", TALLY_PURGED),
    ("PURGE_PICKED", PURGE_PICKED),
    ("PURGE_PROGRESS", PURGE_PROGRESS),
    ("PURGE_FIRES", PURGE_FIRES),
    ("STATE_OF", STATE_OF),
];

/// Rows deleted per transaction, so that writers are never held up long.
/// A job's state, for a delete.
pub(crate) const STATE_OF: &str = "SELECT state FROM jobs WHERE id = ?1";

const BATCH: i64 = 5_000;

impl SqliteStore {
    /// Delete finished (succeeded, dead, cancelled) jobs that finished more than
    /// `older_than` ago, with their attempts and progress; optionally only in
    /// one queue.  Returns how many jobs were deleted.
    pub fn purge(&self, older_than: Duration, queue: Option<&str>) -> Result<usize> {
        if let Some(q) = queue {
            validate_name("queue", q)?;
        }
        let cutoff = self.now() - duration_ms(older_than);
        let mut total = 0;
        loop {
            let n = self.write("purge", |tx| {
                let ids: Vec<JobId> = tx
                    .prepare_cached(PURGE_PICK)?
                    .query_map(params![cutoff, queue, BATCH], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                if ids.is_empty() {
                    return Ok(0);
                }
                let ids = serde_json::Value::from(ids).to_string();
                tx.prepare_cached(TALLY_PURGED)?.execute([&ids])?;
                Ok(tx.prepare_cached(PURGE_PICKED)?.execute([&ids])?)
            })?;
            total += n;
            if (n as i64) < BATCH {
                break;
            }
        }
        tracing::info!(deleted = total, "purged finished jobs");
        Ok(total)
    }

    /// Delete progress reports made before `cutoff` (ms since the epoch),
    /// in batches; each job's latest report stays on its row.  Returns the
    /// number deleted.
    /// Delete one job that is waiting or finished, with its tries and
    /// progress (its tries stay in the counters, as a purge's do); a
    /// running job is refused — cancel it, then delete it once it stopped.
    /// The state it was in comes back.
    pub fn delete(&self, id: JobId) -> Result<JobState> {
        let state = self.write("delete", |tx| {
            let state: String = tx
                .prepare_cached(STATE_OF)?
                .query_row([id], |r| r.get(0))
                .optional()?
                .ok_or(Error::NotFound { job_id: id })?;
            check_deletable(id, &state)?;
            let ids = format!("[{id}]");
            tx.prepare_cached(TALLY_PURGED)?.execute([&ids])?;
            tx.prepare_cached(PURGE_PICKED)?.execute([&ids])?;
            Ok(state)
        })?;
        tracing::info!(job_id = id, state = %state, "deleted a job");
        state.parse()
    }

    pub fn purge_progress(&self, cutoff: Millis) -> Result<usize> {
        let mut purged = 0;
        loop {
            let n = self.write("purge progress", |tx| {
                Ok(tx
                    .prepare_cached(PURGE_PROGRESS)?
                    .execute(params![cutoff, BATCH])?)
            })?;
            purged += n;
            if (n as i64) < BATCH {
                return Ok(purged);
            }
        }
    }

    /// Delete the records of ticks fired before `cutoff`, except each
    /// schedule's latest (its guard against firing that tick again).
    pub fn purge_fires(&self, cutoff: Millis) -> Result<usize> {
        self.write("purge fired ticks", |tx| {
            Ok(tx.prepare_cached(PURGE_FIRES)?.execute([cutoff])?)
        })
    }

    /// `PRAGMA optimize`: refresh the query planner's statistics where
    /// they are stale.
    pub fn optimize(&self) -> Result<()> {
        self.with_conn("optimize", |c| Ok(c.execute_batch("PRAGMA optimize")?))
    }
}
