//! Rollups: every way a try ends is counted per queue and minute, in the
//! transaction that ends it, and purging old minutes keeps the totals.

use std::time::Duration;

use jobd::store::{Ack, NewJob, Rollup, BUCKET_BOUNDS_MS};

use crate::support::*;

/// The bucket of `ms` in a histogram (as the store buckets it).
fn bucket(ms: i64) -> usize {
    BUCKET_BOUNDS_MS
        .iter()
        .position(|b| ms <= *b)
        .unwrap_or(BUCKET_BOUNDS_MS.len())
}

fn total(f: &Fixture, queue: &str) -> Rollup {
    f.store
        .rollup_totals()
        .unwrap()
        .into_iter()
        .find(|r| r.queue == queue)
        .unwrap_or_default()
}

fn every_end_of_a_try_is_counted_and_purges_keep_the_totals(f: &Fixture) {
    let s = &f.store;
    // Succeeded: waited 2 s in the queue, ran 30 ms.
    let a = f.enqueue(NewJob::new("q", "k"));
    f.clock.advance(Duration::from_secs(2));
    let t = f.claim_one("w", "q");
    f.clock.advance(Duration::from_millis(30));
    s.complete(a, t.lease_token, None).unwrap();
    let r = total(f, "q");
    assert_eq!((r.succeeded, r.failed, r.dead, r.cancelled), (1, 0, 0, 0));
    assert_eq!((r.run_ms, r.wait_ms), (30, 2000));
    assert_eq!(r.run[bucket(30)], 1);
    assert_eq!(r.wait[bucket(2000)], 1);
    assert_eq!(r.tries(), 1);

    // Failed twice, the second time out of tries: two failures, one dead.
    let b = f.enqueue(NewJob::new("q", "k").max_attempts(2));
    let t = f.claim_one("w", "q");
    s.fail(b, t.lease_token, "once", true).unwrap();
    f.clock.advance(Duration::from_secs(3600));
    let t = f.claim_one("w", "q");
    s.fail(b, t.lease_token, "twice", true).unwrap();
    // Cancelled by its worker; released (not counted).
    let c = f.enqueue(NewJob::new("q", "k"));
    let t = f.claim_one("w", "q");
    s.cancelled(c, t.lease_token, "asked").unwrap();
    let d = f.enqueue(NewJob::new("q", "k"));
    let t = f.claim_one("w", "q");
    s.release(d, t.lease_token).unwrap();
    let r = total(f, "q");
    assert_eq!((r.succeeded, r.failed, r.dead, r.cancelled), (1, 2, 1, 1));
    assert_eq!(r.tries(), 4, "the released try is not a run");

    // A batch of completions, and a remote worker's acknowledgement.
    let t = f.claim_one("w", "q");
    let e = f.enqueue(NewJob::new("q", "k"));
    let g = f.enqueue(NewJob::new("q", "k"));
    let both = s.claim("w", &["q"], 2, LEASE).unwrap();
    let done: Vec<_> = both.iter().map(|j| (j.id, j.lease_token, None)).collect();
    assert_eq!(s.complete_many(&done).unwrap().completed, 2);
    assert!([e, g].contains(&both[0].id));
    let (outcomes, _) = s
        .ack_and_claim(
            &[(t.id, t.lease_token, Ack::Complete { result: None })],
            "w",
            &[],
            0,
            LEASE,
        )
        .unwrap();
    assert_eq!(outcomes.len(), 1);
    // A try whose worker vanished, on the job's last try: dead by the reap.
    let h = f.enqueue(NewJob::new("other", "k").max_attempts(1));
    f.claim_one("w", "other");
    f.clock.advance(LEASE + Duration::from_secs(1));
    assert_eq!(s.reap().unwrap().dead, vec![h]);
    let r = total(f, "q");
    assert_eq!((r.succeeded, r.failed, r.dead, r.cancelled), (4, 2, 1, 1));
    let o = total(f, "other");
    assert_eq!((o.succeeded, o.dead, o.tries()), (0, 1, 0));

    // Minutes: the first hour's and the last.
    let now_minute = s.clock().now_ms() / 60_000;
    let minutes = s.rollups(0).unwrap();
    assert!(minutes.len() >= 3, "{minutes:?}");
    assert!(minutes.windows(2).all(|w| w[0].minute <= w[1].minute));
    assert!(minutes
        .iter()
        .any(|m| m.minute == now_minute && m.queue == "other"));
    let summed = minutes
        .iter()
        .filter(|m| m.queue == "q")
        .fold(Rollup::default(), |mut acc, m| {
            acc.add(m);
            acc
        });
    assert_eq!(summed.succeeded, 4);
    assert_eq!(
        s.rollups(now_minute).unwrap().len(),
        2,
        "q and other, this minute"
    );

    // Purged past a day: the old minutes fold into the totals.
    let before: Vec<Rollup> = s.rollup_totals().unwrap();
    f.clock.advance(Duration::from_secs(2 * 86_400));
    let cutoff = s.clock().now_ms() - 86_400_000;
    assert_eq!(s.purge_rollups(cutoff).unwrap(), minutes.len());
    assert!(s.rollups(0).unwrap().is_empty());
    assert_eq!(s.rollup_totals().unwrap(), before);
    assert_eq!(s.purge_rollups(cutoff).unwrap(), 0);
    assert_eq!(s.rollup_totals().unwrap(), before);
}

