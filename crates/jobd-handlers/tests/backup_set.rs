//! A backup set holds the queue file and the data directory's folders
//! beside the tenants: the queue file snapshotted while a writer keeps
//! enqueueing (SQLite's online backup), the folders as verified
//! `.tar.zst`; each restored to a new place, byte for byte, and nothing
//! overwritten; a tampered archive refused.  The backup job mails its report.

mod support;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use jobd::store::{JobState, ListFilter, NewJob};
use jobd::worker::{Reporter, Worker};
use jobd::Store;
use jobd_handlers::backup::{self, BackupOptions, BackupStatus};
use jobd_handlers::tenants::{seed, SeedOptions};
use jobd_handlers::DataDir;
use serde_json::json;

fn data_dir() -> (tempfile::TempDir, DataDir) {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path().join("data"));
    let opts = SeedOptions {
        tenants: 2,
        templates_per_tenant: 3,
        scans_per_tenant: 100,
        ..SeedOptions::default()
    };
    seed(data.tenants(), &opts).unwrap();
    let put = |rel: &str, body: &[u8]| {
        let p = data.root().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, body).unwrap();
    };
    put("uploads/tenant-001/logo.png", &[9u8; 5000]);
    put("uploads/tenant-002/a/b/deep.txt", b"deep");
    put("logs/jobd.log", b"line 1\nline 2\n");
    fs::write(dir.path().join("secret.txt"), b"outside").unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("secret.txt"),
        data.root().join("uploads/link"),
    )
    .unwrap();
    (dir, data)
}

fn same_tree(a: &Path, b: &Path) {
    for entry in fs::read_dir(a).unwrap() {
        let entry = entry.unwrap();
        let (pa, pb) = (entry.path(), b.join(entry.file_name()));
        let kind = fs::symlink_metadata(&pa).unwrap().file_type();
        if kind.is_symlink() {
            assert!(!pb.exists(), "{} is not restored", pb.display());
        } else if kind.is_dir() {
            same_tree(&pa, &pb);
        } else {
            assert_eq!(
                fs::read(&pa).unwrap(),
                fs::read(&pb).unwrap(),
                "{}",
                pa.display()
            );
        }
    }
}

#[test]
fn the_queue_file_and_the_folders_are_backed_up_verified_and_restored() {
    let (dir, data) = data_dir();
    let db = data.root().join("queue.db");
    let store = Store::open(&db).unwrap();
    for i in 0..500 {
        store
            .enqueue(&NewJob::new("q", "k").payload(&json!({"i": i})))
            .unwrap();
    }
    // A writer keeps going while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = std::thread::spawn({
        let (store, stop) = (store.clone(), stop.clone());
        move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                store.enqueue(&NewJob::new("q", "k")).unwrap();
                n += 1;
            }
            n
        }
    });
    let m = backup::backup_set(
        &data,
        &BackupOptions::default(),
        Some(&db),
        1_800_000_000_000,
        &Reporter::silent(),
    )
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(m.failures().is_empty(), "{:?}", m.failures());
    let q = m.queue.as_ref().unwrap();
    assert_eq!(
        (q.status, q.file.as_str()),
        (BackupStatus::Ok, "queue.db.zst")
    );
    let folders: Vec<(&str, u64, u64)> = m
        .folders
        .iter()
        .map(|f| (f.folder.as_str(), f.files, f.symlinks_skipped))
        .collect();
    assert_eq!(folders, [("uploads", 2, 1), ("logs", 1, 0)]);
    assert_eq!(m.folders[0].source_bytes, 5004);
    // The manifest on disk says the same.
    let on_disk = backup::read_manifest(&m.path).unwrap();
    assert_eq!(on_disk.folders, m.folders);

    // The queue file: to a new path, a consistent file jobd opens.
    let restored = dir.path().join("restored.db");
    let bytes = backup::restore_queue(&data, &m.set, &restored).unwrap();
    assert_eq!(bytes, q.source_bytes);
    let back = Store::open(&restored).unwrap();
    let jobs = back
        .list(&ListFilter {
            limit: Some(10_000),
            ..ListFilter::default()
        })
        .unwrap()
        .len();
    assert!(
        jobs >= 500 && jobs <= 500 + written,
        "{jobs} of 500 + {written}"
    );
    back.integrity_check().unwrap();
    let e = backup::restore_queue(&data, &m.set, &db)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("exists") && e.contains("nothing is overwritten"),
        "{e}"
    );

    // The folders: byte for byte into new folders; symlinks not followed.
    let to = dir.path().join("uploads-back");
    let r = backup::restore_folder(&data, &m.set, "uploads", &to).unwrap();
    assert_eq!((r.files, r.bytes), (2, 5004));
    same_tree(&data.root().join("uploads"), &to);
    assert!(!to.join("link").exists());
    let e = backup::restore_folder(&data, &m.set, "uploads", &to)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not empty"), "{e}");
    let e = backup::restore_folder(&data, &m.set, "tenants", &dir.path().join("x"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not in backup set"), "{e}");

    // A tampered archive is refused before anything is written.
    let archive = m.path.join("logs.tar.zst");
    let mut bytes = fs::read(&archive).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&archive, bytes).unwrap();
    let to = dir.path().join("logs-back");
    let e = backup::restore_folder(&data, &m.set, "logs", &to)
        .unwrap_err()
        .to_string();
    assert!(e.contains("SHA-256"), "{e}");
    assert!(!to.exists());
}

#[test]
fn folders_outside_what_a_backup_takes_are_refused_at_enqueue() {
    let (dir, data) = data_dir();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let catalog = jobd_handlers::builtin(Worker::builder(store.clone()), &data).catalog();
    for (payload, why) in [
        (json!({"folders": ["../"]}), "inside the data directory"),
        (json!({"folders": ["tenants"]}), "not under uploads"),
        (
            json!({"folders": ["uploads/link"]}),
            "outside the data directory",
        ),
        (json!({"folders": ["templates"]}), "not found"),
        (json!({"email": ["not an address"]}), "not an address"),
    ] {
        let e = catalog
            .checker(&store)
            .check_job(&NewJob::new("maintenance", "backup_tenants").payload(&payload))
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{payload}: {e}");
    }
}

#[tokio::test]
async fn the_backup_job_sends_its_report() {
    let (_dir, data) = data_dir();
    let store = Store::open(data.root().join("queue.db")).unwrap();
    let id = store
        .enqueue(
            &NewJob::new("maintenance", "backup_tenants")
                .payload(&json!({"keep": 3, "email": ["ops@example.com"]})),
        )
        .unwrap();
    let builder = jobd_handlers::builtin(Worker::builder(store.clone()), &data);
    support::run_until_finished(builder, &store, &[id]).await;
    let job = store.get(id).unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.last_error);
    let m = &job.result.unwrap();
    assert_eq!(
        m["queue"]["status"], "ok",
        "the worker's own queue file: {m}"
    );
    let mails = store
        .list(&ListFilter {
            queue: Some("email".into()),
            ..ListFilter::default()
        })
        .unwrap();
    assert_eq!(mails.len(), 1);
    let mail = store.get(mails[0].id).unwrap();
    assert_eq!(mail.kind, "send_email");
    assert_eq!(mail.payload["template"], "backup-report");
    assert_eq!(mail.payload["to"], json!(["ops@example.com"]));
    assert_eq!(mail.payload["data"]["set"], m["set"]);
    assert_eq!(mail.payload["data"]["ok"], 2);
    let names: Vec<&str> = mail.payload["data"]["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["tenant-001", "tenant-002", "queue", "uploads/", "logs/"]
    );
}
