//! Waiting for the write lock: jobd's own busy handler.
//!
//! SQLite's default handler (behind `sqlite3_busy_timeout`) sleeps 1, 2, 5,
//! 10, 15, 20, 25 … ms between looks at a taken lock.  A worker's turn holds
//! the lock for a fraction of a millisecond and the next one follows within
//! microseconds, so a second process sleeping milliseconds between looks
//! almost never found it free: of two workers on one file, one did 12–25%
//! of the jobs and the pair drained slower than one.  This handler looks
//! again after a yield, then every 50 µs for the first few milliseconds,
//! then every 500 µs, then every 5 ms — until the busy timeout, measured on
//! the clock, not summed from the pauses.

use std::cell::Cell;
use std::os::raw::{c_int, c_void};
use std::time::{Duration, Instant};

use rusqlite::{ffi, Connection};

thread_local! {
    /// When the current wait began (a busy handler's calls for one lock
    /// attempt all run on the thread that makes it).
    static WAITING_SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The pause before the `count`-th look again (`count` from 0).
fn pause(count: c_int) -> Duration {
    match count {
        0..=1 => Duration::ZERO,
        2..=60 => Duration::from_micros(50),
        61..=200 => Duration::from_micros(500),
        _ => Duration::from_millis(5),
    }
}

/// SQLite calls this when the lock it wants is taken; `ctx` is the timeout
/// in milliseconds.  Non-zero: look again.
unsafe extern "C" fn wait_for_lock(ctx: *mut c_void, count: c_int) -> c_int {
    let timeout = Duration::from_millis(ctx as usize as u64);
    let now = Instant::now();
    let since = WAITING_SINCE.with(|s| {
        if count == 0 {
            s.set(Some(now));
        }
        s.get().unwrap_or(now)
    });
    if now.duration_since(since) >= timeout {
        return 0;
    }
    match pause(count) {
        Duration::ZERO => std::thread::yield_now(),
        p => std::thread::sleep(p),
    }
    1
}

/// Make `conn` wait up to `timeout` for a lock with [`wait_for_lock`].
pub(crate) fn install(conn: &Connection, timeout: Duration) -> rusqlite::Result<()> {
    let ms = timeout.as_millis().min(u32::MAX as u128) as usize;
    // SAFETY: the handle is the connection's own, valid while `conn` lives;
    // the handler keeps nothing but the timeout, carried in the pointer
    // value itself (never dereferenced).
    let rc =
        unsafe { ffi::sqlite3_busy_handler(conn.handle(), Some(wait_for_lock), ms as *mut c_void) };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None))
    }
}
