//! Opening a queue file: refuse what is not ours before writing a byte, then
//! configure every connection and read each pragma back.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::store::schema::{Identity, APPLICATION_ID};

/// How hard a commit tries to survive power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// WAL + NORMAL: a commit survives a crash of the process, and the
    /// database stays consistent after power loss, but the last commits before
    /// a power loss may be rolled back.  The default.
    #[default]
    Normal,
    /// WAL + FULL: every commit is fsynced; survives power loss.
    Full,
}

impl Synchronous {
    fn pragma_value(self) -> i64 {
        match self {
            Synchronous::Normal => 1,
            Synchronous::Full => 2,
        }
    }
}

/// Connection settings applied to every connection of a [`Store`](crate::Store).
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    pub synchronous: Synchronous,
    /// How long a writer waits for the lock before reporting `Busy`.
    pub busy_timeout: Duration,
    /// Size the WAL is truncated back to after a checkpoint, in bytes.
    pub journal_size_limit: i64,
    /// Page cache per connection, in KiB.  Default 2 MiB (SQLite's own):
    /// a bigger cache made batched claims *slower* — when a b-tree split
    /// reorders pages, SQLite parks one at a page number past the end of the
    /// file, and the commit then walks the cache's whole hash table to drop
    /// it (`pcache1TruncateUnsafe`), a walk as long as the cache is big.
    /// 16 MiB: 46–49k batched claim+complete cycles/s; 2 MiB: 54–55k.
    /// Pages outside it come from the OS page cache.
    pub cache_kib: i64,
    /// SQLite's auto-checkpoint threshold in WAL frames (0: never).  With
    /// the background checkpointer on (the default), the pool's connections
    /// use [`CheckpointOptions::fallback_frames`](crate::store::CheckpointOptions) instead.
    pub wal_autocheckpoint: i64,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            synchronous: Synchronous::Normal,
            busy_timeout: Duration::from_secs(10),
            journal_size_limit: 64 * 1024 * 1024,
            cache_kib: 2 * 1024,
            wal_autocheckpoint: 1000,
        }
    }
}

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// What the file's own bytes say, read without SQLite so nothing (not a
/// journal, not a checkpoint of somebody's WAL) is written to a file that is
/// not ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Look {
    /// No file: a new queue.
    Missing,
    /// A file of 0 bytes.
    Empty,
    /// A SQLite file with no live WAL: its header and first page are the
    /// whole truth about it.
    Settled(Identity),
    /// A SQLite file whose `-wal` holds frames: the newest header may be in
    /// the WAL, so only SQLite (read-only) can tell.
    WalLive,
}

