//! Dead-job alerts: a burst of deaths is one summary mail, the next within
//! the window waits for it, unwatched queues are not reported; the mail
//! goes out through a real SMTP server (aiosmtpd).  Time is the store's
//! manual clock.

mod support;

use std::sync::Arc;
use std::time::Duration;

use jobd::store::{JobState, NewJob};
use jobd::worker::Worker;
use jobd::{ManualClock, Store, StoreOptions};
use jobd_handlers::alerts::{self, AlertConfig, AlertReport};
use jobd_handlers::email::{self, Mailer, SmtpConfig};
use jobd_handlers::DataDir;
use jobd_testkit::smtp::{python, SmtpServer};
use serde_json::json;

const T0: i64 = 1_800_000_000_000;

fn kill(store: &Store, queue: &str, n: usize) {
    for i in 0..n {
        store
            .enqueue(&NewJob::new(queue, "k").max_attempts(1))
            .unwrap();
        let job = store
            .claim("w", &[queue], 1, Duration::from_secs(30))
            .unwrap()
            .remove(0);
        store
            .fail(job.id, job.lease_token, &format!("boom <{i}>"), true)
            .unwrap();
    }
}

#[tokio::test]
async fn a_burst_of_deaths_is_one_mail_and_the_next_waits_for_the_window() {
    burst_then_window(false).await
}

/// The same on PostgreSQL: the mark in the store's state there too.
#[tokio::test]
async fn a_burst_of_deaths_is_one_mail_on_postgres_too() {
    if jobd_testkit::pg::cluster().is_some() {
        burst_then_window(true).await
    }
}

async fn burst_then_window(pg: bool) {
    let Some(py) = python() else { return };
    let smtp = SmtpServer::start(&py, &[]);
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path().join("data"));
    std::fs::create_dir_all(data.root()).unwrap();
    let clock = ManualClock::new(T0);
    let opts = StoreOptions::default().clock(clock.clone());
    let store = if pg {
        Store::connect(&jobd_testkit::pg::database().unwrap(), opts).unwrap()
    } else {
        Store::open_with(dir.path().join("queue.db"), opts).unwrap()
    };
    let mailer =
        Arc::new(Mailer::new(&SmtpConfig::loopback(smtp.port, "jobd@example.com"), data).unwrap());
    let config: AlertConfig = serde_json::from_value(json!({
        "to": ["admin@example.com", "oncall@example.com"],
        "queues": ["email", "pdf"],
        "window": "15m",
    }))
    .unwrap();
    config.check(Some(&mailer)).unwrap();

    assert_eq!(
        alerts::scan(&store, &config, &mailer).unwrap(),
        AlertReport::default()
    );
    // (Before any mail job sits on the `email` queue for `kill` to claim.)
    kill(&store, "email", 25);
    kill(&store, "pdf", 5);
    kill(&store, "batch", 7); // not watched
    clock.advance(Duration::from_secs(60));
    let first = alerts::scan(&store, &config, &mailer).unwrap();
    assert_eq!((first.dead, first.held_until), (30, None));
    let mail = store.get(first.email_job.unwrap()).unwrap();
    assert_eq!(
        (mail.queue.as_str(), mail.kind.as_str()),
        ("email", "send_email")
    );
    assert_eq!(mail.payload["data"]["count"], 30);
    assert_eq!(mail.payload["data"]["more"], 10);
    assert_eq!(
        mail.payload["data"]["queues"],
        json!([{"queue": "email", "count": 25}, {"queue": "pdf", "count": 5}])
    );
    // Nothing new: nothing sent.
    let again = alerts::scan(&store, &config, &mailer).unwrap();
    assert_eq!(again, AlertReport::default());

    // Within the window: held, nothing enqueued, nothing lost.
    kill(&store, "pdf", 3);
    clock.advance(Duration::from_secs(5 * 60));
    let held = alerts::scan(&store, &config, &mailer).unwrap();
    assert_eq!((held.dead, held.email_job), (3, None));
    assert_eq!(held.held_until, Some(T0 + 60_000 + 15 * 60_000));
    kill(&store, "pdf", 1);
    clock.set(T0 + 60_000 + 15 * 60_000);
    let second = alerts::scan(&store, &config, &mailer).unwrap();
    assert_eq!(second.dead, 4);
    let second_mail = store.get(second.email_job.unwrap()).unwrap();
    assert_eq!(second_mail.payload["data"]["count"], 4);

    // The two mails, delivered by the e-mail handler.
    let ids = [mail.id, second_mail.id];
    let builder = email::register(Worker::builder(store.clone()), mailer.clone()).queue("email", 2);
    support::run_until_finished(builder, &store, &ids).await;
    for id in ids {
        assert_eq!(store.get(id).unwrap().state, JobState::Succeeded);
    }
    let got = smtp.wait_for(2, Duration::from_secs(5));
    assert_eq!(got.len(), 2, "two mails for 34 deaths");
    let (envelope, raw) = got
        .iter()
        .find(|(_, raw)| raw.contains("Subject: 30 jobs"))
        .expect("the first summary");
    assert_eq!(
        envelope["to"],
        json!(["admin@example.com", "oncall@example.com"])
    );
    assert!(raw.contains("Subject: 30 jobs ended dead"), "{raw}");
    assert!(
        raw.contains("boom &lt;0&gt;"),
        "the HTML part, escaped: {raw}"
    );
    assert!(raw.contains("and 10 more"), "{raw}");
    assert!(got
        .iter()
        .any(|(_, raw)| raw.contains("Subject: 4 jobs ended dead")));
}

#[test]
fn a_configuration_that_cannot_send_is_refused() {
    let bad = |v: serde_json::Value| serde_json::from_value::<AlertConfig>(v).unwrap();
    let e = bad(json!({"to": ["a@example.com"]}))
        .check(None)
        .unwrap_err();
    assert!(e.contains("needs [email]"), "{e}");
    let e = bad(json!({"to": []})).check(None).unwrap_err();
    assert!(e.contains("to is empty"), "{e}");
    let e = bad(json!({"to": ["a@example.com"], "window": "soon"}))
        .check(None)
        .unwrap_err();
    assert!(e.contains("window"), "{e}");
    assert!(serde_json::from_value::<AlertConfig>(json!({"to": [], "cc": []})).is_err());
}
