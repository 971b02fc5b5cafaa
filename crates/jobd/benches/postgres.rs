//! jobd on PostgreSQL, beside its limit and beside jobd on SQLite.
//!
//! `cargo bench -p jobd --bench postgres` starts a throwaway cluster
//! (Debian's `postgresql`, `fsync=on`, loopback) and prints a Markdown table:
//!
//! * enqueue one job per transaction, and in batches of 1,000;
//! * claim+complete one job at a time (a claim, then its completion: two
//!   commits a job), and in turns of 100 (a turn completes the last 100 and
//!   claims the next 100 in one transaction, as the worker runtime does);
//! * beside each, **bare PostgreSQL** doing the same work on a table with the
//!   indexes a leased queue needs — a one-row `INSERT`, a multi-row
//!   `INSERT … SELECT FROM unnest`, an `UPDATE … WHERE id IN (SELECT … FOR
//!   UPDATE SKIP LOCKED LIMIT n) RETURNING id` and the completing `UPDATE`,
//!   one statement each, no jobd code: the limit of the server;
//! * and jobd on a SQLite file (`synchronous = FULL`, the default) doing the
//!   same;
//! * drains of 20,000 no-op jobs by 1 and 2 worker processes (this binary
//!   re-executed as a worker), concurrency 32 each, on PostgreSQL and SQLite;
//! * enqueue→start latency (p50/p99) of jobs enqueued one at a time into an
//!   idle worker process — on PostgreSQL woken by `LISTEN/NOTIFY`, on SQLite
//!   by its WAL watch.
//!
//! Runs alternate (bare, jobd PostgreSQL, jobd SQLite; again) and each figure
//! is the median of `JOBD_BENCH_ROUNDS` (3) rounds.  `JOBD_BENCH_JOBS` sets
//! the one-at-a-time size (2,000; batched sizes are 10×).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jobd::store::NewJob;
use jobd::worker::{Handler, JobContext, JobError, Worker};
use jobd::{Store, StoreOptions};
use jobd_testkit::env_usize;
use serde_json::json;

const LEASE: Duration = Duration::from_secs(60);

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

fn job(i: usize) -> NewJob {
    NewJob::new("bench", "noop").payload(&json!({ "n": i }))
}

/// The bare table: the columns and indexes a leased queue needs.
const BARE_SCHEMA: &str = "
CREATE TABLE bare (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL, payload text NOT NULL, state text NOT NULL,
    priority bigint NOT NULL DEFAULT 0, run_at bigint NOT NULL,
    lease_token bigint, lease_expires_at bigint, finished_at bigint);
CREATE INDEX bare_ready ON bare (queue, priority, run_at, id) WHERE state = 'ready';
CREATE INDEX bare_running ON bare (lease_expires_at) WHERE state = 'running';";

const BARE_INSERT: &str =
    "INSERT INTO bare (queue, payload, state, run_at) VALUES ('bench', $1, 'ready', $2)";
const BARE_INSERT_MANY: &str = "
INSERT INTO bare (queue, payload, state, run_at)
SELECT 'bench', p, 'ready', $2 FROM unnest($1::text[]) AS p";
const BARE_CLAIM: &str = "
UPDATE bare SET state = 'running', lease_token = (random() * 9.2e18)::int8,
                lease_expires_at = $2
