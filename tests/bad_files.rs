//! Files that are not a healthy jobd queue are refused with a clear error and
//! left exactly as they were.

use std::path::Path;

use jobd::store::NewJob;
use jobd::{Error, Store};

fn snapshot(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Open must fail with an error matching `expect`, and leave the file byte-for-byte unchanged.
fn assert_refused(path: &Path, expect: impl Fn(&Error) -> bool, words: &str) {
    let before = snapshot(path);
    let err = Store::open(path).expect_err("a bad file was accepted");
    assert!(expect(&err), "unexpected error kind: {err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(words),
        "error {msg:?} should mention {words:?}"
    );
    assert!(
        msg.contains(&path.display().to_string()),
        "error {msg:?} should name the file"
    );
    assert_eq!(snapshot(path), before, "the refused file was modified");
}

fn jobd_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("good.db");
    let store = Store::open(&path).unwrap();
    let jobs: Vec<NewJob> = (0..2000)
        .map(|i| {
            NewJob::new("q", "k").payload(&serde_json::json!({"n": i, "pad": "x".repeat(200)}))
        })
        .collect();
    store.enqueue_many(&jobs).unwrap();
    store.checkpoint().unwrap();
    drop(store);
    path
}

#[test]
fn a_truncated_queue_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = snapshot(&jobd_file(dir.path()));
    assert!(good.len() > 64 * 4096);
    for (name, cut) in [
        ("half", good.len() / 2),
        ("mid-page", good.len() / 2 + 100),
        ("header-only", 60),
    ] {
        let path = dir.path().join(format!("truncated-{name}.db"));
        std::fs::write(&path, &good[..cut]).unwrap();
        assert_refused(&path, |e| matches!(e, Error::Corrupt { .. }), "truncated");
    }
}

#[test]
fn a_garbage_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = snapshot(&jobd_file(dir.path()));
    bytes[16] = 0x03; // page size 0x0300: not a power of two
    bytes[17] = 0x00;
    let path = dir.path().join("garbage-header.db");
    std::fs::write(&path, &bytes).unwrap();
    assert_refused(&path, |e| matches!(e, Error::Corrupt { .. }), "page size");
}

#[test]
fn random_bytes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("random-bytes.db");
    let mut x: u64 = 0x1234_5678_9abc_def0;
    let bytes: Vec<u8> = (0..8192)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&path, bytes).unwrap();
    assert_refused(
        &path,
        |e| matches!(e, Error::NotAQueue { .. }),
        "not a SQLite database",
    );
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello, this is not a database\n").unwrap();
    assert_refused(
        &text,
        |e| matches!(e, Error::NotAQueue { .. }),
        "not a SQLite database",
    );
}

#[test]
fn another_applications_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A plain app database (no application_id), in WAL mode like most apps use.
    let plain = dir.path().join("app.db");
    {
        let c = rusqlite::Connection::open(&plain).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);
             INSERT INTO users (name) VALUES ('ada');",
        )
        .unwrap();
    }
    assert_refused(
        &plain,
        |e| matches!(e, Error::NotAQueue { .. }),
        "another application",
    );
    let c = rusqlite::Connection::open(&plain).unwrap();
    let name: String = c
        .query_row("SELECT name FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(name, "ada");
    assert!(
        c.prepare("SELECT * FROM jobs").is_err(),
        "no jobd table was added"
    );

    // One that marks itself with its own application_id (e.g. a GeoPackage).
    let tagged = dir.path().join("tagged.db");
    {
        let c = rusqlite::Connection::open(&tagged).unwrap();
        c.execute_batch("PRAGMA application_id = 0x47504B47; CREATE TABLE t (x);")
            .unwrap();
    }
    assert_refused(
        &tagged,
        |e| matches!(e, Error::NotAQueue { .. }),
        "0x47504b47",
    );
}

#[test]
fn a_file_from_a_newer_jobd_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = jobd_file(dir.path());
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA user_version = 999").unwrap();
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    }
    assert_refused(
        &path,
        |e| matches!(e, Error::TooNew { found: 999, .. }),
        "newer",
    );
}

#[test]
fn an_empty_file_or_an_empty_sqlite_database_becomes_a_queue() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    Store::open(&empty)
        .unwrap()
        .enqueue(&NewJob::new("q", "k"))
        .unwrap();
    let blank = dir.path().join("blank.db");
    rusqlite::Connection::open(&blank)
        .unwrap()
        .execute_batch("VACUUM")
        .unwrap();
    Store::open(&blank)
        .unwrap()
        .enqueue(&NewJob::new("q", "k"))
        .unwrap();
    // And reopening a queue is fine.
    assert_eq!(Store::open(&blank).unwrap().get(1).unwrap().kind, "k");
}

#[test]
fn a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::NotAQueue { .. }), "{err:?}");
}
