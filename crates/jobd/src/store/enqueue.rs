//! Enqueueing: one job, many in one transaction, or inside the caller's own
//! transaction so that an app commits its data and its job atomically.

use rusqlite::{Connection, ToSql};

use crate::clock::{duration_ms, Millis};
use crate::error::{Error, Result};
use crate::store::job::{JobId, NewJob, RunAt};
use crate::store::notify;
use crate::store::{returning_row, SqliteStore};

/// The insert's head and its rows of parameters: one column list for the
/// single and the multi-row inserts.  Bound from [`JobRow::values`].
///
/// A one-row insert asks for its id only when the newest jobs were deleted
/// (`job_id_floor`, schema 8, is above every id left): then it is one above
/// the floor, so no id comes back; otherwise NULL, SQLite's max(id) plus
/// one.  A multi-row insert leaves the ids to SQLite (see [`insert_batch`]).
macro_rules! insert_jobs_columns {
    () => {
        "queue, kind, payload, state, priority, run_at, max_attempts, attempt_limit,
         backoff_base_ms, backoff_max_ms, timeout_ms, unique_key, tenant, created_at, notify"
    };
}
macro_rules! insert_jobs_head {
    () => {
        concat!("\nINSERT INTO jobs (", insert_jobs_columns!(), ")\nVALUES ")
    };
}
macro_rules! insert_jobs_row {
    () => {
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    };
}
/// The one-row insert, with its id.
macro_rules! insert_one_job {
    () => {
        concat!(
            "\nINSERT INTO jobs (id, ",
            insert_jobs_columns!(),
            ")\nVALUES ((SELECT id + 1 FROM job_id_floor WHERE id > (SELECT coalesce(max(id), 0) FROM jobs)), ",
            "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
    };
}

/// Insert a job unless a live job holds its unique key (then insert nothing).
pub(crate) const INSERT_JOB: &str = concat!(
    insert_one_job!(),
    "
ON CONFLICT (unique_key)
    WHERE unique_key IS NOT NULL AND (state = 'scheduled' OR state = 'ready' OR state = 'running')
DO NOTHING
RETURNING id"
);

/// Insert a job that has no unique key: nothing can conflict, and the id is
/// `last_insert_rowid()` — no `RETURNING`, which costs SQLite a temporary
/// table per row.
pub(crate) const INSERT_PLAIN_JOB: &str = insert_one_job!();

/// Parameters of one row of the insert.
const ROW_PARAMS: usize = 15;
/// Jobs per multi-row `INSERT`: a run of jobs goes in the largest of these
/// chunks that fits, what is left below the smallest goes in one by one.  A
/// few fixed sizes keep the connection's statement cache to three entries
/// (rows per statement beyond ~32 measured no faster).
pub(crate) const INSERT_CHUNKS: [usize; 3] = [64, 16, 4];

/// The largest id in the table, and the largest ever deleted (schema 8):
/// where the next ids continue.
pub(crate) const MAX_JOB_ID: &str = "
SELECT coalesce((SELECT max(id) FROM jobs), 0), (SELECT id FROM job_id_floor)";

/// The live job holding a unique key.
pub(crate) const LIVE_JOB_BY_KEY: &str = "
SELECT id FROM jobs
WHERE unique_key = ?1 AND (state = 'scheduled' OR state = 'ready' OR state = 'running')";

/// Every named statement of this module, for the prepare-them-all test.
#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("INSERT_JOB", INSERT_JOB),
    ("INSERT_PLAIN_JOB", INSERT_PLAIN_JOB),
    ("LIVE_JOB_BY_KEY", LIVE_JOB_BY_KEY),
    ("MAX_JOB_ID", MAX_JOB_ID),
];

impl SqliteStore {
    /// Enqueue one job and return its id.  When the job has a unique key that a
    /// scheduled, ready or running job already holds, nothing is inserted and
    /// that job's id is returned.
    pub fn enqueue(&self, job: &NewJob) -> Result<JobId> {
        let max = self.inner.opts.max_payload_bytes;
        let payload = job.validate(max)?;
        let now = self.now();
        let id = if job.unique_key.is_none() {
            // One statement is its own transaction: no BEGIN/COMMIT round trips.
            self.with_conn("enqueue", |conn| insert_validated(conn, job, payload, now))?
        } else {
            self.write("enqueue", |tx| insert_validated(tx, job, payload, now))?
        };
        tracing::debug!(job_id = id, queue = %job.queue, kind = %job.kind, "enqueued");
        self.notify_work();
        Ok(id)
    }

