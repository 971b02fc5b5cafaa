//! Waiting for the write lock: jobd's own busy handler.
//!
//! SQLite's default handler (behind `sqlite3_busy_timeout`) sleeps 1, 2, 5,
//! 10, 15, 20, 25 … ms between looks at a taken lock.  A worker's turn holds
//! the lock for a fraction of a millisecond and the next one follows within
//! microseconds, so a second process sleeping milliseconds between looks
//! almost never found it free: of two workers on one file, one did 12–25%
//! of the jobs and the pair drained slower than one.  This handler looks
//! again after a yield of the thread, 20 times (a few tens of µs: the
//! other's turn is usually ending), then every 50 µs for a few
//! milliseconds, then every 500 µs, then every 5 ms — until the busy
//! timeout, measured on the clock, not summed from the pauses.  (Two
//! processes draining one file at concurrency 16, run alternately: sleeping
//! 50 µs from the second look, 89–95k jobs/s; yielding for the first 20,
//! 109–111k.)

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
        0..=19 => Duration::ZERO,
        20..=80 => Duration::from_micros(50),
        81..=220 => Duration::from_micros(500),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The handler's looks for one taken lock, as SQLite makes them: until
    /// it says stop.  `(looks, time taken)`.
    fn wait_out(timeout: Duration) -> (c_int, Duration) {
        let ctx = timeout.as_millis() as usize as *mut c_void;
        let started = Instant::now();
        let mut count = 0;
        // SAFETY: the handler reads nothing through `ctx`.
        while unsafe { wait_for_lock(ctx, count) } != 0 {
            count += 1;
        }
        (count, started.elapsed())
    }

    #[test]
    fn looks_often_then_less_often() {
        // SQLite's own handler looks 5 times in 30 ms (after 1, 2, 5, 10
        // and 15 ms of sleep); this one yields 20 times, then sleeps 50 µs,
        // then 500 µs, then 5 ms.  The schedule, not a count of looks in
        // real time (which a loaded machine stretches).
        assert!((0..20).all(|n| pause(n) == Duration::ZERO));
        assert_eq!(pause(20), Duration::from_micros(50));
        let first_81: Duration = (0..81).map(pause).sum();
        assert!(first_81 <= Duration::from_millis(4), "{first_81:?}");
        assert_eq!(pause(81), Duration::from_micros(500));
        assert_eq!(pause(10_000), Duration::from_millis(5));
    }

    #[test]
    fn gives_up_at_the_timeout_on_the_clock() {
        let (looks, took) = wait_out(Duration::from_millis(30));
        assert!(took >= Duration::from_millis(30), "{took:?}");
        assert!(looks > 0);
        // One pause past it at most, and whatever a busy machine adds: a
        // bound against a handler that never gives up, not a timing.
        assert!(took < Duration::from_secs(2), "{took:?}");
        // Each wait starts its own clock.
        let (_, again) = wait_out(Duration::from_millis(5));
        assert!(again < Duration::from_secs(2), "{again:?}");
        assert_eq!(wait_out(Duration::ZERO).0, 0);
    }
}
