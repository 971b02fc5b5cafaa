//! State that libraries built on jobd keep beside the queue, by key (schema
//! 11, `state`): a cache of computed answers with an expiry, how far an
//! alert has read.  The same operations on every backend; keys are the
//! caller's (prefix them with the library's name: `analytics:…`).

use crate::clock::Millis;
use crate::error::{Error, Result};
use crate::store::job::{JobId, JobSummary};
use crate::store::read::summary_row;
use crate::store::SqliteStore;

/// What [`Store::state_swap`](crate::store::Backend::state_swap) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swap {
    /// The key held what was expected: it holds the new value now, and the
    /// job (if one was given) is enqueued, in the same transaction.
    Done { job_id: Option<JobId> },
    /// The key held something else (another process moved it first):
    /// nothing was written or enqueued.
    Changed,
}

/// One key's value, when it was written, and when it expires (if ever).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    pub value: String,
    pub updated_at: Millis,
    pub expires_at: Option<Millis>,
}

pub(crate) const GET_STATE: &str = "SELECT value, updated_at, expires_at FROM state WHERE key = ?1";

pub(crate) const PUT_STATE: &str = "
INSERT INTO state (key, value, updated_at, expires_at) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (key) DO UPDATE
SET value = excluded.value, updated_at = excluded.updated_at, expires_at = excluded.expires_at";

/// Expired entries under a prefix (`?1` a `LIKE` pattern of the prefix).
pub(crate) const PURGE_STATE: &str = "
DELETE FROM state WHERE expires_at <= ?2 AND key LIKE ?1 ESCAPE '\\'";

/// Dead jobs after `(?1, ?2)` in (finished_at, id) order, up to ?3
/// (through the `jobs_dead` index, schema 10).
pub(crate) const DEAD_SINCE: &str = "
SELECT id, queue, kind, state, priority, attempts, attempt_limit, tenant, progress_percent,
       progress_stage, last_error, run_at, created_at, finished_at, started_at, lease_owner
FROM jobs INDEXED BY jobs_dead
WHERE state = 'dead' AND (finished_at, id) > (?1, ?2) AND finished_at <= ?3
ORDER BY finished_at, id";

#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("GET_STATE", GET_STATE),
    ("PUT_STATE", PUT_STATE),
    ("PURGE_STATE", PURGE_STATE),
    ("DEAD_SINCE", DEAD_SINCE),
];

/// A key is 1 to 512 bytes.
pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 512 {
        return Err(Error::invalid("state key", "must be 1 to 512 bytes"));
    }
    Ok(())
}

/// The `LIKE … ESCAPE '\'` pattern of every key starting with `prefix`.
pub(crate) fn prefix_pattern(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

impl SqliteStore {
    /// The value under `key`, expired or not (the caller decides).
    pub fn state_get(&self, key: &str) -> Result<Option<StateEntry>> {
        check_key(key)?;
        self.with_conn("reading state", |c| {
            use rusqlite::OptionalExtension;
            Ok(c.prepare_cached(GET_STATE)?
                .query_row([key], |r| {
                    Ok(StateEntry {
                        value: r.get(0)?,
                        updated_at: r.get(1)?,
                        expires_at: r.get(2)?,
                    })
                })
                .optional()?)
        })
    }

    /// Set `key` to `value`, written now, expiring at `expires_at`.
    pub fn state_put(&self, key: &str, value: &str, expires_at: Option<Millis>) -> Result<()> {
        check_key(key)?;
        let now = self.clock().now_ms();
        self.with_conn("writing state", |c| {
            c.prepare_cached(PUT_STATE)?
                .execute(rusqlite::params![key, value, now, expires_at])?;
            Ok(())
        })
    }

    /// Delete the entries under `prefix` that expired by `now`; how many.
    pub fn state_purge(&self, prefix: &str, now: Millis) -> Result<usize> {
        let pattern = prefix_pattern(prefix);
        self.with_conn("purging state", |c| {
            Ok(c.prepare_cached(PURGE_STATE)?
                .execute(rusqlite::params![pattern, now])?)
        })
    }

    /// Set `key` to `value` if it holds `expected` now (`None`: absent), and
    /// enqueue `job` in the same transaction: a library's mark moved
    /// together with the work it gives rise to, once across processes.
    pub fn state_swap(
        &self,
        key: &str,
        expected: Option<&str>,
        value: &str,
        job: Option<&crate::store::NewJob>,
    ) -> Result<Swap> {
        check_key(key)?;
        let max = self.options().max_payload_bytes;
        let payload = job.map(|j| j.validate(max)).transpose()?;
        let now = self.clock().now_ms();
        let swap = self.write("swapping state", |tx| {
            use rusqlite::OptionalExtension;
            let current: Option<String> = tx
                .prepare_cached(GET_STATE)?
                .query_row([key], |r| r.get(0))
                .optional()?;
            if current.as_deref() != expected {
                return Ok(Swap::Changed);
            }
            tx.prepare_cached(PUT_STATE)?.execute(rusqlite::params![
                key,
                value,
                now,
                Option::<Millis>::None
            ])?;
            let job_id = match (job, payload) {
                (Some(j), Some(p)) => Some(crate::store::enqueue::insert_validated(tx, j, p, now)?),
                _ => None,
            };
            Ok(Swap::Done { job_id })
        })?;
        if matches!(swap, Swap::Done { job_id: Some(_) }) {
            self.notify_work();
        }
        Ok(swap)
    }

    /// Dead jobs that died after `after` (`(finished_at, id)`, oldest first)
    /// and by `until`: what a dead-job alert reads since its mark.
    pub fn dead_since(&self, after: (Millis, JobId), until: Millis) -> Result<Vec<JobSummary>> {
        self.with_conn("reading dead jobs", |c| {
            let mut stmt = c.prepare_cached(DEAD_SINCE)?;
            let rows = stmt.query_map(rusqlite::params![after.0, after.1, until], summary_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }
}
