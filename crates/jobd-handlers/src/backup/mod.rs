//! Backups of every tenant database: consistent, compressed, verified,
//! atomic, with retention; and restore.
//!
//! A backup set is `<data dir>/backups/<UTC timestamp>/` holding
//! `<tenant>.db.zst` per tenant and `manifest.json`.  For each tenant:
//!
//! 1. SQLite's online backup API copies the database in one step under a
//!    read transaction: a consistent snapshot while the app keeps writing
//!    (WAL readers do not block writers);
//! 2. the snapshot is compressed with zstd as a stream, hashed (SHA-256) on
//!    the way out, and fsynced;
//! 3. the archive is verified: decompressed (never past the snapshot's
//!    size) and checked with `PRAGMA integrity_check`.
//!
//! The set is built in a hidden `.<timestamp>.partial` directory and renamed
//! into place when its manifest is written, so a set either exists complete
//! or not at all.  Retention then keeps the newest `keep` sets.
//!
//! Restore checks the archive against its manifest (SHA-256), decompresses
//! it with the manifest's size as a hard cap (a crafted archive cannot fill
//! the disk), checks its integrity, and copies it into the tenant database
//! with the backup API — safe while the app has the database open.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::Backup;
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod more;

pub use more::{
    restore_folder, restore_queue, FolderBackup, FolderRestore, BACKED_UP, DEFAULT_FOLDERS,
    QUEUE_FILE,
};

use crate::blocking::{Checked, NO_DATA};
use crate::schedules::BACKUP_KIND;
use crate::{
    hex, job_error, per_tenant, said, tenant_threads, write_atomically, DataDir, Reporter, Run,
};
use jobd::clock::Millis;
use jobd::error::{Error, Result};
use jobd::worker::JobError;

/// zstd level: 3 is zstd's default, a good speed/ratio balance for SQLite pages.
const ZSTD_LEVEL: i32 = 3;
/// A manifest file larger than this is not a manifest.
const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// What to back up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupOptions {
    /// Backup sets to keep (the newest), at least 1.  Default 7.
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// Only these tenants (default: every tenant).
    #[serde(default)]
    pub tenants: Option<Vec<String>>,
    /// The queue file too, when the job runs on one.  Default true.
    #[serde(default = "yes")]
    pub queue: bool,
    /// Folders of the data directory, each one `<folder>.tar.zst` (default
    /// `uploads` and `logs`, those that exist; `[]` for none).
    #[serde(default)]
    pub folders: Option<Vec<String>>,
    /// Who gets the backup-report mail (a `send_email` job after the set).
    #[serde(default)]
    pub email: Option<crate::email::Recipients>,
}

fn default_keep() -> usize {
    7
}

fn yes() -> bool {
    true
}

impl BackupOptions {
    /// What every run would refuse, checked without touching a file.
    pub fn validate(&self) -> Result<()> {
        if self.keep == 0 {
            return Err(Error::invalid("keep", "must keep at least 1 backup set"));
        }
        Ok(())
    }
}

impl Default for BackupOptions {
    fn default() -> BackupOptions {
        BackupOptions {
            keep: default_keep(),
            tenants: None,
            queue: true,
            folders: None,
            email: None,
        }
    }
}

/// One tenant's line in a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantBackup {
    pub tenant: String,
    /// The archive's file name in the set (`<tenant>.db.zst`).
    pub file: String,
    pub status: BackupStatus,
    pub source_bytes: u64,
    pub compressed_bytes: u64,
    /// source / compressed.
    pub ratio: f64,
    /// SHA-256 of the archive file, hex.
    pub sha256: String,
    pub duration_ms: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupStatus {
    Ok,
    Failed,
}

/// A backup set's `manifest.json`, and the backup job's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The set's name (its directory), a UTC timestamp.
    pub set: String,
    pub path: PathBuf,
    pub created_at: Millis,
    pub tenants: Vec<TenantBackup>,
    pub ok: usize,
    pub failed: usize,
    pub source_bytes: u64,
    pub compressed_bytes: u64,
    pub duration_ms: u64,
    /// Older sets removed by retention.
    pub removed_sets: Vec<String>,
    /// The queue file's line (its `tenant` is `queue`), when it was backed up.
    #[serde(default)]
    pub queue: Option<TenantBackup>,
    /// The folders' lines.
    #[serde(default)]
    pub folders: Vec<FolderBackup>,
}

