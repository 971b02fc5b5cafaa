//! A PostgreSQL restart mid-run (its own test binary: it stops the cluster
//! every other test of its process would share).  Two worker processes
//! drain while the server is stopped and started again: they reconnect, no
//! acknowledged job is lost, jobs in flight finish or come back after their
//! lease, and a producer's enqueue after the restart goes through.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jobd::store::NewJob;
use jobd::{Error, Store, StoreOptions};
use jobd_testkit::{example, pg, Reaper};
use serde_json::json;

fn worker(url: &str, host: &str) -> Child {
    Command::new(example("worker_process"))
        .arg(url)
        .arg("work=8")
        .env("JOBD_HOST", host)
        .env("JOBD_LOG", "off")
        .env("JOBD_LEASE_MS", "1500")
        .env("JOBD_HEARTBEAT_MS", "200")
        .env("JOBD_REAP_MS", "250")
        .env("JOBD_GRACE_MS", "1000")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn jobs(n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|i| {
            NewJob::new("work", "sleep")
                .payload(&json!({"ms": i % 4}))
                .max_attempts(20)
        })
        .collect()
}

#[test]
fn workers_and_producers_ride_out_a_server_restart_and_lose_nothing() {
    let Some(cluster) = pg::cluster() else { return };
    let url = cluster.create_database();
    let store = Store::connect(&url, StoreOptions::default()).unwrap();
    let first = store.enqueue_many(&jobs(3000)).unwrap();
    let mut procs = Reaper(vec![worker(&url, "host-a"), worker(&url, "host-b")]);
    let succeeded = || pg::count(&url, "SELECT count(*) FROM jobs WHERE state = 'succeeded'");
    let deadline = Instant::now() + Duration::from_secs(60);
    while succeeded() < 300 {
        assert!(Instant::now() < deadline, "the workers did not start");
        std::thread::sleep(Duration::from_millis(5));
    }

    // Down for a second and a half, with work in flight; then back.
    cluster.stop_server();
    let down = store.enqueue(&NewJob::new("work", "sleep").payload(&json!({"ms": 1})));
    assert!(
        matches!(down, Err(Error::Unreachable { .. })),
        "an enqueue while the server is down says so: {down:?}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    cluster.start_server();

    // The producer's handle carries on (its pooled connections are dead).
    let second = store.enqueue_many(&jobs(1000)).unwrap();
    let total = (first.len() + second.len()) as i64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while succeeded() < total {
        assert!(
            Instant::now() < deadline,
            "jobs not done after the restart: {} of {total}",
            succeeded()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in &procs.0 {
        let _ = unsafe { libc::kill(p.id() as i32, libc::SIGTERM) };
    }
    for p in &mut procs.0 {
        p.wait().unwrap();
    }
    let n = |sql: &str| pg::count(&url, sql);
    assert_eq!(
        n("SELECT count(*) FROM jobs"),
        total,
        "nothing acknowledged was lost"
    );
    assert_eq!(n("SELECT count(*) FROM jobs WHERE state <> 'succeeded'"), 0);
    assert_eq!(
        n("SELECT count(DISTINCT job_id) FROM attempts WHERE outcome = 'succeeded'"),
        total
    );
    assert_eq!(
        n("SELECT count(*) FROM attempts WHERE outcome = 'succeeded'"),
        total,
        "each job succeeded once"
    );
    // A try beyond the first only after one the outage ended: its lease
    // ran out while the server was down (lost), or its run failed on the
    // unreachable server (a progress report) and was retried.
    let others =
        n("SELECT count(*) FROM attempts WHERE outcome NOT IN ('succeeded', 'lost', 'failed')");
    assert_eq!(others, 0);
    let failed_otherwise = n(
        "SELECT count(*) FROM attempts WHERE outcome = 'failed' AND error NOT LIKE '%PostgreSQL unreachable%'",
    );
    assert_eq!(failed_otherwise, 0, "tries failed only on the outage");
    assert_eq!(
        n("SELECT count(*) FROM attempts WHERE attempt > 1"),
        n("SELECT count(*) FROM attempts WHERE outcome <> 'succeeded'"),
        "each extra run follows exactly one try the outage ended"
    );
}
