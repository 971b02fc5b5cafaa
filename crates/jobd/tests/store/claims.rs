//! Claims: order, batches across queues, paused queues, concurrency limits.

use std::time::Duration;

use jobd::store::NewJob;
use jobd::Error;

use crate::support::*;

#[test]
fn claim_order_is_priority_then_run_at_then_id_and_delayed_jobs_wait() {
    let f = fixture();
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

#[test]
fn claim_batches_across_queues_in_the_order_given() {
    let f = fixture();
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

#[test]
fn paused_queues_are_skipped() {
    let f = fixture();
    f.enqueue(NewJob::new("pdf", "k"));
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
