//! `jobd init` and `jobd serve` on PostgreSQL, as real processes: the API
//! runs the built-in handlers (a tenant's QR PDF, the analytics rollup and
//! its cache), the dashboard and `/metrics` answer, the CLI reads the same
//! queue through `db` in jobd.toml, and SIGTERM stops it cleanly.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use jobd_testkit::{api_token, http, run_ok, serve, wait_done, Served};
use serde_json::json;

const JOBD: &str = env!("CARGO_BIN_EXE_jobd");

fn jobd(dir: &Path, args: &[&str]) -> String {
    String::from_utf8_lossy(&run_ok(Command::new(JOBD).current_dir(dir).args(args)).stdout)
        .into_owned()
}

#[test]
fn serve_on_postgres_runs_the_handlers_dashboard_metrics_and_cli() {
    let Some(url) = jobd_testkit::pg::database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = jobd(dir.path(), &["--db", &url, "init"]);
    assert!(out.contains("ready (schema version"), "{out}");
    let config = std::fs::read_to_string(dir.path().join("jobd.toml")).unwrap();
    assert!(config.contains(&format!("db = \"{url}\"")), "{config}");
    std::fs::write(
        dir.path().join("jobd.toml"),
        config.replace("shutdown_grace_secs = 30", "shutdown_grace_secs = 1"),
    )
    .unwrap();
    let token = api_token(&dir.path().join("jobd.toml"));
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

    let Served {
        mut reaper,
        addr,
        start,
        ..
    } = serve(Command::new(JOBD).current_dir(dir.path()).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
    ]));
    assert!(
        start.contains(&url),
        "the start line names the database: {start}"
    );

    let (status, health) = http(&addr, "GET", "/healthz", None, None);
    assert_eq!(
        (status, health["scheduler"].as_str()),
        (200, Some("running")),
        "{health}"
    );
    let (status, v) = http(
        &addr,
        "POST",
        "/api/v1/jobs",
        Some(&token),
        Some(
            json!({"queue": "pdf", "kind": "generate_qr_pdf", "tenant": "tenant-002",
                    "payload": {"template_id": 2, "copies": 3, "columns": 3}}),
        ),
    );
    assert_eq!(status, 201, "{v}");
    let job = wait_done(&addr, &token, v["id"].as_i64().unwrap());
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(Path::new(job["result"]["path"].as_str().unwrap()).exists());

    // Analytics: computed by a worker, then served from the cache.
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

    // The dashboard and the metrics.
    let (status, page) = http(&addr, "GET", "/", None, None);
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap_or_default().contains("jobd"), "{page}");
    let (status, metrics) = http(&addr, "GET", "/metrics", Some(&token), None);
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains("jobd_jobs{queue=\"pdf\",state=\"succeeded\"} 1"),
        "{metrics}"
    );
    let (_, v) = http(&addr, "GET", "/api/v1/schedules", Some(&token), None);
    assert!(v["schedules"].as_array().unwrap().len() >= 4, "{v}");

    // The CLI on the same queue, through `db` in jobd.toml.
    let listed = jobd(dir.path(), &["list", "--queue", "pdf"]);
    assert!(
        listed.contains("generate_qr_pdf") && listed.contains("succeeded"),
        "{listed}"
    );

    let child = &mut reaper.0[0];
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "serve did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}
