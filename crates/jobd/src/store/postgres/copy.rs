//! Moving a queue from its SQLite file to PostgreSQL (`jobd migrate-store`):
//! every job, try, progress report, queue setting, schedule and fired tick,
//! the meta keys, the purged tallies and the API tokens' hashes, copied from
//! one read snapshot of the file, with the state libraries keep beside the
//! queue (the analytics cache, the alerts' mark), then verified table by table — the same
//! row count and the same SHA-256 over the rows in key order on both sides.
//!
//! Batches of rows go in one statement each (`INSERT … SELECT FROM
//! unnest(arrays) ON CONFLICT DO NOTHING`), each its own transaction: an
//! interrupted copy run again skips what arrived and adds the rest, and
//! never overwrites a row the target already has (a target holding other
//! rows fails the verification instead, and keeps them).  Job ids are kept,
//! and the target's id sequence is set past every id the file ever gave
//! (deleted ones included), so none is reused.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::store::postgres::PgStore;
use crate::store::SqliteStore;

/// How a column is read and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    Real,
    /// 0/1 in the file, boolean in PostgreSQL.
    Bool,
    Bytes,
}

use Kind::*;

/// A table: its name, key columns (the copy's and the checksum's order)
/// and every column copied.
struct Table {
    name: &'static str,
    key: &'static [&'static str],
    columns: &'static [(&'static str, Kind)],
}

/// In an order that satisfies the foreign keys.
const TABLES: &[Table] = &[
    Table {
        name: "queues",
        key: &["name"],
        columns: &[
            ("name", Text),
            ("paused", Bool),
            ("concurrency", Int),
            ("updated_at", Int),
        ],
    },
    Table {
        name: "jobs",
        key: &["id"],
        columns: &[
            ("id", Int),
            ("queue", Text),
            ("kind", Text),
            ("payload", Text),
            ("state", Text),
            ("priority", Int),
            ("run_at", Int),
            ("attempts", Int),
            ("max_attempts", Int),
            ("attempt_limit", Int),
            ("backoff_base_ms", Int),
            ("backoff_max_ms", Int),
            ("timeout_ms", Int),
            ("unique_key", Text),
            ("tenant", Text),
            ("lease_owner", Text),
            ("lease_token", Int),
            ("lease_expires_at", Int),
            ("cancel_requested", Bool),
            ("progress_percent", Real),
            ("progress_stage", Text),
            ("progress_detail", Text),
            ("result", Text),
            ("last_error", Text),
            ("created_at", Int),
            ("started_at", Int),
            ("finished_at", Int),
            ("notify", Text),
            ("notified_at", Int),
        ],
    },
    Table {
        name: "tries",
        key: &["job_id", "attempt"],
        columns: &[
            ("job_id", Int),
            ("attempt", Int),
            ("worker", Text),
            ("started_at", Int),
            ("finished_at", Int),
            ("outcome", Text),
            ("error", Text),
        ],
    },
    Table {
        name: "progress",
        key: &["id"],
        columns: &[
            ("id", Int),
            ("job_id", Int),
            ("attempt", Int),
            ("at", Int),
            ("percent", Real),
            ("stage", Text),
            ("detail", Text),
        ],
    },
    Table {
        name: "schedules",
        key: &["name"],
        columns: &[
            ("name", Text),
            ("cron", Text),
            ("interval_ms", Int),
            ("timezone", Text),
            ("queue", Text),
            ("kind", Text),
            ("payload", Text),
            ("priority", Int),
            ("max_attempts", Int),
            ("enabled", Bool),
            ("misfire", Text),
            ("misfire_cap", Int),
            ("timeout_ms", Int),
            ("tenant", Text),
            ("notify", Text),
            ("last_error", Text),
            ("last_fire_at", Int),
            ("next_fire_at", Int),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    },
    Table {
        name: "schedule_fires",
        key: &["schedule", "fire_at"],
        columns: &[
            ("schedule", Text),
            ("fire_at", Int),
            ("job_id", Int),
            ("fired_at", Int),
        ],
    },
    Table {
        name: "meta",
        key: &["key"],
        columns: &[("key", Text), ("value", Text)],
    },
    Table {
        name: "purged_tries",
        key: &["queue", "outcome"],
        columns: &[
            ("queue", Text),
            ("outcome", Text),
            ("tries", Int),
            ("run_ms", Int),
        ],
    },
    Table {
        name: "state",
        key: &["key"],
        columns: &[
            ("key", Text),
            ("value", Text),
            ("updated_at", Int),
            ("expires_at", Int),
        ],
    },
    Table {
        name: "api_tokens",
        key: &["name"],
        columns: &[
            ("name", Text),
            ("role", Text),
            ("sha256", Bytes),
            ("created_at", Int),
        ],
    },
];

/// Rows copied per statement (and per transaction on the target).
const BATCH: usize = 5_000;

/// One table's outcome: rows in the file, rows in the target, and whether
/// the two hold the same rows (count and checksum).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCopy {
    pub table: &'static str,
    pub source_rows: u64,
    pub target_rows: u64,
    /// Rows this run inserted (the rest were there from an earlier run).
    pub inserted: u64,
    pub source_sha256: String,
    pub target_sha256: String,
}

