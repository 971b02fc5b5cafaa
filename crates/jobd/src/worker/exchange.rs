//! The exchange: the worker's one frequent writer, on a thread of its own.
//!
//! Each turn commits, in one transaction ([`Backend::complete_and_claim`](crate::store::Backend::complete_and_claim)),
//! the completions that queued up since the last turn and claims jobs for
//! the slots free now — one commit where a claim and a group commit of
//! completions took two, and with `synchronous = FULL` one `fsync` for both.
//! A turn starts as soon as there is something to commit or a slot to fill
//! (never waiting for every slot to be free); while it is in the store, runs
//! go on and queue their completions for the next one.
//!
//! The thread does the transaction itself and then polls each new run once,
//! inside the worker's tokio runtime (entered, not blocked on): a run that
//! finishes without waiting — its completion queued for the next turn —
//! costs no task and no wake-up; one that waits goes on as a task of the
//! runtime.  A store call handed to the runtime's blocking pool, and the
//! answer handed back, cost two thread wake-ups a turn — on this 2-vCPU
//! machine more than the transaction itself (see benches/README.md).
//!
//! Between turns the thread sleeps on its [`Bell`] until a completion
//! arrives, a slot frees, new work is announced (an enqueue in this process,
//! another process's commit seen by the commit watcher, a lease reaped), a
//! delayed job falls due, or shutdown.  At shutdown it stops claiming, gives
//! running jobs the grace period, stops the rest, and returns once every
//! run has ended and every completion is stored.
//!
//! [`Backend::complete_and_claim`](crate::store::Backend::complete_and_claim): crate::store::Backend::complete_and_claim

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::store::{ClaimedJob, Done, JobId};
use crate::worker::context::{Running, StopReason};
use crate::worker::runtime::{supervise, FirstPoll, Shared};
use crate::worker::watcher::CommitWatcher;

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

/// What wakes the exchange thread, and what it finds when it wakes.
#[derive(Default)]
pub(super) struct Bell {
    state: Mutex<BellState>,
    rung: Condvar,
}

#[derive(Default)]
struct BellState {
    completions: Vec<Completion>,
    /// New work was announced.
    work: bool,
    /// Shutdown was asked.
    stop: bool,
    /// Something happened since the thread last looked.
    news: bool,
    /// The thread sleeps: a ring must wake it.
    sleeping: bool,
}

/// What the thread found at the bell.
struct News {
    work: bool,
    stop: bool,
}

impl Bell {
    fn with(&self, f: impl FnOnce(&mut BellState)) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
        s.news = true;
        if s.sleeping {
            s.sleeping = false;
            self.rung.notify_one();
        }
    }

    /// A run succeeded: its completion goes in the next turn.
    pub(super) fn complete(&self, c: Completion) {
        self.with(|s| s.completions.push(c));
    }

    /// A slot came free, or a run ended.
    pub(super) fn ring(&self) {
        self.with(|_| {});
    }

    /// New work may be claimable.
    pub(super) fn work(&self) {
        self.with(|s| s.work = true);
    }

    /// Stop claiming; end once every run has.
    pub(super) fn stop(&self) {
        self.with(|s| s.stop = true);
    }

    /// Take up to `max` completions in all into `pending`, and the news.
    fn take(&self, pending: &mut Vec<Completion>, max: usize) -> News {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let room = max.saturating_sub(pending.len()).min(s.completions.len());
        pending.extend(s.completions.drain(..room));
        // More completions left behind are news for the next look.
        s.news = !s.completions.is_empty();
        News {
            work: std::mem::take(&mut s.work),
            stop: s.stop,
        }
    }

    /// Sleep until something happens or `deadline`.
    fn sleep(&self, deadline: Option<Instant>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !s.news {
            let now = Instant::now();
            let wait = match deadline {
                Some(d) if d <= now => break,
                Some(d) => d - now,
                None => Duration::from_secs(3600),
            };
            s.sleeping = true;
            s = self
                .rung
                .wait_timeout(s, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            s.sleeping = false;
        }
    }
}

/// Counts a run while it is alive (until its supervisor returns, or is
/// dropped with the runtime), and rings the bell when it ends.
pub(super) struct RunGuard(Arc<Shared>);

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.0.live_runs.fetch_sub(1, Ordering::AcqRel);
        self.0.bell.ring();
    }
}