impl Manifest {
    /// Every line that failed: tenants, the queue file, folders.
    pub fn failures(&self) -> Vec<(String, String)> {
        let tenants = self.tenants.iter().chain(self.queue.as_ref());
        let lines = tenants
            .filter(|l| l.status == BackupStatus::Failed)
            .map(|l| (l.tenant.clone(), l.error.clone().unwrap_or_default()));
        let folders = self
            .folders
            .iter()
            .filter(|f| f.status == BackupStatus::Failed)
            .map(|f| (f.folder.clone(), f.error.clone().unwrap_or_default()));
        lines.chain(folders).collect()
    }
}

/// Back up the tenants of `opts` into a new set under `data`'s backups.
/// Fails as a whole only for bad options or when the set cannot be written
/// at all; a tenant that fails is recorded in the manifest as failed.
pub fn backup_tenants(
    data: &DataDir,
    opts: &BackupOptions,
    now: Millis,
    reporter: &Reporter,
) -> Result<Manifest> {
    backup_set(data, opts, None, now, reporter)
}

/// [`backup_tenants`], and the queue file at `queue` (when given and
/// `opts.queue`) and `opts`' folders, into one set.
pub fn backup_set(
    data: &DataDir,
    opts: &BackupOptions,
    queue: Option<&Path>,
    now: Millis,
    reporter: &Reporter,
) -> Result<Manifest> {
    opts.validate()?;
    let folders = more::folders(data, opts.folders.as_deref())?;
    let tenants = match &opts.tenants {
        Some(list) => {
            for t in list {
                data.tenants().path(t)?; // unknown or unsafe tenant: refuse the job
            }
            list.clone()
        }
        None => data.tenants().list()?,
    };
    let started = Instant::now();
    let root = data.backups();
    let set = unique_set_name(&root, now)?;
    let work = root.join(format!(".{set}.partial"));
    std::fs::create_dir_all(&work).map_err(Error::io("creating", &work))?;

    // Tenants in parallel (each is one read transaction, zstd and a check).
    let lines = per_tenant(
        &tenants,
        tenant_threads(4),
        reporter,
        "backing up",
        |tenant| {
            let t0 = Instant::now();
            let file = format!("{tenant}.db.zst");
            match backup_one(data, tenant, &work, &file) {
                Ok((source_bytes, compressed_bytes, sha256)) => TenantBackup {
                    tenant: tenant.to_string(),
                    file,
                    status: BackupStatus::Ok,
                    source_bytes,
                    compressed_bytes,
                    ratio: source_bytes as f64 / compressed_bytes.max(1) as f64,
                    sha256,
                    duration_ms: t0.elapsed().as_millis() as u64,
                    error: None,
                },
                Err(e) => {
                    tracing::warn!(tenant = %tenant, error = %e, "tenant backup failed");
                    let _ = std::fs::remove_file(work.join(&file));
                    TenantBackup {
                        tenant: tenant.to_string(),
                        file,
                        status: BackupStatus::Failed,
                        source_bytes: 0,
                        compressed_bytes: 0,
                        ratio: 0.0,
                        sha256: String::new(),
                        duration_ms: t0.elapsed().as_millis() as u64,
                        error: Some(e.to_string()),
                    }
                }
            }
        },
    );
    let Some(lines) = lines else {
        let _ = std::fs::remove_dir_all(&work);
        return Err(Error::Stopped {
            operation: "backup",
        });
    };
    let queue_line = queue
        .filter(|_| opts.queue)
        .map(|q| more::backup_queue(q, &work));
    let mut folder_lines = Vec::with_capacity(folders.len());
    for (name, path) in &folders {
        if reporter.is_cancelled() {
            let _ = std::fs::remove_dir_all(&work);
            return Err(Error::Stopped {
                operation: "backup",
            });
        }
        reporter.report(99.0, "backing up folders", Some(name.clone()));
        folder_lines.push(more::backup_folder(name, path, &work));
    }

    let ok = lines
        .iter()
        .filter(|l| l.status == BackupStatus::Ok)
        .count();
    let mut manifest = Manifest {
        set: set.clone(),
        path: root.join(&set),
        created_at: now,
        ok,
        failed: lines.len() - ok,
        source_bytes: lines.iter().map(|l| l.source_bytes).sum(),
        compressed_bytes: lines.iter().map(|l| l.compressed_bytes).sum(),
        duration_ms: started.elapsed().as_millis() as u64,
        tenants: lines,
        removed_sets: Vec::new(),
        queue: queue_line,
        folders: folder_lines,
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    write_atomically(&work.join("manifest.json"), &json)?;
    std::fs::rename(&work, &manifest.path).map_err(Error::io("publishing", &manifest.path))?;
    sync_dir(&root)?;
    manifest.removed_sets = apply_retention(&root, opts.keep)?;
    reporter.report(
        100.0,
        "done",
        Some(format!("{} ok, {} failed", manifest.ok, manifest.failed)),
    );
    tracing::info!(set = %manifest.set, ok = manifest.ok, failed = manifest.failed,
                   bytes = manifest.compressed_bytes, "backup set written");
    Ok(manifest)
}

/// Snapshot, compress, verify one tenant into `dir/file`.
/// Returns (source bytes, compressed bytes, sha256).
fn backup_one(data: &DataDir, tenant: &str, dir: &Path, file: &str) -> Result<(u64, u64, String)> {
    let src = data.tenants().open_read_only(tenant)?;
    let src_path = data.tenants().path(tenant)?;
    snapshot_verified(src, &src_path, dir, tenant, file)
}

/// Snapshot the database `src` (at `src_path`) with the online backup API,
/// compress it into `dir/file` and verify the archive.
/// Returns (source bytes, compressed bytes, sha256).
fn snapshot_verified(
    src: Connection,
    src_path: &Path,
    dir: &Path,
    stem: &str,
    file: &str,
) -> Result<(u64, u64, String)> {
    let tenant = stem;
    let snapshot = dir.join(format!("{tenant}.snapshot"));
    {
        let mut dst = Connection::open(&snapshot)
            .map_err(|e| Error::from_sqlite("creating backup snapshot", &snapshot, e))?;
        let backup = Backup::new(&src, &mut dst)
            .map_err(|e| Error::from_sqlite("starting online backup of", src_path, e))?;
        copy_all(&backup).map_err(|e| Error::from_sqlite("online backup of", src_path, e))?;
    }
    drop(src);
    let source_bytes = file_len(&snapshot)?;

    let archive = dir.join(file);
    let (compressed_bytes, sha) = compress(&snapshot, &archive)?;
    std::fs::remove_file(&snapshot).map_err(Error::io("removing", &snapshot))?;

    // Verify what was written, as a restore would read it.
    let check = dir.join(format!("{tenant}.verify"));
    let verified = decompress_capped(&archive, &check, source_bytes).and_then(|n| {
        if n != source_bytes {
            return Err(Error::Corrupt {
                path: archive.clone(),
                reason: format!("decompresses to {n} bytes, the snapshot had {source_bytes}"),
            });
        }
        integrity_check(&check)
    });
    let _ = std::fs::remove_file(&check);
    verified?;
    Ok((source_bytes, compressed_bytes, sha))
}

/// Copy every page in one step — one read transaction on the source, so one
/// consistent snapshot — waiting while the destination is locked.
fn copy_all(backup: &Backup) -> rusqlite::Result<()> {
    use rusqlite::backup::StepResult;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match backup.step(-1)? {
            StepResult::Done => return Ok(()),
            StepResult::More => {}
            StepResult::Busy | StepResult::Locked if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    Some("database stayed locked during the online backup".into()),
                ))
            }
        }
    }
}

