//! Leases: expiry and reaping, heartbeats, fencing of stale workers,
//! release, progress, completions, clock steps.

use std::time::Duration;

use jobd::store::{JobState, NewJob, Progress};
use jobd::{Clock, Error, Store, StoreOptions};
use serde_json::json;

use crate::support::*;

fn expired_lease_is_reaped_and_the_job_runs_again(f: &Fixture) {
    let id = f.enqueue(NewJob::new("q", "k"));
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

fn heartbeat_extends_the_lease(f: &Fixture) {
    let id = f.enqueue(NewJob::new("q", "k"));
    let job = f.claim_one("w1", "q");
    for _ in 0..10 {
        f.clock.advance(Duration::from_secs(20));
        let hb = f.store.heartbeat(id, job.lease_token, LEASE).unwrap();
        assert!(!hb.cancel_requested);
        assert_eq!(f.store.reap().unwrap().total(), 0);
    }
    f.store.complete(id, job.lease_token, None).unwrap();
}

fn a_stale_worker_is_fenced_off_and_changes_nothing(f: &Fixture) {
    let id = f.enqueue(NewJob::new("q", "k"));
    let stale = f.claim_one("slow", "q");
    f.clock.advance(LEASE);
    f.store.reap().unwrap();
    let fresh = f.claim_one("fast", "q");
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

fn release_gives_the_job_back_without_counting_the_try(f: &Fixture) {
    let id = f.enqueue(NewJob::new("q", "k").max_attempts(1));
    let t = f.claim_one("w", "q");
    f.store.release(id, t.lease_token).unwrap();
    assert_eq!(f.store.get(id).unwrap().state, JobState::Ready);
    let t = f.claim_one("w2", "q");
    assert_eq!((t.attempt, t.attempt_limit), (2, 2));
    f.store.complete(id, t.lease_token, None).unwrap();
    assert_eq!(outcomes(&f.store, id), ["released", "succeeded"]);
}

fn progress_is_stored_and_logged(f: &Fixture) {
    let id = f.enqueue(NewJob::new("q", "k"));
    let t = f.claim_one("w", "q");
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

fn complete_many_skips_lost_leases(f: &Fixture) {
    for _ in 0..3 {
        f.enqueue(NewJob::new("q", "k"));
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
fn committed_during_sees_a_commit() {
    // The helper above must be able to fail: a real write is seen.
    let f = fixture();
    let (_, wrote) = committed_during(&f.store, || f.store.enqueue(&NewJob::new("q", "k")));
    assert!(wrote);
}

/// One step of +1 h of the wall clock made the daemon reap the
/// leases of its own running, heartbeating jobs, which all ran again.  A
/// step is told from time passing by the steady clock: reaping holds off
/// (in every process on the file) until live workers have heartbeated under
/// the new time; the lease of a worker that really stopped expires after.
#[test]
fn a_step_of_the_wall_clock_does_not_reap_live_leases() {
    let f = fixture();
    let live = f.enqueue(NewJob::new("q", "k"));
    let stopped = f.enqueue(NewJob::new("q", "k"));
    let a = f.claim_one("alive", "q");
    let b = f.claim_one("gone", "q");
    assert_eq!((a.id, b.id), (live, stopped));
    assert_eq!(f.store.reap().unwrap().total(), 0);
    f.clock.advance(Duration::from_secs(10));
    f.store.heartbeat(live, a.lease_token, LEASE).unwrap();

    f.clock.step(3_600_000);
    assert_eq!(f.store.reap().unwrap().total(), 0, "held after the step");
    // Another process on the file, which saw nothing before: held too.
    let other = Store::open_with(
        f.store.path().unwrap(),
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
    let c = f.claim_one("gone", "q");
    f.clock.advance(Duration::from_secs(31));
    f.clock.step(500);
    assert_eq!(f.store.reap().unwrap().requeued, [c.id]);

    // A step back: a live lease stays, and no hold follows.
    let d = f.claim_one("alive", "q");
    f.clock.step(-3_600_000);
    assert_eq!(f.store.reap().unwrap().total(), 0);
    f.store.complete(d.id, d.lease_token, None).unwrap();

    // A new boot of the host is not a step: the old boot's workers are gone.
    let e = f.enqueue(NewJob::new("q", "k"));
    f.store.claim("gone", &["q"], 1, LEASE).unwrap();
    f.clock.reboot();
    f.clock.step(3_600_000);
    assert_eq!(f.store.reap().unwrap().requeued, [e]);
}

crate::conformance!(
    expired_lease_is_reaped_and_the_job_runs_again,
    heartbeat_extends_the_lease,
    a_stale_worker_is_fenced_off_and_changes_nothing,
    release_gives_the_job_back_without_counting_the_try,
    progress_is_stored_and_logged,
    complete_many_skips_lost_leases,
);