    /// Enqueue many jobs in one transaction: all or none.  Ids come back in
    /// the order of `jobs`.
    pub fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<JobId>> {
        let payloads = validate_batch(jobs, self.inner.opts.max_payload_bytes)?;
        let now = self.now();
        let ids = self.write("enqueue_many", |tx| insert_batch(tx, jobs, &payloads, now))?;
        tracing::debug!(count = jobs.len(), "enqueued batch");
        self.notify_work();
        Ok(ids)
    }

    /// Enqueue on the caller's own connection to the same file, typically
    /// inside the caller's transaction: the job exists exactly when the
    /// caller's transaction commits.
    ///
    /// ```no_run
    /// # fn main() -> jobd::Result<()> {
    /// let store = jobd::SqliteStore::open("queue.db")?;
    /// let mut conn = rusqlite::Connection::open("queue.db").unwrap();
    /// let tx = conn.transaction().unwrap();
    /// tx.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY)", []).unwrap();
    /// tx.execute("INSERT INTO orders DEFAULT VALUES", []).unwrap();
    /// store.enqueue_in(&tx, &jobd::NewJob::new("email", "send_receipt"))?;
    /// tx.commit().unwrap();
    /// # Ok(()) }
    /// ```
    pub fn enqueue_in(&self, conn: &Connection, job: &NewJob) -> Result<JobId> {
        let payload = job.validate(self.inner.opts.max_payload_bytes)?;
        insert_validated(conn, job, payload, self.now()).map_err(|e| self.map_err("enqueue", e))
    }
}

/// Check every job of a batch; their payloads, or the first refusal naming
/// the job by its place in the batch.
pub(super) fn validate_batch(jobs: &[NewJob], max_payload: usize) -> Result<Vec<&str>> {
    jobs.iter()
        .enumerate()
        .map(|(i, job)| {
            job.validate(max_payload).map_err(|e| match e {
                Error::InvalidInput { field, reason } => Error::InvalidInput {
                    field,
                    reason: format!("job #{i} of the batch: {reason}"),
                },
                other => other,
            })
        })
        .collect()
}

/// Insert validated jobs in order and return their ids.  Runs of jobs without
/// a unique key go in multi-row `INSERT`s of up to 64 rows: one
/// statement execution instead of one per job.  Their ids are consecutive:
/// SQLite gives a new row the largest id plus one, and this transaction
/// holds the write lock.  Two cases go one job at a time instead: right
/// after the newest jobs were deleted the first job goes alone (its insert
/// takes the id above `job_id_floor`, and the rows after it follow on), and
/// when the largest id is near `i64::MAX` (SQLite then picks free ids at
/// random) every job does.
fn insert_batch(
    conn: &Connection,
    jobs: &[NewJob],
    payloads: &[&str],
    now: Millis,
) -> Result<Vec<JobId>> {
    let mut ids = Vec::with_capacity(jobs.len());
    let plain = jobs.iter().filter(|j| j.unique_key.is_none()).count();
    let (sequential, mut alone) = if plain > 1 {
        let (max, floor): (JobId, JobId) = conn
            .prepare_cached(MAX_JOB_ID)?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        (
            max.max(floor) < JobId::MAX - jobs.len() as JobId,
            usize::from(floor > max),
        )
    } else {
        (false, 0)
    };
    let mut i = 0;
    while i < jobs.len() {
        let run = if sequential && alone == 0 {
            let plain_run = jobs[i..]
                .iter()
                .take(INSERT_CHUNKS[0])
                .take_while(|j| j.unique_key.is_none())
                .count();
            INSERT_CHUNKS.into_iter().find(|&c| c <= plain_run)
        } else {
            None
        };
        let Some(run) = run else {
            ids.push(insert_validated(conn, &jobs[i], payloads[i], now)?);
            alone = alone.saturating_sub(1);
            i += 1;
            continue;
        };
        let last = insert_plain_chunk(conn, &jobs[i..i + run], &payloads[i..i + run], now)?;
        ids.extend(last - run as JobId + 1..=last);
        i += run;
    }
    Ok(ids)
}