/// What [`restore`] did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub tenant: String,
    pub set: String,
    pub bytes: u64,
    /// True when the tenant existed and its contents were replaced.
    pub replaced: bool,
}

/// Limits of a restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The most a restored tenant database may take in the staging
    /// directory, in bytes.  A manifest claiming more is refused before
    /// anything is written: a manifest is data from the backup volume, and a
    /// crafted one must not decide how much of the disk a restore fills.
    pub max_bytes: u64,
}

/// [`RestoreOptions::max_bytes`] by default: 4 GiB.
pub const DEFAULT_RESTORE_MAX_BYTES: u64 = 4 << 30;

impl Default for RestoreOptions {
    fn default() -> RestoreOptions {
        RestoreOptions {
            max_bytes: DEFAULT_RESTORE_MAX_BYTES,
        }
    }
}

/// [`restore_with`] with the default limits.
pub fn restore(data: &DataDir, set: &str, tenant: &str) -> Result<RestoreReport> {
    restore_with(data, set, tenant, &RestoreOptions::default())
}

/// Bring tenant `tenant` back from backup set `set` (as named in
/// `<data dir>/backups/`).  The archive must match its manifest; it is
/// refused, with nothing changed, when it is corrupt, when its manifest
/// claims more than `opts.max_bytes` (or than the disk has free), or when
/// it decompresses past the size its manifest records.
pub fn restore_with(
    data: &DataDir,
    set: &str,
    tenant: &str,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    jobd::store::validate_tenant(tenant)?;
    let dir = more::set_dir(data, set)?;
    let manifest = read_manifest(&dir)?;
    let line = manifest
        .tenants
        .iter()
        .find(|l| l.tenant == tenant)
        .ok_or_else(|| Error::Missing {
            what: "tenant",
            name: format!("{tenant} (not in backup set {set})"),
        })?;
    if line.status != BackupStatus::Ok {
        return Err(Error::invalid(
            "backup set",
            format!(
                "{tenant}'s backup in {set} failed: {}",
                line.error.as_deref().unwrap_or("")
            ),
        ));
    }
    let archive = more::checked_archive(&dir, &line.file, &line.sha256)?;
    let staging = data.tenants().root().join(".staging");
    std::fs::create_dir_all(&staging).map_err(Error::io("creating", &staging))?;
    if line.source_bytes > opts.max_bytes {
        return Err(Error::invalid(
            "backup set",
            format!(
                "the manifest of {set} says {tenant} is {} bytes, more than the restore limit of \
                 {} bytes; nothing was written (raise the limit if the tenant really is that large)",
                line.source_bytes, opts.max_bytes
            ),
        ));
    }
    if let Some(free) = jobd::store::free_bytes(&staging) {
        if line.source_bytes > free {
            return Err(Error::DiskFull {
                operation: "restoring (the disk has less free space than the tenant's size)",
                path: staging,
            });
        }
    }
    let restored = staging.join(format!("{tenant}.restore"));
    let outcome = (|| {
        let n = decompress_capped(&archive, &restored, line.source_bytes)?;
        if n != line.source_bytes {
            return Err(Error::Corrupt {
                path: archive.clone(),
                reason: format!(
                    "decompresses to {n} bytes, the manifest says {}",
                    line.source_bytes
                ),
            });
        }
        integrity_check(&restored).map_err(|e| match e {
            Error::NotAQueue { .. } => Error::Corrupt {
                path: archive.clone(),
                reason: format!("it decompresses to {n} bytes that are not a SQLite database"),
            },
            e => e,
        })?;
        let target = data.tenants().path_unchecked(tenant)?;
        let replaced = target.exists();
        if replaced {
            // Into the live database through SQLite, so open connections and
            // its WAL stay consistent.
            let from = Connection::open_with_flags(&restored, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|e| Error::from_sqlite("opening restored copy", &restored, e))?;
            let mut to = data.tenants().open_read_write(tenant)?;
            Backup::new(&from, &mut to)
                .and_then(|b| copy_all(&b))
                .map_err(|e| Error::from_sqlite("restoring into", &target, e))?;
        } else {
            std::fs::rename(&restored, &target).map_err(Error::io("restoring", &target))?;
        }
        Ok((n, replaced))
    })();
    let _ = std::fs::remove_file(&restored);
    let (bytes, replaced) = outcome?;
    tracing::info!(tenant, set, bytes, replaced, "tenant restored");
    Ok(RestoreReport {
        tenant: tenant.to_string(),
        set: set.to_string(),
        bytes,
        replaced,
    })
}

