//! The watcher of commits: notices what other processes (and other
//! connections of this one) commit to the queue file, and wakes idle workers.
//!
//! Every commit writes the queue's WAL file, so a file-system watch on
//! `<queue>-wal` (inotify on Linux, through the `notify` crate) wakes an
//! idle worker within microseconds while it sleeps in the kernel.  Behind
//! that, and alone where no watch can be set, a thread compares
//! `PRAGMA data_version` every `poll_interval` (with a watch: every second,
//! as a safety net).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};

use crate::store::Store;

/// The safety-net poll beside a working file-system watch.
const POLL_BEHIND_WATCH: Duration = Duration::from_secs(1);

pub(crate) struct Watcher {
    stop: Arc<AtomicBool>,
    /// Kept for its lifetime: dropping it ends the watch.
    _watch: Option<notify::RecommendedWatcher>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    pub(crate) fn start(store: &Store, poll_interval: Duration) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let watch = watch_wal(store);
        let every = if watch.is_some() {
            POLL_BEHIND_WATCH
        } else {
            poll_interval
        };
        let thread = {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::Builder::new()
                .name("jobd-watch".into())
                .spawn(move || poll(&store, &stop, every))
                .ok()
        };
        Watcher {
            stop,
            _watch: watch,
            thread,
        }
    }
}

/// A watch on `<queue>-wal` that wakes the store's idle workers on every
/// write; `None` when the platform or the file system offers none.
fn watch_wal(store: &Store) -> Option<notify::RecommendedWatcher> {
    let mut wal = store.path().as_os_str().to_owned();
    wal.push("-wal");
    let waker = store.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| matches!(e.kind, EventKind::Modify(_))) {
            waker.notify_work();
        }
    })
    .ok()?;
    match watcher.watch(std::path::Path::new(&wal), RecursiveMode::NonRecursive) {
        Ok(()) => Some(watcher),
        Err(e) => {
            tracing::debug!(error = %e, "no file-system watch on the WAL; polling");
            None
        }
    }
}

/// Compare `PRAGMA data_version` every `every` until `stop`.
fn poll(store: &Store, stop: &AtomicBool, every: Duration) {
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
        std::thread::park_timeout(every);
        let v = data_version();
        if v.is_some() && last.is_some() && v != last {
            store.notify_work();
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
    }
}
