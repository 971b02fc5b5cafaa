//! API tokens with a role (schema/0009): kept as SHA-256 hashes, looked up
//! by hash.  The store never sees a token itself: the CLI makes it, prints
//! it once and hands over its hash; the server hashes what it is shown.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::clock::Millis;
use crate::error::{Error, Result};
use crate::store::SqliteStore;

pub(crate) const ADD_TOKEN: &str = "
INSERT INTO api_tokens (name, role, sha256, created_at) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (name) DO NOTHING";

pub(crate) const TOKEN_BY_HASH: &str = "SELECT name, role FROM api_tokens WHERE sha256 = ?1";

pub(crate) const LIST_TOKENS: &str = "SELECT name, role, created_at FROM api_tokens ORDER BY name";

pub(crate) const REVOKE_TOKEN: &str = "DELETE FROM api_tokens WHERE name = ?1";

#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("ADD_TOKEN", ADD_TOKEN),
    ("TOKEN_BY_HASH", TOKEN_BY_HASH),
    ("LIST_TOKENS", LIST_TOKENS),
    ("REVOKE_TOKEN", REVOKE_TOKEN),
];

/// What a token may do over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The worker protocol, and reading the jobs its workers ran.
    Worker,
    /// Enqueue and read jobs.
    Producer,
    /// Everything.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Producer => "producer",
            Role::Worker => "worker",
        }
    }

    pub fn parse(text: &str) -> Result<Role> {
        match text {
            "admin" => Ok(Role::Admin),
            "producer" => Ok(Role::Producer),
            "worker" => Ok(Role::Worker),
            other => Err(Error::invalid(
                "role",
                format!("{other:?} is not a role: use admin, producer or worker"),
            )),
        }
    }
}

/// A stored token, without its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    pub created_at: Millis,
}

/// A token's name: what its remote workers' names start with.
pub fn validate_token_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "token name",
            format!("{name:?}: use 1 to 64 letters, digits, '-', '_' or '.'"),
        ))
    }
}

impl SqliteStore {
    /// Keep a new token's hash under `name` with `role`.  A name in use is
    /// refused (revoke it first): a token is never replaced behind its
    /// holders' backs.
    pub fn add_api_token(&self, name: &str, role: Role, sha256: &[u8; 32]) -> Result<()> {
        validate_token_name(name)?;
        let now = self.now();
        let added = self.with_conn("adding an API token", |c| {
            Ok(c.prepare_cached(ADD_TOKEN)?.execute(params![
                name,
                role.as_str(),
                &sha256[..],
                now
            ])?)
        })?;
        if added == 0 {
            return Err(Error::invalid(
                "token name",
                format!("{name:?} is taken (jobd token revoke {name} first)"),
            ));
        }
        Ok(())
    }

    /// The name and role of the token with this hash, if there is one.
    pub fn api_token(&self, sha256: &[u8; 32]) -> Result<Option<(String, Role)>> {
        let row: Option<(String, String)> = self.with_conn("looking up an API token", |c| {
            Ok(c.prepare_cached(TOKEN_BY_HASH)?
                .query_row([&sha256[..]], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?)
        })?;
        // A role edited by hand into something else grants nothing.
        Ok(row.and_then(|(name, role)| Role::parse(&role).ok().map(|r| (name, r))))
    }

    /// Every stored token (names and roles; the hashes stay in the file).
    pub fn api_tokens(&self) -> Result<Vec<TokenInfo>> {
        self.with_conn("listing API tokens", |c| {
            let mut stmt = c.prepare_cached(LIST_TOKENS)?;
            let rows = stmt.query_map([], |r| {
                let role: String = r.get(1)?;
                Ok(TokenInfo {
                    name: r.get(0)?,
                    role: Role::parse(&role).unwrap_or(Role::Worker),
                    created_at: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Remove the token named `name`; false when there was none.
    pub fn revoke_api_token(&self, name: &str) -> Result<bool> {
        self.with_conn("revoking an API token", |c| {
            Ok(c.prepare_cached(REVOKE_TOKEN)?.execute([name])? > 0)
        })
    }
}
