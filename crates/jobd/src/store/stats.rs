//! Counts per queue and state, in one read snapshot; the finished counts
//! are reused for a while when reading them cost much CPU.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Row;

use crate::clock::{duration_ms, Millis};
use crate::error::Result;
use crate::store::job::{QueueStats, Stats};
use crate::store::read::{bytes_ref, text_ref};
use crate::store::workers::count_live_workers;
use crate::store::SqliteStore;

/// Ready jobs per queue and the earliest `run_at` among them: a walk of the
/// `jobs_ready` index, which is in queue order (no sort, no table read).
pub(crate) const READY_BY_QUEUE: &str = "
SELECT queue, count(*), min(run_at) FROM jobs WHERE state = 'ready' GROUP BY queue";

/// Scheduled and running jobs, one row each (0 = scheduled, 1 = running),
/// found through their partial indexes; counted in Rust.  Both sets are as
/// big as the backlog of retries and delayed jobs and the work in flight.
pub(crate) const WAITING_ROWS: &str = "
SELECT queue, 0, attempts > 0 FROM jobs WHERE state = 'scheduled'
UNION ALL
SELECT queue, 1, 0 FROM jobs WHERE state = 'running'";

/// Every job's queue and state, and a succeeded job's run time, for counting
/// the finished ones in Rust.  No index covers finished jobs (one more index
/// entry per completion doubled the time of a batched complete — measured),
/// so this reads every job, and a `WHERE` on the state costs more than
/// skipping the other rows in Rust.  SQLite has no hash aggregate:
/// `GROUP BY queue, state` sorted every row (1.1 s on a million jobs; this
/// scan and the counting: 0.46 s).  [`Store::stats_recent`](crate::store::Backend::stats_recent) reuses the counts.
pub(crate) const FINISHED_ROWS: &str = "
SELECT queue, state, finished_at - coalesce(started_at, finished_at) FROM jobs";

pub(crate) const QUEUE_SETTINGS: &str = "SELECT name, paused, concurrency FROM queues";

/// When [`Store::stats_recent`](crate::store::Backend::stats_recent) may answer with finished counts read by an
/// earlier call instead of reading every job again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsReuse {
    /// Counts that cost less CPU than this to read are never reused: on a
    /// small file every answer is read now.
    pub min_scan: Duration,
    /// Reuse counts for `factor` times the CPU time they cost, so however
    /// often `stats_recent` is called, counting finished jobs takes at most
    /// about 1/`factor` of a core.
    pub factor: u32,
}

impl Default for StatsReuse {
    fn default() -> Self {
        StatsReuse {
            min_scan: Duration::from_millis(20),
            factor: 20,
        }
    }
}

/// Finished jobs per queue, and when and at what cost they were counted.
#[derive(Debug)]
pub(crate) struct FinishedCounts {
    counted_at: Millis,
    cost: Duration,
    by_queue: BTreeMap<String, Finished>,
}

/// One queue's finished jobs.
#[derive(Debug, Default, Clone, Copy)]
struct Finished {
    succeeded: i64,
    dead: i64,
    cancelled: i64,
    /// Run time of the succeeded jobs' winning tries, in ms.
    succeeded_run_ms: i64,
    /// Succeeded jobs purged from the file, and their run time in ms.
    purged_succeeded: i64,
    purged_succeeded_run_ms: i64,
}

impl Finished {
    fn add(&mut self, o: Finished) {
        self.succeeded += o.succeeded;
        self.dead += o.dead;
        self.cancelled += o.cancelled;
        self.succeeded_run_ms += o.succeeded_run_ms;
        self.purged_succeeded += o.purged_succeeded;
        self.purged_succeeded_run_ms += o.purged_succeeded_run_ms;
    }
}

