//! Migrating a file written by an older jobd keeps every row, the rebuilt
//! `jobs` table (schema/0004) behaves like the old one, and the succeeded
//! tries moved onto their jobs (schema/0005) still read the same through the
//! `attempts` view.

use std::time::Duration;

use jobd::store::{NewJob, APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION};
use jobd::Store;
use rusqlite::Connection;

/// A queue file as jobd at schema version 3 left it: jobs in every state,
/// their attempts and progress, a schedule's fire pointing at a job.
fn version_3_file(path: &std::path::Path) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON")
        .unwrap();
    for sql in &MIGRATIONS[..3] {
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "application_id", APPLICATION_ID)
        .unwrap();
    conn.pragma_update(None, "user_version", 3).unwrap();
    conn.execute_batch(
        "INSERT INTO jobs (id, queue, kind, payload, state, run_at, attempts, max_attempts,
                           attempt_limit, backoff_base_ms, backoff_max_ms, unique_key,
                           result, created_at, finished_at)
         VALUES (1, 'pdf', 'render', '{\"n\":1}', 'succeeded', 0, 1, 3, 3, 10, 100, NULL,
                 '{\"pages\":2}', 0, 5),
                (2, 'pdf', 'render', '{\"n\":2}', 'dead', 0, 3, 3, 3, 10, 100, NULL, NULL, 0, 9),
                (3, 'pdf', 'render', '{\"n\":3}', 'ready', 0, 0, 3, 3, 10, 100, 'k3', NULL, 0, NULL),
                (4, 'mail', 'send', '{}', 'scheduled', 99, 0, 3, 3, 10, 100, NULL, NULL, 0, NULL);
         INSERT INTO attempts (job_id, attempt, worker, started_at, finished_at, outcome, error)
         VALUES (1, 1, 'w', 1, 5, 'succeeded', NULL),
                (2, 1, 'w', 1, 2, 'failed', 'boom'),
                (2, 2, 'w', 3, 4, 'lost', 'lease expired'),
                (2, 3, 'w', 5, 9, 'failed', 'boom');
         INSERT INTO progress (job_id, attempt, at, percent, stage) VALUES (1, 1, 2, 50, 'half');
         INSERT INTO schedules (name, cron, queue, kind, created_at, updated_at)
         VALUES ('nightly', '0 2 * * *', 'mail', 'send', 0, 0);
         INSERT INTO schedule_fires (schedule, fire_at, job_id) VALUES ('nightly', 99, 4);",
    )
    .unwrap();
}

fn counts(conn: &Connection) -> Vec<i64> {
    [
        "SELECT count(*) FROM jobs",
        "SELECT count(*) FROM attempts",
        "SELECT count(*) FROM progress",
        "SELECT count(*) FROM schedule_fires WHERE job_id = 4",
        "SELECT count(*) FROM job_overview",
        "SELECT count(*) FROM attempt_log",
        "SELECT sum(succeeded + dead + ready + scheduled) FROM queue_stats",
    ]
    .iter()
    .map(|sql| conn.query_row(sql, [], |r| r.get(0)).unwrap())
    .collect()
}

#[test]
fn a_version_3_file_keeps_every_row_through_the_jobs_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    version_3_file(&path);
    let before = counts(&Connection::open(&path).unwrap());
    assert_eq!(before, [4, 4, 1, 1, 4, 4, 4]);

    let store = Store::open(&path).unwrap();
    let conn = store.sqlite().unwrap().connection().unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(counts(&conn), before, "no row lost, views still read jobs");
    let fk: i64 = conn
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1, "foreign keys are back on after the migration");
    let table_sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'jobs'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!table_sql.contains("json_valid"), "{table_sql}");
    let indexes: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'jobs'
               AND name IN ('jobs_ready', 'jobs_scheduled', 'jobs_running', 'jobs_unique_key')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 4);
    drop(conn);
    store.integrity_check().unwrap();

    // The old rows work as before: history, the unique key, the claim.
    let dead = store.get(2).unwrap();
    assert_eq!(dead.attempt_log.len(), 3);
    // The succeeded try left the history table for its job row — worker and
    // times included, though this job row had none of its own — and reads
    // the same through the view.
    let done = store.get(1).unwrap();
    assert_eq!(done.attempt_log.len(), 1);
    let t = &done.attempt_log[0];
    assert_eq!(
        (t.attempt, t.worker.as_deref(), t.started_at, t.finished_at),
        (1, Some("w"), 1, 5)
    );
    assert_eq!(t.outcome, "succeeded");
    assert_eq!(done.started_at, Some(1));
    let succeeded_rows: i64 = store
        .sqlite()
        .unwrap()
        .connection()
        .unwrap()
        .query_row(
            "SELECT count(*) FROM tries WHERE outcome = 'succeeded'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(succeeded_rows, 0);
    assert_eq!(
        store
            .enqueue(&NewJob::new("pdf", "render").unique_key("k3"))
            .unwrap(),
        3,
        "the live unique key still finds its job"
    );
    let claimed = store
        .claim("w", &["pdf"], 10, Duration::from_secs(30))
        .unwrap();
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), [3]);
    store.complete(3, claimed[0].lease_token, None).unwrap();
    // Foreign keys still hold on the rebuilt table: deleting a job takes its
    // history, and history cannot point at a missing job.
    let conn = store.sqlite().unwrap().connection().unwrap();
    conn.execute("DELETE FROM jobs WHERE id = 2", []).unwrap();
    let left: i64 = conn
        .query_row("SELECT count(*) FROM attempts WHERE job_id = 2", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(left, 0);
    assert!(conn
        .execute(
            "INSERT INTO tries (job_id, attempt, started_at, finished_at, outcome)
             VALUES (777, 1, 0, 0, 'lost')",
            [],
        )
        .is_err());
}

