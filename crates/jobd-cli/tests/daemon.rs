//! `jobd init` + `jobd serve` as a real process: the API over TCP runs the
//! built-in handlers, and SIGTERM stops it cleanly.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jobd_testkit::{api_token, http, serve, wait_done, Reaper, Served};
use serde_json::{json, Value};

const JOBD: &str = env!("CARGO_BIN_EXE_jobd");

fn jobd(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(JOBD)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "jobd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn serve_runs_the_api_workers_and_scheduler_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let out = jobd(dir.path(), &["init"]);
    assert!(out.contains("jobd.toml: written"), "{out}");
    for sub in ["tenants", "artifacts", "backups"] {
        assert!(dir.path().join("jobd-data").join(sub).is_dir());
    }
    let config = std::fs::read_to_string(dir.path().join("jobd.toml")).unwrap();
    let token = api_token(&dir.path().join("jobd.toml"));
    assert_eq!(token.len(), 64);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("jobd.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "jobd.toml is private");
    // A short shutdown grace, so the SIGTERM below does not wait 30 s.
    let short = config.replace("shutdown_grace_secs = 30", "shutdown_grace_secs = 1");
    assert_ne!(short, config);
    std::fs::write(dir.path().join("jobd.toml"), short).unwrap();
    jobd(
        dir.path(),
        &[
            "tenants",
            "seed",
            "--count",
            "3",
            "--scans",
            "50",
            "--templates",
            "3",
        ],
    );
    let tenants: Value =
        serde_json::from_str(&jobd(dir.path(), &["tenants", "list", "--json"])).unwrap();
    assert_eq!(tenants, json!(["tenant-001", "tenant-002", "tenant-003"]));

    let Served {
        mut reaper, addr, ..
    } = serve(Command::new(JOBD).current_dir(dir.path()).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
    ]));

    let (status, health) = http(&addr, "GET", "/healthz", None, None);
    assert_eq!(
        (status, health["scheduler"].as_str()),
        (200, Some("running")),
        "{health}"
    );
    let (status, _) = http(&addr, "GET", "/api/v1/queues", None, None);
    assert_eq!(status, 401);

    // A PDF for a tenant, through the API, run by the daemon's workers.
    let (status, v) = http(
        &addr,
        "POST",
        "/api/v1/jobs",
        Some(&token),
        Some(
            json!({"queue": "pdf", "kind": "generate_qr_pdf", "tenant": "tenant-002", "payload": {"template_id": 2, "copies": 3, "columns": 3}}),
        ),
    );
    assert_eq!(status, 201, "{v}");
    let job = wait_done(&addr, &token, v["id"].as_i64().unwrap());
    assert_eq!(job["state"], "succeeded", "{job}");
    // `jobd watch` on the finished job: exit 0 and its result.
    let watched = jobd(dir.path(), &["watch", &job["id"].to_string()]);
    assert!(watched.contains("sha256"), "{watched}");
    let pdf = job["result"]["path"].as_str().unwrap();
    assert!(Path::new(pdf).exists() && pdf.contains("tenant-002"));
    // Unknown kinds are refused by this daemon.
    let (status, v) = http(
        &addr,
        "POST",
        "/api/v1/jobs",
        Some(&token),
        Some(json!({"queue": "pdf", "kind": "print_money"})),
    );
    assert_eq!(status, 400, "{v}");

    // Analytics: queued, computed by a worker, then served from the cache.
    let (status, v) = http(
        &addr,
        "GET",
        "/api/v1/analytics?period=monthly",
        Some(&token),
        None,
    );
    assert_eq!(status, 202, "{v}");
    let job = wait_done(&addr, &token, v["job_id"].as_i64().unwrap());
    assert_eq!(job["state"], "succeeded", "{job}");
    let (status, v) = http(
        &addr,
        "GET",
        "/api/v1/analytics?period=monthly",
        Some(&token),
        None,
    );
    assert_eq!(
        (status, v["result"]["total_scans"].as_i64()),
        (200, Some(150)),
        "{v}"
    );

    // The default schedules are there, with next fire times.
    let (_, v) = http(&addr, "GET", "/api/v1/schedules", Some(&token), None);
    assert_eq!(v["schedules"].as_array().unwrap().len(), 5);

    // A long job in flight, then SIGTERM: released or finished, clean exit.
    let (_, v) = http(
        &addr,
        "POST",
        "/api/v1/jobs",
        Some(&token),
        Some(json!({"queue": "default", "kind": "sleep", "payload": {"ms": 60000}})),
    );
    let sleeper = v["id"].as_i64().unwrap();
    let t0 = Instant::now();
    while http(
        &addr,
        "GET",
        &format!("/api/v1/jobs/{sleeper}"),
        Some(&token),
        None,
    )
    .1["state"]
        != "running"
    {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    let child = &mut reaper.0[0];
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(45), "serve did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let store = jobd::Store::open(dir.path().join("jobd-data/queue.db")).unwrap();
    assert_eq!(
        store.get(sleeper).unwrap().state,
        jobd::JobState::Ready,
        "released, not stuck running"
    );
}

