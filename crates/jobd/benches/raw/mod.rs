//! Bare SQLite doing a leased queue's work, no jobd code: the limit the
//! store and worker benches measure jobd against, on the same file system.
//!
//! A table with the two partial indexes a leased queue needs, a claim
//! `UPDATE … RETURNING` of the next ready jobs and a completing `UPDATE` per
//! job, fenced by the lease token like jobd's.

use std::path::Path;

use rusqlite::Connection;

pub const SCHEMA: &str = "
CREATE TABLE raw (id INTEGER PRIMARY KEY, queue TEXT NOT NULL, payload TEXT NOT NULL, state TEXT NOT NULL,
                  run_at INTEGER NOT NULL, owner TEXT, token INTEGER, expires INTEGER, result TEXT);
CREATE INDEX raw_ready ON raw (queue, run_at, id) WHERE state = 'ready';
CREATE INDEX raw_running ON raw (expires) WHERE state = 'running';";

/// The insert of one job.
pub const INSERT: &str =
    "INSERT INTO raw (queue, payload, state, run_at) VALUES ('bench', ?1, 'ready', ?2)";

/// The claim of ?2 jobs (`CAST`: a bare bound `LIMIT` would recompile the
/// statement at every call, see src/store/lease.rs).
pub const CLAIM: &str =
    "UPDATE raw SET state = 'running', owner = 'w', token = random(), expires = ?1
WHERE id IN (SELECT id FROM raw WHERE state = 'ready' AND queue = 'bench'
             ORDER BY run_at, id LIMIT CAST(?2 AS INTEGER))
RETURNING id, payload, token";

/// The completion of one claimed job, fenced by its token.
pub const DONE: &str = "UPDATE raw SET state = 'done', result = ?3, expires = NULL
                        WHERE id = ?1 AND token = ?2 AND state = 'running'";

/// A connection to a new bare queue at `path`, WAL, `synchronous` as given
/// (`NORMAL` or `FULL`).
pub fn open(path: &Path, synchronous: &str) -> Connection {
    let c = Connection::open(path).unwrap();
    c.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous}; PRAGMA busy_timeout=10000;"
    ))
    .unwrap();
    c.execute_batch(SCHEMA).unwrap();
    c
}
