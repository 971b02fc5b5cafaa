//! A throwaway PostgreSQL cluster for the PostgreSQL backend's tests: Debian's
//! `postgresql` package (which `.ci/run` installs), `initdb` into a new
//! temporary directory as a non-root user, the server on a free loopback
//! port with its socket in that directory.  One cluster per test process,
//! started at the first [`database`] call; a fresh database per call, so
//! tests running in parallel never see each other's jobs.
//!
//! `$JOBD_TEST_PG` (a `postgres://` URL of a role allowed to create
//! databases) uses an existing server instead.  The cluster runs with
//! `fsync=off` (tests check logic, not durability of the disk) unless
//! `$JOBD_TEST_PG_FSYNC=on`, which the benches set.  The cluster stops, and its
//! directory goes, when the test process ends, however it ends: the server
//! runs under a shell that waits on a pipe from this process and, when the
//! pipe closes, stops the server and removes the directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A running cluster (or the server `$JOBD_TEST_PG` names).
pub struct Cluster {
    /// `postgres://user@127.0.0.1:port` (no database).
    base: String,
    /// The `postgres` database of the cluster, for CREATE DATABASE.
    admin: String,
    bin: Option<PathBuf>,
    data: Option<PathBuf>,
    port: u16,
    /// Held open: the shell stops the server when it closes.
    keep: Mutex<Option<(Child, ChildStdin)>>,
    _dir: Option<tempfile::TempDir>,
}

/// The directory of PostgreSQL's server programs, if installed.
pub fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists() && bin.join("postgres").exists())
        .collect();
    found.sort();
    found.pop()
}

/// The test process's cluster, started at the first call; `None` where
/// there is no PostgreSQL — which CI (`$CI` set) refuses, and elsewhere the
/// caller says it skipped.
pub fn cluster() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| std::thread::scope(|s| s.spawn(start_cluster).join().unwrap()))
        .as_ref()
}

/// `$JOBD_TEST_PG`'s server, or a new cluster (on a thread of its own, as
/// [`database`]).
fn start_cluster() -> Option<Cluster> {
    {
        {
            if let Ok(url) = std::env::var("JOBD_TEST_PG") {
                let base = url.trim_end_matches('/').to_string();
                let admin = format!("{base}/postgres");
                return Some(Cluster {
                    base,
                    admin,
                    bin: None,
                    data: None,
                    port: 0,
                    keep: Mutex::new(None),
                    _dir: None,
                });
            }
            match server_bin() {
                Some(bin) => Some(Cluster::start(&bin)),
                None => {
                    assert!(
                        std::env::var_os("CI").is_none(),
                        "CI must install postgresql (Debian's package)"
                    );
                    eprintln!("SKIPPED: no PostgreSQL server (apt-get install postgresql)");
                    None
                }
            }
        }
    }
}

/// The URL of a new, empty database on the test process's cluster.
/// (On a thread of its own: the synchronous client cannot run on a thread
/// that drives async tasks, as an async test's does.)
pub fn database() -> Option<String> {
    std::thread::spawn(|| Some(cluster()?.create_database()))
        .join()
        .unwrap()
}

/// Commands run as the cluster's owner: `postgres` when this process is
/// root (PostgreSQL refuses to run as root), else this user.
fn as_owner(program: &Path) -> Command {
    if unsafe_is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn unsafe_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

impl Cluster {
    fn start(bin: &Path) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("jobd-pg")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let user = if unsafe_is_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown of the cluster's directory");
            "postgres".to_string()
        } else {
            std::env::var("USER").unwrap_or_else(|_| "postgres".into())
        };
        let out = as_owner(&bin.join("initdb"))
            .args([
                "--auth=trust",
                "--username",
                &user,
                "--encoding=UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = crate::smtp::free_port();
        let cluster = Cluster {
            base: format!("postgres://{user}@127.0.0.1:{port}"),
            admin: format!("postgres://{user}@127.0.0.1:{port}/postgres"),
            bin: Some(bin.to_path_buf()),
            data: Some(data),
            port,
            keep: Mutex::new(None),
            _dir: Some(dir),
        };
        cluster.start_server();
        cluster
    }

    /// Start (or start again) the server and wait until it answers.
    pub fn start_server(&self) {
        let (Some(bin), Some(data)) = (&self.bin, &self.data) else {
            panic!("the cluster of $JOBD_TEST_PG is not this test's to start");
        };
        let script = format!(
            "{postgres} -D {data} -p {port} -k {sock} -c listen_addresses=127.0.0.1 \
             -c fsync={fsync} -c max_connections=200 -c log_min_messages=warning & pid=$!; \
             read cmd; kill -INT $pid; wait $pid; [ \"$cmd\" = stop ] || rm -rf {dir}",
            postgres = bin.join("postgres").display(),
            data = data.display(),
            port = self.port,
            sock = data.parent().unwrap().display(),
            dir = data.parent().unwrap().display(),
            fsync = if std::env::var("JOBD_TEST_PG_FSYNC").as_deref() == Ok("on") {
                "on"
            } else {
                "off"
            },
        );
        // The server's log beside its data (read it when a test fails).
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.parent().unwrap().join("server.log"))
            .unwrap();
        let mut child = as_owner(Path::new("sh"))
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        *self.keep.lock().unwrap() = Some((child, stdin));
        self.wait_ready();
    }

    /// Stop the server (a fast shutdown: sessions are cut, as in a restart).
    pub fn stop_server(&self) {
        let taken = self.keep.lock().unwrap().take();
        if let Some((mut child, mut stdin)) = taken {
            let _ = stdin.write_all(b"stop\n");
            drop(stdin);
            let _ = child.wait();
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match postgres::Client::connect(&self.admin, postgres::NoTls) {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => panic!("PostgreSQL did not start: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// `postgres://user@host:port/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    /// A new, empty database; its URL.
    pub fn create_database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "jobd_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = postgres::Client::connect(&self.admin, postgres::NoTls).unwrap();
        // A name made here, never input: no binding for identifiers.
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        self.url(&name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_server();
    }
}

/// One number from `sql` on the database at `url` (on a thread of its own,
/// as [`database`]).
pub fn count(url: &str, sql: &str) -> i64 {
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.query_one(sql.as_str(), &[]).unwrap().get(0)
    })
    .join()
    .unwrap()
}
