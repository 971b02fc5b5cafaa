//! Retention: what old rows the queue file may drop — progress reports and
//! fired-tick records past a cutoff — and `PRAGMA optimize`.

use rusqlite::params;

use crate::clock::Millis;
use crate::error::Result;
use crate::store::Store;

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
    ("PURGE_PROGRESS", PURGE_PROGRESS),
    ("PURGE_FIRES", PURGE_FIRES),
];

/// Rows deleted per transaction, so that writers are never held up long.
const BATCH: i64 = 5_000;

impl Store {
    /// Delete progress reports made before `cutoff` (ms since the epoch),
    /// in batches; each job's latest report stays on its row.  Returns the
    /// number deleted.
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
