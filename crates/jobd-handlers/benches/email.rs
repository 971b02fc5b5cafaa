//! E-mail to a real SMTP server on loopback (aiosmtpd, as in the tests)
//! over one pooled connection: `send_email` jobs through a worker, beside
//! the raw limit — the same, already built message sent over one socket by
//! the shortest SMTP dialogue — in the same run.
//!
//! ```text
//! cargo bench -p jobd-handlers --bench email     # JOBD_BENCH_JOBS (500), JOBD_BENCH_ROUNDS (3)
//! ```

use jobd_testkit::env_usize as env;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobd::store::NewJob;
use jobd::worker::Worker;
use jobd::Store;
use jobd_handlers::email::{self, Mailer, SmtpConfig};
use jobd_handlers::DataDir;

fn config(port: u16) -> SmtpConfig {
    let mut c = SmtpConfig::loopback(port, "QR Platform <noreply@qr.example>");
    c.pool_size = 1;
    c
}

fn payload() -> serde_json::Value {
    serde_json::json!({"to": "ana@example.com", "template": "welcome",
        "data": {"name": "Ana", "product": "QR", "login_url": "https://qr.example/login"}})
}

/// Messages per second as `send_email` jobs through a worker running the
/// `email` queue at the platform's concurrency, 5, over one connection.
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
                .queue("email", 5)
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

/// The raw limit: the same message, built once, sent n times over one
/// plain socket (no Nagle) by the shortest SMTP dialogue — MAIL, RCPT,
/// DATA, the body and its `.` in one write, then the answers.
fn bare(port: u16, n: usize) -> f64 {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    let mailer = Mailer::new(&config(port), DataDir::new(dir.path())).unwrap();
    let email: email::Email = serde_json::from_value(payload()).unwrap();
    let (message, _, _) = mailer.compose(&email).unwrap();
    let mut body = message.formatted();
    body.extend_from_slice(b"\r\n.\r\n");
    let sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_nodelay(true).unwrap();
    let mut w = sock.try_clone().unwrap();
    let mut r = BufReader::new(sock);
    let answer = |r: &mut BufReader<std::net::TcpStream>, code: &str| loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with(code), "{line}");
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    };
    answer(&mut r, "220");
    w.write_all(b"EHLO bench\r\n").unwrap();
    answer(&mut r, "250");
    let started = Instant::now();
    for _ in 0..n {
        w.write_all(b"MAIL FROM:<noreply@qr.example>\r\n").unwrap();
        answer(&mut r, "250");
        w.write_all(b"RCPT TO:<ana@example.com>\r\n").unwrap();
        answer(&mut r, "250");
        w.write_all(b"DATA\r\n").unwrap();
        answer(&mut r, "354");
        w.write_all(&body).unwrap();
        answer(&mut r, "250");
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    w.write_all(b"QUIT\r\n").unwrap();
    rate
}

fn main() {
    let n = env("JOBD_BENCH_JOBS", 500);
    let rounds = env("JOBD_BENCH_ROUNDS", 3);
    let Some(python) = jobd_testkit::smtp::python() else {
        println!("not measured: no Python with aiosmtpd (apt-get install python3-aiosmtpd)");
        return;
    };
    let server = jobd_testkit::smtp::SmtpServer::start(&python, &[]);
    let port = server.port;
    println!("e-mail: {n} messages (the welcome template, text + HTML) to aiosmtpd on loopback, one connection, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get()));
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let b = bare(port, n);
        let j = through_jobd(port, n);
        println!("round {round}: send_email jobs {j:>6.0} messages/s   raw SMTP {b:>6.0}/s   jobs/bare {:>4.0}%", 100.0 * j / b);
        ours.push(j);
        theirs.push(b);
    }
    ours.sort_by(f64::total_cmp);
    theirs.sort_by(f64::total_cmp);
    let (j, b) = (ours[ours.len() / 2], theirs[theirs.len() / 2]);
    println!(
        "median: send_email jobs {j:.0} messages/s, raw SMTP {b:.0}/s ({:.0}%)",
        100.0 * j / b
    );
    drop(server);
}
