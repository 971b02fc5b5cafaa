//! `cleanup_files` and `compress_files` on a real directory tree: old files
//! go, new ones, symlinks and what they point to stay, a dry run removes
//! nothing; an archive read back by the tar and zstd crates holds the
//! manifest and the files with their checksums; every folder or file
//! outside what they may touch is refused, with nothing written.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, SystemTime};

use jobd::store::NewJob;
use jobd::worker::{Reporter, Worker};
use jobd::Store;
use jobd_handlers::files::{self, CleanupReport, CleanupSpec, CompressSpec, ManifestEntry};
use jobd_handlers::DataDir;
use serde_json::json;
use sha2::{Digest, Sha256};

const DAY: Duration = Duration::from_secs(86_400);

fn write(root: &Path, rel: &str, body: &[u8], age: Duration) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, body).unwrap();
    let f = fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

fn tree() -> (tempfile::TempDir, DataDir) {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path().join("data"));
    let root = data.root();
    write(root, "temp/old.bin", &[1; 1000], 3 * DAY);
    write(root, "temp/nested/deeper/old.txt", b"12345", 2 * DAY);
    write(root, "temp/fresh.txt", b"new", Duration::from_secs(60));
    write(root, "tenants/tenant-001.db", b"a tenant", 30 * DAY);
    write(root, "artifacts/exports/old.csv", b"a,b", 10 * DAY);
    // Outside the data directory, old, reached only through a symlink.
    write(dir.path(), "precious/keep.txt", b"mine", 30 * DAY);
    std::os::unix::fs::symlink(dir.path().join("precious"), root.join("temp/link")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("precious"), root.join("logs")).unwrap();
    (dir, data)
}

fn spec(v: serde_json::Value) -> CleanupSpec {
    serde_json::from_value(v).unwrap()
}

#[test]
fn old_files_go_and_nothing_else() {
    let (dir, data) = tree();
    let root = data.root();
    let dry = files::cleanup(
        &data,
        &spec(json!({"folders": ["temp"], "older_than_hours": 24, "dry_run": true})),
        SystemTime::now(),
        &Reporter::silent(),
    )
    .unwrap();
    assert_eq!((dry.files, dry.bytes, dry.dirs), (2, 1005, 0));
    assert!(
        root.join("temp/old.bin").exists(),
        "a dry run removes nothing"
    );

    let done = files::cleanup(
        &data,
        &spec(json!({"folders": ["temp"], "older_than_hours": 24})),
        SystemTime::now(),
        &Reporter::silent(),
    )
    .unwrap();
    assert_eq!(
        done,
        CleanupReport {
            dry_run: false,
            files: 2,
            bytes: 1005,
            dirs: 2,
            symlinks_skipped: 1,
            errors: vec![]
        }
    );
    assert!(!root.join("temp/old.bin").exists());
    assert!(!root.join("temp/nested").exists(), "emptied directories go");
    assert!(root.join("temp").is_dir(), "the folder itself stays");
    assert!(root.join("temp/fresh.txt").exists());
    assert!(root.join("temp/link").is_symlink());
    assert!(dir.path().join("precious/keep.txt").exists());
    assert!(root.join("tenants/tenant-001.db").exists());
    assert!(root.join("artifacts/exports/old.csv").exists(), "not asked");
}

#[test]
fn folders_outside_what_may_be_cleaned_are_refused_at_enqueue() {
    let (dir, data) = tree();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let catalog = jobd_handlers::builtin(Worker::builder(store.clone()), &data).catalog();
    let check = |folders: serde_json::Value| {
        catalog.checker(&store).check_job(
            &NewJob::new("maintenance", files::CLEANUP_KIND).payload(&json!({"folders": folders})),
        )
    };
    check(json!(["temp", "artifacts/exports", "uploads/none-yet"])).unwrap();
    for (folders, why) in [
        (
            json!(["../precious"]),
            "give a path inside the data directory",
        ),
        (json!(["/tmp"]), "give a path inside the data directory"),
        (
            json!(["tenants"]),
            "not under temp, artifacts, uploads, logs",
        ),
        (json!(["."]), "not under temp"),
        (json!(["logs"]), "outside the data directory"),
        (json!(["temp/link"]), "outside the data directory"),
        (json!([]), "folders is empty"),
    ] {
        let e = check(folders.clone()).unwrap_err().to_string();
        assert!(e.contains(why), "{folders}: {e}");
    }
    assert!(dir.path().join("precious/keep.txt").exists());
}

