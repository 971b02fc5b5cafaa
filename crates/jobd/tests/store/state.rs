//! State kept beside the queue by libraries (schema 11): by key, with an
//! expiry, purged by prefix — on both backends.

use jobd::store::{NewJob, Swap};
use jobd::Error;
use serde_json::json;

use crate::support::*;

fn state_is_kept_by_key_and_purged_by_prefix_when_expired(f: &Fixture) {
    let s = &f.store;
    assert_eq!(s.state_get("lib:a").unwrap(), None);
    s.state_put("lib:a", r#"{"n":1}"#, Some(T0 + 1000)).unwrap();
    s.state_put("lib:b", "kept", None).unwrap();
    s.state_put("lib_x", "not under lib:", Some(T0)).unwrap();
    s.state_put("other:a", "another library's", Some(T0))
        .unwrap();
    let a = s.state_get("lib:a").unwrap().unwrap();
    assert_eq!(
        (a.value.as_str(), a.updated_at, a.expires_at),
        (r#"{"n":1}"#, T0, Some(T0 + 1000))
    );
    // Written again: the new value and time.
    f.clock.advance(std::time::Duration::from_millis(10));
    s.state_put("lib:a", "2", Some(T0 + 1000)).unwrap();
    let a = s.state_get("lib:a").unwrap().unwrap();
    assert_eq!((a.value.as_str(), a.updated_at), ("2", T0 + 10));
    // Purging `lib:` at T0 + 1000 drops lib:a only: lib:b never expires,
    // and `_` in the prefix is a character, not a wildcard.
    assert_eq!(s.state_purge("lib:", T0 + 999).unwrap(), 0);
    assert_eq!(s.state_purge("lib:", T0 + 1000).unwrap(), 1);
    assert_eq!(s.state_get("lib:a").unwrap(), None);
    assert!(s.state_get("lib:b").unwrap().is_some());
    assert!(s.state_get("lib_x").unwrap().is_some());
    assert!(s.state_get("other:a").unwrap().is_some());
    // A bad key is refused and writes nothing.
    assert!(matches!(
        s.state_put("", "x", None),
        Err(Error::InvalidInput { .. })
    ));
    let long = "k".repeat(513);
    assert!(matches!(
        s.state_put(&long, "x", None),
        Err(Error::InvalidInput { .. })
    ));
}

fn a_swap_moves_a_mark_and_enqueues_together_once(f: &Fixture) {
    let s = &f.store;
    let job = NewJob::new("email", "send_email").payload(&json!({"to": "a@example.com"}));
    // Absent as expected: written, and the job enqueued with it.
    let Swap::Done { job_id: Some(id) } = s.state_swap("lib:mark", None, "1", Some(&job)).unwrap()
    else {
        panic!("the first swap is done");
    };
    assert_eq!(s.get(id).unwrap().queue, "email");
    // A second runner that read the old mark changes nothing.
    assert_eq!(
        s.state_swap("lib:mark", None, "2", Some(&job)).unwrap(),
        Swap::Changed
    );
    assert_eq!(s.state_get("lib:mark").unwrap().unwrap().value, "1");
    assert_eq!(count(s, "SELECT count(*) FROM jobs"), 1, "nothing enqueued");
    // The holder of the current mark moves it, without a job.
    assert_eq!(
        s.state_swap("lib:mark", Some("1"), "2", None).unwrap(),
        Swap::Done { job_id: None }
    );
    assert_eq!(s.state_get("lib:mark").unwrap().unwrap().value, "2");
    // A bad job is refused before anything is written.
    let bad = NewJob::new("email", "send_email").payload_json("nope");
    assert!(s
        .state_swap("lib:mark", Some("2"), "3", Some(&bad))
        .is_err());
    assert_eq!(s.state_get("lib:mark").unwrap().unwrap().value, "2");
}

fn dead_since_reads_what_died_after_a_mark_in_order(f: &Fixture) {
    let s = &f.store;
    let mut dead = Vec::new();
    for i in 0..3 {
        let id = f.enqueue(NewJob::new("q", "k").max_attempts(1));
        let j = f.claim_one("w", "q");
        f.clock.advance(std::time::Duration::from_millis(10));
        s.fail(j.id, j.lease_token, &format!("boom {i}"), true)
            .unwrap();
        dead.push((id, T0 + 10 * (i + 1)));
    }
    let all = s.dead_since((0, 0), T0 + 1000).unwrap();
    let got: Vec<(i64, Option<i64>)> = all.iter().map(|j| (j.id, j.finished_at)).collect();
    let want: Vec<(i64, Option<i64>)> = dead.iter().map(|(id, at)| (*id, Some(*at))).collect();
    assert_eq!(got, want);
    assert_eq!(all[2].last_error.as_deref(), Some("boom 2"));
    // After the first one's (finished_at, id), and not past `until`.
    let after = s.dead_since((dead[0].1, dead[0].0), T0 + 25).unwrap();
    assert_eq!(after.iter().map(|j| j.id).collect::<Vec<_>>(), [dead[1].0]);
}

crate::conformance!(
    state_is_kept_by_key_and_purged_by_prefix_when_expired,
    a_swap_moves_a_mark_and_enqueues_together_once,
    dead_since_reads_what_died_after_a_mark_in_order,
);
