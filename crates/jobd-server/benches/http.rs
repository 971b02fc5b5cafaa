//! Load test of the daemon's HTTP API on loopback: concurrent clients
//! enqueue over keep-alive HTTP/1.1; requests/s, latency percentiles, and a
//! check that every acknowledged job is in the queue file.
//!
//! ```text
//! cargo bench --bench http        # JOBD_BENCH_CLIENTS=32 JOBD_BENCH_REQUESTS=2000 (per client)
//! ```

use std::time::{Duration, Instant};

use jobd::Store;
use jobd_server::{router, ApiState};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const TOKEN: &str = "bench-token-0123456789abcdef0123456789";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One keep-alive connection sending `n` enqueues; the latency of each.
async fn client(addr: std::net::SocketAddr, n: usize, c: usize) -> Vec<Duration> {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let body = format!(
            r#"{{"queue":"email","kind":"send_email","payload":{{"client":{c},"n":{i}}}}}"#
        );
        let req = format!(
            "POST /api/v1/jobs HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let t = Instant::now();
        w.write_all(req.as_bytes()).await.unwrap();
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("HTTP/1.1 201"), "{line}");
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
        latencies.push(t.elapsed());
    }
    latencies
}

fn main() {
    let clients = env("JOBD_BENCH_CLIENTS", 32);
    let per_client = env("JOBD_BENCH_REQUESTS", 1000);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (elapsed, mut latencies) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(ApiState::new(store.clone(), TOKEN).unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let t = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| tokio::spawn(client(addr, per_client, c)))
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        (t.elapsed(), all)
    });
    latencies.sort();
    let total = latencies.len();
    let pct = |p: f64| latencies[((total as f64 * p) as usize).min(total - 1)].as_secs_f64() * 1e3;
    let stored: i64 = store
        .sqlite()
        .unwrap()
        .connection()
        .unwrap()
        .query_row("SELECT count(*) FROM jobs", [], |r| r.get(0))
        .unwrap();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("| HTTP enqueue, {clients} keep-alive clients, {cpus} CPUs | measured |");
    println!("|---|---|");
    println!(
        "| requests/s | {:.0} ({total} in {:.2} s) |",
        total as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "| latency p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    println!("| acknowledged / stored | {total} / {stored} |");
    assert_eq!(stored as usize, total, "an acknowledged job is missing");
}
