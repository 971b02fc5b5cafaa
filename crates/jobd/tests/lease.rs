//! Leases, fencing, backoff, retries, unique keys, cancel — all in simulated
//! time: the store's clock is a `ManualClock`, nothing sleeps.

use std::time::Duration;

use jobd::store::{
    Backoff, CancelOutcome, FailOutcome, JobSelection, JobState, ListFilter, NewJob, Progress,
    StatsReuse,
};
use jobd::{Clock, Error, ManualClock, Store, StoreOptions};
use serde_json::json;

const T0: i64 = 1_700_000_000_000;
const LEASE: Duration = Duration::from_secs(30);

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    clock: ManualClock,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = Store::open_with(
        dir.path().join("queue.db"),
        StoreOptions::default().clock(clock.clone()),
    )
    .unwrap();
    Fixture {
        _dir: dir,
        store,
        clock,
    }
}

fn count(store: &Store, sql: &str) -> i64 {
    store
        .connection()
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

fn outcomes(store: &Store, id: i64) -> Vec<String> {
    store
        .get(id)
        .unwrap()
        .attempt_log
        .into_iter()
        .map(|a| a.outcome)
        .collect()
}

#[test]
fn expired_lease_is_reaped_and_the_job_runs_again() {
    let f = fixture();
    let id = f.store.enqueue(&NewJob::new("q", "k")).unwrap();
    let first = f.store.claim("w1", &["q"], 1, LEASE).unwrap();
    assert_eq!(first[0].id, id);
    assert_eq!(first[0].attempt, 1);
    assert_eq!(f.store.get(id).unwrap().state, JobState::Running);

    f.clock.advance(LEASE - Duration::from_millis(1));
    assert_eq!(f.store.reap().unwrap().total(), 0, "lease still valid");
    assert!(
        f.store.claim("w2", &["q"], 1, LEASE).unwrap().is_empty(),
        "a leased job is not handed out twice"
    );

    f.clock.advance(Duration::from_millis(1));
    let report = f.store.reap().unwrap();
    assert_eq!(report.requeued, vec![id]);
    let job = f.store.get(id).unwrap();
    assert_eq!(job.state, JobState::Ready);
    assert_eq!(outcomes(&f.store, id), ["lost"]);
    assert_eq!(job.attempt_log[0].worker.as_deref(), Some("w1"));
    assert!(job.last_error.unwrap().contains("w1 stopped heartbeating"));

    let second = f.store.claim("w2", &["q"], 1, LEASE).unwrap();
    assert_eq!(second[0].attempt, 2);
    f.store
        .complete(id, second[0].lease_token, Some(&json!({"ok": true})))
        .unwrap();
    let job = f.store.get(id).unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.result, Some(json!({"ok": true})));
    assert_eq!(outcomes(&f.store, id), ["lost", "succeeded"]);
}

#[test]
fn heartbeat_extends_the_lease() {
    let f = fixture();
    let id = f.store.enqueue(&NewJob::new("q", "k")).unwrap();
    let job = f.store.claim("w1", &["q"], 1, LEASE).unwrap().remove(0);
    for _ in 0..10 {
        f.clock.advance(Duration::from_secs(20));
        let hb = f.store.heartbeat(id, job.lease_token, LEASE).unwrap();
        assert!(!hb.cancel_requested);
        assert_eq!(f.store.reap().unwrap().total(), 0);
    }
    f.store.complete(id, job.lease_token, None).unwrap();
}

#[test]
fn a_stale_worker_is_fenced_off_and_changes_nothing() {
    let f = fixture();
    let id = f.store.enqueue(&NewJob::new("q", "k")).unwrap();
    let stale = f.store.claim("slow", &["q"], 1, LEASE).unwrap().remove(0);
    f.clock.advance(LEASE);
    f.store.reap().unwrap();
    let fresh = f.store.claim("fast", &["q"], 1, LEASE).unwrap().remove(0);
    assert_ne!(stale.lease_token, fresh.lease_token);

    let before = f.store.get(id).unwrap();
    let lost = |r: Result<(), Error>| {
        assert!(
            matches!(r, Err(Error::LeaseLost { job_id }) if job_id == id),
            "{r:?}"
        )
    };
    lost(
        f.store
            .complete(id, stale.lease_token, Some(&json!("stale"))),
    );
    lost(
        f.store
            .fail(id, stale.lease_token, "stale", true)
            .map(|_| ()),
    );
    lost(f.store.heartbeat(id, stale.lease_token, LEASE).map(|_| ()));
    lost(f.store.set_progress(
        id,
        stale.lease_token,
        &Progress {
            percent: Some(50.0),
            ..Default::default()
        },
    ));
    lost(f.store.release(id, stale.lease_token));
    lost(f.store.cancelled(id, stale.lease_token, "stale"));
    assert_eq!(
        f.store.get(id).unwrap(),
        before,
        "refused calls changed the job"
    );

    f.store
        .complete(id, fresh.lease_token, Some(&json!("fresh")))
        .unwrap();
    assert_eq!(f.store.get(id).unwrap().result, Some(json!("fresh")));
    // After completion, the fresh token is spent too.
    lost(f.store.complete(id, fresh.lease_token, None));
}

