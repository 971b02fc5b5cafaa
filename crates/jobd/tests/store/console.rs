//! What the operations console reads and does, on both backends: job lists
//! with their times and worker, payload search, a job's progress history,
//! the live workers with what they run, and deleting a job.

use std::time::Duration;

use jobd::store::{JobState, ListFilter, NewJob, Progress};
use jobd::Error;

use crate::support::*;

fn lists_carry_times_and_workers_and_search_payloads(f: &Fixture) {
    let s = &f.store;
    let a = f.enqueue(
        NewJob::new("q", "k").payload(&serde_json::json!({"customer": {"id": 42}, "to": "a@x.io"})),
    );
    let b = f.enqueue(
        NewJob::new("q", "k")
            .payload(&serde_json::json!({"customer": {"id": 7}, "items": [{"sku": "A-1"}]})),
    );
    f.clock.advance(Duration::from_secs(1));
    let t = f.claim_one("w1", "q");
    assert_eq!(t.id, a);
    let list = s.list(&ListFilter::default()).unwrap();
    let running = list.iter().find(|j| j.id == a).unwrap();
    assert_eq!(running.worker.as_deref(), Some("w1"));
    assert_eq!(running.started_at, Some(s.clock().now_ms()));
    assert_eq!(list.iter().find(|j| j.id == b).unwrap().started_at, None);

    let search = |text: &str| -> Vec<i64> {
        s.list(&ListFilter {
            payload: Some(text.to_string()),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect()
    };
    assert_eq!(search("customer.id=42"), vec![a]);
    assert_eq!(search("customer.id = 7"), vec![b]);
    assert_eq!(
        search("to=a@x.io"),
        vec![a],
        "a value that is not JSON is a string"
    );
    assert_eq!(search("to=\"a@x.io\""), vec![a]);
    assert_eq!(search("items.0.sku=A-1"), vec![b]);
    assert!(
        search("customer.id=\"42\"").is_empty(),
        "a string is not a number"
    );
    assert!(search("customer.name=42").is_empty());
    for bad in ["customer.id", "customer..id=1", "a'b=1", "$.x=1", "x=null"] {
        let e = s
            .list(&ListFilter {
                payload: Some(bad.to_string()),
                ..Default::default()
            })
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidInput { .. }) && e.to_string().contains("payload search"),
            "{bad}: {e}"
        );
    }
}

fn a_job_shows_its_progress_history(f: &Fixture) {
    let s = &f.store;
    let id = f.enqueue(NewJob::new("q", "k"));
    let t = f.claim_one("w", "q");
    for (i, stage) in ["fetch", "render", "upload"].iter().enumerate() {
        f.clock.advance(Duration::from_millis(100));
        let p = Progress {
            percent: Some(30.0 * (i + 1) as f64),
            stage: Some(stage.to_string()),
            detail: None,
        };
        s.set_progress(id, t.lease_token, &p).unwrap();
    }
    let job = s.get(id).unwrap();
    let stages: Vec<_> = job
        .progress_log
        .iter()
        .map(|p| p.stage.clone().unwrap())
        .collect();
    assert_eq!(stages, ["fetch", "render", "upload"]);
    assert!(job.progress_log.windows(2).all(|w| w[0].at < w[1].at));
    assert_eq!(job.progress_log[2].percent, Some(90.0));
    assert_eq!(job.progress_log[0].attempt, 1);
}

fn workers_show_what_they_run(f: &Fixture) {
    let s = &f.store;
    s.register_worker("h:1:a", "h", 11, &["q"], &["k"]).unwrap();
    f.clock.advance(Duration::from_millis(5));
    s.register_worker("r:2:b", "r", 0, &["q", "other"], &["*"])
        .unwrap();
    f.enqueue(NewJob::new("q", "k"));
    f.enqueue(NewJob::new("q", "k"));
    s.claim("h:1:a", &["q"], 2, LEASE).unwrap();
    let workers = s.workers().unwrap();
    assert_eq!(workers.len(), 2);
    assert_eq!(workers[0].id, "h:1:a");
    assert_eq!((workers[0].pid, workers[0].running), (11, 2));
    assert_eq!(workers[0].queues, ["q"]);
    assert_eq!(workers[1].kinds, ["*"]);
    assert_eq!(workers[1].running, 0);
    assert!(workers[1].last_heartbeat_at >= workers[0].started_at);
    // Gone quiet: no longer listed.
    f.clock
        .advance(s.options().worker_liveness + Duration::from_secs(1));
    s.worker_heartbeat("r:2:b").unwrap();
    let ids: Vec<_> = s.workers().unwrap().into_iter().map(|w| w.id).collect();
    assert_eq!(ids, ["r:2:b"]);
}

fn delete_takes_waiting_and_finished_jobs_not_running_ones(f: &Fixture) {
    let s = &f.store;
    let waiting = f.enqueue(NewJob::new("q", "k").delay(Duration::from_secs(60)));
    let running = f.enqueue(NewJob::new("q", "k"));
    let t = f.claim_one("w", "q");
    assert_eq!(t.id, running);
    let e = s.delete(running).unwrap_err();
    assert!(matches!(e, Error::InvalidState { .. }), "{e}");
    assert!(e.to_string().contains("cancel it"), "{e}");
    assert_eq!(
        s.get(running).unwrap().state,
        JobState::Running,
        "unchanged"
    );

    assert_eq!(s.delete(waiting).unwrap(), JobState::Scheduled);
    assert!(matches!(s.get(waiting), Err(Error::NotFound { .. })));
    assert!(matches!(s.delete(waiting), Err(Error::NotFound { .. })));

    // A finished job goes, and its try stays counted.
    f.clock.advance(Duration::from_millis(25));
    s.complete(running, t.lease_token, None).unwrap();
    let before = s.stats().unwrap().queue("q").unwrap().succeeded_total;
    assert_eq!(s.delete(running).unwrap(), JobState::Succeeded);
    assert!(matches!(s.get(running), Err(Error::NotFound { .. })));
    assert_eq!(
        s.stats().unwrap().queue("q").unwrap().succeeded_total,
        before
    );
}

crate::conformance!(
    lists_carry_times_and_workers_and_search_payloads,
    a_job_shows_its_progress_history,
    workers_show_what_they_run,
    delete_takes_waiting_and_finished_jobs_not_running_ones,
);
