//! The PostgreSQL backend: one database shared by the workers, schedulers and
//! daemons of several hosts, with the SQLite store's API and guarantees (the
//! conformance suite in `tests/store` runs against both).
//!
//! * `mod` (this file) — connecting, the pool, migrations
//!   (`schema/postgres/*.sql`, versioned in `jobd_schema`), one statement
//!   cache per connection, transactions retried on deadlock;
//! * `jobs` — enqueue, claims, leases and the ends of a try, the reap;
//! * `control` — cancel and retry, reads and counts, queues, the worker
//!   registry, API tokens; `rest` — retention, upkeep and schedules;
//!   `listen` — wake-ups through `LISTEN`/`NOTIFY`;
//! * [`copy`] — moving a queue from its SQLite file (`jobd migrate-store`).
//!
//! # How it differs from the file
//!
//! * Claims are one `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED
//!   LIMIT n) RETURNING …` per queue: claimers on other hosts skip each
//!   other's rows instead of queueing behind one write lock.  A queue with
//!   a concurrency limit (or paused) has its `queues` row locked first, so
//!   the count of its running jobs is read after every other claim of that
//!   queue committed: the limit holds across hosts.
//! * Time is the database's: every statement reads `jobd_time($1)`, the
//!   server's clock at the transaction's start, so leases, backoff and due
//!   times are measured on one clock whatever each host's says.  A store
//!   opened with a test clock ([`ManualClock`](crate::ManualClock)) passes
//!   that clock's time instead, and tests run in simulated time as on SQLite.
//! * Wake-ups are `NOTIFY jobd_work`, sent in the transaction that makes
//!   work (or asks a cancel), delivered at commit to every listening process.
//! * Fencing tokens are random 63-bit numbers from the server, as in the file.
//! * Client: the synchronous `postgres` crate behind an `r2d2` pool, to fit
//!   the store's synchronous API (the runtime calls it from blocking
//!   threads, as it calls SQLite); no async runtime inside the store.

mod control;
pub mod copy;
mod jobs;
mod listen;
mod rest;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use postgres::types::ToSql;
use postgres::{GenericClient, NoTls, Row, Statement};

use crate::clock::Millis;
use crate::error::{Error, Result};
use crate::store::{Signals, StoreOptions};

/// The migrations, in order; `jobd_schema` holds how many were applied.
pub const MIGRATIONS: &[&str] = &[
    include_str!("../../../schema/postgres/0001_init.sql"),
    include_str!("../../../schema/postgres/0002_state.sql"),
    include_str!("../../../schema/postgres/0003_rollups.sql"),
];

/// The schema version this jobd writes on PostgreSQL.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The channel of wake-ups.
pub(crate) const CHANNEL: &str = "jobd_work";

/// Whether `db` names a PostgreSQL database rather than a SQLite file.
pub fn is_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// `url` as (scheme, user, whether it has a password, host and the rest).
fn url_parts(url: &str) -> Option<(&str, &str, bool, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let (auth, host) = rest.rsplit_once('@')?;
    Some(match auth.split_once(':') {
        Some((user, _)) => (scheme, user, true, host),
        None => (scheme, auth, false, host),
    })
}

/// `url` with its password, if any, replaced by `***` (for logs and errors).
pub fn redact(url: &str) -> String {
    match url_parts(url) {
        Some((scheme, user, true, host)) => format!("{scheme}://{user}:***@{host}"),
        _ => url.to_string(),
    }
}

/// `url` without its password (to write down; the password goes in
/// `$PGPASSWORD`).
pub fn without_password(url: &str) -> String {
    match url_parts(url) {
        Some((scheme, user, true, host)) => format!("{scheme}://{user}@{host}"),
        _ => url.to_string(),
    }
}

/// A handle on a jobd queue in a PostgreSQL database.  Cheap to clone.
#[derive(Clone, Debug)]
pub struct PgStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: r2d2::Pool<Manager>,
    config: postgres::Config,
    location: String,
    opts: StoreOptions,
    signals: Signals,
}

/// Prepared statements of one connection, by the address of their text
/// (every statement is a `&'static str` of the store).
type Cache = HashMap<usize, Statement>;

/// A pooled connection and its statement cache.
pub(crate) struct Conn {
    /// Taken only by `drop`.
    client: Option<postgres::Client>,
    cache: Cache,
}

impl Conn {
    fn parts(&mut self) -> (&mut postgres::Client, &mut Cache) {
        let client = self
            .client
            .as_mut()
            .expect("a connection keeps its client until dropped");
        (client, &mut self.cache)
    }
}

impl Drop for Conn {
    /// Closing a client blocks on its runtime: never on an async thread.
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            outside_async(move || drop(client));
        }
    }
}

#[derive(Debug)]
struct Manager {
    config: postgres::Config,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = postgres::Error;

    fn connect(&self) -> std::result::Result<Conn, postgres::Error> {
        Ok(Conn {
            client: Some(self.config.connect(NoTls)?),
            cache: Cache::new(),
        })
    }

