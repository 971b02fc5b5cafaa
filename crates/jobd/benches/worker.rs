//! End-to-end worker throughput and latency, no-op jobs, each drain beside
//! bare SQLite doing the same claims and completions in the same run.
//!
//! `cargo bench -p jobd --bench worker` prints a Markdown table:
//! * drains: 50,000 no-op jobs enqueued first, then drained by worker
//!   processes (this binary re-executed as a child worker) started after the
//!   prefill, at the concurrency, `synchronous` setting and process count of
//!   each case.  The handler only notes when it started; the rate is the
//!   steady state, (N − 1) / (last start − first start) across the
//!   processes.  With two processes, each one's share of the jobs.
//! * beside each drain, bare SQLite on the same file system with the same
//!   `synchronous`: a claim of as many jobs as the concurrency and their
//!   completing `UPDATE`s, two commits a batch, until the queue is empty.
//!   Cases are taken in rounds (raw, jobd, next case …; again), medians of
//!   the rounds, so a drift of the machine moves both sides of a ratio.
//! * enqueue→start latency (p50/p99) for jobs enqueued one at a time into an
//!   idle worker, in the same process and from another process — beside
//!   its floor, bare SQLite committing an `INSERT` and then a claim on
//!   another connection after the same idle pause;
//! * CPU used by an idle worker process over 5 s, as a share of one core.
//!
//! `JOBD_BENCH_JOBS` changes the drain size, `JOBD_BENCH_ROUNDS` the rounds
//! (3), `JOBD_BENCH_CASES` picks the cases whose name contains it, and
//! `JOBD_BENCH_LATENCY=0` leaves the latency and idle measurements out.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jobd::store::{NewJob, StoreOptions, Synchronous};
use jobd::worker::{Handler, JobContext, JobError, Worker, WorkerBuilder};
use jobd::Store;
use rusqlite::params;
use serde_json::json;

mod raw;

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// When this process's first and last no-op job started, and how many ran.
static FIRST_US: AtomicI64 = AtomicI64::new(i64::MAX);
static LAST_US: AtomicI64 = AtomicI64::new(0);
static RAN: AtomicU64 = AtomicU64::new(0);

/// The drained job: notes its start, returns nothing.
#[derive(Default)]
struct Noop;

impl Handler for Noop {
    const KIND: &'static str = "noop";
    type Payload = serde::de::IgnoredAny;
    type Output = ();
    async fn run(&self, _: JobContext, _: serde::de::IgnoredAny) -> Result<(), JobError> {
        let t = now_us();
        FIRST_US.fetch_min(t, Ordering::Relaxed);
        LAST_US.fetch_max(t, Ordering::Relaxed);
        RAN.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The worker under test: one queue, the no-op handler, and `stamp`, which
/// returns when it started (wall clock, µs) for the latency runs.
fn worker(store: Store, concurrency: usize) -> WorkerBuilder {
    Worker::builder(store)
        .handler::<Noop>()
        .handle_fn("stamp", |_ctx, _p| async {
            Ok(json!({ "started_us": now_us() }))
        })
        .queue("bench", concurrency)
}

fn sync_name(s: Synchronous) -> &'static str {
    match s {
        Synchronous::Full => "FULL",
        _ => "NORMAL",
    }
}

fn open(db: &Path, sync: Synchronous) -> Store {
    Store::open_with(db, StoreOptions::default().synchronous(sync)).unwrap()
}

/// A child worker: runs until SIGTERM, then prints `ran first_us last_us`.
fn child_main(args: &[String]) {
    let (db, concurrency, sync, logs) = (
        &args[0],
        args[1].parse().unwrap(),
        if args[2] == "FULL" {
            Synchronous::Full
        } else {
            Synchronous::Normal
        },
        args[3] == "logs",
    );
    if logs {
        // The daemon's logging: text at INFO, here into nothing.
        tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_writer(std::io::sink)
            .init();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = open(Path::new(db), sync);
        worker(store, concurrency)
            .run(jobd::worker::shutdown_signal())
            .await
            .unwrap();
    });
    println!(
        "{} {} {}",
        RAN.load(Ordering::Relaxed),
        FIRST_US.load(Ordering::Relaxed),
        LAST_US.load(Ordering::Relaxed)
    );
}

fn spawn_child(db: &Path, concurrency: usize, sync: Synchronous, logs: bool) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .arg("--child-worker")
        .arg(db)
        .arg(concurrency.to_string())
        .arg(sync_name(sync))
        .arg(if logs { "logs" } else { "quiet" })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// SIGTERM the children and read what each ran: `(ran, first_us, last_us)`.
fn stop(mut children: Vec<Child>) -> Vec<(u64, i64, i64)> {
    for c in &children {
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    }
    children
        .iter_mut()
        .map(|c| {
            let mut out = String::new();
            c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            assert!(c.wait().unwrap().success());
            let v: Vec<i64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
            (v[0] as u64, v[1], v[2])
        })
        .collect()
}