WHERE id IN (SELECT id FROM bare WHERE state = 'ready' AND queue = 'bench'
             ORDER BY priority, run_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING id, lease_token";
const BARE_COMPLETE: &str = "
UPDATE bare SET state = 'succeeded', finished_at = $3, lease_token = NULL
FROM unnest($1::int8[], $2::int8[]) AS d(id, token)
WHERE bare.id = d.id AND bare.lease_token = d.token AND bare.state = 'running'";

fn now_ms() -> i64 {
    jobd::Clock::now_ms(&jobd::SystemClock)
}

/// Jobs a second: `n` jobs in `t`.
fn rate(n: usize, t: Duration) -> f64 {
    n as f64 / t.as_secs_f64()
}

struct Bare {
    client: postgres::Client,
}

impl Bare {
    fn new(url: &str) -> Bare {
        let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
        client.batch_execute(BARE_SCHEMA).unwrap();
        Bare { client }
    }

    fn reset(&mut self) {
        self.client.batch_execute("TRUNCATE bare").unwrap();
        self.client.batch_execute("VACUUM ANALYZE bare").unwrap();
    }

    fn enqueue(&mut self, n: usize) -> f64 {
        self.reset();
        let s = self.client.prepare(BARE_INSERT).unwrap();
        let t = Instant::now();
        for i in 0..n {
            let p = json!({ "n": i }).to_string();
            self.client.execute(&s, &[&p, &now_ms()]).unwrap();
        }
        rate(n, t.elapsed())
    }

    fn enqueue_many(&mut self, n: usize) -> f64 {
        self.reset();
        let s = self.client.prepare(BARE_INSERT_MANY).unwrap();
        let t = Instant::now();
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let ps: Vec<String> = chunk
                .iter()
                .map(|i| json!({ "n": i }).to_string())
                .collect();
            let mut tx = self.client.transaction().unwrap();
            tx.execute(&s, &[&ps, &now_ms()]).unwrap();
            tx.commit().unwrap();
        }
        rate(n, t.elapsed())
    }

    fn fill(&mut self, n: usize) {
        self.reset();
        let ps: Vec<String> = (0..n).map(|i| json!({ "n": i }).to_string()).collect();
        self.client
            .execute(BARE_INSERT_MANY, &[&ps, &now_ms()])
            .unwrap();
        self.client.batch_execute("VACUUM ANALYZE bare").unwrap();
    }

    /// Claim `batch`, complete them; a claim and a completion commit apart
    /// for one at a time, one commit a turn (the last batch's completion and
    /// the next claim) for batches.
    fn drain(&mut self, n: usize, batch: i64) -> f64 {
        self.fill(n);
        let claim = self.client.prepare(BARE_CLAIM).unwrap();
        let complete = self.client.prepare(BARE_COMPLETE).unwrap();
        let t = Instant::now();
        let mut done = 0;
        let mut held: (Vec<i64>, Vec<i64>) = (Vec::new(), Vec::new());
        loop {
            let rows = if batch == 1 {
                if !held.0.is_empty() {
                    self.client
                        .execute(&complete, &[&held.0, &held.1, &now_ms()])
                        .unwrap();
                }
                self.client
                    .query(&claim, &[&batch, &(now_ms() + 60_000)])
                    .unwrap()
            } else {
                let mut tx = self.client.transaction().unwrap();
                if !held.0.is_empty() {
                    tx.execute(&complete, &[&held.0, &held.1, &now_ms()])
                        .unwrap();
                }
                let rows = tx.query(&claim, &[&batch, &(now_ms() + 60_000)]).unwrap();
                tx.commit().unwrap();
                rows
            };
            done += held.0.len();
            held = rows
                .iter()
                .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
                .unzip();
            if held.0.is_empty() {
                break;
            }
        }
        assert_eq!(done, n);
        rate(n, t.elapsed())
    }
}

/// jobd's side of each figure, on either backend.
struct Jobd {
    store: Store,
    truncate: Box<dyn Fn()>,
}

impl Jobd {
    fn reset(&self) {
        (self.truncate)();
    }

    fn enqueue(&self, n: usize) -> f64 {
        self.reset();
        let t = Instant::now();
        for i in 0..n {
            self.store.enqueue(&job(i)).unwrap();
        }
        rate(n, t.elapsed())
    }

    fn enqueue_many(&self, n: usize) -> f64 {
        self.reset();
        let jobs: Vec<NewJob> = (0..n).map(job).collect();
        let t = Instant::now();
        for chunk in jobs.chunks(1000) {
            self.store.enqueue_many(chunk).unwrap();
        }
        rate(n, t.elapsed())
    }