    fn is_valid(&self, conn: &mut Conn) -> std::result::Result<(), postgres::Error> {
        conn.parts().0.simple_query("").map(drop)
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.parts().0.is_closed()
    }
}

/// Statements on a client or in a transaction, each prepared once per
/// connection.
pub(crate) struct Db<'a, C: GenericClient> {
    client: &'a mut C,
    cache: &'a mut Cache,
}

impl<C: GenericClient> Db<'_, C> {
    fn prepared(&mut self, sql: &'static str) -> Result<Statement> {
        let key = sql.as_ptr() as usize;
        if let Some(s) = self.cache.get(&key) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.cache.insert(key, s.clone());
        Ok(s)
    }

    pub(crate) fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        let s = self.prepared(sql)?;
        Ok(self.client.query(&s, params)?)
    }

    pub(crate) fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>> {
        let s = self.prepared(sql)?;
        Ok(self.client.query_opt(&s, params)?)
    }

    pub(crate) fn query_one(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row> {
        let s = self.prepared(sql)?;
        Ok(self.client.query_one(&s, params)?)
    }

    pub(crate) fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64> {
        let s = self.prepared(sql)?;
        Ok(self.client.execute(&s, params)?)
    }
}

/// Run `f`, a call of the synchronous `postgres` client, where it may
/// block: that client drives its connection on a small runtime of its own,
/// which cannot start on a thread that is running async tasks.  Called
/// there (a handler, an async test), `f` runs with the thread handed over to
/// blocking work (a multi-threaded runtime) or on a thread of its own (a
/// current-thread runtime); elsewhere — the worker's exchange thread, the
/// CLI — it simply runs.
fn outside_async<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Err(_) => f(),
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        Ok(_) => std::thread::scope(|s| match s.spawn(f).join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }),
    }
}

/// Dead pooled connections passed over before an operation gives up (after
/// a restart of the server, every idle connection of the pool is dead).
const DEAD_CONNECTIONS: u32 = 64;

/// Tries of a transaction that PostgreSQL ended for a deadlock or a
/// serialization failure (nothing of it was kept).
const CONFLICT_RETRIES: u32 = 5;

/// Wake every listening process at this transaction's commit.
pub(crate) const NOTIFY_WORK: &str = "SELECT pg_notify('jobd_work', '')";

/// Which schema version the database is at (0 for a new one).
const SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS jobd_schema (version integer NOT NULL)";
const SCHEMA_VERSION_NOW: &str = "SELECT coalesce(max(version), 0)::bigint FROM jobd_schema";
const SCHEMA_SET: &str = "INSERT INTO jobd_schema (version) VALUES ($1)";
/// Migrations one opener at a time (a transaction-scoped advisory lock; the
/// number is jobd's own).
const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(7478210331)";
const HAS_SCHEMA_TABLE: &str = "SELECT to_regclass('jobd_schema') IS NOT NULL";

impl PgStore {
    /// Connect to the database `url` names (`postgres://user@host:port/db`;
    /// a password in the URL, or else from `$PGPASSWORD`) and bring its
    /// schema up to date.  A database from a newer jobd is
    /// refused with [`Error::TooNew`]; with `create` off, a database without
    /// jobd's tables is refused instead of set up.
    pub fn connect(url: &str, opts: StoreOptions) -> Result<PgStore> {
        let location = redact(url);
        let mut config: postgres::Config = url.parse().map_err(|e: postgres::Error| {
            Error::invalid("database URL", format!("{location}: {e}"))
        })?;
        // The password from the environment, as libpq reads it, so that it
        // stays out of URLs in process lists and configuration files.
        if config.get_password().is_none() {
            if let Some(pw) = std::env::var_os("PGPASSWORD") {
                config.password(pw.as_encoded_bytes());
            }
        }
        if config.get_application_name().is_none() {
            config.application_name("jobd");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(opts.connection.busy_timeout.max(Duration::from_secs(1)));
        }
        let manager = Manager {
            config: config.clone(),
        };
        let pool = r2d2::Pool::builder()
            .max_size(opts.pool_size.max(1))
            .min_idle(Some(0))
            .test_on_check_out(false)
            .connection_timeout(opts.connection.busy_timeout.max(Duration::from_secs(1)))
            .build_unchecked(manager);
        let store = PgStore {
            inner: Arc::new(Inner {
                pool,
                config,
                location,
                opts,
                signals: Signals::default(),
            }),
        };
        store.migrate()?;
        tracing::debug!(database = %store.inner.location, "opened queue store on PostgreSQL");
        Ok(store)
    }

