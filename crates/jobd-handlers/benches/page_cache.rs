//! What SQLite's page cache mode costs the daemon: no-op jobs claimed and
//! completed at concurrency 16 (a queue `bulk` beside the built-in queues) while the analytics rollup and the tenant
//! backup scan all 101 tenant databases in the same process — the place a
//! page cache shared by every connection of the process (SQLite built with
//! `SQLITE_ENABLE_MEMORY_MANAGEMENT`) could take the queue's hot pages.
//!
//! ```text
//! cargo bench --bench page_cache        # JOBD_BENCH_SCANS, JOBD_BENCH_JOBS, JOBD_BENCH_ROUNDS
//! ```
//!
//! Prints, per round, the drain rate alone and beside the scans, in one run
//! (the two alternate, so the host's drift moves both), and whether this
//! build shares page caches.

use jobd_testkit::env_usize as env;
use std::time::{Duration, Instant};

use jobd::store::NewJob;
use jobd::worker::Worker;
use jobd::Store;
use jobd_handlers::tenants::{seed, SeedOptions};
use jobd_handlers::DataDir;
use serde_json::json;

/// Drain `jobs` no-op jobs (and, with `scans`, an analytics rollup and a
/// backup of every tenant beside them); the no-op jobs' rate, and whether
/// the scans were still running when the last no-op job finished.
fn drain(data: &DataDir, round: usize, jobs: usize, scans: bool) -> (f64, bool) {
    let db = data.root().join(format!("queue-{round}-{scans}.db"));
    let store = Store::open(&db).unwrap();
    let batch: Vec<NewJob> = (0..jobs)
        .map(|i| NewJob::new("bulk", "noop").payload(&json!({ "n": i })))
        .collect();
    let last = *store.enqueue_many(&batch).unwrap().last().unwrap();
    let scan_ids = if scans {
        store
            .enqueue_many(&[
                NewJob::new("analytics", "analytics_rollup")
                    .payload(&json!({"period": "weekly", "ttl_secs": 0})),
                NewJob::new("maintenance", "backup_tenants").payload(&json!({"keep": 1})),
            ])
            .unwrap()
    } else {
        Vec::new()
    };
    store.checkpoint().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (rate, scanning) = rt.block_on(async {
        let builder =
            jobd_handlers::builtin(Worker::builder(store.clone()), data).queue("bulk", 16);
        let stop = tokio_util::sync::CancellationToken::new();
        let s = stop.clone();
        let worker = tokio::spawn(builder.run(async move { s.cancelled().await }));
        let t0 = Instant::now();
        // The claims go in id order: the last job is among the last to end;
        // then what is left (a few at most) is counted through the indexes.
        let conn = store.sqlite().unwrap().connection().unwrap();
        let left = |c: &rusqlite::Connection| -> i64 {
            c.query_row(
                "SELECT (SELECT count(*) FROM jobs WHERE state = 'ready' AND queue = 'bulk')
                      + (SELECT count(*) FROM jobs WHERE state = 'running' AND kind = 'noop')",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        while !store.get(last).unwrap().state.is_finished() || left(&conn) > 0 {
            if worker.is_finished() {
                panic!("the worker stopped: {:?}", worker.await);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(conn);
        let secs = t0.elapsed().as_secs_f64();
        let scanning = scan_ids
            .iter()
            .any(|id| !store.get(*id).unwrap().state.is_finished());
        // Let the scans end before the next round.
        while scan_ids
            .iter()
            .any(|id| !store.get(*id).unwrap().state.is_finished())
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.cancel();
        worker.await.unwrap().unwrap();
        (jobs as f64 / secs, scanning)
    });
    drop(store);
    for f in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{f}", db.display()));
    }
    (rate, scanning)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists; nothing to list
    }
    let scans = env("JOBD_BENCH_SCANS", 20_000);
    let jobs = env("JOBD_BENCH_JOBS", 100_000);
    let rounds = env("JOBD_BENCH_ROUNDS", 3);
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path());
    seed(
        data.tenants(),
        &SeedOptions {
            scans_per_tenant: scans,
            ..SeedOptions::default()
        },
    )
    .unwrap();
    println!(
        "SQLite {}, page caches shared by the process's connections: {}",
        rusqlite::version(),
        jobd::store::page_caches_shared()
    );
    println!("{jobs} no-op jobs at concurrency 16; 101 tenants × {scans} scans");
    println!("| round | alone (jobs/s) | beside analytics + backup (jobs/s) | ratio |");
    println!("|--:|--:|--:|--:|");
    for round in 0..rounds {
        let (alone, _) = drain(&data, round, jobs, false);
        let (beside, scanning) = drain(&data, round, jobs, true);
        println!(
            "| {} | {alone:.0} | {beside:.0}{} | {:.2} |",
            round + 1,
            if scanning { "" } else { " (scans ended first)" },
            beside / alone
        );
    }
}
