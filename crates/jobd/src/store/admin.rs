//! Reading jobs back and operating on queues: get, list, stats, cancel,
//! retry, pause/resume, purge, checkpoint, integrity check.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, OptionalExtension, Row};

use crate::clock::{duration_ms, Millis};
use crate::error::{Error, Result};
use crate::store::job::{
    validate_name, AttemptInfo, Backoff, CancelOutcome, CancelReport, JobId, JobInfo, JobSelection,
    JobState, JobSummary, ListFilter, Progress, QueueStats, RetryReport, Stats,
};
use crate::store::Store;

pub(crate) const GET_JOB: &str = "
SELECT id, queue, kind, state, payload, priority, run_at, attempts, max_attempts, attempt_limit,
       backoff_base_ms, backoff_max_ms, timeout_ms, unique_key, tenant, lease_owner, lease_expires_at,
       cancel_requested, progress_percent, progress_stage, progress_detail, result, last_error,
       created_at, started_at, finished_at
FROM jobs WHERE id = ?1";

pub(crate) const GET_ATTEMPTS: &str = "
SELECT attempt, worker, started_at, finished_at, outcome, error
FROM attempts WHERE job_id = ?1 ORDER BY attempt";

/// A page of jobs, newest first: ?1 queue, ?2 state, ?3 kind, ?4 tenant (each
/// NULL for any), ?5 only ids below it (the next page), ?6 how many, ?7 a
/// `LIKE` pattern the last error must match (NULL for any).  The
/// variants differ only in how they find the rows (see [`Store::list`]).
macro_rules! list_jobs {
    ($from:literal, $state:literal) => {
        concat!(
            "
SELECT id, queue, kind, state, priority, attempts, attempt_limit, tenant, progress_percent,
       progress_stage, last_error, run_at, created_at, finished_at
FROM ",
            $from,
            "
WHERE ",
            $state,
            "
  AND (?1 IS NULL OR queue = ?1)
  AND (?3 IS NULL OR kind = ?3)
  AND (?4 IS NULL OR tenant = ?4)
  AND (?5 IS NULL OR id < ?5)
  AND (?7 IS NULL OR last_error LIKE ?7 ESCAPE '\\')
ORDER BY id DESC
LIMIT CAST(?6 AS INTEGER)"
        )
    };
}

/// Newest jobs first, walking the table from its end: the matching rows are
/// near the end for every filter but a rare state.
pub(crate) const LIST_JOBS: &str = list_jobs!("jobs", "(?2 IS NULL OR state = ?2)");
/// Running and scheduled jobs through their partial indexes (then sorted):
/// work in flight and the delayed backlog, found without reading the
/// finished jobs that outnumber them (a walk of the whole table on a big file
/// when they are old or few).  `?2` is the state, already in the `WHERE`.
pub(crate) const LIST_RUNNING: &str =
    list_jobs!("jobs INDEXED BY jobs_running", "state = 'running'");
pub(crate) const LIST_SCHEDULED: &str =
    list_jobs!("jobs INDEXED BY jobs_scheduled", "state = 'scheduled'");

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
/// scan and the counting: 0.46 s).  [`Store::stats_recent`] reuses the counts.
pub(crate) const FINISHED_ROWS: &str = "
SELECT queue, state, finished_at - coalesce(started_at, finished_at) FROM jobs";

pub(crate) const QUEUE_SETTINGS: &str = "SELECT name, paused, concurrency FROM queues";

pub(crate) const LIVE_WORKERS: &str = "SELECT count(*) FROM workers WHERE last_heartbeat_at >= ?1";

/// What the live workers serve and run (JSON arrays of names).
pub(crate) const LIVE_WORK: &str =
    "SELECT queues, kinds FROM workers WHERE last_heartbeat_at >= ?1";

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
const BULK_BATCH_SIZE: i64 = 1_000;

pub(crate) const SET_PAUSED: &str = "
INSERT INTO queues (name, paused, updated_at) VALUES (?1, ?2, ?3)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at";

pub(crate) const SET_CONCURRENCY: &str = "
INSERT INTO queues (name, concurrency, updated_at) VALUES (?1, ?2, ?3)
ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency, updated_at = excluded.updated_at";

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

/// Succeeded tries of purged jobs, per queue: read with the succeeded jobs
/// still in the file, so the two add up to a counter.
pub(crate) const PURGED_SUCCEEDED: &str = "
SELECT queue, tries, run_ms FROM purged_tries WHERE outcome = 'succeeded'";

