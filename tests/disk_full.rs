//! A queue on a full disk: enqueue fails with a disk-full error, everything
//! acknowledged before is intact, and enqueue works again once space is freed.
//!
//! The disk is a 2 MiB tmpfs mounted for the test, which needs root
//! (CI runs as root; elsewhere the test says it skipped and why).

use std::path::{Path, PathBuf};
use std::process::Command;

use jobd::store::NewJob;
use jobd::{Error, Store};

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
