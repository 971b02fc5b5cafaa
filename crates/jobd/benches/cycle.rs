//! The batched cycle alone — claim 100, `complete_many` 100, `N` times on a
//! fresh file — for counting its instructions, which tell apart costs
//! smaller than the wall clock's noise on a shared machine:
//!
//! ```text
//! cargo bench -p jobd --bench cycle --no-run
//! valgrind --tool=callgrind --toggle-collect='cycle::cycles' target/release/deps/cycle-* 100
//! ```
//!
//! The store's clock is a manual one that moves 1 ms a cycle, so what
//! depends on time (the claims that read due times for the rollups' queue
//! wait, one per 50 ms and queue) happens the same under valgrind's
//! slowness as at full speed.  Run bare it prints the time per cycle.

use std::time::{Duration, Instant};

use jobd::clock::ManualClock;
use jobd::store::{NewJob, StoreOptions};
use jobd::Store;

#[inline(never)]
fn cycles(store: &Store, clock: &ManualClock, n: usize) {
    for _ in 0..n {
        clock.advance(Duration::from_millis(1));
        let jobs = store
            .claim("w", &["bench"], 100, Duration::from_secs(60))
            .unwrap();
        assert_eq!(jobs.len(), 100);
        let done: Vec<_> = jobs.iter().map(|j| (j.id, j.lease_token, None)).collect();
        assert_eq!(store.complete_many(&done).unwrap().completed, 100);
    }
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let opts = StoreOptions::default().clock(clock.clone());
    let store = Store::open_with(dir.path().join("queue.db"), opts).unwrap();
    let batch: Vec<NewJob> = (0..1000)
        .map(|i| NewJob::new("bench", "noop").payload(&serde_json::json!({ "n": i })))
        .collect();
    for _ in 0..n / 10 + 1 {
        store.enqueue_many(&batch).unwrap();
    }
    let conn = store.sqlite().unwrap().connection().unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    drop(conn);
    let t = Instant::now();
    cycles(&store, &clock, n);
    let per = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    eprintln!("{n} cycles of claim 100 + complete_many 100: {per:.1} µs a cycle");
}