/// The backup sets under `data`, oldest first.
pub fn list_sets(data: &DataDir) -> Result<Vec<String>> {
    sets(&data.backups())
}

/// Read and check a set's manifest.
pub fn read_manifest(set_dir: &Path) -> Result<Manifest> {
    let path = set_dir.join("manifest.json");
    let file = File::open(&path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => Error::invalid(
            "backup set",
            format!(
                "{} has no manifest.json (not a backup set)",
                set_dir.display()
            ),
        ),
        _ => Error::Io {
            operation: "reading",
            path: path.clone(),
            source,
        },
    })?;
    let mut text = Vec::new();
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(Error::io("reading", &path))?;
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(Error::Corrupt {
            path,
            reason: "larger than any manifest".into(),
        });
    }
    serde_json::from_slice(&text).map_err(|e| Error::Corrupt {
        path,
        reason: format!("not a backup manifest: {e}"),
    })
}

/// Compress `from` into `to` (zstd stream), fsynced.  Returns (bytes, sha256).
fn compress(from: &Path, to: &Path) -> Result<(u64, String)> {
    let mut input = BufReader::new(File::open(from).map_err(Error::io("reading", from))?);
    let out = File::create(to).map_err(Error::io("creating", to))?;
    let hashing = HashingWriter {
        inner: BufWriter::new(out),
        hash: Sha256::new(),
        bytes: 0,
    };
    let mut encoder = zstd::stream::write::Encoder::new(hashing, ZSTD_LEVEL)
        .map_err(Error::io("compressing", to))?;
    std::io::copy(&mut input, &mut encoder).map_err(Error::io("compressing into", to))?;
    let hashing = encoder
        .finish()
        .map_err(Error::io("compressing into", to))?;
    let file = hashing.inner.into_inner().map_err(|e| Error::Io {
        operation: "writing",
        path: to.to_path_buf(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(Error::io("syncing", to))?;
    Ok((hashing.bytes, hex(&hashing.hash.finalize())))
}

/// Decompress `from` into `to`, refusing to write more than `cap` bytes.
fn decompress_capped(from: &Path, to: &Path, cap: u64) -> Result<u64> {
    let corrupt = |reason: String| Error::Corrupt {
        path: from.to_path_buf(),
        reason,
    };
    let input = File::open(from).map_err(Error::io("reading", from))?;
    let decoder = zstd::stream::read::Decoder::new(BufReader::new(input))
        .map_err(|e| corrupt(format!("not a zstd archive: {e}")))?;
    let mut out = BufWriter::new(File::create(to).map_err(Error::io("creating", to))?);
    let mut limited = decoder.take(cap + 1);
    let n = std::io::copy(&mut limited, &mut out).map_err(|e| {
        if e.kind() == std::io::ErrorKind::StorageFull {
            Error::DiskFull {
                operation: "decompressing",
                path: to.to_path_buf(),
            }
        } else {
            corrupt(format!("does not decompress: {e}"))
        }
    })?;
    out.flush().map_err(Error::io("writing", to))?;
    if n > cap {
        return Err(corrupt(format!(
            "oversized: it decompresses to more than the {cap} bytes recorded for it; refused"
        )));
    }
    Ok(n)
}

fn integrity_check(path: &Path) -> Result<()> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| Error::from_sqlite("opening for verification", path, e))?;
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| Error::from_sqlite("verifying", path, e))?;
    if verdict != "ok" {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            reason: format!("integrity_check: {verdict}"),
        });
    }
    Ok(())
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(Error::io("reading", path))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(Error::io("reading", path))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hex(&hash.finalize()))
}

