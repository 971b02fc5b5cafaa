//! The durable store: jobs, attempts, progress, queues, workers and schedules.
//!
//! [`Store`] is the handle everything else uses; its operations are the
//! storage seam, [`Backend`] (`backend`), with two implementations:
//! [`SqliteStore`], one WAL-mode SQLite file (the default, and the rest of
//! this page), and [`PgStore`] (`postgres`), one PostgreSQL database shared
//! by several hosts.  `signals` holds this process's wake-ups, common to both.
//!
//! The SQLite store keeps one file per concern: `open`, `schema` and
//! `extension` (the file and its migrations), `enqueue`, `lease` (claim,
//! heartbeat, the ends of a try, reap), `read`, `stats`, `totals`,
//! `control` (cancel, retry), `queues`, `workers` (the registry), `tokens`
//! (API tokens by hash),
//! `retention` (purges), `checkpoint`, `integrity`, `meta`, `steps` (clock steps),
//! `turn`, `busy` (waiting for the write lock), `ack` (remote workers'
//! acknowledgements) and `pool`.  The state
//! diagram is at the end of this page.
//!
//! Every call about a running job (`heartbeat`, `complete`, `fail`,
//! `set_progress`, `release`, `cancelled`) carries the lease token handed out
//! by `claim`; once the lease is lost (expired and reaped, or the job finished
//! by someone else) the call is refused with [`Error::LeaseLost`] and changes
//! nothing.  Tokens come from SQLite's `random()` (64 bits from the OS
//! generator), so they are unique across processes sharing the file.
//!
//! # Statements per job on the hot path
//!
//! * enqueue: 1 plain `INSERT` in its own transaction (with a unique key,
//!   `INSERT … ON CONFLICT DO NOTHING RETURNING`, plus a `SELECT` when the key
//!   was already taken); `enqueue_many`: multi-row `INSERT`s, one transaction.
//! * claim: 1 `UPDATE … RETURNING` for the whole batch, after 1 `UPDATE` that
//!   promotes due scheduled jobs (an index seek that usually finds nothing),
//!   in one `BEGIN IMMEDIATE` transaction.
//! * complete: 1 fenced `UPDATE` in its own transaction; `complete_many`
//!   runs it per job in one transaction.  No history row: a succeeded job's
//!   row is the record of its winning try, and the `attempts` view reads it
//!   from there (schema/0005).  Tries that end otherwise write a row in
//!   `tries`.
//! * a worker's turn (`complete_and_claim`): its completions and its next
//!   claim in one transaction — one commit a turn.
#![doc = include_str!("states.md")]

mod ack;
mod backend;
mod busy;
mod checkpoint;
mod control;
pub(crate) mod enqueue;
mod extension;
mod integrity;
pub(crate) mod job;
pub mod json;
mod lease;
pub(crate) mod meta;
pub mod notify;
pub(crate) mod open;
mod pool;
pub mod postgres;
mod queues;
mod read;
mod retention;
pub mod rollup;
mod schema;
mod signals;
mod state;
mod stats;
mod steps;
mod tokens;
mod totals;
mod turn;
mod workers;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use r2d2::{Pool, PooledConnection};
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::clock::{Clock, Millis, SystemClock};
use crate::error::{Error, Result};
use crate::worker::{CommitNotify, CommitWatcher};

pub use ack::{Ack, AckOutcome, HeldTry};
pub use backend::Backend;
pub use checkpoint::CheckpointOptions;
pub use job::{
    validate_name, validate_tenant, AttemptInfo, Backoff, CancelOutcome, CancelReport, ClaimedJob,
    Done, FailOutcome, Heartbeat, JobId, JobInfo, JobSelection, JobSpec, JobState, JobSummary,
    ListFilter, NewJob, PayloadMatch, Progress, ProgressEntry, QueueStats, ReapReport, RetryReport,
    RunAt, Stats, PROGRESS_LOG_KEPT,
};
pub use lease::{CompleteBatch, OVERDUE_GRACE};
pub use notify::{Notify, Outcome};
pub use open::{free_bytes, page_caches_shared, ConnectionOptions, Synchronous};
pub use pool::ConnectionManager;
pub use queues::parse_concurrency_limit;
pub use rollup::{Rollup, BUCKETS, BUCKET_BOUNDS_MS};
pub use schema::{APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION};
pub use stats::StatsReuse;
pub use tokens::{validate_token_name, Role, TokenInfo};
pub use totals::TryTotals;
pub use workers::{LiveWork, LiveWorker, WorkerInfo, ANY_KIND};

