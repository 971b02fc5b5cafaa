//! Store hot paths, each beside the raw SQLite limit on the same file system.
//!
//! `cargo bench --bench store` prints a Markdown table.  For each size of
//! existing rows (default 10k and 1M; `JOBD_BENCH_SIZES=10000,1000000`), it
//! measures jobd's enqueue, batched enqueue, claim+complete one at a time and
//! in batches of 100 — and, on a bare table with the same indexes a leased
//! queue needs, a one-row INSERT per transaction and a bare claim
//! `UPDATE … RETURNING` + completing `UPDATE` per job, no jobd code; and the
//! same in batches (1000-row insert transactions; a claim of 100 and its 100
//! completing updates), beside which the batched jobd figures stand.
//!
//! Each figure is the median of 5 runs, and the runs are taken in rounds:
//! in each round every size's file gets one raw run and then one jobd run
//! (10k raw, 10k jobd, 1M raw, 1M jobd; again …).  So a drift of this shared
//! machine's speed moves both sides of every ratio — jobd against its raw
//! limit, and 1M rows against 10k — instead of showing up as a difference
//! between figures measured minutes apart.  Every run starts from a
//! checkpointed file (an empty WAL) on both sides.  Claims run on tables of
//! the stated size: what the enqueue runs added is deleted first.

use std::path::Path;
use std::time::{Duration, Instant};

use jobd::store::NewJob;
use jobd::Store;
use rusqlite::{params, Connection};

mod raw;

const LEASE: Duration = Duration::from_secs(60);
const RUNS: usize = 5;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

fn job(i: usize) -> NewJob {
    NewJob::new("bench", "noop").payload(&serde_json::json!({"n": i}))
}

/// A jobd file with `rows` existing jobs: 90% finished history, 10% ready
/// (in another queue, so they are waiting work the benchmark does not drain).
fn prefill_jobd(path: &Path, rows: usize) -> Store {
    let store = Store::open(path).unwrap();
    let batch: Vec<NewJob> = (0..10_000)
        .map(|i| NewJob::new("backlog", "noop").payload(&serde_json::json!({"n": i})))
        .collect();
    for _ in 0..rows / batch.len() {
        store.enqueue_many(&batch).unwrap();
    }
    let conn = store.sqlite().unwrap().connection().unwrap();
    conn.execute(
        "UPDATE jobs SET state = 'succeeded', finished_at = created_at, attempts = 1 WHERE id % 10 != 0",
        [],
    )
    .unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); ANALYZE;")
        .unwrap();
    drop(conn);
    store
}

fn raw_conn(path: &Path, rows: usize) -> Connection {
    let c = raw::open(path, "NORMAL");
    c.execute_batch("BEGIN").unwrap();
    for i in 0..rows {
        let state = if i % 10 == 0 { "ready" } else { "done" };
        c.execute(
            "INSERT INTO raw (queue, payload, state, run_at) VALUES ('backlog', ?1, ?2, ?3)",
            params![format!("{{\"n\":{i}}}"), state, i as i64],
        )
        .unwrap();
    }
    c.execute_batch("COMMIT; PRAGMA wal_checkpoint(TRUNCATE); ANALYZE;")
        .unwrap();
    c
}

/// One size's two files and the counters its runs go on from.
struct Side {
    rows: usize,
    raw: Connection,
    store: Store,
    /// Jobs of 1000 for the batched enqueues.
    batch: Vec<NewJob>,
    /// Inserted so far (payloads and run_at of the raw rows, jobd's payloads).
    n: i64,
    _dir: tempfile::TempDir,
}

impl Side {
    fn new(base: &Path, rows: usize) -> Side {
        let dir = tempfile::tempdir_in(base).unwrap();
        eprintln!("preparing {rows} existing rows ...");
        Side {
            rows,
            raw: raw_conn(&dir.path().join("raw.db"), rows),
            store: prefill_jobd(&dir.path().join("queue.db"), rows),
            batch: (0..1000).map(job).collect(),
            n: 0,
            _dir: dir,
        }
    }

    /// The batched insert limit: `count` 1000-row insert transactions.
    fn raw_many_txs(&mut self, count: usize) {
        let mut stmt = self.raw.prepare_cached(raw::INSERT).unwrap();
        for _ in 0..count {
            self.raw.execute_batch("BEGIN").unwrap();
            for _ in 0..1000 {
                self.n += 1;
                stmt.execute(params![format!("{{\"n\":{}}}", self.n), self.n])
                    .unwrap();
            }
            self.raw.execute_batch("COMMIT").unwrap();
        }
    }

