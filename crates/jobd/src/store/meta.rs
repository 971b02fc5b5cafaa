//! The `meta` table: one text value per key, for what the file records
//! about itself (clock readings, installed defaults, library schema
//! versions).

use rusqlite::{Connection, OptionalExtension};

use crate::error::Result;

pub(crate) const GET_META: &str = "SELECT value FROM meta WHERE key = ?1";
pub(crate) const SET_META: &str = "
INSERT INTO meta (key, value) VALUES (?1, ?2)
ON CONFLICT (key) DO UPDATE SET value = excluded.value";

#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[("GET_META", GET_META), ("SET_META", SET_META)];

/// The value under `key`, if any.
pub(crate) fn get(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(GET_META)?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

/// Set `key` to `value`.
pub(crate) fn set(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.prepare_cached(SET_META)?.execute([key, value])?;
    Ok(())
}