/// How a [`Store`] is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub connection: ConnectionOptions,
    /// Connections in the pool.
    pub pool_size: u32,
    /// Largest accepted payload, in bytes.
    pub max_payload_bytes: usize,
    /// A worker counts as live while its last heartbeat is younger than this.
    pub worker_liveness: Duration,
    pub clock: Arc<dyn Clock>,
    /// Checkpoint the WAL from a background thread (the default) instead of
    /// in whichever commit crosses SQLite's threshold; see
    /// [`CheckpointOptions`].  `None` leaves it to SQLite.
    pub checkpoint: Option<CheckpointOptions>,
    /// How [`Store::stats_recent`](crate::store::Backend::stats_recent) may reuse finished counts.
    pub stats_reuse: StatsReuse,
    /// Make a new queue of a missing or empty file (the default).  Off, only
    /// an existing queue file opens: a misspelt path is refused instead of
    /// becoming a new, empty queue that no worker reads.
    pub create: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            connection: ConnectionOptions::default(),
            pool_size: 8,
            max_payload_bytes: 1024 * 1024,
            worker_liveness: Duration::from_secs(30),
            clock: Arc::new(SystemClock),
            checkpoint: Some(CheckpointOptions::default()),
            stats_reuse: StatsReuse::default(),
            create: true,
        }
    }
}

impl StoreOptions {
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.connection.synchronous = synchronous;
        self
    }

    /// Whether a missing or empty file becomes a new queue (see [`StoreOptions::create`]).
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }
}

/// A handle on one queue — a SQLite file ([`SqliteStore`]) or a PostgreSQL
/// database ([`PgStore`]) — through the storage seam ([`Backend`], whose
/// methods it derefs to).  Cheap to clone; share it between threads.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl std::ops::Deref for Store {
    type Target = dyn Backend;

    fn deref(&self) -> &(dyn Backend + 'static) {
        &*self.backend
    }
}

/// The SQLite backend: one WAL-mode file.  Cheap to clone.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: Pool<ConnectionManager>,
    path: PathBuf,
    opts: StoreOptions,
    checkpointer: Option<checkpoint::Checkpointer>,
    signals: Signals,
    /// This process's writers take turns (see [`turn`]).
    turns: turn::Turns,
    /// The connection a writer with the turn writes on (opened at the first
    /// write).  SQLite drops a connection's whole page cache when it finds
    /// that another connection committed since its last transaction: with
    /// every write of the process on one connection, an enqueue and the
    /// claim after it each find the pages warm, where two pooled
    /// connections would each start cold.
    writer: std::sync::Mutex<Option<Connection>>,
    writer_manager: ConnectionManager,
    /// The last count of finished jobs (see [`Store::stats_recent`](crate::store::Backend::stats_recent)).
    finished: std::sync::Mutex<Option<Arc<stats::FinishedCounts>>>,
    /// The tries this handle claimed, for the rollups of their completions.
    claims: rollup::ClaimNotes,
    /// A thread counts the finished jobs again (see `stats_recent`).
    recounting: std::sync::atomic::AtomicBool,
}

/// Run `f` (a connection's set-up) again while it fails with `Busy`, for up
/// to the busy timeout (see [`open::retry_while_busy`]).
fn with_busy_retries<T>(opts: &StoreOptions, f: impl FnMut() -> Result<T>) -> Result<T> {
    let busy = |e: &Error| matches!(e, Error::Busy { .. });
    open::retry_while_busy(opts.connection.busy_timeout, busy, f)
}

/// Times a transaction is retried when SQLite reports busy beyond the busy
/// timeout (WAL recovery by another process can return BUSY without waiting).
const BUSY_RETRIES: u32 = 5;