/// `jobd queue limit` stores a file-wide limit that `jobd stats` shows; a bad
/// limit is refused with the reason and changes nothing.
#[test]
fn queue_limit_sets_and_lifts_a_file_wide_concurrency_limit() {
    let dir = tempfile::tempdir().unwrap();
    jobd(dir.path(), &["init"]);
    let out = jobd(dir.path(), &["queue", "limit", "pdf", "2"]);
    assert_eq!(out.trim(), "queue pdf: at most 2 jobs at once");
    let stats: Value = serde_json::from_str(&jobd(dir.path(), &["stats", "--json"])).unwrap();
    let pdf = |stats: &Value| {
        stats["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["queue"] == "pdf")
            .cloned()
            .unwrap()
    };
    assert_eq!(pdf(&stats)["concurrency"], 2);
    assert!(jobd(dir.path(), &["stats"]).contains("pdf (at most 2)"));

    for (bad, reason) in [
        ("0", "0 is less than 1"),
        ("lots", "\"lots\" is not a number"),
    ] {
        let out = Command::new(JOBD)
            .current_dir(dir.path())
            .args(["queue", "limit", "pdf", bad])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}");
        assert!(stderr.contains(reason), "{bad}: {stderr}");
        let stats: Value = serde_json::from_str(&jobd(dir.path(), &["stats", "--json"])).unwrap();
        assert_eq!(pdf(&stats)["concurrency"], 2, "{bad}: unchanged");
    }

    let out = jobd(dir.path(), &["queue", "limit", "pdf", "none"]);
    assert_eq!(out.trim(), "queue pdf: no concurrency limit");
    let stats: Value = serde_json::from_str(&jobd(dir.path(), &["stats", "--json"])).unwrap();
    assert!(pdf(&stats)["concurrency"].is_null());
}

