//! The rest of the seam, on both backends: purged tallies that keep the
//! counters of tries from going down, progress and fired-tick retention,
//! the worker registry, queue knowledge and settings, upkeep calls.

use std::time::Duration;

use jobd::scheduler::NewSchedule;
use jobd::store::{JobSelection, NewJob, Progress};

use crate::support::*;

fn purged_tries_keep_the_counters_and_retention_drops_old_rows(f: &Fixture) {
    let s = &f.store;
    // One job that failed once then succeeded, one dead.
    let a = f.enqueue(NewJob::new("q", "k").max_attempts(2));
    let t = f.claim_one("w", "q");
    s.fail(a, t.lease_token, "once", true).unwrap();
    f.clock.advance(Duration::from_secs(3600));
    let t = f.claim_one("w", "q");
    s.set_progress(
        a,
        t.lease_token,
        &Progress {
            percent: Some(50.0),
            ..Default::default()
        },
    )
    .unwrap();
    f.clock.advance(Duration::from_millis(40));
    s.complete(a, t.lease_token, None).unwrap();
    let b = f.enqueue(NewJob::new("q", "k").max_attempts(1));
    let t = f.claim_one("w", "q");
    s.fail(b, t.lease_token, "for good", true).unwrap();
    let before = s.try_totals(&s.stats().unwrap()).unwrap();
    assert_eq!(before[&("q".to_string(), "succeeded".to_string())].0, 1);
    assert_eq!(before[&("q".to_string(), "failed".to_string())].0, 2);
    assert_eq!(before[&("q".to_string(), "succeeded".to_string())].1, 40);
    // Purged, the counters stay where they were.
    f.clock.advance(Duration::from_secs(7200));
    assert_eq!(s.purge(Duration::from_secs(60), Some("q")).unwrap(), 2);
    let after = s.try_totals(&s.stats().unwrap()).unwrap();
    assert_eq!(after, before);
    assert_eq!(s.stats().unwrap().queue("q").unwrap().succeeded_total, 1);
    // Progress rows and fired ticks past a cutoff.
    let c = f.enqueue(NewJob::new("q", "k"));
    let t = f.claim_one("w", "q");
    s.set_progress(
        c,
        t.lease_token,
        &Progress {
            percent: Some(1.0),
            ..Default::default()
        },
    )
    .unwrap();
    let now = s.clock().now_ms();
    assert_eq!(s.purge_progress(now).unwrap(), 0);
    assert_eq!(s.purge_progress(now + 1).unwrap(), 1);
    assert_eq!(
        s.get(c).unwrap().progress.percent,
        Some(1.0),
        "the latest stays on the job"
    );
    s.add_schedule(&NewSchedule::every(
        "tick",
        Duration::from_secs(60),
        "q",
        "k",
    ))
    .unwrap();
    let scheduler = jobd::scheduler::Scheduler::new(s.clone());
    for _ in 0..3 {
        f.clock.advance(Duration::from_secs(60));
        assert_eq!(scheduler.tick().unwrap().fired.len(), 1);
    }
    assert_eq!(s.schedule_fires("tick", 10).unwrap().len(), 3);
    let latest = s.schedule_fires("tick", 1).unwrap()[0].fire_at;
    // Every fire but the latest (the guard against firing it again).
    assert_eq!(s.purge_fires(latest + 1).unwrap(), 2);
    assert_eq!(s.schedule_fires("tick", 10).unwrap()[0].fire_at, latest);
    s.optimize().unwrap();
    s.checkpoint().unwrap();
    assert_eq!(s.quick_check().unwrap(), "ok");
}

fn the_registry_knows_live_workers_their_queues_and_kinds(f: &Fixture) {
    let s = &f.store;
    assert!(!s.knows_queue("pdf").unwrap());
    s.register_worker("host:1:a", "host", 1, &["pdf", "email"], &["render"])
        .unwrap();
    s.register_worker("host:2:b", "host", 2, &["email"], &["*"])
        .unwrap();
    assert_eq!(s.live_workers().unwrap(), 2);
    assert!(
        s.knows_queue("pdf").unwrap(),
        "a registered worker serves it"
    );
    let work = s.live_work().unwrap();
    assert!(work.serves("pdf") && work.runs("pdf", "render") && !work.runs("pdf", "other"));
    assert!(work.runs("email", "anything"));
    // Liveness runs out without heartbeats; a heartbeat renews it.
    f.clock.advance(Duration::from_secs(20));
    s.worker_heartbeat("host:1:a").unwrap();
    f.clock.advance(Duration::from_secs(20));
    assert_eq!(s.live_workers().unwrap(), 1);
    s.deregister_worker("host:1:a").unwrap();
    assert_eq!(s.live_workers().unwrap(), 0);
    // Settings make a queue known too; a bad name or limit is refused.
    s.set_concurrency("exports", Some(2)).unwrap();
    assert!(s.knows_queue("exports").unwrap());
    assert_eq!(
        s.stats().unwrap().queue("exports").unwrap().concurrency,
        Some(2)
    );
    assert!(s.set_concurrency("exports", Some(0)).is_err());
    assert!(s.pause("bad queue!").is_err());
    // Counting what a bulk operation would touch changes nothing.
    f.enqueue(NewJob::new("exports", "k"));
    let sel = JobSelection {
        queue: Some("exports".into()),
        ..Default::default()
    };
    assert_eq!(s.count_cancellable(&sel).unwrap().cancelled, 1);
    assert_eq!(s.count_retryable(&JobSelection::default()).unwrap(), 0);
    assert_eq!(s.next_run_at().unwrap(), None);
}

crate::conformance!(
    purged_tries_keep_the_counters_and_retention_drops_old_rows,
    the_registry_knows_live_workers_their_queues_and_kinds,
);

#[test]
fn database_urls_keep_their_password_out_of_print() {
    use jobd::store::postgres::{is_url, redact, without_password};
    let url = "postgres://jobd:s3cr:et@db.internal:5432/jobd";
    assert!(is_url(url) && is_url("postgresql://h/db") && !is_url("queue.db"));
    assert_eq!(redact(url), "postgres://jobd:***@db.internal:5432/jobd");
    assert_eq!(
        without_password(url),
        "postgres://jobd@db.internal:5432/jobd"
    );
    for plain in ["postgres://jobd@db/jobd", "postgres://db/jobd"] {
        assert_eq!(redact(plain), plain);
        assert_eq!(without_password(plain), plain);
    }
}
