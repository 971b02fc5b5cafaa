//! E-mail against a real SMTP server on loopback: aiosmtpd (Debian's
//! `python3-aiosmtpd`, which `.ci/run` installs; `jobd_testkit::smtp`),
//! started by each test.
//! What the server received is read back: envelope recipients, subject,
//! both parts, HTML escaping, attachments; a 451 answered once is retried,
//! a 550 ends the job; a batch paces itself and records each recipient.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jobd::store::{Backoff, JobState, NewJob};
use jobd::worker::Worker;
use jobd::Store;
use jobd_handlers::email::{self, Mailer, SmtpConfig, TlsMode};
use jobd_handlers::DataDir;
use jobd_testkit::smtp::{free_port, python, SmtpServer, TestCa};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

fn smtp(python: &str, args: &[&str]) -> SmtpServer {
    SmtpServer::start(python, args)
}

struct Rig {
    _dir: tempfile::TempDir,
    data: DataDir,
    store: Store,
    mailer: Arc<Mailer>,
}

fn rig(port: u16) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path().join("data"));
    std::fs::create_dir_all(data.artifacts().join("tenant-001")).unwrap();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let mut config = SmtpConfig::loopback(port, "QR Platform <noreply@qr.example>");
    config.batch_pause = Duration::from_millis(200);
    let mailer = Arc::new(Mailer::new(&config, data.clone()).unwrap());
    Rig {
        _dir: dir,
        data,
        store,
        mailer,
    }
}

