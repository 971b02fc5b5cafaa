//! The storage seam: every operation the worker runtime, the scheduler, the
//! server and the CLI ask of the store, as one trait with two
//! implementations — [`SqliteStore`](super::SqliteStore) (one file, the
//! default) and [`PgStore`](super::PgStore) (one PostgreSQL database shared
//! by several hosts).  A [`Store`](super::Store) is a handle on either.
//!
//! Each backend writes its operations as inherent methods, spread over
//! files by concern; [`with_backend_methods!`] holds the list once, and the
//! trait and each backend's `impl Backend` are generated from it, so a
//! method cannot be missing from one backend or differ in signature.

use std::time::Duration;

use crate::clock::Millis;
use crate::error::{Error, Result};
use crate::scheduler::{FireRecord, FireReport, NewSchedule, ScheduleInfo};
use crate::store::{
    Ack, AckOutcome, CancelOutcome, CancelReport, ClaimedJob, CompleteBatch, Done, FailOutcome,
    Heartbeat, HeldTry, JobId, JobInfo, JobSelection, JobState, JobSummary, ListFilter, LiveWork,
    NewJob, PgStore, Progress, ReapReport, RetryReport, Role, Rollup, Signals, SqliteStore,
    StateEntry, Stats, StoreOptions, Swap, TokenInfo, TryTotals, WorkerInfo,
};
use crate::worker::{CommitNotify, CommitWatcher};

