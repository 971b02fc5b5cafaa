//! Migrations: numbered SQL files in `schema/`, embedded in the binary and
//! applied in one `BEGIN IMMEDIATE` transaction at open, versioned with
//! `PRAGMA user_version`.  `PRAGMA application_id` marks the file as jobd's.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{Error, Result};

/// `PRAGMA application_id` of every jobd queue file: "JOBD" in ASCII.
pub const APPLICATION_ID: i32 = 0x4A4F_4244;

/// The migrations, in order; migration `i` brings the file to version `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    include_str!("../../schema/0001_init.sql"),
    include_str!("../../schema/0002_scheduler.sql"),
    include_str!("../../schema/0003_reserved.sql"),
    include_str!("../../schema/0004_json_checked_by_jobd.sql"),
    include_str!("../../schema/0005_success_on_the_job_row.sql"),
    include_str!("../../schema/0006_worker_kinds.sql"),
    include_str!("../../schema/0007_purged_tallies.sql"),
    include_str!("../../schema/0008_job_ids_never_reused.sql"),
    include_str!("../../schema/0009_api_tokens.sql"),
    include_str!("../../schema/0010_notify.sql"),
    include_str!("../../schema/0011_state.sql"),
    include_str!("../../schema/0012_rollups.sql"),
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// What the file says about itself before jobd writes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    pub application_id: i32,
    pub user_version: i64,
    pub objects: i64,
}

/// Read the file's identity.  Read-only: nothing is written.
pub(crate) fn identify(conn: &Connection, path: &Path) -> Result<Identity> {
    let read = || -> rusqlite::Result<Identity> {
        Ok(Identity {
            application_id: conn.query_row("PRAGMA application_id", [], |r| r.get(0))?,
            user_version: conn.query_row("PRAGMA user_version", [], |r| r.get(0))?,
            objects: conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?,
        })
    };
    read().map_err(|e| Error::from_sqlite("reading the file header", path, e))
}

/// Refuse a file that is not (or not yet) jobd's, or that is newer than this build.
pub(crate) fn check_identity(id: Identity, path: &Path) -> Result<()> {
    if id.application_id == APPLICATION_ID {
        if id.user_version > SCHEMA_VERSION {
            return Err(Error::TooNew {
                path: path.to_path_buf(),
                found: id.user_version,
                supported: SCHEMA_VERSION,
            });
        }
        return Ok(());
    }
    if id.application_id == 0 && id.user_version == 0 && id.objects == 0 {
        return Ok(()); // an empty SQLite file: ours to initialise
    }
    let reason = if id.application_id == 0 {
        "it is a SQLite database of another application (it has tables of its own and no jobd application_id)".to_string()
    } else {
        format!(
            "it is a SQLite database of another application (application_id {:#010x})",
            id.application_id
        )
    };
    Err(Error::NotAQueue {
        path: path.to_path_buf(),
        reason,
    })
}

/// Bring the file to [`SCHEMA_VERSION`].  Safe to run from several processes at
/// once: the write lock is taken first, and the version read under it.
///
/// Foreign keys are off while migrations run — a migration that rebuilds a
/// table (0004) drops the old one, and with them on that drop would cascade
/// into the history (`attempts` then, `tries` since 0005) and `progress` —
/// and `PRAGMA foreign_key_check` must come back empty before the commit.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let map = |e| Error::from_sqlite("migrating the schema", path, e);
    conn.pragma_update(None, "foreign_keys", "OFF")
        .map_err(map)?;
    let migrated = migrate_with_fk_off(conn, path);
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(map)?;
    migrated
}

fn migrate_with_fk_off(conn: &mut Connection, path: &Path) -> Result<()> {
    let map = |e| Error::from_sqlite("migrating the schema", path, e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map)?;
    let id = identify(&tx, path)?;
    check_identity(id, path)?;
    if id.user_version == SCHEMA_VERSION {
        return Ok(()); // dropping `tx` rolls back the empty transaction
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(id.user_version as usize) {
        tx.execute_batch(sql).map_err(map)?;
        tracing::info!(path = %path.display(), version = i + 1, "applied schema migration");
    }
    let dangling: Vec<String> = {
        let mut stmt = tx.prepare("PRAGMA foreign_key_check").map_err(map)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(format!(
                    "{} row {} -> {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?.unwrap_or_default(),
                    r.get::<_, String>(2)?
                ))
            })
            .map_err(map)?;
        rows.take(5).collect::<rusqlite::Result<_>>().map_err(map)?
    };
    if !dangling.is_empty() {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "migration left rows pointing at missing parents (rolled back): {}",
                dangling.join("; ")
            ),
        });
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(map)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(map)?;
    tx.commit().map_err(map)
}
