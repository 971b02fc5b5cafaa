//! Reading jobs back and operating on queues: get, list, stats, cancel,
//! retry, pause/resume, purge, checkpoint, integrity check.

use std::collections::BTreeMap;
use std::time::Duration;

use rusqlite::{params, OptionalExtension, Row};

use crate::clock::{duration_ms, Millis};
use crate::error::{Error, Result};
use crate::store::job::{
    validate_name, AttemptInfo, Backoff, CancelOutcome, JobId, JobInfo, JobState, JobSummary,
    ListFilter, Progress, QueueStats, Stats,
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

pub(crate) const LIST_JOBS: &str = "
SELECT id, queue, kind, state, priority, attempts, attempt_limit, tenant, progress_percent,
       progress_stage, last_error, run_at, created_at, finished_at
FROM jobs
WHERE (?1 IS NULL OR queue = ?1)
  AND (?2 IS NULL OR state = ?2)
  AND (?3 IS NULL OR kind = ?3)
  AND (?4 IS NULL OR tenant = ?4)
  AND (?5 IS NULL OR id < ?5)
ORDER BY id DESC
LIMIT CAST(?6 AS INTEGER)";

/// What [`Store::stats`] counts, one row per job, aggregated in Rust: SQLite
/// has no hash aggregate, and `GROUP BY queue, state` sorted every row of the
/// table (1.5 s on a million jobs; this scan and the counting: 0.5 s).
pub(crate) const STATS_ROWS: &str = "SELECT queue, state, run_at, attempts > 0 FROM jobs";

pub(crate) const QUEUE_SETTINGS: &str = "SELECT name, paused, concurrency FROM queues";

pub(crate) const LIVE_WORKERS: &str = "SELECT count(*) FROM workers WHERE last_heartbeat_at >= ?1";

pub(crate) const JOB_STATE: &str = "SELECT state, unique_key FROM jobs WHERE id = ?1";

pub(crate) const CANCEL_WAITING: &str = "
UPDATE jobs SET state = 'cancelled', finished_at = ?2, last_error = 'cancelled before it ran'
WHERE id = ?1";

pub(crate) const REQUEST_CANCEL: &str = "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1";

pub(crate) const REVIVE: &str = "
UPDATE jobs
SET state = 'ready', run_at = ?2, attempt_limit = attempts + max_attempts, cancel_requested = 0,
    finished_at = NULL, result = NULL
WHERE id = ?1";

pub(crate) const SET_PAUSED: &str = "
INSERT INTO queues (name, paused, updated_at) VALUES (?1, ?2, ?3)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at";

pub(crate) const SET_CONCURRENCY: &str = "
INSERT INTO queues (name, concurrency, updated_at) VALUES (?1, ?2, ?3)
ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency, updated_at = excluded.updated_at";

/// Finished jobs older than a cut-off, a bounded batch at a time so that the
/// write lock is never held for long.
pub(crate) const PURGE_BATCH: &str = "
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs
    WHERE state IN ('succeeded', 'dead', 'cancelled') AND finished_at < ?1
      AND (?2 IS NULL OR queue = ?2)
    LIMIT CAST(?3 AS INTEGER))";

const PURGE_BATCH_SIZE: i64 = 5_000;

/// Jobs whose payload or result is not JSON: jobd checks JSON before it
/// writes (schema/0004), so these were written behind its back.
pub(crate) const NOT_JSON: &str = "
SELECT id, 'payload' FROM jobs WHERE NOT json_valid(payload)
UNION ALL
SELECT id, 'result' FROM jobs WHERE result IS NOT NULL AND NOT json_valid(result)
LIMIT 20";

/// Every named statement of this module, for the prepare-them-all test.
#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("GET_JOB", GET_JOB),
    ("GET_ATTEMPTS", GET_ATTEMPTS),
    ("LIST_JOBS", LIST_JOBS),
    ("STATS_ROWS", STATS_ROWS),
    ("QUEUE_SETTINGS", QUEUE_SETTINGS),
    ("LIVE_WORKERS", LIVE_WORKERS),
    ("JOB_STATE", JOB_STATE),
    ("CANCEL_WAITING", CANCEL_WAITING),
    ("REQUEST_CANCEL", REQUEST_CANCEL),
    ("REVIVE", REVIVE),
    ("SET_PAUSED", SET_PAUSED),
    ("SET_CONCURRENCY", SET_CONCURRENCY),
    ("PURGE_BATCH", PURGE_BATCH),
    ("NOT_JSON", NOT_JSON),
];

