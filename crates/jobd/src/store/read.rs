//! Reading jobs back: one job with its tries and progress, and lists of
//! jobs by queue, state, kind, tenant and error text, newest first.

use rusqlite::{params, OptionalExtension, Row};

use crate::error::{Error, Result};
use crate::store::control::error_pattern;
use crate::store::job::{
    validate_name, AttemptInfo, Backoff, JobId, JobInfo, JobState, JobSummary, ListFilter,
    PayloadMatch, Progress, ProgressEntry, PROGRESS_LOG_KEPT,
};
use crate::store::{notify, SqliteStore};

pub(crate) const GET_JOB: &str = "
SELECT id, queue, kind, state, payload, priority, run_at, attempts, max_attempts, attempt_limit,
       backoff_base_ms, backoff_max_ms, timeout_ms, unique_key, tenant, lease_owner, lease_expires_at,
       cancel_requested, progress_percent, progress_stage, progress_detail, result, last_error,
       created_at, started_at, finished_at, notify
FROM jobs WHERE id = ?1";

pub(crate) const GET_ATTEMPTS: &str = "
SELECT attempt, worker, started_at, finished_at, outcome, error
FROM attempts WHERE job_id = ?1 ORDER BY attempt";

/// The latest ?2 progress reports of a job, newest first.
pub(crate) const GET_PROGRESS: &str = "
SELECT attempt, at, percent, stage, detail
FROM progress WHERE job_id = ?1 ORDER BY id DESC LIMIT CAST(?2 AS INTEGER)";

/// A page of jobs, newest first: ?1 queue, ?2 state, ?3 kind, ?4 tenant (each
/// NULL for any), ?5 only ids below it (the next page), ?6 how many, ?7 a
/// `LIKE` pattern the last error must match (NULL for any), ?8 a JSON path
/// into the payload whose value must equal the JSON text ?9 (NULL for any),
/// ?10 only ids above it.  The ids' bounds are a range of the rowid (an
/// older page is a seek, not a walk from the newest job).  The
/// variants differ only in how they find the rows (see [`Store::list`](crate::store::Backend::list)).
macro_rules! list_jobs {
    ($from:literal, $state:literal) => {
        concat!(
            "
SELECT id, queue, kind, state, priority, attempts, attempt_limit, tenant, progress_percent,
       progress_stage, last_error, run_at, created_at, finished_at, started_at, lease_owner
FROM ",
            $from,
            "
WHERE ",
            $state,
            "
  AND (?1 IS NULL OR queue = ?1)
  AND (?3 IS NULL OR kind = ?3)
  AND (?4 IS NULL OR tenant = ?4)
  AND id < coalesce(?5, 9223372036854775807)
  AND id > coalesce(?10, -9223372036854775808)
  AND (?7 IS NULL OR last_error LIKE ?7 ESCAPE '\\')
  AND (?8 IS NULL OR json_extract(payload, ?8) = json_extract(?9, '$'))
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
/// Dead jobs through theirs (schema 10): the few that failed for good among
/// a million that succeeded, without walking the table.
pub(crate) const LIST_DEAD: &str = list_jobs!("jobs INDEXED BY jobs_dead", "state = 'dead'");

/// A row of the job lists (`list_jobs!`, and `state::DEAD_SINCE`: the same
/// columns).
pub(super) fn summary_row(r: &Row) -> rusqlite::Result<JobSummary> {
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
        started_at: r.get(14)?,
        worker: r.get(15)?,
    })
}

pub(super) fn state_col(r: &Row, i: usize) -> rusqlite::Result<JobState> {
    let s: String = r.get(i)?;
    s.parse().map_err(|e: Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    })
}

/// A text column, borrowed from the row (no allocation per row).
pub(super) fn text_ref<'r>(r: &'r Row, i: usize) -> rusqlite::Result<&'r str> {
    Ok(r.get_ref(i)?.as_str()?)
}

/// A JSON column.  Text that is not JSON (written behind jobd's back — see
/// [`NOT_JSON`]) comes back as a JSON string of the raw text, so one bad row
/// cannot make `get`, `list` or the dashboard fail; `jobd check` reports it.
pub(super) fn json_col(r: &Row, i: usize) -> rusqlite::Result<serde_json::Value> {
    let s: String = r.get(i)?;
    Ok(serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s)))
}

/// A text column's bytes, borrowed from the row (no UTF-8 check).
pub(super) fn bytes_ref<'r>(r: &'r Row, i: usize) -> rusqlite::Result<&'r [u8]> {
    Ok(r.get_ref(i)?.as_bytes()?)
}

#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("GET_JOB", GET_JOB),
    ("GET_ATTEMPTS", GET_ATTEMPTS),
    ("GET_PROGRESS", GET_PROGRESS),
    ("LIST_JOBS", LIST_JOBS),
    ("LIST_RUNNING", LIST_RUNNING),
    ("LIST_SCHEDULED", LIST_SCHEDULED),
    ("LIST_DEAD", LIST_DEAD),
];

impl SqliteStore {
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
                        notify: notify::parse_stored(r.get_ref(26)?.as_str_or_null()?),
                        attempt_log: Vec::new(),
                        progress_log: Vec::new(),
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
            let mut stmt = conn.prepare_cached(GET_PROGRESS)?;
            let rows = stmt.query_map(params![id, PROGRESS_LOG_KEPT], |r| {
                Ok(ProgressEntry {
                    attempt: r.get(0)?,
                    at: r.get(1)?,
                    percent: r.get(2)?,
                    stage: r.get(3)?,
                    detail: r.get(4)?,
                })
            })?;
            job.progress_log = rows.collect::<rusqlite::Result<_>>()?;
            job.progress_log.reverse();
            Ok(job)
        })
    }

    /// Jobs matching `filter`, newest first.
    ///
    /// Running, scheduled and dead jobs are found through their indexes; any other
    /// filter walks the table from the newest job back until the page is
    /// full, which is quick while matching jobs are recent or common (ready
    /// jobs, succeeded ones, a queue, a kind) and reads the whole table when
    /// they are rare (a handful of cancelled jobs among a million succeeded).
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
        let payload = filter
            .payload
            .as_deref()
            .map(PayloadMatch::parse)
            .transpose()?;
        let payload_path = payload.as_ref().map(PayloadMatch::sqlite_path);
        self.with_conn("list", |conn| {
            let sql = match filter.state {
                Some(JobState::Running) => LIST_RUNNING,
                Some(JobState::Scheduled) => LIST_SCHEDULED,
                Some(JobState::Dead) => LIST_DEAD,
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
                    payload_path,
                    payload.as_ref().map(|p| p.value.as_str()),
                    filter.after_id,
                ],
                summary_row,
            )?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }
}