#[test]
fn a_payload_written_behind_jobds_back_is_reported_by_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    store.integrity_check().unwrap();
    let id = store.enqueue(&NewJob::new("q", "k")).unwrap();
    store
        .sqlite()
        .unwrap()
        .connection()
        .unwrap()
        .execute("UPDATE jobs SET payload = '{not json' WHERE id = ?1", [id])
        .unwrap();
    let err = store.integrity_check().unwrap_err().to_string();
    assert!(
        err.contains(&format!("job {id}: payload is not JSON")),
        "{err}"
    );
    // Showing and listing still work; the raw text is shown as it is.
    assert_eq!(store.get(id).unwrap().payload, "{not json");
    assert_eq!(store.list(&Default::default()).unwrap().len(), 1);
}

/// Once the newest jobs were purged their ids came back, and a
/// client polling an old id read somebody else's job.  Ids never repeat in
/// the life of a file — on a new file, and on one migrated from before.
#[test]
fn job_ids_are_never_handed_out_twice() {
    let dir = tempfile::tempdir().unwrap();
    let clock = jobd::ManualClock::new(1_700_000_000_000);
    let opts = jobd::store::StoreOptions::default().clock(clock.clone());
    let store = Store::open_with(dir.path().join("queue.db"), opts).unwrap();
    let ids: Vec<i64> = (0..3)
        .map(|_| store.enqueue(&NewJob::new("pdf", "render")).unwrap())
        .collect();
    loop {
        let claimed = store
            .claim("w", &["pdf"], 10, Duration::from_secs(30))
            .unwrap();
        if claimed.is_empty() {
            break;
        }
        for job in claimed {
            store.complete(job.id, job.lease_token, None).unwrap();
        }
    }
    clock.advance(Duration::from_secs(1));
    assert_eq!(store.purge(Duration::ZERO, None).unwrap(), 3);
    let next = store.enqueue(&NewJob::new("pdf", "render")).unwrap();
    assert!(next > ids[2], "id {next} after {ids:?} were purged");
    // Deleted behind jobd's back, the newest id still is not reused.
    store
        .sqlite()
        .unwrap()
        .connection()
        .unwrap()
        .execute("DELETE FROM jobs", [])
        .unwrap();
    let jobs: Vec<NewJob> = (0..70).map(|_| NewJob::new("pdf", "render")).collect();
    let batch = store.enqueue_many(&jobs).unwrap();
    assert!(batch[0] > next, "{batch:?} after {next}");
    let stored: Vec<i64> = {
        let conn = store.sqlite().unwrap().connection().unwrap();
        let mut stmt = conn.prepare("SELECT id FROM jobs ORDER BY id").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(stored, batch, "each job got the id it was told");

    // A file from before the high-water mark: its newest id is kept too.
    let path = dir.path().join("v3.db");
    version_3_file(&path);
    let store = Store::open(&path).unwrap();
    store
        .sqlite()
        .unwrap()
        .connection()
        .unwrap()
        .execute("DELETE FROM jobs WHERE id = 4", [])
        .unwrap();
    assert_eq!(store.enqueue(&NewJob::new("mail", "send")).unwrap(), 5);
}
