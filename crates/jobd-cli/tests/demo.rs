//! `jobd demo` start to finish at small sizes; its report matches the file.

use std::process::Command;

use jobd_testkit::run_ok;
use serde_json::Value;

#[test]
fn the_demo_runs_and_its_report_matches_the_queue_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let out = run_ok(
        Command::new(env!("CARGO_BIN_EXE_jobd"))
            .current_dir(dir.path())
            .args([
                "demo",
                "--data-dir",
                data.to_str().unwrap(),
                "--tenants",
                "4",
                "--scans",
                "100",
                "--jobs",
                "300",
                "--json",
            ]),
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();

    let store = jobd::Store::open(data.join("queue.db")).unwrap();
    let stats = store.stats().unwrap();
    let sum = |f: fn(&jobd::store::QueueStats) -> i64| stats.queues.iter().map(f).sum::<i64>();
    assert_eq!(report["states"]["succeeded"], sum(|q| q.succeeded));
    assert_eq!(report["states"]["dead"], sum(|q| q.dead));
    assert_eq!(
        sum(|q| q.scheduled + q.ready + q.running),
        0,
        "nothing left waiting"
    );
    let jobs: i64 = store
        .sqlite()
        .unwrap()
        .connection()
        .unwrap()
        .query_row("SELECT count(*) FROM jobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(report["jobs"], jobs);
    assert_eq!(jobs, 4 + 3 + 300);
    // 0.1% doomed (1 of 300: n % 1000 == 7) ends dead, everything else succeeds.
    assert_eq!(report["states"]["dead"], 1);

    assert_eq!(report["tenants"], 4);
    let pdfs = walk(&data.join("artifacts"), "pdf");
    assert_eq!(pdfs, 4);
    assert_eq!(
        (
            report["batch"]["completed"].as_i64(),
            report["batch"]["failed"].as_i64()
        ),
        (Some(40), Some(2))
    );
    assert_eq!(report["analytics_total_scans"], 400);
    let set = report["backup_set"].as_str().unwrap();
    assert!(std::path::Path::new(set).join("manifest.json").exists());
}

fn walk(dir: &std::path::Path, ext: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            if p.is_dir() {
                walk(&p, ext)
            } else {
                usize::from(p.extension().is_some_and(|e| e == ext))
            }
        })
        .sum()
}

#[test]
fn jobd_bench_reports_enqueue_drain_and_latency() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jobd"))
        .current_dir(dir.path())
        .args([
            "bench",
            "--jobs",
            "600",
            "--workers",
            "1",
            "--processes",
            "1",
            "--latency-samples",
            "20",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for wanted in [
        "enqueue   600 jobs",
        "drain",
        "1 process(es)",
        "latency   enqueue→start p50",
    ] {
        assert!(text.contains(wanted), "{wanted:?} in {text}");
    }
    // The scratch queue file is gone.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("jobd-data"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `JOBD_DATA_DIR=$HOME/prod jobd demo` used to replace that
/// directory's queue file, tenants and backups.  The demo reads only its own
/// `--data-dir` and replaces only a directory it made.
#[test]
fn the_demo_never_touches_a_data_dir_it_did_not_make() {
    let dir = tempfile::tempdir().unwrap();
    let prod = dir.path().join("prod");
    std::fs::create_dir_all(prod.join("tenants")).unwrap();
    std::fs::write(prod.join("tenants/tenant-001.db"), b"real tenant data").unwrap();
    std::fs::write(prod.join("queue.db"), b"real queue").unwrap();
    let small = ["--tenants", "2", "--scans", "10", "--jobs", "10", "--json"];

    // The environment variable is not the demo's: it runs in ./jobd-demo.
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_jobd"))
            .current_dir(dir.path())
            .env("JOBD_DATA_DIR", &prod)
            .arg("demo")
            .args(small),
    );
    assert!(dir.path().join("jobd-demo/queue.db").exists());
    assert!(dir.path().join("jobd-demo/.jobd-demo").exists());

    // Named with --data-dir, a directory the demo did not make is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_jobd"))
        .current_dir(dir.path())
        .args(["demo", "--data-dir", prod.to_str().unwrap()])
        .args(small)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("was not made by `jobd demo`"), "{err}");
    assert_eq!(
        std::fs::read(prod.join("tenants/tenant-001.db")).unwrap(),
        b"real tenant data"
    );
    assert_eq!(std::fs::read(prod.join("queue.db")).unwrap(), b"real queue");
    assert!(!prod.join(".jobd-demo").exists());

    // Its own directory it replaces on the next run.
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_jobd"))
            .current_dir(dir.path())
            .arg("demo")
            .args(small),
    );
}

#[test]
fn with_smtp_the_demo_mails_its_batch_and_backup_reports_and_says_so_without() {
    let Some(py) = jobd_testkit::smtp::python() else {
        return;
    };
    let smtp = jobd_testkit::smtp::SmtpServer::start(&py, &[]);
    let dir = tempfile::tempdir().unwrap();
    let demo = |name: &str, extra: &[&str]| -> Value {
        let data = dir.path().join(name);
        let out = run_ok(
            Command::new(env!("CARGO_BIN_EXE_jobd"))
                .current_dir(dir.path())
                .args(["demo", "--data-dir", data.to_str().unwrap()])
                .args(["--tenants", "2", "--scans", "50", "--jobs", "20", "--json"])
                .args(extra),
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let server = format!("127.0.0.1:{}", smtp.port);
    let report = demo("with", &["--smtp", &server, "--mail-to", "ops@example.com"]);
    let mails = report["emails"].as_array().unwrap();
    let mut templates: Vec<&str> = mails
        .iter()
        .map(|m| m["template"].as_str().unwrap())
        .collect();
    templates.sort();
    assert_eq!(templates, ["backup-report", "batch-complete"], "{report}");
    assert!(mails.iter().all(|m| m["state"] == "succeeded"), "{report}");
    let got = smtp.wait_for(2, std::time::Duration::from_secs(5));
    assert_eq!(got.len(), 2);
    for (envelope, raw) in &got {
        assert_eq!(envelope["to"], serde_json::json!(["ops@example.com"]));
        assert!(
            raw.contains("Subject: Batch job-") || raw.contains("Subject: Backup"),
            "{raw}"
        );
    }

    let without = demo("without", &[]);
    assert!(
        without["emails"]
            .as_str()
            .unwrap()
            .contains("not sent: no --smtp"),
        "{without}"
    );
    assert_eq!(smtp.received().len(), 2, "nothing more sent");
}
