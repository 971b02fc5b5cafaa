//! `jobd serve` with `[notify]`: a job enqueued over HTTP with a webhook in
//! its `notify` list is followed, when it ends, by a signed POST the
//! receiver (Python's `http.server` checking the HMAC) accepts; a host the
//! configuration does not allow is a 400 at enqueue; the secret comes from
//! the environment, never from jobd.toml.

use std::process::Command;
use std::time::{Duration, Instant};

use jobd_testkit::smtp::WebhookServer;
use jobd_testkit::{http, serve};
use serde_json::json;

const JOBD: &str = env!("CARGO_BIN_EXE_jobd");
const ADMIN: &str = "admin-token-for-the-notify-test-0123456789abcdef";
const SECRET: &str = "the-webhook-secret-of-the-test";

#[test]
fn serve_delivers_signed_webhooks_to_allowed_hosts_only() {
    let hook = WebhookServer::start(SECRET, &[]);
    let dir = tempfile::tempdir().unwrap();
    assert!(Command::new(JOBD)
        .current_dir(dir.path())
        .arg("init")
        .status()
        .unwrap()
        .success());
    let config = std::fs::read_to_string(dir.path().join("jobd.toml")).unwrap();
    std::fs::write(
        dir.path().join("jobd.toml"),
        format!(
            "{config}\n[notify]\nwebhook_hosts = [\"127.0.0.1:{}\"]\ntimeout = \"5s\"\n",
            hook.port
        )
        .replace("listen = \"127.0.0.1:7878\"", "listen = \"127.0.0.1:0\"")
        .replace("shutdown_grace_secs = 30", "shutdown_grace_secs = 1"),
    )
    .unwrap();
    let served = serve(
        Command::new(JOBD)
            .current_dir(dir.path())
            .env("JOBD_API_TOKEN", ADMIN)
            .env("JOBD_WEBHOOK_SECRET", SECRET)
            .arg("serve"),
    );
    let addr = served.addr.clone();
    let url = format!("http://127.0.0.1:{}/jobd", hook.port);

    let job = json!({"queue": "default", "kind": "noop",
                     "notify": [{"on": "succeeded", "webhook": url}]});
    let (status, v) = http(&addr, "POST", "/api/v1/jobs", Some(ADMIN), Some(job));
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_i64().unwrap();
    let (status, v) = http(
        &addr,
        "POST",
        "/api/v1/jobs",
        Some(ADMIN),
        Some(json!({"queue": "default", "kind": "noop",
                    "notify": [{"on": "end", "webhook": "https://elsewhere.example/x"}]})),
    );
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not allowed"), "{v}");

    let t0 = Instant::now();
    while hook.received().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(30), "no webhook arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = hook.received();
    assert_eq!(got[0]["valid"], true, "{}", got[0]);
    assert_eq!(got[0]["body"]["job"]["id"], id);
    assert_eq!(got[0]["body"]["event"], "job.succeeded");
    drop(served);

    // The secret never goes in jobd.toml.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[notify]\nwebhook_hosts = []\nsecret = \"hunter2\"\n").unwrap();
    let run = Command::new(JOBD)
        .current_dir(dir.path())
        .env("JOBD_API_TOKEN", ADMIN)
        .args(["--config", bad.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("keep the webhook secret out of jobd.toml"),
        "{err}"
    );
    assert!(!err.contains("hunter2"));
}
