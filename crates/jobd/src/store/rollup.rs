//! Throughput and timing per queue and minute (schema/0012): the counters
//! the dashboard's charts and `/metrics`' histograms read, which survive
//! purges of the jobs they count.
//!
//! Every transaction that ends tries tallies them here ([`Tally`]: per
//! queue and minute, jobs succeeded, dead and cancelled, tries failed, and
//! run time and queue wait as histograms) and writes the tally with one
//! upsert per queue and minute — one statement for a whole batch of
//! completions.  The bucketing is written once, for every backend.

use rusqlite::{params, Transaction};
use serde::Serialize;

use crate::clock::Millis;
use crate::error::Result;
use crate::store::SqliteStore;

/// Upper bounds of the histograms' buckets, in ms; a last bucket holds the
/// rest.  The columns are named after them (`run_10ms` … `run_5m`, `run_more`).
pub const BUCKET_BOUNDS_MS: [Millis; 12] = [
    10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000,
];

/// Buckets per histogram: one per bound and one above them all.
pub const BUCKETS: usize = BUCKET_BOUNDS_MS.len() + 1;

/// One queue's counts for one minute (or, at [`Rollup::minute`] 0, for
/// everything before the rollups kept: purged minutes fold into it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Rollup {
    pub queue: String,
    /// Minutes since the Unix epoch.
    pub minute: i64,
    /// Jobs that succeeded, died and were cancelled in the minute.
    pub succeeded: i64,
    pub dead: i64,
    pub cancelled: i64,
    /// Tries that failed (to be retried or not).
    pub failed: i64,
    /// Run time (started → ended) of the tries that ended, summed (ms) and
    /// bucketed by [`BUCKET_BOUNDS_MS`] (not cumulative).
    pub run_ms: i64,
    pub run: [i64; BUCKETS],
    /// Queue wait (due → started) of the tries that ended, likewise.
    pub wait_ms: i64,
    pub wait: [i64; BUCKETS],
}

/// How a try ended, for the tally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    Succeeded,
    /// Failed; `dead` when the job is out of tries.
    Failed {
        dead: bool,
    },
    /// The job was cancelled (by its worker, or failing with a cancel asked).
    Cancelled,
}

fn bucket(ms: Millis) -> usize {
    BUCKET_BOUNDS_MS
        .iter()
        .position(|b| ms <= *b)
        .unwrap_or(BUCKET_BOUNDS_MS.len())
}

impl Rollup {
    /// Tries whose run time is counted.
    pub fn tries(&self) -> i64 {
        self.run.iter().sum()
    }

    /// Add `other`'s counts to these.
    pub fn add(&mut self, other: &Rollup) {
        self.succeeded += other.succeeded;
        self.dead += other.dead;
        self.cancelled += other.cancelled;
        self.failed += other.failed;
        self.run_ms += other.run_ms;
        self.wait_ms += other.wait_ms;
        for i in 0..BUCKETS {
            self.run[i] += other.run[i];
            self.wait[i] += other.wait[i];
        }
    }

    /// The `q` quantile (0..=1) of a histogram of this rollup, in ms, by
    /// linear interpolation inside its bucket (as Prometheus'
    /// `histogram_quantile`); `None` without counts.  Above the last bound
    /// the answer is that bound.
    pub fn quantile(histogram: &[i64; BUCKETS], q: f64) -> Option<f64> {
        let total: i64 = histogram.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0.0;
        for (i, n) in histogram.iter().enumerate() {
            let n = *n as f64;
            if n > 0.0 && seen + n >= rank {
                let Some(upper) = BUCKET_BOUNDS_MS.get(i) else {
                    return Some(BUCKET_BOUNDS_MS[BUCKETS - 2] as f64);
                };
                let lower = if i == 0 {
                    0.0
                } else {
                    BUCKET_BOUNDS_MS[i - 1] as f64
                };
                return Some(lower + (*upper as f64 - lower) * ((rank - seen) / n));
            }
            seen += n;
        }
        Some(BUCKET_BOUNDS_MS[BUCKETS - 2] as f64)
    }

    /// The row of a statement selecting `queue, minute` and then the
    /// counters in the schema's order.
    pub(crate) fn from_values(queue: String, minute: i64, v: &[i64]) -> Rollup {
        let mut r = Rollup {
            queue,
            minute,
            succeeded: v[0],
            failed: v[1],
            dead: v[2],
            cancelled: v[3],
            run_ms: v[4],
            wait_ms: v[5],
            ..Rollup::default()
        };
        r.run.copy_from_slice(&v[6..6 + BUCKETS]);
        r.wait.copy_from_slice(&v[6 + BUCKETS..6 + 2 * BUCKETS]);
        r
    }

    /// The counters in the schema's order (after `queue, minute`).
    pub(crate) fn values(&self) -> [i64; COUNTERS] {
        let mut v = [0; COUNTERS];
        v[..6].copy_from_slice(&[
            self.succeeded,
            self.failed,
            self.dead,
            self.cancelled,
            self.run_ms,
            self.wait_ms,
        ]);
        v[6..6 + BUCKETS].copy_from_slice(&self.run);
        v[6 + BUCKETS..].copy_from_slice(&self.wait);
        v
    }
}