impl Rig {
    /// Run the e-mail handlers until `done` says so of every job of `ids`.
    async fn run(&self, ids: &[i64], done: impl Fn(&jobd::store::JobInfo) -> bool) {
        let stop = CancellationToken::new();
        let worker = tokio::spawn({
            let stop = stop.clone();
            email::register(Worker::builder(self.store.clone()), self.mailer.clone())
                .queue("email", 5)
                .run(async move { stop.cancelled().await })
        });
        let t0 = Instant::now();
        while !ids.iter().all(|id| done(&self.store.get(*id).unwrap())) {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "jobs did not finish: {:?}",
                ids.iter()
                    .map(|i| self.store.get(*i).unwrap())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        worker.await.unwrap().unwrap();
    }
}

fn finished(j: &jobd::store::JobInfo) -> bool {
    j.state.is_finished()
}

/// The decoded text of a quoted-printable or 7bit part.
fn unfold(raw: &str) -> String {
    raw.replace("=\r\n", "")
        .replace("=3D", "=")
        .replace("\r\n", "\n")
}

fn send(to: Value, template: &str, data: Value) -> NewJob {
    NewJob::new("email", "send_email")
        .payload(&json!({"to": to, "template": template, "data": data}))
}

#[tokio::test]
async fn send_email_delivers_both_parts_escaped_with_attachments_to_every_recipient() {
    let Some(py) = python() else { return };
    let server = smtp(&py, &[]);
    let r = rig(server.port);
    std::fs::write(
        r.data.artifacts().join("tenant-001/codes.pdf"),
        b"%PDF-1.7 test",
    )
    .unwrap();
    let id = r
        .store
        .enqueue(&NewJob::new("email", "send_email").payload(&json!({
            "to": ["Ana <ana@example.com>", "bo@example.com"],
            "cc": "cc@example.com",
            "bcc": ["hidden@example.com"],
            "template": "welcome",
            "data": {"name": "Ana <script>", "product": "QR & Co", "login_url": "https://qr.example/login"},
            "attachments": ["artifacts/tenant-001/codes.pdf"],
        })))
        .unwrap();
    r.run(&[id], finished).await;
    let j = r.store.get(id).unwrap();
    assert_eq!(j.state, JobState::Succeeded, "{:?}", j.last_error);
    assert!(j.result.as_ref().unwrap()["smtp"]
        .as_str()
        .unwrap()
        .starts_with("250"));
    let got = server.received();
    assert_eq!(got.len(), 1);
    let (envelope, raw) = &got[0];
    assert_eq!(envelope["from"], "noreply@qr.example");
    let mut rcpt: Vec<&str> = envelope["to"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    rcpt.sort();
    assert_eq!(
        rcpt,
        [
            "ana@example.com",
            "bo@example.com",
            "cc@example.com",
            "hidden@example.com"
        ]
    );
    let text = unfold(raw);
    assert!(
        text.contains("Subject: Welcome to QR & Co, Ana <script>"),
        "{text}"
    );
    assert!(
        !text.to_lowercase().contains("bcc:"),
        "Bcc stays out of the headers"
    );
    assert!(text.contains("multipart/alternative") && text.contains("multipart/mixed"));
    assert!(text.contains("text/plain") && text.contains("text/html"));
    assert!(
        text.contains("Hello Ana <script>,"),
        "the plain part as written"
    );
    assert!(
        text.contains("Hello Ana &lt;script&gt;,"),
        "the HTML part escaped: {text}"
    );
    assert!(text.contains("QR &amp; Co"));
    let attachment = text
        .split("filename=\"codes.pdf\"")
        .nth(1)
        .expect("the attachment part");
    assert!(attachment.contains("application/pdf"));
    assert!(
        attachment.contains("%PDF-1.7 test"),
        "its bytes: {attachment}"
    );
}

#[tokio::test]
async fn a_451_is_retried_and_a_550_ends_the_job_with_the_servers_answer() {
    let Some(py) = python() else { return };
    let flaky = smtp(&py, &["--fail-first", "1", "--fail-code", "451"]);
    let r = rig(flaky.port);
    let quick = Backoff::new(Duration::from_millis(100), Duration::from_millis(100));
    let data = json!({"name": "Ana", "product": "P", "login_url": "u"});
    let id = r
        .store
        .enqueue(
            &send(json!("ana@example.com"), "welcome", data.clone())
                .backoff(quick)
                .max_attempts(3),
        )
        .unwrap();
    r.run(&[id], finished).await;
    let j = r.store.get(id).unwrap();
    assert_eq!(
        (j.state, j.attempts),
        (JobState::Succeeded, 2),
        "{:?}",
        j.last_error
    );
    assert!(
        j.attempt_log[0].error.as_deref().unwrap().contains("451"),
        "{:?}",
        j.attempt_log
    );
    assert_eq!(flaky.received().len(), 1);

    let refusing = smtp(&py, &["--fail-first", "99", "--fail-code", "550"]);
    let r = rig(refusing.port);
    let id = r
        .store
        .enqueue(&send(json!("ana@example.com"), "welcome", data).max_attempts(5))
        .unwrap();
    r.run(&[id], finished).await;
    let j = r.store.get(id).unwrap();
    assert_eq!(
        (j.state, j.attempts),
        (JobState::Dead, 1),
        "permanent: no retry"
    );
    let e = j.last_error.unwrap();
    assert!(e.contains("550") && e.contains("message refused"), "{e}");
}

#[tokio::test]
async fn a_server_that_is_down_is_retryable_and_unhealthy() {
    let port = free_port(); // nothing listens
    let r = rig(port);
    assert!(r.mailer.health().await.is_err());
    let data = json!({"name": "Ana", "product": "P", "login_url": "u"});
    let id = r
        .store
        .enqueue(&send(json!("ana@example.com"), "welcome", data).max_attempts(3))
        .unwrap();
    r.run(&[id], |j| {
        j.state == JobState::Scheduled || j.state.is_finished()
    })
    .await;
    let j = r.store.get(id).unwrap();
    assert_eq!(
        j.state,
        JobState::Scheduled,
        "retried later: {:?}",
        j.last_error
    );
    if let Some(py) = python() {
        let up = smtp(&py, &[]);
        assert!(rig(up.port).mailer.health().await.is_ok());
    }
}

#[tokio::test]
async fn a_batch_paces_itself_and_records_every_recipient() {
    let Some(py) = python() else { return };
    let server = smtp(&py, &["--reject", "nobody@example.com"]);
    let r = rig(server.port);
    let mut messages: Vec<Value> = (0..24)
        .map(|i| json!({"to": format!("user{i}@example.com"), "data": {"batch": format!("b-{i}")}}))
        .collect();
    messages[5] = json!({"to": "nobody@example.com", "data": {"batch": "b-5"}});
    let id = r
        .store
        .enqueue(&NewJob::new("email", "send_batch_email").payload(&json!({
            "template": "batch-complete",
            "data": {"completed": 3, "failed": 1, "total": 4, "failures": ["template 9"]},
            "messages": messages,
            "batch_size": 10,
            "pause_ms": 300,
        })))
        .unwrap();
    let t0 = Instant::now();
    r.run(&[id], finished).await;
    let took = t0.elapsed();
    let j = r.store.get(id).unwrap();
    assert_eq!(j.state, JobState::Succeeded, "{:?}", j.last_error);
    let rep = j.result.unwrap();
    assert_eq!(
        (
            rep["sent"].as_u64(),
            rep["failed"].as_u64(),
            rep["total"].as_u64()
        ),
        (Some(23), Some(1), Some(24))
    );
    assert_eq!(rep["results"][5]["status"], "failed");
    assert!(rep["results"][5]["error"].as_str().unwrap().contains("550"));
    assert_eq!(rep["results"][6]["status"], "sent");
    assert!(
        took >= Duration::from_millis(600),
        "two pauses between three batches of 10: {took:?}"
    );
    let got = server.received();
    assert_eq!(got.len(), 23);
    assert!(unfold(&got[0].1).contains("Subject: Batch b-0 finished: 3 done, 1 failed"));
    let progress: String = j.progress.detail.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&progress).unwrap(),
        json!({"completed": 23, "failed": 1, "total": 24})
    );
}