fn file_len(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .map_err(Error::io("reading", path))?
        .len())
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("syncing", dir))
}

/// Set names are UTC timestamps, `YYYYMMDDTHHMMSSZ`, with `-N` when two
/// sets start in the same second.
fn unique_set_name(root: &Path, now: Millis) -> Result<String> {
    let base = chrono::DateTime::from_timestamp_millis(now)
        .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string())
        .ok_or_else(|| Error::invalid("clock", format!("{now} ms is not a time")))?;
    let taken =
        |name: &str| root.join(name).exists() || root.join(format!(".{name}.partial")).exists();
    if !taken(&base) {
        return Ok(base);
    }
    (2..1000)
        .map(|n| format!("{base}-{n}"))
        .find(|name| !taken(name))
        .ok_or_else(|| Error::invalid("backup set", "too many sets in one second"))
}

fn is_set_name(name: &str) -> bool {
    let stamp = name.split('-').next().unwrap_or("");
    stamp.len() == 16
        && stamp.ends_with('Z')
        && stamp.as_bytes()[8] == b'T'
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Complete sets, oldest first.
fn sets(root: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                operation: "listing",
                path: root.to_path_buf(),
                source,
            })
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| is_set_name(n) && root.join(n).join("manifest.json").exists())
        .collect();
    // Same-second sets sort by their counter.
    names.sort_by_key(|n| {
        let (stamp, n) = n.split_once('-').unwrap_or((n, "1"));
        (stamp.to_string(), n.parse::<u32>().unwrap_or(0))
    });
    Ok(names)
}