    fn fill(&self, n: usize) {
        self.reset();
        let jobs: Vec<NewJob> = (0..n).map(job).collect();
        for chunk in jobs.chunks(5000) {
            self.store.enqueue_many(chunk).unwrap();
        }
    }

    fn drain_single(&self, n: usize) -> f64 {
        self.fill(n);
        let t = Instant::now();
        let mut done = 0;
        while let Some(j) = self
            .store
            .claim("bench", &["bench"], 1, LEASE)
            .unwrap()
            .pop()
        {
            self.store.complete(j.id, j.lease_token, None).unwrap();
            done += 1;
        }
        assert_eq!(done, n);
        rate(n, t.elapsed())
    }

    fn drain_turns(&self, n: usize) -> f64 {
        self.fill(n);
        let t = Instant::now();
        let mut held: Vec<(i64, i64, Option<serde_json::Value>)> = Vec::new();
        let mut done = 0;
        loop {
            let (batch, claimed) = self
                .store
                .complete_and_claim(&held, "bench", &[("bench", 100)], 100, LEASE)
                .unwrap();
            done += batch.completed;
            if claimed.is_empty() {
                break;
            }
            held = claimed
                .iter()
                .map(|j| (j.id, j.lease_token, None))
                .collect();
        }
        assert_eq!(done, n);
        rate(n, t.elapsed())
    }
}

#[derive(Default)]
struct Noop;

impl Handler for Noop {
    const KIND: &'static str = "noop";
    type Payload = serde_json::Value;
    type Output = ();
    async fn run(&self, _ctx: JobContext, _p: serde_json::Value) -> Result<(), JobError> {
        Ok(())
    }
}

/// This binary as a worker process on `db` (see `main`).
fn worker(db: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env("JOBD_BENCH_WORKER", db)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn run_worker(db: &str) {
    let store = Store::connect(db, StoreOptions::default()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        Worker::builder(store)
            .handler::<Noop>()
            .queue("bench", 32)
            .run(jobd::worker::shutdown_signal())
            .await
            .unwrap();
    });
}

fn succeeded(store: &Store) -> i64 {
    store
        .stats()
        .unwrap()
        .queue("bench")
        .map_or(0, |q| q.succeeded)
}

/// `n` jobs enqueued, then drained by `procs` worker processes: jobs a
/// second from the first start to the last finish.
fn drain_processes(j: &Jobd, db: &str, n: usize, procs: usize) -> f64 {
    j.fill(n);
    let mut children: Vec<Child> = (0..procs).map(|_| worker(db)).collect();
    let t = Instant::now();
    while succeeded(&j.store) < n as i64 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = t.elapsed();
    for c in &mut children {
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().unwrap();
    }
    rate(n, elapsed)
}

