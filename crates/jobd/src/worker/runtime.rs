//! The running worker: registration, and each run from claim to outcome.
//! The loops beside it have files of their own: the
//! [`exchange`](super::exchange) (claims and completions, one transaction a
//! turn), [`heartbeat`](super::heartbeat), [`reap`](super::reap) and the
//! [`watcher`](super::watcher) of commits.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::store::{ClaimedJob, JobId, Store, WorkHook};
use crate::worker::context::{Running, StopReason};
use crate::worker::exchange::{exchange_thread, Bell, Completion, RunGuard};
use crate::worker::handler::{ErasedHandler, RunFuture};
use crate::worker::heartbeat::heartbeat_loop;
use crate::worker::reap::reap_loop;
use crate::worker::watcher::watch_for_work;
use crate::worker::{JobContext, JobError, WorkerOptions};

pub(crate) struct Config {
    pub(crate) store: Store,
    pub(crate) handlers: HashMap<String, Arc<dyn ErasedHandler>>,
    pub(crate) queues: Vec<(String, usize)>,
    pub(crate) global: usize,
    pub(crate) name: String,
    pub(crate) opts: WorkerOptions,
}

/// What a worker did, returned when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerReport {
    pub worker: String,
    pub succeeded: u64,
    /// Tries that failed (to be retried, or dead).
    pub failed: u64,
    pub cancelled: u64,
    /// Jobs given back uncounted: runs stopped at shutdown (back to
    /// `ready`), and jobs of a kind this worker has no handler for, handed
    /// back for a live worker that has one.
    pub released: u64,
    /// Runs whose lease was lost: their results were discarded.
    pub lost: u64,
    /// Runs that ended (timed out, cancelled, lease lost, stopped at
    /// shutdown) while work they started with [`JobContext::blocking`]
    /// ignored the signal to stop and went on; each held its slot until
    /// that work returned.
    ///
    /// [`JobContext::blocking`]: crate::worker::JobContext::blocking
    pub overran: u64,
    /// Of those, runs whose blocking work had still not returned when the
    /// worker stopped.  Their threads go on in the blocking pool: a tokio
    /// runtime dropped now waits for them, so end it with
    /// `Runtime::shutdown_timeout` (jobd's own commands do).
    pub abandoned: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    succeeded: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    released: AtomicU64,
    lost: AtomicU64,
    overran: AtomicU64,
}

pub(super) struct Shared {
    pub(super) store: Store,
    pub(super) name: String,
    pub(super) opts: WorkerOptions,
    pub(super) handlers: HashMap<String, Arc<dyn ErasedHandler>>,
    /// Per kind: how its runs start (see [`FirstPoll`]).
    pub(super) first_polls: HashMap<String, FirstPoll>,
    pub(super) in_flight: Mutex<HashMap<JobId, Arc<Running>>>,
    /// Ended runs whose blocking work has not returned (their slots held).
    pub(super) overrunning: Mutex<HashMap<JobId, Arc<Running>>>,
    /// Wakes the exchange thread (see [`Bell`]).
    pub(super) bell: Arc<Bell>,
    /// Runs whose supervisor has not ended.
    pub(super) live_runs: std::sync::atomic::AtomicUsize,
    /// Cancelled when the worker starts shutting down: no more claims, so
    /// an overrunning run stops holding its slot.
    pub(super) stopping: CancellationToken,
    pub(super) counters: Counters,
}

/// Whether the runs of a kind get their first poll on the exchange thread.
///
/// A run polled there that computes for long before it first waits holds up
/// every claim and completion of the worker meanwhile, and runs one at a
/// time where tasks would run side by side.  So a kind whose first polls
/// take longer than [`FirstPoll::SLOW`] [`FirstPoll::TIMES`] times in a row
/// starts its runs as tasks from then on.
#[derive(Default)]
pub(super) struct FirstPoll {
    slow_in_a_row: std::sync::atomic::AtomicU32,
    as_tasks: std::sync::atomic::AtomicBool,
}

impl FirstPoll {
    pub(super) const SLOW: Duration = Duration::from_micros(500);
    pub(super) const TIMES: u32 = 3;

