//! Set-up shared by the store's tests: a store on a simulated clock, on
//! either backend.  [`conformance!`] runs a test against both: a SQLite file
//! in a temporary directory, and a fresh database on the test process's
//! throwaway PostgreSQL cluster (`jobd_testkit::pg`).

use std::time::Duration;

use jobd::store::{ClaimedJob, NewJob};
use jobd::{ManualClock, Store, StoreOptions};

pub const T0: i64 = 1_700_000_000_000;
pub const LEASE: Duration = Duration::from_secs(30);

pub struct Fixture {
    pub _dir: Option<tempfile::TempDir>,
    pub store: Store,
    pub clock: ManualClock,
}

/// The backends a conformance test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A store on a SQLite file.
pub fn fixture() -> Fixture {
    fixture_on(Backend::Sqlite).unwrap()
}

/// A store on `backend` (None: no PostgreSQL here, and not in CI).
pub fn fixture_on(backend: Backend) -> Option<Fixture> {
    let clock = ManualClock::new(T0);
    let opts = StoreOptions::default().clock(clock.clone());
    Some(match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open_with(dir.path().join("queue.db"), opts).unwrap();
            Fixture {
                _dir: Some(dir),
                store,
                clock,
            }
        }
        Backend::Postgres => {
            let url = jobd_testkit::pg::database()?;
            let store = Store::connect(&url, opts).unwrap();
            Fixture {
                _dir: None,
                store,
                clock,
            }
        }
    })
}

/// Run each named test — `fn name(f: &Fixture)` — on both backends:
/// `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                let f = $crate::support::fixture_on($crate::support::Backend::Sqlite).unwrap();
                super::$name(&f)
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                if let Some(f) = $crate::support::fixture_on($crate::support::Backend::Postgres) {
                    super::$name(&f)
                }
            })*
        }
    };
}

/// One number from `sql`, read on the store's own backend (the statement
/// must be valid on both).
pub fn count(store: &Store, sql: &str) -> i64 {
    match store.sqlite() {
        Some(file) => file
            .connection()
            .unwrap()
            .query_row(sql, [], |r| r.get(0))
            .unwrap(),
        None => {
            let mut c = postgres::Client::connect(&store.location(), postgres::NoTls).unwrap();
            c.query_one(sql, &[]).unwrap().get(0)
        }
    }
}

pub fn outcomes(store: &Store, id: i64) -> Vec<String> {
    store
        .get(id)
        .unwrap()
        .attempt_log
        .into_iter()
        .map(|a| a.outcome)
        .collect()
}

/// Run `f` and tell whether anything was committed to the file meanwhile:
/// `PRAGMA data_version` on a connection of its own moves when any other
/// connection commits.
pub fn committed_during<T>(store: &Store, f: impl FnOnce() -> T) -> (T, bool) {
    let watch = rusqlite::Connection::open(store.path().unwrap()).unwrap();
    let version = || -> i64 {
        watch
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .unwrap()
    };
    let before = version();
    let out = f();
    (out, version() != before)
}

impl Fixture {
    /// Enqueue `job`; its id.
    pub fn enqueue(&self, job: NewJob) -> i64 {
        self.store.enqueue(&job).unwrap()
    }

    /// The next job of `queue`, claimed by `worker` for [`LEASE`].
    pub fn claim_one(&self, worker: &str, queue: &str) -> ClaimedJob {
        self.store
            .claim(worker, &[queue], 1, LEASE)
            .unwrap()
            .remove(0)
    }
}
