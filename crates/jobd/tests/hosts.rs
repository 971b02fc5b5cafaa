//! Several hosts on one PostgreSQL database: worker processes that say they
//! run on two hosts (`JOBD_HOST`), a producer enqueueing while they drain,
//! and SIGKILL of one host's workers — every job succeeds exactly once, and
//! the killed host's jobs come back after their leases.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jobd::store::NewJob;
use jobd::{Store, StoreOptions};
use jobd_testkit::{example, pg, Reaper};
use serde_json::json;

/// A worker process of `host` on the database `url`, with short leases.
fn worker(url: &str, host: &str) -> Child {
    Command::new(example("worker_process"))
        .arg(url)
        .arg("work=8")
        .env("JOBD_HOST", host)
        .env("JOBD_LOG", "error")
        .env("JOBD_LEASE_MS", "1000")
        .env("JOBD_HEARTBEAT_MS", "200")
        .env("JOBD_REAP_MS", "250")
        .env("JOBD_GRACE_MS", "1000")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: i32) {
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill({}, {sig})", child.id());
}

#[test]
fn four_workers_on_two_hosts_and_a_producer_run_every_job_exactly_once_through_a_kill() {
    let Some(url) = pg::database() else { return };
    const JOBS: usize = 3000;
    let store = Store::connect(&url, StoreOptions::default()).unwrap();
    let mut procs = Reaper(vec![
        worker(&url, "host-a"),
        worker(&url, "host-a"),
        worker(&url, "host-b"),
        worker(&url, "host-b"),
    ]);
    // The producer: batches while the workers drain, sleeps of a few ms to
    // a few hundred (some jobs still run when host-a is killed).
    for batch in 0..30 {
        let jobs: Vec<NewJob> = (0..JOBS / 30)
            .map(|i| {
                NewJob::new("work", "sleep")
                    .payload(&json!({"ms": if i % 50 == 0 { 300 } else { i % 5 }}))
                    .max_attempts(20)
            })
            .collect();
        store.enqueue_many(&jobs).unwrap();
        if batch == 15 {
            // Host A goes down hard, both of its workers, while jobs run.
            let running_on_a = || {
                pg::count(
                    &url,
                    "SELECT count(*) FROM jobs WHERE state = 'running' AND lease_owner LIKE 'host-a:%'",
                )
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            while running_on_a() == 0 {
                assert!(Instant::now() < deadline, "host-a never ran a job");
                std::thread::sleep(Duration::from_millis(5));
            }
            for p in &procs.0[..2] {
                signal(p, libc::SIGKILL);
            }
            for p in &mut procs.0[..2] {
                assert_eq!(p.wait().unwrap().signal(), Some(libc::SIGKILL));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let succeeded = || pg::count(&url, "SELECT count(*) FROM jobs WHERE state = 'succeeded'");
    let deadline = Instant::now() + Duration::from_secs(120);
    while succeeded() < JOBS as i64 {
        assert!(
            Instant::now() < deadline,
            "jobs not done in time: {}",
            succeeded()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in &procs.0[2..] {
        signal(p, libc::SIGTERM);
    }
    for p in &mut procs.0[2..] {
        p.wait().unwrap();
    }
    let n = |sql: &str| pg::count(&url, sql);
    assert_eq!(n("SELECT count(*) FROM jobs"), JOBS as i64);
    assert_eq!(n("SELECT count(*) FROM jobs WHERE state <> 'succeeded'"), 0);
    // Exactly one successful try per job; every other try was one host-a lost.
    assert_eq!(
        n("SELECT count(*) FROM attempts WHERE outcome = 'succeeded'"),
        JOBS as i64
    );
    let lost = n("SELECT count(*) FROM attempts WHERE outcome = 'lost'");
    assert!(lost > 0, "host-a's running jobs were lost with it");
    assert_eq!(
        n("SELECT count(*) FROM attempts WHERE outcome = 'lost' AND worker NOT LIKE 'host-a:%'"),
        0,
        "only the killed host lost tries"
    );
    assert_eq!(
        n("SELECT count(*) FROM attempts WHERE attempt > 1"),
        lost,
        "each extra run follows exactly one lost try"
    );
    // Both hosts worked; host-b finished what host-a lost.
    for host in ["host-a", "host-b"] {
        let did = n(&format!(
            "SELECT count(*) FROM jobs WHERE lease_owner LIKE '{host}:%'"
        ));
        assert!(did > 0, "{host} ran no job");
    }
    assert_eq!(
        n(
            "SELECT count(*) FROM attempts AS a JOIN attempts AS b ON a.job_id = b.job_id
           WHERE a.outcome = 'lost' AND b.outcome = 'succeeded' AND b.worker NOT LIKE 'host-b:%'"
        ),
        0,
        "a lost job was finished on host-b"
    );
}
