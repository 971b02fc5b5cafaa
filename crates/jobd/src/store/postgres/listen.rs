//! Wake-ups across hosts: a thread holds one connection that `LISTEN`s on
//! [`CHANNEL`](super::CHANNEL), and calls the watcher's `notify` for every
//! notification — sent by the transactions that make work or ask a cancel,
//! delivered when they commit.  No claim polling: a worker sleeps until a
//! notification (or its own timers: a delayed job's due time, its lease
//! heartbeat).  When the connection drops (a server restart), the thread
//! connects again, once a second, and wakes the workers once it has, since
//! notifications sent meanwhile were lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::NoTls;

use crate::store::postgres::{PgStore, CHANNEL};
use crate::worker::{CommitNotify, CommitWatcher};

/// How often the thread looks whether it should stop.
const STOP_CHECK: Duration = Duration::from_millis(200);

/// Between attempts to connect again.
const RECONNECT: Duration = Duration::from_secs(1);

struct Listener {
    stop: Arc<AtomicBool>,
    waiting: AtomicBool,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CommitWatcher for Listener {
    /// The listen is on either way (a notification costs nothing while busy).
    fn set_waiting(&self, waiting: bool) -> bool {
        self.waiting.swap(waiting, Ordering::Relaxed) != waiting
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl PgStore {
    /// Wake on other processes' commits through `LISTEN jobd_work`.
    pub fn watch_commits(
        &self,
        _idle_poll: Duration,
        _busy_poll: Option<Duration>,
        waiting: bool,
        notify: CommitNotify,
    ) -> Box<dyn CommitWatcher> {
        let stop = Arc::new(AtomicBool::new(false));
        let config = self.config().clone();
        let location = self.location();
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("jobd-listen".into())
                .spawn(move || listen(&config, &location, &stop, &*notify))
                .ok()
        };
        Box::new(Listener {
            stop,
            waiting: AtomicBool::new(waiting),
            thread,
        })
    }
}

fn listen(config: &postgres::Config, location: &str, stop: &AtomicBool, notify: &dyn Fn()) {
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        let mut client = match config.connect(NoTls) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(database = location, error = %e, "cannot listen for wake-ups; retrying");
                sleep_unless(stop, RECONNECT);
                continue;
            }
        };
        // A name of jobd's own, never input.
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
            tracing::warn!(database = location, error = %e, "LISTEN failed; retrying");
            sleep_unless(stop, RECONNECT);
            continue;
        }
        if !first {
            tracing::info!(database = location, "listening for wake-ups again");
            notify();
        }
        first = false;
        while !stop.load(Ordering::Relaxed) {
            // Wait for one notification (or the stop check's timeout), then
            // take whatever else already arrived without waiting: one wake
            // per burst of commits.
            let mut woken = false;
            let next = {
                let mut notifications = client.notifications();
                let first = notifications
                    .timeout_iter(STOP_CHECK)
                    .next()
                    .map(|n| n.is_some());
                match first {
                    Ok(true) => {
                        woken = true;
                        let mut pending = notifications.iter();
                        loop {
                            match pending.next() {
                                Ok(Some(_)) => {}
                                Ok(None) => break Ok(()),
                                Err(e) => break Err(e),
                            }
                        }
                    }
                    Ok(false) => Ok(()),
                    Err(e) => Err(e),
                }
            };
            if woken {
                notify();
            }
            if let Err(e) = next {
                tracing::warn!(database = location, error = %e, "lost the wake-up connection; reconnecting");
                break;
            }
            if client.is_closed() {
                break;
            }
        }
    }
}

fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let mut left = total;
    while !left.is_zero() && !stop.load(Ordering::Relaxed) {
        let step = left.min(STOP_CHECK);
        std::thread::sleep(step);
        left -= step;
    }
}
