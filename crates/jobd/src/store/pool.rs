//! The connection pool's manager: opens a connection to the queue file with
//! fixed flags and configures it (see [`open::configure`](super::open)).
//! jobd's own instead of `r2d2_sqlite`, so the rusqlite version is jobd's
//! choice: the bundled SQLite of rusqlite 0.41 and later is built without
//! `SQLITE_ENABLE_MEMORY_MANAGEMENT`, so every connection has a page cache
//! of its own whoever builds jobd — no build flag for an embedder to copy.

use std::path::PathBuf;

use rusqlite::{Connection, OpenFlags};

use super::open::{self, ConnectionOptions};

/// Opens and configures the pool's connections.
#[derive(Debug)]
pub struct ConnectionManager {
    path: PathBuf,
    flags: OpenFlags,
    opts: ConnectionOptions,
}

impl ConnectionManager {
    pub(crate) fn new(path: PathBuf, opts: ConnectionOptions) -> ConnectionManager {
        ConnectionManager {
            path,
            flags: OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            opts,
        }
    }
}

impl r2d2::ManageConnection for ConnectionManager {
    type Connection = Connection;
    type Error = rusqlite::Error;

    fn connect(&self) -> Result<Connection, rusqlite::Error> {
        let conn = Connection::open_with_flags(&self.path, self.flags)?;
        open::configure_waiting(&conn, &self.opts)?;
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut Connection) -> Result<(), rusqlite::Error> {
        conn.execute_batch("")
    }

    fn has_broken(&self, _conn: &mut Connection) -> bool {
        false
    }
}