    /// Make the `bench` queue hold just the `supply` jobs the claim runs
    /// consume, on both files (untimed), so claims run on tables of the
    /// stated size.  (Each run settles the files first.)
    fn supply_claims(&mut self, supply: usize) {
        self.raw
            .execute_batch("DELETE FROM raw WHERE queue = 'bench'")
            .unwrap();
        self.raw_many_txs(supply / 1000);
        self.store
            .sqlite()
            .unwrap()
            .connection()
            .unwrap()
            .execute("DELETE FROM jobs WHERE queue = 'bench'", [])
            .unwrap();
        for _ in 0..supply / 1000 {
            self.store.enqueue_many(&self.batch).unwrap();
        }
    }
}

/// Ops per second of `f`, which performs `ops` operations.
fn rate(ops: usize, side: &mut Side, f: &impl Fn(&mut Side)) -> f64 {
    let t = Instant::now();
    f(side);
    ops as f64 / t.elapsed().as_secs_f64()
}

/// Checkpoint every file (untimed), so that each run starts on an empty WAL
/// and no run pays for the checkpoint of the one before it: jobd's
/// checkpointer works in the background, and after a jobd run on the 1M file
/// it would still be copying that run's pages into the file and fsyncing
/// them while the next run — the raw one on the 10k file — is timed.
fn settle(sides: &[Side]) {
    for side in sides {
        side.raw
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        side.store
            .sqlite()
            .unwrap()
            .connection()
            .unwrap()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
    }
}

/// For each side, the medians of RUNS runs of `raw` and of `jobd` (each
/// performing `ops` operations), taken in rounds: every side's raw run and
/// then its jobd run, round after round, each from a settled file.
fn paired(
    sides: &mut [Side],
    ops: usize,
    raw: impl Fn(&mut Side),
    jobd: impl Fn(&mut Side),
) -> Vec<(f64, f64)> {
    let mut runs = vec![(Vec::new(), Vec::new()); sides.len()];
    for _ in 0..RUNS {
        for (k, (r, j)) in runs.iter_mut().enumerate() {
            settle(sides);
            r.push(rate(ops, &mut sides[k], &raw));
            settle(sides);
            j.push(rate(ops, &mut sides[k], &jobd));
        }
    }
    runs.into_iter()
        .map(|(r, j)| (median(r), median(j)))
        .collect()
}

fn raw_insert_one_by_one(s: &mut Side) {
    let mut stmt = s.raw.prepare_cached(raw::INSERT).unwrap();
    for _ in 0..20_000 {
        s.n += 1;
        stmt.execute(params![format!("{{\"n\":{}}}", s.n), s.n])
            .unwrap();
    }
}

fn enqueue_one_by_one(s: &mut Side) {
    for _ in 0..20_000 {
        s.n += 1;
        s.store.enqueue(&job(s.n as usize)).unwrap();
    }
}

fn raw_cycle_one_by_one(s: &mut Side) {
    let mut claim = s.raw.prepare_cached(raw::CLAIM).unwrap();
    let mut done = s.raw.prepare_cached(raw::DONE).unwrap();
    for _ in 0..5_000 {
        let (id, _payload, token): (i64, String, i64) = {
            let mut rows = claim.query([i64::MAX, 1]).unwrap();
            let r = rows.next().unwrap().unwrap();
            let v = (r.get(0).unwrap(), r.get(1).unwrap(), r.get(2).unwrap());
            while rows.next().unwrap().is_some() {}
            v
        };
        assert_eq!(done.execute(params![id, token, "{}"]).unwrap(), 1);
    }
}

fn cycle_one_by_one(s: &mut Side) {
    for _ in 0..5_000 {
        let j = s
            .store
            .claim("w", &["bench"], 1, LEASE)
            .unwrap()
            .pop()
            .unwrap();
        s.store.complete(j.id, j.lease_token, None).unwrap();
    }
}

