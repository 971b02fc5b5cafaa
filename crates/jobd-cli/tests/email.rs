//! `jobd serve` with an `[email]` section: `jobd init` writes the e-mail
//! templates, the daemon sends through a real SMTP server on loopback
//! (aiosmtpd, as in jobd-handlers' e-mail tests), `/healthz` reports it, and
//! a job whose template lacks a variable is refused at enqueue.

use std::process::Command;
use std::time::{Duration, Instant};

use jobd_testkit::smtp::{python, SmtpServer};
use jobd_testkit::{http, serve};
use serde_json::json;

const JOBD: &str = env!("CARGO_BIN_EXE_jobd");
const ADMIN: &str = "admin-token-for-the-email-test-0123456789abcdef";
#[test]
fn serve_sends_e_mail_through_the_configured_server() {
    let Some(py) = python() else { return };
    let smtp = SmtpServer::start(&py, &[]);
    let port = smtp.port;

    let dir = tempfile::tempdir().unwrap();
    let init = Command::new(JOBD)
        .current_dir(dir.path())
        .arg("init")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&init.stdout);
    assert!(
        init.status.success() && said.contains("e-mail template files written"),
        "{said}"
    );
    let templates = dir.path().join("jobd-data/templates/email");
    assert!(templates.join("welcome.html.hbs").exists());
    // An edited template is the one used.
    std::fs::write(
        templates.join("welcome.subject.hbs"),
        "Hi {{name}}, from the edited template",
    )
    .unwrap();
    let config = std::fs::read_to_string(dir.path().join("jobd.toml")).unwrap();
    std::fs::write(
        dir.path().join("jobd.toml"),
        format!(
            "{config}\n[email]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nfrom = \"QR Platform <noreply@qr.example>\"\n"
        )
        .replace("listen = \"127.0.0.1:7878\"", "listen = \"127.0.0.1:0\"")
        .replace("shutdown_grace_secs = 30", "shutdown_grace_secs = 1"),
    )
    .unwrap();
    let served = serve(
        Command::new(JOBD)
            .current_dir(dir.path())
            .env("JOBD_API_TOKEN", ADMIN)
            .arg("serve"),
    );
    let addr = served.addr.clone();

    let (status, health) = http(&addr, "GET", "/healthz", None, None);
    assert_eq!(
        (status, health["email"].as_str()),
        (200, Some("ok")),
        "{health}"
    );

    let good = json!({"queue": "email", "kind": "send_email", "payload": {
        "to": "ana@example.com", "template": "welcome",
        "data": {"name": "Ana", "product": "QR", "login_url": "https://qr.example"}}});
    let (status, v) = http(&addr, "POST", "/api/v1/jobs", Some(ADMIN), Some(good));
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_i64().unwrap();
    let (status, v) = http(
        &addr,
        "POST",
        "/api/v1/jobs",
        Some(ADMIN),
        Some(
            json!({"queue": "email", "kind": "send_email", "payload": {"to": "ana@example.com", "template": "welcome", "data": {"name": "Ana"}}}),
        ),
    );
    assert_eq!(status, 400, "a variable missing is refused at enqueue: {v}");
    assert!(v["error"].as_str().unwrap().contains("product"), "{v}");

    let t0 = Instant::now();
    loop {
        let (_, job) = http(
            &addr,
            "GET",
            &format!("/api/v1/jobs/{id}?wait=5"),
            Some(ADMIN),
            None,
        );
        if job["state"] == "succeeded" {
            break;
        }
        assert!(!job["state"].as_str().unwrap().starts_with("dead"), "{job}");
        assert!(t0.elapsed() < Duration::from_secs(30), "{job}");
    }
    let raw = smtp.received().remove(0).1;
    assert!(
        raw.contains("Subject: Hi Ana, from the edited template"),
        "{raw}"
    );

    // The password never goes in jobd.toml.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[email]\nhost = \"127.0.0.1\"\nfrom = \"a@b.c\"\npassword = \"hunter2\"\n",
    )
    .unwrap();
    let run = Command::new(JOBD)
        .current_dir(dir.path())
        .env("JOBD_API_TOKEN", ADMIN)
        .args(["--config", bad.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("keep the SMTP password out of jobd.toml"),
        "{err}"
    );
    assert!(!err.contains("hunter2"));
    drop(served);
}