/// Check the SQLite header (and, with no live WAL, read the file's identity
/// from it) without opening the file through SQLite.
pub(crate) fn check_header(path: &Path) -> Result<Look> {
    // A live queue can look short for a moment while another process
    // checkpoints (page 1, with the new page count, is written before the
    // pages that extend the file): look again before calling it truncated.
    let mut tries = 0;
    loop {
        match check_header_once(path) {
            Err(Error::Corrupt { reason, .. })
                if reason.starts_with("truncated: the header says") && tries < 5 =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Bytes read from the start of the file: the 100-byte database header and
/// the b-tree header of page 1 (the schema table) behind it.
const HEAD: usize = 108;

fn check_header_once(path: &Path) -> Result<Look> {
    let io = |operation, source| Error::Io {
        operation,
        path: path.to_path_buf(),
        source,
    };
    let len = match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(Error::NotAQueue {
                path: path.to_path_buf(),
                reason: "it is a directory".into(),
            })
        }
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Look::Missing),
        Err(e) => return Err(io("reading metadata of", e)),
    };
    if len == 0 {
        return Ok(Look::Empty);
    }
    let mut header = [0u8; HEAD];
    let mut file = std::fs::File::open(path).map_err(|e| io("opening", e))?;
    let mut got = 0;
    while got < header.len() {
        match file.read(&mut header[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(io("reading", e)),
        }
    }
    let not_queue = |reason: String| Error::NotAQueue {
        path: path.to_path_buf(),
        reason,
    };
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if got < 16 || &header[..16] != SQLITE_MAGIC {
        return Err(not_queue(
            "it is not a SQLite database (no 'SQLite format 3' header)".into(),
        ));
    }
    if got < HEAD {
        return Err(corrupt(format!(
            "truncated: {len} bytes, shorter than the 100-byte header"
        )));
    }
    let be32 = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536u64,
        n if n >= 512 && n.is_power_of_two() => n as u64,
        n => {
            return Err(corrupt(format!(
                "garbage header: page size {n} is not a power of two from 512 to 65536"
            )))
        }
    };
    let application_id = be32(68) as i32;
    if application_id != 0 && application_id != APPLICATION_ID {
        return Err(not_queue(format!(
            "it is a SQLite database of another application (application_id {application_id:#010x})"
        )));
    }
    if len % page_size != 0 {
        return Err(corrupt(format!(
            "truncated: {len} bytes is not a whole number of {page_size}-byte pages"
        )));
    }
    // The in-header page count is trustworthy when "version-valid-for" equals
    // the change counter — and no WAL is live: while another process
    // checkpoints, page 1 (with the new count) reaches the file before the
    // pages that extend it, so a live queue can look short for a moment.
    let (change_counter, page_count, valid_for) = (be32(24), be32(28) as u64, be32(92));
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        return Ok(Look::WalLive);
    }
    if valid_for == change_counter && page_count > 0 && len < page_count * page_size {
        return Err(corrupt(format!(
            "truncated: the header says {} bytes ({page_count} pages), the file has {len}",
            page_count * page_size
        )));
    }
    // Page 1's b-tree header: a leaf (0x0d) holds one cell per schema object;
    // an interior page (0x05) means there are many.
    let objects = match header[100] {
        0x0d => i64::from(u16::from_be_bytes([header[103], header[104]])),
        _ => i64::MAX,
    };
    Ok(Look::Settled(Identity {
        application_id,
        user_version: i64::from(be32(60) as i32),
        objects,
    }))
}

/// Create a new, empty queue file readable and writable by its owner only
/// (0600 whatever the umask); SQLite creates the `-wal` and `-shm` files
/// with the mode of the database file, so they are private too.  A file
/// another process created first is left as it is.
pub(crate) fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| Error::Io {
        operation: "creating",
        path: path.to_path_buf(),
        source,
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => file
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io(e)),
    }
}

/// Free bytes for an unprivileged writer on the file system holding `path`
/// (a file or a directory), when the system says.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and a buffer of the size statvfs writes.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the buffer.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Whether the file system holding the queue file at `path` has less room
/// than SQLite's shared-memory file needs (32 KiB, and a little for the WAL).
pub(crate) fn disk_is_full(path: &Path) -> bool {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    free_bytes(dir).is_some_and(|free| free < 64 * 1024)
}