    fn migrate(&self) -> Result<()> {
        let create = self.inner.opts.create;
        let location = self.inner.location.clone();
        self.write("migrating the schema", |db| {
            db.query_one(MIGRATION_LOCK, &[])?;
            if !create && !db.query_one(HAS_SCHEMA_TABLE, &[])?.get::<_, bool>(0) {
                return Err(Error::NotAQueue {
                    path: location.clone().into(),
                    reason: "it has no jobd tables (opened without `create`)".into(),
                });
            }
            db.client.batch_execute(SCHEMA_TABLE)?;
            let found: i64 = db.query_one(SCHEMA_VERSION_NOW, &[])?.get(0);
            if found > SCHEMA_VERSION {
                return Err(Error::TooNew {
                    path: location.clone().into(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
                db.client.batch_execute(sql)?;
                db.execute(SCHEMA_SET, &[&(i as i32 + 1)])?;
                tracing::info!(version = i + 1, "migrated the PostgreSQL schema");
            }
            Ok(())
        })
    }

    /// The time to pass as `$1` of a statement: `None` (the database's
    /// clock) for the wall clock, else the store's clock.
    pub(crate) fn now_param(&self) -> Option<Millis> {
        let clock = &self.inner.opts.clock;
        (!clock.is_wall_clock()).then(|| clock.now_ms())
    }

    /// A pooled connection that is still alive: one the server closed
    /// (a restart, an idle timeout) has its goodbye waiting on the socket,
    /// which a look without sending anything finds; such a connection is
    /// dropped from the pool and the next one taken.
    fn conn(&self, operation: &'static str) -> Result<r2d2::PooledConnection<Manager>> {
        for _ in 0..DEAD_CONNECTIONS {
            let mut conn = self.inner.pool.get().map_err(|e| Error::Unreachable {
                operation,
                detail: e.to_string(),
            })?;
            let client = conn.parts().0;
            let alive = {
                use postgres::fallible_iterator::FallibleIterator;
                !client.is_closed() && client.notifications().iter().next().is_ok()
            };
            if alive && !client.is_closed() {
                return Ok(conn);
            }
            tracing::debug!(
                operation,
                "a pooled connection was closed by the server; another"
            );
        }
        Err(Error::Unreachable {
            operation,
            detail: "every pooled connection was closed by the server".into(),
        })
    }

    /// Run `f` in a transaction and commit it; run again (from the start)
    /// when PostgreSQL ended it for a deadlock or a serialization failure,
    /// and on a fresh connection when the pooled one turns out dead before
    /// the transaction began (the server restarted since it was last used).
    pub(crate) fn write<T: Send>(
        &self,
        operation: &'static str,
        mut f: impl FnMut(&mut Db<'_, postgres::Transaction<'_>>) -> Result<T> + Send,
    ) -> Result<T> {
        outside_async(|| {
            let mut conflicts = 0;
            let mut dead = 0;
            loop {
                let mut conn = self.conn(operation)?;
                let (client, cache) = conn.parts();
                let mut tx = match client.transaction() {
                    Ok(tx) => tx,
                    Err(e) if dead < DEAD_CONNECTIONS && crate::error::pg_unreachable(&e) => {
                        dead += 1;
                        tracing::debug!(operation, error = %e, "a pooled connection was dead; another");
                        continue;
                    }
                    Err(e) => return Err(Error::from_postgres(operation, e)),
                };
                let attempt = (|| {
                    let value = f(&mut Db {
                        client: &mut tx,
                        cache,
                    })?;
                    tx.commit()?;
                    Ok(value)
                })();
                match attempt.map_err(|e: Error| e.during(operation)) {
                    Err(Error::Postgres { code, .. })
                        if (code == "40P01" || code == "40001") && conflicts < CONFLICT_RETRIES =>
                    {
                        conflicts += 1;
                        tracing::debug!(
                            operation,
                            conflicts,
                            code,
                            "transaction conflict; retrying"
                        );
                    }
                    other => return other,
                }
            }
        })
    }

    /// Run `f` on a pooled connection outside an explicit transaction: for
    /// reads and single statements (each its own transaction).
    pub(crate) fn read<T: Send>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&mut Db<'_, postgres::Client>) -> Result<T> + Send,
    ) -> Result<T> {
        outside_async(|| {
            let mut conn = self.conn(operation)?;
            let (client, cache) = conn.parts();
            f(&mut Db { client, cache }).map_err(|e| e.during(operation))
        })
    }

    pub fn options(&self) -> &StoreOptions {
        &self.inner.opts
    }

    pub fn signals(&self) -> &Signals {
        &self.inner.signals
    }

    pub fn sqlite(&self) -> Option<&crate::store::SqliteStore> {
        None
    }

    /// The database's URL without its password.
    pub fn location(&self) -> String {
        self.inner.location.clone()
    }

    pub(crate) fn notify_work(&self) {
        self.inner.signals.notify_work()
    }

    pub(crate) fn notify_cancel(&self) {
        self.inner.signals.notify_cancel()
    }

    /// The connection settings (the commit listener opens its own).
    pub(crate) fn config(&self) -> &postgres::Config {
        &self.inner.config
    }
}
