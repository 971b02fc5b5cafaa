//! The cron scheduler: recurring jobs, fired exactly once per tick.
//!
//! Schedules live in the queue file's `schedules` table (see
//! `sqlite3 queue.db 'select * from schedule_overview'`).  Each has a cron
//! expression in a timezone, or a fixed interval ([`When`], whose doc says
//! how wall-clock times behave across DST), the job it enqueues, an enabled
//! flag and a [`Misfire`] policy.
//!
//! **Exactly once.**  A tick becomes a job only together with a
//! `schedule_fires (schedule, fire_at)` row whose primary key refuses a
//! second one, in one transaction that also moves the schedule's
//! `next_fire_at` on (`fire.rs` has the details).  Any number of schedulers —
//! threads, processes, `jobd serve` daemons — may run on one file; a
//! scheduler killed at any point loses or repeats nothing.
//!
//! **Misfires.**  A tick fired within the grace period after it was due
//! (60 s by default) is on time.  After downtime, the ticks that came due
//! meanwhile are handled by the schedule's policy: `skip` fires none of them
//! (only the next future tick), `once` (the default) fires one catch-up job,
//! for the latest, and `all` fires each of them, the latest `misfire_cap`
//! (default 24) at most.
//!
//! ```no_run
//! use jobd::scheduler::{NewSchedule, Scheduler};
//!
//! # async fn app() -> jobd::Result<()> {
//! let store = jobd::Store::open("queue.db")?;
//! store.add_schedule(
//!     &NewSchedule::cron("nightly-backup", "0 2 * * *", "maintenance", "backup_tenants")
//!         .timezone("Europe/Berlin"),
//! )?;
//! Scheduler::new(store).run(async { tokio::signal::ctrl_c().await.ok(); }).await?;
//! # Ok(()) }
//! ```

pub(crate) mod fire;
pub(crate) mod manage;
pub(crate) mod rows;
mod schedule;
mod when;

use std::future::Future;
use std::time::Duration;

pub use schedule::{
    FireRecord, FireReport, Fired, Misfire, NewSchedule, ScheduleInfo, ScheduleSpec,
};
pub use when::{parse_timezone, Timetable, When, MIN_INTERVAL};

use crate::error::Result;
use crate::store::Store;

/// Runs the schedules of one queue file: embed it in an app, or let
/// `jobd serve` / `jobd scheduler` run it.
#[derive(Debug, Clone)]
pub struct Scheduler {
    store: Store,
    grace: Duration,
    poll: Duration,
}

impl Scheduler {
    /// A scheduler on `store`, with a 60 s misfire grace and a 1 s poll.
    pub fn new(store: Store) -> Scheduler {
        Scheduler {
            store,
            grace: Duration::from_secs(60),
            poll: Duration::from_secs(1),
        }
    }

    /// How late a tick may be fired and still be on time (not a misfire).
    pub fn misfire_grace(mut self, grace: Duration) -> Scheduler {
        self.grace = grace;
        self
    }

    /// The longest [`Scheduler::run`] sleeps before looking again (schedules
    /// added by other processes are noticed within it).  Checking is one
    /// indexed read; the write lock is taken only when a tick is due.
    pub fn poll_interval(mut self, poll: Duration) -> Scheduler {
        self.poll = poll.max(Duration::from_millis(1));
        self
    }

    /// Fire every tick that is due by the store's clock, once.  Safe to call
    /// from any number of threads and processes at once.
    pub fn tick(&self) -> Result<FireReport> {
        self.store.fire_due_schedules(self.grace)
    }

    /// Fire ticks as they come due until `shutdown` resolves.  Transient
    /// errors (a busy or full database) are logged and retried; any other
    /// error ends the loop.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        tracing::info!(queue = %self.store.location(), "scheduler started");
        loop {
            let this = self.clone();
            let outcome = tokio::task::spawn_blocking(move || this.tick())
                .await
                .expect("scheduler tick panicked");
            let wait = match outcome {
                Ok(report) => {
                    let now = self.store.clock().now_ms();
                    match report.next_fire_at {
                        Some(next) => Duration::from_millis((next - now).max(0) as u64),
                        None => self.poll,
                    }
                    .min(self.poll)
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "scheduler pass failed; retrying");
                    self.poll
                }
                Err(e) => {
                    tracing::error!(error = %e, "scheduler stopped");
                    return Err(e);
                }
            };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!("scheduler stopped");
        Ok(())
    }
}