/// Remove all but the newest `keep` complete sets.  Returns the removed names.
fn apply_retention(root: &Path, keep: usize) -> Result<Vec<String>> {
    let all = sets(root)?;
    let excess = all.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for name in all.into_iter().take(excess) {
        let dir = root.join(&name);
        std::fs::remove_dir_all(&dir).map_err(Error::io("removing old backup set", &dir))?;
        removed.push(name);
    }
    Ok(removed)
}

struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

blocking_job! {
    /// The `backup_tenants` job: payload [`BackupOptions`], result [`Manifest`].
    BackupTenants = BackupHandler: BACKUP_KIND, BackupOptions => Manifest,
    check_backup, run_backup
}

/// It keeps at least one set, and every tenant it names exists.
fn check_backup(data: Option<&DataDir>, opts: &BackupOptions, _: Option<&str>) -> Checked {
    let data = data.ok_or(NO_DATA)?;
    opts.validate().map_err(said)?;
    if opts.folders.is_some() {
        more::folders(data, opts.folders.as_deref()).map_err(said)?;
    }
    for a in opts.email.iter().flat_map(|r| r.list()) {
        a.parse::<lettre::Address>()
            .map_err(|e| format!("email: {a:?} is not an address: {e}"))?;
    }
    let mut named = opts.tenants.iter().flatten();
    named.try_for_each(|t| data.tenants().path(t).map(drop).map_err(said))
}

fn run_backup(run: &Run, opts: BackupOptions, r: &Reporter) -> Result<Manifest, JobError> {
    let manifest =
        backup_set(run.data()?, &opts, run.store.path(), run.now, r).map_err(job_error)?;
    if let Some(to) = &opts.email {
        let id = report_mail(&run.store, run.job_id, &manifest, to).map_err(job_error)?;
        tracing::info!(email_job = id, "backup report mail enqueued");
    }
    Ok(manifest)
}

/// Enqueue the backup-report mail of `manifest` (once per backup job).
pub fn report_mail(
    store: &jobd::Store,
    job_id: i64,
    manifest: &Manifest,
    to: &crate::email::Recipients,
) -> Result<i64> {
    let tenants: Vec<serde_json::Value> = manifest
        .tenants
        .iter()
        .chain(manifest.queue.as_ref())
        .map(|l| {
            serde_json::json!({"name": l.tenant, "status": l.status, "compressed_bytes": l.compressed_bytes})
        })
        .chain(manifest.folders.iter().map(|f| {
            serde_json::json!({"name": format!("{}/", f.folder), "status": f.status,
                               "compressed_bytes": f.compressed_bytes})
        }))
        .collect();
    let mail = serde_json::json!({
        "to": to,
        "template": "backup-report",
        "data": {
            "set": manifest.set, "ok": manifest.ok, "failed": manifest.failed,
            "total": manifest.tenants.len(), "tenants": tenants,
        },
    });
    let job = jobd::NewJob::new(crate::email::EMAIL_QUEUE, crate::email::SEND_KIND)
        .payload(&mail)
        .unique_key(format!("backup-report:{job_id}"));
    store.enqueue(&job)
}
