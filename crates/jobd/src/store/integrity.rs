//! Checks of the whole file: `PRAGMA integrity_check` with the JSON
//! columns, `PRAGMA quick_check`.

use crate::error::{Error, Result};
use crate::store::SqliteStore;

/// Jobs whose payload or result is not JSON: jobd checks JSON before it
/// writes (schema/0004), so these were written behind its back.
pub(crate) const NOT_JSON: &str = "
SELECT id, 'payload' FROM jobs WHERE NOT json_valid(payload)
UNION ALL
SELECT id, 'result' FROM jobs WHERE result IS NOT NULL AND NOT json_valid(result)
LIMIT 20";

#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[("NOT_JSON", NOT_JSON)];

impl SqliteStore {
    /// `PRAGMA integrity_check`: `Ok(())` when the file is sound, else
    /// [`Error::Corrupt`] with SQLite's findings.
    pub fn integrity_check(&self) -> Result<()> {
        let findings: Vec<String> = self.with_conn("integrity_check", |c| {
            let mut stmt = c.prepare("PRAGMA integrity_check")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut findings: Vec<String> = rows.collect::<rusqlite::Result<_>>()?;
            let mut stmt = c.prepare(NOT_JSON)?;
            let bad = stmt.query_map([], |r| {
                Ok(format!(
                    "job {}: {} is not JSON",
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?
                ))
            })?;
            let bad: Vec<String> = bad.collect::<rusqlite::Result<_>>()?;
            if !bad.is_empty() {
                findings.retain(|f| f != "ok");
                findings.extend(bad);
            }
            Ok(findings)
        })?;
        if findings == ["ok"] {
            Ok(())
        } else {
            Err(Error::Corrupt {
                path: self.path().to_path_buf(),
                reason: findings.join("; "),
            })
        }
    }

    /// `PRAGMA quick_check`: SQLite's verdict on the file, `"ok"` when it
    /// is sound (a cheaper check than [`Store::integrity_check`](crate::store::Backend::integrity_check)).
    pub fn quick_check(&self) -> Result<String> {
        self.with_conn("quick_check", |c| {
            Ok(c.query_row("PRAGMA quick_check", [], |r| r.get(0))?)
        })
    }
}