/// Calls `$callback! { [$($pre)*] <every method of the seam> }`.
macro_rules! with_backend_methods {
    ($callback:ident! [$($pre:tt)*]) => {
        $callback! { [$($pre)*]
            // Enqueue.
            fn enqueue(&self, job: &NewJob) -> Result<JobId>;
            fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<JobId>>;
            // Leases: claims and the ends of a try.
            fn exchange(&self, done: &[Done], worker: &str, claims: &[(&str, usize)], most: usize, lease: Duration) -> Result<(CompleteBatch, Vec<ClaimedJob>)>;
            fn heartbeat(&self, id: JobId, token: i64, lease: Duration) -> Result<Heartbeat>;
            fn heartbeat_many(&self, held: &[(JobId, i64)], lease: Duration) -> Result<Vec<(JobId, bool)>>;
            fn cancel_requested(&self, held: &[(JobId, i64)]) -> Result<Vec<JobId>>;
            fn next_run_at(&self) -> Result<Option<Millis>>;
            fn complete(&self, id: JobId, token: i64, result: Option<&serde_json::Value>) -> Result<()>;
            fn fail(&self, id: JobId, token: i64, error: &str, retryable: bool) -> Result<FailOutcome>;
            fn release(&self, id: JobId, token: i64) -> Result<()>;
            fn release_for(&self, id: JobId, token: i64, after: Duration, note: &str) -> Result<()>;
            fn cancelled(&self, id: JobId, token: i64, reason: &str) -> Result<()>;
            fn set_progress(&self, id: JobId, token: i64, progress: &Progress) -> Result<()>;
            fn reap(&self) -> Result<ReapReport>;
            // Remote workers' acknowledgements.
            fn ack_and_claim(&self, acks: &[(JobId, i64, Ack)], worker: &str, claims: &[(&str, usize)], most: usize, lease: Duration) -> Result<(Vec<AckOutcome>, Vec<ClaimedJob>)>;
            fn claimable(&self, queues: &[&str]) -> Result<bool>;
            fn heartbeat_held(&self, held: &[(JobId, i64)], lease: Duration) -> Result<Vec<HeldTry>>;
            // Control.
            fn cancel(&self, id: JobId) -> Result<CancelOutcome>;
            fn retry(&self, id: JobId) -> Result<()>;
            fn retry_matching(&self, selection: &JobSelection) -> Result<RetryReport>;
            fn cancel_matching(&self, selection: &JobSelection) -> Result<CancelReport>;
            fn count_retryable(&self, selection: &JobSelection) -> Result<usize>;
            fn count_cancellable(&self, selection: &JobSelection) -> Result<CancelReport>;
            // Reads.
            fn get(&self, id: JobId) -> Result<JobInfo>;
            fn list(&self, filter: &ListFilter) -> Result<Vec<JobSummary>>;
            fn stats(&self) -> Result<Stats>;
            fn stats_recent(&self) -> Result<Stats>;
            fn try_totals(&self, stats: &Stats) -> Result<TryTotals>;
            fn rollups(&self, since_minute: i64) -> Result<Vec<Rollup>>;
            fn rollup_totals(&self) -> Result<Vec<Rollup>>;
            // Queues.
            fn pause(&self, queue: &str) -> Result<()>;
            fn resume(&self, queue: &str) -> Result<()>;
            fn knows_queue(&self, queue: &str) -> Result<bool>;
            fn set_concurrency(&self, queue: &str, limit: Option<i64>) -> Result<()>;
            // The worker registry.
            fn live_workers(&self) -> Result<i64>;
            fn live_work(&self) -> Result<LiveWork>;
            fn workers(&self) -> Result<Vec<WorkerInfo>>;
            fn register_worker(&self, worker: &str, host: &str, pid: u32, queues: &[&str], kinds: &[&str]) -> Result<()>;
            fn worker_heartbeat(&self, worker: &str) -> Result<()>;
            fn deregister_worker(&self, worker: &str) -> Result<()>;
            // API tokens.
            fn add_api_token(&self, name: &str, role: Role, sha256: &[u8; 32]) -> Result<()>;
            fn api_token(&self, sha256: &[u8; 32]) -> Result<Option<(String, Role)>>;
            fn api_tokens(&self) -> Result<Vec<TokenInfo>>;
            fn revoke_api_token(&self, name: &str) -> Result<bool>;
            // Retention and upkeep.
            fn purge(&self, older_than: Duration, queue: Option<&str>) -> Result<usize>;
            fn delete(&self, id: JobId) -> Result<JobState>;
            fn purge_progress(&self, cutoff: Millis) -> Result<usize>;
            fn purge_rollups(&self, cutoff: Millis) -> Result<usize>;
            fn purge_fires(&self, cutoff: Millis) -> Result<usize>;
            fn optimize(&self) -> Result<()>;
            fn checkpoint(&self) -> Result<()>;
            fn integrity_check(&self) -> Result<()>;
            fn quick_check(&self) -> Result<String>;
            // State kept beside the queue by libraries built on jobd.
            fn state_get(&self, key: &str) -> Result<Option<StateEntry>>;
            fn state_put(&self, key: &str, value: &str, expires_at: Option<Millis>) -> Result<()>;
            fn state_purge(&self, prefix: &str, now: Millis) -> Result<usize>;
            fn state_swap(&self, key: &str, expected: Option<&str>, value: &str, job: Option<&NewJob>) -> Result<Swap>;
            fn dead_since(&self, after: (Millis, JobId), until: Millis) -> Result<Vec<JobSummary>>;
            // Schedules and their fired ticks.
            fn add_schedule(&self, schedule: &NewSchedule) -> Result<ScheduleInfo>;
            fn replace_schedule(&self, schedule: &NewSchedule) -> Result<ScheduleInfo>;
            fn schedule(&self, name: &str) -> Result<ScheduleInfo>;
            fn schedules(&self) -> Result<Vec<ScheduleInfo>>;
            fn schedule_fires(&self, name: &str, limit: usize) -> Result<Vec<FireRecord>>;
            fn remove_schedule(&self, name: &str) -> Result<()>;
            fn pause_schedule(&self, name: &str) -> Result<()>;
            fn resume_schedule(&self, name: &str) -> Result<()>;
            fn run_schedule_now(&self, name: &str) -> Result<JobId>;
            fn install_schedules_once(&self, key: &str, schedules: &[NewSchedule], again: bool) -> Result<Vec<String>>;
            fn next_schedule_tick(&self) -> Result<Option<Millis>>;
            fn fire_due_schedules(&self, grace: Duration) -> Result<FireReport>;
            // The handle itself.
            fn options(&self) -> &StoreOptions;
            fn signals(&self) -> &Signals;
            fn sqlite(&self) -> Option<&SqliteStore>;
            fn location(&self) -> String;
            fn watch_commits(&self, idle_poll: Duration, busy_poll: Option<Duration>, waiting: bool, notify: CommitNotify) -> Box<dyn CommitWatcher>;
        }
    };
}