/// `jobd enqueue` refuses, with what was wrong and writing nothing, a job
/// that no worker could run: a queue or kind that neither the configuration
/// nor a live worker serves, a payload the built-in handler would not
/// decode, a tenant that does not exist or a template it does not have.  A queue the configuration adds, or one a live `jobd worker`
/// serves, is accepted; `--unchecked` goes past the check.
/// `jobd enqueue ARGS` in `dir` with `stdin`: (exit 0?, stdout, stderr).
fn enqueue_stdin(dir: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(JOBD)
        .current_dir(dir)
        .arg("enqueue")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_string();
    // Fed from a thread: the process may print ids (or fail) while it reads.
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn stdin_enqueue_is_all_or_nothing_unless_it_commits_as_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    jobd(dir.path(), &["init"]);
    let jobs_in_file = || -> i64 {
        let stats: Value = serde_json::from_str(&jobd(dir.path(), &["stats", "--json"])).unwrap();
        stats["queues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["ready"].as_i64().unwrap())
            .sum()
    };
    let good = |n: usize| -> String {
        (0..n)
            .map(|i| {
                format!(
                    "{{\"queue\": \"default\", \"kind\": \"noop\", \"payload\": {{\"n\": {i}}}}}\n"
                )
            })
            .collect()
    };
    // A misspelt --db: refused, and no new file a worker would never read.
    let (ok, _, err) = enqueue_stdin(
        dir.path(),
        &[
            "--queue",
            "default",
            "--kind",
            "noop",
            "--db",
            "jobd-data/queu.db",
        ],
        "",
    );
    assert!(!ok && err.contains("no such queue database"), "{err}");
    assert!(!dir.path().join("jobd-data/queu.db").exists());
    // A bad line after 1,200 good ones: not JSON, an unknown kind.
    for (bad, wanted) in [
        ("{\"queue\": \"default\", \"kind\": ", "line 1201: "),
        (
            "{\"queue\": \"default\", \"kind\": \"nope\"}",
            "line 1201: invalid kind: unknown job kind \"nope\"",
        ),
    ] {
        let input = format!("{}{bad}\n{}", good(1200), good(5));
        let (ok, out, err) = enqueue_stdin(dir.path(), &[], &input);
        assert!(!ok, "{bad} was accepted");
        assert!(err.contains(wanted), "{err}");
        assert!(err.contains("nothing was enqueued"), "{err}");
        assert_eq!((out.as_str(), jobs_in_file()), ("", 0), "{bad}: {err}");
    }

    // Committing as it reads: the batches before the bad line stay, and
    // the error says so.
    let input = format!("{}not json\n{}", good(1200), good(5));
    let (ok, out, err) = enqueue_stdin(dir.path(), &["--batch", "500"], &input);
    assert!(!ok);
    assert!(
        err.contains("line 1201: ")
            && err.contains(
                "1000 jobs read before it were enqueued (--batch 500 commits as it reads"
            )
            && err.contains("the 200 since the last commit were not"),
        "{err}"
    );
    assert_eq!((out.lines().count(), jobs_in_file()), (1000, 1000));

    // All good: every job, in one go, ids in input order.
    let (ok, out, err) = enqueue_stdin(dir.path(), &[], &good(1500));
    assert!(ok, "{err}");
    let ids: Vec<i64> = out.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(ids.len(), 1500);
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "ids in input order"
    );
    assert_eq!(jobs_in_file(), 2500);
    // --batch 0 would never commit: refused.
    let (ok, _, err) = enqueue_stdin(dir.path(), &["--batch", "0"], &good(1));
    assert!(!ok && err.contains("--batch"), "{err}");
    assert_eq!(jobs_in_file(), 2500);
}