const PURGE_BATCH_SIZE: i64 = 5_000;

/// Jobs whose payload or result is not JSON: jobd checks JSON before it
/// writes (schema/0004), so these were written behind its back.
pub(crate) const NOT_JSON: &str = "
SELECT id, 'payload' FROM jobs WHERE NOT json_valid(payload)
UNION ALL
SELECT id, 'result' FROM jobs WHERE result IS NOT NULL AND NOT json_valid(result)
LIMIT 20";

/// Whether the file knows a queue: settings of its own, a job in it (of any
/// state; a scan when there is none), purged history, or a worker (live or
/// not yet expired from the registry) that serves it.
pub(crate) const QUEUE_KNOWN: &str = "
SELECT EXISTS (SELECT 1 FROM queues WHERE name = ?1)
    OR EXISTS (SELECT 1 FROM purged_tries WHERE queue = ?1)
    OR EXISTS (SELECT 1 FROM workers, json_each(workers.queues) WHERE json_each.value = ?1)
    OR EXISTS (SELECT 1 FROM jobs WHERE queue = ?1)";

/// Every named statement of this module, for the prepare-them-all test.
#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("GET_JOB", GET_JOB),
    ("GET_ATTEMPTS", GET_ATTEMPTS),
    ("LIST_JOBS", LIST_JOBS),
    ("LIST_RUNNING", LIST_RUNNING),
    ("LIST_SCHEDULED", LIST_SCHEDULED),
    ("READY_BY_QUEUE", READY_BY_QUEUE),
    ("WAITING_ROWS", WAITING_ROWS),
    ("FINISHED_ROWS", FINISHED_ROWS),
    ("QUEUE_SETTINGS", QUEUE_SETTINGS),
    ("LIVE_WORKERS", LIVE_WORKERS),
    ("LIVE_WORK", LIVE_WORK),
    ("JOB_STATE", JOB_STATE),
    ("CANCEL_WAITING", CANCEL_WAITING),
    ("REQUEST_CANCEL", REQUEST_CANCEL),
    ("REVIVE", REVIVE),
    ("PICK_JOBS", PICK_JOBS),
    ("PICK_RUNNING", PICK_RUNNING),
    ("PICK_SCHEDULED", PICK_SCHEDULED),
    ("SET_PAUSED", SET_PAUSED),
    ("SET_CONCURRENCY", SET_CONCURRENCY),
    ("PURGE_PICK", PURGE_PICK),
    ("TALLY_PURGED", TALLY_PURGED),
    ("PURGE_PICKED", PURGE_PICKED),
    ("PURGED_SUCCEEDED", PURGED_SUCCEEDED),
    ("NOT_JSON", NOT_JSON),
    ("QUEUE_KNOWN", QUEUE_KNOWN),
];

/// The state a bulk retry revives: dead unless the selection says cancelled.
fn retry_state(selection: &JobSelection) -> Result<JobState> {
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
fn cancel_states(selection: &JobSelection) -> Result<&'static [JobState]> {
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
fn checked_pattern(selection: &JobSelection) -> Result<Option<String>> {
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
fn error_pattern(needle: Option<&str>) -> Option<String> {
    needle.filter(|t| !t.is_empty()).map(like_pattern)
}

/// A bulk operation failed part-way: say how many jobs it changed before.
fn bulk_error(e: Error, what: &'static str, done: usize) -> Error {
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

fn state_col(r: &Row, i: usize) -> rusqlite::Result<JobState> {
    let s: String = r.get(i)?;
    s.parse().map_err(|e: Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    })
}

/// A text column, borrowed from the row (no allocation per row).
fn text_ref<'r>(r: &'r Row, i: usize) -> rusqlite::Result<&'r str> {
    Ok(r.get_ref(i)?.as_str()?)
}

/// What the live workers on a file serve and run ([`Store::live_work`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveWork {
    /// Each live worker's own queues and kinds.
    pub workers: Vec<LiveWorker>,
}

/// One live worker's queues and kinds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveWorker {
    pub queues: std::collections::BTreeSet<String>,
    pub kinds: std::collections::BTreeSet<String>,
}

impl LiveWork {
    /// Whether some live worker serves `queue`.
    pub fn serves(&self, queue: &str) -> bool {
        self.workers.iter().any(|w| w.queues.contains(queue))
    }

    /// Whether some live worker runs `kind`.
    pub fn runs_kind(&self, kind: &str) -> bool {
        self.workers.iter().any(|w| w.kinds.contains(kind))
    }