impl Store {
    /// Open (creating if needed) the queue file at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(path, StoreOptions::default())
    }

    /// Open the SQLite queue file at `path` (see [`SqliteStore::open_with`]).
    pub fn open_with(path: impl AsRef<Path>, opts: StoreOptions) -> Result<Store> {
        Ok(Store::from_backend(SqliteStore::open_with(path, opts)?))
    }

    /// Open the queue `db` names: a `postgres://` or `postgresql://` URL
    /// ([`PgStore`]), or else the path of a SQLite file.
    pub fn connect(db: &str, opts: StoreOptions) -> Result<Store> {
        if postgres::is_url(db) {
            Ok(Store::from_backend(PgStore::connect(db, opts)?))
        } else {
            Store::open_with(db, opts)
        }
    }

    /// A handle on `backend`.
    pub fn from_backend(backend: impl Backend) -> Store {
        Store {
            backend: Arc::new(backend),
        }
    }

    /// The queue file's path, when the backend is SQLite.
    pub fn path(&self) -> Option<&Path> {
        self.sqlite().map(SqliteStore::path)
    }

    /// The SQLite store, or a clear refusal naming what needs it.
    pub fn require_sqlite(&self, what: &'static str) -> Result<&SqliteStore> {
        self.sqlite().ok_or(Error::Unsupported {
            what,
            backend: "PostgreSQL",
        })
    }

    /// Wake this process's idle workers (see [`Signals::notify_work`]).
    pub fn notify_work(&self) {
        self.signals().notify_work()
    }

    pub(crate) fn on_work(&self, hook: &WorkHook) {
        self.signals().on_work(hook)
    }

    /// A receiver that changes whenever [`Store::notify_work`] is called.
    pub fn watch_work(&self) -> tokio::sync::watch::Receiver<u64> {
        self.signals().watch_work()
    }

    /// A receiver that changes whenever this process asks a running job to
    /// stop (see [`Signals::watch_cancels`]).
    pub fn watch_cancels(&self) -> tokio::sync::watch::Receiver<u64> {
        self.signals().watch_cancels()
    }

    /// The store's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.options().clock
    }
}

