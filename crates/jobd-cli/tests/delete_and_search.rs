//! `jobd delete` and `jobd list --payload` on a queue file.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use jobd::store::{JobState, NewJob};
use jobd::{Error, Store};

const JOBD: &str = env!("CARGO_BIN_EXE_jobd");

fn jobd(db: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(JOBD)
        .current_dir(db.parent().unwrap())
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn delete_takes_what_it_may_and_says_what_it_may_not() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("queue.db");
    let store = Store::open(&db).unwrap();
    let ids: Vec<i64> = (0..4)
        .map(|i| {
            let job = NewJob::new("q", "k")
                .payload(&serde_json::json!({"n": i, "to": format!("u{i}@x.io")}));
            store.enqueue(&job).unwrap()
        })
        .collect();
    let running = store
        .claim("w", &["q"], 1, Duration::from_secs(60))
        .unwrap();
    assert_eq!(running[0].id, ids[0]);

    let (_, out, _) = jobd(&db, &["list", "--payload", "to=u2@x.io", "--json"]);
    let found: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1, "{out}");
    assert_eq!(found[0]["id"], ids[2]);
    let (ok, _, err) = jobd(&db, &["list", "--payload", "to"]);
    assert!(!ok && err.contains("path=value"), "{err}");

    // A waiting job goes; the running one and a missing one are said, and
    // the exit code is 1.
    let (ok, out, err) = jobd(
        &db,
        &["delete", &ids[1].to_string(), &ids[0].to_string(), "999"],
    );
    assert!(!ok);
    assert!(
        out.contains(&format!("job {}: deleted (was ready)", ids[1])),
        "{out}"
    );
    assert!(
        err.contains(&format!("job {}", ids[0])) && err.contains("cancel it"),
        "{err}"
    );
    assert!(err.contains("job 999"), "{err}");
    assert!(matches!(store.get(ids[1]), Err(Error::NotFound { .. })));
    assert_eq!(store.get(ids[0]).unwrap().state, JobState::Running);
    let (ok, out, _) = jobd(&db, &["delete", &ids[3].to_string()]);
    assert!(ok, "{out}");
    assert_eq!(
        store.get(ids[2]).unwrap().state,
        JobState::Ready,
        "not named, kept"
    );
}