/// Enqueue→start latency into one idle worker process, one job at a time:
/// (p50, p99) in ms, from the job's own created and started times.
fn latency(j: &Jobd, db: &str, n: usize) -> (f64, f64) {
    j.reset();
    let mut child = worker(db);
    std::thread::sleep(Duration::from_millis(1500));
    let mut ms = Vec::with_capacity(n);
    for i in 0..n {
        let id = j.store.enqueue(&job(i)).unwrap();
        loop {
            let info = j.store.get(id).unwrap();
            if let Some(started) = info.started_at {
                ms.push((started - info.created_at) as f64);
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        // The worker idle again before the next enqueue.
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (ms[n / 2], ms[(n * 99) / 100])
}

fn main() {
    if let Ok(db) = std::env::var("JOBD_BENCH_WORKER") {
        return run_worker(&db);
    }
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` asks; nothing to list
    }
    std::env::set_var("JOBD_TEST_PG_FSYNC", "on");
    let Some(cluster) = jobd_testkit::pg::cluster() else {
        eprintln!("no PostgreSQL: apt-get install postgresql");
        return;
    };
    let n = env_usize("JOBD_BENCH_JOBS", 2000);
    let rounds = env_usize("JOBD_BENCH_ROUNDS", 3);
    let drain_n = env_usize("JOBD_BENCH_DRAIN", 20_000);

    let bare_url = cluster.create_database();
    let pg_url = cluster.create_database();
    let mut bare = Bare::new(&bare_url);
    let pg = Jobd {
        store: Store::connect(&pg_url, StoreOptions::default()).unwrap(),
        truncate: {
            let url = pg_url.clone();
            Box::new(move || {
                let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                c.batch_execute("TRUNCATE jobs CASCADE").unwrap();
                c.batch_execute("VACUUM ANALYZE jobs").unwrap();
            })
        },
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("queue.db");
    let file_db = file.display().to_string();
    let lite = Jobd {
        store: Store::open(&file).unwrap(),
        truncate: {
            let file = file.clone();
            Box::new(move || {
                let c = rusqlite::Connection::open(&file).unwrap();
                c.execute_batch("DELETE FROM jobs; PRAGMA wal_checkpoint(TRUNCATE);")
                    .unwrap();
            })
        },
    };

    type Row = (&'static str, Vec<f64>, Vec<f64>, Vec<f64>);
    let mut rows: Vec<Row> = vec![
        ("enqueue, 1 a transaction", vec![], vec![], vec![]),
        ("enqueue, batches of 1,000", vec![], vec![], vec![]),
        ("claim+complete, 1 at a time", vec![], vec![], vec![]),
        ("claim+complete, turns of 100", vec![], vec![], vec![]),
    ];
    for round in 0..rounds {
        eprintln!("round {} of {rounds}", round + 1);
        rows[0].1.push(bare.enqueue(n));
        rows[0].2.push(pg.enqueue(n));
        rows[0].3.push(lite.enqueue(n));
        rows[1].1.push(bare.enqueue_many(10 * n));
        rows[1].2.push(pg.enqueue_many(10 * n));
        rows[1].3.push(lite.enqueue_many(10 * n));
        rows[2].1.push(bare.drain(n, 1));
        rows[2].2.push(pg.drain_single(n));
        rows[2].3.push(lite.drain_single(n));
        rows[3].1.push(bare.drain(10 * n, 100));
        rows[3].2.push(pg.drain_turns(10 * n));
        rows[3].3.push(lite.drain_turns(10 * n));
    }
    println!("| jobs/s | bare PostgreSQL | jobd on PostgreSQL | of bare | jobd on SQLite |");
    println!("|---|---:|---:|---:|---:|");
    for (name, b, p, l) in &rows {
        let (b, p, l) = (median(b.clone()), median(p.clone()), median(l.clone()));
        println!(
            "| {name} | {b:.0} | {p:.0} | {:.0}% | {l:.0} |",
            100.0 * p / b
        );
    }
    let bare_turns = median(rows[3].1.clone());
    println!();
    println!(
        "| drain of {drain_n} no-op jobs | jobd on PostgreSQL | of bare turns | jobd on SQLite |"
    );
    println!("|---|---:|---:|---:|");
    for procs in [1, 2] {
        let (mut p, mut l) = (vec![], vec![]);
        for _ in 0..rounds {
            p.push(drain_processes(&pg, &pg_url, drain_n, procs));
            l.push(drain_processes(&lite, &file_db, drain_n, procs));
        }
        let (p, l) = (median(p), median(l));
        println!(
            "| {procs} worker process{} × 32 | {p:.0} | {:.0}% | {l:.0} |",
            if procs > 1 { "es" } else { "" },
            100.0 * p / bare_turns
        );
    }
    let (p50, p99) = latency(&pg, &pg_url, 200);
    let (l50, l99) = latency(&lite, &file_db, 200);
    println!();
    println!("| enqueue→start, idle worker process | p50 | p99 |");
    println!("|---|---:|---:|");
    println!("| PostgreSQL (LISTEN/NOTIFY) | {p50:.1} ms | {p99:.1} ms |");
    println!("| SQLite (WAL watch) | {l50:.1} ms | {l99:.1} ms |");
}