#[test]
fn an_archive_holds_its_manifest_and_the_files_with_their_checksums() {
    let (dir, data) = tree();
    let root = data.root();
    write(root, "artifacts/tenant-001/codes.pdf", &[7; 70_000], DAY);
    write(root, "uploads/tenant-001/photo.jpg", b"jpeg bytes", DAY);
    let spec: CompressSpec = serde_json::from_value(json!({
        "files": ["artifacts/tenant-001/codes.pdf", "uploads/tenant-001/photo.jpg"],
        "name": "tenant-001.tar.zst",
    }))
    .unwrap();
    let path = files::archive_path(&data, &spec, 9).unwrap();
    let archive = files::compress(&data, &spec, &path, &Reporter::silent()).unwrap();
    assert_eq!(archive.path, "artifacts/archives/tenant-001.tar.zst");
    assert_eq!(fs::metadata(&path).unwrap().len(), archive.bytes);
    assert!(archive.bytes < 70_000 / 10, "compressed");

    let mut tar = tar::Archive::new(zstd::Decoder::new(fs::File::open(&path).unwrap()).unwrap());
    let mut names = Vec::new();
    let mut manifest: Vec<ManifestEntry> = Vec::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut body = Vec::new();
        entry.read_to_end(&mut body).unwrap();
        if name == "manifest.json" {
            manifest = serde_json::from_slice(&body).unwrap();
        } else {
            let m = manifest
                .iter()
                .find(|m| m.path == name)
                .expect("in the manifest");
            assert_eq!(m.bytes, body.len() as u64);
            let sum: String = Sha256::digest(&body)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(m.sha256, sum, "{name}");
            assert_eq!(body, fs::read(root.join(&name)).unwrap());
        }
        names.push(name);
    }
    assert_eq!(
        names,
        [
            "manifest.json",
            "artifacts/tenant-001/codes.pdf",
            "uploads/tenant-001/photo.jpg"
        ]
    );
    assert_eq!(manifest, archive.files);

    // Not overwritten unless asked.
    let e = files::compress(&data, &spec, &path, &Reporter::silent()).unwrap_err();
    assert!(!e.retryable && e.to_string().contains("overwrite"), "{e}");
    let mut again = spec.clone();
    again.overwrite = true;
    files::compress(&data, &again, &path, &Reporter::silent()).unwrap();

    // Bad lists refused at enqueue.
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let catalog = jobd_handlers::builtin(Worker::builder(store.clone()), &data).catalog();
    for (payload, why) in [
        (
            json!({"files": ["tenants/tenant-001.db"]}),
            "not under temp",
        ),
        (
            json!({"files": ["../precious/keep.txt"]}),
            "inside the data directory",
        ),
        (
            json!({"files": ["temp/link/keep.txt"]}),
            "outside the data directory",
        ),
        (json!({"files": ["temp"]}), "not a regular file"),
        (
            json!({"files": ["uploads/tenant-001/photo.jpg", "uploads/tenant-001/photo.jpg"]}),
            "twice",
        ),
        (json!({"files": []}), "files is empty"),
        (
            json!({"files": ["temp/fresh.txt"], "name": "../x.tar.zst"}),
            "a file name",
        ),
        (json!({"files": ["temp/fresh.txt"], "level": 40}), "level"),
    ] {
        let e = catalog
            .checker(&store)
            .check_job(&NewJob::new("maintenance", files::COMPRESS_KIND).payload(&payload))
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{payload}: {e}");
    }
    let left: Vec<_> = fs::read_dir(root.join("artifacts/archives"))
        .unwrap()
        .collect();
    assert_eq!(left.len(), 1, "no partial archive left");
}
