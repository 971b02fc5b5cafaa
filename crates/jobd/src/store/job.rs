//! The types jobs are made of: what goes in (`NewJob`), what a worker gets
//! (`ClaimedJob`) and what anyone can read back (`JobInfo`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::{duration_ms, Millis};
use crate::error::{Error, Result};
use crate::store::notify::{self, Notify};

/// A job's id: the rowid in `jobs`.
pub type JobId = i64;

/// Where a job is in its life.  See the state machine in [`crate::store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its `run_at` (a delayed job, or a retry after a backoff).
    Scheduled,
    /// Due, waiting for a worker.
    Ready,
    /// Claimed by a worker holding a lease.
    Running,
    Succeeded,
    /// Out of attempts, or failed with a non-retryable error.
    Dead,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Scheduled,
        JobState::Ready,
        JobState::Running,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Ready => "ready",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// True once the job will not run again by itself.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = Error;
    fn from_str(s: &str) -> Result<JobState> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "state",
                    format!(
                        "{s:?} is not one of scheduled, ready, running, succeeded, dead, cancelled"
                    ),
                )
            })
    }
}

/// Exponential backoff between tries: `base * 2^(attempt-1)`, capped at `max`,
/// with ±25% jitter derived from the job id and attempt (so retries of many
/// jobs failing together spread out, and a test can predict the bounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    pub base_ms: i64,
    pub max_ms: i64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base_ms: 1_000,
            max_ms: 3_600_000,
        }
    }
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base_ms: duration_ms(base),
            max_ms: duration_ms(max),
        }
    }

    /// The delay before the try after `attempt` (1-based) failed, without jitter.
    pub fn nominal_ms(&self, attempt: i64) -> i64 {
        let shift = (attempt - 1).clamp(0, 62) as u32;
        self.base_ms
            .saturating_mul(1i64.checked_shl(shift).unwrap_or(i64::MAX))
            .min(self.max_ms)
    }

    /// The delay with jitter: within [0.75, 1.25) of nominal, never above `max`.
    pub fn delay_ms(&self, job_id: JobId, attempt: i64) -> i64 {
        let nominal = self.nominal_ms(attempt);
        let r = splitmix64((job_id as u64) ^ ((attempt as u64) << 40));
        let unit = (r >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
        let jittered = (nominal as f64 * (0.75 + 0.5 * unit)) as i64;
        jittered.min(self.max_ms)
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// When a new job may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAt {
    Now,
    At(Millis),
    After(Duration),
}

/// A job to enqueue.  Built with [`NewJob::new`] and chained setters; checked
/// when enqueued (a bad field is an [`Error::InvalidInput`] and writes nothing).
#[derive(Debug, Clone)]
pub struct NewJob {
    pub(crate) queue: String,
    pub(crate) kind: String,
    pub(crate) payload: std::result::Result<String, String>,
    pub(crate) priority: i64,
    pub(crate) run_at: RunAt,
    pub(crate) max_attempts: i64,
    pub(crate) backoff: Backoff,
    pub(crate) timeout: Option<Duration>,
    pub(crate) unique_key: Option<String>,
    pub(crate) tenant: Option<String>,
    pub(crate) notify: Vec<Notify>,
}

impl NewJob {
    /// A job of `kind` on `queue`, payload `{}`, priority 0, due now, 3 attempts.
    pub fn new(queue: impl Into<String>, kind: impl Into<String>) -> NewJob {
        NewJob {
            queue: queue.into(),
            kind: kind.into(),
            payload: Ok("{}".to_string()),
            priority: 0,
            run_at: RunAt::Now,
            max_attempts: 3,
            backoff: Backoff::default(),
            timeout: None,
            unique_key: None,
            tenant: None,
            notify: Vec::new(),
        }
    }

    /// The payload, serialized as JSON.
    pub fn payload(mut self, payload: &impl Serialize) -> NewJob {
        self.payload = serde_json::to_string(payload).map_err(|e| e.to_string());
        self
    }

    /// The payload as JSON text; checked to be JSON at enqueue.
    pub fn payload_json(mut self, json: impl Into<String>) -> NewJob {
        let json = json.into();
        self.payload = match crate::store::json::check(&json) {
            Ok(_) => Ok(json),
            Err(e) => Err(format!("not valid JSON: {e}")),
        };
        self
    }

    /// Lower runs first; may be negative.  Default 0.
    pub fn priority(mut self, priority: i64) -> NewJob {
        self.priority = priority;
        self
    }

    /// Not before this time (ms since the epoch).
    pub fn run_at(mut self, at: Millis) -> NewJob {
        self.run_at = RunAt::At(at);
        self
    }

    /// Not before `delay` from now.
    pub fn delay(mut self, delay: Duration) -> NewJob {
        self.run_at = RunAt::After(delay);
        self
    }

    /// Tries before the job is dead (at least 1).  Default 3.
    pub fn max_attempts(mut self, n: i64) -> NewJob {
        self.max_attempts = n;
        self
    }

    pub fn backoff(mut self, backoff: Backoff) -> NewJob {
        self.backoff = backoff;
        self
    }

    /// How long one try may run before the runtime stops it.
    pub fn timeout(mut self, timeout: Duration) -> NewJob {
        self.timeout = Some(timeout);
        self
    }

    /// While a job with this key is scheduled, ready or running, enqueueing
    /// another returns the existing job's id.
    pub fn unique_key(mut self, key: impl Into<String>) -> NewJob {
        self.unique_key = Some(key.into());
        self
    }

    pub fn tenant(mut self, tenant: impl Into<String>) -> NewJob {
        self.tenant = Some(tenant.into());
        self
    }

    /// Notifications when the job ends (see [`crate::store::notify`]);
    /// checked at enqueue.
    pub fn notify(mut self, list: Vec<Notify>) -> NewJob {
        self.notify = list;
        self
    }

    pub fn queue_name(&self) -> &str {
        &self.queue
    }

    pub fn kind_name(&self) -> &str {
        &self.kind
    }

    /// Check every field; `max_payload` is the payload size limit in bytes.
    pub(crate) fn validate(&self, max_payload: usize) -> Result<&str> {
        validate_name("queue", &self.queue)?;
        validate_name("kind", &self.kind)?;
        let payload = self
            .payload
            .as_deref()
            .map_err(|e| Error::invalid("payload", e.clone()))?;
        if payload.len() > max_payload {
            return Err(Error::invalid(
                "payload",
                format!(
                    "{} bytes is over the limit of {max_payload} bytes",
                    payload.len()
                ),
            ));
        }
        if !(1..=10_000).contains(&self.max_attempts) {
            return Err(Error::invalid(
                "max_attempts",
                format!("{} is not between 1 and 10000", self.max_attempts),
            ));
        }
        if !(i32::MIN as i64..=i32::MAX as i64).contains(&self.priority) {
            return Err(Error::invalid(
                "priority",
                format!("{} is out of the 32-bit range", self.priority),
            ));
        }
        let b = self.backoff;
        if b.base_ms < 0 || b.max_ms < b.base_ms {
            return Err(Error::invalid(
                "backoff",
                format!(
                    "base {} ms and max {} ms: need 0 <= base <= max",
                    b.base_ms, b.max_ms
                ),
            ));
        }
        if let Some(t) = self.timeout {
            if t.is_zero() {
                return Err(Error::invalid("timeout", "must be more than zero"));
            }
        }
        if let Some(key) = &self.unique_key {
            if key.is_empty() || key.len() > 256 {
                return Err(Error::invalid("unique_key", "must be 1 to 256 bytes"));
            }
        }
        if let Some(tenant) = &self.tenant {
            validate_tenant(tenant)?;
        }
        if !self.notify.is_empty() {
            notify::stored_list(&self.notify)?;
        }
        Ok(payload)
    }
}

/// Queue and kind names: 1–128 characters of `A-Z a-z 0-9 _ - . : /`.
pub fn validate_name(field: &'static str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if name.len() > 128 {
        return Err(Error::invalid(
            field,
            format!("{} bytes is longer than 128", name.len()),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_-.:/".contains(*c)))
    {
        return Err(Error::invalid(
            field,
            format!("{name:?} contains {c:?}; use letters, digits and _ - . : /"),
        ));
    }
    Ok(())
}

/// Tenant names double as file names: 1–128 characters of `A-Z a-z 0-9 _ - .`,
/// not starting with a dot (so never `.` or `..`).
pub fn validate_tenant(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 128 {
        return Err(Error::invalid("tenant", "must be 1 to 128 bytes"));
    }
    if name.starts_with('.') {
        return Err(Error::invalid(
            "tenant",
            format!("{name:?} starts with a dot"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_-.".contains(*c)))
    {
        return Err(Error::invalid(
            "tenant",
            format!("{name:?} contains {c:?}; use letters, digits and _ - ."),
        ));
    }
    Ok(())
}

/// A job handed to a worker by [`Backend::claim`](crate::store::Backend::claim)(crate::store::Backend::claim).
#[derive(Debug, Clone, Serialize)]
pub struct ClaimedJob {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    /// The payload, as JSON text.
    pub payload: String,
    pub priority: i64,
    /// This try's number, from 1.
    pub attempt: i64,
    /// The attempt number after which the job is out of tries.
    pub attempt_limit: i64,
    pub timeout: Option<Duration>,
    pub tenant: Option<String>,
    /// Fencing token: pass it to every call about this try.
    pub lease_token: i64,
    pub lease_expires_at: Millis,
    /// When this try started (the claim's time).
    pub started_at: Millis,
    /// When the job was due (its queue wait ran from here to `started_at`),
    /// where the claim read it: on PostgreSQL always, on SQLite for a sample
    /// of claims (one per queue every
    /// [`WAIT_SAMPLE_EVERY`](crate::store::rollup::WAIT_SAMPLE_EVERY)).
    pub due_at: Option<Millis>,
}

/// A try that succeeded, for [`Backend::exchange`](crate::store::Backend::exchange):
/// the result as JSON text (`None`: nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    pub id: JobId,
    pub token: i64,
    pub result: Option<String>,
}

/// A progress report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// 0 to 100.
    pub percent: Option<f64>,
    pub stage: Option<String>,
    pub detail: Option<String>,
}

/// One finished try of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptInfo {
    pub attempt: i64,
    pub worker: Option<String>,
    pub started_at: Millis,
    pub finished_at: Millis,
    /// succeeded, failed, lost, cancelled or released.
    pub outcome: String,
    pub error: Option<String>,
}

/// Everything known about a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobInfo {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    pub state: JobState,
    pub payload: serde_json::Value,
    pub priority: i64,
    pub run_at: Millis,
    pub attempts: i64,
    pub max_attempts: i64,
    pub attempt_limit: i64,
    pub backoff: Backoff,
    pub timeout_ms: Option<i64>,
    pub unique_key: Option<String>,
    pub tenant: Option<String>,
    pub worker: Option<String>,
    pub lease_expires_at: Option<Millis>,
    pub cancel_requested: bool,
    pub progress: Progress,
    pub result: Option<serde_json::Value>,
    pub last_error: Option<String>,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    /// Notifications when it ends.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Notify>,
    /// Finished tries, oldest first (the running try is on the job itself).
    pub attempt_log: Vec<AttemptInfo>,
    /// The progress reports kept (the latest [`PROGRESS_LOG_KEPT`] at most),
    /// oldest first.
    pub progress_log: Vec<ProgressEntry>,
}

/// How many of a job's latest progress reports [`Store::get`](crate::store::Backend::get) returns.
pub const PROGRESS_LOG_KEPT: i64 = 200;

/// What [`Store::fail`](crate::store::Backend::fail) did with the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum FailOutcome {
    /// Scheduled to run again at this time.
    Retrying { run_at: Millis },
    /// Out of tries or not retryable.
    Dead,
    /// Cancellation had been requested; the job is cancelled.
    Cancelled,
}

/// What [`Store::cancel`](crate::store::Backend::cancel) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcome {
    /// The job was waiting and is now cancelled.
    Cancelled,
    /// The job is running; its worker is asked to stop (it sees the flag as
    /// soon as it notices the commit) and the job ends `cancelled`.
    Requested,
    /// The job was already cancelled.
    AlreadyCancelled,
}

/// What a [`Store::reap`](crate::store::Backend::reap) sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReapReport {
    /// Jobs whose lease expired and that went back to `ready`.
    pub requeued: Vec<JobId>,
    /// Jobs whose lease expired on their last try, now `dead`.
    pub dead: Vec<JobId>,
    /// Jobs whose lease expired after a cancel request, now `cancelled`.
    pub cancelled: Vec<JobId>,
    /// Running jobs past their timeout (by more than the reap's grace) that
    /// their worker had not ended: failed as timed out (retried while tries
    /// remain), whatever becomes of them after.
    pub timed_out: Vec<JobId>,
}

