//! The worker runtime: runs jobs from a [`Store`] with registered handlers.
//!
//! ```no_run
//! # use jobd::worker::{Handler, JobContext, JobError, Worker};
//! # #[derive(Default)] struct GeneratePdf;
//! # impl Handler for GeneratePdf { const KIND: &'static str = "pdf"; type Payload = (); type Output = ();
//! #   async fn run(&self, _: JobContext, _: ()) -> Result<(), JobError> { Ok(()) } }
//! # async fn demo(store: jobd::Store) -> jobd::Result<()> {
//! let report = Worker::builder(store)
//!     .handler::<GeneratePdf>()
//!     .queue("pdf", 2)
//!     .queue("email", 5)
//!     .run(jobd::worker::shutdown_signal())
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! How it runs:
//! * **The exchange** — one thread of the worker's own is its only frequent
//!   writer.  Each turn commits, in one transaction, the completions that
//!   queued up since the last turn and claims, per queue, up to that queue's
//!   free slots (bounded by the global cap too): one commit a turn, however
//!   many jobs end and start in it — with `synchronous = FULL`, one `fsync`.
//!   A turn starts as soon as a run ends or a slot frees, not when every
//!   slot is free.  When nothing is claimable it sleeps until the earliest
//!   `run_at` of a delayed job, or until woken: by an enqueue in this process
//!   (at once), by a commit from another process (an inotify watch on the
//!   WAL while idle, `PRAGMA data_version` every `poll_interval` where there
//!   is none), or by a slot coming free.
//! * **Runs** — the exchange polls each new run once, inside the runtime the
//!   worker was started on; a run that has to wait (I/O, a timer, blocking
//!   work) goes on as a task of that runtime, one that finishes at once
//!   costs no task at all.  What a handler computes before its first
//!   `.await` so runs on the exchange thread and holds up the worker's claims
//!   meanwhile: put CPU work in [`JobContext::blocking`].  A kind whose first
//!   polls take over 500 µs three times in a row starts its runs as tasks
//!   from then on.  Every run is inside a span with `job_id`,
//!   `queue`, `kind` and `attempt`.  A run past its timeout is
//!   told to stop (its cancellation signal fires, which blocking work must
//!   check), keeps its slot for up to `stop_grace` while it returns, and
//!   fails its try ("timed out after …"); a panic fails its try
//!   with the panic message; an unknown kind or an undecodable payload fails
//!   the job for good (`dead`).  Work started with
//!   [`JobContext::blocking`] that ignores the signal cannot be stopped from
//!   outside: the try still ends in the queue, and the slot stays taken until
//!   that work returns (so a queue's concurrency bounds its threads).
//! * **Leases** — one heartbeat task extends every lease of the process in
//!   one statement.  A lease found lost stops the run and discards its
//!   result; a cancel request stops it and marks the job cancelled.
//! * **Reaping** — every worker process reaps expired leases now and then,
//!   so jobs of crashed workers come back without an operator.
//! * **Shutdown** — when the `shutdown` future resolves the worker stops
//!   claiming, lets running jobs finish within `shutdown_grace`, then stops
//!   the rest and releases their leases so another worker takes them at once.
//!   Blocking work still going on is left to the process exit and counted in
//!   [`WorkerReport::abandoned`]; a runtime dropped the usual way would wait
//!   for it, so end yours with `Runtime::shutdown_timeout`.  A worker future
//!   dropped instead of stopped stops the same way, in the background.

mod blocking;
mod catalog;
mod context;
mod exchange;
mod handler;
mod heartbeat;
mod reap;
mod runtime;
pub(crate) mod watcher;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use blocking::{run_blocking, Report, Reporter};
pub use catalog::{Catalog, Checker};
pub use context::JobContext;
pub use handler::{Handler, JobError};
pub use runtime::WorkerReport;
pub use watcher::{CommitNotify, CommitWait, CommitWatch, CommitWatcher};

use crate::error::{Error, Result};
use crate::store::{validate_name, Store};
use handler::{ErasedHandler, FnHandler, Typed};

/// Entry point: `Worker::builder(store)`.
pub struct Worker;

impl Worker {
    pub fn builder(store: Store) -> WorkerBuilder {
        WorkerBuilder {
            store,
            handlers: HashMap::new(),
            queues: Vec::new(),
            max_concurrency: None,
            name: None,
            opts: WorkerOptions::default(),
        }
    }
}

/// Timing knobs of a worker.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Lease given at each claim and on each heartbeat.
    pub lease: Duration,
    /// How often leases are extended (and cancel requests noticed).
    pub heartbeat_interval: Duration,
    /// How often another process's commits are looked for while idle.
    pub poll_interval: Duration,
    /// How often expired leases are reaped.
    pub reap_interval: Duration,
    /// How long running jobs may take to finish after shutdown is asked.
    pub shutdown_grace: Duration,
    /// How long a run has to return by itself once told to stop (cancel,
    /// lost lease, timeout, shutdown) before it is dropped.
    pub stop_grace: Duration,
    /// Timeout for jobs that have none of their own.
    pub default_timeout: Option<Duration>,
    /// Most jobs claimed in one statement.
    pub claim_batch: usize,
    /// Most completions committed in one transaction.
    pub complete_batch: usize,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            lease: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(2),
            poll_interval: Duration::from_millis(5),
            reap_interval: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            stop_grace: Duration::from_secs(1),
            default_timeout: None,
            claim_batch: 256,
            complete_batch: 512,
        }
    }
}

/// Builds a worker: handlers, queues and their concurrency, timings.
pub struct WorkerBuilder {
    store: Store,
    handlers: HashMap<String, Arc<dyn ErasedHandler>>,
    queues: Vec<(String, usize)>,
    max_concurrency: Option<usize>,
    name: Option<String>,
    opts: WorkerOptions,
}

