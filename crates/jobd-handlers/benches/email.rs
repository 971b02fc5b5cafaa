//! E-mail to a real SMTP server on loopback (aiosmtpd, as in the tests)
//! over one pooled connection: `send_email` jobs through a worker, beside
//! lettre alone sending the same, already built message on the same kind
//! of connection, in the same run.
//!
//! ```text
//! cargo bench -p jobd-handlers --bench email     # JOBD_BENCH_JOBS (500), JOBD_BENCH_ROUNDS (3)
//! ```

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobd::store::NewJob;
use jobd::worker::Worker;
use jobd::Store;
use jobd_handlers::email::{self, Mailer, SmtpConfig};
use jobd_handlers::DataDir;

const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp/server.py");

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(port: u16) -> SmtpConfig {
    let mut c = SmtpConfig::loopback(port, "QR Platform <noreply@qr.example>");
    c.pool_size = 1;
    c
}

fn payload() -> serde_json::Value {
    serde_json::json!({"to": "ana@example.com", "template": "welcome",
        "data": {"name": "Ana", "product": "QR", "login_url": "https://qr.example/login"}})
}

/// Messages per second as `send_email` jobs through a worker (one at a time).
fn through_jobd(port: u16, n: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let mailer = Arc::new(Mailer::new(&config(port), DataDir::new(dir.path())).unwrap());
    let jobs: Vec<NewJob> = (0..n)
        .map(|_| NewJob::new("email", "send_email").payload(&payload()))
        .collect();
    store.enqueue_many(&jobs).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    rt.block_on(async {
        let stop = tokio_util::sync::CancellationToken::new();
        let run = tokio::spawn({
            let stop = stop.clone();
            email::register(Worker::builder(store.clone()), mailer)
                .queue("email", 1)
                .run(async move { stop.cancelled().await })
        });
        loop {
            let q = store.stats().unwrap();
            let q = q.queue("email").unwrap();
            if (q.succeeded + q.dead) as usize >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        run.await.unwrap().unwrap();
    });
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(
        store.stats().unwrap().queue("email").unwrap().succeeded as usize,
        n,
        "every message sent"
    );
    n as f64 / secs
}

/// The same message, built once, sent n times by lettre alone.
fn bare(port: u16, n: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mailer = Mailer::new(&config(port), DataDir::new(dir.path())).unwrap();
    let email: email::Email = serde_json::from_value(payload()).unwrap();
    let (message, _, _) = mailer.compose(&email).unwrap();
    let started = Instant::now();
    for _ in 0..n {
        mailer.send(&message).unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let n = env("JOBD_BENCH_JOBS", 500);
    let rounds = env("JOBD_BENCH_ROUNDS", 3);
    let python = ["/usr/bin/python3", "python3"].into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    let Some(python) = python else {
        println!("not measured: no Python with aiosmtpd (apt-get install python3-aiosmtpd)");
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(python)
        .args([SERVER, &port.to_string(), out.path().to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    println!("e-mail: {n} messages (the welcome template, text + HTML) to aiosmtpd on loopback, one connection, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get()));
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let b = bare(port, n);
        let j = through_jobd(port, n);
        println!("round {round}: send_email jobs {j:>6.0} messages/s   lettre alone {b:>6.0}/s   jobs/bare {:>4.0}%", 100.0 * j / b);
        ours.push(j);
        theirs.push(b);
    }
    ours.sort_by(f64::total_cmp);
    theirs.sort_by(f64::total_cmp);
    let (j, b) = (ours[ours.len() / 2], theirs[theirs.len() / 2]);
    println!(
        "median: send_email jobs {j:.0} messages/s, lettre alone {b:.0}/s ({:.0}%)",
        100.0 * j / b
    );
    let _ = server.kill();
    let _ = server.wait();
}
