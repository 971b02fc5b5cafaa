//! Enqueueing: one job, many in one transaction, or inside the caller's own
//! transaction so that an app commits its data and its job atomically.

use rusqlite::{params, Connection};

use crate::clock::{duration_ms, Millis};
use crate::error::{Error, Result};
use crate::store::job::{JobId, NewJob, RunAt};
use crate::store::{returning_row, Store};

/// Insert a job unless a live job holds its unique key (then insert nothing).
pub(crate) const INSERT_JOB: &str = "
INSERT INTO jobs (queue, kind, payload, state, priority, run_at, max_attempts, attempt_limit,
                  backoff_base_ms, backoff_max_ms, timeout_ms, unique_key, tenant, created_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
ON CONFLICT (unique_key)
    WHERE unique_key IS NOT NULL AND (state = 'scheduled' OR state = 'ready' OR state = 'running')
DO NOTHING
RETURNING id";

/// Insert a job that has no unique key: nothing can conflict, and the id is
/// `last_insert_rowid()` — no `RETURNING`, which costs SQLite a temporary
/// table per row.
pub(crate) const INSERT_PLAIN_JOB: &str = "
INSERT INTO jobs (queue, kind, payload, state, priority, run_at, max_attempts, attempt_limit,
                  backoff_base_ms, backoff_max_ms, timeout_ms, unique_key, tenant, created_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

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
];

impl Store {
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
        let max = self.inner.opts.max_payload_bytes;
        let payloads = jobs
            .iter()
            .enumerate()
            .map(|(i, job)| {
                job.validate(max).map_err(|e| match e {
                    Error::InvalidInput { field, reason } => Error::InvalidInput {
                        field,
                        reason: format!("job #{i} of the batch: {reason}"),
                    },
                    other => other,
                })
            })
            .collect::<Result<Vec<&str>>>()?;
        let now = self.now();
        let ids = self.write("enqueue_many", |tx| {
            jobs.iter()
                .zip(&payloads)
                .map(|(job, payload)| insert_validated(tx, job, payload, now))
                .collect()
        })?;
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
    /// let store = jobd::Store::open("queue.db")?;
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

pub(crate) fn insert_validated(
    conn: &Connection,
    job: &NewJob,
    payload: &str,
    now: Millis,
) -> Result<JobId> {
    let run_at = match job.run_at {
        RunAt::Now => now,
        RunAt::At(at) => at,
        RunAt::After(delay) => now.saturating_add(duration_ms(delay)),
    };
    let state = if run_at > now { "scheduled" } else { "ready" };
    let values = params![
        job.queue,
        job.kind,
        payload,
        state,
        job.priority,
        run_at,
        job.max_attempts,
        job.backoff.base_ms,
        job.backoff.max_ms,
        job.timeout.map(duration_ms),
        job.unique_key,
        job.tenant,
        now,
    ];
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
