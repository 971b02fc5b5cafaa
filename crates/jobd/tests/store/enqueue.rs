//! Enqueue: unique keys, bad input, the caller's transaction, batches and
//! their ids.

use std::time::Duration;

use jobd::store::{Backoff, JobState, ListFilter, NewJob};
use jobd::{Error, Store};
use serde_json::json;

use crate::support::*;

fn unique_keys_return_the_live_job(f: &Fixture) {
    let job = || NewJob::new("q", "backup").unique_key("backup:tenant-1");
    let a = f.enqueue(job());
    let b = f.enqueue(job().payload(&json!({"other": 1})));
    assert_eq!(a, b);
    assert_eq!(count(&f.store, "SELECT count(*) FROM jobs"), 1);
    // Still held while running.
    let claimed = f.claim_one("w", "q");
    assert_eq!(f.enqueue(job()), a);
    // Released once the job is finished.
    f.store.complete(a, claimed.lease_token, None).unwrap();
    let c = f.enqueue(job());
    assert_ne!(c, a);
    // In a batch too, including twice inside the same batch.
    let ids = f
        .store
        .enqueue_many(&[job(), job(), NewJob::new("q", "other")])
        .unwrap();
    assert_eq!(ids[0], c);
    assert_eq!(ids[1], c);
    assert_ne!(ids[2], c);
}

fn bad_input_is_refused_and_writes_nothing(f: &Fixture) {
    let cases: Vec<(NewJob, &str)> = vec![
        (NewJob::new("", "k"), "queue"),
        (NewJob::new("q".repeat(129), "k"), "queue"),
        (NewJob::new("has space", "k"), "queue"),
        (NewJob::new("q", ""), "kind"),
        (NewJob::new("q", "k").payload_json("{not json"), "payload"),
        (
            NewJob::new("q", "k").payload_json("x".repeat(2 << 20)),
            "payload",
        ),
        (NewJob::new("q", "k").max_attempts(-1), "max_attempts"),
        (NewJob::new("q", "k").max_attempts(0), "max_attempts"),
        (NewJob::new("q", "k").tenant("../etc"), "tenant"),
        (
            NewJob::new("q", "k").backoff(Backoff {
                base_ms: 10,
                max_ms: 1,
            }),
            "backoff",
        ),
        (NewJob::new("q", "k").timeout(Duration::ZERO), "timeout"),
    ];
    for (job, field) in &cases {
        match f.store.enqueue(job) {
            Err(Error::InvalidInput { field: got, reason }) => {
                assert_eq!(got, *field, "{reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("{field}: expected InvalidInput, got {other:?}"),
        }
    }
    // One bad job spoils the batch, and the batch writes nothing.
    let batch = vec![
        NewJob::new("q", "k"),
        NewJob::new("q", "k").payload_json("nope"),
    ];
    let err = f.store.enqueue_many(&batch).unwrap_err();
    assert!(err.to_string().contains("job #1"), "{err}");
    assert_eq!(count(&f.store, "SELECT count(*) FROM jobs"), 0);
    assert!(matches!(
        f.store.get(42),
        Err(Error::NotFound { job_id: 42 })
    ));
    assert!(matches!(
        f.store.claim("w", &[""], 1, LEASE),
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        f.store.list(&ListFilter {
            limit: Some(0),
            ..Default::default()
        }),
        Err(Error::InvalidInput { .. })
    ));
}

#[test]
fn enqueue_inside_the_callers_transaction_is_atomic_with_its_data() {
    let f = fixture();
    let mut conn = rusqlite::Connection::open(f.store.path().unwrap()).unwrap();
    conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)")
        .unwrap();

    let tx = conn.transaction().unwrap();
    tx.execute("INSERT INTO orders (total) VALUES (10)", [])
        .unwrap();
    f.store
        .sqlite()
        .unwrap()
        .enqueue_in(&tx, &NewJob::new("email", "receipt"))
        .unwrap();
    tx.rollback().unwrap();
    assert_eq!(count(&f.store, "SELECT count(*) FROM jobs"), 0);
    assert_eq!(count(&f.store, "SELECT count(*) FROM orders"), 0);

    let tx = conn.transaction().unwrap();
    tx.execute("INSERT INTO orders (total) VALUES (20)", [])
        .unwrap();
    let id = f
        .store
        .sqlite()
        .unwrap()
        .enqueue_in(
            &tx,
            &NewJob::new("email", "receipt").payload(&json!({"order": 1})),
        )
        .unwrap();
    tx.commit().unwrap();
    assert_eq!(f.store.get(id).unwrap().payload, json!({"order": 1}));
    assert_eq!(count(&f.store, "SELECT count(*) FROM orders"), 1);
}

/// A batch mixing plain jobs (inserted many rows per statement), delayed
/// ones, and unique keys (fresh, taken by an earlier job, repeated inside the
/// batch): every returned id is the job at that position.
fn check_batch_ids(store: &Store, first_key: usize) {
    let taken = store
        .enqueue(&NewJob::new("q", "k").unique_key(format!("key-{first_key}")))
        .unwrap();
    let batch: Vec<NewJob> = (0..203)
        .map(|i| {
            let job = NewJob::new("q", "k").payload(&json!({ "i": i }));
            match i {
                _ if i % 37 == 5 => job.unique_key(format!("key-{}", first_key + i % 2)),
                _ if i % 11 == 3 => job.delay(Duration::from_secs(60)),
                _ => job,
            }
        })
        .collect();
    let ids = store.enqueue_many(&batch).unwrap();
    assert_eq!(ids.len(), batch.len());
    let mut keyed = std::collections::HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        let info = store.get(*id).unwrap();
        if i % 37 == 5 {
            let key = format!("key-{}", first_key + i % 2);
            let first = *keyed.entry(key.clone()).or_insert(*id);
            assert_eq!(*id, first, "job #{i}: one live job per key");
            if i % 2 == 0 {
                assert_eq!(*id, taken, "job #{i}: the key was taken before the batch");
            }
            continue;
        }
        assert_eq!(info.payload, json!({ "i": i }), "job #{i} got id {id}");
        let state = if i % 11 == 3 {
            JobState::Scheduled
        } else {
            JobState::Ready
        };
        assert_eq!(info.state, state, "job #{i}");
    }
}

fn a_mixed_batch_returns_each_jobs_own_id(f: &Fixture) {
    check_batch_ids(&f.store, 0);
    check_batch_ids(&f.store, 10);
}

#[test]
fn a_batch_near_the_largest_id_still_returns_each_jobs_own_id() {
    let f = fixture();
    // SQLite picks free ids at random once the largest id is i64::MAX: the
    // batch must not assume they are consecutive.
    f.store
        .sqlite()
        .unwrap()
        .connection()
        .unwrap()
        .execute(
            "INSERT INTO jobs (id, queue, kind, state, run_at, max_attempts, attempt_limit,
                               backoff_base_ms, backoff_max_ms, created_at)
             VALUES (?1, 'old', 'k', 'succeeded', 0, 1, 1, 0, 0, 0)",
            [i64::MAX - 50],
        )
        .unwrap();
    check_batch_ids(&f.store, 0);
    check_batch_ids(&f.store, 10);
}

crate::conformance!(
    unique_keys_return_the_live_job,
    bad_input_is_refused_and_writes_nothing,
    a_mixed_batch_returns_each_jobs_own_id,
);