impl WorkerBuilder {
    /// Register a handler that has a `Default` value.
    pub fn handler<H: Handler + Default>(self) -> Self {
        self.register(H::default())
    }

    /// Register a handler value (one carrying configuration).
    pub fn register<H: Handler>(mut self, handler: H) -> Self {
        self.handlers
            .insert(H::KIND.to_string(), Arc::new(Typed(Arc::new(handler))));
        self
    }

    /// Register a closure over the raw JSON payload for `kind`.
    pub fn handle_fn<F, Fut>(mut self, kind: &str, f: F) -> Self
    where
        F: Fn(JobContext, serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<serde_json::Value, JobError>> + Send + 'static,
    {
        self.handlers
            .insert(kind.to_string(), Arc::new(FnHandler(f)));
        self
    }

    /// The queues and kinds of this worker as it stands, with each kind's
    /// payload check: what to check a job against before enqueueing it.
    pub fn catalog(&self) -> Catalog {
        Catalog::new(
            self.queues.iter().map(|(q, _)| q.clone()),
            self.handlers
                .iter()
                .map(|(k, h)| (k.clone(), h.clone()))
                .collect(),
        )
    }

    /// Forget the queues added so far (to set them afresh from configuration).
    pub fn clear_queues(mut self) -> Self {
        self.queues.clear();
        self
    }

    /// The queues added so far, in order.
    pub fn queue_names(&self) -> Vec<String> {
        self.queues.iter().map(|(q, _)| q.clone()).collect()
    }

    /// Serve `queue`, running at most `concurrency` of its jobs at once.
    /// Queues are served in the order they are added.
    pub fn queue(mut self, queue: &str, concurrency: usize) -> Self {
        self.queues.push((queue.to_string(), concurrency));
        self
    }

    /// Cap on jobs running at once across all queues (default: the sum of
    /// the queues' limits).
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = Some(n);
        self
    }

    /// This worker's name in `workers` and on leases (default:
    /// `host:pid:random`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    pub fn options(mut self, opts: WorkerOptions) -> Self {
        self.opts = opts;
        self
    }

    pub fn lease(mut self, lease: Duration) -> Self {
        self.opts.lease = lease;
        self
    }

    pub fn heartbeat_interval(mut self, every: Duration) -> Self {
        self.opts.heartbeat_interval = every;
        self
    }

    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.opts.poll_interval = every;
        self
    }

    pub fn reap_interval(mut self, every: Duration) -> Self {
        self.opts.reap_interval = every;
        self
    }

    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.opts.shutdown_grace = grace;
        self
    }

    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.opts.default_timeout = Some(timeout);
        self
    }

    /// Check the configuration and run until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<WorkerReport> {
        let config = self.build()?;
        runtime::run(config, shutdown).await
    }

    fn build(self) -> Result<runtime::Config> {
        if self.queues.is_empty() {
            return Err(Error::invalid(
                "queues",
                "a worker needs at least one queue",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (queue, concurrency) in &self.queues {
            validate_name("queue", queue)?;
            if *concurrency == 0 {
                return Err(Error::invalid(
                    "concurrency",
                    format!("queue '{queue}' needs a concurrency of at least 1"),
                ));
            }
            if !seen.insert(queue.as_str()) {
                return Err(Error::invalid(
                    "queues",
                    format!("queue '{queue}' is listed twice"),
                ));
            }
        }
        for kind in self.handlers.keys() {
            validate_name("job kind", kind)?;
        }
        let total: usize = self.queues.iter().map(|(_, c)| c).sum();
        let global = self.max_concurrency.unwrap_or(total);
        if global == 0 {
            return Err(Error::invalid("max_concurrency", "must be at least 1"));
        }
        let o = &self.opts;
        if o.lease < Duration::from_millis(100) {
            return Err(Error::invalid("lease", "must be at least 100 ms"));
        }
        if o.heartbeat_interval.is_zero() || o.heartbeat_interval * 2 > o.lease {
            return Err(Error::invalid(
                "heartbeat_interval",
                format!(
                    "{:?} must be more than zero and at most half the lease ({:?})",
                    o.heartbeat_interval, o.lease
                ),
            ));
        }
        for (field, d) in [
            ("poll_interval", o.poll_interval),
            ("reap_interval", o.reap_interval),
        ] {
            if d.is_zero() {
                return Err(Error::invalid(field, "must be more than zero"));
            }
        }
        if o.claim_batch == 0 || o.complete_batch == 0 {
            return Err(Error::invalid("batch sizes", "must be at least 1"));
        }
        let name = match self.name {
            Some(n) if n.is_empty() => return Err(Error::invalid("name", "must not be empty")),
            Some(n) => n,
            None => default_name(),
        };
        Ok(runtime::Config {
            store: self.store,
            handlers: self.handlers,
            queues: self.queues,
            global,
            name,
            opts: self.opts,
        })
    }
}

fn default_name() -> String {
    let host = host_name();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{host}:{}:{nonce:08x}", std::process::id())
}

/// The host a worker says it runs on: `$JOBD_HOST` when set (a container's
/// host name says little), else the system's host name.
pub(crate) fn host_name() -> String {
    if let Some(host) = std::env::var("JOBD_HOST").ok().filter(|h| !h.is_empty()) {
        return host;
    }
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM: the daemon's shutdown signal.
///
/// The handlers are installed when this is called (inside a tokio runtime),
/// not when the future is first polled, so a signal arriving while the worker
/// is busy starting up is not lost — nor does it kill the process outright.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