/// `enqueue_many`'s multi-row `INSERT` of `rows` jobs without unique keys
/// (one of [`INSERT_CHUNKS`]): the head, then one row of parameters per job.
/// Its ids are SQLite's (a row asking `job_id_floor` for its id, as the
/// one-row insert does, would make SQLite copy the rows to a temporary
/// table first: the statement would read the table it writes).
pub(crate) fn insert_jobs_sql(rows: usize) -> String {
    let rows = vec![insert_jobs_row!(); rows].join(", ");
    format!(concat!(insert_jobs_head!(), "{}"), rows)
}

/// One multi-row `INSERT` of jobs without unique keys; returns the last id.
fn insert_plain_chunk(
    conn: &Connection,
    jobs: &[NewJob],
    payloads: &[&str],
    now: Millis,
) -> Result<JobId> {
    let mut stmt = conn.prepare_cached(&insert_jobs_sql(jobs.len()))?;
    for (k, (job, payload)) in jobs.iter().zip(payloads).enumerate() {
        let row = JobRow::new(job, payload, now);
        for (n, value) in row.values().into_iter().enumerate() {
            stmt.raw_bind_parameter(k * ROW_PARAMS + n + 1, value)?;
        }
    }
    // No conflict clause: every row is stored or the statement fails.
    let inserted = stmt.raw_execute()?;
    debug_assert_eq!(inserted, jobs.len());
    Ok(conn.last_insert_rowid())
}

/// One job's values, in the column order of the insert.
struct JobRow<'a> {
    job: &'a NewJob,
    payload: &'a str,
    state: &'static str,
    run_at: Millis,
    timeout_ms: Option<i64>,
    now: Millis,
    /// The checked list, as stored (`None` without one: nothing to build).
    notify: Option<String>,
}

impl<'a> JobRow<'a> {
    fn new(job: &'a NewJob, payload: &'a str, now: Millis) -> JobRow<'a> {
        let run_at = match job.run_at {
            RunAt::Now => now,
            RunAt::At(at) => at,
            RunAt::After(delay) => now.saturating_add(duration_ms(delay)),
        };
        JobRow {
            job,
            payload,
            state: if run_at > now { "scheduled" } else { "ready" },
            run_at,
            timeout_ms: job.timeout.map(duration_ms),
            now,
            notify: if job.notify.is_empty() {
                None
            } else {
                // Checked by `NewJob::validate` before any row is built.
                notify::stored_list(&job.notify).ok().flatten()
            },
        }
    }

    /// `max_attempts` twice: it is also the first `attempt_limit`.
    fn values(&self) -> [&dyn ToSql; ROW_PARAMS] {
        let job = self.job;
        [
            &job.queue,
            &job.kind,
            &self.payload,
            &self.state,
            &job.priority,
            &self.run_at,
            &job.max_attempts,
            &job.max_attempts,
            &job.backoff.base_ms,
            &job.backoff.max_ms,
            &self.timeout_ms,
            &job.unique_key,
            &job.tenant,
            &self.now,
            &self.notify,
        ]
    }
}

pub(crate) fn insert_validated(
    conn: &Connection,
    job: &NewJob,
    payload: &str,
    now: Millis,
) -> Result<JobId> {
    let row = JobRow::new(job, payload, now);
    let values = &row.values()[..];
    if job.unique_key.is_none() {
        // `execute` steps the statement to the end: in autocommit mode a
        // failed commit (a full disk) is reported, never a phantom id.
        conn.prepare_cached(INSERT_PLAIN_JOB)?.execute(values)?;
        return Ok(conn.last_insert_rowid());
    }
    let inserted: Option<JobId> = returning_row(conn, INSERT_JOB, values, |r| r.get(0))?;
    if let Some(id) = inserted {
        return Ok(id);
    }
    // The unique key is held by a live job: hand that one back.
    let key = job.unique_key.as_deref().unwrap_or_default();
    let existing: JobId = conn
        .prepare_cached(LIVE_JOB_BY_KEY)?
        .query_row([key], |r| r.get(0))?;
    tracing::debug!(
        job_id = existing,
        unique_key = key,
        "unique key already live; returning existing job"
    );
    Ok(existing)
}
