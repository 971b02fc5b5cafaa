//! jobd: a durable background-job queue in one SQLite file — the engine an
//! application embeds.
//!
//! * [`store`] — the durable store: jobs, tries, progress, queues, workers
//!   and schedules in one WAL-mode SQLite file; claiming with leases in a
//!   single `UPDATE … RETURNING`, fenced by lease tokens.
//! * [`worker`] — the tokio runtime that runs jobs with registered handlers:
//!   per-queue concurrency, heartbeats, timeouts, retries, cancellation,
//!   graceful shutdown.
//! * [`scheduler`] — cron and interval schedules in the same file, each tick
//!   fired exactly once however many schedulers run.
//! * [`clock`] — injectable time, so leases and backoff are tested without sleeping.
//! * [`error`] — the one error enum.
//!
//! The HTTP API and dashboard (`jobd-server`), the built-in jobs of the QR
//! platform (`jobd-handlers`) and the `jobd` command (`jobd-cli`) are crates
//! of their own, built on this one.
//!
//! ```no_run
//! use std::time::Duration;
//! use jobd::{NewJob, Store};
//!
//! # fn main() -> jobd::Result<()> {
//! let store = Store::open("queue.db")?;
//! let id = store.enqueue(&NewJob::new("pdf", "generate_qr_pdf").payload(&serde_json::json!({"template": 7})))?;
//! for job in store.claim("worker-1", &["pdf"], 10, Duration::from_secs(30))? {
//!     // ... do the work ...
//!     store.complete(job.id, job.lease_token, Some(&serde_json::json!({"pages": 1})))?;
//! }
//! assert_eq!(store.get(id)?.state, jobd::JobState::Succeeded);
//! # Ok(()) }
//! ```

pub mod clock;
pub mod error;
pub mod scheduler;
pub mod store;
pub mod worker;

pub use clock::{Clock, ManualClock, Millis, SystemClock};
pub use error::{Error, Result};
pub use store::{
    Backend, Backoff, CancelOutcome, CancelReport, ClaimedJob, FailOutcome, JobId, JobInfo,
    JobSelection, JobState, ListFilter, NewJob, PgStore, Progress, RetryReport, SqliteStore, Stats,
    Store, StoreOptions,
};

/// The code in the workspace's README, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