impl ReapReport {
    pub fn total(&self) -> usize {
        self.requeued.len() + self.dead.len() + self.cancelled.len() + self.timed_out.len()
    }
}

/// A heartbeat's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Heartbeat {
    pub lease_expires_at: Millis,
    /// Someone asked for this job to be cancelled: stop and call
    /// [`Store::cancelled`](crate::store::Backend::cancelled).
    pub cancel_requested: bool,
}

/// Filters for [`Store::list`](crate::store::Backend::list).  Newest first.  As
/// JSON or a query string, `error` stands for `error_contains`; unknown
/// fields are refused.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListFilter {
    pub queue: Option<String>,
    pub state: Option<JobState>,
    pub kind: Option<String>,
    pub tenant: Option<String>,
    /// Only jobs whose last error contains this text (ASCII letters in any case).
    #[serde(alias = "error")]
    pub error_contains: Option<String>,
    /// Only jobs with a smaller id (for paging).
    pub before_id: Option<JobId>,
    /// Only jobs with a larger id (a window of the jobs to search).
    pub after_id: Option<JobId>,
    /// At most this many (default 100, at most 10,000).
    pub limit: Option<i64>,
    /// Only jobs whose payload holds a value at a path equal to a JSON
    /// value: `customer.id=42`, `items.0.sku="A-1"`, `to=ops@example.com` (a
    /// value that is not JSON is a string).  Path keys are letters, digits,
    /// `_` and `-`; an all-digit key indexes an array.  Walks the jobs from
    /// the newest back (narrow it with a queue, kind or state).
    pub payload: Option<String>,
}

