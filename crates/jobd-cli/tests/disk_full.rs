//! A queue on a full disk: enqueue fails with a disk-full error, everything
//! acknowledged before is intact, and enqueue works again once space is freed.
//!
//! The disk is a 2 MiB tmpfs mounted for the test, which needs root
//! (CI runs as root; elsewhere the test says it skipped and why).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use jobd::store::NewJob;
use jobd::{Error, Store};
use jobd_testkit::{http, serve, Served};

struct Tmpfs {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED disk_full: mounting a tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "root could not mount a tmpfs at {}",
            mount.display()
        );
        Some(Tmpfs { mount, _dir: dir })
    }

    fn path(&self) -> &Path {
        &self.mount
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

fn job(i: usize) -> NewJob {
    NewJob::new("q", "k").payload(&serde_json::json!({"i": i, "pad": "p".repeat(1000)}))
}

#[test]
fn enqueue_on_a_full_disk_fails_cleanly_and_recovers() {
    let Some(disk) = Tmpfs::mount("2m") else {
        return;
    };
    let filler = disk.path().join("filler");
    std::fs::write(&filler, vec![0u8; 768 * 1024]).unwrap();
    let store = Store::open(disk.path().join("queue.db")).unwrap();

    let mut acked = Vec::new();
    let err = loop {
        match store.enqueue(&job(acked.len())) {
            Ok(id) => acked.push(id),
            Err(e) => break e,
        }
        assert!(acked.len() < 100_000, "the disk never filled");
    };
    assert!(
        matches!(err, Error::DiskFull { .. }),
        "expected DiskFull, got {err:?}"
    );
    assert!(err.to_string().contains("disk full"), "{err}");
    // How many fit depends on whether the background checkpointer let the
    // WAL start over while the loop ran (timing); a few dozen always do.
    assert!(acked.len() >= 20, "only {} jobs fit", acked.len());
    // A batch fails whole.
    let batch: Vec<NewJob> = (0..50).map(job).collect();
    assert!(matches!(
        store.enqueue_many(&batch),
        Err(Error::DiskFull { .. })
    ));

    // Everything acknowledged is there, and the file is sound.
    store.integrity_check().unwrap();
    let count: i64 = store
        .sqlite()
        .unwrap()
        .connection()
        .unwrap()
        .query_row("SELECT count(*) FROM jobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count as usize, acked.len());
    for id in [acked[0], acked[acked.len() / 2], *acked.last().unwrap()] {
        store.get(id).unwrap();
    }

    // Free space: enqueue works again, single and batched.
    std::fs::remove_file(&filler).unwrap();
    store.enqueue(&job(0)).unwrap();
    store.enqueue_many(&batch).unwrap();
    store.integrity_check().unwrap();
    drop(store);
    // And the file reopens.
    let reopened = Store::open(disk.path().join("queue.db")).unwrap();
    reopened.integrity_check().unwrap();
}

/// Fill the file system at `dir` to the last byte.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    while f.write_all(&block[..1]).is_ok() {}
    let _ = f.sync_all();
}

/// `jobd serve` would not start on a full disk (it writes when
/// its workers register).  It starts, serves reads and the dashboard, and
/// answers writes 507; its workers register once there is room.
#[test]
fn serve_starts_on_a_full_disk_and_answers_writes_507() {
    let Some(disk) = Tmpfs::mount("4m") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let data = disk.path().join("data");
    let jobd = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_jobd"))
            .current_dir(home.path())
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    jobd(&["init", "--no-defaults"]);
    jobd(&["enqueue", "--queue", "default", "--kind", "noop"]);
    let token = jobd_testkit::api_token(&home.path().join("jobd.toml"));
    // The disk fills while jobd has the file open (here this test's
    // connection, as a worker process would): its -wal and -shm exist.
    let db = data.join("queue.db");
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder
        .query_row("SELECT count(*) FROM jobs", [], |r| r.get::<_, i64>(0))
        .unwrap();
    fill(disk.path());

    let Served {
        mut reaper,
        addr,
        lines,
        ..
    } = serve(
        Command::new(env!("CARGO_BIN_EXE_jobd"))
            .current_dir(home.path())
            .arg("--data-dir")
            .arg(&data)
            .args(["serve", "--listen", "127.0.0.1:0", "--no-scheduler"]),
    );
    // Past the first tries to register: still serving.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        reaper.0[0].try_wait().unwrap().is_none(),
        "serve exited on the full disk"
    );
    let (status, health) = http(&addr, "GET", "/healthz", None, None);
    assert_eq!(status, 200, "{health}");
    let (status, queues) = http(&addr, "GET", "/api/v1/queues", Some(&token), None);
    assert_eq!(status, 200, "{queues}");
    assert!(queues.to_string().contains("default"), "{queues}");
    let (status, _) = http(&addr, "GET", "/", None, None);
    assert_eq!(status, 200, "the dashboard");
    // A write may still land in WAL space SQLite can reuse; past that, 507.
    let pad = "p".repeat(200_000);
    let mut accepted = 0;
    let refused = loop {
        let (status, v) = http(
            &addr,
            "POST",
            "/api/v1/jobs",
            Some(&token),
            Some(serde_json::json!({"queue": "default", "kind": "noop", "payload": {"pad": pad}})),
        );
        match status {
            201 => accepted += 1,
            _ => break (status, v),
        }
        assert!(
            accepted < 20,
            "the full disk took {accepted} jobs of 200 KB"
        );
    };
    assert_eq!(refused.0, 507, "{}", refused.1);
    assert!(
        refused.1["error"]
            .as_str()
            .unwrap()
            .contains("disk is full"),
        "{}",
        refused.1
    );

    // Room again: the worker registers and runs the waiting job.
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    let t0 = std::time::Instant::now();
    while jobd_testkit::count(&db, "SELECT count(*) FROM jobs WHERE state = 'succeeded'")
        != 1 + accepted
    {
        assert!(t0.elapsed() < Duration::from_secs(20), "the jobs never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(reaper);
    drop(holder);
    let log = lines.iter().collect::<Vec<_>>().join("\n");
    assert!(log.contains("could not register the worker"), "{log}");
}

/// On a disk without room even for SQLite's 32 KiB shared-memory file, the
/// queue cannot be opened at all; the error says the disk is full.
#[test]
fn a_queue_that_cannot_be_opened_on_a_full_disk_says_the_disk_is_full() {
    let Some(disk) = Tmpfs::mount("2m") else {
        return;
    };
    let db = disk.path().join("queue.db");
    let store = Store::open(&db).unwrap();
    store.enqueue(&job(0)).unwrap();
    drop(store);
    // The pool's and the checkpointer's connections close as their threads
    // end; the last one to close removes the -wal and -shm.
    let t0 = std::time::Instant::now();
    while disk.path().join("queue.db-shm").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "never closed cleanly"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    fill(disk.path());
    let err = Store::open(&db).unwrap_err();
    assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
    assert!(err.to_string().contains("disk full"), "{err}");
}