/// The raw batched cycle: a claim of 100 + 100 completing UPDATEs, two
/// transactions per batch.
fn raw_cycle_batched(s: &mut Side) {
    let mut claim = s.raw.prepare_cached(raw::CLAIM).unwrap();
    let mut done = s.raw.prepare_cached(raw::DONE).unwrap();
    for _ in 0..200 {
        s.raw.execute_batch("BEGIN IMMEDIATE").unwrap();
        let got: Vec<(i64, String, i64)> = claim
            .query_map([i64::MAX, 100], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        s.raw.execute_batch("COMMIT; BEGIN IMMEDIATE").unwrap();
        assert_eq!(got.len(), 100);
        for (id, _payload, token) in &got {
            assert_eq!(done.execute(params![id, token, "{}"]).unwrap(), 1);
        }
        s.raw.execute_batch("COMMIT").unwrap();
    }
}

fn cycle_batched(s: &mut Side) {
    for _ in 0..200 {
        let jobs = s.store.claim("w", &["bench"], 100, LEASE).unwrap();
        assert_eq!(jobs.len(), 100);
        let done: Vec<_> = jobs.iter().map(|j| (j.id, j.lease_token, None)).collect();
        assert_eq!(s.store.complete_many(&done).unwrap().completed, 100);
    }
}

struct Row {
    name: &'static str,
    rows: usize,
    rate: f64,
    limit: Option<(&'static str, f64)>,
}

fn main() {
    let sizes: Vec<usize> = std::env::var("JOBD_BENCH_SIZES")
        .unwrap_or_else(|_| "10000,1000000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("JOBD_BENCH_SIZES: comma-separated row counts")
        })
        .collect();
    // Same file system as the project (not a tmpfs /tmp).
    let base = std::env::current_dir().unwrap().join("target");
    std::fs::create_dir_all(&base).unwrap();
    let mut sides: Vec<Side> = sizes.iter().map(|&rows| Side::new(&base, rows)).collect();

    let single = paired(
        &mut sides,
        20_000,
        raw_insert_one_by_one,
        enqueue_one_by_one,
    );
    let many100 = paired(
        &mut sides,
        100_000,
        |s| s.raw_many_txs(100),
        |s| {
            for _ in 0..1000 {
                s.store.enqueue_many(&s.batch[..100]).unwrap();
            }
        },
    );
    let many1000 = paired(
        &mut sides,
        200_000,
        |s| s.raw_many_txs(200),
        |s| {
            for _ in 0..200 {
                s.store.enqueue_many(&s.batch).unwrap();
            }
        },
    );
    for side in &mut sides {
        side.supply_claims(RUNS * (5_000 + 20_000));
    }
    let one_by_one = paired(&mut sides, 5_000, raw_cycle_one_by_one, cycle_one_by_one);
    let batched = paired(&mut sides, 20_000, raw_cycle_batched, cycle_batched);

    let mut table = Vec::new();
    for (k, side) in sides.iter().enumerate() {
        let rows = side.rows;
        let raw = |name, rate| Row {
            name,
            rows,
            rate,
            limit: None,
        };
        // A jobd figure beside the raw limit measured in turn with it.
        let vs = |name, (limit, rate): (f64, f64), what| Row {
            name,
            rows,
            rate,
            limit: Some((what, limit)),
        };
        table.extend([
            raw("raw: one-row INSERT per transaction", single[k].0),
            raw(
                "raw: claim UPDATE…RETURNING + complete UPDATE",
                one_by_one[k].0,
            ),
            raw("raw: INSERTs in 1000-row transactions", many100[k].0),
            raw("raw: claim 100 + 100 completing UPDATEs", batched[k].0),
            vs("enqueue (one job per transaction)", single[k], "raw insert"),
            vs(
                "enqueue_many, batches of 100",
                many100[k],
                "raw batched insert",
            ),
            vs(
                "enqueue_many, batches of 1000",
                many1000[k],
                "raw batched insert",
            ),
            vs(
                "claim + complete, one at a time",
                one_by_one[k],
                "raw cycle",
            ),
            vs(
                "claim 100 + complete_many 100",
                batched[k],
                "raw batched cycle",
            ),
        ]);
    }
    drop(sides);
    println!(
        "SQLite {}, page caches {}.",
        rusqlite::version(),
        if jobd::store::page_caches_shared() {
            "shared by every connection (built with ENABLE_MEMORY_MANAGEMENT)"
        } else {
            "one per connection"
        }
    );
    println!();
    println!("| operation | existing rows | jobs/s | vs raw limit |");
    println!("|---|---:|---:|---:|");
    for r in &table {
        let vs = r
            .limit
            .map(|(what, l)| format!("{:.0}% of {what}", 100.0 * r.rate / l))
            .unwrap_or_else(|| "—".into());
        println!("| {} | {} | {:.0} | {} |", r.name, r.rows, r.rate, vs);
    }
    if sizes.len() >= 2 {
        let (small, large) = (sizes[0], sizes[sizes.len() - 1]);
        println!();
        println!("Slowdown from {small} to {large} existing rows (negative: faster):");
        for name in table.iter().filter(|r| r.rows == small).map(|r| r.name) {
            let a = table
                .iter()
                .find(|r| r.name == name && r.rows == small)
                .unwrap()
                .rate;
            let b = table
                .iter()
                .find(|r| r.name == name && r.rows == large)
                .unwrap()
                .rate;
            println!("- {name}: {:+.1}%", 100.0 * (a - b) / a);
        }
    }
}