    /// Whether one live worker both serves `queue` and runs `kind` (a job
    /// runs on whichever worker claims it: one serving its queue without
    /// its kind would fail it).
    pub fn runs(&self, queue: &str, kind: &str) -> bool {
        self.workers
            .iter()
            .any(|w| w.queues.contains(queue) && w.kinds.contains(kind))
    }
}

/// When [`Store::stats_recent`] may answer with finished counts read by an
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

fn count_live_workers(conn: &rusqlite::Connection, live_since: Millis) -> Result<i64> {
    Ok(conn
        .prepare_cached(LIVE_WORKERS)?
        .query_row([live_since], |r| r.get(0))?)
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

/// A text column's bytes, borrowed from the row (no UTF-8 check).
fn bytes_ref<'r>(r: &'r Row, i: usize) -> rusqlite::Result<&'r [u8]> {
    Ok(r.get_ref(i)?.as_bytes()?)
}

/// The entry of `key` in a map aggregated over many rows: the key is copied
/// only the first time it is seen (`entry` would want an owned key per row).
fn tally<'m, V>(map: &'m mut BTreeMap<String, V>, key: &str, new: impl FnOnce() -> V) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), new());
    }
    map.get_mut(key).expect("inserted above")
}

/// A JSON column.  Text that is not JSON (written behind jobd's back — see
/// [`NOT_JSON`]) comes back as a JSON string of the raw text, so one bad row
/// cannot make `get`, `list` or the dashboard fail; `jobd check` reports it.
fn json_col(r: &Row, i: usize) -> rusqlite::Result<serde_json::Value> {
    let s: String = r.get(i)?;
    Ok(serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s)))
}

impl Store {
    /// Everything about one job: state, progress, stage, result, error, tries.
    pub fn get(&self, id: JobId) -> Result<JobInfo> {
        self.with_conn("get", |conn| {
            let job = conn
                .prepare_cached(GET_JOB)?
                .query_row([id], |r| {
                    Ok(JobInfo {
                        id: r.get(0)?,
                        queue: r.get(1)?,
                        kind: r.get(2)?,
                        state: state_col(r, 3)?,
                        payload: json_col(r, 4)?,
                        priority: r.get(5)?,
                        run_at: r.get(6)?,
                        attempts: r.get(7)?,
                        max_attempts: r.get(8)?,
                        attempt_limit: r.get(9)?,
                        backoff: Backoff {
                            base_ms: r.get(10)?,
                            max_ms: r.get(11)?,
                        },
                        timeout_ms: r.get(12)?,
                        unique_key: r.get(13)?,
                        tenant: r.get(14)?,
                        worker: r.get(15)?,
                        lease_expires_at: r.get(16)?,
                        cancel_requested: r.get(17)?,
                        progress: Progress {
                            percent: r.get(18)?,
                            stage: r.get(19)?,
                            detail: r.get(20)?,
                        },
                        result: match r.get::<_, Option<String>>(21)? {
                            Some(_) => Some(json_col(r, 21)?),
                            None => None,
                        },
                        last_error: r.get(22)?,
                        created_at: r.get(23)?,
                        started_at: r.get(24)?,
                        finished_at: r.get(25)?,
                        attempt_log: Vec::new(),
                    })
                })
                .optional()?;
            let mut job = job.ok_or(Error::NotFound { job_id: id })?;
            let mut stmt = conn.prepare_cached(GET_ATTEMPTS)?;
            let rows = stmt.query_map([id], |r| {
                Ok(AttemptInfo {
                    attempt: r.get(0)?,
                    worker: r.get(1)?,
                    started_at: r.get(2)?,
                    finished_at: r.get(3)?,
                    outcome: r.get(4)?,
                    error: r.get(5)?,
                })
            })?;
            job.attempt_log = rows.collect::<rusqlite::Result<_>>()?;
            Ok(job)
        })
    }