/// The queue wait is counted for a claim of a queue at least once every
/// `WAIT_SAMPLE_EVERY` (on SQLite, a busier queue's claims in between count
/// their runs only; PostgreSQL reads every due time): never more waits than
/// runs, and the run of every try.
fn waits_are_read_at_least_once_per_sample_interval(f: &Fixture) {
    let s = &f.store;
    let claim_and_complete = |n: usize| {
        for _ in 0..n {
            f.enqueue(NewJob::new("w", "k"));
        }
        f.clock.advance(Duration::from_millis(5));
        let jobs = s.claim("w1", &["w"], n, LEASE).unwrap();
        assert_eq!(jobs.len(), n);
        let done: Vec<_> = jobs.iter().map(|j| (j.id, j.lease_token, None)).collect();
        assert_eq!(s.complete_many(&done).unwrap().completed, n);
    };
    claim_and_complete(3);
    let r = total(f, "w");
    assert_eq!((r.succeeded, r.tries()), (3, 3));
    assert_eq!(
        r.wait.iter().sum::<i64>(),
        3,
        "a first claim reads its due times"
    );
    assert_eq!(r.wait_ms, 15);
    // At once again: the runs counted; the waits maybe (PostgreSQL), maybe
    // not (SQLite, within the interval).
    claim_and_complete(2);
    let r = total(f, "w");
    assert_eq!((r.succeeded, r.tries()), (5, 5));
    let waits = r.wait.iter().sum::<i64>();
    assert!(waits == 3 || waits == 5, "{waits} waits");
    // After the interval, read again.
    f.clock.advance(jobd::store::rollup::WAIT_SAMPLE_EVERY);
    claim_and_complete(1);
    let r = total(f, "w");
    assert_eq!((r.succeeded, r.tries()), (6, 6));
    assert_eq!(r.wait.iter().sum::<i64>(), waits + 1);
}

#[test]
fn quantiles_interpolate_inside_a_bucket() {
    let mut h = [0i64; jobd::store::BUCKETS];
    assert_eq!(Rollup::quantile(&h, 0.5), None);
    h[bucket(30)] = 10; // ten tries of 10–50 ms
    assert_eq!(Rollup::quantile(&h, 0.5), Some(30.0));
    assert_eq!(Rollup::quantile(&h, 1.0), Some(50.0));
    h[jobd::store::BUCKETS - 1] = 90; // ninety above the last bound
    assert_eq!(Rollup::quantile(&h, 0.95), Some(300_000.0));
}

crate::conformance!(
    every_end_of_a_try_is_counted_and_purges_keep_the_totals,
    waits_are_read_at_least_once_per_sample_interval
);