/// The counter columns of a rollup row.
pub(crate) const COUNTERS: usize = 6 + 2 * BUCKETS;

/// What one transaction ends, per queue and minute (a handful of entries:
/// a linear search beats a map).
#[derive(Debug, Default)]
pub(crate) struct Tally(Vec<Rollup>);

impl Tally {
    /// A try of a job of `queue` ended `ended` at `now`; it started at
    /// `started_at` and was due at `due_at`.
    pub(crate) fn ended(
        &mut self,
        queue: &str,
        now: Millis,
        ended: Ended,
        started_at: Option<Millis>,
        due_at: Millis,
    ) {
        let minute = now.div_euclid(60_000);
        let at = match self
            .0
            .iter()
            .position(|r| r.minute == minute && r.queue == queue)
        {
            Some(i) => i,
            None => {
                self.0.push(Rollup {
                    queue: queue.to_string(),
                    minute,
                    ..Rollup::default()
                });
                self.0.len() - 1
            }
        };
        let r = &mut self.0[at];
        match ended {
            Ended::Succeeded => r.succeeded += 1,
            Ended::Failed { dead } => {
                r.failed += 1;
                r.dead += dead as i64;
            }
            Ended::Cancelled => r.cancelled += 1,
        }
        if let Some(started) = started_at {
            let run = (now - started).max(0);
            let wait = (started - due_at).max(0);
            r.run_ms += run;
            r.run[bucket(run)] += 1;
            r.wait_ms += wait;
            r.wait[bucket(wait)] += 1;
        }
    }

    pub(crate) fn rows(&self) -> &[Rollup] {
        &self.0
    }

    /// Write the tally in `tx` (SQLite).
    pub(crate) fn write(&self, tx: &Transaction) -> rusqlite::Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut stmt = tx.prepare_cached(ADD_ROLLUP)?;
        for r in &self.0 {
            let v = r.values();
            let mut p: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(2 + COUNTERS);
            p.push(&r.queue);
            p.push(&r.minute);
            p.extend(v.iter().map(|x| x as &dyn rusqlite::ToSql));
            stmt.execute(p.as_slice())?;
        }
        Ok(())
    }
}

/// The tries this store handle claimed and has not seen end, by job: what
/// the rollups need of a completion (queue, started, due), so that a batch
/// of completions — `complete_many`, the worker's turn, remote workers'
/// acknowledgements through the daemon — counts them without reading their
/// rows again.  A completion of a try claimed elsewhere (another process)
/// reads them from the file instead.  Entries of tries that ended another
/// way are dropped when they end here, or once the notes grow past
/// [`NOTES_KEPT`] and their lease has long expired.
#[derive(Debug, Default)]
pub(crate) struct ClaimNotes(std::sync::Mutex<std::collections::HashMap<i64, Note>>);

#[derive(Debug, Clone)]
pub(crate) struct Note {
    token: i64,
    pub(crate) queue: std::sync::Arc<str>,
    pub(crate) started_at: Millis,
    pub(crate) due_at: Millis,
    expires: Millis,
}

/// Notes kept before the stale ones are swept.
const NOTES_KEPT: usize = 100_000;

impl ClaimNotes {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<i64, Note>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Note the tries just claimed (after their transaction committed).
    pub(crate) fn claimed(&self, jobs: &[crate::store::ClaimedJob], now: Millis) {
        if jobs.is_empty() {
            return;
        }
        let mut notes = self.lock();
        if notes.len() + jobs.len() > NOTES_KEPT {
            notes.retain(|_, n| n.expires > now - 3_600_000);
        }
        let mut queue: Option<std::sync::Arc<str>> = None;
        for j in jobs {
            let q = match &queue {
                Some(q) if **q == *j.queue => q.clone(),
                _ => {
                    let q: std::sync::Arc<str> = j.queue.as_str().into();
                    queue = Some(q.clone());
                    q
                }
            };
            notes.insert(
                j.id,
                Note {
                    token: j.lease_token,
                    queue: q,
                    started_at: j.started_at,
                    due_at: j.due_at,
                    expires: j.lease_expires_at,
                },
            );
        }
    }

    /// Take the notes of these tries (`(id, token)`), in order; `None` for
    /// one this handle did not claim.
    pub(crate) fn take(&self, tries: impl Iterator<Item = (i64, i64)>) -> Vec<Option<Note>> {
        let mut notes = self.lock();
        tries
            .map(|(id, token)| match notes.remove(&id) {
                Some(n) if n.token == token => Some(n),
                Some(n) => {
                    notes.insert(id, n);
                    None
                }
                None => None,
            })
            .collect()
    }

    /// Forget these jobs' notes (their tries ended another way).
    pub(crate) fn forget(&self, ids: impl Iterator<Item = i64>) {
        let mut notes = self.lock();
        for id in ids {
            notes.remove(&id);
        }
    }
}

