//! jobd: a durable background-job queue in one SQLite file.
//!
//! * [`store`] — the durable store: jobs, attempts, progress, queues, workers
//!   and schedules in one WAL-mode SQLite file; claiming with leases in a
//!   single `UPDATE … RETURNING`, fenced by lease tokens.
//! * [`worker`] — the tokio runtime that runs jobs with registered handlers:
//!   per-queue concurrency, heartbeats, timeouts, retries, cancellation,
//!   graceful shutdown.
//! * [`scheduler`] — cron and interval schedules in the same file, each tick
//!   fired exactly once however many schedulers run.
//! * [`tenants`] — the directory of tenant SQLite databases the built-in
//!   handlers work across, and deterministic demo data for it.
//! * [`handlers`] — the built-in jobs: tenant backups with restore,
//!   maintenance, health checks.
//! * [`server`] — the HTTP API (axum) of `jobd serve`: jobs, queues,
//!   schedules, analytics, `/healthz`, `/metrics`, behind a bearer token.
//! * [`clock`] — injectable time, so leases and backoff are tested without sleeping.
//! * [`error`] — the one error enum.
//! * `cli` (in the binary) — the `jobd` command line over the library.
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
pub mod handlers;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod tenants;
pub mod worker;

pub use clock::{Clock, ManualClock, Millis, SystemClock};
pub use error::{Error, Result};
pub use store::{
    Backoff, CancelOutcome, CancelReport, ClaimedJob, FailOutcome, JobId, JobInfo, JobSelection,
    JobState, ListFilter, NewJob, Progress, RetryReport, Stats, Store, StoreOptions,
};
