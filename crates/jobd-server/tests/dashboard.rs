//! The operations console in a real headless Chromium (Debian's `chromium`
//! and `chromium-driver`; `.ci/run` installs them): every view by its URL
//! and after a reload, under a path prefix; a chart holding the jobs the
//! test ran; the job page (tries, progress history, a `<script>` payload
//! shown as text); delete, retry, bulk actions, schedule pause, run-now and
//! edit changing the file; paging and server-side filters; and a read-only
//! token in dark mode on a 390 px phone.

use std::time::{Duration, Instant};

use fantoccini::Locator;
use jobd::scheduler::{NewSchedule, When};
use jobd::store::{JobState, Progress, Role};
use jobd::{NewJob, Store};
use jobd_server::{at_base_path, router, ApiState};
use jobd_testkit::browser::Browser;
use serde_json::json;
use sha2::{Digest, Sha256};

const TOKEN: &str = "dashboard-test-token-0123456789abcdef";

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
    accept_confirm(c, asks).await;
    wait_text(c, "#jobs-bulk", says).await;
}

async fn disabled(c: &fantoccini::Client, css: &str) -> bool {
    let e = c.find(Locator::Css(css)).await.unwrap();
    e.prop("disabled").await.unwrap().as_deref() == Some("true")
}

/// Serve `store`'s console and API under `base` in this process; its URL.
async fn serve(store: &Store, base: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = ApiState::new(store.clone(), TOKEN)
        .unwrap()
        .with_scheduler(true);
    let app = at_base_path(router(state), base).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}{base}")
}