    /// Jobs matching `filter`, newest first.
    ///
    /// Running and scheduled jobs are found through their indexes; any other
    /// filter walks the table from the newest job back until the page is
    /// full, which is quick while matching jobs are recent or common (ready
    /// jobs, succeeded ones, a queue, a kind) and reads the whole table when
    /// they are rare (a handful of dead jobs among a million succeeded).
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
        self.with_conn("list", |conn| {
            let sql = match filter.state {
                Some(JobState::Running) => LIST_RUNNING,
                Some(JobState::Scheduled) => LIST_SCHEDULED,
                _ => LIST_JOBS,
            };
            let mut stmt = conn.prepare_cached(sql)?;
            let rows = stmt.query_map(
                params![
                    filter.queue,
                    filter.state.map(JobState::as_str),
                    filter.kind,
                    filter.tenant,
                    filter.before_id,
                    limit,
                    error_pattern(filter.error_contains.as_deref()),
                ],
                |r| {
                    Ok(JobSummary {
                        id: r.get(0)?,
                        queue: r.get(1)?,
                        kind: r.get(2)?,
                        state: state_col(r, 3)?,
                        priority: r.get(4)?,
                        attempts: r.get(5)?,
                        attempt_limit: r.get(6)?,
                        tenant: r.get(7)?,
                        progress_percent: r.get(8)?,
                        progress_stage: r.get(9)?,
                        last_error: r.get(10)?,
                        run_at: r.get(11)?,
                        created_at: r.get(12)?,
                        finished_at: r.get(13)?,
                    })
                },
            )?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Counts per queue and state, the age of the oldest ready job, and the
    /// number of live workers: all read now, from one snapshot of the file.
    ///
    /// The finished counts (succeeded, dead, cancelled) read every job; see
    /// [`Store::stats_recent`] for callers that ask again and again.
    pub fn stats(&self) -> Result<Stats> {
        self.collect_stats(false)
    }

    /// [`Store::stats`] for callers that poll it (the dashboard every 2 s,
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

    fn last_finished(&self) -> std::sync::MutexGuard<'_, Option<Arc<FinishedCounts>>> {
        // A panic while it was held left a whole value (it is only assigned).
        self.inner
            .finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The last finished counts of this store, if young enough to reuse.
    fn reusable_finished(&self, now: Millis) -> Option<Arc<FinishedCounts>> {
        let reuse = self.inner.opts.stats_reuse;
        let last = self.last_finished();
        let f = last.as_ref()?;
        let fresh_for = duration_ms(f.cost.saturating_mul(reuse.factor));
        let age = now - f.counted_at;
        (f.cost >= reuse.min_scan && (0..fresh_for).contains(&age)).then(|| f.clone())
    }

    /// Worker processes whose heartbeat is fresher than the liveness window.
    pub fn live_workers(&self) -> Result<i64> {
        let live_since = self.now() - duration_ms(self.inner.opts.worker_liveness);
        self.with_conn("live workers", |conn| count_live_workers(conn, live_since))
    }

    /// The queues the live workers serve and the job kinds they run, as
    /// they registered them.  A row edited by hand into something that is
    /// not a JSON array of names adds nothing.
    pub fn live_work(&self) -> Result<LiveWork> {
        let live_since = self.now() - duration_ms(self.inner.opts.worker_liveness);
        self.with_conn("live work", |conn| {
            let mut work = LiveWork::default();
            let mut stmt = conn.prepare_cached(LIVE_WORK)?;
            let mut rows = stmt.query([live_since])?;
            while let Some(r) = rows.next()? {
                let names = |i| -> rusqlite::Result<Vec<String>> {
                    let text: String = r.get(i)?;
                    Ok(serde_json::from_str(&text).unwrap_or_default())
                };
                work.workers.push(LiveWorker {
                    queues: names(0)?.into_iter().collect(),
                    kinds: names(1)?.into_iter().collect(),
                });
            }
            Ok(work)
        })
    }

    /// Cancel a job: a waiting one at once; a running one is flagged, and its
    /// worker sees the flag at once when it runs in this process, else as
    /// soon as its process notices the commit.
    pub fn cancel(&self, id: JobId) -> Result<CancelOutcome> {
        let now = self.now();
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
    /// of tries — what [`Store::retry`] does to one job.  A job whose unique
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
    /// its `state`: scheduled, ready or running) — what [`Store::cancel`]
    /// does to one job: a waiting job is cancelled at once, a running one is
    /// asked to stop.  In batches, like [`Store::retry_matching`].
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
            tally(self.write("bulk change", |tx| apply(tx, ids, now))?);
            Ok(())
        })
    }

    /// How many jobs [`Store::retry_matching`] would revive now: a read
    /// that changes nothing (the same jobs it would pick; one whose unique
    /// key is taken is counted — only the retry can tell it apart).
    pub fn count_retryable(&self, selection: &JobSelection) -> Result<usize> {
        let state = retry_state(selection)?;
        let pattern = checked_pattern(selection)?;
        self.count_picked(selection, pattern.as_deref(), state)
    }

    /// What [`Store::cancel_matching`] would do now: how many waiting jobs
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

