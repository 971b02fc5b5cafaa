//! Real servers for the notification tests and benches, on free loopback
//! ports, each saving what it received for the test to read back: an SMTP
//! server, aiosmtpd (Debian's `python3-aiosmtpd`, which `.ci/run` installs)
//! running `smtp/server.py`; a webhook receiver, Python's `http.server`
//! running `webhook/server.py`.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The script the server runs (its options: `--fail-first N`,
/// `--fail-code 451|550`, `--reject ADDRESS`).
pub const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/smtp/server.py");

/// A Python with aiosmtpd (`$JOBD_TEST_PYTHON`, `/usr/bin/python3`,
/// `python3`), or None — which CI (`$CI` set) refuses, and elsewhere the
/// caller says it skipped.
pub fn python() -> Option<String> {
    let candidates = [
        std::env::var("JOBD_TEST_PYTHON").ok(),
        Some("/usr/bin/python3".into()),
        Some("python3".into()),
    ];
    for p in candidates.into_iter().flatten() {
        let ok = Command::new(&p)
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(p);
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must install python3-aiosmtpd"
    );
    eprintln!("SKIPPED: no Python with aiosmtpd (apt-get install python3-aiosmtpd)");
    None
}

/// A free loopback port (free when asked).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start a server script (`cmd PORT OUT args…`) on a free port, saving
/// into a new temporary directory; returns once it printed "ready".
fn spawn(cmd: &mut Command, args: &[&str], what: &str) -> (Child, u16, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = cmd
        .arg(port.to_string())
        .arg(out.path())
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the {what} server did not start");
    (child, port, out)
}

/// A running server; killed when dropped.
pub struct SmtpServer {
    child: Child,
    pub port: u16,
    out: tempfile::TempDir,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpServer {
    /// Start one with `python` (from [`python`]) and the script's options;
    /// returns once it listens.
    pub fn start(python: &str, args: &[&str]) -> SmtpServer {
        let (child, port, out) = spawn(Command::new(python).arg(SERVER), args, "SMTP");
        SmtpServer { child, port, out }
    }

    /// The messages received so far: (envelope `{"from", "to"}`, raw message).
    pub fn received(&self) -> Vec<(Value, String)> {
        let mut all = Vec::new();
        for n in 1.. {
            let env = self.out.path().join(format!("{n}.json"));
            let Ok(text) = std::fs::read_to_string(&env) else {
                break;
            };
            let raw = std::fs::read_to_string(self.out.path().join(format!("{n}.eml"))).unwrap();
            all.push((serde_json::from_str(&text).unwrap(), raw));
        }
        all
    }

    /// Wait (up to `within`) until `n` messages have arrived; all of them.
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<(Value, String)> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The webhook receiver's script (its options: `--fail-first N`,
/// `--fail-code 503`); the shared secret goes in `$WEBHOOK_SECRET`.
pub const WEBHOOK_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/webhook/server.py");

/// A webhook receiver (Python's `http.server`) that checks each request's
/// signature with Python's `hmac`; killed when dropped.
pub struct WebhookServer {
    child: Child,
    pub port: u16,
    out: tempfile::TempDir,
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WebhookServer {
    /// Start one (any `python3` will do: it needs only the standard
    /// library) checking signatures with `secret`; returns once it listens.
    pub fn start(secret: &str, args: &[&str]) -> WebhookServer {
        let mut cmd = Command::new("python3");
        cmd.arg(WEBHOOK_SERVER).env("WEBHOOK_SECRET", secret);
        let (child, port, out) = spawn(&mut cmd, args, "webhook");
        WebhookServer { child, port, out }
    }

    /// The requests received so far, in order: `{"path", "headers", "body",
    /// "valid", "status"}`.
    pub fn received(&self) -> Vec<Value> {
        (1..)
            .map_while(|n| std::fs::read_to_string(self.out.path().join(format!("{n}.json"))).ok())
            .map(|text| serde_json::from_str(&text).unwrap())
            .collect()
    }
}

/// A certificate authority made for a test and a server certificate it
/// signed for `127.0.0.1` and `localhost` (with Debian's `openssl`): what
/// a TLS client must be told to trust (`ca_file`), and what the server uses.
pub struct TestCa {
    _dir: tempfile::TempDir,
    /// The CA's certificate (PEM): the `ca_file` of the client.
    pub ca: std::path::PathBuf,
    /// The server's certificate and key (PEM).
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl (Debian's openssl package) makes the test certificates");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=jobd test CA",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=localhost",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            p("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        TestCa {
            ca: p("ca.pem"),
            cert: p("server.pem"),
            key: p("server.key"),
            _dir: dir,
        }
    }
}

impl Default for TestCa {
    fn default() -> TestCa {
        TestCa::new()
    }
}
