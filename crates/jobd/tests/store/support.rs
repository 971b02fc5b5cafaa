//! Set-up shared by the store's tests: a store on a simulated clock.

use std::time::Duration;

use jobd::store::{ClaimedJob, NewJob};
use jobd::{ManualClock, Store, StoreOptions};

pub const T0: i64 = 1_700_000_000_000;
pub const LEASE: Duration = Duration::from_secs(30);

pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub store: Store,
    pub clock: ManualClock,
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = Store::open_with(
        dir.path().join("queue.db"),
        StoreOptions::default().clock(clock.clone()),
    )
    .unwrap();
    Fixture {
        _dir: dir,
        store,
        clock,
    }
}

pub fn count(store: &Store, sql: &str) -> i64 {
    store
        .sqlite()
        .unwrap()
        .connection()
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
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
