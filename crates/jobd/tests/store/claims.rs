//! Claims: order, batches across queues, paused queues, concurrency limits.

use std::time::Duration;

use jobd::store::NewJob;
use jobd::Error;

use crate::support::*;

fn claim_order_is_priority_then_run_at_then_id_and_delayed_jobs_wait(f: &Fixture) {
    let low = f.enqueue(NewJob::new("q", "k").priority(10));
    let later = f.enqueue(NewJob::new("q", "k").delay(Duration::from_secs(5)));
    let first = f.enqueue(NewJob::new("q", "k"));
    let urgent = f.enqueue(NewJob::new("q", "k").priority(-5));
    let second = f.enqueue(NewJob::new("q", "k"));
    let order: Vec<i64> = (0..4)
        .map(|_| f.store.claim("w", &["q"], 1, LEASE).unwrap()[0].id)
        .collect();
    assert_eq!(order, [urgent, first, second, low]);
    assert!(f.store.claim("w", &["q"], 1, LEASE).unwrap().is_empty());
    f.clock.advance(Duration::from_secs(5));
    assert_eq!(f.store.claim("w", &["q"], 5, LEASE).unwrap()[0].id, later);
}

fn claim_batches_across_queues_in_the_order_given(f: &Fixture) {
    let a: Vec<i64> = (0..3).map(|_| f.enqueue(NewJob::new("a", "k"))).collect();
    let b: Vec<i64> = (0..3).map(|_| f.enqueue(NewJob::new("b", "k"))).collect();
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

fn paused_queues_are_skipped(f: &Fixture) {
    f.enqueue(NewJob::new("pdf", "k"));
    f.store.pause("pdf").unwrap();
    assert!(f.store.claim("w", &["pdf"], 1, LEASE).unwrap().is_empty());
    assert!(f.store.stats().unwrap().queue("pdf").unwrap().paused);
    f.store.resume("pdf").unwrap();
    assert_eq!(f.store.claim("w", &["pdf"], 1, LEASE).unwrap().len(), 1);
}

fn a_queue_concurrency_limit_holds_across_workers_and_frees_with_each_end(f: &Fixture) {
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
fn a_turn_completes_and_claims_in_one_transaction_and_the_completions_free_their_room() {
    let f = fixture();
    let s = &f.store;
    for _ in 0..4 {
        s.enqueue(&NewJob::new("pdf", "k")).unwrap();
    }
    s.enqueue(&NewJob::new("mail", "k")).unwrap();
    s.set_concurrency("pdf", Some(2)).unwrap();
    let (none, first) = s
        .complete_and_claim(&[], "w", &[("pdf", 10), ("mail", 10)], 10, LEASE)
        .unwrap();
    assert_eq!(none.completed, 0);
    assert_eq!(first.len(), 3, "2 of pdf (its limit) and the mail job");
    // `PRAGMA data_version` moves when another connection commits, as this
    // one connection of its own sees it (each connection has its own count:
    // two pooled ones cannot be compared).
    let watch = rusqlite::Connection::open(s.path().unwrap()).unwrap();
    let version = || -> i64 {
        watch
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .unwrap()
    };
    let commits = version();

    // The pdf queue is full: completing its two jobs makes room for the
    // claim of the same call.  A try whose lease is lost is reported and
    // changes nothing; the mail job's result is kept.
    let stale = 12345;
    let done: Vec<(i64, i64, Option<serde_json::Value>)> = first
        .iter()
        .map(|j| {
            let token = if j.queue == "mail" {
                stale
            } else {
                j.lease_token
            };
            (j.id, token, Some(serde_json::json!({ "id": j.id })))
        })
        .collect();
    let (batch, next) = s
        .complete_and_claim(&done, "w", &[("pdf", 10)], 1, LEASE)
        .unwrap();
    assert_eq!(batch.completed, 2);
    let mail = first.iter().find(|j| j.queue == "mail").unwrap();
    assert_eq!(batch.lost, vec![mail.id]);
    assert_eq!(next.len(), 1, "at most `most` in all");
    assert_eq!(next[0].queue, "pdf");
    for j in first.iter().filter(|j| j.queue == "pdf") {
        let info = s.get(j.id).unwrap();
        assert_eq!(info.state, jobd::store::JobState::Succeeded);
        assert_eq!(info.result, Some(serde_json::json!({ "id": j.id })));
    }
    assert_eq!(
        s.get(mail.id).unwrap().state,
        jobd::store::JobState::Running
    );
    // Other connections see one commit for the whole turn.
    assert_eq!(version(), commits + 1);

    // Nothing to do is no transaction at all; a bad queue name changes nothing.
    let (batch, none) = s.complete_and_claim(&[], "w", &[], 0, LEASE).unwrap();
    assert_eq!((batch.completed, none.len()), (0, 0));
    let mail_done = [(mail.id, mail.lease_token, None)];
    assert!(matches!(
        s.complete_and_claim(&mail_done, "w", &[("no such/queue", 1)], 1, LEASE),
        Err(Error::InvalidInput { .. })
    ));
    assert_eq!(
        s.get(mail.id).unwrap().state,
        jobd::store::JobState::Running
    );
    assert_eq!(version(), commits + 1, "nothing committed since");
}

crate::conformance!(
    claim_order_is_priority_then_run_at_then_id_and_delayed_jobs_wait,
    claim_batches_across_queues_in_the_order_given,
    paused_queues_are_skipped,
    a_queue_concurrency_limit_holds_across_workers_and_frees_with_each_end,
);