/// Apply the per-connection settings and read each one back: a pragma SQLite
/// does not know, or one the file system refuses, is ignored silently — so
/// every value is checked.
pub(crate) fn configure(conn: &Connection, opts: &ConnectionOptions) -> rusqlite::Result<()> {
    enlarge_lookaside(conn);
    super::busy::install(conn, opts.busy_timeout)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    expect("journal_mode", "wal", &mode.to_ascii_lowercase())?;
    conn.pragma_update(None, "synchronous", opts.synchronous.pragma_value())?;
    let sync: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
    expect(
        "synchronous",
        &opts.synchronous.pragma_value().to_string(),
        &sync.to_string(),
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let fk: i64 = conn.pragma_query_value(None, "foreign_keys", |r| r.get(0))?;
    expect("foreign_keys", "1", &fk.to_string())?;
    let limit: i64 =
        conn.pragma_update_and_check(None, "journal_size_limit", opts.journal_size_limit, |r| {
            r.get(0)
        })?;
    expect(
        "journal_size_limit",
        &opts.journal_size_limit.to_string(),
        &limit.to_string(),
    )?;
    let frames: i64 =
        conn.pragma_update_and_check(None, "wal_autocheckpoint", opts.wal_autocheckpoint, |r| {
            r.get(0)
        })?;
    expect(
        "wal_autocheckpoint",
        &opts.wal_autocheckpoint.max(0).to_string(),
        &frames.to_string(),
    )?;
    conn.pragma_update(None, "cache_size", -opts.cache_kib)?;
    // Query planner stability: plans never depend on bound values.  SQLite is
    // built with STAT4 here, and once `ANALYZE` (or the nightly `PRAGMA
    // optimize`) has gathered samples, a statement whose parameter constrains
    // an indexed column is recompiled whenever that value changes — the
    // promote step's `run_at <= now` on every claim, which halved the claim
    // rate.  With QPSG the plan is the one the `EXPLAIN QUERY PLAN` tests
    // check, for every value.
    let qpsg = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    expect("query planner stability (QPSG)", "true", &qpsg.to_string())?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Run `f` again while `busy` says its error is SQLite's busy, for up to
/// `timeout`, pausing 1 ms, then twice as long each time up to 50 ms.
/// SQLite answers busy at once, without its busy handler, from inside WAL
/// set-up and recovery: a connection's set-up waits here instead.
pub(crate) fn retry_while_busy<T, E>(
    timeout: Duration,
    busy: impl Fn(&E) -> bool,
    mut f: impl FnMut() -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    let deadline = std::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match f() {
            Err(e) if busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// [`configure`] for a pool's new connection, waiting out busy answers.
pub(crate) fn configure_waiting(
    conn: &Connection,
    opts: &ConnectionOptions,
) -> rusqlite::Result<()> {
    let busy = |e: &rusqlite::Error| {
        matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    };
    retry_while_busy(opts.busy_timeout, busy, || configure(conn, opts))
}

/// Whether the linked SQLite shares one page cache among all the process's
/// connections (built with `SQLITE_ENABLE_MEMORY_MANAGEMENT`).  Then a
/// connection whose cache is full recycles the least recently used page of
/// *any* connection, so a busy one (a backup reading a tenant database)
/// empties the caches of the idle ones.  The SQLite that jobd bundles is
/// built without it; this says what the process is linked with.
pub fn page_caches_shared() -> bool {
    // SAFETY: a NUL-terminated static string; the call only reads it.
    unsafe { rusqlite::ffi::sqlite3_compileoption_used(c"ENABLE_MEMORY_MANAGEMENT".as_ptr()) != 0 }
}

/// Lookaside slots per connection (of [`LOOKASIDE_SLOT`] bytes; SQLite
/// carves part of the space into 128-byte slots for small allocations).
const LOOKASIDE_SLOTS: i32 = 400;
const LOOKASIDE_SLOT: i32 = 1200;

/// Give the connection a larger lookaside allocator (SQLite's default is 40
/// slots, 48 KiB).  A multi-row `INSERT` of `enqueue_many` binds ~200 small
/// texts at once; past the default's slots each bind went to `malloc` and
/// back, measured at 10–15% of a batched enqueue.  400 × 1200 bytes
/// (480 KiB per connection) took it away.  Must run before the connection
/// allocates anything; if SQLite refuses, the default stays (slower, correct).
fn enlarge_lookaside(conn: &Connection) {
    // SAFETY: the handle is a live connection owned by `conn`; a null buffer
    // asks SQLite to allocate the lookaside memory itself.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_db_config(
            conn.handle(),
            rusqlite::ffi::SQLITE_DBCONFIG_LOOKASIDE,
            std::ptr::null_mut::<std::ffi::c_void>(),
            LOOKASIDE_SLOT,
            LOOKASIDE_SLOTS,
        )
    };
    if rc != rusqlite::ffi::SQLITE_OK {
        tracing::debug!(rc, "lookaside not enlarged; SQLite's default stays");
    }
}

fn expect(pragma: &'static str, expected: &str, actual: &str) -> rusqlite::Result<()> {
    if expected == actual {
        return Ok(());
    }
    Err(rusqlite::Error::ToSqlConversionFailure(Box::new(
        Error::Pragma {
            pragma,
            expected: expected.to_string(),
            actual: actual.to_string(),
        },
    )))
}

/// Undo the wrapping done by [`expect`], so a pragma failure surfaces as
/// [`Error::Pragma`] rather than as a generic SQLite error.
pub(crate) fn unwrap_pragma_error(path: &Path, err: rusqlite::Error) -> Error {
    match err {
        rusqlite::Error::ToSqlConversionFailure(inner) => match inner.downcast::<Error>() {
            Ok(e) => *e,
            Err(other) => Error::from_sqlite(
                "configuring the connection",
                path,
                rusqlite::Error::ToSqlConversionFailure(other),
            ),
        },
        other => Error::from_sqlite("configuring the connection", path, other),
    }
}