#[test]
fn enqueue_refuses_a_job_no_worker_could_run_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    jobd(dir.path(), &["init"]);
    jobd(
        dir.path(),
        &[
            "tenants",
            "seed",
            "--count",
            "1",
            "--scans",
            "10",
            "--templates",
            "3",
        ],
    );
    let enqueue = |args: &[&str], stdin: &str| enqueue_stdin(dir.path(), args, stdin);
    // The queues that hold jobs (in any state).
    let queues = || -> Vec<String> {
        let stats: Value = serde_json::from_str(&jobd(dir.path(), &["stats", "--json"])).unwrap();
        stats["queues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["queue"].as_str().unwrap().to_string())
            .collect()
    };
    for (args, stdin, wanted) in [
        (
            &["--queue", "pfd", "--kind", "noop"][..],
            "",
            "invalid queue: unknown queue \"pfd\": no worker serves it (the configured queues are \
             analytics, batch, default, email, exports, images, maintenance, notify, pdf; no live worker on the file serves \
             it either)\n(a job for a worker of your own that is not running yet: pass --unchecked)",
        ),
        (
            &["--queue", "pdf", "--kind", "qr_pdf"][..],
            "",
            "invalid kind: unknown job kind \"qr_pdf\": no worker runs it (the configured kinds are \
             analytics_rollup, backup_tenants, batch_qr, cleanup, cleanup_files, compress_files, dead_alerts, \
             export_data, generate_qr_pdf, health_check, noop, notify, process_image, sleep;",
        ),
        (
            &["--queue", "pdf", "--kind", "generate_qr_pdf", "--payload", r#"{"tenant": "t1", "template": 3}"#][..],
            "",
            "invalid payload: payload does not fit job kind 'generate_qr_pdf': unknown field `template`",
        ),
        (
            &["--queue", "pdf", "--kind", "generate_qr_pdf", "--payload", r#"{"template_id": 1}"#][..],
            "",
            "invalid job: no tenant: set the job's tenant or \"tenant\" in the payload",
        ),
        (
            &["--queue", "pdf", "--kind", "generate_qr_pdf", "--tenant", "ghost", "--payload", r#"{"template_id": 1}"#][..],
            "",
            "invalid job: tenant \"ghost\" not found",
        ),
        (
            &["--queue", "pdf", "--kind", "generate_qr_pdf", "--tenant", "tenant-001", "--payload", r#"{"template_id": 999}"#][..],
            "",
            "invalid job: template: tenant tenant-001 has no template 999",
        ),
        (
            &["--queue", "maintenance", "--kind", "backup_tenants", "--payload", r#"{"tenants": ["tenant-001", "ghost"]}"#][..],
            "",
            "invalid job: tenant \"ghost\" not found",
        ),
        // Refused now, not accepted to end dead.
        (
            &["--queue", "maintenance", "--kind", "backup_tenants", "--payload", r#"{"keep": 0}"#][..],
            "",
            "invalid job: keep: must keep at least 1 backup set",
        ),
        (
            &["--queue", "analytics", "--kind", "analytics_rollup", "--payload", r#"{"from_ms": 2000, "to_ms": 1000}"#][..],
            "",
            "invalid job: range: from_ms 2000 is not before to_ms 1000",
        ),
        (
            &["--queue", "default", "--kind", "sleep", "--payload", r#"{"ms": "soon"}"#][..],
            "",
            "invalid payload: payload does not fit job kind 'sleep': invalid type: string \"soon\"",
        ),
        (
            &[][..],
            "{\"queue\": \"default\", \"kind\": \"noop\"}\n{\"queue\": \"batch\", \"kind\": \"batch_qr\", \"payload\": {}}\n",
            "line 2: invalid payload: payload does not fit job kind 'batch_qr': missing field",
        ),
    ] {
        let (ok, _, err) = enqueue(args, stdin);
        assert!(!ok, "{args:?} was accepted");
        assert!(err.contains(wanted), "{args:?}: {err}");
    }
    assert!(queues().is_empty(), "nothing was enqueued");
    let (ok, _, err) = enqueue(
        &[
            "--queue",
            "pdf",
            "--kind",
            "generate_qr_pdf",
            "--tenant",
            "tenant-001",
            "--payload",
            r#"{"template_id": 3}"#,
        ],
        "",
    );
    assert!(ok, "a tenant's template: {err}");

    // The configuration names the queue: accepted.
    let mut config = std::fs::read_to_string(dir.path().join("jobd.toml")).unwrap();
    config.push_str("reports = 1\n");
    std::fs::write(dir.path().join("jobd.toml"), config).unwrap();
    let (ok, _, err) = enqueue(&["--queue", "reports", "--kind", "noop"], "");
    assert!(ok, "{err}");
    // A live worker of another configuration serves "extra".
    let mut worker = Command::new(JOBD)
        .current_dir(dir.path())
        .args(["worker", "--queue", "extra"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let served = loop {
        let (ok, _, err) = enqueue(&["--queue", "extra", "--kind", "noop"], "");
        if ok || t0.elapsed() > Duration::from_secs(20) {
            break (ok, err);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert!(served.0, "{}", served.1);
    let (ok, _, err) = enqueue(&["--queue", "mine", "--kind", "my_kind", "--unchecked"], "");
    assert!(ok, "{err}");
    assert_eq!(queues(), ["extra", "mine", "pdf", "reports"]);
}

/// After a bad deploy: `jobd retry --all` revives the dead jobs the filters
/// name (by error text, queue, kind, tenant), `jobd cancel --all` stops a
/// runaway backlog, and a filter without --all, or a state a command does
/// not apply to, is refused and changes nothing.
#[test]
fn retry_all_and_cancel_all_act_on_every_job_the_filters_match() {
    use jobd::store::{JobState, NewJob};
    let dir = tempfile::tempdir().unwrap();
    jobd(dir.path(), &["init"]);
    let store = jobd::Store::open(dir.path().join("jobd-data/queue.db")).unwrap();
    let mut dead = Vec::new();
    for (kind, error) in [
        ("qr_pdf", "font not found"),
        ("qr_pdf", "font not found"),
        ("qr_pdf", "tenant gone"),
        ("batch_qr", "font not found"),
    ] {
        let id = store
            .enqueue(&NewJob::new("pdf", kind).max_attempts(1))
            .unwrap();
        let c = store
            .claim("w", &["pdf"], 1, Duration::from_secs(30))
            .unwrap();
        store.fail(id, c[0].lease_token, error, true).unwrap();
        dead.push(id);
    }
    let waiting: Vec<i64> = (0..3)
        .map(|_| store.enqueue(&NewJob::new("email", "send")).unwrap())
        .collect();
    let state = |id: i64| store.get(id).unwrap().state;

    let refused = |args: &[&str], reason: &str| {
        let out = Command::new(JOBD)
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    };
    refused(&["retry", "--kind", "qr_pdf"], "--all");
    refused(&["retry", "--all", "--state", "ready"], "dead or cancelled");
    refused(
        &["cancel", "--all", "--state", "dead"],
        "scheduled, ready or running",
    );
    refused(&["cancel", "--all", "--state", "late"], "is not one of");
    // A filter or a dry run applies to --all, never quietly to one job.
    let one = waiting[0].to_string();
    refused(&["cancel", &one, "--dry-run"], "cannot be used with");
    refused(&["cancel", &one, "--queue", "pdf"], "cannot be used with");
    // Dry runs say how many jobs they would touch, and change nothing.
    let out = jobd(
        dir.path(),
        &[
            "retry",
            "--all",
            "--kind",
            "qr_pdf",
            "--error",
            "FONT",
            "--dry-run",
        ],
    );
    assert_eq!(out.trim(), "would retry 2 jobs (nothing changed)");
    let out = jobd(
        dir.path(),
        &["cancel", "--all", "--queue", "email", "--dry-run"],
    );
    assert_eq!(
        out.trim(),
        "would cancel 3 waiting jobs and ask 0 running jobs to stop (nothing changed)"
    );
    assert!(dead.iter().all(|&id| state(id) == JobState::Dead));
    assert!(waiting.iter().all(|&id| state(id) == JobState::Ready));

    let out = jobd(
        dir.path(),
        &["retry", "--all", "--kind", "qr_pdf", "--error", "FONT"],
    );
    assert_eq!(out.trim(), "2 jobs retried");
    let states: Vec<JobState> = dead.iter().map(|&id| state(id)).collect();
    assert_eq!(
        states,
        [
            JobState::Ready,
            JobState::Ready,
            JobState::Dead,
            JobState::Dead
        ]
    );

    let out = jobd(dir.path(), &["cancel", "--all", "--queue", "email"]);
    assert_eq!(
        out.trim(),
        "3 waiting jobs cancelled, 0 running jobs asked to stop"
    );
    assert!(waiting.iter().all(|&id| state(id) == JobState::Cancelled));
    assert_eq!(
        state(dead[0]),
        JobState::Ready,
        "another queue's job is untouched"
    );

    let out = jobd(dir.path(), &["retry", "--all", "--state", "cancelled"]);
    assert_eq!(out.trim(), "3 jobs retried");
    assert!(waiting.iter().all(|&id| state(id) == JobState::Ready));
    // One job by id still works as before.
    assert_eq!(
        jobd(dir.path(), &["retry", &dead[2].to_string()]).trim(),
        format!("job {}: ready", dead[2])
    );
}

/// The repository shipped a `jobd.toml` with a fixed token, so
/// every clone's daemon accepted the same public token.  No tracked or
/// packaged file holds a token now.
#[test]
fn the_repository_and_its_package_ship_no_api_token() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Every file of every published crate, as a path from the workspace root.
    let mut packaged = Vec::new();
    for krate in ["jobd", "jobd-server", "jobd-handlers", "jobd-cli"] {
        let dir = root.join("crates").join(krate);
        let out = Command::new(&cargo)
            .current_dir(&dir)
            .args(["package", "--list", "--allow-dirty", "--offline"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{krate}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        packaged.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|f| format!("crates/{krate}/{f}")),
        );
    }
    let tracked: Vec<String> = Command::new("git")
        .current_dir(&root)
        .args(["ls-files"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    for (what, list) in [("packaged", &packaged), ("tracked", &tracked)] {
        for file in list.iter() {
            assert!(
                !file.ends_with("/jobd.toml") && file != "jobd.toml",
                "{what}: {file}"
            );
            let Ok(text) = std::fs::read_to_string(root.join(file)) else {
                continue;
            };
            for line in text.lines() {
                let Some(value) = line.trim().strip_prefix("api_token = \"") else {
                    continue;
                };
                let value = value.trim_end_matches('"');
                assert!(
                    value.len() < 32 || !value.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{what} {file} holds an API token: {line}"
                );
            }
        }
    }
    assert!(packaged
        .iter()
        .any(|f| f == "crates/jobd-cli/jobd.example.toml"));
}

/// `jobd serve` with this config: Err(stderr) if it exits, Ok(stderr up to
/// the address line) once it serves (then it is killed).
fn serve_with(dir: &Path, config: &str, mode: u32) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("jobd.toml");
    std::fs::write(&path, config).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    let mut child = Command::new(JOBD)
        .current_dir(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("JOBD_API_TOKEN")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _reaper = Reaper(vec![child]);
    let mut seen = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        seen += &line;
        seen.push('\n');
        if line.contains("API on http://") {
            return Ok(seen);
        }
    }
    Err(seen)
}

/// `serve` refuses to start without a token of at least 32
/// bytes (or with the one once published), and warns when the file holding
/// it is readable by others.  `init` beside an existing config says so.
#[test]
fn serve_needs_a_private_token_of_32_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let base = "data_dir = \"jobd-data\"\nshutdown_grace_secs = 1\n";
    let err = serve_with(dir.path(), base, 0o600).unwrap_err();
    assert!(
        err.contains("no API token") && err.contains("jobd init"),
        "{err}"
    );
    let err = serve_with(
        dir.path(),
        &format!("{base}api_token = \"hunter2\"\n"),
        0o600,
    )
    .unwrap_err();
    assert!(err.contains("is 7 bytes; it must be at least 32"), "{err}");
    assert!(
        !err.contains("hunter2"),
        "the token is never printed: {err}"
    );
    let published = "99a95c5aeb12e5e50c7250309b81c58e8b0ccd09776fbe36ea6ed171c622de07";
    let err = serve_with(
        dir.path(),
        &format!("{base}api_token = \"{published}\"\n"),
        0o600,
    )
    .unwrap_err();
    assert!(err.contains("published"), "{err}");

    let good = format!("{base}api_token = \"{}\"\n", "ab".repeat(16));
    let ok = serve_with(dir.path(), &good, 0o600).unwrap();
    assert!(!ok.contains("other users"), "{ok}");
    let ok = serve_with(dir.path(), &good, 0o644).unwrap();
    assert!(ok.contains("can be read by other users: chmod 600"), "{ok}");
    assert!(
        !ok.contains(&"ab".repeat(16)),
        "the token is never logged: {ok}"
    );

    let out = jobd(dir.path(), &["init", "--no-defaults"]);
    assert!(
        out.contains("jobd.toml: exists, kept as it is (its api_token is unchanged)")
            && out.contains("move it away"),
        "{out}"
    );
    std::fs::write(dir.path().join("jobd.toml"), base).unwrap();
    let out = jobd(dir.path(), &["init", "--no-defaults"]);
    assert!(out.contains("it has no api_token"), "{out}");
}

/// `queue.db` was created 0644 in a 0755 data dir, so payloads
/// (e-mail addresses, tenant data) were world-readable.  The data dir is
/// 0700 and the queue file with its -wal and -shm 0600, whatever the umask.
#[test]
fn the_data_dir_and_the_queue_files_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mode = |p: &str| {
        std::fs::metadata(dir.path().join(p))
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    let init = Command::new("sh")
        .current_dir(dir.path())
        .args(["-c", &format!("umask 000; exec {JOBD} init --no-defaults")])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    assert_eq!(mode("jobd-data"), 0o700);
    for sub in ["tenants", "artifacts", "backups"] {
        assert_eq!(mode(&format!("jobd-data/{sub}")), 0o700, "{sub}");
    }
    assert_eq!(mode("jobd-data/queue.db"), 0o600);
    assert_eq!(mode("jobd.toml"), 0o600);

    // A daemon on a new file, started with umask 000: its -wal and -shm too.
    let config = std::fs::read_to_string(dir.path().join("jobd.toml")).unwrap();
    let config = config.replace("data_dir = \"jobd-data\"", "data_dir = \"fresh\"");
    std::fs::write(dir.path().join("jobd.toml"), config).unwrap();
    let _served = serve(Command::new("sh").current_dir(dir.path()).args([
        "-c",
        &format!("umask 000; exec {JOBD} serve --listen 127.0.0.1:0"),
    ]));
    assert_eq!(mode("fresh"), 0o700);
    for f in ["queue.db", "queue.db-wal", "queue.db-shm"] {
        assert_eq!(mode(&format!("fresh/{f}")), 0o600, "{f}");
    }
}

/// `jobd queue pause pdff` and `jobd queue limit pdff 3`
/// accepted a typo and exited 0.  A queue no job, configuration or worker
/// knows is refused, changes nothing, and `--create` means it.
#[test]
fn queue_commands_refuse_a_queue_nothing_knows() {
    let dir = tempfile::tempdir().unwrap();
    jobd(dir.path(), &["init", "--no-defaults"]);
    let db = dir.path().join("jobd-data/queue.db");
    let settings = || jobd_testkit::count(&db, "SELECT count(*) FROM queues");
    for args in [
        &["queue", "pause", "pdff"][..],
        &["queue", "resume", "pdff"][..],
        &["queue", "limit", "pdff", "3"][..],
        &["queue", "purge", "pdff"][..],
    ] {
        let out = Command::new(JOBD)
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} accepted a typo");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("unknown queue \"pdff\"")
                && err.contains("--create")
                && err.contains("pdf"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(settings(), 0, "nothing was written");
    // A configured queue, one with jobs, and a new one with --create.
    jobd(dir.path(), &["queue", "pause", "pdf"]);
    jobd(
        dir.path(),
        &["enqueue", "--queue", "mine", "--kind", "k", "--unchecked"],
    );
    jobd(dir.path(), &["queue", "limit", "mine", "2"]);
    jobd(dir.path(), &["queue", "limit", "reports", "3", "--create"]);
    assert_eq!(settings(), 3);
}

/// With 1,100 idle partial-header connections (past the usual
/// 1024 file limit) a normal request got no answer for 10 s and the log
/// repeated "Too many open files".  The daemon raises its soft file limit,
/// caps connections below it, and sheds the oldest idle ones.
#[test]
fn a_normal_request_is_answered_while_1100_idle_sockets_are_held() {
    // This test's own process holds the 1,100 sockets too.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if lim.rlim_cur < 4096 {
        lim.rlim_cur = lim.rlim_max.min(4096);
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
    let dir = tempfile::tempdir().unwrap();
    jobd(dir.path(), &["init", "--no-defaults"]);
    // Started with the usual soft limit of 1024, as a login shell gives it.
    let Served {
        reaper,
        addr,
        lines,
        ..
    } = serve(Command::new("sh").current_dir(dir.path()).args([
        "-c",
        &format!("ulimit -Sn 1024 && exec {JOBD} serve --listen 127.0.0.1:0 --no-scheduler"),
    ]));

    let mut idle = Vec::new();
    for _ in 0..1100 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .unwrap();
        idle.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    let (status, health) = http(&addr, "GET", "/healthz", None, None);
    let took = t0.elapsed();
    assert_eq!(status, 200, "{health}");
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    drop(idle);
    drop(reaper);
    let log = lines.iter().collect::<Vec<_>>().join("\n");
    assert!(!log.contains("Too many open files"), "{log}");
}

/// `jobd serve` in `dir` with `env`, no scheduler.
fn serve_logging(dir: &Path, env: &[(&str, &str)]) -> Served {
    serve(
        Command::new(JOBD)
            .current_dir(dir)
            .args(["serve", "--listen", "127.0.0.1:0", "--no-scheduler"])
            .envs(env.iter().copied()),
    )
}

/// At the default level a failure line carried no job id
/// (`WARN … run failed error=timed out`).  Every event of a run carries job
/// id, queue, kind and attempt; no colour codes when stderr is not a
/// terminal; `JOBD_LOG_FORMAT=json` for log shippers; one line at start
/// with version, file, queues and listen address.
#[test]
fn logs_name_the_job_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    jobd(dir.path(), &["init", "--no-defaults"]);
    let token = api_token(&dir.path().join("jobd.toml"));
    let doomed = json!({"queue": "default", "kind": "sleep", "payload": {"ms": 5000},
                        "timeout_ms": 100, "max_attempts": 1});
    let failure_of = |rx: &std::sync::mpsc::Receiver<String>| {
        let t0 = Instant::now();
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("a failure line");
            if line.contains("run failed") {
                return line;
            }
            assert!(t0.elapsed() < Duration::from_secs(20));
        }
    };

    // Text, to a pipe: plain, with the job's fields.
    let Served {
        reaper,
        addr,
        start,
        lines: rx,
    } = serve_logging(dir.path(), &[]);
    for wanted in [env!("CARGO_PKG_VERSION"), "queue.db", "queues=", "listen="] {
        assert!(start.contains(wanted), "{wanted:?} in {start}");
    }
    let (status, v) = http(
        &addr,
        "POST",
        "/api/v1/jobs",
        Some(&token),
        Some(doomed.clone()),
    );
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_i64().unwrap();
    let line = failure_of(&rx);
    assert!(line.contains(" WARN "), "{line}");
    for wanted in [
        format!("job_id={id}"),
        "queue=default".into(),
        "kind=sleep".into(),
        "attempt=1".into(),
        "timed out".into(),
    ] {
        assert!(line.contains(&wanted), "{wanted:?} in {line}");
    }
    assert!(
        !line.contains('\x1b') && !start.contains('\x1b'),
        "colour codes in {line:?}"
    );
    drop(reaper);

    // JSON: every line an object; the run's fields under "span".
    let Served {
        reaper,
        addr,
        start,
        lines: rx,
    } = serve_logging(dir.path(), &[("JOBD_LOG_FORMAT", "json")]);
    let start: Value = serde_json::from_str(&start).unwrap();
    assert_eq!(
        start["fields"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{start}"
    );
    assert!(
        start["fields"]["listen"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{start}"
    );
    assert!(
        start["fields"]["queues"].as_str().unwrap().contains("pdf"),
        "{start}"
    );
    let (status, v) = http(&addr, "POST", "/api/v1/jobs", Some(&token), Some(doomed));
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_i64().unwrap();
    let line: Value = serde_json::from_str(&failure_of(&rx)).unwrap();
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(line["span"]["job_id"], id, "{line}");
    assert_eq!(line["span"]["queue"], "default", "{line}");
    assert_eq!(line["span"]["kind"], "sleep", "{line}");
    assert_eq!(line["span"]["attempt"], 1, "{line}");
    drop(reaper);
    for line in rx.try_iter() {
        serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}
