//! Scheduler processes (`jobd scheduler`) SIGKILLed between ticks and
//! restarted, and the `jobd schedule` / `jobd init` command line.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jobd::scheduler::{Misfire, NewSchedule};
use jobd::Store;
use jobd_testkit::{count, Reaper};

const JOBD: &str = env!("CARGO_BIN_EXE_jobd");

/// A scheduler process on `db` (a file or a `postgres://` URL) that says it
/// runs on `host`.
fn scheduler(db: &str, host: &str) -> Child {
    Command::new(JOBD)
        .env("JOBD_HOST", host)
        .args(["--db", db, "scheduler", "--poll", "20ms", "--grace", "5s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn now_ms() -> i64 {
    jobd::Clock::now_ms(&jobd::SystemClock)
}

/// Acceptance 4: two scheduler processes on one file, one of them SIGKILLed
/// every 0.2-0.5 s and restarted; every tick fires exactly once.
#[test]
fn ticks_fire_exactly_once_through_sigkills_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("queue.db");
    ticks_fire_exactly_once(db.to_str().unwrap());
}

/// The same with the two schedulers on two hosts sharing one PostgreSQL
/// database.
#[test]
fn ticks_fire_exactly_once_on_postgres_with_schedulers_on_two_hosts() {
    let Some(url) = jobd_testkit::pg::database() else {
        return;
    };
    ticks_fire_exactly_once(&url);
}

/// Rows of `sql` (its one parameter `name`) on the backend `db` names.
fn fire_rows(db: &str, name: &str) -> Vec<(i64, i64, String)> {
    const SQL: &str = "SELECT f.fire_at, j.run_at, j.kind FROM schedule_fires AS f
                       JOIN jobs AS j ON j.id = f.job_id
                       WHERE f.schedule = $1 ORDER BY f.fire_at";
    if jobd::store::postgres::is_url(db) {
        let mut c = postgres::Client::connect(db, postgres::NoTls).unwrap();
        return c
            .query(SQL, &[&name])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
    }
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare(&SQL.replace("$1", "?1")).unwrap();
    stmt.query_map([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn jobs_of_kind(db: &str, kind: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM jobs WHERE kind = '{kind}'");
    if jobd::store::postgres::is_url(db) {
        return jobd_testkit::pg::count(db, &sql);
    }
    count(Path::new(db), &sql)
}

fn ticks_fire_exactly_once(db: &str) {
    let store = Store::connect(db, jobd::StoreOptions::default()).unwrap();
    // The first tick each schedule owes is the one it named when it was added
    // (not one computed from a clock read after: on a loaded host the second
    // add can come more than a tick later than the first).
    let fast = store
        .add_schedule(
            &NewSchedule::every("fast", Duration::from_millis(100), "q", "fast")
                .misfire(Misfire::All)
                .misfire_cap(10_000),
        )
        .unwrap();
    let secondly = store
        .add_schedule(
            &NewSchedule::cron("secondly", "* * * * * *", "q", "secondly")
                .misfire(Misfire::All)
                .misfire_cap(10_000),
        )
        .unwrap();

    let mut procs = Reaper(vec![scheduler(db, "host-a"), scheduler(db, "host-b")]);
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(200 + rng % 300));
        let victim = (rng >> 32) as usize % 2;
        procs.0[victim].kill().unwrap(); // SIGKILL
        let status = procs.0[victim].wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        kills += 1;
        procs.0[victim] = scheduler(db, ["host-a", "host-b"][victim]);
    }
    // Stop cleanly (SIGTERM), once the restarted one is up (a signal before
    // its handlers are installed kills it, as it would any program).
    std::thread::sleep(Duration::from_millis(500));
    for child in &mut procs.0 {
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    for child in &mut procs.0 {
        let status = child.wait().unwrap();
        assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
    }
    let stopped = now_ms();
    assert!(kills >= 10, "{kills} kills");

    for (name, step, first) in [
        ("fast", 100, fast.next_fire_at.unwrap()),
        ("secondly", 1000, secondly.next_fire_at.unwrap()),
    ] {
        let rows = fire_rows(db, name);
        let fire_times: Vec<i64> = rows.iter().map(|r| r.0).collect();
        // Nothing lost: every tick from the first the schedule owed to the
        // last before the stop, without a gap.
        assert_eq!(first % step, 0, "{name}: ticks fall on whole steps");
        let expected: Vec<i64> = (0..)
            .map(|i| first + i * step)
            .take_while(|t| *t <= fire_times.last().copied().unwrap_or(0))
            .collect();
        assert_eq!(fire_times, expected, "{name}: ticks lost or out of place");
        assert!(
            *fire_times.last().unwrap() > stopped - 1500 - step,
            "{name}: firing went on to the end"
        );
        // Nothing doubled: one job per tick, and no job without a tick.
        for (fire_at, run_at, kind) in &rows {
            assert_eq!((run_at, kind.as_str()), (fire_at, name));
        }
        let jobs = jobs_of_kind(db, name);
        assert_eq!(jobs as usize, rows.len(), "{name}: a tick fired twice");
    }
}

fn jobd(db: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(JOBD)
        .current_dir(db.parent().unwrap().parent().unwrap())
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
fn the_schedule_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("queue.db");

    // A bad zone or expression: one clear line, and not even a file.
    let (ok, _, err) = jobd(
        &db,
        &[
            "schedule",
            "add",
            "x",
            "--cron",
            "0 2 * * *",
            "--tz",
            "Europe/Berln",
            "--queue",
            "q",
            "--kind",
            "k",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("\"Europe/Berln\" is not a known IANA timezone"),
        "{err}"
    );
    let (ok, _, err) = jobd(
        &db,
        &[
            "schedule", "add", "x", "--cron", "0 2 * *", "--queue", "q", "--kind", "k",
        ],
    );
    assert!(!ok);
    assert!(err.contains("4 fields"), "{err}");
    let (ok, _, err) = jobd(
        &db,
        &[
            "schedule", "add", "x", "--every", "soon", "--queue", "q", "--kind", "k",
        ],
    );
    assert!(!ok);
    assert!(err.contains("invalid --every"), "{err}");
    // A good one, before there is a queue file: no worker would ever see it.
    let (ok, _, err) = jobd(
        &db,
        &[
            "schedule", "add", "x", "--every", "1h", "--queue", "default", "--kind", "noop",
        ],
    );
    assert!(!ok && err.contains("no such queue database"), "{err}");
    assert!(!db.exists());

    let (ok, out, _) = jobd(&db, &["init"]);
    assert!(ok);
    for name in [
        "tenant-backup",
        "job-cleanup",
        "analytics-rollup",
        "health-check",
        "file-cleanup",
    ] {
        assert!(out.contains(&format!("added schedule {name}")), "{out}");
    }
    let (ok, out, _) = jobd(&db, &["init"]);
    assert!(ok && out.contains("already installed"), "{out}");

    // A job no worker could run: refused, with the way past the check.
    for (queue, kind, payload, wanted) in [
        (
            "q",
            "noop",
            "{}",
            "unknown queue \"q\": no worker serves it",
        ),
        (
            "default",
            "k",
            "{}",
            "unknown job kind \"k\": no worker runs it",
        ),
        (
            "pdf",
            "generate_qr_pdf",
            r#"{"tenant":"t"}"#,
            "missing field `template_id`",
        ),
    ] {
        let (ok, _, err) = jobd(
            &db,
            &[
                "schedule",
                "add",
                "x",
                "--every",
                "1h",
                "--queue",
                queue,
                "--kind",
                kind,
                "--payload",
                payload,
            ],
        );
        assert!(!ok && err.contains(wanted), "{err}");
        assert_eq!(err.contains("--unchecked"), payload == "{}", "{err}");
    }

    let (ok, out, err) = jobd(
        &db,
        &[
            "schedule",
            "add",
            "berlin",
            "--cron",
            "30 2 * * *",
            "--tz",
            "Europe/Berlin",
            "--queue",
            "default",
            "--kind",
            "noop",
            "--payload",
            r#"{"a":1}"#,
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out.matches("next:").count(), 3, "{out}");
    let (ok, _, err) = jobd(
        &db,
        &[
            "schedule",
            "add",
            "berlin",
            "--cron",
            "0 3 * * *",
            "--queue",
            "default",
            "--kind",
            "noop",
        ],
    );
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, out, _) = jobd(
        &db,
        &[
            "schedule",
            "add",
            "berlin",
            "--every",
            "15m",
            "--queue",
            "default",
            "--kind",
            "noop",
            "--replace",
        ],
    );
    assert!(ok && out.contains("every 15m"), "{out}");

    let (ok, out, _) = jobd(&db, &["schedule", "list"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 7, "header + 6 schedules: {out}");
    let (ok, out, _) = jobd(&db, &["schedule", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok && list.as_array().unwrap().len() == 6, "{out}");
    let (_, out, _) = jobd(&db, &["schedule", "show", "berlin", "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["upcoming"].as_array().unwrap().len(), 5, "{out}");
    let (ok, out, _) = jobd(&db, &["schedule", "pause", "berlin"]);
    assert!(ok && out.contains("paused"));
    let (_, out, _) = jobd(&db, &["schedule", "show", "berlin"]);
    assert!(out.contains("state:    paused"), "{out}");
    let (ok, out, _) = jobd(&db, &["schedule", "resume", "berlin"]);
    assert!(ok && out.contains("resumed, next 20"), "{out}");
    let (ok, out, _) = jobd(&db, &["schedule", "run-now", "berlin"]);
    assert!(ok);
    let id: i64 = out.trim().parse().unwrap();
    let (_, out, _) = jobd(&db, &["show", &id.to_string()]);
    assert!(out.contains("(noop on queue default)"), "{out}");
    let (ok, _, _) = jobd(&db, &["schedule", "remove", "berlin"]);
    assert!(ok);
    let (ok, _, err) = jobd(&db, &["schedule", "remove", "berlin"]);
    assert!(
        !ok && err.contains("schedule \"berlin\" not found"),
        "{err}"
    );
}