macro_rules! define_backend {
    ([] $( fn $name:ident(&self $(, $arg:ident: $argty:ty)* $(,)?) -> $ret:ty; )*) => {
        /// The operations of a store (see the module doc of `jobd::store::backend`).  Each is
        /// documented on [`SqliteStore`](super::SqliteStore); the PostgreSQL
        /// backend keeps the same contract, and the conformance suite
        /// (`tests/store`) holds both to it.
        pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
            $( #[allow(missing_docs)] fn $name(&self $(, $arg: $argty)*) -> $ret; )*

            /// Lease up to `limit` ready jobs from `queues` to `worker` for
            /// `lease`.  Queues are served in the order given until `limit`
            /// jobs are claimed; within a queue, by priority (lower first),
            /// then run_at, then id.  Paused queues are skipped.  One
            /// transaction (a turn without completions).
            fn claim(
                &self,
                worker: &str,
                queues: &[&str],
                limit: usize,
                lease: Duration,
            ) -> Result<Vec<ClaimedJob>> {
                if worker.is_empty() {
                    return Err(Error::invalid("worker", "must not be empty"));
                }
                let wants: Vec<(&str, usize)> = queues.iter().map(|q| (*q, limit)).collect();
                let (_, claimed) = self.exchange(&[], worker, &wants, limit, lease)?;
                Ok(claimed)
            }

            /// Complete `done` (`(id, lease token, result)`, as
            /// [`Backend::complete_many`]) and claim the next jobs for
            /// `worker`, in one transaction: up to each queue's count in
            /// `claims`, queues served in order, at most `most` in all (as
            /// [`Backend::claim`]).  A worker's whole turn at the queue in one
            /// commit.  The completions go first, so a queue with a
            /// concurrency limit counts the finished jobs' room.
            fn complete_and_claim(
                &self,
                done: &[(JobId, i64, Option<serde_json::Value>)],
                worker: &str,
                claims: &[(&str, usize)],
                most: usize,
                lease: Duration,
            ) -> Result<(CompleteBatch, Vec<ClaimedJob>)> {
                let done: Vec<Done> = done
                    .iter()
                    .map(|(id, token, r)| Done {
                        id: *id,
                        token: *token,
                        result: r.as_ref().map(|v| v.to_string()),
                    })
                    .collect();
                self.exchange(&done, worker, claims, most, lease)
            }

            /// Complete many tries in one transaction.  A job whose lease was
            /// lost is skipped (its result discarded) and reported in
            /// [`CompleteBatch::lost`].
            fn complete_many(
                &self,
                done: &[(JobId, i64, Option<serde_json::Value>)],
            ) -> Result<CompleteBatch> {
                let (batch, _) = self.complete_and_claim(done, "", &[], 0, Duration::ZERO)?;
                Ok(batch)
            }
        }
    };
}

/// `impl Backend for $ty` forwarding every method of the seam to the
/// inherent method of the same name.
macro_rules! forward_backend {
    ([$ty:ty] $( fn $name:ident(&self $(, $arg:ident: $argty:ty)* $(,)?) -> $ret:ty; )*) => {
        impl $crate::store::Backend for $ty {
            $( fn $name(&self $(, $arg: $argty)*) -> $ret { <$ty>::$name(self $(, $arg)*) } )*
        }
    };
}

with_backend_methods!(define_backend![]);
with_backend_methods!(forward_backend![SqliteStore]);
with_backend_methods!(forward_backend![PgStore]);
