//! Store hot paths, each beside the raw SQLite limit on the same file system.
//!
//! `cargo bench --bench store` prints a Markdown table.  For each size of
//! existing rows (default 10k and 1M; `JOBD_BENCH_SIZES=10000,1000000`), it
//! measures jobd's enqueue, batched enqueue, claim+complete one at a time and
//! in batches of 100 — and, on a bare table with the same indexes a leased
//! queue needs, a one-row INSERT per transaction and a bare claim
//! `UPDATE … RETURNING` + completing `UPDATE` per job, no jobd code; and the
//! same in batches (1000-row insert transactions; a claim of 100 and its 100
//! completing updates), beside which the batched jobd figures stand.  Each
//! figure is the median of 5 runs, and a jobd figure's runs alternate with
//! those of the raw limit it is given as a fraction of (raw, jobd, raw, …),
//! so the ratio survives a noisy machine whose speed drifts.  Claims run on
//! tables of the stated size: what the enqueue runs added is deleted first.

use std::path::Path;
use std::time::{Duration, Instant};

use jobd::store::NewJob;
use jobd::Store;
use rusqlite::{params, Connection};

const LEASE: Duration = Duration::from_secs(60);
const RUNS: usize = 5;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

/// Ops per second of `f`, which performs `ops` operations.
fn rate(ops: usize, f: &mut impl FnMut()) -> f64 {
    let t = Instant::now();
    f();
    ops as f64 / t.elapsed().as_secs_f64()
}

/// Ops per second of `raw` and of `jobd` (each performing `ops` operations),
/// medians of RUNS runs taken in turn: raw, jobd, raw, jobd, …
fn paired(ops: usize, mut raw: impl FnMut(), mut jobd: impl FnMut()) -> (f64, f64) {
    let (mut r, mut j) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        r.push(rate(ops, &mut raw));
        j.push(rate(ops, &mut jobd));
    }
    (median(r), median(j))
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
    let conn = store.connection().unwrap();
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

const RAW_SCHEMA: &str = "
CREATE TABLE raw (id INTEGER PRIMARY KEY, queue TEXT NOT NULL, payload TEXT NOT NULL, state TEXT NOT NULL,
                  run_at INTEGER NOT NULL, owner TEXT, token INTEGER, expires INTEGER, result TEXT);
CREATE INDEX raw_ready ON raw (queue, run_at, id) WHERE state = 'ready';
CREATE INDEX raw_running ON raw (expires) WHERE state = 'running';";

/// The raw insert of one job, and the raw completion of one claimed job.
const RAW_INSERT: &str =
    "INSERT INTO raw (queue, payload, state, run_at) VALUES ('bench', ?1, 'ready', ?2)";
/// The bare claim of ?2 jobs (`CAST`: a bare bound `LIMIT` would recompile
/// the statement at every call, see src/store/lease.rs).
const RAW_CLAIM: &str =
    "UPDATE raw SET state = 'running', owner = 'w', token = random(), expires = ?1
WHERE id IN (SELECT id FROM raw WHERE state = 'ready' AND queue = 'bench'
             ORDER BY run_at, id LIMIT CAST(?2 AS INTEGER))
RETURNING id, payload, token";
const RAW_DONE: &str = "UPDATE raw SET state = 'done', result = ?3, expires = NULL
                        WHERE id = ?1 AND token = ?2 AND state = 'running'";

