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

/// A copy of an application's WAL database as a crash (or a live app) leaves
/// it: the main file and a `-wal` that holds its newest commits.
fn foreign_wal_file(dir: &Path) -> std::path::PathBuf {
    let live = dir.join("live.db");
    let conn = rusqlite::Connection::open(&live).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
         CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT);",
    )
    .unwrap();
    for i in 0..200 {
        conn.execute(
            "INSERT INTO users (email) VALUES (?1)",
            [format!("u{i}@example.com")],
        )
        .unwrap();
    }
    let app = dir.join("app.db");
    // Copied while the app holds the file open: its frames are not yet checkpointed.
    std::fs::copy(&live, &app).unwrap();
    std::fs::copy(dir.join("live.db-wal"), dir.join("app.db-wal")).unwrap();
    assert!(std::fs::metadata(dir.join("app.db-wal")).unwrap().len() > 4096);
    app
}

/// Opening another application's WAL database printed "refusing
/// to touch it" and then checkpointed that WAL into it on close (4 KB -> 20
/// KB, WAL gone).  It is identified without writing: both files stay
/// byte-for-byte as they were, through the library and the CLI.
#[test]
fn a_foreign_wal_database_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let app = foreign_wal_file(dir.path());
    let wal = dir.path().join("app.db-wal");
    let before = (snapshot(&app), snapshot(&wal));

    let err = Store::open(&app).expect_err("a foreign database was accepted");
    assert!(matches!(err, Error::NotAQueue { .. }), "{err:?}");
    assert!(err.to_string().contains("another application"), "{err}");
    assert_eq!(
        (snapshot(&app), snapshot(&wal)),
        before,
        "the refused files changed"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobd"))
        .current_dir(dir.path())
        .args(["--db", app.to_str().unwrap(), "stats"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("refusing to touch it"), "{msg}");
    assert_eq!(
        (snapshot(&app), snapshot(&wal)),
        before,
        "the CLI changed them"
    );
    // And the application still reads every row it committed.
    let n: i64 = rusqlite::Connection::open(&app)
        .unwrap()
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 200);
}

/// `jobd --db empty.db enqueue` turned an existing 0-byte file
/// into a queue; only `init` (and the daemon) create queues.
#[test]
fn the_cli_does_not_turn_an_empty_file_into_a_queue() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    for args in [
        vec!["enqueue", "--queue", "default", "--kind", "noop"],
        vec!["stats"],
        vec!["list"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobd"))
            .current_dir(dir.path())
            .args(["--db", empty.to_str().unwrap()])
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} accepted an empty file");
        let msg = String::from_utf8_lossy(&out.stderr);
        assert!(
            msg.contains("not yet a queue") && msg.contains("jobd init"),
            "{msg}"
        );
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0, "{args:?}");
        assert!(!dir.path().join("empty.db-wal").exists(), "{args:?}");
    }
    // The library opens it as a new queue unless told not to.
    let opts = jobd::store::StoreOptions::default().create(false);
    assert!(matches!(
        Store::open_with(&empty, opts),
        Err(Error::NotAQueue { .. })
    ));
    Store::open(&empty).unwrap();
}

/// Two processes opening a just-created file at the same moment
/// sometimes got `Error::Busy` from the WAL switch or the migrations (17 of
/// 160 pairs), although the busy timeout is 10 s.  The test spawns itself as
/// the two processes; each opens the file at an agreed instant.
#[test]
fn two_processes_opening_a_new_file_at_once_both_succeed() {
    if let Ok(path) = std::env::var("JOBD_TEST_OPEN_AT") {
        let (path, at) = path.split_once('@').unwrap();
        let at: u128 = at.parse().unwrap();
        while std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros()
            < at
        {
            std::hint::spin_loop();
        }
        Store::open(path).unwrap();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let me = std::env::current_exe().unwrap();
    let mut failures = Vec::new();
    for round in 0..40 {
        let path = dir.path().join(format!("new-{round}.db"));
        std::fs::write(&path, b"").unwrap(); // just created, as `touch` or a first open leaves it
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros()
            + 150_000;
        let children: Vec<_> = (0..2)
            .map(|_| {
                std::process::Command::new(&me)
                    .args([
                        "--exact",
                        "two_processes_opening_a_new_file_at_once_both_succeed",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env("JOBD_TEST_OPEN_AT", format!("{}@{at}", path.display()))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            if !out.status.success() {
                failures.push(format!(
                    "round {round}: {}",
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .find(|l| l.contains("panicked")
                            || l.contains("Busy")
                            || l.contains("busy"))
                        .unwrap_or("failed")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed opens: {failures:#?}",
        failures.len()
    );
}
