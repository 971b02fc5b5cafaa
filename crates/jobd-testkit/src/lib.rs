//! Set-up shared by jobd's tests.
//!
//! * this module — processes the tests spawn (the fixtures, `jobd serve`),
//!   children reaped however a test ends, raw HTTP/1.1 to a spawned daemon,
//!   counts read straight from a file;
//! * [`api`] — requests to an in-process router;
//! * [`browser`] — a headless Chromium through chromedriver;
//! * [`smtp`] — a real SMTP server (aiosmtpd) and a webhook receiver on
//!   loopback;
//! * [`pg`] — a throwaway PostgreSQL cluster, a fresh database per test.
//!
//! Benches use [`env_usize`] for their sizes.

pub mod api;
pub mod browser;
pub mod pg;
pub mod smtp;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use serde_json::Value;

/// A bench's size from the environment: `$name` as a number, else `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A process fixture (an example of the engine crate, in
/// `crates/jobd/tests/fixtures/`): `cargo test` builds it next to the test
/// binaries' directory.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "fixture {name} not built at {} (cargo test at the workspace root builds it; alone: cargo build -p jobd --examples)",
        path.display()
    );
    path
}

/// Children killed (and waited for) when the test ends, however it ends.
pub struct Reaper(pub Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Run `cmd` to the end; it must exit 0 (its stderr is the failure message).
pub fn run_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A single integer from `sql`, on a fresh connection.
pub fn count(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

/// One HTTP/1.1 request; (status, JSON body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let text = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (
        status,
        serde_json::from_str(text).unwrap_or(Value::String(text.to_string())),
    )
}

/// Wait (long-polling `GET /api/v1/jobs/{id}?wait=5s`, 30 s at most) until
/// the job ends; the job.
pub fn wait_done(addr: &str, token: &str, id: i64) -> Value {
    let t0 = std::time::Instant::now();
    loop {
        let (status, job) = http(
            addr,
            "GET",
            &format!("/api/v1/jobs/{id}?wait=5s"),
            Some(token),
            None,
        );
        assert_eq!(status, 200, "{job}");
        if ["succeeded", "dead", "cancelled"].contains(&job["state"].as_str().unwrap()) {
            return job;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "job {id} did not finish: {job}"
        );
    }
}

/// A started `jobd serve` (killed when dropped): its address, its start
/// line, and every stderr line after it.
pub struct Served {
    pub reaper: Reaper,
    pub addr: String,
    pub start: String,
    pub lines: std::sync::mpsc::Receiver<String>,
}

/// Spawn `cmd` (a `jobd serve` command line, or a shell that execs one)
/// with stderr piped, and wait for its start line (20 s at most).
pub fn serve(cmd: &mut std::process::Command) -> Served {
    use std::io::BufRead;
    let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let reaper = Reaper(vec![child]);
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("serve printed its start line");
        if let Some((_, rest)) = line.split_once("API on http://") {
            let addr = rest.split([',', '"', ' ']).next().unwrap().to_string();
            return Served {
                reaper,
                addr,
                start: line,
                lines,
            };
        }
    }
}

/// The `api_token` of a configuration file.
pub fn api_token(config: &Path) -> String {
    std::fs::read_to_string(config)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("api_token = \""))
        .expect("an api_token line")
        .trim_end_matches('"')
        .to_string()
}