/// A [`ListFilter::payload`] search, parsed: the path as segments and the
/// value as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadMatch {
    pub path: Vec<String>,
    pub value: String,
}

impl PayloadMatch {
    /// Parse `path=value` (see [`ListFilter::payload`]).
    pub fn parse(text: &str) -> crate::error::Result<PayloadMatch> {
        let bad =
            |why: &str| crate::error::Error::invalid("payload search", format!("{text:?}: {why}"));
        let (path, value) = text
            .split_once('=')
            .ok_or_else(|| bad("expected path=value, such as customer.id=42"))?;
        let path: Vec<String> = path.trim().split('.').map(str::to_string).collect();
        if path.len() > 16 {
            return Err(bad("a path of at most 16 keys"));
        }
        for key in &path {
            if key.is_empty()
                || key.len() > 128
                || !key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(bad(
                    "each key of the path is 1 to 128 letters, digits, '_' or '-', joined by '.'",
                ));
            }
        }
        let value = value.trim();
        let value = match serde_json::from_str::<serde_json::Value>(value) {
            Ok(v) if !v.is_null() => v.to_string(),
            Ok(_) => return Err(bad("null matches nothing; search for a value")),
            Err(_) => serde_json::Value::String(value.to_string()).to_string(),
        };
        Ok(PayloadMatch { path, value })
    }

    /// The path as SQLite's JSON path: `$.customer.id`, `$.items[0]`.
    pub fn sqlite_path(&self) -> String {
        let mut p = String::from("$");
        for key in &self.path {
            if key.bytes().all(|b| b.is_ascii_digit()) {
                p.push('[');
                p.push_str(key);
                p.push(']');
            } else {
                p.push('.');
                p.push_str(key);
            }
        }
        p
    }
}

