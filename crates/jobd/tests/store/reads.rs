//! Reads: lists and their filters, stats and their reuse, purge, the views.

use std::time::Duration;

use jobd::store::{JobState, ListFilter, NewJob, Progress, StatsReuse};
use jobd::{Error, ManualClock, Store, StoreOptions};

use crate::support::*;

fn list_finds_jobs_by_the_text_of_their_last_error(f: &Fixture) {
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

fn list_filters_every_state_and_pages_newest_first(f: &Fixture) {
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

fn stats_count_states_and_live_workers(f: &Fixture) {
    for _ in 0..4 {
        f.enqueue(NewJob::new("pdf", "k").max_attempts(1));
    }
    f.enqueue(NewJob::new("email", "k").delay(Duration::from_secs(60)));
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

fn stats_count_every_state_per_queue(f: &Fixture) {
    let early = f.enqueue(NewJob::new("a", "k"));
    f.clock.advance(Duration::from_secs(5));
    for _ in 0..3 {
        f.enqueue(NewJob::new("a", "k"));
    }
    f.enqueue(NewJob::new("b", "k"));
    let waiting = f.enqueue(NewJob::new("b", "k"));
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
    let u = f.claim_one("w", "a");
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
        _dir: Some(dir),
        store,
        clock,
    }
}

/// (ready, running, succeeded, finished age) of queue `q` from `stats_recent`.
fn recent(store: &Store) -> (i64, i64, i64, i64) {
    let stats = store.stats_recent().unwrap();
    // A queue with nothing waiting is known by its finished jobs only: not
    // at all by a count from before its first one finished.
    let q = stats.queue("q").cloned().unwrap_or_default();
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
        f.enqueue(NewJob::new("q", "k"));
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
fn stats_recent_counts_again_in_the_background_once_the_count_is_older_than_its_cost_allows() {
    // Reuse for as long as the count took (microseconds here).
    let f = fixture_reusing(StatsReuse {
        min_scan: Duration::ZERO,
        factor: 1,
    });
    f.enqueue(NewJob::new("q", "k"));
    assert_eq!(recent(&f.store), (1, 0, 0, 0));
    let t = f.claim_one("w", "q");
    f.store.complete(t.id, t.lease_token, None).unwrap();
    f.clock.advance(Duration::from_secs(1));
    // Stale: this answer still has the old count (and says how old), while
    // a thread counts again; the next answers have the new one.
    assert_eq!(recent(&f.store), (0, 0, 0, 1000));
    let t0 = std::time::Instant::now();
    while recent(&f.store).2 != 1 {
        assert!(t0.elapsed() < Duration::from_secs(10), "no recount");
        std::thread::yield_now();
    }
    assert_eq!(recent(&f.store), (0, 0, 1, 0));
}

#[test]
fn stats_recent_on_a_small_file_is_always_read_now() {
    // The default: counts cheaper than 20 ms of CPU are never reused.
    let f = fixture();
    f.enqueue(NewJob::new("q", "k"));
    assert_eq!(recent(&f.store), (1, 0, 0, 0));
    let t = f.claim_one("w", "q");
    f.store.complete(t.id, t.lease_token, None).unwrap();
    assert_eq!(recent(&f.store), (0, 0, 1, 0));
    assert_eq!(f.store.stats_recent().unwrap(), f.store.stats().unwrap());
}

fn purge_deletes_finished_jobs_with_their_history(f: &Fixture) {
    let old = f.enqueue(NewJob::new("q", "k"));
    let t = f.claim_one("w", "q");
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
    let waiting = f.enqueue(NewJob::new("q", "k"));
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
    f.enqueue(NewJob::new("pdf", "generate").tenant("acme"));
    let conn = f.store.sqlite().unwrap().connection().unwrap();
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

crate::conformance!(
    list_finds_jobs_by_the_text_of_their_last_error,
    list_filters_every_state_and_pages_newest_first,
    stats_count_states_and_live_workers,
    stats_count_every_state_per_queue,
    purge_deletes_finished_jobs_with_their_history,
);
