//! Several OS processes on one queue file: four workers claim and complete
//! while a fifth process enqueues 20,000 jobs.  Every job must succeed exactly
//! once, none may be lost, and no process may see SQLITE_BUSY.

use jobd_testkit::{count, example, run_ok, Reaper};

use std::io::Write;
use std::process::{Command, Stdio};

const JOBS: usize = 20_000;
const WORKERS: usize = 4;

#[test]
fn four_workers_and_a_producer_share_one_file_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("queue.db");
    // Create the file first so every process opens an existing queue.
    jobd::Store::open(&db).unwrap();

    let mut workers = Reaper(
        (0..WORKERS)
            .map(|n| {
                Command::new(example("manual_worker"))
                    .arg(&db)
                    .arg("mp")
                    .arg(format!("worker-{n}"))
                    .arg(JOBS.to_string())
                    .env("JOBD_LOG", "warn")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );

    // The producer: `jobd enqueue` reading JSON lines, 50 jobs per transaction
    // (unchecked: the workers of its queue may not have registered yet).
    let mut producer = Command::new(env!("CARGO_BIN_EXE_jobd"))
        .args(["--db"])
        .arg(&db)
        .args(["enqueue", "--batch", "50", "--unchecked"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Feed stdin from a thread: the producer prints ids while it reads.
    let stdin = producer.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let mut stdin = std::io::BufWriter::new(stdin);
        for i in 0..JOBS {
            writeln!(
                stdin,
                r#"{{"queue": "mp", "kind": "echo", "payload": {{"n": {i}}}}}"#
            )
            .unwrap();
        }
    });
    let out = producer.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(
        out.status.success(),
        "producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<i64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(ids.len(), JOBS);

    let mut ran_total = 0;
    let mut busy_workers = 0;
    for (n, w) in std::mem::take(&mut workers.0).into_iter().enumerate() {
        let out = w.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "worker {n} failed: {stderr}");
        assert!(
            !stderr.to_lowercase().contains("busy"),
            "worker {n} saw busy: {stderr}"
        );
        let ran: usize = String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        ran_total += ran;
        busy_workers += usize::from(ran > 0);
    }
    assert_eq!(ran_total, JOBS, "jobs run by the workers");
    assert!(
        busy_workers >= 2,
        "the work should be shared between processes"
    );

    assert_eq!(count(&db, "SELECT count(*) FROM jobs"), JOBS as i64);
    assert_eq!(
        count(&db, "SELECT count(*) FROM jobs WHERE state = 'succeeded'"),
        JOBS as i64
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM attempts WHERE outcome = 'succeeded'"
        ),
        JOBS as i64
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM attempts"),
        JOBS as i64,
        "no lost or failed tries"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM (SELECT job_id FROM attempts GROUP BY job_id HAVING count(*) > 1)"),
        0,
        "a job ran twice"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(DISTINCT json_extract(payload, '$.n')) FROM jobs"
        ),
        JOBS as i64
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM workers"),
        0,
        "workers deregistered"
    );
}

/// A queue's concurrency limit is the file's, not a process's: three worker
/// processes that would run one of its jobs each run two between them, and
/// every job still runs.  (One job per process, so that two processes must
/// share the limit: a process whose job ends claims the freed slot first —
/// its own commit comes before the other processes hear of it — so a
/// process allowed two could keep both slots to itself.)
#[test]
fn a_queue_concurrency_limit_holds_across_worker_processes() {
    use std::time::{Duration, Instant};
    const LIMITED: i64 = 24;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("queue.db");
    let store = jobd::Store::open(&db).unwrap();
    store.set_concurrency("lim", Some(2)).unwrap();
    let jobs: Vec<jobd::store::NewJob> = (0..LIMITED)
        .map(|_| jobd::store::NewJob::new("lim", "sleep").payload(&serde_json::json!({ "ms": 60 })))
        .collect();
    store.enqueue_many(&jobs).unwrap();

    let _workers = Reaper(
        (0..3)
            .map(|_| {
                Command::new(example("worker_process"))
                    .arg(&db)
                    .arg("lim=1")
                    .env("JOBD_LOG", "error")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );

    // Watch the committed state: no snapshot may show more than two running.
    let watch = rusqlite::Connection::open(&db).unwrap();
    let sample = |sql: &str| -> i64 { watch.query_row(sql, [], |r| r.get(0)).unwrap() };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut most = 0;
    while sample("SELECT count(*) FROM jobs WHERE state = 'succeeded'") < LIMITED {
        assert!(Instant::now() < deadline, "the limited queue did not drain");
        most = most.max(sample("SELECT count(*) FROM jobs WHERE state = 'running'"));
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(most <= 2, "{most} jobs of a queue limited to 2 ran at once");
    assert_eq!(most, 2, "the limit is a cap, not one at a time");
    assert!(
        sample("SELECT count(DISTINCT result ->> 'pid') FROM jobs") >= 2,
        "two at once can only be two processes"
    );
    assert_eq!(
        sample("SELECT count(*) FROM attempts"),
        LIMITED,
        "each ran once"
    );
}

/// A cancel asked by another process stops a running job as soon as the
/// worker's process notices the commit — not at its next heartbeat, which
/// here is a minute away.  Both ways in: the library's `cancel` from this
/// process, and `jobd cancel`.
#[test]
fn a_cancel_from_another_process_stops_the_run_before_the_next_heartbeat() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("queue.db");
    let store = jobd::Store::open(&db).unwrap();
    let _worker = Reaper(vec![Command::new(example("worker_process"))
        .arg(&db)
        .arg("long=2")
        .env("JOBD_LOG", "error")
        .env("JOBD_HEARTBEAT_MS", "60000")
        .env("JOBD_LEASE_MS", "180000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()]);
    let long =
        || jobd::store::NewJob::new("long", "sleep").payload(&serde_json::json!({ "ms": 600_000 }));
    let ids = [
        store.enqueue(&long()).unwrap(),
        store.enqueue(&long()).unwrap(),
    ];
    let until = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let state = |id| store.get(id).unwrap().state;
    until("both jobs running", &|| {
        ids.iter().all(|&id| state(id) == jobd::JobState::Running)
    });

    assert_eq!(
        store.cancel(ids[0]).unwrap(),
        jobd::store::CancelOutcome::Requested
    );
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_jobd"))
            .arg("--db")
            .arg(&db)
            .args(["cancel", &ids[1].to_string()]),
    );
    until("both jobs cancelled (the heartbeat is 60 s away)", &|| {
        ids.iter().all(|&id| state(id) == jobd::JobState::Cancelled)
    });
    for id in ids {
        let job = store.get(id).unwrap();
        assert_eq!(job.attempt_log.len(), 1);
        assert_eq!(job.attempt_log[0].outcome, "cancelled");
    }
}