    pub(super) fn inline(&self) -> bool {
        !self.as_tasks.load(Ordering::Relaxed)
    }

    /// Note how long a first poll took; true when the kind's runs start as
    /// tasks from now on.
    pub(super) fn took(&self, took: Duration) -> bool {
        if took < Self::SLOW {
            self.slow_in_a_row.store(0, Ordering::Relaxed);
            return false;
        }
        self.slow_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 == Self::TIMES
            && !self.as_tasks.swap(true, Ordering::Relaxed)
    }
}

/// Tells the exchange thread to stop when dropped: a worker future dropped
/// before shutdown stops its thread like a shutdown does.
struct StopOnDrop(Arc<Bell>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Longest a worker without a handler for a job's kind holds it back.
const HAND_BACK_MAX: Duration = Duration::from_secs(60);

/// How a run ended, before deciding what to store.
enum Ended {
    Succeeded(serde_json::Value),
    Failed(JobError),
    /// Dropped after being told to stop.
    Stopped,
    /// Not run: this worker has no handler for the job's kind, and a live
    /// worker that serves its queue does.
    HandedBack,
}

pub(crate) async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<WorkerReport> {
    let Config {
        store,
        handlers,
        queues,
        global,
        name,
        opts,
    } = config;
    let queue_names: Vec<&str> = queues.iter().map(|(q, _)| q.as_str()).collect();
    tokio::pin!(shutdown);
    let registered = {
        let host = super::host_name();
        let qs: Vec<String> = queue_names.iter().map(|q| q.to_string()).collect();
        let mut kinds: Vec<String> = handlers.keys().cloned().collect();
        kinds.sort_unstable();
        register(&store, &name, host, qs, kinds, &mut shutdown).await?
    };
    if !registered {
        tracing::info!(worker = %name, "stopped before it could register");
        return Ok(WorkerReport {
            worker: name,
            ..WorkerReport::default()
        });
    }
    tracing::info!(worker = %name, queues = ?queue_names, global, "worker started");

    let bell = Arc::new(Bell::default());
    let shared = Arc::new(Shared {
        store: store.clone(),
        name: name.clone(),
        opts: opts.clone(),
        first_polls: handlers
            .keys()
            .map(|k| (k.clone(), FirstPoll::default()))
            .collect(),
        handlers,
        in_flight: Mutex::new(HashMap::new()),
        overrunning: Mutex::new(HashMap::new()),
        bell: bell.clone(),
        live_runs: std::sync::atomic::AtomicUsize::new(0),
        stopping: CancellationToken::new(),
        counters: Counters::default(),
    });
    // New work announced in this process (an enqueue, a retry scheduled, a
    // lease reaped, another process's commit seen by the watcher) wakes
    // the exchange thread directly.
    let on_work: WorkHook = {
        let bell = bell.clone();
        Arc::new(move || bell.work())
    };
    store.on_work(&on_work);
    let background = CancellationToken::new();
    // Subscribed here, not in the task: a cancel asked before the task first
    // runs must still wake it.
    let cancels = store.watch_cancels();
    let heartbeats = tokio::spawn(heartbeat_loop(shared.clone(), background.clone(), cancels));
    let reaper = tokio::spawn(reap_loop(shared.clone(), background.clone()));
    let watcher = watch_for_work(&store, opts.poll_interval);

    // Claims and completions on the exchange thread until shutdown, then
    // until every run has ended and its outcome is stored.  Should this
    // future be dropped instead, the thread is told to stop the same way.
    let stop_on_drop = StopOnDrop(bell.clone());
    let (ended, mut exchange_ended) = tokio::sync::oneshot::channel::<()>();
    {
        let (shared, handle) = (shared.clone(), tokio::runtime::Handle::current());
        let background = background.clone();
        std::thread::Builder::new()
            .name("jobd-exchange".into())
            .spawn(move || {
                exchange_thread(&shared, &handle, &queues, global, &*watcher);
                drop(watcher);
                // Every run has ended: no lease left to extend (also when
                // this future was dropped and nobody else stops them).
                background.cancel();
                let _ = ended.send(());
            })
            .map_err(|e| {
                Error::invalid(
                    "worker",
                    format!("could not start its exchange thread: {e}"),
                )
            })?;
    }
    let ended = tokio::select! {
        _ = &mut shutdown => {
            bell.stop();
            exchange_ended.await
        }
        ended = &mut exchange_ended => ended,
    };
    drop(stop_on_drop);
    drop(on_work);
    background.cancel();
    let _ = heartbeats.await;
    let _ = reaper.await;
    let counters = &shared.counters;
    let abandoned = shared
        .overrunning
        .lock()
        .unwrap()
        .values()
        .filter(|r| r.blocking_live() > 0)
        .count() as u64;
    if abandoned > 0 {
        tracing::warn!(
            worker = %name,
            abandoned,
            "blocking work of ended runs has not returned and cannot be stopped from outside; \
             a runtime dropped now waits for it (end it with Runtime::shutdown_timeout)"
        );
    }
    {
        let (store, worker) = (store.clone(), name.clone());
        if let Err(e) = blocking(move || store.deregister_worker(&worker)).await {
            tracing::warn!(worker = %name, error = %e, "could not deregister worker");
        }
    }
    let report = WorkerReport {
        worker: name.clone(),
        succeeded: counters.succeeded.load(Ordering::Relaxed),
        failed: counters.failed.load(Ordering::Relaxed),
        cancelled: counters.cancelled.load(Ordering::Relaxed),
        released: counters.released.load(Ordering::Relaxed),
        lost: counters.lost.load(Ordering::Relaxed),
        overran: counters.overran.load(Ordering::Relaxed),
        abandoned,
    };
    tracing::info!(worker = %name, ?report, "worker stopped");
    match ended {
        Ok(()) => Ok(report),
        // The thread went without saying it ended: it panicked (a bug).
        Err(_) => Err(Error::invalid(
            "worker",
            "its exchange thread stopped unexpectedly (it panicked; see the log above)",
        )),
    }
}

/// Register the worker, waiting out what may pass — a full disk, a lock
/// held too long, an I/O fault — with a warning every try, until it works
/// or `shutdown` comes (then `false`).  A daemon on a full disk so keeps
/// serving reads and its dashboard, and starts claiming once there is room.
async fn register(
    store: &Store,
    name: &str,
    host: String,
    queues: Vec<String>,
    kinds: Vec<String>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<bool> {
    let mut pause = Duration::from_millis(100);
    loop {
        let (store, worker, host) = (store.clone(), name.to_string(), host.clone());
        let (qs, ks) = (queues.clone(), kinds.clone());
        let tried = blocking(move || {
            let qs: Vec<&str> = qs.iter().map(String::as_str).collect();
            let ks: Vec<&str> = ks.iter().map(String::as_str).collect();
            store.register_worker(&worker, &host, std::process::id(), &qs, &ks)
        })
        .await;
        match tried {
            Ok(()) => return Ok(true),
            Err(e) if e.is_transient() => {
                tracing::warn!(worker = %name, error = %e, retry_in = ?pause, "could not register the worker; no jobs are claimed until it can");
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = shutdown.as_mut() => return Ok(false),
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Run one job and store how it ended.
pub(super) async fn supervise(
    shared: Arc<Shared>,
    job: ClaimedJob,
    running: Arc<Running>,
    permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    guard: RunGuard,
) {
    let span = running.span.clone();
    async move {
        let _guard = guard;
        let ended = execute(&shared, &job, &running).await;
        shared.in_flight.lock().unwrap().remove(&job.id);
        let reason = running.reason();
        let overran = running.blocking_live() > 0;
        if !overran {
            finish(&shared, &job, reason, ended, Some(permits)).await;
            return;
        }
        // Blocking work the run started ignored the signal to stop: the try
        // ends in the queue now, but the slot stays taken until that work
        // returns, so that threads computing for abandoned tries cannot
        // outnumber the slots (nor pile up until the process runs out).
        tracing::warn!(
            ?reason,
            threads = running.blocking_live(),
            "the run is over but its blocking work goes on (it does not check the \
             cancellation signal); its slot stays taken until that work returns"
        );
        shared.counters.overran.fetch_add(1, Ordering::Relaxed);
        shared
            .overrunning
            .lock()
            .unwrap()
            .insert(job.id, running.clone());
        finish(&shared, &job, reason, ended, None).await;
        tokio::select! {
            _ = running.blocking_returned() => {
                tracing::info!("the ended run's blocking work returned: slot free");
                shared.overrunning.lock().unwrap().remove(&job.id);
            }
            // Shutting down: no more claims, nothing to hold the slot for.
            _ = shared.stopping.cancelled() => {}
        }
        drop(permits);
        shared.bell.ring();
    }
    .instrument(span)
    .await
}

async fn execute(shared: &Shared, job: &ClaimedJob, running: &Arc<Running>) -> Ended {
    let Some(handler) = shared.handlers.get(&job.kind) else {
        // Workers with different handlers may serve one queue: leave the
        // job to one that runs its kind, if one is alive.
        let (store, queue, kind) = (shared.store.clone(), job.queue.clone(), job.kind.clone());
        match blocking(move || store.live_work().map(|w| w.runs(&queue, &kind))).await {
            Ok(true) => return Ended::HandedBack,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not read the live workers"),
        }
        return Ended::Failed(JobError::permanent(format!(
            "no handler for job kind '{}' in worker {} (it handles: {})",
            job.kind,
            shared.name,
            known_kinds(shared)
        )));
    };
    let ctx = JobContext::new(
        job.id,
        job.queue.clone(),
        job.kind.clone(),
        job.attempt,
        job.tenant.clone(),
        shared.store.clone(),
        running.clone(),
        tracing::Span::current(),
    );
    let future = match handler.start(ctx, &job.payload) {
        Ok(f) => f,
        Err(e) => return Ended::Failed(e),
    };
    tracing::debug!("run started");
    // Polled in this task (one task a run): a panic is caught here, and a
    // run that does not stop within its grace is dropped.
    let mut run = CatchUnwind(future);
    let timeout = job.timeout.or(shared.opts.default_timeout);
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        res = &mut run => joined(res),
        _ = deadline => {
            // Told to stop like a cancelled run, so that blocking work that
            // checks the signal stops too (dropping the future ends only the
            // async part: a thread of the blocking pool would go on computing
            // the abandoned try, beside its retry).  Whatever the handler
            // returns now, the try timed out.
            running.stop(StopReason::TimedOut);
            stop_within_grace(shared, &mut run).await;
            let t = timeout.unwrap_or_default();
            Ended::Failed(JobError::retryable(format!("timed out after {}", human(t))))
        }
        _ = running.cancel.cancelled() => {
            // Told to stop: give the handler a moment to return by itself.
            stop_within_grace(shared, &mut run).await.map_or(Ended::Stopped, joined)
        }
    }
}

/// A run's future with its panic caught, as a spawned task's would be.
struct CatchUnwind(RunFuture);

impl Future for CatchUnwind {
    type Output = std::thread::Result<std::result::Result<serde_json::Value, JobError>>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let future = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Err(panic) => std::task::Poll::Ready(Err(panic)),
        }
    }
}

/// Wait up to the stop grace for a run told to stop to return by itself
/// (`None`: it did not, and is dropped).  The slot stays held meanwhile.
async fn stop_within_grace<F: Future + Unpin>(shared: &Shared, run: &mut F) -> Option<F::Output> {
    tokio::time::timeout(shared.opts.stop_grace, run).await.ok()
}

fn joined(res: std::thread::Result<std::result::Result<serde_json::Value, JobError>>) -> Ended {
    match res {
        Ok(Ok(v)) => Ended::Succeeded(v),
        Ok(Err(e)) => Ended::Failed(e),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_string());
            Ended::Failed(JobError::retryable(format!("handler panicked: {msg}")))
        }
    }
}

fn known_kinds(shared: &Shared) -> String {
    let mut kinds: Vec<&str> = shared.handlers.keys().map(String::as_str).collect();
    kinds.sort_unstable();
    if kinds.is_empty() {
        "nothing".into()
    } else {
        kinds.join(", ")
    }
}

/// Store how the run ended (or nothing, when the lease was lost).
///
/// `permits` (the run's slot, unless it is held on for blocking work that
/// goes on) are given back here: a success's at once, its completion left
/// to the exchange's next turn — which claims for the slot in the same
/// transaction; any other outcome's once it is stored, so the claim that
/// fills the slot finds the try ended.
async fn finish(
    shared: &Shared,
    job: &ClaimedJob,
    reason: Option<StopReason>,
    ended: Ended,
    mut permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
) {
    store_outcome(shared, job, reason, ended, &mut permits).await;
    if let Some(p) = permits {
        drop(p);
        shared.bell.ring();
    }
}

async fn store_outcome(
    shared: &Shared,
    job: &ClaimedJob,
    reason: Option<StopReason>,
    ended: Ended,
    permits: &mut Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
) {
    let c = &shared.counters;
    let (id, token) = (job.id, job.lease_token);
    if reason == Some(StopReason::LeaseLost) {
        c.lost.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("lease lost: result discarded, the job belongs to another worker now");
        return;
    }
    let store = shared.store.clone();
    let stored = match (ended, reason) {
        (Ended::Succeeded(result), _) => {
            c.succeeded.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("run succeeded");
            // Serialized here, on the run's thread, not by the one writer;
            // nothing at all for a handler that returned nothing.
            let result = (!result.is_null()).then(|| result.to_string());
            // The completion wakes the exchange: no slot notice needed.
            drop(permits.take());
            let completion = Completion {
                id,
                token,
                result,
                span: tracing::Span::current(),
                queued: std::time::Instant::now(),
            };
            shared.bell.complete(completion);
            Ok(())
        }
        (Ended::HandedBack, _) => {
            c.released.fetch_add(1, Ordering::Relaxed);
            // 1 s, doubling with each claim of the job (a try handed back
            // is not counted, but claims are), up to a minute: a job that
            // keeps meeting this worker first writes a try a minute at most.
            let after = Duration::from_secs(1 << (job.attempt - 1).clamp(0, 6)).min(HAND_BACK_MAX);
            let note = format!(
                "worker {} has no handler for job kind '{}'; handed back for a live worker that runs it",
                shared.name, job.kind
            );
            tracing::info!(after = ?after, "no handler here; handed back for a live worker that runs this kind");
            blocking(move || store.release_for(id, token, after, &note)).await
        }
        (_, Some(StopReason::Shutdown)) => {
            c.released.fetch_add(1, Ordering::Relaxed);
            tracing::info!("released at shutdown");
            blocking(move || store.release(id, token)).await
        }
        (ended, Some(StopReason::CancelRequested)) => {
            c.cancelled.fetch_add(1, Ordering::Relaxed);
            let why = match ended {
                Ended::Failed(e) => format!("cancelled while running: {e}"),
                _ => "cancelled while running".to_string(),
            };
            tracing::info!("{why}");
            blocking(move || store.cancelled(id, token, &why)).await
        }
        (Ended::Failed(e), _) => {
            c.failed.fetch_add(1, Ordering::Relaxed);
            let retryable = e.retryable;
            let message = e.message;
            let outcome = blocking(move || {
                store
                    .fail(id, token, &message, retryable)
                    .map(|o| (o, message))
            })
            .await;
            match outcome {
                Ok((o, message)) => {
                    tracing::warn!(error = %message, outcome = ?o, "run failed");
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        (Ended::Stopped, None | Some(StopReason::LeaseLost | StopReason::TimedOut)) => Ok(()),
    };
    match stored {
        Ok(()) | Err(Error::LeaseLost { .. }) => {}
        Err(e) => {
            tracing::error!(error = %e, "could not store the outcome; the lease will expire and the job be retried")
        }
    }
}

/// Run a store call on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::invalid(
            "runtime",
            format!("blocking task did not run: {e}"),
        )),
    }
}

fn human(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}
