//! The worker runtime in one process: handlers, progress, timeouts, panics,
//! unknown kinds, retries with backoff (simulated clock), cancellation of a
//! running job, lost leases, concurrency limits and graceful shutdown.
//!
//! Handlers here wait on short real timers or on each other; nothing depends
//! on a timer being exact.  Leases and backoff run on a `ManualClock`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobd::store::{Backoff, CancelOutcome, JobState, NewJob};
use jobd::worker::{Handler, JobContext, JobError, Worker, WorkerBuilder, WorkerReport};
use jobd::{ManualClock, Store, StoreOptions};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const T0: i64 = 1_700_000_000_000;

/// Where a test's store lives: a SQLite file (its directory held here), or
/// a fresh database on the test process's PostgreSQL cluster (`pg`).
type Place = Option<tempfile::TempDir>;

fn open(pg: bool, opts: StoreOptions) -> (Place, Store) {
    if pg {
        let url = jobd_testkit::pg::database().expect("a PostgreSQL cluster");
        return (None, Store::connect(&url, opts).unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path().join("queue.db"), opts).unwrap();
    (Some(dir), store)
}

fn store(pg: bool) -> (Place, Store) {
    open(pg, StoreOptions::default())
}

fn manual_store(pg: bool) -> (Place, Store, ManualClock) {
    let clock = ManualClock::new(T0);
    let (place, store) = open(pg, StoreOptions::default().clock(clock.clone()));
    (place, store, clock)
}

/// Run each named test — `async fn name(pg: bool)` — on both backends
/// (on PostgreSQL only where a cluster can be started: always in CI).
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(false).await
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if jobd_testkit::pg::cluster().is_some() {
                    super::$name(true).await
                }
            })*
        }
    };
}

/// Poll `cond` until it holds (10 s at most).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn state(store: &Store, id: i64) -> JobState {
    store.get(id).unwrap().state
}

/// A worker running in the background until `stop` is cancelled.
fn spawn(
    builder: jobd::worker::WorkerBuilder,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<jobd::Result<WorkerReport>>,
) {
    let stop = CancellationToken::new();
    let s = stop.clone();
    let handle = tokio::spawn(builder.run(async move { s.cancelled().await }));
    (stop, handle)
}

#[derive(serde::Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

#[derive(Default)]
struct Adder;

