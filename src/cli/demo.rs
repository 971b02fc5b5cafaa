//! `jobd demo`: a mixed workload on a fresh queue file, worked off by several
//! worker threads through the store API, then a report that matches the file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use jobd::store::{Backoff, JobState, NewJob};
use jobd::Store;
use serde_json::json;

use super::CliResult;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Directory for the demo's queue file (its old queue file is replaced).
    #[arg(long, default_value = "jobd-demo")]
    data_dir: PathBuf,
    /// Jobs to enqueue.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Worker threads.
    #[arg(long, default_value_t = 4)]
    workers: usize,
}

const QUEUES: [&str; 5] = ["pdf", "batch", "analytics", "maintenance", "email"];
const LEASE: Duration = Duration::from_secs(30);

pub fn run(args: DemoArgs) -> CliResult {
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("creating {}: {e}", args.data_dir.display()))?;
    let db = args.data_dir.join("queue.db");
    for suffix in ["", "-wal", "-shm"] {
        let f = PathBuf::from(format!("{}{suffix}", db.display()));
        if f.exists() {
            std::fs::remove_file(&f).map_err(|e| format!("removing {}: {e}", f.display()))?;
        }
    }
    let store = Store::open(&db)?;
    eprintln!("jobd demo: queue file {}", db.display());

    // The workload: mostly quick jobs, 1% that fail once and succeed on retry,
    // 0.1% that always fail (they end dead after 3 tries), some delayed ones,
    // one cancelled before it runs, and ten enqueues of one unique key.
    let started = Instant::now();
    let jobs: Vec<NewJob> = (0..args.jobs)
        .map(|i| {
            let queue = QUEUES[i % QUEUES.len()];
            let kind = match i {
                i if i % 1000 == 7 => "doomed",
                i if i % 100 == 3 => "flaky",
                _ => "noop",
            };
            let mut job = NewJob::new(queue, kind)
                .payload(&json!({"n": i, "tenant": format!("tenant-{:03}", i % 101)}))
                .tenant(format!("tenant-{:03}", i % 101))
                .backoff(Backoff::new(
                    Duration::from_millis(50),
                    Duration::from_millis(200),
                ));
            if i % 500 == 11 {
                job = job.delay(Duration::from_millis(800));
            }
            job
        })
        .collect();
    let mut ids = Vec::with_capacity(jobs.len());
    for chunk in jobs.chunks(1000) {
        ids.extend(store.enqueue_many(chunk)?);
    }
    let unique: Vec<i64> = (0..10)
        .map(|_| store.enqueue(&NewJob::new("maintenance", "noop").unique_key("nightly-cleanup")))
        .collect::<jobd::Result<_>>()?;
    let cancelled =
        store.enqueue(&NewJob::new("email", "noop").delay(Duration::from_secs(3600)))?;
    store.cancel(cancelled)?;
    let enqueue_time = started.elapsed();
    eprintln!(
        "enqueued {} jobs in {:.2?} ({:.0} jobs/s); the unique key gave one job: {}",
        ids.len() + 2,
        enqueue_time,
        (ids.len() + 2) as f64 / enqueue_time.as_secs_f64(),
        unique.iter().all(|&id| id == unique[0])
    );

    let drain_started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..args.workers.max(1))
        .map(|n| {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || work(store, format!("demo-worker-{n}"), done))
        })
        .collect();
    let mut last = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        store.reap()?;
        let stats = store.stats()?;
        let waiting: i64 = stats
            .queues
            .iter()
            .map(|q| q.scheduled + q.ready + q.running)
            .sum();
        if last.elapsed() >= Duration::from_millis(500) || waiting == 0 {
            let succeeded: i64 = stats.queues.iter().map(|q| q.succeeded).sum();
            eprintln!(
                "  {:>6.1}s  succeeded {succeeded:>7}  waiting {waiting:>7}",
                drain_started.elapsed().as_secs_f64()
            );
            last = Instant::now();
        }
        if waiting == 0 {
            break;
        }
    }
    done.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().map_err(|_| "a worker thread panicked")??;
    }
    let drain_time = drain_started.elapsed();

    let stats = store.stats()?;
    let total = |f: fn(&jobd::store::QueueStats) -> i64| stats.queues.iter().map(f).sum::<i64>();
    let processed = total(|q| q.succeeded) + total(|q| q.dead);
    println!();
    println!("jobd demo report");
    println!("  queue file       {}", db.display());
    println!(
        "  wall time        {:.2?} (enqueue {:.2?}, drain {:.2?})",
        started.elapsed(),
        enqueue_time,
        drain_time
    );
    println!(
        "  throughput       {:.0} jobs/s drained with {} worker threads",
        processed as f64 / drain_time.as_secs_f64(),
        args.workers
    );
    for state in JobState::ALL {
        let n: i64 = stats
            .queues
            .iter()
            .map(|q| match state {
                JobState::Scheduled => q.scheduled,
                JobState::Ready => q.ready,
                JobState::Running => q.running,
                JobState::Succeeded => q.succeeded,
                JobState::Dead => q.dead,
                JobState::Cancelled => q.cancelled,
            })
            .sum();
        println!("  {:<16} {n}", state.as_str());
    }
    println!();
    println!("Look inside with any SQLite client:");
    println!("  sqlite3 {} 'select * from queue_stats'", db.display());
    println!(
        "  sqlite3 {} \"select * from job_overview where state = 'dead'\"",
        db.display()
    );
    println!(
        "  cargo run --release -- --db {} show {}",
        db.display(),
        ids.get(7).copied().unwrap_or(1)
    );
    Ok(ExitCode::SUCCESS)
}

/// A worker thread: claim a batch, "run" each job, complete or fail it.
fn work(store: Store, name: String, done: Arc<AtomicBool>) -> jobd::Result<()> {
    let queues: Vec<&str> = QUEUES.to_vec();
    while !done.load(Ordering::SeqCst) {
        let batch = store.claim(&name, &queues, 64, LEASE)?;
        if batch.is_empty() {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let mut finished = Vec::with_capacity(batch.len());
        for job in batch {
            match job.kind.as_str() {
                "flaky" if job.attempt == 1 => {
                    store.fail(
                        job.id,
                        job.lease_token,
                        "flaky: fails on its first try",
                        true,
                    )?;
                }
                "doomed" => {
                    store.fail(job.id, job.lease_token, "doomed: fails every try", true)?;
                }
                _ => finished.push((
                    job.id,
                    job.lease_token,
                    Some(json!({"worker": name, "attempt": job.attempt})),
                )),
            }
        }
        store.complete_many(&finished)?;
    }
    Ok(())
}
