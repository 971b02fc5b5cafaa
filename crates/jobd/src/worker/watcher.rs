//! The watcher of commits: notices what other processes (and other
//! connections of this one) commit to the queue file, and wakes idle workers.
//!
//! Every commit writes the queue's WAL file, so an inotify watch on
//! `<queue>-wal` (Linux, through the `inotify` crate) wakes an idle worker
//! within microseconds while it sleeps in the kernel; one wake per burst of
//! writes, however many.  Behind that, and alone where no watch can be set,
//! a thread compares `PRAGMA data_version` every `poll_interval` (with a
//! watch: every second, as a safety net).
//!
//! The watch is on only while the worker waits for work (free slots, and
//! its last claims came back short): a busy worker claims anyway, and the
//! kernel would otherwise queue an event, and wake this thread, for every
//! write of every commit to the file.  While busy, the poll looks every
//! [`BUSY_POLL`], so that a cancel asked by another process still reaches
//! running jobs within a fraction of a second (see the heartbeat loop).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::store::{SqliteStore, Store};

/// The safety-net poll beside a working file-system watch.
const POLL_BEHIND_WATCH: Duration = Duration::from_secs(1);

/// The poll while the worker is busy (the watch off).
const BUSY_POLL: Duration = Duration::from_millis(100);

/// What a commit watcher calls on a commit.
pub type CommitNotify = Arc<dyn Fn() + Send + Sync>;
type Notify = CommitNotify;

/// A backend's watch on other connections' commits (see
/// [`Backend::watch_commits`](crate::store::Backend::watch_commits)); it
/// stops when dropped.
pub trait CommitWatcher: Send + Sync {
    /// Say whether the worker now waits for work (watch closely) or is busy
    /// (the safety-net pace).  True when that changed.
    fn set_waiting(&self, waiting: bool) -> bool;
}

/// Wake `store`'s idle workers on other connections' commits; the worker
/// is taken to be waiting for work.
pub(crate) fn watch_for_work(store: &Store, poll_interval: Duration) -> Box<dyn CommitWatcher> {
    let notify: Notify = {
        let store = store.clone();
        Arc::new(move || store.notify_work())
    };
    store.watch_commits(poll_interval, Some(BUSY_POLL), true, notify)
}

pub(crate) struct Watcher {
    stop: Arc<AtomicBool>,
    /// The worker waits for work: watch, and poll at the idle pace.
    waiting: Arc<AtomicBool>,
    /// Dropped after the poll thread is told to stop: it ends its own thread.
    watch: Option<WalWatch>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// Start watching, calling `notify` on commits; while not waiting, the
    /// poll looks every `busy_poll` (never, with `None`).
    pub(crate) fn start_with(
        store: &SqliteStore,
        poll_interval: Duration,
        busy_poll: Option<Duration>,
        waiting: bool,
        notify: Notify,
    ) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let waiting = Arc::new(AtomicBool::new(waiting));
        let watch = WalWatch::start(store, &stop, notify.clone());
        if let Some(w) = &watch {
            w.set_on(waiting.load(Ordering::Relaxed));
        }
        let idle_every = if watch.is_some() {
            POLL_BEHIND_WATCH
        } else {
            poll_interval
        };
        let thread = {
            let (store, stop, waiting) = (store.clone(), stop.clone(), waiting.clone());
            std::thread::Builder::new()
                .name("jobd-watch".into())
                .spawn(move || {
                    let every = || match (waiting.load(Ordering::Relaxed), busy_poll) {
                        (true, _) => Some(idle_every),
                        (false, busy) => busy,
                    };
                    poll(&store, &stop, every, &*notify)
                })
                .ok()
        };
        Watcher {
            stop,
            waiting,
            watch,
            thread,
        }
    }
}

impl CommitWatcher for Watcher {
    /// The watch on while waiting, off while busy.
    fn set_waiting(&self, waiting: bool) -> bool {
        if self.waiting.swap(waiting, Ordering::Relaxed) == waiting {
            return false;
        }
        if let Some(w) = &self.watch {
            w.set_on(waiting);
        }
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
        true
    }
}

/// An inotify watch on `<queue>-wal` and the thread that waits on it.
#[cfg(target_os = "linux")]
struct WalWatch {
    watches: std::sync::Mutex<inotify::Watches>,
    wal: std::ffi::OsString,
    wd: inotify::WatchDescriptor,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(target_os = "linux")]
