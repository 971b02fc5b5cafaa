//! The web dashboard in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`; `.ci/run` installs them): token, queue counts, a job
//! page, retry of a dead job, and a `<script>` payload shown as text.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use jobd::store::JobState;
use jobd::{NewJob, Store};
use jobd_server::{router, ApiState};
use serde_json::json;

const TOKEN: &str = "dashboard-test-token-0123456789abcdef";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn text_of(c: &fantoccini::Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn wait_text(c: &fantoccini::Client, css: &str, want: &str) {
    let t0 = Instant::now();
    loop {
        let got = text_of(c, css).await;
        if got.contains(want) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{css}: waited for {want:?}, have {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(c: &fantoccini::Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Type as a user does (an `input` event per key).
async fn type_into(c: &fantoccini::Client, css: &str, text: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap();
    e.send_keys(text).await.unwrap();
}

/// Set an input's value, with the `input` event a user's edit fires.
async fn set_value(c: &fantoccini::Client, id: &str, value: &str) {
    c.execute(
        "const e = document.getElementById(arguments[0]); e.value = arguments[1]; \
         e.dispatchEvent(new Event('input'));",
        vec![json!(id), json!(value)],
    )
    .await
    .unwrap();
}

async fn rows(c: &fantoccini::Client) -> usize {
    c.find_all(Locator::Css("#jobs tbody tr"))
        .await
        .unwrap()
        .len()
}

/// Click a bulk action's button, check that its `confirm()` asks `asks`
/// (how many jobs it would touch), accept it, and wait for the page to say
/// what was done.
async fn bulk_action(c: &fantoccini::Client, button: &str, asks: &str, says: &str) {
    click(c, button).await;
    let t0 = Instant::now();
    let question = loop {
        match c.get_alert_text().await {
            Ok(text) => break text,
            Err(e) => assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no confirm dialog: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(question.contains(asks), "confirm asked: {question}");
    c.accept_alert().await.unwrap();
    wait_text(c, "#jobs-bulk", says).await;
}

async fn disabled(c: &fantoccini::Client, css: &str) -> bool {
    let e = c.find(Locator::Css(css)).await.unwrap();
    e.prop("disabled").await.unwrap().as_deref() == Some("true")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_headless_chromium() {
    if !std::path::Path::new(CHROMEDRIVER).exists() || !std::path::Path::new(CHROMIUM).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium and chromium-driver"
        );
        eprintln!(
            "SKIPPED: no {CHROMIUM} / {CHROMEDRIVER} (apt-get install chromium chromium-driver)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    // More jobs than a page: the oldest five for a tenant of their own.
    let bulk: Vec<NewJob> = (0..230)
        .map(|i| {
            let tenant = if i < 5 {
                "acme-old".to_string()
            } else {
                format!("t-{i}")
            };
            NewJob::new("bulk", "send_email").tenant(tenant)
        })
        .collect();
    let bulk = store.enqueue_many(&bulk).unwrap();
    let evil = "<script>window.pwned=1</script><img src=x onerror=\"window.pwned=2\">";
    store.enqueue(&NewJob::new("email", "send_email")).unwrap();
    let dead = store
        .enqueue(
            &NewJob::new("email", "send_email")
                .payload(&json!({ "html": evil }))
                .max_attempts(1),
        )
        .unwrap();
    for job in store
        .claim("w", &["email"], 10, Duration::from_secs(60))
        .unwrap()
    {
        if job.id == dead {
            store
                .fail(job.id, job.lease_token, "<b>smtp said no</b>", false)
                .unwrap();
        } else {
            store.complete(job.id, job.lease_token, None).unwrap();
        }
    }
    assert_eq!(store.get(dead).unwrap().state, JobState::Dead);

    // The daemon's HTTP side, in this process.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(ApiState::new(store.clone(), TOKEN).unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let port = free_port();
    let mut driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let t0 = Instant::now();
    let c = loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                assert!(t0.elapsed() < Duration::from_secs(20), "chromedriver: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };

    let outcome = async {
        c.goto(&format!("http://{addr}/")).await.unwrap();
        // A wrong token is refused.
        let input = c.find(Locator::Css("#token")).await.unwrap();
        input.send_keys("not-the-token").await.unwrap();
        c.find(Locator::Css("#save-token"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_text(&c, "#login-error", "not accepted").await;
        // The right one opens the dashboard.
        input.clear().await.unwrap();
        input.send_keys(TOKEN).await.unwrap();
        c.find(Locator::Css("#save-token"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_text(
            &c,
            "#queues tr[data-queue='email'] td[data-count='dead']",
            "1",
        )
        .await;
        wait_text(
            &c,
            "#queues tr[data-queue='email'] td[data-count='succeeded']",
            "1",
        )
        .await;

        // Open the dead job.
        let link = format!("#jobs tr[data-job='{dead}'] a");
        c.wait().for_element(Locator::Css(&link)).await.unwrap();
        c.find(Locator::Css(&link))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_text(&c, "#job-state", "dead").await;
        // The payload and the error are shown as text, and nothing ran.
        wait_text(&c, "#job-payload", "<script>window.pwned=1</script>").await;
        wait_text(&c, "#job-error", "<b>smtp said no</b>").await;
        let pwned = c
            .execute("return window.pwned === undefined", vec![])
            .await
            .unwrap();
        assert_eq!(pwned, json!(true), "a payload's script ran");

        // Retry: the job goes back to ready, on the page and in the file.
        c.find(Locator::Css("#job-retry"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_text(&c, "#job-state", "ready").await;
        assert_eq!(store.get(dead).unwrap().state, JobState::Ready);
        wait_text(
            &c,
            "#queues tr[data-queue='email'] td[data-count='ready']",
            "1",
        )
        .await;

        // The list pages through every job, 100 at a time, newest first.
        let newest = dead;
        wait_text(
            &c,
            "#jobs-page",
            &format!("page 1 · jobs #{newest} to #{}", newest - 99),
        )
        .await;
        assert_eq!(rows(&c).await, 100);
        click(&c, "#jobs-older").await;
        wait_text(
            &c,
            "#jobs-page",
            &format!("page 2 · jobs #{} to #{}", newest - 100, newest - 199),
        )
        .await;
        click(&c, "#jobs-older").await;
        wait_text(
            &c,
            "#jobs-page",
            &format!("page 3 · jobs #{} to #{}", newest - 200, bulk[0]),
        )
        .await;
        assert_eq!(rows(&c).await, (newest - 199 - bulk[0]) as usize);
        assert!(disabled(&c, "#jobs-older").await, "no page after the last");
        click(&c, "#jobs-newer").await;
        wait_text(&c, "#jobs-page", "page 2 · ").await;

        // Filters are the server's, over every job, not just a page: the
        // oldest tenant's jobs, an error's text in another case.
        type_into(&c, "#filter-tenant", "acme-old").await;
        wait_text(
            &c,
            "#jobs-page",
            &format!("page 1 · jobs #{} to #{}", bulk[4], bulk[0]),
        )
        .await;
        assert_eq!(rows(&c).await, 5);
        set_value(&c, "filter-tenant", "").await;
        type_into(&c, "#filter-error", "SMTP SAID").await;
        wait_text(
            &c,
            "#jobs-page",
            &format!("page 1 · jobs #{dead} to #{dead}"),
        )
        .await;
        type_into(&c, "#filter-error", " yes").await;
        wait_text(&c, "#jobs-page", "no job matches").await;
        set_value(&c, "filter-error", "").await;

        // Any job by its number; one that does not exist is an error.
        type_into(&c, "#goto-job", &format!("{}\n", bulk[7])).await;
        wait_text(&c, "#job-id", &format!("#{}", bulk[7])).await;
        wait_text(&c, "#job-tenant", "t-7").await;
        set_value(&c, "goto-job", "999999").await;
        click(&c, "#goto-open").await;
        wait_text(&c, "#status", "job 999999 not found").await;

        // Bulk actions act on every job the filters match, after a confirm.
        type_into(&c, "#filter-tenant", "acme-old").await;
        wait_text(
            &c,
            "#jobs-page",
            &format!("jobs #{} to #{}", bulk[4], bulk[0]),
        )
        .await;
        assert!(
            disabled(&c, "#jobs-retry-all").await,
            "no retry of waiting jobs"
        );
        bulk_action(
            &c,
            "#jobs-cancel-all",
            "Cancel 5 jobs waiting (unfinished with tenant \"acme-old\")",
            "5 cancelled, 0 running asked to stop",
        )
        .await;
        for id in &bulk[..5] {
            assert_eq!(store.get(*id).unwrap().state, JobState::Cancelled);
        }
        assert_eq!(
            store.get(bulk[5]).unwrap().state,
            JobState::Ready,
            "another tenant's job"
        );
        set_value(&c, "filter-state", "cancelled").await;
        wait_text(
            &c,
            "#jobs-page",
            &format!("jobs #{} to #{}", bulk[4], bulk[0]),
        )
        .await;
        assert!(
            disabled(&c, "#jobs-cancel-all").await,
            "no cancel of cancelled jobs"
        );
        bulk_action(
            &c,
            "#jobs-retry-all",
            "Retry 5 jobs (cancelled with tenant \"acme-old\")",
            "5 retried",
        )
        .await;

        for id in &bulk[..5] {
            assert_eq!(store.get(*id).unwrap().state, JobState::Ready);
        }
    };
    // Close the browser whatever happened, then report.
    let result = tokio::time::timeout(Duration::from_secs(90), outcome).await;
    let _ = c.close().await;
    let _ = driver.kill();
    let _ = driver.wait();
    result.expect("the dashboard test timed out");
}