#[test]
fn what_can_be_known_at_enqueue_is_refused_then() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path().join("data"));
    std::fs::create_dir_all(data.artifacts()).unwrap();
    std::fs::write(dir.path().join("secret.txt"), "outside").unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("secret.txt"),
        data.artifacts().join("link.txt"),
    )
    .unwrap();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let mailer =
        Arc::new(Mailer::new(&SmtpConfig::loopback(25, "noreply@qr.example"), data).unwrap());
    let catalog = email::register(Worker::builder(store.clone()), mailer)
        .queue("email", 1)
        .catalog();
    let checker = catalog.checker(&store);
    let ok = json!({"name": "Ana", "product": "P", "login_url": "u"});
    let check = |payload: Value| {
        checker
            .check_job(&NewJob::new("email", "send_email").payload(&payload))
            .map_err(|e| e.to_string())
    };
    assert!(check(json!({"to": "a@example.com", "template": "welcome", "data": ok})).is_ok());
    for (payload, says) in [
        (
            json!({"to": "a@example.com", "template": "welcom", "data": ok}),
            "unknown e-mail template \"welcom\"",
        ),
        (
            json!({"to": "a@example.com", "template": "welcome", "data": {"name": "Ana"}}),
            "product",
        ),
        (
            json!({"to": "not an address", "template": "welcome", "data": ok}),
            "is not an e-mail address",
        ),
        (
            json!({"to": [], "template": "welcome", "data": ok}),
            "at least one recipient",
        ),
        (
            json!({"to": "a@example.com", "template": "welcome", "data": ok, "attachments": ["../secret.txt"]}),
            "inside the data directory",
        ),
        (
            json!({"to": "a@example.com", "template": "welcome", "data": ok, "attachments": ["artifacts/link.txt"]}),
            "outside the data directory's artifacts",
        ),
        (
            json!({"to": "a@example.com", "template": "welcome", "data": ok, "attachments": ["artifacts/none.pdf"]}),
            "not found",
        ),
        (
            json!({"to": "a@example.com", "template": "welcome", "colour": 1}),
            "unknown field",
        ),
    ] {
        let e = check(payload.clone()).unwrap_err();
        assert!(e.contains(says), "{payload}: {e}");
    }
    let e = checker
        .check_job(&NewJob::new("email", "send_batch_email").payload(&json!({
            "template": "welcome", "data": {"product": "P", "login_url": "u"},
            "messages": [{"to": "a@example.com", "data": {"name": "A"}}, {"to": "b@example.com"}],
        })))
        .unwrap_err()
        .to_string();
    assert!(e.contains("message #1") && e.contains("name"), "{e}");
    // Plain SMTP only on loopback; the sender must be an address.
    let mut remote = SmtpConfig::loopback(25, "noreply@qr.example");
    remote.host = "smtp.example.com".into();
    let e = Mailer::new(&remote, DataDir::new(dir.path())).unwrap_err();
    assert!(e.contains("plain SMTP only to a server on loopback"), "{e}");
    let e = Mailer::new(
        &SmtpConfig::loopback(25, "nobody"),
        DataDir::new(dir.path()),
    )
    .unwrap_err();
    assert!(e.contains("is not an address"), "{e}");
}

#[tokio::test]
async fn starttls_and_implicit_tls_deliver_to_a_server_whose_ca_is_trusted() {
    let Some(py) = python() else { return };
    let ca = TestCa::new();
    let (cert, key) = (ca.cert.to_str().unwrap(), ca.key.to_str().unwrap());
    for (mode, flag) in [(TlsMode::Starttls, "starttls"), (TlsMode::Tls, "implicit")] {
        let server = smtp(&py, &["--tls", flag, "--cert", cert, "--key", key]);
        for trusted in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let data = DataDir::new(dir.path().join("data"));
            std::fs::create_dir_all(data.root()).unwrap();
            let store = Store::open(dir.path().join("queue.db")).unwrap();
            let mut config = SmtpConfig::loopback(server.port, "jobd <jobd@example.com>");
            config.tls = mode;
            config.ca_file = trusted.then(|| ca.ca.clone());
            let mailer = Arc::new(Mailer::new(&config, data.clone()).unwrap());
            let r = Rig {
                _dir: dir,
                data,
                store,
                mailer,
            };
            let data = json!({"name": "Ana", "product": "P", "login_url": "u"});
            let id = r
                .store
                .enqueue(&send(json!("ana@example.com"), "welcome", data).max_attempts(1))
                .unwrap();
            r.run(&[id], finished).await;
            let j = r.store.get(id).unwrap();
            if trusted {
                assert_eq!(j.state, JobState::Succeeded, "{flag}: {:?}", j.last_error);
            } else {
                assert_eq!(j.state, JobState::Dead, "{flag}: an unknown CA is refused");
                let e = j.last_error.unwrap();
                assert!(e.to_lowercase().contains("certificate"), "{flag}: {e}");
            }
        }
        assert_eq!(
            server.received().len(),
            1,
            "{flag}: the trusted message only"
        );
    }
}
