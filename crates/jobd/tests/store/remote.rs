//! What the worker protocol stands on: acknowledgements of many tries and
//! the next claim in one transaction, held tries' heartbeats with their
//! deadlines, a completion past the deadline refused, the reap failing
//! tries nobody ends, whether a claim could find anything, API tokens.

use std::time::Duration;

use jobd::store::{Ack, AckOutcome, JobState, NewJob, Role, OVERDUE_GRACE};
use jobd::Error;

use crate::support::*;

fn complete(result: &str) -> Ack {
    Ack::Complete {
        result: Some(result.to_string()),
    }
}

#[test]
fn acknowledgements_then_claims_in_one_transaction_each_with_its_outcome() {
    let f = fixture();
    let ids: Vec<i64> = (0..6)
        .map(|_| f.enqueue(NewJob::new("q", "k").max_attempts(2)))
        .collect();
    let held = f.store.claim("w", &["q"], 4, LEASE).unwrap();
    let acks = vec![
        (held[0].id, held[0].lease_token, complete("{\"ok\":1}")),
        (
            held[1].id,
            held[1].lease_token,
            Ack::Fail {
                error: "smtp".into(),
                retryable: true,
            },
        ),
        (
            held[2].id,
            held[2].lease_token,
            Ack::Fail {
                error: "bad".into(),
                retryable: false,
            },
        ),
        (held[3].id, held[3].lease_token, Ack::Release),
        (held[0].id, held[0].lease_token ^ 1, complete("1")), // a stale token
    ];
    let ((outcomes, claimed), wrote) = committed_during(&f.store, || {
        f.store
            .ack_and_claim(&acks, "w", &[("q", 10)], 10, LEASE)
            .unwrap()
    });
    assert!(wrote);
    assert!(matches!(outcomes[1], AckOutcome::Retrying { .. }));
    assert_eq!(
        [outcomes[0], outcomes[2], outcomes[3], outcomes[4]],
        [
            AckOutcome::Completed,
            AckOutcome::Dead,
            AckOutcome::Released,
            AckOutcome::Lost
        ]
    );
    // The released job and the two never claimed come back in the claim.
    let got: std::collections::BTreeSet<i64> = claimed.iter().map(|j| j.id).collect();
    assert_eq!(got, [held[3].id, ids[4], ids[5]].into_iter().collect());
    let j = f.store.get(held[0].id).unwrap();
    assert_eq!(
        (j.state, j.result),
        (JobState::Succeeded, Some(serde_json::json!({"ok": 1})))
    );
    assert_eq!(f.store.get(held[2].id).unwrap().state, JobState::Dead);
    // Nothing to do is no transaction at all.
    let (_, wrote) = committed_during(&f.store, || {
        f.store.ack_and_claim(&[], "w", &[], 10, LEASE).unwrap()
    });
    assert!(!wrote);
}

fn a_completion_past_the_deadline_fails_the_try_as_timed_out(f: &Fixture) {
    let id = f.enqueue(
        NewJob::new("q", "k")
            .timeout(Duration::from_secs(10))
            .max_attempts(3),
    );
    let job = f.store.claim("w", &["q"], 1, LEASE).unwrap().remove(0);
    let held = f
        .store
        .heartbeat_held(&[(id, job.lease_token)], LEASE)
        .unwrap();
    assert_eq!(held[0].deadline, Some(T0 + 10_000));
    assert!(!held[0].cancel_requested);
    f.clock.advance(Duration::from_secs(10));
    let (outcomes, _) = f
        .store
        .ack_and_claim(&[(id, job.lease_token, complete("1"))], "", &[], 0, LEASE)
        .unwrap();
    assert_eq!(outcomes, [AckOutcome::TimedOut]);
    let j = f.store.get(id).unwrap();
    assert_eq!((j.state, j.result), (JobState::Scheduled, None));
    assert!(j.last_error.unwrap().starts_with("timed out after 10s"));
    assert_eq!(crate::support::outcomes(&f.store, id), ["failed"]);
}

