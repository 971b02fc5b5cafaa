//! Queue settings: pause and resume, concurrency limits across processes.

use rusqlite::params;

use crate::error::{Error, Result};
use crate::store::job::validate_name;
use crate::store::SqliteStore;

pub(crate) const SET_PAUSED: &str = "
INSERT INTO queues (name, paused, updated_at) VALUES (?1, ?2, ?3)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at";

pub(crate) const SET_CONCURRENCY: &str = "
INSERT INTO queues (name, concurrency, updated_at) VALUES (?1, ?2, ?3)
ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency, updated_at = excluded.updated_at";

/// Whether the file knows a queue: settings of its own, a job in it (of any
/// state; a scan when there is none), purged history, or a worker (live or
/// not yet expired from the registry) that serves it.
pub(crate) const QUEUE_KNOWN: &str = "
SELECT EXISTS (SELECT 1 FROM queues WHERE name = ?1)
    OR EXISTS (SELECT 1 FROM purged_tries WHERE queue = ?1)
    OR EXISTS (SELECT 1 FROM workers, json_each(workers.queues) WHERE json_each.value = ?1)
    OR EXISTS (SELECT 1 FROM jobs WHERE queue = ?1)";

/// A queue's concurrency limit as people type it (the CLI, the HTTP API): a
/// number of jobs at once, or `none` for no limit.  The range is checked by
/// [`Store::set_concurrency`](crate::store::Backend::set_concurrency).
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

#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("SET_PAUSED", SET_PAUSED),
    ("SET_CONCURRENCY", SET_CONCURRENCY),
    ("QUEUE_KNOWN", QUEUE_KNOWN),
];

impl SqliteStore {
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
}