struct Case {
    name: &'static str,
    concurrency: usize,
    sync: Synchronous,
    processes: usize,
    logs: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "concurrency 16, NORMAL, 1 process",
        concurrency: 16,
        sync: Synchronous::Normal,
        processes: 1,
        logs: false,
    },
    Case {
        name: "concurrency 16, NORMAL, 2 processes",
        concurrency: 16,
        sync: Synchronous::Normal,
        processes: 2,
        logs: false,
    },
    Case {
        name: "concurrency 1, NORMAL, 1 process",
        concurrency: 1,
        sync: Synchronous::Normal,
        processes: 1,
        logs: false,
    },
    Case {
        name: "concurrency 16, FULL, 1 process",
        concurrency: 16,
        sync: Synchronous::Full,
        processes: 1,
        logs: false,
    },
    Case {
        name: "concurrency 512, NORMAL, 1 process",
        concurrency: 512,
        sync: Synchronous::Normal,
        processes: 1,
        logs: false,
    },
    Case {
        name: "concurrency 16, NORMAL, 1 process, logs at INFO",
        concurrency: 16,
        sync: Synchronous::Normal,
        processes: 1,
        logs: true,
    },
];

/// What one drain measured.
struct Drained {
    rate: f64,
    /// Each process's share of the jobs.
    shares: Vec<f64>,
}