/// Add a tally's counts to a queue's minute.
pub(crate) const ADD_ROLLUP: &str = "
INSERT INTO rollups (queue, minute, succeeded, failed, dead, cancelled, run_ms, wait_ms, run_10ms, run_50ms, run_100ms, run_250ms, run_500ms, run_1s, run_2500ms, run_5s, run_10s, run_30s, run_1m, run_5m, run_more, wait_10ms, wait_50ms, wait_100ms, wait_250ms, wait_500ms, wait_1s, wait_2500ms, wait_5s, wait_10s, wait_30s, wait_1m, wait_5m, wait_more)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34)
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

/// The minutes from ?1 on, oldest first.
pub(crate) const ROLLUPS_SINCE: &str = "
SELECT * FROM rollups WHERE minute >= ?1 ORDER BY minute, queue";

/// Per queue, everything the file has counted (the purged minutes' fold
/// included).
pub(crate) const ROLLUP_TOTALS: &str = "
SELECT queue, 0, sum(succeeded), sum(failed), sum(dead), sum(cancelled), sum(run_ms), sum(wait_ms), sum(run_10ms), sum(run_50ms), sum(run_100ms), sum(run_250ms), sum(run_500ms), sum(run_1s), sum(run_2500ms), sum(run_5s), sum(run_10s), sum(run_30s), sum(run_1m), sum(run_5m), sum(run_more), sum(wait_10ms), sum(wait_50ms), sum(wait_100ms), sum(wait_250ms), sum(wait_500ms), sum(wait_1s), sum(wait_2500ms), sum(wait_5s), sum(wait_10s), sum(wait_30s), sum(wait_1m), sum(wait_5m), sum(wait_more)
FROM rollups GROUP BY queue ORDER BY queue";

/// Fold the minutes before ?1 into each queue's minute 0...
pub(crate) const FOLD_OLD_ROLLUPS: &str = "
INSERT INTO rollups
SELECT queue, 0, sum(succeeded), sum(failed), sum(dead), sum(cancelled), sum(run_ms), sum(wait_ms), sum(run_10ms), sum(run_50ms), sum(run_100ms), sum(run_250ms), sum(run_500ms), sum(run_1s), sum(run_2500ms), sum(run_5s), sum(run_10s), sum(run_30s), sum(run_1m), sum(run_5m), sum(run_more), sum(wait_10ms), sum(wait_50ms), sum(wait_100ms), sum(wait_250ms), sum(wait_500ms), sum(wait_1s), sum(wait_2500ms), sum(wait_5s), sum(wait_10s), sum(wait_30s), sum(wait_1m), sum(wait_5m), sum(wait_more)
FROM rollups WHERE minute > 0 AND minute < ?1
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

/// ...and delete them.
pub(crate) const PURGE_ROLLUPS: &str = "
DELETE FROM rollups WHERE minute > 0 AND minute < ?1";

#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("ADD_ROLLUP", ADD_ROLLUP),
    ("ROLLUPS_SINCE", ROLLUPS_SINCE),
    ("ROLLUP_TOTALS", ROLLUP_TOTALS),
    ("FOLD_OLD_ROLLUPS", FOLD_OLD_ROLLUPS),
    ("PURGE_ROLLUPS", PURGE_ROLLUPS),
];

pub(crate) fn read_rollups(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<Rollup>> {
    let mut out = Vec::new();
    let mut rows = stmt.query(params)?;
    while let Some(row) = rows.next()? {
        let mut v = [0i64; COUNTERS];
        for (i, x) in v.iter_mut().enumerate() {
            *x = row.get(i + 2)?;
        }
        out.push(Rollup::from_values(row.get(0)?, row.get(1)?, &v));
    }
    Ok(out)
}

impl SqliteStore {
    /// Every queue's rollups from minute `since` (minutes since the epoch)
    /// on, oldest first.
    pub fn rollups(&self, since: i64) -> Result<Vec<Rollup>> {
        self.with_conn("rollups", |c| {
            Ok(read_rollups(
                &mut c.prepare_cached(ROLLUPS_SINCE)?,
                [since.max(1)],
            )?)
        })
    }

    /// Per queue, every try the file has counted (purged minutes included):
    /// counters that never go down.
    pub fn rollup_totals(&self) -> Result<Vec<Rollup>> {
        self.with_conn("rollup totals", |c| {
            Ok(read_rollups(&mut c.prepare_cached(ROLLUP_TOTALS)?, [])?)
        })
    }

    /// Fold the minutes ended before `cutoff` into each queue's total
    /// (minute 0) and delete them; how many were.
    pub fn purge_rollups(&self, cutoff: Millis) -> Result<usize> {
        let minute = cutoff.div_euclid(60_000);
        self.write("purge rollups", |tx| {
            tx.prepare_cached(FOLD_OLD_ROLLUPS)?
                .execute(params![minute])?;
            Ok(tx.prepare_cached(PURGE_ROLLUPS)?.execute(params![minute])?)
        })
    }
}