    /// Stop handing out jobs of `queue` (running ones finish).
    pub fn pause(&self, queue: &str) -> Result<()> {
        self.set_paused(queue, true)
    }

    /// Hand out jobs of `queue` again.
    pub fn resume(&self, queue: &str) -> Result<()> {
        self.set_paused(queue, false)
    }

    /// Whether anything in the file names `queue`: its settings, a job,
    /// purged history, or a registered worker serving it.  A queue none of
    /// these (nor a configuration) knows is most likely a typo.
    pub fn knows_queue(&self, queue: &str) -> Result<bool> {
        validate_name("queue", queue)?;
        self.with_conn("looking up a queue", |c| {
            Ok(c.prepare_cached(QUEUE_KNOWN)?
                .query_row([queue], |r| r.get(0))?)
        })
    }

    fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        validate_name("queue", queue)?;
        let now = self.now();
        self.with_conn("pause/resume", |c| {
            c.prepare_cached(SET_PAUSED)?
                .execute(params![queue, paused, now])?;
            Ok(())
        })?;
        tracing::info!(queue, paused, "queue paused state changed");
        self.notify_work();
        Ok(())
    }

    /// Limit how many jobs of `queue` run at once across the whole file —
    /// every worker, in every process — or lift the limit with `None`.
    ///
    /// A claim counts the queue's running jobs in its own write transaction,
    /// so the limit holds however many processes claim at once.  A job whose
    /// lease expired still counts until it is reaped.  Lowering the limit
    /// below what runs now stops nothing: no new job starts until the running
    /// ones are under it.  A worker's own per-queue concurrency still applies
    /// on top (the smaller wins).
    pub fn set_concurrency(&self, queue: &str, limit: Option<i64>) -> Result<()> {
        validate_name("queue", queue)?;
        if let Some(n) = limit {
            if n < 1 {
                return Err(Error::invalid("concurrency", format!("{n} is less than 1")));
            }
        }
        let now = self.now();
        self.with_conn("set_concurrency", |c| {
            c.prepare_cached(SET_CONCURRENCY)?
                .execute(params![queue, limit, now])?;
            Ok(())
        })?;
        tracing::info!(queue, limit, "queue concurrency limit changed");
        // A raised or lifted limit can make waiting jobs claimable.
        self.notify_work();
        Ok(())
    }

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
                    .query_map(params![cutoff, queue, PURGE_BATCH_SIZE], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                if ids.is_empty() {
                    return Ok(0);
                }
                let ids = serde_json::Value::from(ids).to_string();
                tx.prepare_cached(TALLY_PURGED)?.execute([&ids])?;
                Ok(tx.prepare_cached(PURGE_PICKED)?.execute([&ids])?)
            })?;
            total += n;
            if (n as i64) < PURGE_BATCH_SIZE {
                break;
            }
        }
        tracing::info!(deleted = total, "purged finished jobs");
        Ok(total)
    }

    /// Checkpoint the WAL into the database file and truncate it.
    pub fn checkpoint(&self) -> Result<()> {
        self.with_conn("checkpoint", |c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
    }

    /// `PRAGMA integrity_check`: `Ok(())` when the file is sound, else
    /// [`Error::Corrupt`] with SQLite's findings.
    pub fn integrity_check(&self) -> Result<()> {
        let findings: Vec<String> = self.with_conn("integrity_check", |c| {
            let mut stmt = c.prepare("PRAGMA integrity_check")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut findings: Vec<String> = rows.collect::<rusqlite::Result<_>>()?;
            let mut stmt = c.prepare(NOT_JSON)?;
            let bad = stmt.query_map([], |r| {
                Ok(format!(
                    "job {}: {} is not JSON",
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?
                ))
            })?;
            let bad: Vec<String> = bad.collect::<rusqlite::Result<_>>()?;
            if !bad.is_empty() {
                findings.retain(|f| f != "ok");
                findings.extend(bad);
            }
            Ok(findings)
        })?;
        if findings == ["ok"] {
            Ok(())
        } else {
            Err(Error::Corrupt {
                path: self.path().to_path_buf(),
                reason: findings.join("; "),
            })
        }
    }
}

/// A queue's concurrency limit as people type it (the CLI, the HTTP API): a
/// number of jobs at once, or `none` for no limit.  The range is checked by
/// [`Store::set_concurrency`].
pub fn parse_concurrency_limit(text: &str) -> Result<Option<i64>> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        Error::invalid(
            "concurrency",
            format!("{text:?} is not a number of jobs at once (or none)"),
        )
    })
}