impl Handler for Adder {
    const KIND: &'static str = "add";
    type Payload = Add;
    type Output = Value;
    async fn run(&self, ctx: JobContext, p: Add) -> Result<Value, JobError> {
        ctx.progress(50.0, "adding", Some("half way")).await?;
        let sum = ctx.blocking(move || p.a + p.b).await;
        Ok(json!({ "sum": sum, "attempt": ctx.attempt(), "tenant": ctx.tenant() }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_handler_runs_jobs_and_stores_result_and_progress() {
    let (_d, store) = store(false);
    let (stop, worker) = spawn(
        Worker::builder(store.clone())
            .handler::<Adder>()
            .queue("math", 2),
    );
    let id = store
        .enqueue(
            &NewJob::new("math", "add")
                .payload(&json!({"a": 2, "b": 3}))
                .tenant("acme"),
        )
        .unwrap();
    until("job succeeded", || state(&store, id) == JobState::Succeeded).await;
    let job = store.get(id).unwrap();
    assert_eq!(
        job.result,
        Some(json!({"sum": 5, "attempt": 1, "tenant": "acme"}))
    );
    let logged: i64 = store
        .sqlite()
        .unwrap()
        .connection()
        .unwrap()
        .query_row(
            "SELECT count(*) FROM progress WHERE job_id = ?1 AND stage = 'adding' AND percent = 50",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(logged, 1);
    // The worker registered itself while running.
    assert_eq!(store.stats().unwrap().live_workers, 1);
    stop.cancel();
    let report = worker.await.unwrap().unwrap();
    assert_eq!(report.succeeded, 1);
    assert_eq!(store.stats().unwrap().live_workers, 0, "deregistered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payload_is_dead_at_once() {
    let (_d, store) = store(false);
    let id = store
        .enqueue(
            &NewJob::new("math", "add")
                .payload(&json!({"a": "two"}))
                .max_attempts(5),
        )
        .unwrap();
    // Text that is not JSON at all, written behind jobd's back.
    let raw = store
        .enqueue(&NewJob::new("math", "add").max_attempts(5))
        .unwrap();
    store
        .sqlite()
        .unwrap()
        .connection()
        .unwrap()
        .execute(
            "UPDATE jobs SET payload = '{\"a\": 1,' WHERE id = ?1",
            [raw],
        )
        .unwrap();
    let (stop, worker) = spawn(
        Worker::builder(store.clone())
            .handler::<Adder>()
            .queue("math", 1),
    );
    for id in [id, raw] {
        until("job dead", || state(&store, id) == JobState::Dead).await;
        let job = store.get(id).unwrap();
        assert_eq!(job.attempts, 1, "not retried");
        let err = job.last_error.unwrap();
        assert!(err.contains("payload does not fit job kind 'add'"), "{err}");
    }
    stop.cancel();
    worker.await.unwrap().unwrap();
}

async fn a_run_past_its_timeout_is_stopped_and_fails_its_try(pg: bool) {
    let (_d, store) = store(pg);
    let (stop, worker) = spawn(
        Worker::builder(store.clone())
            .handle_fn("slow", |_ctx, _p| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(Value::Null)
            })
            .queue("q", 1),
    );
    let id = store
        .enqueue(
            &NewJob::new("q", "slow")
                .timeout(Duration::from_millis(100))
                .max_attempts(2)
                .backoff(Backoff::new(Duration::ZERO, Duration::ZERO)),
        )
        .unwrap();
    until("job dead", || state(&store, id) == JobState::Dead).await;
    let job = store.get(id).unwrap();
    assert_eq!(job.attempt_log.len(), 2, "timed out, retried, timed out");
    for a in &job.attempt_log {
        assert_eq!(a.outcome, "failed");
        assert_eq!(a.error.as_deref(), Some("timed out after 100 ms"));
    }
    stop.cancel();
    let report = worker.await.unwrap().unwrap();
    assert_eq!(report.failed, 2);
}

/// Blocking work cannot be aborted from outside; a try that times out must
/// tell it to stop, and hold its slot until it has — else the abandoned try
/// goes on computing on the blocking pool beside its retry and the next job.
async fn a_timed_out_try_tells_its_blocking_work_to_stop_before_the_next_run(pg: bool) {
    let (_d, store) = store(pg);
    // How many blocking loops run at this moment, and the most ever at once.
    let grinding = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicUsize::new(0));
    let (g, m, s) = (grinding.clone(), most.clone(), stopped.clone());
    let (stop, worker) = spawn(
        Worker::builder(store.clone())
            .handle_fn("grind", move |ctx, _p| {
                let (g, m, s) = (g.clone(), m.clone(), s.clone());
                async move {
                    jobd::worker::run_blocking(&ctx, move |reporter| {
                        m.fetch_max(g.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                        // Bounded, so that a loop nobody stops fails the
                        // test rather than hanging it.
                        let began = Instant::now();
                        while !reporter.is_cancelled() && began.elapsed() < Duration::from_secs(3) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        g.fetch_sub(1, Ordering::SeqCst);
                        s.fetch_add(1, Ordering::SeqCst);
                        reporter.check_cancelled().map(|_| Value::Null)
                    })
                    .await
                }
            })
            .queue("q", 1),
    );
    let ids: Vec<i64> = (0..2)
        .map(|_| {
            store
                .enqueue(
                    &NewJob::new("q", "grind")
                        .timeout(Duration::from_millis(100))
                        .max_attempts(2)
                        .backoff(Backoff::new(Duration::ZERO, Duration::ZERO)),
                )
                .unwrap()
        })
        .collect();
    for &id in &ids {
        until("job dead", || state(&store, id) == JobState::Dead).await;
        let job = store.get(id).unwrap();
        assert_eq!(job.attempt_log.len(), 2, "timed out, retried, timed out");
        for a in &job.attempt_log {
            assert_eq!(a.error.as_deref(), Some("timed out after 100 ms"));
        }
    }
    stop.cancel();
    let report = worker.await.unwrap().unwrap();
    assert_eq!(report.failed, 4);
    assert_eq!(
        stopped.load(Ordering::SeqCst),
        4,
        "every try's loop stopped"
    );
    assert_eq!(grinding.load(Ordering::SeqCst), 0);
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "a queue of concurrency 1 never had two tries computing at once"
    );
}

async fn a_panicking_handler_fails_its_try_and_the_worker_lives_on(pg: bool) {
    let (_d, store) = store(pg);
    let (stop, worker) = spawn(
        Worker::builder(store.clone())
            .handle_fn("boom", |_ctx, p| async move {
                if p["panic"] == json!(true) {
                    panic!("the printer is on fire");
                }
                Ok(json!("fine"))
            })
            .queue("q", 1),
    );
    let bad = store
        .enqueue(
            &NewJob::new("q", "boom")
                .payload(&json!({"panic": true}))
                .max_attempts(1),
        )
        .unwrap();
    until("panicking job dead", || {
        state(&store, bad) == JobState::Dead
    })
    .await;
    let good = store
        .enqueue(&NewJob::new("q", "boom").payload(&json!({"panic": false})))
        .unwrap();
    until("next job succeeded", || {
        state(&store, good) == JobState::Succeeded
    })
    .await;
    let err = store.get(bad).unwrap().last_error.unwrap();
    assert_eq!(err, "handler panicked: the printer is on fire");
    stop.cancel();
    worker.await.unwrap().unwrap();
}

async fn an_unknown_kind_goes_dead_without_retries(pg: bool) {
    let (_d, store) = store(pg);
    let (stop, worker) = spawn(
        Worker::builder(store.clone())
            .handler::<Adder>()
            .queue("q", 1),
    );
    let id = store
        .enqueue(&NewJob::new("q", "make_coffee").max_attempts(10))
        .unwrap();
    until("job dead", || state(&store, id) == JobState::Dead).await;
    let job = store.get(id).unwrap();
    assert_eq!(job.attempts, 1);
    let err = job.last_error.unwrap();
    assert!(
        err.contains("no handler for job kind 'make_coffee'") && err.contains("it handles: add"),
        "{err}"
    );
    stop.cancel();
    worker.await.unwrap().unwrap();
}

async fn retries_follow_the_backoff_in_simulated_time(pg: bool) {
    let (_d, store, clock) = manual_store(pg);
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let (stop, worker) = spawn(
        Worker::builder(store.clone())
            .handle_fn("flaky", move |ctx, _p| {
                let r = r.clone();
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                    if ctx.attempt() < 3 {
                        Err(JobError::retryable(format!("try {} failed", ctx.attempt())))
                    } else {
                        Ok(json!({"took": ctx.attempt()}))
                    }
                }
            })
            .queue("q", 1),
    );
    let backoff = Backoff::new(Duration::from_secs(60), Duration::from_secs(3600));
    let id = store
        .enqueue(&NewJob::new("q", "flaky").max_attempts(3).backoff(backoff))
        .unwrap();
    for attempt in 1..=2 {
        until("try failed and was scheduled", || {
            let j = store.get(id).unwrap();
            j.state == JobState::Scheduled && j.attempts == attempt
        })
        .await;
        let due = store.get(id).unwrap().run_at;
        assert_eq!(due - clock.now_ms(), backoff.delay_ms(id, attempt));
        // Just before it is due, nothing runs, however long we wait.
        clock.set(due - 1);
        store.notify_work();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(runs.load(Ordering::SeqCst), attempt as usize);
        // Once due, the idle worker picks it up when woken.
        clock.set(due);
        store.notify_work();
    }
    until("job succeeded", || state(&store, id) == JobState::Succeeded).await;
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    let outcomes: Vec<String> = store
        .get(id)
        .unwrap()
        .attempt_log
        .into_iter()
        .map(|a| a.outcome)
        .collect();
    assert_eq!(outcomes, ["failed", "failed", "succeeded"]);
    stop.cancel();
    worker.await.unwrap().unwrap();
}

use jobd::Clock;

/// A worker whose "polite" handler says when it has started (on the returned
/// `Notify`), then waits for cancellation and fails its try with "stopped on
/// request".
fn with_polite_handler(store: &Store) -> (WorkerBuilder, Arc<tokio::sync::Notify>) {
    let started = Arc::new(tokio::sync::Notify::new());
    let s = started.clone();
    let builder = Worker::builder(store.clone()).handle_fn("polite", move |ctx, _p| {
        let s = s.clone();
        async move {
            s.notify_one();
            ctx.cancelled().await;
            Err::<Value, _>(JobError::retryable("stopped on request"))
        }
    });
    (builder, started)
}

async fn cancelling_a_running_job_stops_it(pg: bool) {
    let (_d, store) = store(pg);
    // A handler that listens for cancellation ...
    let (builder, started) = with_polite_handler(&store);
    let (stop, worker) = spawn(
        builder
            // ... and one that does not: dropped after the stop grace.
            .handle_fn("deaf", |_ctx, _p| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(Value::Null)
            })
            .queue("q", 2)
            .lease(Duration::from_secs(2))
            .heartbeat_interval(Duration::from_millis(20)),
    );
    let polite = store.enqueue(&NewJob::new("q", "polite")).unwrap();
    let deaf = store.enqueue(&NewJob::new("q", "deaf")).unwrap();
    started.notified().await;
    until("deaf running", || state(&store, deaf) == JobState::Running).await;
    store.cancel(polite).unwrap();
    store.cancel(deaf).unwrap();
    until("both cancelled", || {
        state(&store, polite) == JobState::Cancelled && state(&store, deaf) == JobState::Cancelled
    })
    .await;
    let p = store.get(polite).unwrap();
    assert_eq!(p.attempt_log[0].outcome, "cancelled");
    assert!(p
        .last_error
        .unwrap()
        .contains("cancelled while running: stopped on request"));
    stop.cancel();
    let report = worker.await.unwrap().unwrap();
    assert_eq!(report.cancelled, 2);
}

async fn a_cancel_in_the_same_process_stops_the_run_before_the_next_heartbeat(pg: bool) {
    let (_d, store) = store(pg);
    let (builder, started) = with_polite_handler(&store);
    let (stop, worker) = spawn(
        builder
            .queue("q", 1)
            // The next heartbeat is a minute away; `until` gives up after 10 s.
            .lease(Duration::from_secs(180))
            .heartbeat_interval(Duration::from_secs(60)),
    );
    let id = store.enqueue(&NewJob::new("q", "polite")).unwrap();
    started.notified().await;
    assert_eq!(store.cancel(id).unwrap(), CancelOutcome::Requested);
    until("cancelled without waiting for a heartbeat", || {
        state(&store, id) == JobState::Cancelled
    })
    .await;
    stop.cancel();
    assert_eq!(worker.await.unwrap().unwrap().cancelled, 1);
}

async fn a_lost_lease_stops_the_run_and_discards_its_result(pg: bool) {
    let (_d, store, clock) = manual_store(pg);
    let release = Arc::new(tokio::sync::Notify::new());
    let r = release.clone();
    let (stop, worker) = spawn(
        Worker::builder(store.clone())
            .handle_fn("slow", move |ctx, _p| {
                let r = r.clone();
                async move {
                    if ctx.attempt() == 1 {
                        r.notified().await; // never comes: the lease is lost first
                    }
                    Ok(json!({"attempt": ctx.attempt()}))
                }
            })
            .queue("q", 1)
            .lease(Duration::from_secs(10))
            .heartbeat_interval(Duration::from_millis(20))
            .reap_interval(Duration::from_secs(3600)),
    );
    let id = store.enqueue(&NewJob::new("q", "slow")).unwrap();
    until("running", || state(&store, id) == JobState::Running).await;
    // The worker "stalls" past its lease (simulated) and the job is reaped.
    // (A heartbeat landing between the clock step and the reap extends the
    // lease from the new time — on a loaded machine it can — so step again.)
    let mut reaped = Vec::new();
    for _ in 0..50 {
        clock.advance(Duration::from_secs(11));
        reaped = store.reap().unwrap().requeued;
        if !reaped.is_empty() {
            break;
        }
    }
    assert_eq!(reaped, vec![id]);
    // The heartbeat finds the lease lost and stops the first run; the job,
    // ready again, runs a second time and that result is kept.
    until("succeeded on try 2", || {
        store.get(id).unwrap().state == JobState::Succeeded
    })
    .await;
    let job = store.get(id).unwrap();
    assert_eq!(job.result, Some(json!({"attempt": 2})));
    let outcomes: Vec<&str> = job.attempt_log.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["lost", "succeeded"]);
    stop.cancel();
    let report = worker.await.unwrap().unwrap();
    assert_eq!(report.lost, 1);
    assert_eq!(report.succeeded, 1);
}

async fn concurrency_limits_per_queue_and_global_are_never_exceeded(pg: bool) {
    let (_d, store) = store(pg);
    #[derive(Default)]
    struct Gauge {
        now: AtomicUsize,
        max: AtomicUsize,
    }
    let gauges: Arc<[Gauge; 3]> = Arc::new(Default::default()); // pdf, email, all
    let g = gauges.clone();
    let (stop, worker) = spawn(
        Worker::builder(store.clone())
            .handle_fn("work", move |ctx, _p| {
                let g = g.clone();
                async move {
                    let mine = if ctx.queue() == "pdf" { 0 } else { 1 };
                    for i in [mine, 2] {
                        let n = g[i].now.fetch_add(1, Ordering::SeqCst) + 1;
                        g[i].max.fetch_max(n, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    for i in [mine, 2] {
                        g[i].now.fetch_sub(1, Ordering::SeqCst);
                    }
                    Ok(Value::Null)
                }
            })
            .queue("pdf", 2)
            .queue("email", 5)
            .max_concurrency(6),
    );
    let jobs: Vec<NewJob> = (0..40)
        .flat_map(|_| [NewJob::new("pdf", "work"), NewJob::new("email", "work")])
        .collect();
    store.enqueue_many(&jobs).unwrap();
    until("all done", || {
        let s = store.stats().unwrap();
        ["pdf", "email"]
            .iter()
            .all(|q| s.queue(q).map(|q| q.succeeded) == Some(40))
    })
    .await;
    stop.cancel();
    worker.await.unwrap().unwrap();
    let max: Vec<usize> = gauges
        .iter()
        .map(|g| g.max.load(Ordering::SeqCst))
        .collect();
    eprintln!(
        "max simultaneous runs: pdf {}, email {}, all {}",
        max[0], max[1], max[2]
    );
    assert!(max[0] <= 2 && max[1] <= 5 && max[2] <= 6, "{max:?}");
    assert_eq!(max[0], 2, "the pdf limit was reached");
    assert!(max[2] >= 5, "jobs ran side by side: {max:?}");
    // The runtime's completions, counted in the rollups with their run
    // time (each run slept 10 ms) from the claims' times.
    for r in store.rollup_totals().unwrap() {
        assert_eq!(
            (r.queue.as_str(), r.succeeded),
            (r.queue.as_str(), 40),
            "{r:?}"
        );
        assert_eq!(r.tries(), 40);
        assert!(r.run_ms >= 400, "{r:?}");
        // Each ran 10 ms or more, in whole ms: the first bucket (up to
        // 10 ms) holds only runs of exactly 10.
        assert!(r.run[0] * 10 + (40 - r.run[0]) * 11 <= r.run_ms, "{r:?}");
    }
    assert_eq!(store.rollup_totals().unwrap().len(), 2);
}

/// A worker whose `nap` jobs sleep the payload's `ms`, with `slots` slots
/// in queue `q` and a shutdown grace of `grace`.
fn napper(store: &Store, slots: usize, grace: Duration) -> WorkerBuilder {
    Worker::builder(store.clone())
        .handle_fn("nap", |_ctx, p| async move {
            let ms = p["ms"].as_u64().unwrap();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(json!({"slept": ms}))
        })
        .queue("q", slots)
        .shutdown_grace(grace)
}

/// A `nap` job of `ms`.
fn nap(ms: u64) -> NewJob {
    NewJob::new("q", "nap").payload(&json!({ "ms": ms }))
}

async fn shutdown_lets_short_jobs_finish_and_releases_the_rest(pg: bool) {
    let (_d, store) = store(pg);
    let (stop, worker) = spawn(napper(&store, 4, Duration::from_millis(300)));
    let short = store.enqueue(&nap(100)).unwrap();
    let long = store.enqueue(&nap(3_600_000)).unwrap();
    until("both running", || {
        state(&store, short) == JobState::Running && state(&store, long) == JobState::Running
    })
    .await;
    let t = Instant::now();
    stop.cancel();
    let report = worker.await.unwrap().unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(state(&store, short), JobState::Succeeded);
    let l = store.get(long).unwrap();
    assert_eq!(l.state, JobState::Ready, "released for another worker");
    assert_eq!(l.attempt_log[0].outcome, "released");
    assert_eq!((report.succeeded, report.released), (1, 1));
}

async fn an_enqueue_wakes_an_idle_worker_at_once(pg: bool) {
    let (_d, store) = store(pg);
    let (stop, worker) = spawn(
        Worker::builder(store.clone())
            .handle_fn("noop", |_ctx, _p| async { Ok(Value::Null) })
            .queue("q", 1)
            // No help from polling: only the in-process wake-up can do it.
            .poll_interval(Duration::from_secs(3600)),
    );
    tokio::time::sleep(Duration::from_millis(100)).await; // idle
    let t = Instant::now();
    let id = store.enqueue(&NewJob::new("q", "noop")).unwrap();
    until("done", || state(&store, id) == JobState::Succeeded).await;
    assert!(t.elapsed() < Duration::from_secs(5));
    stop.cancel();
    worker.await.unwrap().unwrap();
}

#[tokio::test]
async fn bad_worker_configuration_is_refused() {
    let (_d, store) = store(false);
    let err = |b: jobd::worker::WorkerBuilder| async move {
        b.run(async {}).await.unwrap_err().to_string()
    };
    assert!(err(Worker::builder(store.clone()))
        .await
        .contains("at least one queue"));
    assert!(err(Worker::builder(store.clone()).queue("q", 0))
        .await
        .contains("concurrency of at least 1"));
    assert!(
        err(Worker::builder(store.clone()).queue("q", 1).queue("q", 2))
            .await
            .contains("listed twice")
    );
    assert!(err(Worker::builder(store.clone())
        .queue("q", 1)
        .lease(Duration::from_secs(1))
        .heartbeat_interval(Duration::from_secs(1)))
    .await
    .contains("at most half the lease"));
}

/// What enqueueing checks a job against: the queues and kinds of a worker
/// configuration (with its handlers' payload types), and what the live
/// workers on the file registered — a worker that stopped, or stopped
/// heartbeating, no longer counts; a queue and a kind must be one worker's.
async fn a_catalog_refuses_jobs_no_worker_could_run(pg: bool) {
    let (_d, store, clock) = manual_store(pg);
    let catalog = Worker::builder(store.clone())
        .handler::<Adder>()
        .queue("math", 1)
        .catalog();
    let check = |queue: &str, kind: &str, payload: Value| {
        catalog
            .checker(&store)
            .check_job(&NewJob::new(queue, kind).payload(&payload))
            .map_err(|e| e.to_string())
    };
    check("math", "add", json!({"a": 1, "b": 2})).unwrap();
    let err = check("math", "add", json!({"a": "one", "b": 2})).unwrap_err();
    assert!(
        err.starts_with("invalid payload: payload does not fit job kind 'add': invalid type"),
        "{err}"
    );
    let err = check("mail", "add", json!({"a": 1, "b": 2})).unwrap_err();
    assert_eq!(
        err,
        "invalid queue: unknown queue \"mail\": no worker serves it (the configured queues \
         are math; no live worker on the file serves it either)"
    );
    let err = check("math", "send", json!({})).unwrap_err();
    assert!(
        err.starts_with("invalid kind: unknown job kind \"send\""),
        "{err}"
    );
    let err = check("bad queue", "add", json!({})).unwrap_err();
    assert!(err.contains("invalid queue"), "{err}");

    // A worker of another configuration serves "mail" and runs "send".
    let (stop, worker) = spawn(
        Worker::builder(store.clone())
            .handle_fn("send", |_ctx, _p| async { Ok(Value::Null) })
            .queue("mail", 1),
    );
    until("the mail worker registered", || {
        store.live_work().unwrap().serves("mail")
    })
    .await;
    check("mail", "send", json!({"to": "a@b.c"})).unwrap();
    // Its queue and its kind, each known, but not to one worker: the math
    // worker would claim a "send" job and fail it, the mail worker an "add".
    let err = check("math", "send", json!({})).unwrap_err();
    assert_eq!(
        err,
        "invalid kind: no worker runs job kind \"send\" on queue \"math\": the workers that \
         serve \"math\" run add, and those that run \"send\" serve mail (a worker that claims a \
         job it has no handler for fails it)"
    );
    let err = check("mail", "add", json!({"a": 1, "b": 2})).unwrap_err();
    assert!(
        err.contains(
            "the workers that serve \"mail\" run send, and those that run \"add\" serve math"
        ),
        "{err}"
    );
    stop.cancel();
    worker.await.unwrap().unwrap();
    assert!(check("mail", "send", json!({})).is_err(), "deregistered");

    // One that crashed: registered, then its heartbeat went stale.
    store
        .register_worker("crashed", "host", 1, &["mail"], &["send"])
        .unwrap();
    check("mail", "send", json!({})).unwrap();
    clock.advance(Duration::from_secs(31));
    assert!(check("mail", "send", json!({})).is_err(), "no longer live");
    assert!(
        store.live_work().unwrap().workers.is_empty(),
        "{:?}",
        store.live_work()
    );
}

/// Workers with different handlers may serve one queue.  One that claims a
/// job of a kind it has no handler for hands it back — the try not counted,
/// the job held back a moment — when a live worker serving the queue runs
/// that kind, which then runs it; with no such worker the job fails for
/// good at once, as before.
async fn a_job_claimed_by_a_worker_without_its_handler_goes_to_one_with_it(pg: bool) {
    let (_d, store, clock) = manual_store(pg);
    // A worker of another process serves "q" and runs "render".
    store
        .register_worker("renderer", "host", 1, &["q"], &["render"])
        .unwrap();
    let id = store
        .enqueue(&NewJob::new("q", "render").max_attempts(2))
        .unwrap();
    let mailer = || {
        Worker::builder(store.clone())
            .handle_fn("send", |_ctx, _p| async { Ok(Value::Null) })
            .queue("q", 1)
    };
    let (stop, worker) = spawn(mailer());
    until("handed back", || state(&store, id) == JobState::Scheduled).await;
    stop.cancel();
    worker.await.unwrap().unwrap();
    let job = store.get(id).unwrap();
    assert_eq!(job.run_at, clock.now_ms() + 1_000, "held back 1 s");
    assert_eq!(
        (job.attempts, job.attempt_limit),
        (1, 3),
        "the try is not counted"
    );
    assert_eq!(job.attempt_log.len(), 1);
    assert_eq!(job.attempt_log[0].outcome, "released");
    let note = job.attempt_log[0].error.clone().unwrap_or_default();
    assert!(note.contains("no handler for job kind 'render'"), "{note}");

    // The renderer (here, in this process) runs it once it is due.
    store.deregister_worker("renderer").unwrap();
    let (stop, worker) = spawn(
        Worker::builder(store.clone())
            .handle_fn("render", |_ctx, _p| async { Ok(json!("rendered")) })
            .queue("q", 1),
    );
    clock.advance(Duration::from_secs(1));
    store.notify_work();
    until("rendered", || state(&store, id) == JobState::Succeeded).await;
    stop.cancel();
    worker.await.unwrap().unwrap();
    assert_eq!(store.get(id).unwrap().result, Some(json!("rendered")));

    // No live worker runs "render" now: a job of it fails for good at once.
    let id = store.enqueue(&NewJob::new("q", "render")).unwrap();
    let (stop, worker) = spawn(mailer());
    until("dead", || state(&store, id) == JobState::Dead).await;
    stop.cancel();
    worker.await.unwrap().unwrap();
    let error = store.get(id).unwrap().last_error.unwrap_or_default();
    assert!(
        error.contains("no handler for job kind 'render'"),
        "{error}"
    );
}

/// A handler whose blocking work ignores every signal to stop and returns
/// only when the test lets it (`release`), then says it did (`returned`).
fn stuck_handler(
    builder: WorkerBuilder,
) -> (
    WorkerBuilder,
    std::sync::mpsc::Sender<()>,
    Arc<std::sync::atomic::AtomicBool>,
) {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let wait = Arc::new(std::sync::Mutex::new(wait));
    let returned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = returned.clone();
    let builder = builder.handle_fn("stuck", move |ctx, _p| {
        let (wait, r) = (wait.clone(), r.clone());
        async move {
            ctx.blocking(move || {
                let _ = wait.lock().unwrap().recv();
                r.store(true, Ordering::SeqCst);
            })
            .await;
            Ok(Value::Null)
        }
    });
    (builder, release, returned)
}

async fn blocking_work_that_ignores_its_stop_keeps_the_slot_until_it_returns(pg: bool) {
    let (_d, store) = store(pg);
    let opts = jobd::worker::WorkerOptions {
        stop_grace: Duration::from_millis(50),
        ..Default::default()
    };
    let (builder, release, returned) =
        stuck_handler(Worker::builder(store.clone()).options(opts).queue("q", 1));
    // What the next job saw when it started: had the stuck work returned?
    let saw = Arc::new(std::sync::Mutex::new(None::<bool>));
    let (s, ret) = (saw.clone(), returned.clone());
    let (stop, worker) = spawn(builder.handle_fn("quick", move |_ctx, _p| {
        let (s, ret) = (s.clone(), ret.clone());
        async move {
            *s.lock().unwrap() = Some(ret.load(Ordering::SeqCst));
            Ok(Value::Null)
        }
    }));
    let stuck = store
        .enqueue(
            &NewJob::new("q", "stuck")
                .timeout(Duration::from_millis(100))
                .max_attempts(1),
        )
        .unwrap();
    until("stuck running", || {
        state(&store, stuck) == JobState::Running
    })
    .await;
    let quick = store.enqueue(&NewJob::new("q", "quick")).unwrap();
    // The try ends in the queue at once (nothing waits for the thread)...
    until("stuck try timed out", || {
        state(&store, stuck) == JobState::Dead
    })
    .await;
    assert_eq!(
        store.get(stuck).unwrap().last_error.as_deref(),
        Some("timed out after 100 ms")
    );
    // ...but the queue's one slot is still the stuck thread's.  (Before, the
    // next job started within milliseconds of the timeout, beside it.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state(&store, quick), JobState::Ready);
    release.send(()).unwrap();
    until("quick done", || state(&store, quick) == JobState::Succeeded).await;
    assert_eq!(
        *saw.lock().unwrap(),
        Some(true),
        "the next job started only once the stuck work had returned"
    );
    stop.cancel();
    let report = worker.await.unwrap().unwrap();
    assert_eq!((report.failed, report.succeeded), (1, 1));
    assert_eq!((report.overran, report.abandoned), (1, 0));
}

async fn a_worker_stops_within_its_grace_when_blocking_work_never_returns(pg: bool) {
    let (_d, store) = store(pg);
    let opts = jobd::worker::WorkerOptions {
        stop_grace: Duration::from_millis(50),
        shutdown_grace: Duration::from_millis(100),
        ..Default::default()
    };
    let (builder, release, returned) =
        stuck_handler(Worker::builder(store.clone()).options(opts).queue("q", 1));
    let (stop, worker) = spawn(builder);
    let id = store.enqueue(&NewJob::new("q", "stuck")).unwrap();
    until("running", || state(&store, id) == JobState::Running).await;
    let t = Instant::now();
    stop.cancel();
    let report = worker.await.unwrap().unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let job = store.get(id).unwrap();
    assert_eq!(job.state, JobState::Ready, "released for another worker");
    assert_eq!(
        (report.released, report.overran, report.abandoned),
        (1, 1, 1)
    );
    assert!(!returned.load(Ordering::SeqCst));
    // Let the thread go, or this test's runtime would wait for it forever
    // when it is dropped — what `Runtime::shutdown_timeout` is for.
    release.send(()).unwrap();
}

/// When the group commit of completions failed once ("could
/// not store completions; their leases will expire"), every job of the batch
/// ran again after its lease.  The commit is tried again with backoff while
/// the leases hold: here the file's write lock is held by another
/// connection past the busy timeout, then let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_that_fails_to_commit_once_is_stored_later_not_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let mut opts = StoreOptions::default();
    opts.connection.busy_timeout = Duration::from_millis(50);
    let store = Store::open_with(&path, opts).unwrap();
    let id = store.enqueue(&NewJob::new("q", "gated")).unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(tokio::sync::Notify::new());
    let builder = Worker::builder(store.clone())
        .handle_fn("gated", {
            let (runs, go) = (runs.clone(), go.clone());
            move |_ctx, _p: Value| {
                let (runs, go) = (runs.clone(), go.clone());
                async move {
                    if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                        go.notified().await;
                    }
                    Ok(Value::Null)
                }
            }
        })
        .queue("q", 1)
        .lease(Duration::from_secs(2))
        .heartbeat_interval(Duration::from_millis(200))
        .reap_interval(Duration::from_millis(100));
    let (stop, handle) = spawn(builder);
    until("the job runs", || runs.load(Ordering::SeqCst) == 1).await;

    // Another connection takes the write lock; the run ends; its completion
    // cannot commit for 600 ms (the busy timeout is 50 ms).
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    go.notify_one();
    tokio::time::sleep(Duration::from_millis(600)).await;
    blocker.execute_batch("COMMIT").unwrap();

    until("the job succeeds", || {
        state(&store, id) == JobState::Succeeded
    })
    .await;
    // Past the lease a re-run would have started by now.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the job ran once");
    let job = store.get(id).unwrap();
    let outcomes: Vec<_> = job.attempt_log.iter().map(|a| a.outcome.clone()).collect();
    assert_eq!(outcomes, ["succeeded"]);
}

/// Returns nothing: no result text is stored for it.
#[derive(Default)]
struct Quiet;

impl Handler for Quiet {
    const KIND: &'static str = "quiet";
    type Payload = serde::de::IgnoredAny;
    type Output = ();
    async fn run(&self, _: JobContext, _: serde::de::IgnoredAny) -> Result<(), JobError> {
        Ok(())
    }
}

async fn runs_that_finish_at_once_and_runs_that_wait_end_alike(pg: bool) {
    let (_d, store) = store(pg);
    let (stop, worker) = spawn(
        Worker::builder(store.clone())
            .handler::<Quiet>()
            .handle_fn("nap", |ctx, _p| async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(json!({ "slept": ctx.id() }))
            })
            .handle_fn("null", |_ctx, _p| async { Ok(Value::Null) })
            .queue("q", 4),
    );
    let mut ids = Vec::new();
    for i in 0..30 {
        let kind = ["quiet", "nap", "null"][i % 3];
        ids.push((kind, store.enqueue(&NewJob::new("q", kind)).unwrap()));
    }
    until("all done", || {
        ids.iter()
            .all(|(_, id)| state(&store, *id) == JobState::Succeeded)
    })
    .await;
    for (kind, id) in ids {
        let job = store.get(id).unwrap();
        match kind {
            "nap" => assert_eq!(job.result, Some(json!({ "slept": id }))),
            _ => assert_eq!(job.result, None, "{kind}: nothing to store"),
        }
        assert_eq!(job.attempt_log.len(), 1);
    }
    stop.cancel();
    let report = worker.await.unwrap().unwrap();
    assert_eq!(report.succeeded, 30);
}

