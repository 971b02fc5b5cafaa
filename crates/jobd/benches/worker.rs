//! End-to-end worker throughput and latency, no-op jobs.
//!
//! `cargo bench --bench worker` prints a Markdown table:
//! * drain: 100,000 jobs enqueued first, then drained by 1 and by 2 worker
//!   processes (this binary re-executed as a child worker), jobs/s from the
//!   workers' start to the last completion;
//! * enqueue→start latency (p50/p99) for jobs enqueued one at a time into an
//!   idle worker, in the same process and from another process;
//! * CPU used by an idle worker process over 5 s, as a share of one core.
//!
//! `JOBD_BENCH_JOBS` changes the drain size.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jobd::store::NewJob;
use jobd::worker::{Worker, WorkerBuilder};
use jobd::Store;
use serde_json::json;

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// The worker under test: one queue, a no-op handler that reports when it
/// started (wall clock, µs).
fn worker(store: Store) -> WorkerBuilder {
    Worker::builder(store)
        .handle_fn("noop", |_ctx, _p| async {
            Ok(json!({ "started_us": now_us() }))
        })
        .queue("bench", 512)
}

fn child_main(db: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = Store::open(db).unwrap();
        worker(store)
            .run(jobd::worker::shutdown_signal())
            .await
            .unwrap();
    });
}

fn spawn_child(db: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .arg("--child-worker")
        .arg(db)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn stop(mut children: Vec<Child>) {
    for c in &children {
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    }
    for c in &mut children {
        c.wait().unwrap();
    }
}

fn succeeded(store: &Store) -> i64 {
    store
        .stats()
        .unwrap()
        .queue("bench")
        .map(|q| q.succeeded)
        .unwrap_or(0)
}

fn drain(dir: &Path, jobs: usize, processes: usize) -> f64 {
    let db = dir.join(format!("drain-{processes}.db"));
    let store = Store::open(&db).unwrap();
    let batch: Vec<NewJob> = (0..1000).map(|_| NewJob::new("bench", "noop")).collect();
    for _ in 0..jobs / 1000 {
        store.enqueue_many(&batch).unwrap();
    }
    let conn = store.connection().unwrap();
    // Cheap to ask (two index seeks), so watching does not slow the drain.
    let unfinished = || -> bool {
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'ready')
                 OR EXISTS (SELECT 1 FROM jobs WHERE state = 'running')",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let t = Instant::now();
    let children: Vec<Child> = (0..processes).map(|_| spawn_child(&db)).collect();
    while unfinished() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let rate = jobs as f64 / t.elapsed().as_secs_f64();
    stop(children);
    assert_eq!(succeeded(&store), (jobs / 1000 * 1000) as i64);
    rate
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Enqueue one job at a time into an idle worker; latency from just before
/// the enqueue to the handler's start, in ms.
fn latencies(store: &Store, samples: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        std::thread::sleep(Duration::from_millis(20)); // let the worker go idle
        let before = now_us();
        let id = store.enqueue(&NewJob::new("bench", "noop")).unwrap();
        let started = loop {
            let job = store.get(id).unwrap();
            if let Some(r) = job.result {
                break r["started_us"].as_i64().unwrap();
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        out.push((started - before) as f64 / 1000.0);
    }
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after "pid (comm) ".
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child-worker") {
        return child_main(&args[i + 1]);
    }
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probing
    }
    let jobs: usize = std::env::var("JOBD_BENCH_JOBS")
        .ok()
        .map(|v| v.parse().unwrap())
        .unwrap_or(100_000);
    let base = std::env::current_dir().unwrap().join("target");
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();

    eprintln!("draining {jobs} jobs with 1 process ...");
    let one = drain(dir.path(), jobs, 1);
    eprintln!("draining {jobs} jobs with 2 processes ...");
    let two = drain(dir.path(), jobs, 2);

    eprintln!("in-process latency ...");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = Store::open(dir.path().join("latency-in.db")).unwrap();
    let stop_in = tokio_util::sync::CancellationToken::new();
    let handle = {
        let s = stop_in.clone();
        rt.spawn(worker(store.clone()).run(async move { s.cancelled().await }))
    };
    let inproc = latencies(&store, 300);
    stop_in.cancel();
    rt.block_on(handle).unwrap().unwrap();

    eprintln!("cross-process latency and idle CPU ...");
    let db = dir.path().join("latency-x.db");
    let store = Store::open(&db).unwrap();
    let child = spawn_child(&db);
    let cross = latencies(&store, 300);
    std::thread::sleep(Duration::from_secs(1));
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (c0, t0) = (cpu_ticks(child.id()), Instant::now());
    std::thread::sleep(Duration::from_secs(5));
    let idle_cpu =
        (cpu_ticks(child.id()) - c0) as f64 / ticks_per_s / t0.elapsed().as_secs_f64() * 100.0;
    stop(vec![child]);

    println!("| measurement | result |");
    println!("|---|---:|");
    println!("| drain {jobs} no-op jobs, 1 worker process | {one:.0} jobs/s |");
    println!("| drain {jobs} no-op jobs, 2 worker processes | {two:.0} jobs/s |");
    println!(
        "| enqueue→start, in-process, p50 / p99 | {:.2} ms / {:.2} ms |",
        percentile(&inproc, 0.5),
        percentile(&inproc, 0.99)
    );
    println!(
        "| enqueue→start, cross-process, p50 / p99 | {:.2} ms / {:.2} ms |",
        percentile(&cross, 0.5),
        percentile(&cross, 0.99)
    );
    println!("| idle worker process CPU | {idle_cpu:.2}% of a core |");
}