/// The first pause before a failed turn is tried again; it doubles up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Longest sleep without a deadline: the next delayed job is looked for
/// again after it.
const IDLE_LOOK: Duration = Duration::from_secs(60);

struct Exchange<'a> {
    shared: &'a Arc<Shared>,
    handle: &'a tokio::runtime::Handle,
    queues: &'a [(String, usize)],
    limits: Vec<Arc<Semaphore>>,
    global: Arc<Semaphore>,
    /// Per queue: claimable jobs may be there (unknown, or the last claim
    /// took all it asked for).  False once a claim came back short, until
    /// new work is announced.
    maybe: Vec<bool>,
    pending: Vec<Completion>,
    /// Failed turns in a row, and when to try again.
    failures: u32,
    retry_at: Option<Instant>,
}

/// Run the exchange until shutdown is rung, then until every run has ended
/// and its outcome is stored.  `handle` is the worker's runtime: runs are
/// polled inside it and go on as its tasks.
pub(super) fn exchange_thread(
    shared: &Arc<Shared>,
    handle: &tokio::runtime::Handle,
    queues: &[(String, usize)],
    global: usize,
    watcher: &dyn CommitWatcher,
) {
    let _runtime = handle.enter();
    let mut ex = Exchange {
        shared,
        handle,
        queues,
        limits: queues
            .iter()
            .map(|(_, c)| Arc::new(Semaphore::new(*c)))
            .collect(),
        global: Arc::new(Semaphore::new(global)),
        maybe: vec![true; queues.len()],
        pending: Vec::new(),
        failures: 0,
        retry_at: None,
    };
    let bell = &shared.bell;
    let mut stopping = false;
    let mut grace_over: Option<Instant> = None;
    // When to look for work again, read when the thread last went idle
    // (`None`: to be read).
    let mut due: Option<Instant> = None;
    loop {
        // Read before the bell: a run queues its completion before it
        // counts itself out, so none is left behind once this reads 0.
        let runs_over = shared.live_runs.load(Ordering::Acquire) == 0;
        let news = bell.take(&mut ex.pending, shared.opts.complete_batch);
        if news.work {
            ex.maybe.iter_mut().for_each(|m| *m = true);
            due = None;
        }
        if news.stop && !stopping {
            stopping = true;
            shared.stopping.cancel();
            let in_flight = shared.in_flight.lock().unwrap().len();
            if in_flight > 0 {
                tracing::info!(worker = %shared.name, in_flight, grace = ?shared.opts.shutdown_grace, "stopping: waiting for running jobs");
            }
            grace_over = Some(Instant::now() + shared.opts.shutdown_grace);
        }
        if grace_over.is_some_and(|t| t <= Instant::now()) {
            grace_over = None;
            let left: Vec<Arc<Running>> =
                shared.in_flight.lock().unwrap().values().cloned().collect();
            if !left.is_empty() {
                tracing::warn!(worker = %shared.name, left = left.len(), "grace period over: releasing unfinished jobs");
            }
            for r in left {
                r.stop(StopReason::Shutdown);
            }
        }
        if stopping && runs_over && ex.pending.is_empty() {
            break;
        }
        let retry_wait = ex.retry_at.is_some_and(|t| t > Instant::now());
        if !retry_wait {
            let claims = if stopping { Vec::new() } else { ex.claims() };
            if !ex.pending.is_empty() || !claims.is_empty() {
                if ex.turn(claims) {
                    // Busy: claiming anyway, no need to hear of commits.
                    watcher.set_waiting(false);
                }
                due = None;
                continue;
            }
        }
        // Nothing to commit and nothing to claim: sleep.
        let waiting_for_work = !stopping && ex.waiting_for_work();
        if watcher.set_waiting(waiting_for_work) && waiting_for_work {
            // Just started watching other processes' commits: one more look,
            // for a commit made since the claim that came back short.
            ex.maybe.iter_mut().for_each(|m| *m = true);
            continue;
        }
        let next_due = waiting_for_work.then(|| *due.get_or_insert_with(|| ex.next_due()));
        let deadline = [next_due, grace_over, ex.retry_at]
            .into_iter()
            .flatten()
            .min();
        bell.sleep(deadline);
        if next_due.is_some_and(|t| t <= Instant::now()) {
            ex.maybe.iter_mut().for_each(|m| *m = true);
            due = None;
        }
    }
    watcher.set_waiting(false);
}

