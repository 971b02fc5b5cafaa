//! Notifications when jobs end, delivered by the `notify` handler to real
//! receivers on loopback: a webhook receiver (Python's `http.server`) that
//! checks each signature with Python's `hmac`, and an SMTP server
//! (aiosmtpd, `python3-aiosmtpd`).  A receiver that fails twice shows the
//! retries; a wrong secret is refused by the receiver; a host outside the
//! allow-list, an unsigned webhook or a mail without a server are refused
//! at enqueue.

mod support;

use std::sync::Arc;
use std::time::Duration;

use jobd::store::{JobInfo, JobState, ListFilter, NewJob, Notify};
use jobd::worker::{JobError, Worker, WorkerBuilder};
use jobd::{Error, Store};
use jobd_handlers::email::{Mailer, SmtpConfig};
use jobd_handlers::notify::{self, NotifyConfig};
use jobd_handlers::DataDir;
use jobd_testkit::smtp::{python, SmtpServer, TestCa, WebhookServer};
use serde_json::{json, Value};

const SECRET: &str = "s3cret-for-the-test";

fn config(port: u16, secret: Option<&str>) -> NotifyConfig {
    let mut c: NotifyConfig = serde_json::from_value(json!({
        "webhook_hosts": [format!("127.0.0.1:{port}"), "*.example.com"],
    }))
    .unwrap();
    c.secret = secret.map(String::from);
    c
}

fn list(v: Value) -> Vec<Notify> {
    serde_json::from_value(v).unwrap()
}

/// A worker with `ok` (succeeds with a result), `boom` (fails for good) on
/// queue `q`, and `notify` on `notify`.
fn worker(store: &Store, config: NotifyConfig, mailer: Option<Arc<Mailer>>) -> WorkerBuilder {
    let b = Worker::builder(store.clone())
        .handle_fn("ok", |_ctx, _p| async { Ok(json!({"pages": 3})) })
        .handle_fn("boom", |_ctx, _p| async {
            Err::<Value, _>(JobError::permanent("the printer caught <fire>"))
        })
        .queue("q", 2)
        .queue(notify::QUEUE, 2);
    notify::register(b, config, mailer).unwrap()
}

/// Run `builder` until every notification job has finished (and there is one).
async fn run_until_notified(store: &Store, builder: WorkerBuilder) -> Vec<JobInfo> {
    let notes = || -> Vec<JobInfo> {
        store
            .list(&ListFilter {
                queue: Some(notify::QUEUE.into()),
                ..ListFilter::default()
            })
            .unwrap()
            .iter()
            .map(|s| store.get(s.id).unwrap())
            .collect()
    };
    support::run_until(builder, "the notifications", || {
        let n = notes();
        !n.is_empty() && n.iter().all(|j| j.state.is_finished())
    })
    .await;
    notes()
}

#[tokio::test]
async fn a_signed_webhook_is_retried_until_the_receiver_takes_it() {
    let server = WebhookServer::start(SECRET, &["--fail-first", "2", "--fail-code", "503"]);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let url = format!("http://127.0.0.1:{}/hooks/jobd?src=test", server.port);
    let id = store
        .enqueue(
            &NewJob::new("q", "ok")
                .tenant("tenant-001")
                .notify(list(json!([
                    {"on": "succeeded", "webhook": url, "backoff_ms": 50},
                    {"on": "dead", "webhook": url},
                ]))),
        )
        .unwrap();
    let notes = run_until_notified(
        &store,
        worker(&store, config(server.port, Some(SECRET)), None),
    )
    .await;
    assert_eq!(notes.len(), 1, "only the entry on succeeded");
    let note = &notes[0];
    assert_eq!(
        (note.state, note.attempts),
        (JobState::Succeeded, 3),
        "{note:#?}"
    );
    assert!(note.attempt_log[0]
        .error
        .as_deref()
        .unwrap()
        .contains("503"));
    assert_eq!(note.result.as_ref().unwrap()["answer"], "200 OK");

    let got = server.received();
    assert_eq!(got.len(), 3);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r["valid"], true, "the receiver's own HMAC check: {r}");
        assert_eq!(r["path"], "/hooks/jobd?src=test");
        assert_eq!(r["headers"]["x-jobd-delivery"], note.id.to_string());
        assert_eq!(r["status"], if i < 2 { 503 } else { 200 });
    }
    let body = &got[2]["body"];
    assert_eq!(body["event"], "job.succeeded");
    assert_eq!(body["job"]["id"], id);
    assert_eq!(body["job"]["queue"], "q");
    assert_eq!(body["job"]["kind"], "ok");
    assert_eq!(body["job"]["state"], "succeeded");
    assert_eq!(body["job"]["tenant"], "tenant-001");
    assert_eq!(body["job"]["result"], json!({"pages": 3}));
}