impl SqliteStore {
    /// Open (creating if needed) the queue file at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        SqliteStore::open_with(path, StoreOptions::default())
    }

    /// Open the queue file at `path`.
    ///
    /// A file that is not a jobd queue (random bytes, a truncated file, another
    /// application's SQLite database) is refused before anything is written to
    /// it; a file from a newer jobd is refused with [`Error::TooNew`].
    pub fn open_with(path: impl AsRef<Path>, opts: StoreOptions) -> Result<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        // Identify the file before anything can write to it: from its own
        // bytes, or — while a WAL holds its newest pages — through a
        // read-only connection, which never checkpoints that WAL.
        let look = open::check_header(&path)?;
        let identity = match look {
            open::Look::Missing | open::Look::Empty => None,
            open::Look::Settled(id) => Some(id),
            open::Look::WalLive => Some(with_busy_retries(&opts, || {
                let conn = Connection::open_with_flags(
                    &path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| Error::from_sqlite("opening the queue file", &path, e))?;
                conn.busy_timeout(opts.connection.busy_timeout)
                    .map_err(|e| Error::from_sqlite("opening the queue file", &path, e))?;
                schema::identify(&conn, &path)
            })?),
        };
        if let Some(id) = identity {
            schema::check_identity(id, &path)?;
        }
        if !opts.create && identity.is_none_or(|id| id.application_id != APPLICATION_ID) {
            let reason = match identity {
                None if !path.exists() => "there is no such file".into(),
                _ => "it is empty, not yet a queue (opened without `create`)".into(),
            };
            return Err(Error::NotAQueue { path, reason });
        }
        if look == open::Look::Missing {
            // Private from the first byte: SQLite gives the -wal and -shm
            // files the mode of the database file.
            open::create_private(&path)?;
        }
        // The WAL switch and the migrations take the write lock; two
        // processes opening a new file at once can be told busy without the
        // busy handler running (SQLite does not wait inside WAL set-up), so
        // the whole set-up waits and tries again, like every other write.
        let set_up = with_busy_retries(&opts, || {
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let mut conn = Connection::open_with_flags(&path, flags)
                .map_err(|e| Error::from_sqlite("opening the queue file", &path, e))?;
            conn.busy_timeout(opts.connection.busy_timeout)
                .map_err(|e| Error::from_sqlite("opening the queue file", &path, e))?;
            open::configure(&conn, &opts.connection)
                .map_err(|e| open::unwrap_pragma_error(&path, e))?;
            schema::migrate(&mut conn, &path)
        });
        match set_up {
            // SQLite reports a -shm or -wal it cannot create as an I/O error.
            Err(Error::IoFault { .. }) if open::disk_is_full(&path) => {
                return Err(Error::DiskFull {
                    operation: "opening the queue (SQLite needs room for its -wal and -shm files)",
                    path,
                })
            }
            other => other?,
        }

        let mut conn_opts = opts.connection.clone();
        if let Some(ck) = &opts.checkpoint {
            conn_opts.wal_autocheckpoint = ck.fallback_frames;
        }
        let checkpointer = match &opts.checkpoint {
            Some(ck) => Some(
                checkpoint::Checkpointer::start(path.clone(), &opts.connection, ck.clone())
                    .map_err(Error::io("starting the checkpoint thread for", &path))?,
            ),
            None => None,
        };
        let writer = ConnectionManager::new(path.clone(), conn_opts.clone());
        let manager = ConnectionManager::new(path.clone(), conn_opts);
        let pool = Pool::builder()
            .max_size(opts.pool_size.max(1))
            .min_idle(Some(1))
            .test_on_check_out(false)
            .connection_timeout(opts.connection.busy_timeout.max(Duration::from_secs(1)))
            .build(manager)?;
        tracing::debug!(path = %path.display(), "opened queue store");
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                pool,
                path,
                opts,
                checkpointer,
                signals: Signals::default(),
                turns: turn::Turns::default(),
                writer: std::sync::Mutex::new(None),
                writer_manager: writer,
                finished: std::sync::Mutex::new(None),
                claims: rollup::ClaimNotes::default(),
                recounting: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    pub(crate) fn notify_work(&self) {
        self.inner.signals.notify_work()
    }

    pub(crate) fn notify_cancel(&self) {
        self.inner.signals.notify_cancel()
    }

    pub fn signals(&self) -> &Signals {
        &self.inner.signals
    }

    pub fn sqlite(&self) -> Option<&SqliteStore> {
        Some(self)
    }

    pub fn location(&self) -> String {
        self.inner.path.display().to_string()
    }

    /// Wake on other connections' commits: an inotify watch on the WAL and a
    /// `PRAGMA data_version` poll (see [`crate::worker`]'s watcher).
    pub fn watch_commits(
        &self,
        idle_poll: Duration,
        busy_poll: Option<Duration>,
        waiting: bool,
        notify: CommitNotify,
    ) -> Box<dyn CommitWatcher> {
        Box::new(crate::worker::watcher::Watcher::start_with(
            self, idle_poll, busy_poll, waiting, notify,
        ))
    }

    /// The queue file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The store's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.opts.clock
    }

    pub fn options(&self) -> &StoreOptions {
        &self.inner.opts
    }

    pub(crate) fn now(&self) -> Millis {
        self.inner.opts.clock.now_ms()
    }

    /// A pooled connection, configured like every other one: for reading the
    /// tables directly or running your own statements on the queue file.
    pub fn connection(&self) -> Result<PooledConnection<ConnectionManager>> {
        Ok(self.inner.pool.get()?)
    }

    /// Re-map a plain SQLite error with the operation and the file's path.
    fn map_err(&self, operation: &'static str, err: Error) -> Error {
        match err {
            Error::Sqlite { source, .. } => {
                match Error::from_sqlite(operation, &self.inner.path, source) {
                    // SQLite reads a page it cannot make sense of after a
                    // failed read as well as from a damaged file: the file
                    // is called corrupt only when a fresh check agrees.
                    Error::Corrupt { path, reason } if self.file_checks_out() => {
                        tracing::warn!(operation, error = %reason, "SQLite reported damage the file does not have: a passing I/O fault");
                        Error::IoFault {
                            operation,
                            path,
                            detail: reason,
                        }
                    }
                    e => e,
                }
            }
            other => other,
        }
    }

    /// `PRAGMA quick_check` on a fresh read-only connection says the file
    /// is sound.
    fn file_checks_out(&self) -> bool {
        let check = || -> rusqlite::Result<bool> {
            let conn = Connection::open_with_flags(
                &self.inner.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(self.inner.opts.connection.busy_timeout)?;
            let verdict: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
            Ok(verdict == "ok")
        };
        check().unwrap_or(false)
    }

    /// Run `f` in a `BEGIN IMMEDIATE` transaction and commit it; retried when
    /// SQLite stays busy.  Public for a library's own tables (see
    /// [`SqliteStore::migrate_extension`](crate::store::SqliteStore::migrate_extension)); the queue's tables are changed only
    /// through the store's methods.  Dropping the transaction on error rolls it back, so
    /// a failed operation leaves nothing behind.
    pub fn write<T>(
        &self,
        operation: &'static str,
        mut f: impl FnMut(&Transaction) -> Result<T>,
    ) -> Result<T> {
        self.pass_gate();
        // The turn before the connection: a writer waiting for its turn
        // holds no pooled connection that others could use.
        let turn = self
            .inner
            .turns
            .take(self.inner.opts.connection.busy_timeout);
        let mut run = |conn: &mut Connection| {
            self.retry_busy(operation, || {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let value = f(&tx)?;
                tx.commit()?;
                Ok(value)
            })
        };
        if !turn.held() {
            // A write inside a write (the turn not given within the busy
            // timeout): a pooled connection, and SQLite's lock decides.
            let mut conn = self.connection()?;
            return run(&mut conn);
        }
        self.with_writer(|conn| run(conn))?
    }

    /// `f` on the writer's connection, opened at its first use.  Callers
    /// hold the turn (see [`SqliteStore::write`](crate::store::SqliteStore::write)), or are tests.
    pub(crate) fn with_writer<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> Result<T> {
        let mut writer = self.inner.writer.lock().unwrap_or_else(|e| e.into_inner());
        if writer.is_none() {
            let conn = r2d2::ManageConnection::connect(&self.inner.writer_manager)
                .map_err(|e| Error::from_sqlite("opening the queue file", &self.inner.path, e))?;
            *writer = Some(conn);
        }
        Ok(f(writer.as_mut().expect("opened above")))
    }

    /// Run `f` on a pooled connection outside an explicit transaction: for reads,
    /// and for writes that are a single statement (SQLite makes one statement
    /// its own transaction, taking the write lock up front).  Public for a
    /// library's own tables, like [`SqliteStore::write`](crate::store::SqliteStore::write).
    pub fn with_conn<T>(
        &self,
        operation: &'static str,
        mut f: impl FnMut(&Connection) -> Result<T>,
    ) -> Result<T> {
        self.pass_gate();
        let conn = self.connection()?;
        self.retry_busy(operation, || f(&conn))
    }

    /// Hold back while the checkpointer restarts the WAL (see
    /// [`checkpoint`](self::checkpoint)); one atomic load otherwise.
    fn pass_gate(&self) {
        if let Some(ck) = &self.inner.checkpointer {
            ck.gate().pass();
        }
    }

    fn retry_busy<T>(
        &self,
        operation: &'static str,
        mut f: impl FnMut() -> Result<T>,
    ) -> Result<T> {
        let mut tries = 0;
        loop {
            match f().map_err(|e| self.map_err(operation, e)) {
                Err(Error::Busy { .. }) if tries < BUSY_RETRIES => {
                    tries += 1;
                    tracing::warn!(operation, tries, "queue database busy; retrying");
                    std::thread::sleep(Duration::from_millis(5 * tries as u64));
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests;

pub use postgres::PgStore;
pub use signals::Signals;
pub(crate) use signals::WorkHook;
pub use state::{StateEntry, Swap};

/// Run a write with a `RETURNING` clause that yields at most one row, stepping
/// it to the end.  `query_row` stops after the first row, and for a statement
/// running in autocommit mode the commit happens only when the statement
/// finishes: stopping early would hide a failed commit (a full disk) behind a
/// row that was never stored.
pub(crate) fn returning_row<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let value = match rows.next()? {
        Some(row) => Some(f(row)?),
        None => return Ok(None),
    };
    while rows.next()?.is_some() {}
    Ok(value)
}
