//! The exchange: the worker's one frequent writer.  Each turn commits, in one
//! transaction ([`Store::complete_and_claim`]), the completions that queued
//! up since the last turn and claims jobs for the slots free now — one
//! commit where a claim and a group commit of completions took two, and with
//! `synchronous = FULL` one `fsync` for both.  A turn starts as soon as there
//! is something to commit or a slot to fill (never waiting for every slot
//! to be free), and while it is in the store the runs it does not wait for
//! go on and queue their completions for the next one.
//!
//! Between turns the loop sleeps until a completion arrives, a slot frees, new
//! work is announced (an enqueue in this process, another process's commit
//! seen by the [`Watcher`], a lease reaped), a delayed job falls due, or
//! shutdown.  It owns the runs: at shutdown it stops claiming, gives running
//! jobs the grace period, stops the rest, and returns once every run has
//! ended and every completion is stored.
//!
//! [`Store::complete_and_claim`]: crate::Store::complete_and_claim

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::store::{ClaimedJob, JobId};
use crate::worker::context::{Running, StopReason};
use crate::worker::runtime::{blocking, supervise, Shared};
use crate::worker::watcher::Watcher;

/// A succeeded run, waiting for the next turn.
pub(super) struct Completion {
    pub(super) id: JobId,
    pub(super) token: i64,
    /// The result as JSON text; `None` for a handler that returned nothing
    /// (`()`, JSON `null`): no text is written for it.
    pub(super) result: Option<String>,
    /// The run's span, for what is logged about this completion.
    pub(super) span: tracing::Span,
    pub(super) queued: Instant,
}

/// The first pause before a failed turn is tried again; it doubles up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Most times a turn waits for runs that are ready to finish first (see
/// [`Exchange::gather`]).
const GATHER_YIELDS: usize = 16;

struct Exchange<'a> {
    shared: &'a Arc<Shared>,
    queues: &'a [(String, usize)],
    limits: Vec<Arc<Semaphore>>,
    global: Arc<Semaphore>,
    /// Per queue: claimable jobs may be there (unknown, or the last claim
    /// took all it asked for).  False once a claim came back short, until
    /// new work is announced.
    maybe: Vec<bool>,
    pending: Vec<Completion>,
    rx: mpsc::UnboundedReceiver<Completion>,
    runs: JoinSet<()>,
    /// Failed turns in a row, and when to try again.
    failures: u32,
    retry_at: Option<Instant>,
}