fn count_finished(conn: &rusqlite::Connection, now: Millis) -> Result<FinishedCounts> {
    let started = thread_cpu_time();
    let mut counts: Vec<(Vec<u8>, Finished)> = Vec::new();
    let mut last = 0;
    let mut stmt = conn.prepare_cached(FINISHED_ROWS)?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let one = match bytes_ref(r, 1)? {
            b"succeeded" => Finished {
                succeeded: 1,
                succeeded_run_ms: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                ..Finished::default()
            },
            b"dead" => Finished {
                dead: 1,
                ..Finished::default()
            },
            b"cancelled" => Finished {
                cancelled: 1,
                ..Finished::default()
            },
            _ => continue, // waiting or running: counted through their indexes
        };
        slot(&mut counts, &mut last, bytes_ref(r, 0)?).add(one);
    }
    drop(rows);
    // In the same snapshot as the jobs counted above: a job is in one or
    // the other, never both.
    let mut stmt = conn.prepare_cached(PURGED_SUCCEEDED)?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        slot(&mut counts, &mut last, bytes_ref(r, 0)?).add(Finished {
            purged_succeeded: r.get(1)?,
            purged_succeeded_run_ms: r.get(2)?,
            ..Finished::default()
        });
    }
    Ok(FinishedCounts {
        counted_at: now,
        cost: thread_cpu_time().saturating_sub(started),
        by_queue: counts
            .into_iter()
            .map(|(q, n)| (String::from_utf8_lossy(&q).into_owned(), n))
            .collect(),
    })
}

/// The counts of `queue`, added the first time it is seen.  Queues are few:
/// a list searched from the last hit `at`, keyed by the bytes SQLite hands
/// out (no UTF-8 check or map lookup per row).
fn slot<'c>(
    counts: &'c mut Vec<(Vec<u8>, Finished)>,
    at: &mut usize,
    queue: &[u8],
) -> &'c mut Finished {
    if counts.get(*at).is_none_or(|(q, _)| q.as_slice() != queue) {
        *at = match counts.iter().position(|(q, _)| q.as_slice() == queue) {
            Some(i) => i,
            None => {
                counts.push((queue.to_vec(), Finished::default()));
                counts.len() - 1
            }
        };
    }
    &mut counts[*at].1
}

/// Run `sql` (no parameters) and hand each row to `fill` with the stats of
/// the queue its first column names.
fn per_queue(
    conn: &rusqlite::Connection,
    sql: &str,
    queues: &mut BTreeMap<String, QueueStats>,
    mut fill: impl FnMut(&mut QueueStats, &Row) -> rusqlite::Result<()>,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let queue = text_ref(r, 0)?;
        fill(tally(queues, queue, || QueueStats::named(queue)), r)?;
    }
    Ok(())
}

/// CPU time used by this thread: what a scan cost, without the time the
/// thread waited for a core (a busy machine must not make a small file's
/// counts look expensive).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The entry of `key` in a map aggregated over many rows: the key is copied
/// only the first time it is seen (`entry` would want an owned key per row).
pub(super) fn tally<'m, V>(
    map: &'m mut BTreeMap<String, V>,
    key: &str,
    new: impl FnOnce() -> V,
) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), new());
    }
    map.get_mut(key).expect("inserted above")
}

/// Succeeded tries of purged jobs, per queue: read with the succeeded jobs
/// still in the file, so the two add up to a counter.
pub(crate) const PURGED_SUCCEEDED: &str = "
SELECT queue, tries, run_ms FROM purged_tries WHERE outcome = 'succeeded'";

#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("PURGED_SUCCEEDED", PURGED_SUCCEEDED),
    ("READY_BY_QUEUE", READY_BY_QUEUE),
    ("WAITING_ROWS", WAITING_ROWS),
    ("FINISHED_ROWS", FINISHED_ROWS),
    ("QUEUE_SETTINGS", QUEUE_SETTINGS),
];

impl SqliteStore {
    /// Counts per queue and state, the age of the oldest ready job, and the
    /// number of live workers: all read now, from one snapshot of the file.
    ///
    /// The finished counts (succeeded, dead, cancelled) read every job; see
    /// [`Store::stats_recent`](crate::store::Backend::stats_recent) for callers that ask again and again.
    pub fn stats(&self) -> Result<Stats> {
        self.collect_stats(false)
    }

    /// [`Store::stats`](crate::store::Backend::stats) for callers that poll it (the dashboard every 2 s,
    /// `/api/v1/queues`, `/metrics`): the counts of scheduled, ready and
    /// running jobs, the oldest ready age and the live workers are read now,
    /// through indexes, at a cost that grows with the backlog only; the
    /// finished counts are taken from an earlier count of this store while
    /// that is young enough (see [`StatsReuse`]), and
    /// [`Stats::finished_age_ms`] says how old they are.  On a file whose
    /// finished jobs take less than [`StatsReuse::min_scan`] to count (about
    /// 40,000 jobs by default) every answer is read now.
    pub fn stats_recent(&self) -> Result<Stats> {
        self.collect_stats(true)
    }

