//! Notifications: a job's end enqueues its `notify` jobs in the same
//! transaction, only for the outcomes each entry names, whichever path ends
//! the job; a schedule's jobs carry the schedule's list.

use std::time::Duration;

use jobd::scheduler::{NewSchedule, Scheduler};
use jobd::store::{JobState, ListFilter, NewJob, Notify};
use jobd::{Error, Store};
use serde_json::{json, Value};

use crate::support::*;

fn list(v: Value) -> Vec<Notify> {
    serde_json::from_value(v).unwrap()
}

/// The notify jobs in the file, oldest first, as (id, payload).
fn notifications(store: &Store) -> Vec<(i64, Value)> {
    let mut found: Vec<(i64, Value)> = store
        .list(&ListFilter {
            queue: Some("notify".into()),
            ..ListFilter::default()
        })
        .unwrap()
        .into_iter()
        .map(|s| (s.id, store.get(s.id).unwrap().payload))
        .collect();
    found.reverse();
    found
}

fn each_end_enqueues_the_entries_that_name_it_with_the_job_and_its_result_or_error(f: &Fixture) {
    let n = list(json!([
        {"on": "succeeded", "webhook": "http://hooks/ok"},
        {"on": ["dead", "cancelled"], "webhook": "http://hooks/bad", "max_attempts": 4,
         "backoff_ms": 250},
        {"on": "end", "email": {"to": "ops@example.com"}},
    ]));
    let ok = f.enqueue(NewJob::new("q", "k").tenant("tenant-001").notify(n.clone()));
    let dies = f.enqueue(NewJob::new("q", "k").max_attempts(1).notify(n.clone()));
    let cancelled = f.enqueue(NewJob::new("q", "k").delay(LEASE).notify(n.clone()));
    let plain = f.enqueue(NewJob::new("q", "k"));
    // Read back with `end` spelt out as the states it stands for.
    let stored = f.store.get(ok).unwrap().notify;
    assert_eq!(stored[..2], n[..2]);
    assert_eq!(stored[2].states(), n[2].states());
    assert_eq!(stored[2].states().len(), 3);

    let a = f.claim_one("w", "q");
    assert_eq!(a.id, ok);
    f.store
        .complete(ok, a.lease_token, Some(&json!({"pages": 3})))
        .unwrap();
    let sent = notifications(&f.store);
    assert_eq!(sent.len(), 2, "succeeded: the first and the third entry");
    let (id, p) = &sent[0];
    assert!(*id > plain);
    assert_eq!(
        p["job"],
        json!({"id": ok, "queue": "q", "kind": "k", "state": "succeeded", "attempts": 1,
               "tenant": "tenant-001", "result": {"pages": 3}, "error": null,
               "finished_at": T0})
    );
    assert_eq!(p["notify"]["webhook"], "http://hooks/ok");
    assert_eq!(sent[1].1["notify"]["email"]["to"], "ops@example.com");
    let job = f.store.get(*id).unwrap();
    assert_eq!(
        (job.queue.as_str(), job.kind.as_str()),
        ("notify", "notify")
    );
    assert_eq!(
        (job.state, job.max_attempts, job.run_at),
        (JobState::Ready, 10, T0)
    );
    assert_eq!(job.tenant.as_deref(), Some("tenant-001"));
    assert!(job.notify.is_empty(), "a notification notifies nobody");

    let b = f.claim_one("w", "q");
    assert_eq!(b.id, dies);
    f.store.fail(dies, b.lease_token, "boom", true).unwrap();
    f.store.cancel(cancelled).unwrap();
    let sent = notifications(&f.store);
    assert_eq!(sent.len(), 6);
    let dead: Vec<&Value> = sent[2..4].iter().map(|(_, p)| p).collect();
    assert_eq!(dead[0]["job"]["state"], "dead");
    assert_eq!(dead[0]["job"]["error"], "boom");
    assert_eq!(dead[0]["job"]["result"], Value::Null);
    let retried = f.store.get(sent[2].0).unwrap();
    assert_eq!(
        (retried.max_attempts, retried.backoff.base_ms),
        (4, 250),
        "the entry's own retry policy"
    );
    assert_eq!(sent[4].1["job"]["state"], "cancelled");
    assert_eq!(sent[4].1["job"]["id"], cancelled);

    // The plain job ends without a word.
    let c = f.claim_one("w", "q");
    assert_eq!(c.id, plain);
    f.store.complete(plain, c.lease_token, None).unwrap();
    assert_eq!(notifications(&f.store).len(), 6);
}