/// Run the exchange until shutdown, then until every run has ended and its
/// outcome is stored.
pub(super) async fn exchange_loop(
    shared: &Arc<Shared>,
    queues: &[(String, usize)],
    global: usize,
    rx: mpsc::UnboundedReceiver<Completion>,
    watcher: &Watcher,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut ex = Exchange {
        shared,
        queues,
        limits: queues
            .iter()
            .map(|(_, c)| Arc::new(Semaphore::new(*c)))
            .collect(),
        global: Arc::new(Semaphore::new(global)),
        maybe: vec![true; queues.len()],
        pending: Vec::new(),
        rx,
        runs: JoinSet::new(),
        failures: 0,
        retry_at: None,
    };
    let mut work = shared.store.watch_work();
    work.borrow_and_update();
    tokio::pin!(shutdown);
    let mut stopping = false;
    let mut grace_over: Option<Instant> = None;
    // When the earliest delayed job falls due, read when the loop last went
    // idle (`None`: to be read).
    let mut due: Option<Option<Instant>> = None;
    loop {
        ex.reap_runs();
        ex.take_completions();
        if stopping && ex.runs.is_empty() && ex.pending.is_empty() {
            break;
        }
        let retry_wait = ex.retry_at.is_some_and(|t| t > Instant::now());
        let claiming = !stopping && !retry_wait;
        if !retry_wait && (!ex.pending.is_empty() || claiming && !ex.claims().is_empty()) {
            if !ex.pending.is_empty() {
                ex.gather().await;
            }
            // Counted after the gathering, which freed slots.
            let claims = if claiming { ex.claims() } else { Vec::new() };
            ex.turn(claims).await;
            due = None;
            continue;
        }
        // Nothing to commit and nothing to claim: wait.
        let waiting_for_work = !stopping && ex.waiting_for_work();
        if watcher.set_waiting(waiting_for_work) && waiting_for_work {
            // Just started watching other processes' commits: one more look,
            // for a commit made since the claim that came back short.
            ex.maybe.iter_mut().for_each(|m| *m = true);
            continue;
        }
        let next_due = if waiting_for_work {
            if due.is_none() {
                due = Some(ex.next_due().await);
            }
            due.flatten()
        } else {
            None
        };
        tokio::select! {
            _ = &mut shutdown, if !stopping => {
                stopping = true;
                shared.stopping.cancel();
                let in_flight = shared.in_flight.lock().unwrap().len();
                if in_flight > 0 {
                    tracing::info!(worker = %shared.name, in_flight, grace = ?shared.opts.shutdown_grace, "stopping: waiting for running jobs");
                }
                grace_over = Some(Instant::now() + shared.opts.shutdown_grace);
            }
            _ = sleep_until(grace_over), if grace_over.is_some() => {
                grace_over = None;
                let left: Vec<Arc<Running>> = shared.in_flight.lock().unwrap().values().cloned().collect();
                if !left.is_empty() {
                    tracing::warn!(worker = %shared.name, left = left.len(), "grace period over: releasing unfinished jobs");
                }
                for r in left {
                    r.stop(StopReason::Shutdown);
                }
            }
            Some(c) = ex.rx.recv() => ex.pending.push(c),
            // The store (and so the sender) outlives this loop.
            Ok(()) = work.changed() => {
                ex.maybe.iter_mut().for_each(|m| *m = true);
                due = None;
            }
            _ = shared.slot_freed.notified() => {}
            Some(done) = ex.runs.join_next(), if !ex.runs.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "a job supervisor failed");
                }
            }
            _ = sleep_until(next_due), if next_due.is_some() => {
                ex.maybe.iter_mut().for_each(|m| *m = true);
                due = None;
            }
            _ = sleep_until(ex.retry_at), if ex.retry_at.is_some() => {}
        }
    }
    watcher.set_waiting(false);
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Exchange<'_> {
    fn reap_runs(&mut self) {
        while let Some(done) = self.runs.try_join_next() {
            if let Err(e) = done {
                tracing::error!(error = %e, "a job supervisor failed");
            }
        }
    }

    /// Take what completions have queued, up to a batch.
    fn take_completions(&mut self) -> usize {
        let before = self.pending.len();
        let max = self.shared.opts.complete_batch;
        while self.pending.len() < max {
            match self.rx.try_recv() {
                Ok(c) => self.pending.push(c),
                Err(_) => break,
            }
        }
        self.pending.len() - before
    }

    /// Before committing, let runs that are ready to finish do so: a run
    /// that completes wakes this task at once, and a turn for its
    /// completion alone would leave its siblings — ready a few
    /// microseconds later — to the turn after.  Yield while each yield
    /// brings more completions (bounded), so a batch of short jobs finishes
    /// in one turn.
    async fn gather(&mut self) {
        for _ in 0..GATHER_YIELDS {
            if self.pending.len() >= self.shared.opts.complete_batch
                || self.shared.in_flight.lock().unwrap().is_empty()
            {
                return;
            }
            tokio::task::yield_now().await;
            if self.take_completions() == 0 {
                return;
            }
        }
    }

    /// What to claim from each queue now: its free slots (within the global
    /// cap and the claim batch), for the queues that may have work.
    fn claims(&self) -> Vec<(usize, usize)> {
        let mut left = self.global.available_permits();
        let mut claims = Vec::new();
        for (i, limit) in self.limits.iter().enumerate() {
            if left == 0 {
                break;
            }
            if !self.maybe[i] {
                continue;
            }
            let want = limit
                .available_permits()
                .min(left)
                .min(self.shared.opts.claim_batch);
            if want > 0 {
                claims.push((i, want));
                left -= want;
            }
        }
        claims
    }

    /// Idle with free slots: only new work can give this worker something
    /// to do.
    fn waiting_for_work(&self) -> bool {
        self.global.available_permits() > 0
            && self
                .limits
                .iter()
                .zip(&self.maybe)
                .any(|(l, maybe)| !maybe && l.available_permits() > 0)
    }

    /// When the earliest delayed job or retry falls due; `None` when none
    /// is (or it cannot be read: new work is announced anyway).  A due time
    /// already past — a job due in a queue that is full, paused or not this
    /// worker's — is looked at again in a second, not in a busy loop.
    async fn next_due(&self) -> Option<Instant> {
        let store = self.shared.store.clone();
        let at = blocking(move || store.next_run_at()).await.ok()??;
        let now = self.shared.store.clock().now_ms();
        let wait = if at <= now {
            Duration::from_secs(1)
        } else {
            Duration::from_millis((at - now).min(60_000) as u64)
        };
        Some(Instant::now() + wait)
    }

    /// Whether the oldest pending completion's lease surely still holds:
    /// half of what remains of a lease after its last heartbeat.
    fn in_budget(&self) -> bool {
        let o = &self.shared.opts;
        let budget = o.lease.saturating_sub(o.heartbeat_interval) / 2;
        self.pending.iter().all(|c| c.queued.elapsed() < budget)
    }

    /// One turn: the pending completions and `claims` in one transaction,
    /// then a run started for each claimed job.
    async fn turn(&mut self, claims: Vec<(usize, usize)>) {
        let shared = self.shared;
        let done: Vec<(JobId, i64, Option<String>)> = self
            .pending
            .iter_mut()
            .map(|c| (c.id, c.token, c.result.take()))
            .collect();
        let names: Vec<String> = claims
            .iter()
            .map(|(i, _)| self.queues[*i].0.clone())
            .collect();
        let wants: Vec<usize> = claims.iter().map(|(_, n)| *n).collect();
        let most: usize = wants.iter().sum();
        let (store, name, lease) = (shared.store.clone(), shared.name.clone(), shared.opts.lease);
        // The results come back with the answer: a failed turn keeps them
        // for the next try.
        let tried = blocking(move || {
            let claims: Vec<(&str, usize)> = names
                .iter()
                .map(String::as_str)
                .zip(wants.iter().copied())
                .collect();
            Ok((store.exchange(&done, &name, &claims, most, lease), done))
        })
        .await;
        let tried = match tried {
            Ok((r, done)) => r.map_err(|e| (e, Some(done))),
            Err(e) => Err((e, None)),
        };
        match tried {
            Ok((batch, claimed)) => {
                if self.failures > 0 {
                    tracing::info!(
                        tries = self.failures + 1,
                        "the queue is writable again: completions stored and claims made"
                    );
                }
                self.failures = 0;
                self.retry_at = None;
                for c in self.pending.drain(..) {
                    if batch.lost.contains(&c.id) {
                        c.span.in_scope(|| {
                            tracing::warn!("completion discarded: the lease was lost")
                        });
                    }
                }
                for (i, want) in &claims {
                    let got = claimed
                        .iter()
                        .filter(|j| j.queue == self.queues[*i].0)
                        .count();
                    // Short of what was asked (and not for want of room in
                    // the global cap): the queue has nothing more for now.
                    self.maybe[*i] = got >= *want || claimed.len() >= most;
                }
                for job in claimed {
                    let i = self
                        .queues
                        .iter()
                        .position(|(q, _)| *q == job.queue)
                        .expect("claimed from a queue of this worker");
                    self.start(i, job);
                }
            }
            Err((e, done)) => {
                for (c, (_, _, result)) in self.pending.iter_mut().zip(done.into_iter().flatten()) {
                    c.result = result;
                }
                self.failures += 1;
                let pause = RETRY_FIRST
                    .saturating_mul(1 << self.failures.min(16))
                    .min(RETRY_MAX);
                self.retry_at = Some(Instant::now() + pause);
                if self.in_budget() {
                    let ids: Vec<JobId> = self.pending.iter().map(|c| c.id).collect();
                    tracing::error!(error = %e, completions = ?ids, claims = most, tries = self.failures, retry_in = ?pause, "could not store completions and claim; trying again");
                } else {
                    // Leases may be gone by now: another worker may run
                    // these jobs again, and storing them late changes
                    // nothing (the fence refuses it).
                    for c in self.pending.drain(..) {
                        c.span.in_scope(|| {
                            tracing::error!(error = %e, tries = self.failures, "could not store the completion; the lease will expire and the job be retried")
                        });
                    }
                }
            }
        }
    }

    /// Start the run of a claimed job in queue `i`.
    fn start(&mut self, i: usize, job: ClaimedJob) {
        let shared = self.shared;
        let permits = (
            self.limits[i]
                .clone()
                .try_acquire_owned()
                .expect("free slot counted"),
            self.global
                .clone()
                .try_acquire_owned()
                .expect("free slot counted"),
        );
        // At ERROR level so that it is on whenever anything is logged: a
        // WARN line of the run carries the job too.
        let span = tracing::error_span!(
            "job",
            job_id = job.id,
            queue = %job.queue,
            kind = %job.kind,
            attempt = job.attempt
        );
        let running = Arc::new(Running::new(job.lease_token, span));
        shared
            .in_flight
            .lock()
            .unwrap()
            .insert(job.id, running.clone());
        self.runs
            .spawn(supervise(shared.clone(), job, running, permits));
    }
}