fn raw_conn(path: &Path, rows: usize) -> Connection {
    let c = Connection::open(path).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000;",
    )
    .unwrap();
    c.execute_batch(RAW_SCHEMA).unwrap();
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
    let mut table = Vec::new();
    for &rows in &sizes {
        let dir = tempfile::tempdir_in(&base).unwrap();
        eprintln!("preparing {rows} existing rows ...");
        let raw = raw_conn(&dir.path().join("raw.db"), rows);
        let store = prefill_jobd(&dir.path().join("queue.db"), rows);

        // Each jobd figure is measured in runs that alternate with the runs
        // of the raw limit it is compared to, so that a drift of this shared
        // machine's speed moves both sides of the ratio.
        let mut n = 0i64;
        let mut i = 0;
        let (raw_insert, single) = paired(
            20_000,
            || {
                let mut stmt = raw.prepare_cached(RAW_INSERT).unwrap();
                for _ in 0..20_000 {
                    n += 1;
                    stmt.execute(params![format!("{{\"n\":{n}}}"), n]).unwrap();
                }
            },
            || {
                for _ in 0..20_000 {
                    i += 1;
                    store.enqueue(&job(i)).unwrap();
                }
            },
        );
        let batches: Vec<NewJob> = (0..1000).map(job).collect();
        // The batched limit: 1000-row insert transactions.
        let mut raw_many_txs = |count: usize| {
            let mut stmt = raw.prepare_cached(RAW_INSERT).unwrap();
            for _ in 0..count {
                raw.execute_batch("BEGIN").unwrap();
                for _ in 0..1000 {
                    n += 1;
                    stmt.execute(params![format!("{{\"n\":{n}}}"), n]).unwrap();
                }
                raw.execute_batch("COMMIT").unwrap();
            }
        };
        let (raw_many, many100) = paired(
            100_000,
            || raw_many_txs(100),
            || {
                for _ in 0..1000 {
                    store.enqueue_many(&batches[..100]).unwrap();
                }
            },
        );
        let (raw_many_again, many1000) = paired(
            200_000,
            || raw_many_txs(200),
            || {
                for _ in 0..200 {
                    store.enqueue_many(&batches).unwrap();
                }
            },
        );

        // Claims on tables of the stated size: drop what the enqueue runs
        // added, then enqueue (untimed) just the jobs the claim runs consume.
        let supply = RUNS * (5_000 + 20_000);
        raw.execute_batch("DELETE FROM raw WHERE queue = 'bench'")
            .unwrap();
        raw_many_txs(supply / 1000);
        raw.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        {
            let conn = store.connection().unwrap();
            conn.execute("DELETE FROM jobs WHERE queue = 'bench'", [])
                .unwrap();
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .unwrap();
        }
        for _ in 0..supply / 1000 {
            store.enqueue_many(&batches).unwrap();
        }
        let (raw_cycle, one_by_one) = paired(
            5_000,
            || {
                let mut claim = raw.prepare_cached(RAW_CLAIM).unwrap();
                let mut done = raw.prepare_cached(RAW_DONE).unwrap();
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
            },
            || {
                for _ in 0..5_000 {
                    let j = store
                        .claim("w", &["bench"], 1, LEASE)
                        .unwrap()
                        .pop()
                        .unwrap();
                    store.complete(j.id, j.lease_token, None).unwrap();
                }
            },
        );
        // The batched cycle: a claim of 100 + 100 completing UPDATEs, two
        // transactions per batch.
        let (raw_batch, batched) = paired(
            20_000,
            || {
                let mut claim = raw.prepare_cached(RAW_CLAIM).unwrap();
                let mut done = raw.prepare_cached(RAW_DONE).unwrap();
                for _ in 0..200 {
                    raw.execute_batch("BEGIN IMMEDIATE").unwrap();
                    let got: Vec<(i64, String, i64)> = claim
                        .query_map([i64::MAX, 100], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .unwrap()
                        .map(|r| r.unwrap())
                        .collect();
                    raw.execute_batch("COMMIT; BEGIN IMMEDIATE").unwrap();
                    assert_eq!(got.len(), 100);
                    for (id, _payload, token) in &got {
                        assert_eq!(done.execute(params![id, token, "{}"]).unwrap(), 1);
                    }
                    raw.execute_batch("COMMIT").unwrap();
                }
            },
            || {
                for _ in 0..200 {
                    let jobs = store.claim("w", &["bench"], 100, LEASE).unwrap();
                    assert_eq!(jobs.len(), 100);
                    let done: Vec<_> = jobs.iter().map(|j| (j.id, j.lease_token, None)).collect();
                    assert_eq!(store.complete_many(&done).unwrap().completed, 100);
                }
            },
        );
        drop(raw);
        table.push(Row {
            name: "raw: one-row INSERT per transaction",
            rows,
            rate: raw_insert,
            limit: None,
        });
        table.push(Row {
            name: "raw: claim UPDATE…RETURNING + complete UPDATE",
            rows,
            rate: raw_cycle,
            limit: None,
        });
        table.push(Row {
            name: "raw: INSERTs in 1000-row transactions",
            rows,
            rate: raw_many,
            limit: None,
        });
        table.push(Row {
            name: "raw: claim 100 + 100 completing UPDATEs",
            rows,
            rate: raw_batch,
            limit: None,
        });
        table.push(Row {
            name: "enqueue (one job per transaction)",
            rows,
            rate: single,
            limit: Some(("raw insert", raw_insert)),
        });
        table.push(Row {
            name: "enqueue_many, batches of 100",
            rows,
            rate: many100,
            limit: Some(("raw batched insert", raw_many)),
        });
        table.push(Row {
            name: "enqueue_many, batches of 1000",
            rows,
            rate: many1000,
            // Against the raw runs taken in turn with these ones.
            limit: Some(("raw batched insert", raw_many_again)),
        });
        table.push(Row {
            name: "claim + complete, one at a time",
            rows,
            rate: one_by_one,
            limit: Some(("raw cycle", raw_cycle)),
        });
        table.push(Row {
            name: "claim 100 + complete_many 100",
            rows,
            rate: batched,
            limit: Some(("raw batched cycle", raw_batch)),
        });
    }
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
