//! Control: cancel one job or many, bulk retry, in batches.

use std::time::Duration;

use jobd::store::{CancelOutcome, FailOutcome, JobSelection, JobState, NewJob};
use jobd::{Clock, Error, Store};

use crate::support::*;

fn cancel_a_waiting_job_and_a_running_one(f: &Fixture) {
    let waiting = f.enqueue(NewJob::new("q", "k").delay(Duration::from_secs(60)));
    assert_eq!(f.store.cancel(waiting).unwrap(), CancelOutcome::Cancelled);
    assert_eq!(
        f.store.cancel(waiting).unwrap(),
        CancelOutcome::AlreadyCancelled
    );
    f.clock.advance(Duration::from_secs(120));
    let running = f.enqueue(NewJob::new("q", "k"));
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
    let done = f.enqueue(NewJob::new("q", "k"));
    let t = f.claim_one("w", "q");
    f.store.complete(done, t.lease_token, None).unwrap();
    assert!(matches!(
        f.store.cancel(done),
        Err(Error::InvalidState { .. })
    ));
}

fn a_running_job_flagged_for_cancel_is_cancelled_when_its_worker_dies_or_fails(f: &Fixture) {
    let a = f.enqueue(NewJob::new("q", "k"));
    let b = f.enqueue(NewJob::new("q", "k"));
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

/// A job made dead by its one try failing with `error`.
fn dead_job(f: &Fixture, job: NewJob, error: &str) -> i64 {
    let id = f.enqueue(job.max_attempts(1));
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
    let cancelled = f.enqueue(NewJob::new("pdf", "qr_pdf"));
    f.store.cancel(cancelled).unwrap();
    // A dead job whose unique key a live job holds stays dead, reported.
    let keyed = dead_job(
        &f,
        NewJob::new("pdf", "qr_pdf").unique_key("k"),
        "font missing",
    );
    let holder = f.enqueue(NewJob::new("pdf", "qr_pdf").unique_key("k"));
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

fn bulk_retry_and_cancel_refuse_states_they_do_not_apply_to_and_change_nothing(f: &Fixture) {
    let dead = dead_job(f, NewJob::new("q", "k"), "boom");
    let ready = f.enqueue(NewJob::new("q", "k"));
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
    assert_eq!(state(f, dead), JobState::Dead);
    assert_eq!(state(f, ready), JobState::Ready);
}

#[test]
fn cancel_matching_cancels_waiting_jobs_and_asks_running_ones_to_stop() {
    let f = fixture();
    let done = f.enqueue(NewJob::new("pdf", "qr_pdf"));
    let c = f.store.claim("w", &["pdf"], 1, LEASE).unwrap();
    f.store.complete(done, c[0].lease_token, None).unwrap();
    let running = f.enqueue(NewJob::new("pdf", "qr_pdf"));
    let claimed = f.store.claim("w", &["pdf"], 1, LEASE).unwrap();
    assert_eq!(claimed[0].id, running);
    let waiting = f.enqueue(NewJob::new("pdf", "qr_pdf"));
    let later = f.enqueue(NewJob::new("pdf", "qr_pdf").delay(Duration::from_secs(60)));
    let other_kind = f.enqueue(NewJob::new("pdf", "other"));
    let other_queue = f.enqueue(NewJob::new("email", "qr_pdf"));

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
        .sqlite()
        .unwrap()
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

crate::conformance!(
    cancel_a_waiting_job_and_a_running_one,
    a_running_job_flagged_for_cancel_is_cancelled_when_its_worker_dies_or_fails,
    bulk_retry_and_cancel_refuse_states_they_do_not_apply_to_and_change_nothing,
);