impl Exchange<'_> {
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

    /// When to look for work again: when the earliest delayed job or retry
    /// falls due, and at least every [`IDLE_LOOK`].  A due time already
    /// past — a job due in a queue that is full, paused or not this
    /// worker's — is looked at again in a second, not in a busy loop.
    fn next_due(&self) -> Instant {
        let wait = match self.shared.store.next_run_at() {
            Ok(Some(at)) => {
                let now = self.shared.store.clock().now_ms();
                if at <= now {
                    Duration::from_secs(1)
                } else {
                    Duration::from_millis((at - now) as u64).min(IDLE_LOOK)
                }
            }
            Ok(None) => IDLE_LOOK,
            Err(e) => {
                tracing::warn!(error = %e, "could not read when the next delayed job is due");
                Duration::from_secs(1)
            }
        };
        Instant::now() + wait
    }

    /// Whether every pending completion's lease surely still holds: half of
    /// what remains of a lease after its last heartbeat.
    fn in_budget(&self) -> bool {
        let o = &self.shared.opts;
        let budget = o.lease.saturating_sub(o.heartbeat_interval) / 2;
        self.pending.iter().all(|c| c.queued.elapsed() < budget)
    }

    /// One turn: the pending completions and `claims` in one transaction,
    /// then a run started for each claimed job.  True when jobs were claimed.
    fn turn(&mut self, claims: Vec<(usize, usize)>) -> bool {
        let shared = self.shared;
        let done: Vec<Done> = self
            .pending
            .iter_mut()
            .map(|c| Done {
                id: c.id,
                token: c.token,
                result: c.result.take(),
            })
            .collect();
        let wants: Vec<(&str, usize)> = claims
            .iter()
            .map(|(i, n)| (self.queues[*i].0.as_str(), *n))
            .collect();
        let most: usize = claims.iter().map(|(_, n)| n).sum();
        let tried = shared
            .store
            .exchange(&done, &shared.name, &wants, most, shared.opts.lease);
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
                let claimed_any = !claimed.is_empty();
                let mut got = vec![0; self.queues.len()];
                for job in claimed {
                    let i = self
                        .queues
                        .iter()
                        .position(|(q, _)| *q == job.queue)
                        .expect("claimed from a queue of this worker");
                    got[i] += 1;
                    self.start(i, job);
                }
                // A queue short of what it was asked for has nothing more
                // for now.  (The asks add up to `most`, so the transaction's
                // cap never cut one short.)
                for (i, want) in &claims {
                    self.maybe[*i] = got[*i] >= *want;
                }
                claimed_any
            }
            Err(e) => {
                // The results go back to their completions, for the next try.
                for (c, d) in self.pending.iter_mut().zip(done) {
                    c.result = d.result;
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
                false
            }
        }
    }

    /// Start the run of a claimed job in queue `i`: polled here once, and
    /// handed to the runtime as a task if it has to wait.
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
        shared.live_runs.fetch_add(1, Ordering::AcqRel);
        let guard = RunGuard(shared.clone());
        // An unknown kind's run only asks the store who runs it: polled here.
        let first = shared.first_polls.get_key_value(&job.kind);
        let mut run = Caught(Box::pin(supervise(
            shared.clone(),
            job,
            running,
            permits,
            guard,
        )));
        if first.is_some_and(|(_, f)| !f.inline()) {
            drop(self.handle.spawn(run));
            return;
        }
        // No waker is needed for this first poll: a run that waits is
        // spawned, and its task polls it again at once.
        let mut cx = Context::from_waker(Waker::noop());
        let started = Instant::now();
        let waits = Pin::new(&mut run).poll(&mut cx).is_pending();
        if let Some((kind, _)) = first.filter(|(_, f)| f.took(started.elapsed())) {
            tracing::info!(
                kind = %kind,
                "runs of this kind compute for more than {:?} before they first wait: \
                 they start as tasks from now on, so that they run side by side and do not \
                 hold up the worker's claims",
                FirstPoll::SLOW
            );
        }
        if waits {
            drop(self.handle.spawn(run));
        }
    }
}

/// A run's supervisor, its panic (a bug of the runtime's, not of the
/// handler: those are caught inside) logged instead of unwinding the
/// exchange thread or lost with a detached task.
struct Caught(Pin<Box<dyn Future<Output = ()> + Send>>);

impl Future for Caught {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let run = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(_) => {
                tracing::error!("a job supervisor panicked");
                Poll::Ready(())
            }
        }
    }
}
