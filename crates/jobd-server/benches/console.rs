//! The console's requests on a big queue file: a million finished jobs (a
//! day of them, a few thousand dead), a thousand waiting, some running, a
//! schedule; each request the console makes, over keep-alive HTTP/1.1 on
//! loopback, timed one at a time: p50, p99 and max per request.
//!
//! ```text
//! cargo bench -p jobd-server --bench console   # JOBD_BENCH_JOBS=1000000 JOBD_BENCH_ROUNDS=200
//! ```

use std::time::{Duration, Instant};

use jobd::clock::ManualClock;
use jobd::scheduler::{NewSchedule, When};
use jobd::store::{NewJob, StoreOptions};
use jobd::Store;
use jobd_server::{router, ApiState};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const TOKEN: &str = "bench-token-0123456789abcdef0123456789";

/// A day of work ending now: `n` jobs over three queues, finished in
/// batches the way a worker finishes them, one in 300 dead.
fn fill(store: &Store, clock: &ManualClock, n: usize) -> (i64, i64) {
    let lease = Duration::from_secs(600);
    let batch = 1000;
    let step = Duration::from_millis((86_400_000 / (n / batch).max(1)) as u64);
    let (mut dead, mut done) = (0, 0);
    for b in 0..n / batch {
        let queue = ["email", "pdf", "exports"][b % 3];
        let jobs: Vec<NewJob> = (0..batch)
            .map(|i| {
                NewJob::new(queue, "work")
                    .tenant(format!("tenant-{:03}", (b + i) % 101))
                    .payload(&serde_json::json!({ "n": b * batch + i, "to": format!("u{i}@example.com") }))
                    .max_attempts(1)
            })
            .collect();
        store.enqueue_many(&jobs).unwrap();
        clock.advance(step / 2);
        let claimed = store.claim("bench:1:w", &[queue], batch, lease).unwrap();
        clock.advance(step / 2);
        let mut ok = Vec::with_capacity(batch);
        for (i, j) in claimed.iter().enumerate() {
            if i % 300 == 7 {
                store
                    .fail(j.id, j.lease_token, "550 mailbox unavailable", false)
                    .unwrap();
                dead = j.id;
            } else {
                ok.push((j.id, j.lease_token, None));
            }
        }
        done = ok[0].0;
        store.complete_many(&ok).unwrap();
    }
    let waiting: Vec<NewJob> = (0..1000).map(|_| NewJob::new("email", "work")).collect();
    store.enqueue_many(&waiting).unwrap();
    store
        .register_worker(
            "bench:1:w",
            "bench",
            1,
            &["email", "pdf", "exports"],
            &["work"],
        )
        .unwrap();
    store.claim("bench:1:w", &["email"], 8, lease).unwrap();
    store
        .add_schedule(&NewSchedule::new(
            "nightly",
            When::Cron("30 2 * * *".into()),
            NewJob::new("email", "work"),
        ))
        .unwrap();
    (done, dead)
}

/// GET `path` on a keep-alive connection; its latency.
async fn get(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    path: &str,
) -> Duration {
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    let t = Instant::now();
    w.write_all(req.as_bytes()).await.unwrap();
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{path}: {line}");
    let mut len = 0;
    loop {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).await.unwrap();
    t.elapsed()
}

fn main() {
    let n = jobd_testkit::env_usize("JOBD_BENCH_JOBS", 1_000_000);
    let rounds = jobd_testkit::env_usize("JOBD_BENCH_ROUNDS", 200);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let clock = ManualClock::new(now - 86_400_000);
    let store = Store::open_with(
        dir.path().join("queue.db"),
        StoreOptions::default().clock(clock.clone()),
    )
    .unwrap();
    let t = Instant::now();
    let (done, dead) = fill(&store, &clock, n);
    store.checkpoint().unwrap();
    eprintln!(
        "filled {n} finished jobs in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let requests: Vec<(&str, String)> = vec![
        ("overview", "/api/v1/overview".into()),
        ("queues", "/api/v1/queues".into()),
        ("jobs, newest page", "/api/v1/jobs?limit=101".into()),
        ("jobs, dead", "/api/v1/jobs?state=dead&limit=101".into()),
        (
            "jobs, running",
            "/api/v1/jobs?state=running&limit=101".into(),
        ),
        (
            "jobs, a queue and tenant",
            "/api/v1/jobs?queue=pdf&tenant=tenant-042&limit=101".into(),
        ),
        (
            "jobs, an older page",
            format!("/api/v1/jobs?limit=101&before_id={}", n / 2),
        ),
        (
            "jobs, payload search (recent match)",
            "/api/v1/jobs?queue=email&payload=to%3Du5@example.com&limit=101".into(),
        ),
        ("a job", format!("/api/v1/jobs/{done}")),
        ("a dead job", format!("/api/v1/jobs/{dead}")),
        ("workers", "/api/v1/workers".into()),
        ("schedules", "/api/v1/schedules".into()),
        ("a schedule", "/api/v1/schedules/nightly".into()),
        ("whoami", "/api/v1/whoami".into()),
        ("/metrics", "/metrics".into()),
        ("the page", "/".into()),
    ];
    let results = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(
            ApiState::new(store.clone(), TOKEN)
                .unwrap()
                .with_scheduler(true),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        let mut out = Vec::new();
        for (name, path) in &requests {
            // The first answer warms the caches (the finished counts too).
            get(&mut r, &mut w, path).await;
            let mut times: Vec<Duration> = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                times.push(get(&mut r, &mut w, path).await);
            }
            times.sort();
            let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
            out.push((*name, pct(0.5), pct(0.99), times[times.len() - 1]));
        }
        out
    });
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("| console request, {n} finished jobs, {cpus} CPUs | p50 | p99 | max |");
    println!("|---|---:|---:|---:|");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (name, p50, p99, max) in results {
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.2} ms |",
            ms(p50),
            ms(p99),
            ms(max)
        );
    }
}