/// Drain `jobs` prefilled jobs with the case's worker processes.
fn drain(dir: &Path, jobs: usize, case: &Case) -> Drained {
    let db = dir.join("drain.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let store = open(&db, case.sync);
    let batch: Vec<NewJob> = (0..1000).map(|_| NewJob::new("bench", "noop")).collect();
    for _ in 0..jobs / 1000 {
        store.enqueue_many(&batch).unwrap();
    }
    let conn = store.sqlite().unwrap().connection().unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
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
    let children: Vec<Child> = (0..case.processes)
        .map(|_| spawn_child(&db, case.concurrency, case.sync, case.logs))
        .collect();
    while unfinished() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let ran = stop(children);
    let total: u64 = ran.iter().map(|r| r.0).sum();
    let done: i64 = conn
        .query_row(
            "SELECT count(*) FROM jobs WHERE state = 'succeeded'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(done as usize, jobs / 1000 * 1000);
    assert_eq!(total as i64, done, "every job ran once");
    let first = ran.iter().filter(|r| r.0 > 0).map(|r| r.1).min().unwrap();
    let last = ran.iter().map(|r| r.2).max().unwrap();
    Drained {
        rate: (total - 1) as f64 / ((last - first) as f64 / 1e6),
        shares: ran.iter().map(|r| r.0 as f64 / total as f64).collect(),
    }
}

/// Bare SQLite: `jobs` rows claimed `batch` at a time and completed, two
/// commits a batch, jobs/s.
fn raw_drain(dir: &Path, jobs: usize, batch: usize, sync: Synchronous) -> f64 {
    let db = dir.join("raw.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let c = raw::open(&db, sync_name(sync));
    c.execute_batch("BEGIN").unwrap();
    {
        let mut insert = c.prepare_cached(raw::INSERT).unwrap();
        for i in 0..jobs as i64 {
            insert.execute(params!["{}", i]).unwrap();
        }
    }
    c.execute_batch("COMMIT; PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let mut claim = c.prepare_cached(raw::CLAIM).unwrap();
    let mut done = c.prepare_cached(raw::DONE).unwrap();
    let t = Instant::now();
    let mut finished = 0;
    loop {
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        let got: Vec<(i64, String, i64)> = claim
            .query_map(params![i64::MAX, batch as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        c.execute_batch("COMMIT").unwrap();
        if got.is_empty() {
            break;
        }
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        for (id, _payload, token) in &got {
            let none: Option<&str> = None;
            assert_eq!(done.execute(params![id, token, none]).unwrap(), 1);
        }
        c.execute_batch("COMMIT").unwrap();
        finished += got.len();
    }
    assert_eq!(finished, jobs);
    jobs as f64 / t.elapsed().as_secs_f64()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

/// Enqueue one job at a time into an idle worker; latency from just before
/// the enqueue to the handler's start, in ms.
fn latencies(store: &Store, samples: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        std::thread::sleep(Duration::from_millis(20)); // let the worker go idle
        let before = now_us();
        let id = store.enqueue(&NewJob::new("bench", "stamp")).unwrap();
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

/// The floor of enqueue→start on an idle file, bare SQLite: a one-row
/// `INSERT` committed, then a claim `UPDATE … RETURNING` committed on
/// another connection, back to back (no wake-up between them), after the
/// same idle pause as [`latencies`]; in ms.
fn raw_latencies(dir: &Path, samples: usize) -> Vec<f64> {
    let db = dir.join("raw-latency.db");
    let producer = raw::open(&db, "NORMAL");
    let worker = rusqlite::Connection::open(&db).unwrap();
    worker.execute_batch("PRAGMA busy_timeout=10000;").unwrap();
    let mut insert = producer.prepare_cached(raw::INSERT).unwrap();
    let mut claim = worker.prepare_cached(raw::CLAIM).unwrap();
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples as i64 {
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        insert.execute(params!["{}", i]).unwrap();
        worker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let got: Vec<i64> = claim
            .query_map(params![i64::MAX, 1], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        worker.execute_batch("COMMIT").unwrap();
        assert_eq!(got.len(), 1);
        out.push(t.elapsed().as_secs_f64() * 1000.0);
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

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child-worker") {
        return child_main(&args[i + 1..]);
    }
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probing
    }
    let jobs = env_or("JOBD_BENCH_JOBS", 50_000);
    let rounds = env_or("JOBD_BENCH_ROUNDS", 3);
    let pick = std::env::var("JOBD_BENCH_CASES").unwrap_or_default();
    let cases: Vec<&Case> = CASES.iter().filter(|c| c.name.contains(&pick)).collect();
    let base = std::env::current_dir().unwrap().join("target");
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();

    // Untimed: the first drain of a run measured a third slower than the
    // same drain later, on both sides.
    eprintln!("warming up ...");
    raw_drain(dir.path(), jobs.min(20_000), 16, Synchronous::Normal);
    drain(dir.path(), jobs.min(20_000) / 1000 * 1000, &CASES[0]);

    let mut raws = vec![Vec::new(); cases.len()];
    let mut runs: Vec<Vec<Drained>> = (0..cases.len()).map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (k, case) in cases.iter().enumerate() {
            eprintln!("round {round}/{rounds}: {} ...", case.name);
            raws[k].push(raw_drain(dir.path(), jobs, case.concurrency, case.sync));
            runs[k].push(drain(dir.path(), jobs, case));
        }
    }

    println!(
        "| drain of {jobs} no-op jobs | jobd (jobs/s) | bare SQLite, same batch (jobs/s) | jobd / bare | jobs per process |"
    );
    println!("|---|--:|--:|--:|---|");
    for (k, case) in cases.iter().enumerate() {
        let rates: Vec<f64> = runs[k].iter().map(|d| d.rate).collect();
        let jobd = median(rates.clone());
        let bare = median(raws[k].clone());
        let shares = if case.processes > 1 {
            runs[k]
                .iter()
                .map(|d| {
                    d.shares
                        .iter()
                        .map(|s| format!("{:.0}%", s * 100.0))
                        .collect::<Vec<_>>()
                        .join("/")
                })
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            "—".to_string()
        };
        let (lo, hi) = (
            rates.iter().cloned().fold(f64::MAX, f64::min),
            rates.iter().cloned().fold(0.0, f64::max),
        );
        println!(
            "| {} | {jobd:.0} ({lo:.0}–{hi:.0}) | {bare:.0} | {:.0}% | {shares} |",
            case.name,
            jobd / bare * 100.0
        );
    }

    if env_or("JOBD_BENCH_LATENCY", 1) == 0 {
        return;
    }
    eprintln!("bare SQLite latency floor ...");
    let floor = raw_latencies(dir.path(), 300);
    eprintln!("in-process latency ...");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = Store::open(dir.path().join("latency-in.db")).unwrap();
    let stop_in = tokio_util::sync::CancellationToken::new();
    let handle = {
        let s = stop_in.clone();
        rt.spawn(worker(store.clone(), 16).run(async move { s.cancelled().await }))
    };
    let inproc = latencies(&store, 300);
    stop_in.cancel();
    rt.block_on(handle).unwrap().unwrap();

    eprintln!("cross-process latency and idle CPU ...");
    let db = dir.path().join("latency-x.db");
    let store = Store::open(&db).unwrap();
    let child = spawn_child(&db, 16, Synchronous::Normal, false);
    let cross = latencies(&store, 300);
    std::thread::sleep(Duration::from_secs(1));
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (c0, t0) = (cpu_ticks(child.id()), Instant::now());
    std::thread::sleep(Duration::from_secs(5));
    let idle_cpu =
        (cpu_ticks(child.id()) - c0) as f64 / ticks_per_s / t0.elapsed().as_secs_f64() * 100.0;
    stop(vec![child]);

    println!();
    println!("| latency and idle | result |");
    println!("|---|---:|");
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
    println!(
        "| bare SQLite, INSERT then claim on another connection, p50 / p99 | {:.2} ms / {:.2} ms |",
        percentile(&floor, 0.5),
        percentile(&floor, 0.99)
    );
    println!("| idle worker process CPU | {idle_cpu:.2}% of a core |");
}
