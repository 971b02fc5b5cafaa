//! A library's own tables in the queue file, with its own migrations.
//!
//! The queue's schema (`schema/*.sql`, `PRAGMA user_version`) holds only
//! the queue.  A library that keeps data beside it — the built-in handlers'
//! analytics cache — brings its migrations and applies them with
//! [`SqliteStore::migrate_extension`](crate::store::SqliteStore::migrate_extension); their version is kept in `meta` under
//! `schema:<owner>`.

use crate::error::{Error, Result};
use crate::store::{meta, SqliteStore};

impl SqliteStore {
    /// Bring `owner`'s tables to `migrations.len()`: migration `i` brings
    /// them to version `i + 1`, each applied once per file, all in one
    /// `BEGIN IMMEDIATE` transaction (safe from several processes at once).
    /// A file with a newer version than `migrations` knows is refused.
    /// When the tables are up to date this is one read, no write lock: call
    /// it before every use if that is simplest.
    pub fn migrate_extension(&self, owner: &str, migrations: &[&str]) -> Result<()> {
        if owner.is_empty() || owner.len() > 64 {
            return Err(Error::invalid("extension owner", "must be 1 to 64 bytes"));
        }
        let key = format!("schema:{owner}");
        let path = self.path().to_path_buf();
        let version = |value: Option<String>| -> Result<i64> {
            match value {
                None => Ok(0),
                Some(v) => v.parse().map_err(|_| Error::Corrupt {
                    path: path.clone(),
                    reason: format!("meta {key} is {v:?}, not a version number"),
                }),
            }
        };
        let supported = migrations.len() as i64;
        if version(self.with_conn("reading a library's schema version", |c| meta::get(c, &key))?)?
            == supported
        {
            return Ok(());
        }
        self.write("migrating a library's tables", |tx| {
            let found = version(meta::get(tx, &key)?)?;
            if found > supported {
                return Err(Error::TooNew {
                    path: path.clone(),
                    found,
                    supported,
                });
            }
            for (i, sql) in migrations.iter().enumerate().skip(found as usize) {
                tx.execute_batch(sql)?;
                tracing::info!(owner, version = i + 1, "applied a library's migration");
            }
            if found < supported {
                meta::set(tx, &key, &supported.to_string())?;
            }
            Ok(())
        })
    }
}