async fn log_in(c: &fantoccini::Client, token: &str) {
    let input = c.find(Locator::Css("#token")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(token).await.unwrap();
    click(c, "#save-token").await;
}

/// Wait until `view` is the one shown, and the only one.
async fn wait_view(c: &fantoccini::Client, view: &str) {
    let t0 = Instant::now();
    loop {
        let shown = c
            .execute(
                "const v = document.getElementById('view-' + arguments[0]); \
                 const shown = [...document.querySelectorAll('.view, #login')] \
                   .filter(e => e.getClientRects().length > 0); \
                 return shown.length === 1 && shown[0] === v;",
                vec![json!(view)],
            )
            .await
            .unwrap();
        if shown == json!(true) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "view {view} was not shown"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn eval(c: &fantoccini::Client, script: &str) -> serde_json::Value {
    c.execute(script, vec![]).await.unwrap()
}

/// Accept the `confirm()` a click raised, checking it asks `asks`.
async fn accept_confirm(c: &fantoccini::Client, asks: &str) {
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
}

/// Poll `cond` on the file until it holds.
async fn until_file(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(20), "waited for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_headless_chromium() {
    let Some(browser) = Browser::start(&["--window-size=1280,900"]).await else {
        return;
    };
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
            NewJob::new("bulk", "send_email")
                .tenant(tenant)
                .payload(&json!({ "n": i }))
        })
        .collect();
    let bulk = store.enqueue_many(&bulk).unwrap();
    let evil = "<script>window.pwned=1</script><img src=x onerror=\"window.pwned=2\">";
    // Seven e-mail jobs succeed (one with a progress history), one dies.
    let ok: Vec<i64> = (0..7)
        .map(|_| store.enqueue(&NewJob::new("email", "send_email")).unwrap())
        .collect();
    let dead = store
        .enqueue(
            &NewJob::new("email", "send_email")
                .payload(&json!({ "html": evil }))
                .max_attempts(1),
        )
        .unwrap();
    store
        .register_worker("host-a:11:w", "host-a", 11, &["email"], &["send_email"])
        .unwrap();
    for job in store
        .claim("host-a:11:w", &["email"], 10, Duration::from_secs(60))
        .unwrap()
    {
        if job.id == dead {
            store
                .fail(job.id, job.lease_token, "<b>smtp said no</b>", false)
                .unwrap();
            continue;
        }
        if job.id == ok[0] {
            for (pct, stage) in [(20.0, "connect"), (70.0, "send")] {
                let p = Progress {
                    percent: Some(pct),
                    stage: Some(stage.into()),
                    detail: None,
                };
                store.set_progress(job.id, job.lease_token, &p).unwrap();
            }
        }
        store.complete(job.id, job.lease_token, None).unwrap();
    }
    assert_eq!(store.get(dead).unwrap().state, JobState::Dead);
    // One running, on a remote worker.
    let running = store.enqueue(&NewJob::new("reports", "build")).unwrap();
    store
        .register_worker("ci/r:0:x", "remote", 0, &["reports"], &["*"])
        .unwrap();
    store
        .claim("ci/r:0:x", &["reports"], 1, Duration::from_secs(60))
        .unwrap();
    let schedule = NewSchedule::new(
        "nightly",
        When::Cron("0 3 * * *".into()),
        NewJob::new("email", "send_email"),
    );
    store.add_schedule(&schedule).unwrap();

    let base = serve(&store, "/ops/jobd").await;
    let c = &browser.client;
    let outcome = async {
        // Under the prefix, without its slash: sent to the console.
        c.goto(&base).await.unwrap();
        wait_text(c, "#login h2", "API token").await;
        assert!(c
            .current_url()
            .await
            .unwrap()
            .as_str()
            .ends_with("/ops/jobd/"));
        log_in(c, "not-the-token-at-all-0123456789abcdef").await;
        wait_text(c, "#login-error", "not accepted").await;
        log_in(c, TOKEN).await;
        wait_view(c, "overview").await;
        wait_text(c, "#whoami", "admin").await;

        // The chart holds the jobs this test ran: 7 succeeded, 1 dead.
        let t0 = Instant::now();
        loop {
            let sums = eval(
                c,
                "const s = {succeeded: 0, failed: 0, dead: 0}; \
                 for (const g of document.querySelectorAll('#chart-minutes g.step')) \
                   for (const k in s) s[k] += Number(g.dataset[k]); return s;",
            )
            .await;
            if sums == json!({"succeeded": 7, "failed": 1, "dead": 1}) {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "chart: {sums}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let steps = eval(
            c,
            "return document.querySelectorAll('#chart-minutes g.step').length",
        )
        .await;
        assert_eq!(steps, json!(60));
        let day = eval(
            c,
            "let n = 0; for (const g of document.querySelectorAll('#chart-hours g.step')) \
               n += Number(g.dataset.succeeded); return n;",
        )
        .await;
        assert_eq!(day, json!(7));
        wait_text(c, "#timing tr[data-queue='email']", "email").await;
        wait_text(c, "#health [data-health='queue file']", "KiB").await;
        wait_text(c, "#health [data-health='scheduler']", "running").await;

        // Every view by its URL, and again after a reload.
        let views = [
            ("overview", "?view=overview"),
            ("queues", "?view=queues"),
            ("jobs", "?view=jobs&state=dead"),
            ("job", &*format!("?view=job&id={dead}")),
            ("workers", "?view=workers"),
            ("schedules", "?view=schedules"),
            ("schedule", "?view=schedule&name=nightly"),
        ];
        for (view, query) in views {
            c.goto(&format!("{base}/{query}")).await.unwrap();
            wait_view(c, view).await;
            c.refresh().await.unwrap();
            wait_view(c, view).await;
        }
        // The jobs view came back with its filter from the URL.
        c.goto(&format!("{base}/?view=jobs&state=dead"))
            .await
            .unwrap();
        wait_view(c, "jobs").await;
        wait_text(c, "#jobs-page", &format!("jobs #{dead} to #{dead}")).await;
        let state = c.find(Locator::Css("#filter-state")).await.unwrap();
        assert_eq!(state.prop("value").await.unwrap().as_deref(), Some("dead"));

        // Navigation by the links keeps the URL in step.
        click(c, "#nav a[data-view='queues']").await;
        wait_view(c, "queues").await;
        assert!(c
            .current_url()
            .await
            .unwrap()
            .as_str()
            .ends_with("?view=queues"));
        wait_text(
            c,
            "#queues tr[data-queue='email'] td[data-count='dead']",
            "1",
        )
        .await;
        wait_text(
            c,
            "#queues tr[data-queue='email'] td[data-count='succeeded']",
            "7",
        )
        .await;
        c.back().await.unwrap();
        wait_view(c, "jobs").await;

        // Keyboard: every control shown is focusable, and a link opens
        // its view from the keyboard.
        let unreachable = eval(
            c,
            "return [...document.querySelectorAll('button, a, input, select, textarea')]\
               .filter(e => e.getClientRects().length > 0 && e.tabIndex < 0).length",
        )
        .await;
        assert_eq!(unreachable, json!(0));
        let link = c
            .find(Locator::Css("#nav a[data-view='workers']"))
            .await
            .unwrap();
        link.send_keys("\u{E007}").await.unwrap(); // Enter
        wait_view(c, "workers").await;

        // Workers: in-process and remote, with what they run now.
        c.goto(&format!("{base}/?view=workers")).await.unwrap();
        wait_view(c, "workers").await;
        wait_text(c, "#workers tr[data-worker='ci/r:0:x']", "remote").await;
        wait_text(
            c,
            "#workers tr[data-worker='ci/r:0:x'] td[data-running]",
            "1",
        )
        .await;
        wait_text(c, "#workers tr[data-worker='host-a:11:w']", "send_email").await;

        // A running job shows its worker and elapsed time.
        c.goto(&format!("{base}/?view=jobs&state=running"))
            .await
            .unwrap();
        wait_text(c, &format!("#jobs tr[data-job='{running}']"), "ci/r:0:x · ").await;

        // The job page: tries, progress history, payload as text.
        c.goto(&format!("{base}/?view=job&id={}", ok[0]))
            .await
            .unwrap();
        wait_text(c, "#job-progress-log tbody", "connect").await;
        wait_text(c, "#job-progress-log tbody", "send").await;
        wait_text(c, "#job-worker", "host-a:11:w").await;
        c.goto(&format!("{base}/?view=job&id={dead}"))
            .await
            .unwrap();
        wait_text(c, "#job-state", "dead").await;
        wait_text(c, "#job-payload", "<script>window.pwned=1</script>").await;
        wait_text(c, "#job-error", "<b>smtp said no</b>").await;
        wait_text(c, "#job-attempts tbody", "failed").await;
        let pwned = eval(c, "return window.pwned === undefined").await;
        assert_eq!(pwned, json!(true), "a payload's script ran");

        // Retry from the page: ready again in the file.
        click(c, "#job-retry").await;
        wait_text(c, "#job-state", "ready").await;
        assert_eq!(store.get(dead).unwrap().state, JobState::Ready);

        // Delete from the page, after a confirm: gone from the file.
        c.goto(&format!("{base}/?view=job&id={}", ok[1]))
            .await
            .unwrap();
        wait_text(c, "#job-state", "succeeded").await;
        click(c, "#job-delete").await;
        accept_confirm(c, &format!("Delete job #{}", ok[1])).await;
        wait_view(c, "jobs").await;
        until_file("the job deleted", || {
            matches!(store.get(ok[1]), Err(jobd::Error::NotFound { .. }))
        })
        .await;
        // A running job cannot be deleted from the page.
        c.goto(&format!("{base}/?view=job&id={running}"))
            .await
            .unwrap();
        wait_text(c, "#job-state", "running").await;
        assert!(disabled(c, "#job-delete").await);

        // Schedules: pause, run now, edit — each changes the file.
        c.goto(&format!("{base}/?view=schedules")).await.unwrap();
        wait_text(c, "#schedules tr[data-schedule='nightly']", "0 3 * * *").await;
        let pause = "#schedules tr[data-schedule='nightly'] td.admin button";
        click(c, pause).await;
        until_file("paused", || !store.schedule("nightly").unwrap().enabled).await;
        wait_text(
            c,
            "#schedules tr[data-schedule='nightly'] td[data-enabled]",
            "paused",
        )
        .await;
        c.goto(&format!("{base}/?view=schedule&name=nightly"))
            .await
            .unwrap();
        wait_text(c, "#schedule-toggle", "Resume").await;
        click(c, "#schedule-toggle").await;
        until_file("resumed", || store.schedule("nightly").unwrap().enabled).await;
        wait_text(c, "#schedule-enabled", "enabled").await;
        let next = c.find_all(Locator::Css("#schedule-next li")).await.unwrap();
        assert_eq!(next.len(), 5, "the next five fires");
        let before = store.stats().unwrap().queue("email").map_or(0, |q| q.ready);
        click(c, "#schedule-run").await;
        until_file("run now", || {
            store.stats().unwrap().queue("email").map_or(0, |q| q.ready) == before + 1
        })
        .await;
        wait_text(c, "#status", "schedule nightly: job #").await;
        c.execute(
            "const t = document.getElementById('schedule-edit'); \
             const spec = JSON.parse(t.value); spec.cron = '30 4 * * 1'; \
             t.value = JSON.stringify(spec);",
            vec![],
        )
        .await
        .unwrap();
        click(c, "#schedule-save").await;
        wait_text(c, "#schedule-saved", "saved").await;
        until_file("edited", || {
            store.schedule("nightly").unwrap().when == When::Cron("30 4 * * 1".into())
        })
        .await;

        // The list pages through every job, 100 at a time, newest first.
        c.goto(&format!("{base}/?view=jobs")).await.unwrap();
        // Every job, newest first (the run-now job the newest; a deleted
        // one missing).
        let all: Vec<i64> = store
            .list(&jobd::store::ListFilter {
                limit: Some(10_000),
                ..Default::default()
            })
            .unwrap()
            .iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(all[0], running + 1);
        wait_text(
            c,
            "#jobs-page",
            &format!("page 1 · jobs #{} to #{}", all[0], all[99]),
        )
        .await;
        assert_eq!(rows(c).await, 100);
        click(c, "#jobs-older").await;
        wait_text(
            c,
            "#jobs-page",
            &format!("page 2 · jobs #{} to #{}", all[100], all[199]),
        )
        .await;
        // A reload keeps the page.
        c.refresh().await.unwrap();
        wait_text(
            c,
            "#jobs-page",
            &format!("page 2 · jobs #{} to #{}", all[100], all[199]),
        )
        .await;
        click(c, "#jobs-older").await;
        wait_text(
            c,
            "#jobs-page",
            &format!("page 3 · jobs #{} to #{}", all[200], bulk[0]),
        )
        .await;
        assert!(disabled(c, "#jobs-older").await, "no page after the last");
        click(c, "#jobs-newer").await;
        wait_text(c, "#jobs-page", "page 2 · ").await;

        // Filters are the server's, over every job: a tenant, an error's
        // text in another case, a payload value.
        type_into(c, "#filter-tenant", "acme-old").await;
        wait_text(
            c,
            "#jobs-page",
            &format!("page 1 · jobs #{} to #{}", bulk[4], bulk[0]),
        )
        .await;
        assert_eq!(rows(c).await, 5);
        assert!(c
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains("tenant=acme-old"));
        set_value(c, "filter-tenant", "").await;
        type_into(c, "#filter-payload", "n=17").await;
        wait_text(
            c,
            "#jobs-page",
            &format!("page 1 · jobs #{} to #{}", bulk[17], bulk[17]),
        )
        .await;
        set_value(c, "filter-payload", "").await;
        type_into(c, "#filter-error", "SMTP SAID").await;
        wait_text(
            c,
            "#jobs-page",
            &format!("page 1 · jobs #{dead} to #{dead}"),
        )
        .await;
        type_into(c, "#filter-error", " yes").await;
        wait_text(c, "#jobs-page", "no job matches").await;
        set_value(c, "filter-error", "").await;

        // Any job by its number; one that does not exist is an error.
        type_into(c, "#goto-job", &format!("{}\n", bulk[7])).await;
        wait_text(c, "#job-id", &format!("#{}", bulk[7])).await;
        wait_text(c, "#job-tenant", "t-7").await;
        c.goto(&format!("{base}/?view=job&id=999999"))
            .await
            .unwrap();
        wait_text(c, "#status", "job 999999 not found").await;

        // Bulk actions act on every job the filters match, after a confirm.
        c.goto(&format!("{base}/?view=jobs&tenant=acme-old"))
            .await
            .unwrap();
        wait_text(
            c,
            "#jobs-page",
            &format!("jobs #{} to #{}", bulk[4], bulk[0]),
        )
        .await;
        assert!(
            disabled(c, "#jobs-retry-all").await,
            "no retry of waiting jobs"
        );
        bulk_action(
            c,
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
        set_value(c, "filter-state", "cancelled").await;
        wait_text(
            c,
            "#jobs-page",
            &format!("jobs #{} to #{}", bulk[4], bulk[0]),
        )
        .await;
        // The list is read again with the state (after the filters' pause).
        let t0 = Instant::now();
        while !disabled(c, "#jobs-cancel-all").await {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no cancel of cancelled jobs"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bulk_action(
            c,
            "#jobs-retry-all",
            "Retry 5 jobs (cancelled with tenant \"acme-old\")",
            "5 retried",
        )
        .await;
        for id in &bulk[..5] {
            assert_eq!(store.get(*id).unwrap().state, JobState::Ready);
        }
    };
    let result = tokio::time::timeout(Duration::from_secs(120), outcome).await;
    browser.close().await;
    result.expect("the console test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_in_dark_mode_on_a_phone() {
    let Some(browser) = Browser::phone(&["--force-dark-mode"], 390, 844).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let viewer = "viewer-token-0123456789abcdef0123456789";
    let hash: [u8; 32] = Sha256::digest(viewer.as_bytes()).into();
    store
        .add_api_token("viewer", Role::Producer, &hash)
        .unwrap();
    let long = "a-queue-with-a-rather-long-name-for-a-small-screen";
    let id = store
        .enqueue(
            &NewJob::new(long, "render_a_report_with_a_long_kind_name")
                .tenant("tenant-with-a-long-name-too")
                .payload(&json!({ "text": "x".repeat(400) })),
        )
        .unwrap();
    let done = store
        .claim("w", &[long], 1, Duration::from_secs(60))
        .unwrap();
    store
        .fail(
            done[0].id,
            done[0].lease_token,
            &"a long error ".repeat(30),
            false,
        )
        .unwrap();
    store
        .add_schedule(&NewSchedule::new(
            "hourly",
            When::Cron("0 * * * *".into()),
            NewJob::new(long, "render_a_report_with_a_long_kind_name"),
        ))
        .unwrap();
    let base = serve(&store, "").await;
    let c = &browser.client;
    let outcome = async {
        c.goto(&format!("{base}/")).await.unwrap();
        log_in(c, viewer).await;
        wait_view(c, "overview").await;
        wait_text(c, "#whoami", "read-only").await;
        // Dark: the page follows prefers-color-scheme.
        let dark = eval(
            c,
            "return matchMedia('(prefers-color-scheme: dark)').matches",
        )
        .await;
        assert_eq!(dark, json!(true), "the browser prefers dark");
        let bg = eval(c, "return getComputedStyle(document.body).backgroundColor").await;
        assert_eq!(bg, json!("rgb(15, 20, 28)"), "a dark page");
        let width = eval(c, "return window.innerWidth").await;
        assert!(
            width.as_i64().unwrap() <= 400,
            "a phone's viewport: {width}"
        );
        for query in [
            "?view=overview".to_string(),
            "?view=queues".to_string(),
            "?view=jobs".to_string(),
            format!("?view=job&id={id}"),
            "?view=workers".to_string(),
            "?view=schedules".to_string(),
            "?view=schedule&name=hourly".to_string(),
        ] {
            c.goto(&format!("{base}/{query}")).await.unwrap();
            let view = query
                .trim_start_matches("?view=")
                .split('&')
                .next()
                .unwrap();
            wait_view(c, view).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            // No page-level horizontal scroll: wide tables scroll in their box.
            let fits = eval(
                c,
                "return document.documentElement.scrollWidth <= window.innerWidth",
            )
            .await;
            assert_eq!(fits, json!(true), "{query} is wider than the phone");
            // No action for a token without the admin role.
            let actions = eval(
                c,
                "return [...document.querySelectorAll('.admin, .admin *')]\
                   .filter(e => e.getClientRects().length > 0).length",
            )
            .await;
            assert_eq!(actions, json!(0), "{query} shows admin actions");
        }
        // And its POSTs are refused by the server, whatever the page shows.
        let status = c
            .execute_async(
                "const done = arguments[arguments.length - 1]; \
                 fetch('api/v1/queues/' + encodeURIComponent(arguments[0]) + '/pause', \
                   {method: 'POST', headers: {Authorization: 'Bearer ' + arguments[1]}}) \
                 .then(r => done(r.status));",
                vec![json!(long), json!(viewer)],
            )
            .await
            .unwrap();
        assert_eq!(status, json!(403));
        let status = c
            .execute_async(
                "const done = arguments[arguments.length - 1]; \
                 fetch('api/v1/jobs/' + arguments[0], \
                   {method: 'DELETE', headers: {Authorization: 'Bearer ' + arguments[1]}}) \
                 .then(r => done(r.status));",
                vec![json!(id), json!(viewer)],
            )
            .await
            .unwrap();
        assert_eq!(status, json!(403));
        assert!(!store.stats().unwrap().queue(long).unwrap().paused);
        assert_eq!(store.get(id).unwrap().state, JobState::Dead);
    };
    let result = tokio::time::timeout(Duration::from_secs(90), outcome).await;
    browser.close().await;
    result.expect("the read-only test timed out");
}
