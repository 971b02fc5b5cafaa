//! A real worker process whose wall clock steps forward an hour mid-run
//! (Debian's libfaketime, `faketime`; `.ci/run` installs it): its running,
//! heartbeating jobs are not reaped and run once each.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jobd::store::NewJob;
use jobd::Store;
use jobd_testkit::{count, example, Reaper};

fn libfaketime() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists())
}

/// Under libfaketime one step of +1 h made the daemon reap the
/// leases of its own running jobs, and all of them ran a second time.
#[test]
fn a_forward_step_of_the_wall_clock_runs_no_live_job_twice() {
    let Some(lib) = libfaketime() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install faketime (libfaketime)"
        );
        eprintln!("SKIPPED: no libfaketime (apt-get install faketime)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("queue.db");
    let store = Store::open(&db).unwrap();
    let jobs: Vec<NewJob> = (0..4)
        .map(|_| NewJob::new("q", "sleep").payload(&serde_json::json!({"ms": 4000})))
        .collect();
    let ids = store.enqueue_many(&jobs).unwrap();
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0").unwrap();

    let worker = Command::new(example("worker_process"))
        .args([db.to_str().unwrap(), "q=4"])
        .env("LD_PRELOAD", &lib)
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_NO_CACHE", "1")
        // Only the wall clock steps, as with NTP: the monotonic and boot
        // clocks go on.
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("JOBD_LEASE_MS", "3000")
        .env("JOBD_HEARTBEAT_MS", "1000")
        .env("JOBD_REAP_MS", "100")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _reaper = Reaper(vec![worker]);
    let wait_for = |sql: &str, n: i64, what: &str| {
        let t0 = Instant::now();
        while count(&db, sql) != n {
            assert!(t0.elapsed() < Duration::from_secs(30), "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(
        "SELECT count(*) FROM jobs WHERE state = 'running'",
        4,
        "the four jobs start",
    );
    // Step the clock right after a heartbeat (the leases move), so that
    // reaps come before the next one: a second away, reaps every 0.1 s.
    let leases = "SELECT coalesce(max(lease_expires_at), 0) FROM jobs WHERE state = 'running'";
    let before = count(&db, leases);
    let t0 = Instant::now();
    while count(&db, leases) == before {
        assert!(t0.elapsed() < Duration::from_secs(10), "no heartbeat");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::write(&offset, "+1h").unwrap();
    wait_for(
        "SELECT count(*) FROM jobs WHERE state = 'succeeded'",
        4,
        "the four jobs finish",
    );
    for id in ids {
        let job = store.get(id).unwrap();
        let outcomes: Vec<_> = job.attempt_log.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(
            outcomes,
            ["succeeded"],
            "job {id} ran once: {:?}",
            job.last_error
        );
        assert!(
            job.finished_at.unwrap() - job.started_at.unwrap() > 3_000_000,
            "the worker's clock did step: {job:?}"
        );
    }
}