fn a_lease_that_runs_out_on_the_last_try_notifies_as_dead(f: &Fixture) {
    let id = f.enqueue(
        NewJob::new("q", "k")
            .max_attempts(1)
            .notify(list(json!([{"on": "dead", "webhook": "http://h/"}]))),
    );
    f.claim_one("w", "q");
    f.clock.advance(LEASE + Duration::from_secs(1));
    let report = f.store.reap().unwrap();
    assert_eq!(report.dead, vec![id]);
    let sent = notifications(&f.store);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1["job"]["state"], "dead");
}

#[test]
fn ids_stay_above_the_deleted_ones_when_two_entries_fire_together() {
    let f = fixture();
    let n = list(json!([
        {"on": "end", "webhook": "http://h/1"},
        {"on": "end", "webhook": "http://h/2"},
    ]));
    let id = f.enqueue(NewJob::new("q", "k").notify(n));
    let newer = f.enqueue(NewJob::new("other", "k"));
    // The newest job goes: the floor is now above every id left.
    f.store.cancel(newer).unwrap();
    f.store
        .sqlite()
        .unwrap()
        .connection()
        .unwrap()
        .execute("DELETE FROM jobs WHERE id = ?1", [newer])
        .unwrap();
    let a = f.claim_one("w", "q");
    f.store.complete(id, a.lease_token, None).unwrap();
    let ids: Vec<i64> = notifications(&f.store).iter().map(|(i, _)| *i).collect();
    assert_eq!(ids, vec![newer + 1, newer + 2]);
}

fn a_bad_list_is_refused_and_nothing_is_written(f: &Fixture) {
    for (bad, why) in [
        (json!([{"on": "dead"}]), "no target"),
        (json!([{"on": [], "webhook": "x"}]), "empty"),
        (
            json!([{"on": "dead", "webhook": "x", "backoff_ms": -1}]),
            "backoff_ms",
        ),
    ] {
        let e = f
            .store
            .enqueue(&NewJob::new("q", "k").notify(list(bad.clone())))
            .unwrap_err();
        assert!(
            matches!(
                &e,
                Error::InvalidInput {
                    field: "notify",
                    ..
                }
            ) && e.to_string().contains(why),
            "{bad}: {e}"
        );
    }
    let many = vec![list(json!([{"on": "dead", "webhook": "x"}])).remove(0); 17];
    assert!(f
        .store
        .enqueue(&NewJob::new("q", "k").notify(many))
        .is_err());
    assert_eq!(count(&f.store, "SELECT count(*) FROM jobs"), 0);
}

fn a_schedules_jobs_carry_its_list(f: &Fixture) {
    let n = list(json!([{"on": "succeeded", "webhook": "http://h/nightly"}]));
    let s = NewSchedule::every("nightly", Duration::from_secs(60), "q", "k").notify(n.clone());
    assert_eq!(f.store.add_schedule(&s).unwrap().notify, n);
    f.clock.advance(Duration::from_secs(61));
    let fired = Scheduler::new(f.store.clone()).tick().unwrap().fired;
    assert_eq!(fired.len(), 1);
    let job = f.store.get(fired[0].job_id).unwrap();
    assert_eq!(job.notify, n);
    let a = f.claim_one("w", "q");
    f.store.complete(a.id, a.lease_token, None).unwrap();
    assert_eq!(notifications(&f.store).len(), 1);
}

crate::conformance!(
    each_end_enqueues_the_entries_that_name_it_with_the_job_and_its_result_or_error,
    a_lease_that_runs_out_on_the_last_try_notifies_as_dead,
    a_bad_list_is_refused_and_nothing_is_written,
    a_schedules_jobs_carry_its_list,
);