impl TableCopy {
    pub fn verified(&self) -> bool {
        self.source_rows == self.target_rows && self.source_sha256 == self.target_sha256
    }
}

/// One column's values of a batch, as the target's arrays.
enum Values {
    Int(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
    Real(Vec<Option<f64>>),
    Bool(Vec<Option<bool>>),
    Bytes(Vec<Option<Vec<u8>>>),
}

impl Values {
    fn new(kind: Kind) -> Values {
        match kind {
            Int => Values::Int(Vec::new()),
            Text => Values::Text(Vec::new()),
            Real => Values::Real(Vec::new()),
            Bool => Values::Bool(Vec::new()),
            Bytes => Values::Bytes(Vec::new()),
        }
    }

    fn param(&self) -> &(dyn postgres::types::ToSql + Sync) {
        match self {
            Values::Int(v) => v,
            Values::Text(v) => v,
            Values::Real(v) => v,
            Values::Bool(v) => v,
            Values::Bytes(v) => v,
        }
    }
}

/// One value in the checksum's canonical form: a tag, then the value.
fn feed(hash: &mut Sha256, value: Option<&[u8]>, tag: u8) {
    match value {
        None => hash.update([b'N']),
        Some(v) => {
            hash.update([tag]);
            hash.update((v.len() as u64).to_le_bytes());
            hash.update(v);
        }
    }
}

/// The statement that reads `t` in key order (column and table names from
/// [`TABLES`], never from input).  Text keys sort by their bytes on both
/// sides: SQLite's BINARY collation, PostgreSQL's "C".
fn select_sql(t: &Table, postgres: bool) -> String {
    let cols: Vec<&str> = t.columns.iter().map(|c| c.0).collect();
    let order: Vec<String> = t
        .key
        .iter()
        .map(|k| {
            let text = t.columns.iter().any(|(c, kind)| c == k && *kind == Text);
            if postgres && text {
                format!("{k} COLLATE \"C\"")
            } else {
                k.to_string()
            }
        })
        .collect();
    format!(
        "SELECT {} FROM {} ORDER BY {}",
        cols.join(", "),
        t.name,
        order.join(", ")
    )
}

/// Copy the file's queue into the PostgreSQL database and verify it.  The
/// file is read in one snapshot; `progress` is told each table's rows as
/// they go.  Fails when a live worker still uses the file (stop the daemon
/// first: jobs it finished after the snapshot would be left behind).
pub fn copy_from_sqlite(
    src: &SqliteStore,
    dst: &PgStore,
    mut progress: impl FnMut(&str, u64),
) -> Result<Vec<TableCopy>> {
    let live = src.live_workers()?;
    if live > 0 {
        return Err(Error::invalid(
            "source",
            format!(
                "{live} live worker(s) still use {}: stop the daemon and its workers first",
                src.location()
            ),
        ));
    }
    let mut conn = src.connection()?;
    // One read snapshot of the whole file.
    let snapshot = conn.transaction()?;
    let mut report = Vec::new();
    for t in TABLES {
        let (source_rows, source_sha256, inserted) = copy_table(&snapshot, dst, t, &mut progress)?;
        let (target_rows, target_sha256) = target_checksum(dst, t)?;
        report.push(TableCopy {
            table: t.name,
            source_rows,
            target_rows,
            inserted,
            source_sha256,
            target_sha256,
        });
    }
    // Ids continue past every id the file gave, deleted ones too.
    let floor: i64 = snapshot.query_row(
        "SELECT max(coalesce((SELECT max(id) FROM jobs), 0), (SELECT id FROM job_id_floor))",
        [],
        |r| r.get(0),
    )?;
    drop(snapshot);
    dst.write("setting the id sequences", |db| {
        db.query_one(SET_JOB_IDS, &[&floor])?;
        db.query_one(SET_PROGRESS_IDS, &[])?;
        Ok(())
    })?;
    Ok(report)
}

const SET_JOB_IDS: &str = "
SELECT setval(pg_get_serial_sequence('jobs', 'id'),
              greatest($1::int8, (SELECT coalesce(max(id), 0) FROM jobs), 1))";

const SET_PROGRESS_IDS: &str = "
SELECT setval(pg_get_serial_sequence('progress', 'id'),
              greatest((SELECT coalesce(max(id), 0) FROM progress), 1))";

/// Copy one table in batches; its row count, checksum and rows inserted.
fn copy_table(
    tx: &rusqlite::Transaction,
    dst: &PgStore,
    t: &Table,
    progress: &mut impl FnMut(&str, u64),
) -> Result<(u64, String, u64)> {
    let mut stmt = tx.prepare(&select_sql(t, false))?;
    let mut rows = stmt.query([])?;
    let insert = insert_sql(t);
    let mut hash = Sha256::new();
    let (mut count, mut inserted) = (0u64, 0u64);
    loop {
        let mut batch: Vec<Values> = t.columns.iter().map(|c| Values::new(c.1)).collect();
        let mut n = 0;
        while n < BATCH {
            let Some(r) = rows.next()? else { break };
            for (i, (_, kind)) in t.columns.iter().enumerate() {
                match (&mut batch[i], kind) {
                    (Values::Int(v), _) => {
                        let x: Option<i64> = r.get(i)?;
                        feed(
                            &mut hash,
                            x.map(|x| x.to_le_bytes()).as_ref().map(|b| &b[..]),
                            b'i',
                        );
                        v.push(x);
                    }
                    (Values::Bool(v), _) => {
                        let x: Option<bool> = r.get(i)?;
                        feed(
                            &mut hash,
                            x.map(|x| [x as u8]).as_ref().map(|b| &b[..]),
                            b'b',
                        );
                        v.push(x);
                    }
                    (Values::Real(v), _) => {
                        let x: Option<f64> = r.get(i)?;
                        feed(
                            &mut hash,
                            x.map(|x| x.to_le_bytes()).as_ref().map(|b| &b[..]),
                            b'r',
                        );
                        v.push(x);
                    }
                    (Values::Text(v), _) => {
                        let x: Option<String> = r.get(i)?;
                        feed(&mut hash, x.as_deref().map(str::as_bytes), b't');
                        v.push(x);
                    }
                    (Values::Bytes(v), _) => {
                        let x: Option<Vec<u8>> = r.get(i)?;
                        feed(&mut hash, x.as_deref(), b'y');
                        v.push(x);
                    }
                }
            }
            n += 1;
        }
        if n == 0 {
            break;
        }
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> =
            batch.iter().map(Values::param).collect();
        let added = dst.write("copying rows", |db| {
            let s = db.client.prepare(&insert)?;
            Ok(db.client.execute(&s, &params)?)
        })?;
        count += n as u64;
        inserted += added;
        progress(t.name, count);
        if n < BATCH {
            break;
        }
    }
    Ok((count, hex(&hash.finalize()), inserted))
}

/// The batch insert of `t`: one array per column, rows already there kept.
fn insert_sql(t: &Table) -> String {
    let cols: Vec<&str> = t.columns.iter().map(|c| c.0).collect();
    let arrays: Vec<String> = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| {
            let ty = match kind {
                Int => "int8",
                Text => "text",
                Real => "float8",
                Bool => "bool",
                Bytes => "bytea",
            };
            format!("${}::{ty}[]", i + 1)
        })
        .collect();
    let overriding = if t.name == "jobs" || t.name == "progress" {
        " OVERRIDING SYSTEM VALUE"
    } else {
        ""
    };
    format!(
        "INSERT INTO {} ({}){overriding} SELECT * FROM unnest({}) ON CONFLICT DO NOTHING",
        t.name,
        cols.join(", "),
        arrays.join(", ")
    )
}