async fn a_worker_future_dropped_before_shutdown_stops_like_a_shutdown(pg: bool) {
    let (_d, store) = store(pg);
    let (_stop, worker) = spawn(napper(&store, 2, Duration::from_millis(200)));
    let long = store.enqueue(&nap(3_600_000)).unwrap();
    until("running", || state(&store, long) == JobState::Running).await;
    // The future is dropped (its task aborted), not told to stop.
    worker.abort();
    assert!(worker.await.unwrap_err().is_cancelled());
    until("released at the end of the grace", || {
        state(&store, long) == JobState::Ready
    })
    .await;
    assert_eq!(store.get(long).unwrap().attempt_log[0].outcome, "released");
    // And it claims nothing more.
    let later = store.enqueue(&nap(1)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state(&store, later), JobState::Ready);
    assert_eq!(state(&store, long), JobState::Ready);
}

async fn runs_that_compute_before_they_wait_soon_run_side_by_side(pg: bool) {
    let (_d, store) = store(pg);
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (n, m) = (now.clone(), most.clone());
    let (stop, worker) = spawn(
        Worker::builder(store.clone())
            // Computes (here: sleeps the thread) without ever awaiting.
            .handle_fn("compute", move |_ctx, _p| {
                let (n, m) = (n.clone(), m.clone());
                async move {
                    m.fetch_max(n.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(30));
                    n.fetch_sub(1, Ordering::SeqCst);
                    Ok(Value::Null)
                }
            })
            .queue("q", 4),
    );
    let ids: Vec<i64> = (0..16)
        .map(|_| store.enqueue(&NewJob::new("q", "compute")).unwrap())
        .collect();
    until("all done", || {
        ids.iter()
            .all(|id| state(&store, *id) == JobState::Succeeded)
    })
    .await;
    stop.cancel();
    worker.await.unwrap().unwrap();
    // The first few run one after another on the worker's own thread; then
    // they start as tasks, two at a time on this runtime's two threads.
    assert!(most.load(Ordering::SeqCst) >= 2, "never ran side by side");
}