fn the_reap_fails_tries_past_their_timeout_and_grace_that_nobody_ended(f: &Fixture) {
    let id = f.enqueue(
        NewJob::new("q", "k")
            .timeout(Duration::from_secs(10))
            .max_attempts(1),
    );
    let other = f.enqueue(NewJob::new("q", "k"));
    let held = f
        .store
        .claim("w", &["q"], 2, Duration::from_secs(3600))
        .unwrap();
    assert_eq!(held.len(), 2);
    f.clock
        .advance(Duration::from_secs(10) + OVERDUE_GRACE - Duration::from_millis(1));
    assert_eq!(f.store.reap().unwrap().total(), 0, "within the grace");
    f.clock.advance(Duration::from_millis(1));
    let report = f.store.reap().unwrap();
    assert_eq!(report.timed_out, [id]);
    let j = f.store.get(id).unwrap();
    assert_eq!(j.state, JobState::Dead, "out of tries");
    assert!(j.last_error.unwrap().contains("its worker did not end it"));
    assert_eq!(
        f.store.get(other).unwrap().state,
        JobState::Running,
        "no timeout, lease fresh"
    );
    // Its late acknowledgement changes nothing.
    let token = held.iter().find(|j| j.id == id).unwrap().lease_token;
    let (outcomes, _) = f
        .store
        .ack_and_claim(&[(id, token, complete("1"))], "", &[], 0, LEASE)
        .unwrap();
    assert_eq!(outcomes, [AckOutcome::Lost]);
}

fn heartbeats_of_held_tries_say_cancel_and_leave_out_lost_ones(f: &Fixture) {
    let a = f.enqueue(NewJob::new("q", "k"));
    let b = f.enqueue(NewJob::new("q", "k"));
    let held = f.store.claim("w", &["q"], 2, LEASE).unwrap();
    f.store.cancel(a).unwrap();
    let pairs: Vec<(i64, i64)> = held.iter().map(|j| (j.id, j.lease_token)).collect();
    let stale: Vec<(i64, i64)> = pairs
        .iter()
        .map(|(i, t)| (*i, if *i == b { t ^ 1 } else { *t }))
        .collect();
    let found = f.store.heartbeat_held(&stale, LEASE).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].id, found[0].cancel_requested, found[0].deadline),
        (a, true, None)
    );
}

fn claimable_says_whether_a_claim_could_find_a_job(f: &Fixture) {
    assert!(!f.store.claimable(&["q"]).unwrap());
    f.enqueue(NewJob::new("q", "k").delay(Duration::from_secs(5)));
    assert!(!f.store.claimable(&["q"]).unwrap());
    f.clock.advance(Duration::from_secs(5));
    assert!(f.store.claimable(&["q"]).unwrap(), "a delayed job fell due");
    f.store.claim("w", &["q"], 1, LEASE).unwrap();
    assert!(!f.store.claimable(&["q", "r"]).unwrap());
    f.enqueue(NewJob::new("r", "k"));
    assert!(f.store.claimable(&["q", "r"]).unwrap());
    assert!(!f.store.claimable(&["q"]).unwrap());
}

fn api_tokens_are_kept_by_hash_with_a_role(f: &Fixture) {
    let hash = [7u8; 32];
    f.store
        .add_api_token("pyworkers", Role::Worker, &hash)
        .unwrap();
    assert_eq!(
        f.store.api_token(&hash).unwrap(),
        Some(("pyworkers".into(), Role::Worker))
    );
    assert_eq!(f.store.api_token(&[8u8; 32]).unwrap(), None);
    // A name is never reused behind its holders' backs; bad names refused.
    let taken = f
        .store
        .add_api_token("pyworkers", Role::Admin, &[9u8; 32])
        .unwrap_err();
    assert!(taken.to_string().contains("is taken"), "{taken}");
    for bad in ["", "a b", "x/y", &"n".repeat(65)] {
        let e = f
            .store
            .add_api_token(bad, Role::Producer, &[1u8; 32])
            .unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }), "{bad:?}: {e}");
    }
    assert_eq!(f.store.api_tokens().unwrap().len(), 1);
    assert!(f.store.revoke_api_token("pyworkers").unwrap());
    assert!(!f.store.revoke_api_token("pyworkers").unwrap());
    assert_eq!(f.store.api_token(&hash).unwrap(), None);
    assert!(Role::parse("root").is_err());
}

crate::conformance!(
    a_completion_past_the_deadline_fails_the_try_as_timed_out,
    the_reap_fails_tries_past_their_timeout_and_grace_that_nobody_ended,
    heartbeats_of_held_tries_say_cancel_and_leave_out_lost_ones,
    claimable_says_whether_a_claim_could_find_a_job,
    api_tokens_are_kept_by_hash_with_a_role,
);