#[tokio::test]
async fn a_receiver_with_another_secret_refuses_and_the_notification_ends() {
    let server = WebhookServer::start("the receiver's secret", &[]);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let url = format!("http://127.0.0.1:{}/h", server.port);
    store
        .enqueue(
            &NewJob::new("q", "boom")
                .max_attempts(1)
                .notify(list(json!([{"on": "end", "webhook": url}]))),
        )
        .unwrap();
    let notes = run_until_notified(
        &store,
        worker(&store, config(server.port, Some("not it")), None),
    )
    .await;
    let note = &notes[0];
    assert_eq!(
        (note.state, note.attempts),
        (JobState::Dead, 1),
        "a 401 is not retried"
    );
    assert!(
        note.last_error.as_deref().unwrap().contains("401"),
        "{note:?}"
    );
    let got = server.received();
    assert_eq!(got[0]["valid"], false);
    assert_eq!(got[0]["body"]["job"]["state"], "dead");
    assert_eq!(got[0]["body"]["job"]["error"], "the printer caught <fire>");
}

#[tokio::test]
async fn a_dead_job_mails_its_error_escaped_with_the_template() {
    let Some(py) = python() else { return };
    let smtp = SmtpServer::start(&py, &[]);
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path().join("data"));
    std::fs::create_dir_all(data.root()).unwrap();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let mailer = Arc::new(
        Mailer::new(
            &SmtpConfig::loopback(smtp.port, "jobd <jobd@example.com>"),
            data,
        )
        .unwrap(),
    );
    let id = store
        .enqueue(
            &NewJob::new("q", "boom").max_attempts(1).notify(list(json!([
                {"on": "dead", "email": {"to": ["ops@example.com"], "template": "job-failed"}},
                {"on": "succeeded", "email": {"to": "nobody@example.com"}},
            ]))),
        )
        .unwrap();
    let notes = run_until_notified(
        &store,
        worker(&store, NotifyConfig::default(), Some(mailer)),
    )
    .await;
    assert_eq!(notes.len(), 1);
    assert_eq!(
        notes[0].state,
        JobState::Succeeded,
        "{:?}",
        notes[0].last_error
    );
    let got = smtp.wait_for(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    let (envelope, raw) = &got[0];
    assert_eq!(envelope["to"], json!(["ops@example.com"]));
    assert!(
        raw.contains(&format!("Subject: Job {id} (boom) failed")),
        "{raw}"
    );
    assert!(
        raw.contains("the printer caught <fire>"),
        "the text part: {raw}"
    );
    assert!(
        raw.contains("the printer caught &lt;fire&gt;"),
        "the HTML part, escaped: {raw}"
    );
}