fn state_col(r: &Row, i: usize) -> rusqlite::Result<JobState> {
    let s: String = r.get(i)?;
    s.parse().map_err(|e: Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    })
}

/// A text column, borrowed from the row (no allocation per row).
pub(crate) fn text_ref<'r>(r: &'r Row, i: usize) -> rusqlite::Result<&'r str> {
    Ok(r.get_ref(i)?.as_str()?)
}

/// The entry of `key` in a map aggregated over many rows: the key is copied
/// only the first time it is seen (`entry` would want an owned key per row).
pub(crate) fn tally<'m, V>(
    map: &'m mut BTreeMap<String, V>,
    key: &str,
    new: impl FnOnce() -> V,
) -> &'m mut V {
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
            let mut stmt = conn.prepare_cached(LIST_JOBS)?;
            let rows = stmt.query_map(
                params![
                    filter.queue,
                    filter.state.map(JobState::as_str),
                    filter.kind,
                    filter.tenant,
                    filter.before_id,
                    limit
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
    /// number of live workers.
    pub fn stats(&self) -> Result<Stats> {
        let now = self.now();
        let live_since = now - duration_ms(self.inner.opts.worker_liveness);
        self.with_conn("stats", |conn| {
            let mut queues: BTreeMap<String, QueueStats> = BTreeMap::new();
            let mut stmt = conn.prepare_cached(STATS_ROWS)?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let queue = text_ref(r, 0)?;
                let state: JobState = text_ref(r, 1)?.parse()?;
                let run_at: Millis = r.get(2)?;
                let tried: bool = r.get(3)?;
                let q = tally(&mut queues, queue, || QueueStats {
                    queue: queue.to_string(),
                    ..Default::default()
                });
                match state {
                    JobState::Scheduled => {
                        q.scheduled += 1;
                        q.failed += i64::from(tried); // waiting to retry
                    }
                    JobState::Ready => {
                        q.ready += 1;
                        // The earliest run_at for now; made an age below.
                        let earliest = q.oldest_ready_age_ms.get_or_insert(run_at);
                        *earliest = (*earliest).min(run_at);
                    }
                    JobState::Running => q.running += 1,
                    JobState::Succeeded => q.succeeded += 1,
                    JobState::Dead => {
                        q.dead += 1;
                        q.failed += 1;
                    }
                    JobState::Cancelled => q.cancelled += 1,
                }
            }
            drop(rows);
            for q in queues.values_mut() {
                q.oldest_ready_age_ms = q.oldest_ready_age_ms.map(|run_at| (now - run_at).max(0));
            }
            let mut stmt = conn.prepare_cached(QUEUE_SETTINGS)?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, bool>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })?;
            for row in rows {
                let (name, paused, concurrency) = row?;
                let q = queues.entry(name.clone()).or_insert_with(|| QueueStats {
                    queue: name,
                    ..Default::default()
                });
                q.paused = paused;
                q.concurrency = concurrency;
            }
            let live_workers = conn
                .prepare_cached(LIVE_WORKERS)?
                .query_row([live_since], |r| r.get(0))?;
            Ok(Stats {
                queues: queues.into_values().collect(),
                live_workers,
            })
        })
    }

    /// Worker processes whose heartbeat is fresher than the liveness window.
    pub fn live_workers(&self) -> Result<i64> {
        let live_since = self.now() - duration_ms(self.inner.opts.worker_liveness);
        self.with_conn("live workers", |conn| {
            Ok(conn
                .prepare_cached(LIVE_WORKERS)?
                .query_row([live_since], |r| r.get(0))?)
        })
    }

    /// Cancel a job: a waiting one at once; a running one is flagged, and its
    /// worker sees the flag at once when it runs in this process, else on its
    /// next heartbeat.
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

    /// Stop handing out jobs of `queue` (running ones finish).
    pub fn pause(&self, queue: &str) -> Result<()> {
        self.set_paused(queue, true)
    }

    /// Hand out jobs of `queue` again.
    pub fn resume(&self, queue: &str) -> Result<()> {
        self.set_paused(queue, false)
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

    /// Record a queue's concurrency limit (read by workers); `None` clears it.
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
        })
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
                Ok(tx.prepare_cached(PURGE_BATCH)?.execute(params![
                    cutoff,
                    queue,
                    PURGE_BATCH_SIZE
                ])?)
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