/// The target's row count and checksum of `t`, in the same form.
fn target_checksum(dst: &PgStore, t: &Table) -> Result<(u64, String)> {
    let sql = select_sql(t, true);
    dst.read("verifying the copy", |db| {
        let mut hash = Sha256::new();
        let mut count = 0u64;
        let s = db.client.prepare(&sql)?;
        let mut it = db.client.query_raw(&s, std::iter::empty::<i64>())?;
        use postgres::fallible_iterator::FallibleIterator;
        while let Some(r) = it.next()? {
            for (i, (_, kind)) in t.columns.iter().enumerate() {
                match kind {
                    Int => {
                        let x: Option<i64> = r.get(i);
                        feed(
                            &mut hash,
                            x.map(|x| x.to_le_bytes()).as_ref().map(|b| &b[..]),
                            b'i',
                        );
                    }
                    Bool => {
                        let x: Option<bool> = r.get(i);
                        feed(
                            &mut hash,
                            x.map(|x| [x as u8]).as_ref().map(|b| &b[..]),
                            b'b',
                        );
                    }
                    Real => {
                        let x: Option<f64> = r.get(i);
                        feed(
                            &mut hash,
                            x.map(|x| x.to_le_bytes()).as_ref().map(|b| &b[..]),
                            b'r',
                        );
                    }
                    Text => {
                        let x: Option<&str> = r.get(i);
                        feed(&mut hash, x.map(str::as_bytes), b't');
                    }
                    Bytes => {
                        let x: Option<&[u8]> = r.get(i);
                        feed(&mut hash, x, b'y');
                    }
                }
            }
            count += 1;
        }
        Ok((count, hex(&hash.finalize())))
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