#[test]
fn what_can_be_known_at_enqueue_is_refused_then() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let catalog = worker(&store, config(8080, Some(SECRET)), None).catalog();
    let check = |entry: Value| {
        catalog
            .checker(&store)
            .check_job(&NewJob::new("q", "ok").notify(list(json!([entry]))))
    };
    check(json!({"on": "end", "webhook": "http://127.0.0.1:8080/x"})).unwrap();
    check(json!({"on": "end", "webhook": "https://hooks.example.com/x"})).unwrap();
    for (entry, why) in [
        (
            json!({"on": "end", "webhook": "http://127.0.0.1:9999/x"}),
            "not allowed",
        ),
        (
            json!({"on": "end", "webhook": "https://evil.com/x"}),
            "not allowed",
        ),
        (
            json!({"on": "end", "webhook": "https://example.com/x"}),
            "not allowed",
        ),
        (
            json!({"on": "end", "webhook": "ftp://hooks.example.com/x"}),
            "only http and https",
        ),
        (
            json!({"on": "end", "webhook": "file:///etc/passwd"}),
            "not a URL",
        ),
        (
            json!({"on": "end", "webhook": "https://u:p@hooks.example.com/"}),
            "no user",
        ),
        (
            json!({"on": "end", "email": {"to": "a@example.com"}}),
            "[email] is not configured",
        ),
        (json!({"on": "end", "sms": "+1555"}), "unknown field"),
        (
            json!({"on": "end", "webhook": "https://a.example.com/", "email": {"to": "a@b.c"}}),
            "one target",
        ),
    ] {
        let e = check(entry.clone()).unwrap_err();
        assert!(
            matches!(
                &e,
                Error::InvalidInput {
                    field: "notify",
                    ..
                }
            ) && e.to_string().contains(why),
            "{entry}: {e}"
        );
    }
    // Unsigned webhooks are not sent.
    let unsigned = worker(&store, config(8080, None), None).catalog();
    let e = unsigned
        .checker(&store)
        .check_job(&NewJob::new("q", "ok").notify(list(json!([
            {"on": "end", "webhook": "http://127.0.0.1:8080/x"}
        ]))))
        .unwrap_err();
    assert!(e.to_string().contains("JOBD_WEBHOOK_SECRET"), "{e}");
    // A secret in the file is refused.
    let from_file: NotifyConfig = toml_like(json!({"secret": "oops"}));
    assert!(from_file
        .with_secret_from_env()
        .unwrap_err()
        .contains("out of jobd.toml"));
}

fn toml_like(v: Value) -> NotifyConfig {
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn mails_are_checked_at_enqueue_against_the_templates() {
    let Some(py) = python() else { return };
    let smtp = SmtpServer::start(&py, &[]);
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path().join("data"));
    std::fs::create_dir_all(data.root()).unwrap();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let mailer =
        Arc::new(Mailer::new(&SmtpConfig::loopback(smtp.port, "jobd@example.com"), data).unwrap());
    let catalog = worker(&store, NotifyConfig::default(), Some(mailer)).catalog();
    let check = |entry: Value| {
        catalog
            .checker(&store)
            .check_job(&NewJob::new("q", "ok").notify(list(json!([entry]))))
    };
    check(json!({"on": "end", "email": {"to": "ops@example.com"}})).unwrap();
    for (entry, why) in [
        (
            json!({"on": "end", "email": {"to": "not an address"}}),
            "address",
        ),
        (
            json!({"on": "end", "email": {"to": "a@b.c", "template": "nope"}}),
            "nope",
        ),
        // batch-complete needs {{batch}}, which a job's end does not give.
        (
            json!({"on": "end", "email": {"to": "a@b.c", "template": "batch-complete"}}),
            "batch",
        ),
    ] {
        let e = check(entry.clone()).unwrap_err();
        assert!(e.to_string().contains(why), "{entry}: {e}");
    }
}

#[tokio::test]
async fn an_https_webhook_is_delivered_when_its_ca_is_trusted_and_not_otherwise() {
    let ca = TestCa::new();
    let cert = ca.cert.to_str().unwrap();
    let key = ca.key.to_str().unwrap();
    let server = WebhookServer::start(SECRET, &["--cert", cert, "--key", key]);
    let url = format!("https://127.0.0.1:{}/tls", server.port);
    for (trusted, want) in [(true, JobState::Succeeded), (false, JobState::Dead)] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("queue.db")).unwrap();
        store
            .enqueue(&NewJob::new("q", "ok").notify(list(json!([
                {"on": "succeeded", "webhook": url, "max_attempts": 1}
            ]))))
            .unwrap();
        let mut c = config(server.port, Some(SECRET));
        c.ca_file = trusted.then(|| ca.ca.clone());
        let notes = run_until_notified(&store, worker(&store, c, None)).await;
        assert_eq!(
            notes[0].state, want,
            "trusted {trusted}: {:?}",
            notes[0].last_error
        );
        if !trusted {
            let e = notes[0].last_error.clone().unwrap();
            assert!(
                e.contains("TLS") && e.to_lowercase().contains("certificate"),
                "{e}"
            );
        }
    }
    let got = server.received();
    assert_eq!(got.len(), 1, "only the trusted try got through");
    assert_eq!(got[0]["valid"], true);
}