/// One progress report of a job, from its log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgressEntry {
    pub attempt: i64,
    pub at: Millis,
    pub percent: Option<f64>,
    pub stage: Option<String>,
    pub detail: Option<String>,
}

/// The jobs a bulk [`Store::retry_matching`](crate::store::Backend::retry_matching)
/// or [`Store::cancel_matching`](crate::store::Backend::cancel_matching) acts on:
/// every job matching all the fields that are set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSelection {
    pub queue: Option<String>,
    pub kind: Option<String>,
    pub tenant: Option<String>,
    /// Only jobs whose last error contains this text (ASCII letters in any case).
    #[serde(alias = "error")]
    pub error_contains: Option<String>,
    /// Only jobs in this state; unset: every state the operation applies to
    /// (a retry: `dead`; a cancel: `scheduled`, `ready` and `running`).
    pub state: Option<JobState>,
}

/// What [`Store::retry_matching`](crate::store::Backend::retry_matching) did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetryReport {
    /// Jobs revived: ready now, with a fresh set of tries.
    pub retried: usize,
    /// Jobs left as they were because a waiting or running job holds their
    /// unique key (retry them once it has finished).
    pub key_taken: Vec<JobId>,
}

/// What [`Store::cancel_matching`](crate::store::Backend::cancel_matching) did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CancelReport {
    /// Waiting jobs (scheduled or ready) now cancelled.
    pub cancelled: usize,
    /// Running jobs asked to stop: each ends `cancelled` when its worker
    /// sees the request.
    pub requested: usize,
}

