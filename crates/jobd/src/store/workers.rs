//! The worker registry: each worker's row (registered at start, refreshed
//! by heartbeats, removed at stop), which workers are alive, and what
//! queues and kinds they serve.

use crate::clock::{duration_ms, Millis};
use rusqlite::params;

use crate::error::{Error, Result};
use crate::store::SqliteStore;

pub(crate) const LIVE_WORKERS: &str = "SELECT count(*) FROM workers WHERE last_heartbeat_at >= ?1";

/// What the live workers serve and run (JSON arrays of names).
pub(crate) const LIVE_WORK: &str =
    "SELECT queues, kinds FROM workers WHERE last_heartbeat_at >= ?1";

/// The live workers with what they serve and how many jobs each runs now
/// (through `jobs_running`: the running jobs are few).
pub(crate) const WORKER_LIST: &str = "
SELECT w.id, w.host, w.pid, w.queues, w.kinds, w.started_at, w.last_heartbeat_at,
       (SELECT count(*) FROM jobs INDEXED BY jobs_running
        WHERE state = 'running' AND lease_owner = w.id)
FROM workers AS w WHERE w.last_heartbeat_at >= ?1 ORDER BY w.started_at, w.id";

/// One live worker, for the dashboard and `GET /api/v1/workers`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorkerInfo {
    pub id: String,
    pub host: String,
    /// 0 when a remote worker did not say.
    pub pid: i64,
    pub queues: Vec<String>,
    /// `["*"]` ([`ANY_KIND`]) for a remote worker that runs every kind of its queues.
    pub kinds: Vec<String>,
    pub started_at: Millis,
    pub last_heartbeat_at: Millis,
    /// Jobs it runs now.
    pub running: i64,
}

/// What the live workers on a file serve and run ([`Store::live_work`](crate::store::Backend::live_work)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveWork {
    /// Each live worker's own queues and kinds.
    pub workers: Vec<LiveWorker>,
}

impl LiveWork {
    /// Whether some live worker serves `queue`.
    pub fn serves(&self, queue: &str) -> bool {
        self.workers.iter().any(|w| w.queues.contains(queue))
    }

    /// Whether some live worker runs `kind`.
    pub fn runs_kind(&self, kind: &str) -> bool {
        self.workers.iter().any(|w| w.runs_kind(kind))
    }

    /// Whether one live worker both serves `queue` and runs `kind` (a job
    /// runs on whichever worker claims it: one serving its queue without
    /// its kind would fail it).
    pub fn runs(&self, queue: &str, kind: &str) -> bool {
        self.workers
            .iter()
            .any(|w| w.queues.contains(queue) && w.runs_kind(kind))
    }
}

/// The kind a worker registers to say it runs every kind of its queues (a
/// remote worker that named none): never a valid kind's name.
pub const ANY_KIND: &str = "*";

/// One live worker's queues and kinds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveWorker {
    pub queues: std::collections::BTreeSet<String>,
    pub kinds: std::collections::BTreeSet<String>,
}

impl LiveWorker {
    /// Whether this worker runs `kind` (named, or every kind: [`ANY_KIND`]).
    pub fn runs_kind(&self, kind: &str) -> bool {
        self.kinds.contains(kind) || self.kinds.contains(ANY_KIND)
    }
}

pub(super) fn count_live_workers(conn: &rusqlite::Connection, live_since: Millis) -> Result<i64> {
    Ok(conn
        .prepare_cached(LIVE_WORKERS)?
        .query_row([live_since], |r| r.get(0))?)
}

pub(crate) const REGISTER_WORKER: &str = "
INSERT INTO workers (id, host, pid, queues, kinds, started_at, last_heartbeat_at)
VALUES (?1, ?2, ?3, ?4, ?6, ?5, ?5)
ON CONFLICT (id) DO UPDATE SET queues = excluded.queues, kinds = excluded.kinds,
                               last_heartbeat_at = excluded.last_heartbeat_at";

pub(crate) const WORKER_HEARTBEAT: &str = "UPDATE workers SET last_heartbeat_at = ?2 WHERE id = ?1";

pub(crate) const DEREGISTER_WORKER: &str = "DELETE FROM workers WHERE id = ?1";

/// A list as the JSON array a statement reads (`json_each`, or a column of
/// names): tries held by a worker as `[[id, token], …]`, its queues, kinds.
pub(super) fn json_list(field: &'static str, list: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(list).map_err(|e| Error::invalid(field, e.to_string()))
}

#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("WORKER_LIST", WORKER_LIST),
    ("REGISTER_WORKER", REGISTER_WORKER),
    ("WORKER_HEARTBEAT", WORKER_HEARTBEAT),
    ("DEREGISTER_WORKER", DEREGISTER_WORKER),
    ("LIVE_WORKERS", LIVE_WORKERS),
    ("LIVE_WORK", LIVE_WORK),
];

impl SqliteStore {
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

    /// Every live worker (in-process and remote), oldest first.
    pub fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let live_since = self.now() - duration_ms(self.inner.opts.worker_liveness);
        self.with_conn("workers", |conn| {
            let mut stmt = conn.prepare_cached(WORKER_LIST)?;
            let rows = stmt.query_map([live_since], |r| {
                let names = |i| -> rusqlite::Result<Vec<String>> {
                    let text: String = r.get(i)?;
                    Ok(serde_json::from_str(&text).unwrap_or_default())
                };
                Ok(WorkerInfo {
                    id: r.get(0)?,
                    host: r.get(1)?,
                    pid: r.get(2)?,
                    queues: names(3)?,
                    kinds: names(4)?,
                    started_at: r.get(5)?,
                    last_heartbeat_at: r.get(6)?,
                    running: r.get(7)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Register a worker process (or refresh its row), with the queues it
    /// serves and the job kinds it runs — what enqueueing from elsewhere
    /// checks a job against (see [`crate::worker::Catalog`]).
    pub fn register_worker(
        &self,
        worker: &str,
        host: &str,
        pid: u32,
        queues: &[&str],
        kinds: &[&str],
    ) -> Result<()> {
        let queues = json_list("queues", &queues)?;
        let kinds = json_list("kinds", &kinds)?;
        let now = self.now();
        self.with_conn("register_worker", |c| {
            c.prepare_cached(REGISTER_WORKER)?
                .execute(params![worker, host, pid as i64, queues, now, kinds])?;
            Ok(())
        })
    }

    /// Mark a worker process alive now.
    pub fn worker_heartbeat(&self, worker: &str) -> Result<()> {
        let now = self.now();
        self.with_conn("worker_heartbeat", |c| {
            c.prepare_cached(WORKER_HEARTBEAT)?
                .execute(params![worker, now])?;
            Ok(())
        })
    }

    /// Remove a worker's row (on clean shutdown).
    pub fn deregister_worker(&self, worker: &str) -> Result<()> {
        self.with_conn("deregister_worker", |c| {
            c.prepare_cached(DEREGISTER_WORKER)?.execute([worker])?;
            Ok(())
        })
    }
}