impl WalWatch {
    /// `None` when no watch can be set (no inotify, no WAL file yet).
    fn start(store: &SqliteStore, stop: &Arc<AtomicBool>, notify: Notify) -> Option<WalWatch> {
        let mut wal = store.path().as_os_str().to_owned();
        wal.push("-wal");
        let mut inotify = inotify::Inotify::init().ok()?;
        let wd = match inotify.watches().add(&wal, inotify::WatchMask::MODIFY) {
            Ok(wd) => wd,
            Err(e) => {
                tracing::debug!(error = %e, "no inotify watch on the WAL; polling");
                return None;
            }
        };
        let watches = std::sync::Mutex::new(inotify.watches());
        let stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("jobd-wal-watch".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                // Every pending event comes back from one read: a burst of
                // writes wakes the workers once.  The watch removed (by
                // `drop`, or with the file) ends the loop.
                while let Ok(events) = inotify.read_events_blocking(&mut buf) {
                    let mut wrote = false;
                    for event in events {
                        if event.mask.contains(inotify::EventMask::IGNORED) {
                            return;
                        }
                        wrote = true;
                    }
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if wrote {
                        notify();
                    }
                }
            })
            .ok()?;
        Some(WalWatch {
            watches,
            wal,
            wd,
            thread: Some(thread),
        })
    }

    /// Watch writes, or only the file's removal (the same watch, its mask
    /// changed: a write to the file then costs the kernel a mask test).
    fn set_on(&self, on: bool) {
        let mask = if on {
            inotify::WatchMask::MODIFY
        } else {
            inotify::WatchMask::DELETE_SELF
        };
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = watches.add(&self.wal, mask) {
            tracing::debug!(error = %e, "could not change the WAL watch; the poll goes on");
        }
    }
}

#[cfg(target_os = "linux")]
impl Drop for WalWatch {
    fn drop(&mut self) {
        // Removing the watch queues an IN_IGNORED event, which wakes the
        // thread's read; if the watch went with the file, the thread has
        // seen that event already.
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let _ = watches.remove(self.wd.clone());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Elsewhere: no watch, the poll alone.
#[cfg(not(target_os = "linux"))]
struct WalWatch;

#[cfg(not(target_os = "linux"))]
impl WalWatch {
    fn start(_: &SqliteStore, _: &Arc<AtomicBool>, _: Notify) -> Option<WalWatch> {
        None
    }

    fn set_on(&self, _: bool) {}
}

/// Compare `PRAGMA data_version` every `every()` (parked while `None`)
/// until `stop`.
fn poll(
    store: &SqliteStore,
    stop: &AtomicBool,
    every: impl Fn() -> Option<Duration>,
    notify: &dyn Fn(),
) {
    let conn = match store.connection() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch the queue for other processes' work");
            return;
        }
    };
    let data_version = || {
        conn.prepare_cached("PRAGMA data_version")
            .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
            .ok()
    };
    let mut last = data_version();
    while !stop.load(Ordering::Relaxed) {
        match every() {
            Some(t) => std::thread::park_timeout(t),
            None => std::thread::park(),
        }
        let v = data_version();
        if v.is_some() && last.is_some() && v != last {
            notify();
        }
        if v.is_some() {
            last = v;
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        drop(self.watch.take());
    }
}

/// Commits to a queue file, from this process or any other, for code that
/// waits on the file's changes — a long-polling claim, a client waiting for
/// its job to finish.  The inotify watch on the WAL is on only while some
/// [`CommitWait`] is alive (with a 1 s `data_version` poll behind it); with
/// no one waiting it costs nothing.
#[derive(Clone)]
pub struct CommitWatch {
    inner: Arc<CommitInner>,
}

struct CommitInner {
    watcher: Box<dyn CommitWatcher>,
    commits: tokio::sync::watch::Sender<u64>,
    waiters: std::sync::Mutex<usize>,
}

impl CommitWatch {
    /// Start watching `store`'s commits (for a file: a thread, and one
    /// inotify watch).
    pub fn start(store: &Store) -> CommitWatch {
        let commits = tokio::sync::watch::Sender::new(0u64);
        let notify: Notify = {
            let commits = commits.clone();
            Arc::new(move || commits.send_modify(|n| *n = n.wrapping_add(1)))
        };
        let watcher = store.watch_commits(POLL_BEHIND_WATCH, None, false, notify);
        CommitWatch {
            inner: Arc::new(CommitInner {
                watcher,
                commits,
                waiters: std::sync::Mutex::new(0),
            }),
        }
    }

    /// Start waiting: every commit from now on wakes
    /// [`CommitWait::changed`].  Take it before looking at the file, so a
    /// commit between the look and the wait is not missed.
    pub fn wait(&self) -> CommitWait {
        let mut waiters = self.inner.waiters.lock().unwrap_or_else(|e| e.into_inner());
        *waiters += 1;
        if *waiters == 1 {
            self.inner.watcher.set_waiting(true);
        }
        let mut commits = self.inner.commits.subscribe();
        commits.mark_unchanged();
        CommitWait {
            commits,
            owner: self.inner.clone(),
        }
    }
}

impl std::fmt::Debug for CommitWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitWatch")
    }
}

/// One waiter on a [`CommitWatch`].
pub struct CommitWait {
    commits: tokio::sync::watch::Receiver<u64>,
    owner: Arc<CommitInner>,
}

impl CommitWait {
    /// Resolves at the next commit to the file since the last call (or
    /// since [`CommitWatch::wait`]).
    pub async fn changed(&mut self) {
        if self.commits.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for CommitWait {
    fn drop(&mut self) {
        let mut waiters = self.owner.waiters.lock().unwrap_or_else(|e| e.into_inner());
        *waiters -= 1;
        if *waiters == 0 {
            self.owner.watcher.set_waiting(false);
        }
    }
}