    fn collect_stats(&self, reuse: bool) -> Result<Stats> {
        let now = self.now();
        let live_since = now - duration_ms(self.inner.opts.worker_liveness);
        let earlier = if reuse {
            self.reusable_finished(now)
        } else {
            None
        };
        self.with_conn("stats", |conn| {
            // One snapshot for every count read here.
            let tx = conn.unchecked_transaction()?;
            let mut queues: BTreeMap<String, QueueStats> = BTreeMap::new();
            per_queue(&tx, READY_BY_QUEUE, &mut queues, |q, r| {
                q.ready = r.get(1)?;
                let earliest: Millis = r.get(2)?;
                q.oldest_ready_age_ms = Some((now - earliest).max(0));
                Ok(())
            })?;
            per_queue(&tx, WAITING_ROWS, &mut queues, |q, r| {
                if r.get::<_, bool>(1)? {
                    q.running += 1;
                } else {
                    q.scheduled += 1;
                    q.failed += i64::from(r.get::<_, bool>(2)?); // waiting to retry
                }
                Ok(())
            })?;
            let finished = match &earlier {
                Some(f) => f.clone(),
                None => {
                    let f = Arc::new(count_finished(&tx, now)?);
                    *self.last_finished() = Some(f.clone());
                    f
                }
            };
            for (queue, n) in &finished.by_queue {
                let q = tally(&mut queues, queue, || QueueStats::named(queue));
                q.succeeded = n.succeeded;
                q.succeeded_run_ms = n.succeeded_run_ms;
                q.succeeded_total = n.succeeded + n.purged_succeeded;
                q.succeeded_total_run_ms = n.succeeded_run_ms + n.purged_succeeded_run_ms;
                q.dead = n.dead;
                q.cancelled = n.cancelled;
                q.failed += n.dead;
            }
            per_queue(&tx, QUEUE_SETTINGS, &mut queues, |q, r| {
                q.paused = r.get(1)?;
                q.concurrency = r.get(2)?;
                Ok(())
            })?;
            let live_workers = count_live_workers(&tx, live_since)?;
            tx.commit()?;
            Ok(Stats {
                queues: queues.into_values().collect(),
                live_workers,
                finished_age_ms: (now - finished.counted_at).max(0),
            })
        })
    }

    pub(super) fn last_finished(&self) -> std::sync::MutexGuard<'_, Option<Arc<FinishedCounts>>> {
        // A panic while it was held left a whole value (it is only assigned).
        self.inner
            .finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The last finished counts of this store, if worth reusing: while
    /// young enough, as they are; once older, still — while a thread of
    /// their own counts them again (one at a time), so that no caller (a
    /// dashboard, a scrape) waits for a count of a big file.
    pub(super) fn reusable_finished(&self, now: Millis) -> Option<Arc<FinishedCounts>> {
        let reuse = self.inner.opts.stats_reuse;
        let last = self.last_finished();
        let f = last.as_ref()?;
        let fresh_for = duration_ms(f.cost.saturating_mul(reuse.factor));
        let age = now - f.counted_at;
        if f.cost < reuse.min_scan || age < 0 {
            return None;
        }
        if age >= fresh_for && !self.inner.recounting.swap(true, Ordering::AcqRel) {
            let store = self.clone();
            let spawned = std::thread::Builder::new()
                .name("jobd-stats".into())
                .spawn(move || {
                    if let Err(e) = store.recount_finished() {
                        tracing::warn!(error = %e, "could not count the finished jobs again");
                    }
                    store.inner.recounting.store(false, Ordering::Release);
                });
            if spawned.is_err() {
                self.inner.recounting.store(false, Ordering::Release);
                return None;
            }
        }
        Some(f.clone())
    }

    /// Count the finished jobs now, for the next callers of `stats_recent`.
    fn recount_finished(&self) -> Result<()> {
        let now = self.now();
        let f = self.with_conn("stats", |conn| {
            let tx = conn.unchecked_transaction()?;
            let f = count_finished(&tx, now)?;
            tx.commit()?;
            Ok(f)
        })?;
        *self.last_finished() = Some(Arc::new(f));
        Ok(())
    }
}