/// A worker on a current-thread runtime (`#[tokio::main(flavor = "current_thread")]`):
/// runs that wait go on as tasks of that one thread.
#[tokio::test(flavor = "current_thread")]
async fn a_worker_on_a_current_thread_runtime_runs_waiting_and_quick_jobs() {
    let (_d, store) = store(false);
    let (stop, worker) = spawn(
        Worker::builder(store.clone())
            .handler::<Quiet>()
            .handle_fn("nap", |_ctx, _p| async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok(json!("rested"))
            })
            .queue("q", 2),
    );
    let ids: Vec<i64> = (0..10)
        .map(|i| {
            let kind = if i % 2 == 0 { "nap" } else { "quiet" };
            store.enqueue(&NewJob::new("q", kind)).unwrap()
        })
        .collect();
    until("all done", || {
        ids.iter()
            .all(|id| state(&store, *id) == JobState::Succeeded)
    })
    .await;
    stop.cancel();
    assert_eq!(worker.await.unwrap().unwrap().succeeded, 10);
}

conformance!(
    a_run_past_its_timeout_is_stopped_and_fails_its_try,
    a_timed_out_try_tells_its_blocking_work_to_stop_before_the_next_run,
    a_panicking_handler_fails_its_try_and_the_worker_lives_on,
    an_unknown_kind_goes_dead_without_retries,
    retries_follow_the_backoff_in_simulated_time,
    cancelling_a_running_job_stops_it,
    a_cancel_in_the_same_process_stops_the_run_before_the_next_heartbeat,
    a_lost_lease_stops_the_run_and_discards_its_result,
    concurrency_limits_per_queue_and_global_are_never_exceeded,
    shutdown_lets_short_jobs_finish_and_releases_the_rest,
    an_enqueue_wakes_an_idle_worker_at_once,
    a_catalog_refuses_jobs_no_worker_could_run,
    a_job_claimed_by_a_worker_without_its_handler_goes_to_one_with_it,
    blocking_work_that_ignores_its_stop_keeps_the_slot_until_it_returns,
    a_worker_stops_within_its_grace_when_blocking_work_never_returns,
    runs_that_finish_at_once_and_runs_that_wait_end_alike,
    a_worker_future_dropped_before_shutdown_stops_like_a_shutdown,
    runs_that_compute_before_they_wait_soon_run_side_by_side,
);
