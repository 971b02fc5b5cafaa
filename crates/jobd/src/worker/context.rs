//! What a handler gets to know about its job, and can tell back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::{JobId, Progress, Store};
use crate::worker::JobError;
use crate::Error;

/// Why the runtime stopped a run (the first reason wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// `cancel` was asked for this job.
    CancelRequested,
    /// The lease expired and the job went to another worker: the run's
    /// result must be discarded.
    LeaseLost,
    /// The worker is shutting down and the grace period is over.
    Shutdown,
    /// The try ran past its timeout: it fails (and is retried if it has
    /// tries left).
    TimedOut,
}

/// A running try, as the runtime tracks it.
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) token: i64,
    /// The run's span (job id, queue, kind, attempt): every event about the
    /// run, in whichever task it is logged, is inside it.
    pub(crate) span: tracing::Span,
    pub(crate) cancel: CancellationToken,
    pub(crate) reason: OnceLock<StopReason>,
    /// Calls of [`JobContext::blocking`] whose closure has not returned.
    blocking: AtomicUsize,
    /// Told when the last of them returns.
    blocking_done: Notify,
}

impl Running {
    pub(crate) fn new(token: i64, span: tracing::Span) -> Running {
        Running {
            token,
            span,
            cancel: CancellationToken::new(),
            reason: OnceLock::new(),
            blocking: AtomicUsize::new(0),
            blocking_done: Notify::new(),
        }
    }

    pub(crate) fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.cancel.cancel();
    }

    pub(crate) fn reason(&self) -> Option<StopReason> {
        self.reason.get().copied()
    }

    /// How many of the run's blocking closures are still on a thread.  Once
    /// the run is over, any left ignored its stop: a thread of the blocking
    /// pool cannot be stopped from outside.
    pub(crate) fn blocking_live(&self) -> usize {
        self.blocking.load(Ordering::Acquire)
    }

    /// Resolves once every blocking closure of the run has returned.
    pub(crate) async fn blocking_returned(&self) {
        loop {
            let told = self.blocking_done.notified();
            tokio::pin!(told);
            // Registered before the count is read: a return in between
            // still wakes this waiter.
            told.as_mut().enable();
            if self.blocking_live() == 0 {
                return;
            }
            told.await;
        }
    }
}

/// Counts one blocking closure of a run while it is alive (dropped when the
/// closure returns or unwinds, on its own thread).
struct BlockingGuard(Arc<Running>);

impl BlockingGuard {
    fn enter(running: &Arc<Running>) -> BlockingGuard {
        running.blocking.fetch_add(1, Ordering::AcqRel);
        BlockingGuard(running.clone())
    }
}

impl Drop for BlockingGuard {
    fn drop(&mut self) {
        if self.0.blocking.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.blocking_done.notify_waiters();
        }
    }
}

/// Handed to every run: who the job is, a way to report progress, a
/// cancellation signal and a tracing span carrying job id, queue, kind and
/// attempt.  Cheap to clone.
#[derive(Clone, Debug)]
pub struct JobContext {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    id: JobId,
    queue: String,
    kind: String,
    attempt: i64,
    tenant: Option<String>,
    store: Store,
    running: Arc<Running>,
    span: tracing::Span,
}

impl JobContext {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: JobId,
        queue: String,
        kind: String,
        attempt: i64,
        tenant: Option<String>,
        store: Store,
        running: Arc<Running>,
        span: tracing::Span,
    ) -> JobContext {
        JobContext {
            inner: Arc::new(Inner {
                id,
                queue,
                kind,
                attempt,
                tenant,
                store,
                running,
                span,
            }),
        }
    }

    pub fn id(&self) -> JobId {
        self.inner.id
    }

    pub fn queue(&self) -> &str {
        &self.inner.queue
    }

    pub fn kind(&self) -> &str {
        &self.inner.kind
    }

    /// This try's number, from 1.
    pub fn attempt(&self) -> i64 {
        self.inner.attempt
    }

    pub fn tenant(&self) -> Option<&str> {
        self.inner.tenant.as_deref()
    }

    /// The queue store, for handlers that enqueue follow-up jobs.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The run's span (fields: job_id, queue, kind, attempt).
    pub fn span(&self) -> &tracing::Span {
        &self.inner.span
    }

    /// Report progress: stored on the job (readable through `get`) and
    /// logged in the `progress` table.  Fails when the run has lost its
    /// lease — the handler should stop.
    pub async fn progress(
        &self,
        percent: impl Into<Option<f64>>,
        stage: &str,
        detail: Option<&str>,
    ) -> Result<(), JobError> {
        let progress = Progress {
            percent: percent.into(),
            stage: Some(stage.to_string()),
            detail: detail.map(str::to_string),
        };
        let (store, id, token) = (
            self.inner.store.clone(),
            self.inner.id,
            self.inner.running.token,
        );
        let stored = tokio::task::spawn_blocking(move || store.set_progress(id, token, &progress))
            .await
            .map_err(|e| JobError::retryable(format!("progress report did not run: {e}")))?;
        match stored {
            Ok(()) => Ok(()),
            Err(Error::LeaseLost { .. }) => {
                self.inner.running.stop(StopReason::LeaseLost);
                Err(JobError::retryable(
                    "lease lost: the job went to another worker",
                ))
            }
            Err(e @ Error::InvalidInput { .. }) => Err(JobError::permanent(e)),
            Err(e) => Err(JobError::retryable(e)),
        }
    }

    /// True once the run should stop: cancellation was asked, the lease was
    /// lost, the try ran past its timeout, or the worker is shutting down
    /// past its grace period.  Work in [`JobContext::blocking`] cannot be
    /// stopped from outside: it should check this (or the token of
    /// [`JobContext::cancellation`]) and return.
    pub fn is_cancelled(&self) -> bool {
        self.inner.running.cancel.is_cancelled()
    }

    /// Resolves when the run should stop (see [`JobContext::is_cancelled`]).
    /// A handler that does not listen is stopped anyway at its next `.await`
    /// after a short grace.
    pub async fn cancelled(&self) {
        self.inner.running.cancel.cancelled().await
    }

    /// The cancellation signal as a token, to hand to other code.
    pub fn cancellation(&self) -> CancellationToken {
        self.inner.running.cancel.child_token()
    }

    /// Run CPU-heavy or blocking work on tokio's blocking pool, inside this
    /// job's span, so it does not stall other jobs.  A panic in `f` fails the
    /// try like a panic in the handler.
    ///
    /// The run's slot (its share of the queue's concurrency) is held until
    /// `f` returns, even when the run itself is over: a try that timed out,
    /// was cancelled or lost its lease while `f` ignored the signal to stop
    /// is ended in the queue at once (and may be retried), but this worker
    /// takes no job in its place until `f` has returned — so a queue's
    /// concurrency bounds the threads computing for it, and work that never
    /// returns cannot pile up threads until the process runs out.
    pub async fn blocking<T, F>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let span = self.inner.span.clone();
        let alive = BlockingGuard::enter(&self.inner.running);
        let work = move || {
            let _alive = alive;
            span.in_scope(f)
        };
        match tokio::task::spawn_blocking(work).await {
            Ok(v) => v,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("blocking task of job {} did not run: {e}", self.inner.id),
        }
    }
}