/// One line of [`Store::list`](crate::store::Backend::list).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobSummary {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    pub state: JobState,
    pub priority: i64,
    pub attempts: i64,
    pub attempt_limit: i64,
    pub tenant: Option<String>,
    pub progress_percent: Option<f64>,
    pub progress_stage: Option<String>,
    pub last_error: Option<String>,
    pub run_at: Millis,
    pub created_at: Millis,
    pub finished_at: Option<Millis>,
    /// When its current (or last) try started.
    pub started_at: Option<Millis>,
    /// The worker of its current (or last) try.
    pub worker: Option<String>,
}

/// Counts for one queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueStats {
    pub queue: String,
    pub paused: bool,
    pub concurrency: Option<i64>,
    pub scheduled: i64,
    pub ready: i64,
    pub running: i64,
    pub succeeded: i64,
    /// Run time of the succeeded jobs' winning tries, in ms (claim to complete).
    pub succeeded_run_ms: i64,
    /// Jobs that ever succeeded in this queue: those in the file plus those
    /// purged since (schema/0007).  A counter: it never goes down.
    pub succeeded_total: i64,
    /// Their run time, in ms: a counter too.
    pub succeeded_total_run_ms: i64,
    pub dead: i64,
    pub cancelled: i64,
    /// Jobs whose last try failed: dead ones plus those waiting to retry.
    pub failed: i64,
    /// Age of the oldest ready job, in ms (how far behind the queue is).
    pub oldest_ready_age_ms: Option<i64>,
}

impl QueueStats {
    /// A queue with nothing counted yet.
    pub(crate) fn named(queue: &str) -> QueueStats {
        QueueStats {
            queue: queue.to_string(),
            ..Default::default()
        }
    }
}

/// [`Store::stats`](crate::store::Backend::stats): per-queue counts and live workers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub queues: Vec<QueueStats>,
    /// Workers whose heartbeat is fresher than the liveness window.
    pub live_workers: i64,
    /// How old the finished counts (succeeded, dead, cancelled) are, in ms:
    /// 0 from [`Store::stats`](crate::store::Backend::stats); maybe more from
    /// [`Store::stats_recent`](crate::store::Backend::stats_recent).
    pub finished_age_ms: i64,
}

impl Stats {
    pub fn queue(&self, name: &str) -> Option<&QueueStats> {
        self.queues.iter().find(|q| q.queue == name)
    }
}

/// A job as JSON: what `jobd enqueue` reads (one per line) and what the HTTP
/// API takes.  The timing and uniqueness fields are left out when unset, so
/// the job half of a [`ScheduleSpec`](crate::scheduler::ScheduleSpec),
/// which refuses them, reads back what it wrote.  Unknown fields are refused, so a typo is an error, not a
/// silently ignored option.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub queue: String,
    pub kind: String,
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
    #[serde(default)]
    pub priority: Option<i64>,
    /// Not before this time, in ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<Millis>,
    /// Not before this many ms from now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    #[serde(default)]
    pub max_attempts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    #[serde(default)]
    pub tenant: Option<String>,
    /// Notifications when the job ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Vec<Notify>>,
}

impl JobSpec {
    /// Parse one JSON object; the error says what is wrong and where.
    pub fn from_json(text: &str) -> Result<JobSpec> {
        crate::store::json::check(text).map_err(|e| Error::invalid("job", e.to_string()))?;
        serde_json::from_str(text).map_err(|e| Error::invalid("job", e.to_string()))
    }

    pub fn into_new_job(self) -> Result<NewJob> {
        if self.run_at.is_some() && self.delay_ms.is_some() {
            return Err(Error::invalid(
                "run_at",
                "give run_at or delay_ms, not both",
            ));
        }
        let mut job = NewJob::new(self.queue, self.kind);
        if let Some(p) = self.payload {
            job = job.payload(&p);
        }
        if let Some(p) = self.priority {
            job = job.priority(p);
        }
        if let Some(at) = self.run_at {
            job = job.run_at(at);
        }
        if let Some(ms) = self.delay_ms {
            job = job.delay(Duration::from_millis(ms));
        }
        if let Some(n) = self.max_attempts {
            job = job.max_attempts(n);
        }
        if let Some(b) = self.backoff {
            job = job.backoff(b);
        }
        if let Some(ms) = self.timeout_ms {
            job = job.timeout(Duration::from_millis(ms));
        }
        if let Some(k) = self.unique_key {
            job = job.unique_key(k);
        }
        if let Some(t) = self.tenant {
            job = job.tenant(t);
        }
        if let Some(n) = self.notify {
            job = job.notify(n);
        }
        Ok(job)
    }
}
