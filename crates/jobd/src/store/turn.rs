//! Writers of one process take turns before they ask SQLite for the lock.
//!
//! SQLite's busy handler, when a transaction finds the write lock taken,
//! sleeps 1, 2, 5, 10… ms before it looks again.  A worker runs its claims
//! and its group commits of completions on different threads, and the two
//! kept meeting at the lock: each meeting cost a millisecond of sleep for a
//! transaction of ~2 ms.  Handing the turn over in-process (a mutex and a
//! condition variable, woken at release) took a 100,000-job drain from
//! 30–32k to 34–38k jobs/s.  Writers in other processes still meet at
//! SQLite's lock.
//!
//! The wait is bounded: after `limit` a writer goes ahead without its turn
//! and SQLite's lock decides, as before — so a write started while this
//! thread already holds a turn (a nested write) fails with `Busy` after the
//! busy timeout instead of deadlocking.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub(crate) struct Turns {
    state: Mutex<State>,
    released: Condvar,
}

#[derive(Debug, Default)]
struct State {
    taken: bool,
    /// Writers waiting for the turn: a release with none wakes nobody (a
    /// futex wake is a system call, and nearly every write finds no one).
    waiting: usize,
}

/// The turn, given back when dropped (if it was had).
pub(crate) struct Turn<'a> {
    turns: Option<&'a Turns>,
}

impl Turns {
    pub(crate) fn take(&self, limit: Duration) -> Turn<'_> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.taken {
            let deadline = Instant::now() + limit;
            state.waiting += 1;
            while state.taken {
                let now = Instant::now();
                if now >= deadline {
                    state.waiting -= 1;
                    return Turn { turns: None };
                }
                state = self
                    .released
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            state.waiting -= 1;
        }
        state.taken = true;
        Turn { turns: Some(self) }
    }
}

impl Turn<'_> {
    /// Whether the turn was had (not gone ahead without it).
    pub(crate) fn held(&self) -> bool {
        self.turns.is_some()
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Some(turns) = self.turns {
            let mut state = turns.state.lock().unwrap_or_else(|e| e.into_inner());
            state.taken = false;
            if state.waiting > 0 {
                turns.released.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn one_writer_at_a_time_and_a_bounded_wait() {
        let turns = Arc::new(Turns::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (turns, inside, most) = (turns.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let _turn = turns.take(Duration::from_secs(10));
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);

        // A nested take does not deadlock: it goes ahead after the limit.
        let outer = turns.take(Duration::from_secs(1));
        let t = Instant::now();
        let inner = turns.take(Duration::from_millis(50));
        assert!(inner.turns.is_none());
        assert!(t.elapsed() >= Duration::from_millis(50));
        drop(inner);
        drop(outer);
        assert!(turns.take(Duration::ZERO).turns.is_some(), "given back");
    }
}
