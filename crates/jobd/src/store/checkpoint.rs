//! Background checkpoints: keep the WAL's fsyncs off the hot path.
//!
//! With SQLite's own auto-checkpoint, the connection whose commit crosses the
//! threshold runs the checkpoint itself: it fsyncs the WAL, copies pages into
//! the database and fsyncs that too, while the job it was committing waits.
//! Measured on the bench machine that wait is about half the cost of a
//! claim+complete cycle, and a latency spike of several milliseconds every
//! few hundred commits.
//!
//! A [`Store`](crate::Store) instead runs one checkpointer thread with its own
//! connection.  Every `interval` it looks at `PRAGMA data_version` (which
//! changes when any other connection, in any process, commits) and when it
//! changed runs a `PASSIVE` checkpoint, which never blocks readers or writers.
//! Under a steady stream of commits a passive checkpoint never catches the
//! writers up, so the WAL could not restart; when it holds more than
//! `restart_frames` frames the checkpointer runs one `RESTART` checkpoint,
//! which waits (up to `restart_wait`) for the current writer, copies the
//! handful of frames the passive pass left, and lets the next writer start the
//! WAL from the beginning.  The pool's connections keep SQLite's
//! auto-checkpoint at `fallback_frames`, well above, as a safety net should
//! this thread fall behind.
//!
//! A `RESTART` needs a moment with no writer, and SQLite's busy handler is not
//! fair: writers that commit back to back (two threads enqueueing in a loop)
//! can keep the lock taken at every retry until the wait runs out, and the WAL
//! grows without bound.  So the checkpointer raises a [`Gate`] first: this
//! process's store operations that start while it is raised wait (at most
//! `restart_wait`) for it to come down, the transaction in flight finishes,
//! and the checkpoint gets its moment.  Writers in other processes still
//! compete through the busy handler; they are rarely all back to back.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::Result;
use crate::store::open::{self, ConnectionOptions};
use crate::store::SqliteStore;

/// How the background checkpointer runs.
#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    /// How often the checkpointer looks for new commits.
    pub interval: Duration,
    /// WAL frames (pages) after which a blocking `RESTART` checkpoint lets
    /// the WAL start over.
    pub restart_frames: i64,
    /// Longest a `RESTART` checkpoint waits for writers and readers.
    pub restart_wait: Duration,
    /// SQLite's own auto-checkpoint threshold on the pool's connections: the
    /// safety net, in frames.
    pub fallback_frames: i64,
}

impl Default for CheckpointOptions {
    fn default() -> Self {
        CheckpointOptions {
            interval: Duration::from_millis(50),
            restart_frames: 4096,
            restart_wait: Duration::from_millis(200),
            fallback_frames: 16384,
        }
    }
}

/// The checkpointer thread; stopped and joined on drop.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    gate: Arc<Gate>,
    handle: Option<JoinHandle<()>>,
}

/// Raised while a `RESTART` checkpoint runs: this process's store operations
/// hold back until it comes down, so the checkpoint finds the write lock free.
/// Waiting is bounded (a nested operation, or a caller's own open transaction,
/// cannot deadlock it: the checkpoint gives up after its busy timeout and
/// lowers the gate).
#[derive(Debug)]
pub(crate) struct Gate {
    raised: AtomicBool,
    /// RESTART checkpoints that completed (for tests and diagnostics).
    restarts: std::sync::atomic::AtomicU64,
    lock: Mutex<()>,
    lowered: Condvar,
    max_wait: Duration,
}

impl Gate {
    fn new(max_wait: Duration) -> Gate {
        Gate {
            raised: AtomicBool::new(false),
            restarts: std::sync::atomic::AtomicU64::new(0),
            lock: Mutex::new(()),
            lowered: Condvar::new(),
            max_wait,
        }
    }

    /// Called before every store operation: one atomic load when the gate is
    /// down (nearly always).
    #[inline]
    pub(crate) fn pass(&self) {
        if self.raised.load(Ordering::Acquire) {
            self.wait();
        }
    }

    #[cold]
    fn wait(&self) {
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.lowered.wait_timeout_while(guard, self.max_wait, |_| {
            self.raised.load(Ordering::Acquire)
        });
    }

    fn raise(&self) {
        self.raised.store(true, Ordering::Release);
    }

    fn lower(&self) {
        {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.raised.store(false, Ordering::Release);
        }
        self.lowered.notify_all();
    }
}

pub(crate) const PASSIVE: &str = "PRAGMA wal_checkpoint(PASSIVE)";
pub(crate) const RESTART: &str = "PRAGMA wal_checkpoint(RESTART)";

#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[("PASSIVE", PASSIVE), ("RESTART", RESTART)];

impl Checkpointer {
    pub(crate) fn start(
        path: PathBuf,
        conn_opts: &ConnectionOptions,
        opts: CheckpointOptions,
    ) -> std::io::Result<Checkpointer> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        // Operations held at the gate wait a little longer than the checkpoint
        // may, so they are not let through just before it gets the lock.
        let gate = Arc::new(Gate::new(opts.restart_wait + opts.restart_wait / 2));
        let conn_opts = ConnectionOptions {
            busy_timeout: opts.restart_wait,
            ..conn_opts.clone()
        };
        let handle = std::thread::Builder::new()
            .name("jobd-checkpoint".into())
            .spawn({
                let stop = stop.clone();
                let gate = gate.clone();
                move || run(&path, &conn_opts, &opts, &stop, &gate)
            })?;
        Ok(Checkpointer {
            stop,
            gate,
            handle: Some(handle),
        })
    }

    /// RESTART checkpoints completed so far.
    #[cfg(test)]
    pub(crate) fn restarts(&self) -> u64 {
        self.gate.restarts.load(Ordering::Relaxed)
    }

    pub(crate) fn gate(&self) -> &Gate {
        &self.gate
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cvar.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(
    path: &std::path::Path,
    conn_opts: &ConnectionOptions,
    opts: &CheckpointOptions,
    stop: &(Mutex<bool>, Condvar),
    gate: &Gate,
) {
    let conn = match Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .and_then(|c| open::configure(&c, conn_opts).map(|()| c))
    {
        Ok(c) => c,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error,
                "background checkpointer could not open the queue; SQLite's auto-checkpoint stays in charge");
            return;
        }
    };
    let mut seen_version = None;
    let (lock, cvar) = stop;
    let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        stopped = cvar
            .wait_timeout(stopped, opts.interval)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        if *stopped {
            return;
        }
        // Commits by other connections (this process's pool or any other
        // process) change data_version; nothing new, nothing to do.
        let version: Option<i64> = conn.query_row("PRAGMA data_version", [], |r| r.get(0)).ok();
        if version.is_none() || version == seen_version {
            continue;
        }
        seen_version = version;
        match checkpoint(&conn, PASSIVE) {
            Ok((_, frames, _)) if frames >= opts.restart_frames => {
                gate.raise();
                let restarted = checkpoint(&conn, RESTART);
                gate.lower();
                match restarted {
                    Ok((0, _, _)) => {
                        gate.restarts.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => tracing::debug!(frames, "restart checkpoint timed out; will retry"),
                    Err(error) => tracing::debug!(%error, "restart checkpoint failed"),
                }
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "passive checkpoint failed"),
        }
    }
}

/// (busy, frames in the WAL, frames checkpointed).
fn checkpoint(conn: &Connection, sql: &str) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
}

impl SqliteStore {
    /// Checkpoint the WAL into the database file and truncate it.
    pub fn checkpoint(&self) -> Result<()> {
        self.with_conn("checkpoint", |c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
    }
}
