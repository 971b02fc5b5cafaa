//! The console's screenshots in `docs/`: an hour of simulated work on a
//! queue file of its own, served in this process and shot in headless
//! Chromium (light at 1280 px, dark, and a 390 px phone).
//!
//! ```sh
//! cargo run -p jobd-server --example screenshots -- docs
//! ```

use std::time::Duration;

use fantoccini::Locator;
use jobd::clock::ManualClock;
use jobd::scheduler::{NewSchedule, When};
use jobd::store::{Progress, StoreOptions};
use jobd::{NewJob, Store};
use jobd_server::{router, ApiState};
use jobd_testkit::browser::Browser;
use serde_json::json;

const TOKEN: &str = "screenshots-token-0123456789abcdef0123";

/// An hour of work ending now: e-mails, PDFs and exports, a few failures,
/// some still running or waiting.
fn simulate(store: &Store, clock: &ManualClock) -> i64 {
    let lease = Duration::from_secs(600);
    let mut shown = 0;
    for minute in 0..60u64 {
        let burst = 4 + (minute * 7 % 13) as usize;
        for (queue, kind, n) in [
            ("email", "send_email", burst),
            ("pdf", "generate_qr_pdf", burst / 3),
            ("exports", "export_data", (minute % 5 == 0) as usize),
        ] {
            for i in 0..n {
                let payload =
                    json!({ "template_id": 3 + i % 4, "to": format!("user{i}@example.com") });
                let job = NewJob::new(queue, kind)
                    .tenant(format!("tenant-{:03}", (minute as usize * 3 + i) % 101))
                    .payload(&payload)
                    .max_attempts(if i % 17 == 3 { 1 } else { 3 });
                store.enqueue(&job).unwrap();
            }
            clock.advance(Duration::from_millis(300 + minute * 13 % 900));
            let worker = format!("web-1:{}:{queue}", 4100 + minute % 3);
            for (i, t) in store
                .claim(&worker, &[queue], n, lease)
                .unwrap()
                .into_iter()
                .enumerate()
            {
                clock.advance(Duration::from_millis(40 + (i as u64 * 97) % 400));
                if i % 17 == 3 {
                    store
                        .fail(t.id, t.lease_token, "550 5.1.1 mailbox unavailable", true)
                        .unwrap();
                    continue;
                }
                if queue == "pdf" {
                    for (pct, stage) in [(25.0, "render"), (80.0, "compress")] {
                        let p = Progress {
                            percent: Some(pct),
                            stage: Some(stage.into()),
                            detail: Some(format!("page {} of 4", (pct / 25.0) as i64)),
                        };
                        store.set_progress(t.id, t.lease_token, &p).unwrap();
                    }
                    shown = t.id;
                }
                store
                    .complete(t.id, t.lease_token, Some(&json!({ "pages": 4 })))
                    .unwrap();
            }
        }
        clock.advance(Duration::from_secs(55));
    }
    // Some waiting and one running now.
    for i in 0..12 {
        store
            .enqueue(
                &NewJob::new("email", "send_email")
                    .payload(&json!({ "to": format!("late{i}@example.com") })),
            )
            .unwrap();
    }
    store
        .register_worker(
            "web-1:4101:pdf",
            "web-1",
            4101,
            &["pdf", "email"],
            &["generate_qr_pdf", "send_email"],
        )
        .unwrap();
    store
        .register_worker("reports/node-7:0:a1", "node-7", 0, &["exports"], &["*"])
        .unwrap();
    store
        .enqueue(&NewJob::new("exports", "export_data"))
        .unwrap();
    store
        .claim("reports/node-7:0:a1", &["exports"], 1, lease)
        .unwrap();
    store
        .add_schedule(&NewSchedule::new(
            "nightly-backup",
            When::Cron("30 2 * * *".into()),
            NewJob::new("maintenance", "backup_tenants"),
        ))
        .unwrap();
    shown
}

async fn shoot(base: &str, flags: &[&str], pages: &[(&str, String)], dir: &std::path::Path) {
    let browser = Browser::start(flags)
        .await
        .expect("chromium and chromedriver");
    shoot_in(browser, base, pages, dir).await;
}

async fn shoot_phone(base: &str, flags: &[&str], pages: &[(&str, String)], dir: &std::path::Path) {
    let browser = Browser::phone(flags, 390, 844)
        .await
        .expect("chromium and chromedriver");
    shoot_in(browser, base, pages, dir).await;
}

async fn shoot_in(browser: Browser, base: &str, pages: &[(&str, String)], dir: &std::path::Path) {
    let c = &browser.client;
    c.goto(&format!("{base}/")).await.unwrap();
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    c.find(Locator::Css("#save-token"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    for (file, query) in pages {
        c.goto(&format!("{base}/{query}")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let png = c.screenshot().await.unwrap();
        std::fs::write(dir.join(file), png).unwrap();
        eprintln!("wrote {}", dir.join(file).display());
    }
    browser.close().await;
}

#[tokio::main]
async fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "docs".into()));
    let files = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let clock = ManualClock::new(now - 3_600_000);
    let store = Store::open_with(
        files.path().join("queue.db"),
        StoreOptions::default().clock(clock.clone()),
    )
    .unwrap();
    let job = simulate(&store, &clock);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(
        ApiState::new(store.clone(), TOKEN)
            .unwrap()
            .with_scheduler(true),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let base = format!("http://{addr}");
    shoot(
        &base,
        &["--window-size=1280,1000"],
        &[
            ("console-overview.png", "?view=overview".into()),
            ("console-job.png", format!("?view=job&id={job}")),
        ],
        &dir,
    )
    .await;
    shoot(
        &base,
        &["--window-size=1280,1000", "--force-dark-mode"],
        &[("console-dark.png", "?view=jobs".into())],
        &dir,
    )
    .await;
    shoot_phone(
        &base,
        &["--force-dark-mode"],
        &[("console-phone.png", "?view=overview".into())],
        &dir,
    )
    .await;
}