#[test]
fn retries_follow_the_exponential_backoff_then_the_job_dies() {
    let f = fixture();
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
    let id = f
        .store
        .enqueue(&NewJob::new("q", "k").max_attempts(5).backoff(backoff))
        .unwrap();
    let mut delays = Vec::new();
    for attempt in 1..=5 {
        let job = f.store.claim("w", &["q"], 1, LEASE).unwrap().remove(0);
        assert_eq!(job.attempt, attempt);
        let now = f.clock.now_ms();
        match f
            .store
            .fail(id, job.lease_token, &format!("boom {attempt}"), true)
            .unwrap()
        {
            FailOutcome::Retrying { run_at } => {
                let delay = run_at - now;
                let nominal = backoff.nominal_ms(attempt);
                assert_eq!(nominal, [1000, 2000, 4000, 5000][attempt as usize - 1]);
                assert!(
                    delay >= nominal * 3 / 4 && delay < nominal * 5 / 4 + 1 && delay <= 5000,
                    "{delay} vs {nominal}"
                );
                delays.push(delay);
                assert_eq!(f.store.get(id).unwrap().state, JobState::Scheduled);
                // Not before its time...
                f.clock.set(run_at - 1);
                assert!(f.store.claim("w", &["q"], 1, LEASE).unwrap().is_empty());
                // ...and right on time.
                f.clock.set(run_at);
            }
            FailOutcome::Dead => {
                assert_eq!(attempt, 5);
                let job = f.store.get(id).unwrap();
                assert_eq!(job.state, JobState::Dead);
                assert_eq!(job.last_error.as_deref(), Some("boom 5"));
                assert_eq!(outcomes(&f.store, id), ["failed"; 5]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(delays.len(), 4);
    assert!(
        f.store.claim("w", &["q"], 1, LEASE).unwrap().is_empty(),
        "dead jobs are not claimed"
    );
}

#[test]
fn jitter_spreads_retries_of_different_jobs() {
    let b = Backoff::new(Duration::from_secs(10), Duration::from_secs(100));
    let delays: std::collections::BTreeSet<i64> = (1..50).map(|id| b.delay_ms(id, 1)).collect();
    assert!(
        delays.len() > 40,
        "jitter should differ per job: {delays:?}"
    );
    assert!(delays.iter().all(|d| (7500..12500).contains(d)));
}

#[test]
fn a_non_retryable_failure_is_dead_at_once() {
    let f = fixture();
    let id = f
        .store
        .enqueue(&NewJob::new("q", "k").max_attempts(10))
        .unwrap();
    let job = f.store.claim("w", &["q"], 1, LEASE).unwrap().remove(0);
    assert_eq!(
        f.store
            .fail(id, job.lease_token, "unknown template 42", false)
            .unwrap(),
        FailOutcome::Dead
    );
    assert_eq!(f.store.get(id).unwrap().state, JobState::Dead);
}

#[test]
fn a_job_that_kills_its_worker_every_time_ends_dead() {
    let f = fixture();
    let id = f
        .store
        .enqueue(&NewJob::new("q", "k").max_attempts(3))
        .unwrap();
    for attempt in 1..=3 {
        let job = f.store.claim("w", &["q"], 1, LEASE).unwrap().remove(0);
        assert_eq!(job.attempt, attempt);
        f.clock.advance(LEASE);
        let report = f.store.reap().unwrap();
        if attempt < 3 {
            assert_eq!(report.requeued, vec![id]);
        } else {
            assert_eq!(report.dead, vec![id]);
        }
    }
    let job = f.store.get(id).unwrap();
    assert_eq!(job.state, JobState::Dead);
    assert!(job.last_error.unwrap().contains("out of tries"));
    assert_eq!(outcomes(&f.store, id), ["lost"; 3]);
    assert!(f.store.claim("w", &["q"], 1, LEASE).unwrap().is_empty());
}

#[test]
fn unique_keys_return_the_live_job() {
    let f = fixture();
    let job = || NewJob::new("q", "backup").unique_key("backup:tenant-1");
    let a = f.store.enqueue(&job()).unwrap();
    let b = f
        .store
        .enqueue(&job().payload(&json!({"other": 1})))
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(count(&f.store, "SELECT count(*) FROM jobs"), 1);
    // Still held while running.
    let claimed = f.store.claim("w", &["q"], 1, LEASE).unwrap().remove(0);
    assert_eq!(f.store.enqueue(&job()).unwrap(), a);
    // Released once the job is finished.
    f.store.complete(a, claimed.lease_token, None).unwrap();
    let c = f.store.enqueue(&job()).unwrap();
    assert_ne!(c, a);
    // In a batch too, including twice inside the same batch.
    let ids = f
        .store
        .enqueue_many(&[job(), job(), NewJob::new("q", "other")])
        .unwrap();
    assert_eq!(ids[0], c);
    assert_eq!(ids[1], c);
    assert_ne!(ids[2], c);
}

#[test]
fn reviving_a_dead_job_whose_key_is_taken_is_a_conflict() {
    let f = fixture();
    let job = || NewJob::new("q", "k").unique_key("once").max_attempts(1);
    let a = f.store.enqueue(&job()).unwrap();
    let t = f.store.claim("w", &["q"], 1, LEASE).unwrap().remove(0);
    f.store.fail(a, t.lease_token, "x", true).unwrap();
    let b = f.store.enqueue(&job()).unwrap();
    assert_ne!(a, b);
    match f.store.retry(a) {
        Err(Error::Conflict { job_id, .. }) => assert_eq!(job_id, b),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        f.store.get(a).unwrap().state,
        JobState::Dead,
        "nothing changed"
    );
}

#[test]
fn cancel_a_waiting_job_and_a_running_one() {
    let f = fixture();
    let waiting = f
        .store
        .enqueue(&NewJob::new("q", "k").delay(Duration::from_secs(60)))
        .unwrap();
    assert_eq!(f.store.cancel(waiting).unwrap(), CancelOutcome::Cancelled);
    assert_eq!(
        f.store.cancel(waiting).unwrap(),
        CancelOutcome::AlreadyCancelled
    );
    f.clock.advance(Duration::from_secs(120));
    let running = f.store.enqueue(&NewJob::new("q", "k")).unwrap();
    let t = f.store.claim("w", &["q"], 10, LEASE).unwrap();
    assert_eq!(t.len(), 1, "the cancelled job is not claimed");
    assert_eq!(f.store.cancel(running).unwrap(), CancelOutcome::Requested);
    assert!(
        f.store
            .heartbeat(running, t[0].lease_token, LEASE)
            .unwrap()
            .cancel_requested
    );
    f.store
        .cancelled(running, t[0].lease_token, "stopped at the user's request")
        .unwrap();
    assert_eq!(f.store.get(running).unwrap().state, JobState::Cancelled);
    assert_eq!(outcomes(&f.store, running), ["cancelled"]);

    assert!(matches!(
        f.store.cancel(999),
        Err(Error::NotFound { job_id: 999 })
    ));
    let done = f.store.enqueue(&NewJob::new("q", "k")).unwrap();
    let t = f.store.claim("w", &["q"], 1, LEASE).unwrap().remove(0);
    f.store.complete(done, t.lease_token, None).unwrap();
    assert!(matches!(
        f.store.cancel(done),
        Err(Error::InvalidState { .. })
    ));
}

#[test]
fn a_running_job_flagged_for_cancel_is_cancelled_when_its_worker_dies_or_fails() {
    let f = fixture();
    let a = f.store.enqueue(&NewJob::new("q", "k")).unwrap();
    let b = f.store.enqueue(&NewJob::new("q", "k")).unwrap();
    let claimed = f.store.claim("w", &["q"], 2, LEASE).unwrap();
    f.store.cancel(a).unwrap();
    f.store.cancel(b).unwrap();
    let tb = claimed.iter().find(|j| j.id == b).unwrap().lease_token;
    assert_eq!(
        f.store.fail(b, tb, "interrupted", true).unwrap(),
        FailOutcome::Cancelled
    );
    f.clock.advance(LEASE);
    assert_eq!(f.store.reap().unwrap().cancelled, vec![a]);
    assert_eq!(f.store.get(a).unwrap().state, JobState::Cancelled);
}

#[test]
fn retry_revives_dead_and_cancelled_jobs_with_fresh_tries() {
    let f = fixture();
    let id = f
        .store
        .enqueue(&NewJob::new("q", "k").max_attempts(2))
        .unwrap();
    for _ in 0..2 {
        let t = f.store.claim("w", &["q"], 1, LEASE).unwrap().remove(0);
        f.store.fail(id, t.lease_token, "boom", true).unwrap();
        f.clock.advance(Duration::from_secs(3600));
    }
    assert_eq!(f.store.get(id).unwrap().state, JobState::Dead);
    assert!(matches!(f.store.retry(id + 1), Err(Error::NotFound { .. })));
    f.store.retry(id).unwrap();
    let job = f.store.get(id).unwrap();
    assert_eq!(
        (job.state, job.attempts, job.attempt_limit),
        (JobState::Ready, 2, 4)
    );
    assert!(
        matches!(f.store.retry(id), Err(Error::InvalidState { .. })),
        "a ready job cannot be retried"
    );
    let t = f.store.claim("w", &["q"], 1, LEASE).unwrap().remove(0);
    assert_eq!(t.attempt, 3);
    // Fresh tries: a retryable failure is retried again, not dead.
    assert!(matches!(
        f.store.fail(id, t.lease_token, "boom", true).unwrap(),
        FailOutcome::Retrying { .. }
    ));
}

#[test]
fn release_gives_the_job_back_without_counting_the_try() {
    let f = fixture();
    let id = f
        .store
        .enqueue(&NewJob::new("q", "k").max_attempts(1))
        .unwrap();
    let t = f.store.claim("w", &["q"], 1, LEASE).unwrap().remove(0);
    f.store.release(id, t.lease_token).unwrap();
    assert_eq!(f.store.get(id).unwrap().state, JobState::Ready);
    let t = f.store.claim("w2", &["q"], 1, LEASE).unwrap().remove(0);
    assert_eq!((t.attempt, t.attempt_limit), (2, 2));
    f.store.complete(id, t.lease_token, None).unwrap();
    assert_eq!(outcomes(&f.store, id), ["released", "succeeded"]);
}

#[test]
fn claim_order_is_priority_then_run_at_then_id_and_delayed_jobs_wait() {
    let f = fixture();
    let low = f
        .store
        .enqueue(&NewJob::new("q", "k").priority(10))
        .unwrap();
    let later = f
        .store
        .enqueue(&NewJob::new("q", "k").delay(Duration::from_secs(5)))
        .unwrap();
    let first = f.store.enqueue(&NewJob::new("q", "k")).unwrap();
    let urgent = f
        .store
        .enqueue(&NewJob::new("q", "k").priority(-5))
        .unwrap();
    let second = f.store.enqueue(&NewJob::new("q", "k")).unwrap();
    let order: Vec<i64> = (0..4)
        .map(|_| f.store.claim("w", &["q"], 1, LEASE).unwrap()[0].id)
        .collect();
    assert_eq!(order, [urgent, first, second, low]);
    assert!(f.store.claim("w", &["q"], 1, LEASE).unwrap().is_empty());
    f.clock.advance(Duration::from_secs(5));
    assert_eq!(f.store.claim("w", &["q"], 5, LEASE).unwrap()[0].id, later);
}

#[test]
fn claim_batches_across_queues_in_the_order_given() {
    let f = fixture();
    let a: Vec<i64> = (0..3)
        .map(|_| f.store.enqueue(&NewJob::new("a", "k")).unwrap())
        .collect();
    let b: Vec<i64> = (0..3)
        .map(|_| f.store.enqueue(&NewJob::new("b", "k")).unwrap())
        .collect();
    let got = f.store.claim("w", &["b", "a"], 4, LEASE).unwrap();
    let ids: std::collections::BTreeSet<i64> = got.iter().map(|j| j.id).collect();
    assert_eq!(ids.len(), 4);
    assert!(b.iter().all(|id| ids.contains(id)));
    assert_eq!(a.iter().filter(|id| ids.contains(id)).count(), 1);
    assert_eq!(
        f.store.claim("w", &["c"], 4, LEASE).unwrap().len(),
        0,
        "an empty queue gives nothing"
    );
}

#[test]
fn paused_queues_are_skipped() {
    let f = fixture();
    f.store.enqueue(&NewJob::new("pdf", "k")).unwrap();
    f.store.pause("pdf").unwrap();
    assert!(f.store.claim("w", &["pdf"], 1, LEASE).unwrap().is_empty());
    assert!(f.store.stats().unwrap().queue("pdf").unwrap().paused);
    f.store.resume("pdf").unwrap();
    assert_eq!(f.store.claim("w", &["pdf"], 1, LEASE).unwrap().len(), 1);
}

#[test]
fn a_queue_concurrency_limit_holds_across_workers_and_frees_with_each_end() {
    let f = fixture();
    let s = &f.store;
    for _ in 0..6 {
        s.enqueue(&NewJob::new("pdf", "k")).unwrap();
    }
    s.enqueue(&NewJob::new("mail", "k")).unwrap();
    s.set_concurrency("pdf", Some(2)).unwrap();
    assert_eq!(
        s.stats().unwrap().queue("pdf").unwrap().concurrency,
        Some(2)
    );

    // Two workers (any process: the limit is counted in the file) ask for more.
    let first = s.claim("w1", &["pdf"], 10, LEASE).unwrap();
    assert_eq!(first.len(), 2, "only up to the limit");
    assert!(s.claim("w2", &["pdf"], 10, LEASE).unwrap().is_empty());
    // Another queue in the same claim is not held back by it.
    let mixed = s.claim("w2", &["pdf", "mail"], 10, LEASE).unwrap();
    assert_eq!(mixed.len(), 1);
    assert_eq!(mixed[0].queue, "mail");
    s.complete(mixed[0].id, mixed[0].lease_token, None).unwrap();

    // Each try that ends, however it ends, frees its slot for one job.
    s.complete(first[0].id, first[0].lease_token, None).unwrap();
    let second = s.claim("w2", &["pdf"], 10, LEASE).unwrap();
    assert_eq!(second.len(), 1);
    s.fail(first[1].id, first[1].lease_token, "boom", false)
        .unwrap();
    assert_eq!(s.claim("w1", &["pdf"], 10, LEASE).unwrap().len(), 1);
    assert!(s.claim("w1", &["pdf"], 10, LEASE).unwrap().is_empty());

    // An expired lease keeps its slot until the reaper gives the job back.
    f.clock.advance(LEASE + Duration::from_secs(1));
    assert!(s.claim("w3", &["pdf"], 10, LEASE).unwrap().is_empty());
    assert_eq!(s.reap().unwrap().requeued.len(), 2);
    assert_eq!(s.claim("w3", &["pdf"], 10, LEASE).unwrap().len(), 2);

    // Lowered below what runs: nothing new starts until they end.
    s.set_concurrency("pdf", Some(1)).unwrap();
    assert!(s.claim("w3", &["pdf"], 10, LEASE).unwrap().is_empty());
    // Lifted: the rest of the backlog at once.
    s.set_concurrency("pdf", None).unwrap();
    assert_eq!(s.stats().unwrap().queue("pdf").unwrap().concurrency, None);
    assert_eq!(s.claim("w3", &["pdf"], 10, LEASE).unwrap().len(), 2);
    assert_eq!(
        count(
            s,
            "SELECT count(*) FROM jobs WHERE queue = 'pdf' AND state = 'running'"
        ),
        4
    );

    // A bad limit is refused and changes nothing.
    assert!(matches!(
        s.set_concurrency("pdf", Some(0)),
        Err(Error::InvalidInput { .. })
    ));
    assert_eq!(s.stats().unwrap().queue("pdf").unwrap().concurrency, None);
}

#[test]
fn progress_is_stored_and_logged() {
    let f = fixture();
    let id = f.store.enqueue(&NewJob::new("q", "k")).unwrap();
    let t = f.store.claim("w", &["q"], 1, LEASE).unwrap().remove(0);
    for (pct, stage) in [(10.0, "reading"), (60.0, "rendering")] {
        let p = Progress {
            percent: Some(pct),
            stage: Some(stage.into()),
            detail: Some(format!("{pct}%")),
        };
        f.store.set_progress(id, t.lease_token, &p).unwrap();
    }
    let job = f.store.get(id).unwrap();
    assert_eq!(job.progress.percent, Some(60.0));
    assert_eq!(job.progress.stage.as_deref(), Some("rendering"));
    assert_eq!(count(&f.store, "SELECT count(*) FROM progress"), 2);
    let bad = Progress {
        percent: Some(140.0),
        ..Default::default()
    };
    assert!(matches!(
        f.store.set_progress(id, t.lease_token, &bad),
        Err(Error::InvalidInput { .. })
    ));
    assert_eq!(count(&f.store, "SELECT count(*) FROM progress"), 2);
}

#[test]
fn complete_many_skips_lost_leases() {
    let f = fixture();
    for _ in 0..3 {
        f.store.enqueue(&NewJob::new("q", "k")).unwrap();
    }
    let jobs = f.store.claim("w", &["q"], 3, LEASE).unwrap();
    let claimed_at = f.clock.now_ms();
    f.clock.advance(Duration::from_secs(2));
    let mut done: Vec<_> = jobs
        .iter()
        .map(|j| (j.id, j.lease_token, Some(json!(j.id))))
        .collect();
    done[1].1 ^= 1; // a token that is not the lease's
    done.push(done[0].clone()); // the same try twice counts once
    let batch = f.store.complete_many(&done).unwrap();
    assert_eq!(batch.completed, 2);
    assert_eq!(batch.lost, vec![jobs[1].id]);
    assert_eq!(f.store.get(jobs[1].id).unwrap().state, JobState::Running);
    for j in [&jobs[0], &jobs[2]] {
        let got = f.store.get(j.id).unwrap();
        assert_eq!(got.state, JobState::Succeeded);
        assert_eq!(got.result, Some(json!(j.id)));
        assert_eq!(got.finished_at, Some(f.clock.now_ms()));
        let outcomes: Vec<&str> = got.attempt_log.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, ["succeeded"]);
        let t = &got.attempt_log[0];
        assert_eq!(t.worker.as_deref(), Some("w"));
        assert_eq!((t.attempt, t.started_at), (1, claimed_at));
        assert_eq!(t.finished_at, f.clock.now_ms());
    }
    assert_eq!(count(&f.store, "SELECT count(*) FROM attempts"), 2);
    // The succeeded tries are their job rows (schema/0005); the history
    // table holds only tries that ended otherwise.
    assert_eq!(count(&f.store, "SELECT count(*) FROM tries"), 0);
}

#[test]
fn bad_input_is_refused_and_writes_nothing() {
    let f = fixture();
    let cases: Vec<(NewJob, &str)> = vec![
        (NewJob::new("", "k"), "queue"),
        (NewJob::new("q".repeat(129), "k"), "queue"),
        (NewJob::new("has space", "k"), "queue"),
        (NewJob::new("q", ""), "kind"),
        (NewJob::new("q", "k").payload_json("{not json"), "payload"),
        (
            NewJob::new("q", "k").payload_json("x".repeat(2 << 20)),
            "payload",
        ),
        (NewJob::new("q", "k").max_attempts(-1), "max_attempts"),
        (NewJob::new("q", "k").max_attempts(0), "max_attempts"),
        (NewJob::new("q", "k").tenant("../etc"), "tenant"),
        (
            NewJob::new("q", "k").backoff(Backoff {
                base_ms: 10,
                max_ms: 1,
            }),
            "backoff",
        ),
        (NewJob::new("q", "k").timeout(Duration::ZERO), "timeout"),
    ];
    for (job, field) in &cases {
        match f.store.enqueue(job) {
            Err(Error::InvalidInput { field: got, reason }) => {
                assert_eq!(got, *field, "{reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("{field}: expected InvalidInput, got {other:?}"),
        }
    }
    // One bad job spoils the batch, and the batch writes nothing.
    let batch = vec![
        NewJob::new("q", "k"),
        NewJob::new("q", "k").payload_json("nope"),
    ];
    let err = f.store.enqueue_many(&batch).unwrap_err();
    assert!(err.to_string().contains("job #1"), "{err}");
    assert_eq!(count(&f.store, "SELECT count(*) FROM jobs"), 0);
    assert!(matches!(
        f.store.get(42),
        Err(Error::NotFound { job_id: 42 })
    ));
    assert!(matches!(
        f.store.claim("w", &[""], 1, LEASE),
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        f.store.list(&ListFilter {
            limit: Some(0),
            ..Default::default()
        }),
        Err(Error::InvalidInput { .. })
    ));
}

#[test]
fn list_finds_jobs_by_the_text_of_their_last_error() {
    let f = fixture();
    let s = &f.store;
    let errors = [
        "SMTP said no",
        "disk 100% full",
        "disk 1000 full",
        "bad a_b",
        "bad axb",
        "C:\\tmp",
    ];
    let mut ids = Vec::new();
    for e in errors {
        ids.push(s.enqueue(&NewJob::new("q", "k").max_attempts(1)).unwrap());
        let t = s.claim("w", &["q"], 1, LEASE).unwrap().remove(0);
        s.fail(t.id, t.lease_token, e, false).unwrap();
    }
    let clean = s.enqueue(&NewJob::new("q", "k")).unwrap();
    let find = |text: &str, state: Option<JobState>| -> Vec<i64> {
        let mut got: Vec<i64> = s
            .list(&ListFilter {
                error_contains: Some(text.to_string()),
                state,
                ..Default::default()
            })
            .unwrap()
            .iter()
            .map(|j| j.id)
            .collect();
        got.sort();
        got
    };
    // Any case; `%`, `_` and `\` are the characters themselves, not patterns.
    assert_eq!(find("smtp", None), [ids[0]]);
    assert_eq!(find("100%", None), [ids[1]]);
    assert_eq!(find("disk", Some(JobState::Dead)), [ids[1], ids[2]]);
    assert_eq!(find("a_b", None), [ids[3]]);
    assert_eq!(find(":\\t", None), [ids[5]]);
    assert!(find("nowhere", None).is_empty());
    // Empty text: no filter.
    assert_eq!(find("", None).len(), errors.len() + 1);
    assert!(find("", None).contains(&clean));
}

#[test]
fn list_filters_every_state_and_pages_newest_first() {
    let f = fixture();
    let s = &f.store;
    // Jobs in every state, in two queues, interleaved by id.
    for i in 0..60 {
        let queue = if i % 2 == 0 { "a" } else { "b" };
        let job = NewJob::new(queue, "k").max_attempts(1);
        let job = if i % 5 == 4 {
            job.delay(Duration::from_secs(60))
        } else {
            job
        };
        s.enqueue(&job).unwrap();
    }
    let mut claimed = s.claim("w", &["a"], 12, LEASE).unwrap();
    claimed.extend(s.claim("w", &["b"], 12, LEASE).unwrap());
    for (n, job) in claimed.into_iter().enumerate() {
        match n % 4 {
            0 => s.complete(job.id, job.lease_token, None).unwrap(),
            1 => {
                s.fail(job.id, job.lease_token, "boom", false).unwrap();
            }
            2 => {
                s.cancel(job.id).unwrap();
                s.fail(job.id, job.lease_token, "stopped", false).unwrap();
            }
            _ => {}
        }
    }
    let all = s
        .list(&ListFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(all.len(), 60);
    for state in JobState::ALL {
        for queue in [None, Some("a")] {
            let want: Vec<i64> = all
                .iter()
                .filter(|j| j.state == state && queue.is_none_or(|q| j.queue == q))
                .map(|j| j.id)
                .collect();
            assert!(!want.is_empty(), "no {state:?} job to list");
            // Pages of 3, each below the last id of the one before.
            let mut got = Vec::new();
            let mut before = None;
            loop {
                let page = s
                    .list(&ListFilter {
                        state: Some(state),
                        queue: queue.map(str::to_string),
                        before_id: before,
                        limit: Some(3),
                        ..Default::default()
                    })
                    .unwrap();
                got.extend(page.iter().map(|j| j.id));
                match page.last() {
                    Some(last) if page.len() == 3 => before = Some(last.id),
                    _ => break,
                }
            }
            assert_eq!(got, want, "{state:?} in {queue:?}");
        }
    }
}

#[test]
fn enqueue_inside_the_callers_transaction_is_atomic_with_its_data() {
    let f = fixture();
    let mut conn = rusqlite::Connection::open(f.store.path()).unwrap();
    conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)")
        .unwrap();

    let tx = conn.transaction().unwrap();
    tx.execute("INSERT INTO orders (total) VALUES (10)", [])
        .unwrap();
    f.store
        .enqueue_in(&tx, &NewJob::new("email", "receipt"))
        .unwrap();
    tx.rollback().unwrap();
    assert_eq!(count(&f.store, "SELECT count(*) FROM jobs"), 0);
    assert_eq!(count(&f.store, "SELECT count(*) FROM orders"), 0);

    let tx = conn.transaction().unwrap();
    tx.execute("INSERT INTO orders (total) VALUES (20)", [])
        .unwrap();
    let id = f
        .store
        .enqueue_in(
            &tx,
            &NewJob::new("email", "receipt").payload(&json!({"order": 1})),
        )
        .unwrap();
    tx.commit().unwrap();
    assert_eq!(f.store.get(id).unwrap().payload, json!({"order": 1}));
    assert_eq!(count(&f.store, "SELECT count(*) FROM orders"), 1);
}

#[test]
fn stats_count_states_and_live_workers() {
    let f = fixture();
    for _ in 0..4 {
        f.store
            .enqueue(&NewJob::new("pdf", "k").max_attempts(1))
            .unwrap();
    }
    f.store
        .enqueue(&NewJob::new("email", "k").delay(Duration::from_secs(60)))
        .unwrap();
    let t = f.store.claim("w", &["pdf"], 2, LEASE).unwrap();
    f.store.complete(t[0].id, t[0].lease_token, None).unwrap();
    f.store.fail(t[1].id, t[1].lease_token, "x", true).unwrap();
    f.store
        .register_worker("w", "host", 1, &["pdf"], &["generate_qr_pdf"])
        .unwrap();
    f.clock.advance(Duration::from_secs(10));
    let stats = f.store.stats().unwrap();
    let pdf = stats.queue("pdf").unwrap();
    assert_eq!(
        (pdf.ready, pdf.succeeded, pdf.dead, pdf.failed),
        (2, 1, 1, 1)
    );
    assert_eq!(pdf.oldest_ready_age_ms, Some(10_000));
    assert_eq!(stats.queue("email").unwrap().scheduled, 1);
    assert_eq!(stats.live_workers, 1);
    f.clock.advance(Duration::from_secs(60));
    assert_eq!(
        f.store.stats().unwrap().live_workers,
        0,
        "a silent worker is not live"
    );
}

#[test]
fn stats_count_every_state_per_queue() {
    let f = fixture();
    let early = f.store.enqueue(&NewJob::new("a", "k")).unwrap();
    f.clock.advance(Duration::from_secs(5));
    for _ in 0..3 {
        f.store.enqueue(&NewJob::new("a", "k")).unwrap();
    }
    f.store.enqueue(&NewJob::new("b", "k")).unwrap();
    let waiting = f.store.enqueue(&NewJob::new("b", "k")).unwrap();
    f.store.cancel(waiting).unwrap();
    // `a`: the oldest job runs, one fails with tries left (a retry waits).
    let t = f.store.claim("w", &["a"], 2, LEASE).unwrap();
    assert_eq!(t[0].id, early);
    f.store.fail(t[1].id, t[1].lease_token, "x", true).unwrap();
    f.clock.advance(Duration::from_secs(1));
    let stats = f.store.stats().unwrap();
    let a = stats.queue("a").unwrap();
    assert_eq!(
        (
            a.scheduled,
            a.ready,
            a.running,
            a.succeeded,
            a.dead,
            a.cancelled,
            a.failed
        ),
        (1, 2, 1, 0, 0, 0, 1)
    );
    assert_eq!(a.oldest_ready_age_ms, Some(1_000), "the oldest still ready");
    let b = stats.queue("b").unwrap();
    assert_eq!((b.ready, b.cancelled, b.failed), (1, 1, 0));
    assert_eq!(b.oldest_ready_age_ms, Some(1_000));
    assert_eq!(stats.queues.len(), 2);
    assert_eq!(f.store.live_workers().unwrap(), 0);
    // Run time of succeeded jobs: claim to complete, 1 s + 2 s.
    f.store.complete(t[0].id, t[0].lease_token, None).unwrap();
    let u = f.store.claim("w", &["a"], 1, LEASE).unwrap().remove(0);
    f.clock.advance(Duration::from_secs(2));
    f.store.complete(u.id, u.lease_token, None).unwrap();
    let stats = f.store.stats().unwrap();
    let a = stats.queue("a").unwrap();
    assert_eq!((a.succeeded, a.succeeded_run_ms), (2, 3_000));
}

/// A store whose clock the test moves, with `reuse` for `stats_recent`.
fn fixture_reusing(reuse: StatsReuse) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let opts = StoreOptions {
        stats_reuse: reuse,
        ..StoreOptions::default().clock(clock.clone())
    };
    let store = Store::open_with(dir.path().join("queue.db"), opts).unwrap();
    Fixture {
        _dir: dir,
        store,
        clock,
    }
}

/// (ready, running, succeeded, finished age) of queue `q` from `stats_recent`.
fn recent(store: &Store) -> (i64, i64, i64, i64) {
    let stats = store.stats_recent().unwrap();
    let q = stats.queue("q").unwrap();
    (q.ready, q.running, q.succeeded, stats.finished_age_ms)
}

#[test]
fn stats_recent_reads_waiting_jobs_now_and_reuses_finished_counts_while_young() {
    // Every count is worth reusing, for ages up to ~4e9 times its cost.
    let f = fixture_reusing(StatsReuse {
        min_scan: Duration::ZERO,
        factor: u32::MAX,
    });
    for _ in 0..3 {
        f.store.enqueue(&NewJob::new("q", "k")).unwrap();
    }
    let t = f.store.claim("w", &["q"], 2, LEASE).unwrap();
    f.store.complete(t[0].id, t[0].lease_token, None).unwrap();
    assert_eq!(recent(&f.store), (1, 1, 1, 0));

    f.store.complete(t[1].id, t[1].lease_token, None).unwrap();
    f.clock.advance(Duration::from_secs(5));
    // Running is read now; succeeded is the count of 5 s ago, and says so.
    assert_eq!(recent(&f.store), (1, 0, 1, 5_000));
    // `stats` always counts now, and leaves its count for the next caller.
    let exact = f.store.stats().unwrap();
    assert_eq!(exact.queue("q").unwrap().succeeded, 2);
    assert_eq!(exact.finished_age_ms, 0);
    assert_eq!(recent(&f.store), (1, 0, 2, 0));
}

#[test]
fn stats_recent_counts_again_once_the_count_is_older_than_its_cost_allows() {
    // Reuse for as long as the count took (microseconds here).
    let f = fixture_reusing(StatsReuse {
        min_scan: Duration::ZERO,
        factor: 1,
    });
    f.store.enqueue(&NewJob::new("q", "k")).unwrap();
    assert_eq!(recent(&f.store), (1, 0, 0, 0));
    let t = f.store.claim("w", &["q"], 1, LEASE).unwrap().remove(0);
    f.store.complete(t.id, t.lease_token, None).unwrap();
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(recent(&f.store), (0, 0, 1, 0));
}

#[test]
fn stats_recent_on_a_small_file_is_always_read_now() {
    // The default: counts cheaper than 20 ms of CPU are never reused.
    let f = fixture();
    f.store.enqueue(&NewJob::new("q", "k")).unwrap();
    assert_eq!(recent(&f.store), (1, 0, 0, 0));
    let t = f.store.claim("w", &["q"], 1, LEASE).unwrap().remove(0);
    f.store.complete(t.id, t.lease_token, None).unwrap();
    assert_eq!(recent(&f.store), (0, 0, 1, 0));
    assert_eq!(f.store.stats_recent().unwrap(), f.store.stats().unwrap());
}

#[test]
fn purge_deletes_finished_jobs_with_their_history() {
    let f = fixture();
    let old = f.store.enqueue(&NewJob::new("q", "k")).unwrap();
    let t = f.store.claim("w", &["q"], 1, LEASE).unwrap().remove(0);
    f.store
        .set_progress(
            old,
            t.lease_token,
            &Progress {
                percent: Some(1.0),
                ..Default::default()
            },
        )
        .unwrap();
    f.store.complete(old, t.lease_token, None).unwrap();
    let waiting = f.store.enqueue(&NewJob::new("q", "k")).unwrap();
    f.clock.advance(Duration::from_secs(7200));
    assert_eq!(f.store.purge(Duration::from_secs(3600), None).unwrap(), 1);
    assert!(matches!(f.store.get(old), Err(Error::NotFound { .. })));
    assert_eq!(f.store.get(waiting).unwrap().state, JobState::Ready);
    assert_eq!(count(&f.store, "SELECT count(*) FROM attempts"), 0);
    assert_eq!(count(&f.store, "SELECT count(*) FROM progress"), 0);
}

#[test]
fn the_views_show_the_queue_to_a_human() {
    let f = fixture();
    f.store
        .enqueue(&NewJob::new("pdf", "generate").tenant("acme"))
        .unwrap();
    let conn = f.store.connection().unwrap();
    let (queue, ready): (String, i64) = conn
        .query_row("SELECT queue, ready FROM queue_stats", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((queue.as_str(), ready), ("pdf", 1));
    let created: String = conn
        .query_row("SELECT created FROM job_overview", [], |r| r.get(0))
        .unwrap();
    assert_eq!(created, "2023-11-14T22:13:20.000Z");
}

/// A batch mixing plain jobs (inserted many rows per statement), delayed
/// ones, and unique keys (fresh, taken by an earlier job, repeated inside the
/// batch): every returned id is the job at that position.
fn check_batch_ids(store: &Store, first_key: usize) {
    let taken = store
        .enqueue(&NewJob::new("q", "k").unique_key(format!("key-{first_key}")))
        .unwrap();
    let batch: Vec<NewJob> = (0..203)
        .map(|i| {
            let job = NewJob::new("q", "k").payload(&json!({ "i": i }));
            match i {
                _ if i % 37 == 5 => job.unique_key(format!("key-{}", first_key + i % 2)),
                _ if i % 11 == 3 => job.delay(Duration::from_secs(60)),
                _ => job,
            }
        })
        .collect();
    let ids = store.enqueue_many(&batch).unwrap();
    assert_eq!(ids.len(), batch.len());
    let mut keyed = std::collections::HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        let info = store.get(*id).unwrap();
        if i % 37 == 5 {
            let key = format!("key-{}", first_key + i % 2);
            let first = *keyed.entry(key.clone()).or_insert(*id);
            assert_eq!(*id, first, "job #{i}: one live job per key");
            if i % 2 == 0 {
                assert_eq!(*id, taken, "job #{i}: the key was taken before the batch");
            }
            continue;
        }
        assert_eq!(info.payload, json!({ "i": i }), "job #{i} got id {id}");
        let state = if i % 11 == 3 {
            JobState::Scheduled
        } else {
            JobState::Ready
        };
        assert_eq!(info.state, state, "job #{i}");
    }
}

#[test]
fn a_mixed_batch_returns_each_jobs_own_id() {
    let f = fixture();
    check_batch_ids(&f.store, 0);
    check_batch_ids(&f.store, 10);
}

#[test]
fn a_batch_near_the_largest_id_still_returns_each_jobs_own_id() {
    let f = fixture();
    // SQLite picks free ids at random once the largest id is i64::MAX: the
    // batch must not assume they are consecutive.
    f.store
        .connection()
        .unwrap()
        .execute(
            "INSERT INTO jobs (id, queue, kind, state, run_at, max_attempts, attempt_limit,
                               backoff_base_ms, backoff_max_ms, created_at)
             VALUES (?1, 'old', 'k', 'succeeded', 0, 1, 1, 0, 0, 0)",
            [i64::MAX - 50],
        )
        .unwrap();
    check_batch_ids(&f.store, 0);
    check_batch_ids(&f.store, 10);
}

/// A job made dead by its one try failing with `error`.
fn dead_job(f: &Fixture, job: NewJob, error: &str) -> i64 {
    let id = f.store.enqueue(&job.max_attempts(1)).unwrap();
    let c = f
        .store
        .claim("w", &[&job_queue(&f.store, id)], 1, LEASE)
        .unwrap();
    assert_eq!(c[0].id, id);
    let out = f.store.fail(id, c[0].lease_token, error, true).unwrap();
    assert_eq!(out, FailOutcome::Dead);
    id
}

fn job_queue(store: &Store, id: i64) -> String {
    store.get(id).unwrap().queue
}

fn state(f: &Fixture, id: i64) -> JobState {
    f.store.get(id).unwrap().state
}

#[test]
fn retry_matching_revives_the_dead_jobs_a_selection_names() {
    let f = fixture();
    let pdf_font = dead_job(
        &f,
        NewJob::new("pdf", "qr_pdf").tenant("t1"),
        "font missing",
    );
    let pdf_other = dead_job(&f, NewJob::new("pdf", "qr_pdf").tenant("t2"), "disk error");
    let batch = dead_job(
        &f,
        NewJob::new("batch", "batch_qr").tenant("t1"),
        "font missing",
    );
    // A cancelled job is revived only when the selection asks for cancelled ones.
    let cancelled = f.store.enqueue(&NewJob::new("pdf", "qr_pdf")).unwrap();
    f.store.cancel(cancelled).unwrap();
    // A dead job whose unique key a live job holds stays dead, reported.
    let keyed = dead_job(
        &f,
        NewJob::new("pdf", "qr_pdf").unique_key("k"),
        "font missing",
    );
    let holder = f
        .store
        .enqueue(&NewJob::new("pdf", "qr_pdf").unique_key("k"))
        .unwrap();
    f.clock.advance(Duration::from_secs(5));

    let by_error = JobSelection {
        queue: Some("pdf".into()),
        error_contains: Some("FONT".into()),
        ..Default::default()
    };
    // A dry run counts what the retry would pick (the keyed job too: only
    // the retry finds its key taken) and changes nothing.
    let (would, wrote) = committed_during(&f.store, || f.store.count_retryable(&by_error));
    assert_eq!((would.unwrap(), wrote), (2, false));
    assert_eq!(state(&f, pdf_font), JobState::Dead);
    let report = f.store.retry_matching(&by_error).unwrap();
    assert_eq!(report.retried, 1);
    assert_eq!(report.key_taken, vec![keyed]);
    assert_eq!(state(&f, pdf_font), JobState::Ready);
    let revived = f.store.get(pdf_font).unwrap();
    assert_eq!((revived.attempts, revived.attempt_limit), (1, 2));
    assert_eq!(revived.run_at, f.clock.now_ms());
    for (id, st) in [
        (pdf_other, JobState::Dead),
        (batch, JobState::Dead),
        (cancelled, JobState::Cancelled),
        (keyed, JobState::Dead),
        (holder, JobState::Ready),
    ] {
        assert_eq!(state(&f, id), st, "job {id}");
    }

    // By tenant across queues; then the cancelled ones.
    let t1 = JobSelection {
        tenant: Some("t1".into()),
        ..Default::default()
    };
    assert_eq!(f.store.retry_matching(&t1).unwrap().retried, 1);
    assert_eq!(state(&f, batch), JobState::Ready);
    let cancelled_sel = JobSelection {
        state: Some(JobState::Cancelled),
        ..Default::default()
    };
    assert_eq!(f.store.retry_matching(&cancelled_sel).unwrap().retried, 1);
    assert_eq!(state(&f, cancelled), JobState::Ready);
    // Nothing left that matches: nothing done.
    assert_eq!(f.store.retry_matching(&by_error).unwrap().retried, 0);
    assert_eq!(state(&f, pdf_other), JobState::Dead);
}

#[test]
fn bulk_retry_and_cancel_refuse_states_they_do_not_apply_to_and_change_nothing() {
    let f = fixture();
    let dead = dead_job(&f, NewJob::new("q", "k"), "boom");
    let ready = f.store.enqueue(&NewJob::new("q", "k")).unwrap();
    for st in [JobState::Ready, JobState::Running, JobState::Succeeded] {
        let sel = JobSelection {
            state: Some(st),
            ..Default::default()
        };
        let e = f.store.retry_matching(&sel).unwrap_err();
        assert!(
            matches!(e, Error::InvalidInput { field: "state", .. }),
            "{e}"
        );
        assert!(e.to_string().contains("dead or cancelled"), "{e}");
    }
    for st in [JobState::Dead, JobState::Cancelled, JobState::Succeeded] {
        let sel = JobSelection {
            state: Some(st),
            ..Default::default()
        };
        let e = f.store.cancel_matching(&sel).unwrap_err();
        assert!(e.to_string().contains("scheduled, ready or running"), "{e}");
    }
    let bad_queue = JobSelection {
        queue: Some(String::new()),
        ..Default::default()
    };
    assert!(matches!(
        f.store.cancel_matching(&bad_queue),
        Err(Error::InvalidInput { field: "queue", .. })
    ));
    assert_eq!(state(&f, dead), JobState::Dead);
    assert_eq!(state(&f, ready), JobState::Ready);
}

#[test]
fn cancel_matching_cancels_waiting_jobs_and_asks_running_ones_to_stop() {
    let f = fixture();
    let done = f.store.enqueue(&NewJob::new("pdf", "qr_pdf")).unwrap();
    let c = f.store.claim("w", &["pdf"], 1, LEASE).unwrap();
    f.store.complete(done, c[0].lease_token, None).unwrap();
    let running = f.store.enqueue(&NewJob::new("pdf", "qr_pdf")).unwrap();
    let claimed = f.store.claim("w", &["pdf"], 1, LEASE).unwrap();
    assert_eq!(claimed[0].id, running);
    let waiting = f.store.enqueue(&NewJob::new("pdf", "qr_pdf")).unwrap();
    let later = f
        .store
        .enqueue(&NewJob::new("pdf", "qr_pdf").delay(Duration::from_secs(60)))
        .unwrap();
    let other_kind = f.store.enqueue(&NewJob::new("pdf", "other")).unwrap();
    let other_queue = f.store.enqueue(&NewJob::new("email", "qr_pdf")).unwrap();

    let sel = JobSelection {
        queue: Some("pdf".into()),
        kind: Some("qr_pdf".into()),
        ..Default::default()
    };
    let (would, wrote) = committed_during(&f.store, || f.store.count_cancellable(&sel));
    let would = would.unwrap();
    assert_eq!((would.cancelled, would.requested, wrote), (2, 1, false));
    assert_eq!(state(&f, waiting), JobState::Ready);
    let report = f.store.cancel_matching(&sel).unwrap();
    assert_eq!(report, would);
    assert_eq!(state(&f, waiting), JobState::Cancelled);
    assert_eq!(state(&f, later), JobState::Cancelled);
    assert_eq!(state(&f, done), JobState::Succeeded);
    assert_eq!(state(&f, other_kind), JobState::Ready);
    assert_eq!(state(&f, other_queue), JobState::Ready);
    // The running job is flagged: its heartbeat says so, and it ends when its worker stops.
    let hb = f
        .store
        .heartbeat(running, claimed[0].lease_token, LEASE)
        .unwrap();
    assert!(hb.cancel_requested);
    f.store
        .cancelled(running, claimed[0].lease_token, "stopped")
        .unwrap();
    assert_eq!(state(&f, running), JobState::Cancelled);

    // Only one state.
    let only_ready = JobSelection {
        state: Some(JobState::Ready),
        ..Default::default()
    };
    let report = f.store.cancel_matching(&only_ready).unwrap();
    assert_eq!((report.cancelled, report.requested), (2, 0));
    assert_eq!(state(&f, other_kind), JobState::Cancelled);
}

#[test]
fn bulk_operations_go_through_every_batch() {
    let f = fixture();
    // 2,500 dead jobs, made dead in SQL to keep the test quick (the
    // transitions themselves are tested above); 2,500 waiting ones.
    let jobs: Vec<NewJob> = (0..2_500).map(|_| NewJob::new("q", "k")).collect();
    let dead = f.store.enqueue_many(&jobs).unwrap();
    f.store
        .connection()
        .unwrap()
        .execute(
            "UPDATE jobs SET state = 'dead', attempts = 1, attempt_limit = 1, finished_at = ?1,
                             last_error = 'boom'",
            [T0],
        )
        .unwrap();
    let waiting = f.store.enqueue_many(&jobs).unwrap();
    let all = JobSelection::default();
    assert_eq!(f.store.count_retryable(&all).unwrap(), 2_500);
    let report = f.store.retry_matching(&JobSelection::default()).unwrap();
    assert_eq!(report.retried, 2_500);
    assert!(report.key_taken.is_empty());
    assert_eq!(
        count(&f.store, "SELECT count(*) FROM jobs WHERE state = 'ready'"),
        5_000
    );
    assert_eq!(f.store.count_cancellable(&all).unwrap().cancelled, 5_000);
    let report = f.store.cancel_matching(&JobSelection::default()).unwrap();
    assert_eq!(report.cancelled, 5_000);
    assert_eq!(state(&f, dead[2_499]), JobState::Cancelled);
    assert_eq!(state(&f, waiting[0]), JobState::Cancelled);
}

/// Run `f` and tell whether anything was committed to the file meanwhile:
/// `PRAGMA data_version` on a connection of its own moves when any other
/// connection commits.
fn committed_during<T>(store: &Store, f: impl FnOnce() -> T) -> (T, bool) {
    let watch = rusqlite::Connection::open(store.path()).unwrap();
    let version = || -> i64 {
        watch
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .unwrap()
    };
    let before = version();
    let out = f();
    (out, version() != before)
}

#[test]
fn committed_during_sees_a_commit() {
    // The helper above must be able to fail: a real write is seen.
    let f = fixture();
    let (_, wrote) = committed_during(&f.store, || f.store.enqueue(&NewJob::new("q", "k")));
    assert!(wrote);
}

/// Issue 20.9: one step of +1 h of the wall clock made the daemon reap the
/// leases of its own running, heartbeating jobs, which all ran again.  A
/// step is told from time passing by the steady clock: reaping holds off
/// (in every process on the file) until live workers have heartbeated under
/// the new time; the lease of a worker that really stopped expires after.
#[test]
fn a_step_of_the_wall_clock_does_not_reap_live_leases() {
    let f = fixture();
    let live = f.store.enqueue(&NewJob::new("q", "k")).unwrap();
    let stopped = f.store.enqueue(&NewJob::new("q", "k")).unwrap();
    let a = f.store.claim("alive", &["q"], 1, LEASE).unwrap().remove(0);
    let b = f.store.claim("gone", &["q"], 1, LEASE).unwrap().remove(0);
    assert_eq!((a.id, b.id), (live, stopped));
    assert_eq!(f.store.reap().unwrap().total(), 0);
    f.clock.advance(Duration::from_secs(10));
    f.store.heartbeat(live, a.lease_token, LEASE).unwrap();

    f.clock.step(3_600_000);
    assert_eq!(f.store.reap().unwrap().total(), 0, "held after the step");
    // Another process on the file, which saw nothing before: held too.
    let other = Store::open_with(
        f.store.path(),
        StoreOptions::default().clock(f.clock.clone()),
    )
    .unwrap();
    assert_eq!(other.reap().unwrap().total(), 0);
    // The live worker heartbeats under the new time; the stopped one cannot.
    f.clock.advance(Duration::from_secs(2));
    f.store.heartbeat(live, a.lease_token, LEASE).unwrap();
    f.clock.advance(Duration::from_secs(27));
    assert_eq!(other.reap().unwrap().total(), 0, "still within the hold");
    f.clock.advance(Duration::from_secs(2));
    f.store.heartbeat(live, a.lease_token, LEASE).unwrap();
    let report = f.store.reap().unwrap();
    assert_eq!(report.requeued, [stopped], "only the stopped worker's job");
    f.store.complete(live, a.lease_token, None).unwrap();
    assert_eq!(outcomes(&f.store, live), ["succeeded"], "ran once");

    // Slow drift is not a step: an expired lease is reaped at once.
    let c = f.store.claim("gone", &["q"], 1, LEASE).unwrap().remove(0);
    f.clock.advance(Duration::from_secs(31));
    f.clock.step(500);
    assert_eq!(f.store.reap().unwrap().requeued, [c.id]);

    // A step back: a live lease stays, and no hold follows.
    let d = f.store.claim("alive", &["q"], 1, LEASE).unwrap().remove(0);
    f.clock.step(-3_600_000);
    assert_eq!(f.store.reap().unwrap().total(), 0);
    f.store.complete(d.id, d.lease_token, None).unwrap();

    // A new boot of the host is not a step: the old boot's workers are gone.
    let e = f.store.enqueue(&NewJob::new("q", "k")).unwrap();
    f.store.claim("gone", &["q"], 1, LEASE).unwrap();
    f.clock.reboot();
    f.clock.step(3_600_000);
    assert_eq!(f.store.reap().unwrap().requeued, [e]);
}
