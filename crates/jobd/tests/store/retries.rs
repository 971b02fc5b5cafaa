//! Retries: exponential backoff with jitter, permanent failures, jobs
//! that kill their worker, and reviving dead jobs.

use std::time::Duration;

use jobd::store::{Backoff, FailOutcome, JobState, NewJob};
use jobd::{Clock, Error};

use crate::support::*;

fn retries_follow_the_exponential_backoff_then_the_job_dies(f: &Fixture) {
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
    let id = f.enqueue(NewJob::new("q", "k").max_attempts(5).backoff(backoff));
    let mut delays = Vec::new();
    for attempt in 1..=5 {
        let job = f.claim_one("w", "q");
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

fn a_non_retryable_failure_is_dead_at_once(f: &Fixture) {
    let id = f.enqueue(NewJob::new("q", "k").max_attempts(10));
    let job = f.claim_one("w", "q");
    assert_eq!(
        f.store
            .fail(id, job.lease_token, "unknown template 42", false)
            .unwrap(),
        FailOutcome::Dead
    );
    assert_eq!(f.store.get(id).unwrap().state, JobState::Dead);
}

fn a_job_that_kills_its_worker_every_time_ends_dead(f: &Fixture) {
    let id = f.enqueue(NewJob::new("q", "k").max_attempts(3));
    for attempt in 1..=3 {
        let job = f.claim_one("w", "q");
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

fn retry_revives_dead_and_cancelled_jobs_with_fresh_tries(f: &Fixture) {
    let id = f.enqueue(NewJob::new("q", "k").max_attempts(2));
    for _ in 0..2 {
        let t = f.claim_one("w", "q");
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
    let t = f.claim_one("w", "q");
    assert_eq!(t.attempt, 3);
    // Fresh tries: a retryable failure is retried again, not dead.
    assert!(matches!(
        f.store.fail(id, t.lease_token, "boom", true).unwrap(),
        FailOutcome::Retrying { .. }
    ));
}

fn reviving_a_dead_job_whose_key_is_taken_is_a_conflict(f: &Fixture) {
    let job = || NewJob::new("q", "k").unique_key("once").max_attempts(1);
    let a = f.enqueue(job());
    let t = f.claim_one("w", "q");
    f.store.fail(a, t.lease_token, "x", true).unwrap();
    let b = f.enqueue(job());
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

crate::conformance!(
    retries_follow_the_exponential_backoff_then_the_job_dies,
    a_non_retryable_failure_is_dead_at_once,
    a_job_that_kills_its_worker_every_time_ends_dead,
    retry_revives_dead_and_cancelled_jobs_with_fresh_tries,
    reviving_a_dead_job_whose_key_is_taken_is_a_conflict,
);
