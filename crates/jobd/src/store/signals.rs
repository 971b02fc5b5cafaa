//! This process's wake-ups, the same for every backend: idle workers wait
//! on new work, running jobs on cancel requests.

use std::sync::{Arc, Mutex, Weak};

/// A callback on new work (see [`Signals::on_work`]).
pub(crate) type WorkHook = Arc<dyn Fn() + Send + Sync>;

/// Wake-ups within one process.  Work and cancels from other processes
/// arrive through the backend's commit watcher, which calls
/// [`Signals::notify_work`].
#[derive(Default)]
pub struct Signals {
    /// Bumped whenever this process makes new work claimable (enqueue, retry,
    /// resume, a retry scheduled, a lease reaped); idle workers watch it.
    work: tokio::sync::watch::Sender<u64>,
    /// Called with every bump of `work` (see [`Signals::on_work`]).
    work_hooks: Mutex<Vec<Weak<dyn Fn() + Send + Sync>>>,
    /// Bumped when cancellation of a running job is asked in this process.
    cancels: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signals")
    }
}

impl Signals {
    /// Wake this process's idle workers: there may be new work (or a new
    /// earliest `run_at`).  Called by every operation that creates work; call
    /// it yourself after enqueueing through
    /// [`SqliteStore::enqueue_in`](super::SqliteStore::enqueue_in) commits,
    /// or after moving a [`ManualClock`](crate::ManualClock).
    pub fn notify_work(&self) {
        self.work.send_modify(|n| *n = n.wrapping_add(1));
        let mut hooks = self.work_hooks.lock().unwrap_or_else(|e| e.into_inner());
        hooks.retain(|hook| match hook.upgrade() {
            Some(hook) => {
                hook();
                true
            }
            None => false,
        });
    }

    /// Call `hook` (on the notifying thread) whenever
    /// [`Signals::notify_work`] is, for as long as it is alive: a worker's
    /// exchange thread is woken without a hop through the async runtime.
    pub(crate) fn on_work(&self, hook: &WorkHook) {
        self.work_hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(hook));
    }

    /// A receiver that changes whenever [`Signals::notify_work`] is called.
    pub fn watch_work(&self) -> tokio::sync::watch::Receiver<u64> {
        self.work.subscribe()
    }

    /// A receiver that changes whenever this process asks a running job to
    /// stop (a cancel): this process's workers look at their leases at once
    /// instead of at their next heartbeat.  (A cancel from another process
    /// is a commit, which workers notice through the commit watcher.)
    pub fn watch_cancels(&self) -> tokio::sync::watch::Receiver<u64> {
        self.cancels.subscribe()
    }

    pub(crate) fn notify_cancel(&self) {
        self.cancels.send_modify(|n| *n = n.wrapping_add(1));
    }
}
