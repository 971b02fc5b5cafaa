//! `jobd bench`: how fast is jobd on this disk?  Enqueue N no-op jobs, drain
//! them with W in-process workers and P extra `jobd worker` processes, then
//! measure enqueue→start latency on an idle worker.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use jobd::store::NewJob;
use jobd::worker::Worker;
use jobd::Store;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::CliResult;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// No-op jobs to enqueue and drain.
    #[arg(long, default_value_t = 50_000)]
    jobs: usize,
    /// Workers in this process.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Extra `jobd worker` processes on the same file.
    #[arg(long, default_value_t = 0)]
    processes: usize,
    /// Where to put the scratch queue file (default: a fresh directory in
    /// the data dir, so the disk measured is the one jobd uses; removed after).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Jobs enqueued one at a time into an idle worker for the latency figures.
    #[arg(long, default_value_t = 300)]
    latency_samples: usize,
}

const QUEUE: &str = "bench";
const CONCURRENCY: usize = 256;

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn worker(store: &Store) -> jobd::worker::WorkerBuilder {
    Worker::builder(store.clone())
        .handle_fn("noop", |_ctx, _p| async {
            Ok(json!({ "started_us": now_us() }))
        })
        .queue(QUEUE, CONCURRENCY)
}

pub fn run(data_dir: &Path, args: BenchArgs) -> CliResult {
    if args.jobs == 0 || args.workers + args.processes == 0 {
        return Err("give --jobs > 0 and at least one worker or process".into());
    }
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => data_dir.join(format!(".bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let outcome = bench(&dir, &args);
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    outcome
}

fn bench(dir: &Path, args: &BenchArgs) -> CliResult {
    let db = dir.join("bench.db");
    let store = Store::open(&db)?;
    let jobs: Vec<NewJob> = (0..args.jobs).map(|_| NewJob::new(QUEUE, "noop")).collect();
    let t = Instant::now();
    for chunk in jobs.chunks(1000) {
        store.enqueue_many(chunk)?;
    }
    let enqueue = t.elapsed();

    let t = Instant::now();
    let mut children: Vec<Child> = (0..args.processes)
        .map(|_| {
            Command::new(std::env::current_exe()?)
                .args(["--db", &db.to_string_lossy(), "worker", "--queue", QUEUE])
                .args(["--concurrency", &CONCURRENCY.to_string()])
                .env("JOBD_LOG", "error")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let stop = CancellationToken::new();
    let drained = runtime.block_on(async {
        let mut handles = Vec::new();
        for _ in 0..args.workers {
            let stop = stop.clone();
            handles.push(tokio::spawn(
                worker(&store).run(async move { stop.cancelled().await }),
            ));
        }
        let total = args.jobs as i64;
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let store = store.clone();
            let done = tokio::task::spawn_blocking(move || {
                store
                    .stats()
                    .map(|s| s.queue(QUEUE).map(|q| q.succeeded).unwrap_or(0))
            })
            .await??;
            if done >= total {
                break;
            }
        }
        let drained = t.elapsed();
        Ok::<_, Box<dyn std::error::Error>>((drained, handles))
    });
    for c in &children {
        // SAFETY: kill(2) with a child's pid; a failure only leaves it running
        // until the wait below is interrupted by the user.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    }
    for c in &mut children {
        let _ = c.wait();
    }
    let (drain, handles) = drained?;

    // Latency: one job at a time into the (now idle) in-process workers, or
    // a fresh one when all the workers were processes.
    let latencies = runtime.block_on(async {
        let extra = (args.workers == 0).then(|| {
            let stop = stop.clone();
            tokio::spawn(worker(&store).run(async move { stop.cancelled().await }))
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut ids = Vec::with_capacity(args.latency_samples);
        let mut enqueued = Vec::with_capacity(args.latency_samples);
        for _ in 0..args.latency_samples {
            let store = store.clone();
            let at = now_us();
            let id =
                tokio::task::spawn_blocking(move || store.enqueue(&NewJob::new(QUEUE, "noop")))
                    .await??;
            ids.push(id);
            enqueued.push(at);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let mut lat = Vec::with_capacity(ids.len());
        for (id, at) in ids.iter().zip(&enqueued) {
            let t0 = Instant::now();
            loop {
                let job = store.get(*id)?;
                if let Some(started) = job.result.as_ref().and_then(|r| r["started_us"].as_i64()) {
                    lat.push((started - at) as f64 / 1000.0);
                    break;
                }
                if t0.elapsed() > Duration::from_secs(10) {
                    return Err(format!("job {id} did not run").into());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        stop.cancel();
        for h in handles {
            h.await??;
        }
        if let Some(h) = extra {
            h.await??;
        }
        Ok::<_, Box<dyn std::error::Error>>(lat)
    })?;
    let mut lat = latencies;
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };

    println!("jobd bench on {}", dir.display());
    println!(
        "  enqueue   {} jobs in {:.2} s: {:.0} jobs/s (batches of 1,000)",
        args.jobs,
        enqueue.as_secs_f64(),
        args.jobs as f64 / enqueue.as_secs_f64()
    );
    println!(
        "  drain     {:.2} s: {:.0} jobs/s with {} in-process worker(s) and {} process(es)",
        drain.as_secs_f64(),
        args.jobs as f64 / drain.as_secs_f64(),
        args.workers,
        args.processes
    );
    println!(
        "  latency   enqueue→start p50 {:.2} ms, p99 {:.2} ms ({} jobs one at a time)",
        pct(0.5),
        pct(0.99),
        lat.len()
    );
    Ok(ExitCode::SUCCESS)
}
