//! `jobd serve` with what `jobd.toml` gives other languages: a command
//! kind (`[kinds.X]`), a queue only remote workers serve (`[queues] X = 0`),
//! and role tokens made by `jobd token`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use jobd_testkit::{http, serve, wait_done};
use serde_json::json;

const JOBD: &str = env!("CARGO_BIN_EXE_jobd");
const ADMIN: &str = "admin-token-for-the-remote-test-0123456789abcdef";

fn jobd(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(JOBD)
        .current_dir(dir)
        .env("JOBD_API_TOKEN", ADMIN)
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
fn command_kinds_remote_queues_and_role_tokens_from_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tasks")).unwrap();
    // The program reads its payload from stdin and prints what it saw.
    std::fs::write(
        dir.path().join("tasks/render.py"),
        r#"
import json, os, sys
job = json.load(sys.stdin)
print(json.dumps({"progress": 50, "stage": "render", "details": {"done": 1, "total": 2}}), flush=True)
print("a log line")
print(json.dumps({"result": {"copies": job["copies"], "id": os.environ["JOBD_JOB_ID"],
                             "tenant": os.environ.get("JOBD_TENANT"),
                             "token_leaked": "JOBD_API_TOKEN" in os.environ}}))
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("jobd.toml"),
        r#"
data_dir = "data"
listen = "127.0.0.1:0"
scheduler = false

[queues]
email = 0

[kinds.render_pdf]
queue = "render"
command = ["python3", "tasks/render.py"]
timeout = "30s"
"#,
    )
    .unwrap();
    // A bad [kinds] entry is refused, saying which and why.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[kinds.x]\ncommand = []\n").unwrap();
    let (ok, _, err) = jobd(dir.path(), &["--config", bad.to_str().unwrap(), "serve"]);
    assert!(
        !ok && err.contains("[kinds.x]") && err.contains("command is empty"),
        "{err}"
    );
    std::fs::write(
        &bad,
        "[kinds.x]\ncommand = [\"true\"]\ntimeout = \"soon\"\n",
    )
    .unwrap();
    let (ok, _, err) = jobd(dir.path(), &["--config", bad.to_str().unwrap(), "serve"]);
    assert!(
        !ok && err.contains("timeout = \"soon\" is not a duration"),
        "{err}"
    );

    let served = serve(
        Command::new(JOBD)
            .current_dir(dir.path())
            .env("JOBD_API_TOKEN", ADMIN)
            .arg("serve"),
    );
    let addr = served.addr.clone();

    // Tokens: printed once, kept hashed.
    let (ok, worker_token, err) = jobd(dir.path(), &["token", "add", "py", "--role", "worker"]);
    assert!(ok, "{err}");
    let worker_token = worker_token.trim().to_string();
    assert_eq!(worker_token.len(), 64);
    let (ok, producer_token, _) =
        jobd(dir.path(), &["token", "add", "flask", "--role", "producer"]);
    assert!(ok);
    let producer_token = producer_token.trim().to_string();
    let (ok, _, err) = jobd(dir.path(), &["token", "add", "py", "--role", "worker"]);
    assert!(!ok && err.contains("\"py\" is taken"), "{err}");
    let (ok, _, err) = jobd(dir.path(), &["token", "add", "x", "--role", "root"]);
    assert!(!ok && err.contains("not a role"), "{err}");
    let (_, list, _) = jobd(dir.path(), &["token", "list"]);
    assert!(
        list.contains("py") && list.contains("worker") && list.contains("producer"),
        "{list}"
    );
    let db = std::fs::read(dir.path().join("data/queue.db")).unwrap();
    let needle = worker_token.as_bytes();
    assert!(
        !db.windows(needle.len()).any(|w| w == needle),
        "the token itself is not in the file"
    );

    // The command kind runs in the daemon.
    let (status, v) = http(
        &addr,
        "POST",
        "/api/v1/jobs",
        Some(&producer_token),
        Some(
            json!({"queue": "render", "kind": "render_pdf", "tenant": "tenant-007", "payload": {"copies": 12}}),
        ),
    );
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_i64().unwrap();
    let job = wait_done(&addr, &producer_token, id);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["copies"], 12);
    assert_eq!(job["result"]["id"], id.to_string());
    assert_eq!(job["result"]["tenant"], "tenant-007");
    assert_eq!(
        job["result"]["token_leaked"], false,
        "the daemon's token reached the program"
    );
    assert_eq!(job["progress"]["details"], json!({"done": 1, "total": 2}));

    // A remote queue takes any kind; a worker token claims from it.
    let (status, v) = http(
        &addr,
        "POST",
        "/api/v1/jobs",
        Some(&producer_token),
        Some(json!({"queue": "email", "kind": "send_welcome", "payload": {"to": "a@example.com"}})),
    );
    assert_eq!(status, 201, "{v}");
    let (status, v) = http(
        &addr,
        "POST",
        "/api/v1/worker/claim",
        Some(&worker_token),
        Some(json!({"worker": "w1", "queues": ["email"], "wait": 5})),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["worker"], "py/w1");
    assert_eq!(v["jobs"][0]["kind"], "send_welcome");
    // Revoked: refused within the token cache's 2 s.
    let (ok, _, _) = jobd(dir.path(), &["token", "revoke", "flask"]);
    assert!(ok);
    std::thread::sleep(Duration::from_millis(2100));
    let (status, _) = http(&addr, "GET", "/api/v1/jobs", Some(&producer_token), None);
    assert_eq!(status, 401);
    drop(served);
}

#[test]
fn a_daemon_that_leaves_every_queue_to_remote_workers_still_reaps() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("jobd.toml"),
        "data_dir = \"data\"\nlisten = \"127.0.0.1:0\"\nscheduler = false\n\n[queues]\n\
         pdf = 0\nbatch = 0\nanalytics = 0\nmaintenance = 0\nemail = 0\ndefault = 0\n",
    )
    .unwrap();
    let served = serve(
        Command::new(JOBD)
            .current_dir(dir.path())
            .env("JOBD_API_TOKEN", ADMIN)
            .arg("serve"),
    );
    let addr = served.addr.clone();
    let (status, v) = http(
        &addr,
        "POST",
        "/api/v1/jobs",
        Some(ADMIN),
        Some(json!({"queue": "email", "kind": "send_welcome"})),
    );
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_i64().unwrap();
    // A worker claims with a 1 s lease and goes quiet.
    let (status, v) = http(
        &addr,
        "POST",
        "/api/v1/worker/claim",
        Some(ADMIN),
        Some(json!({"worker": "w1", "queues": ["email"], "lease": 1})),
    );
    assert_eq!(
        (status, v["jobs"][0]["id"].as_i64()),
        (200, Some(id)),
        "{v}"
    );
    let t0 = Instant::now();
    loop {
        let (_, job) = http(
            &addr,
            "GET",
            &format!("/api/v1/jobs/{id}"),
            Some(ADMIN),
            None,
        );
        if job["state"] == "ready" {
            assert_eq!(job["attempt_log"][0]["outcome"], "lost", "{job}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "never reaped: {job}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(served);
}
