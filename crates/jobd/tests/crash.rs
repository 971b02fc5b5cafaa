//! Real processes, real signals: worker processes (the `worker_process`
//! example) are SIGKILLed mid-job and SIGTERMed with jobs in flight.

use jobd_testkit::{count, example, Reaper};

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jobd::store::NewJob;
use jobd::{JobState, Store};
use serde_json::json;

/// These tests run worker processes that compete for the 2 CPUs of a CI host:
/// one at a time, so the SIGTERM test's timing measures the worker, not the
/// four-worker kill test running beside it.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A worker process with short leases, so killed jobs come back quickly.
fn worker(db: &Path, queues: &str, grace_ms: u64) -> Child {
    Command::new(example("worker_process"))
        .arg(db)
        .arg(queues)
        .env("JOBD_LOG", "error")
        .env("JOBD_LEASE_MS", "1000")
        .env("JOBD_HEARTBEAT_MS", "200")
        .env("JOBD_REAP_MS", "250")
        .env("JOBD_GRACE_MS", grace_ms.to_string())
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

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_job_whose_worker_is_killed_is_finished_by_another_after_the_lease_expires() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("queue.db");
    let store = Store::open(&db).unwrap();
    let id = store
        .enqueue(&NewJob::new("q", "sleep").payload(&json!({"ms": 600})))
        .unwrap();
    let mut procs = Reaper(vec![worker(&db, "q=1", 1000)]);
    wait_for("the job running", Duration::from_secs(20), || {
        store.get(id).unwrap().state == JobState::Running
    });
    let first = store.get(id).unwrap().worker.unwrap();
    signal(&procs.0[0], libc::SIGKILL);
    procs.0[0].wait().unwrap();
    procs.0.push(worker(&db, "q=1", 1000));
    wait_for(
        "the job done by the second worker",
        Duration::from_secs(20),
        || store.get(id).unwrap().state == JobState::Succeeded,
    );
    let job = store.get(id).unwrap();
    let log: Vec<(&str, &str)> = job
        .attempt_log
        .iter()
        .map(|a| (a.outcome.as_str(), a.worker.as_deref().unwrap()))
        .collect();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0], ("lost", first.as_str()));
    assert_eq!(log[1].0, "succeeded");
    assert_ne!(log[1].1, first, "finished by the other worker");
}

/// A small deterministic generator for kill timing and victims.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn random_sigkills_of_four_workers_lose_nothing() {
    let _serial = one_at_a_time();
    const JOBS: usize = 5000;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("queue.db");
    let store = Store::open(&db).unwrap();
    let jobs: Vec<NewJob> = (0..JOBS)
        .map(|i| {
            NewJob::new("chaos", "sleep")
                .payload(&json!({"ms": i % 7}))
                .max_attempts(50)
        })
        .collect();
    store.enqueue_many(&jobs).unwrap();
    let mut procs = Reaper((0..4).map(|_| worker(&db, "chaos=8", 1000)).collect());
    let mut rng = Lcg(0x5eed);
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    while count(&db, "SELECT count(*) FROM jobs WHERE state = 'succeeded'") < JOBS as i64 {
        assert!(Instant::now() < deadline, "jobs not done in time");
        std::thread::sleep(Duration::from_millis(200 + rng.next(300)));
        let victim = rng.next(4) as usize;
        signal(&procs.0[victim], libc::SIGKILL);
        let status = procs.0[victim].wait().unwrap();
        // Killed by us — not dead already (say, refusing to open the queue).
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "worker exited: {status:?}"
        );
        procs.0[victim] = worker(&db, "chaos=8", 1000);
        kills += 1;
    }
    for p in &procs.0 {
        signal(p, libc::SIGTERM);
    }
    for p in &mut procs.0 {
        p.wait().unwrap();
    }
    let per_state = |s: &str| {
        count(
            &db,
            &format!("SELECT count(*) FROM jobs WHERE state = '{s}'"),
        )
    };
    assert_eq!(per_state("succeeded"), JOBS as i64);
    assert_eq!(per_state("running"), 0, "none stuck in running");
    // Exactly one successful try per job.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM attempts WHERE outcome = 'succeeded'"
        ),
        JOBS as i64
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(DISTINCT job_id) FROM attempts WHERE outcome = 'succeeded'"
        ),
        JOBS as i64
    );
    // Every try beyond the first came after a killed (lost) try.
    let duplicates = count(&db, "SELECT count(*) FROM attempts WHERE attempt > 1");
    let not_lost = count(
        &db,
        "SELECT count(*) FROM attempts WHERE outcome NOT IN ('succeeded', 'lost')",
    );
    let lost = count(&db, "SELECT count(*) FROM attempts WHERE outcome = 'lost'");
    eprintln!("{kills} SIGKILLs; {duplicates} runs beyond the first, from {lost} killed tries");
    assert_eq!(not_lost, 0, "only killed tries may repeat a job");
    assert_eq!(
        duplicates, lost,
        "each extra run follows exactly one lost try"
    );
    assert!(kills >= 3, "the test killed workers while jobs ran");
}

#[test]
fn sigterm_finishes_or_releases_in_flight_jobs_within_the_grace_period() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("queue.db");
    let store = Store::open(&db).unwrap();
    let short: Vec<i64> = (0..3)
        .map(|_| {
            store
                .enqueue(&NewJob::new("q", "sleep").payload(&json!({"ms": 300})))
                .unwrap()
        })
        .collect();
    let long: Vec<i64> = (0..2)
        .map(|_| {
            store
                .enqueue(&NewJob::new("q", "sleep").payload(&json!({"ms": 600_000})))
                .unwrap()
        })
        .collect();
    let grace = Duration::from_millis(1500);
    let mut procs = Reaper(vec![worker(&db, "q=5", grace.as_millis() as u64)]);
    wait_for("all five running", Duration::from_secs(20), || {
        count(&db, "SELECT count(*) FROM jobs WHERE state = 'running'") == 5
    });
    let t = Instant::now();
    signal(&procs.0[0], libc::SIGTERM);
    let status = procs.0[0].wait().unwrap();
    let took = t.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took < grace + Duration::from_millis(1500),
        "exited {took:?} after SIGTERM (grace {grace:?})"
    );
    let mut out = String::new();
    use std::io::Read;
    procs.0[0]
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["succeeded"], 3, "{report}");
    assert_eq!(report["released"], 2, "{report}");
    for id in short {
        assert_eq!(store.get(id).unwrap().state, JobState::Succeeded);
    }
    for id in long {
        let job = store.get(id).unwrap();
        assert_eq!(
            job.state,
            JobState::Ready,
            "released, ready for another worker"
        );
        assert_eq!(job.attempt_log[0].outcome, "released");
    }
    assert_eq!(
        count(&db, "SELECT count(*) FROM jobs WHERE state = 'running'"),
        0
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM workers"),
        0,
        "deregistered"
    );
}
