//! The rest of what the platform backed up, in the same set: the queue file
//! (SQLite's online backup, consistent while jobd runs — the same snapshot,
//! compression and verification as a tenant's) and folders of the data
//! directory (`uploads/`, `logs/`), each one `<folder>.tar.zst`.
//!
//! A folder's archive holds its regular files and directories under their
//! paths relative to the folder; symlinks are not followed and not stored
//! (counted as skipped).  It is hashed as it is written and verified by
//! reading it back: every entry's size, and the file count and bytes the
//! manifest records.
//!
//! Restores write somewhere new and overwrite nothing: [`restore_queue`]
//! writes the verified queue file to a path that must not exist (stop the
//! daemon, then move it into place); [`restore_folder`] unpacks into a
//! directory that must not exist or be empty, refusing any entry that is
//! not a plain relative path, a file or a directory, and stopping at the
//! bytes the manifest records.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    decompress_capped, integrity_check, read_manifest, sha256_file, snapshot_verified,
    BackupStatus, HashingWriter, TenantBackup, ZSTD_LEVEL,
};
use crate::{hex, DataDir};
use jobd::error::{Error, Result};

/// The folders a set holds unless its options say: those that exist.
pub const DEFAULT_FOLDERS: &[&str] = &["uploads", "logs"];
/// Folders a backup may take.
pub const BACKED_UP: &[&str] = &["uploads", "logs", "artifacts", "templates"];
/// The queue file's archive in a set.
pub const QUEUE_FILE: &str = "queue.db.zst";

/// A folder's line in a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FolderBackup {
    /// Relative to the data directory.
    pub folder: String,
    /// The archive's file name in the set (`<folder>.tar.zst`).
    pub file: String,
    pub status: BackupStatus,
    pub files: u64,
    pub symlinks_skipped: u64,
    pub source_bytes: u64,
    pub compressed_bytes: u64,
    pub sha256: String,
    pub duration_ms: u64,
    pub error: Option<String>,
}

/// Back up the queue file at `queue` into `dir`: its line (named after the file).
pub(super) fn backup_queue(queue: &Path, dir: &Path) -> TenantBackup {
    let t0 = Instant::now();
    let result = Connection::open_with_flags(
        queue,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::from_sqlite("opening the queue file for its backup", queue, e))
    .and_then(|src| snapshot_verified(src, queue, dir, "queue", QUEUE_FILE));
    let (status, (source_bytes, compressed_bytes, sha256), error) = match result {
        Ok(done) => (BackupStatus::Ok, done, None),
        Err(e) => {
            tracing::warn!(error = %e, "queue file backup failed");
            let _ = fs::remove_file(dir.join(QUEUE_FILE));
            (
                BackupStatus::Failed,
                (0, 0, String::new()),
                Some(e.to_string()),
            )
        }
    };
    TenantBackup {
        tenant: "queue".into(),
        file: QUEUE_FILE.into(),
        status,
        source_bytes,
        compressed_bytes,
        ratio: source_bytes as f64 / compressed_bytes.max(1) as f64,
        sha256,
        duration_ms: t0.elapsed().as_millis() as u64,
        error,
    }
}

/// The folders `names` resolve to (each checked to stay in the data
/// directory, under one of [`BACKED_UP`]).
pub(super) fn folders(data: &DataDir, names: Option<&[String]>) -> Result<Vec<(String, PathBuf)>> {
    let names: Vec<String> = match names {
        Some(n) => n.to_vec(),
        None => DEFAULT_FOLDERS
            .iter()
            .filter(|f| data.root().join(f).is_dir())
            .map(|f| f.to_string())
            .collect(),
    };
    names
        .into_iter()
        .map(|name| {
            let path = data
                .resolve("folder", &name, BACKED_UP, true)
                .map_err(|e| Error::invalid("folders", e))?;
            if !path.is_dir() {
                return Err(Error::invalid(
                    "folders",
                    format!("{name:?} is not a folder"),
                ));
            }
            Ok((name, path))
        })
        .collect()
}

/// Archive `path` (the folder `name`) into `dir`, verified.
pub(super) fn backup_folder(name: &str, path: &Path, dir: &Path) -> FolderBackup {
    let t0 = Instant::now();
    let file = format!("{}.tar.zst", name.replace('/', "_"));
    let archive = dir.join(&file);
    let mut line = FolderBackup {
        folder: name.to_string(),
        file: file.clone(),
        status: BackupStatus::Ok,
        files: 0,
        symlinks_skipped: 0,
        source_bytes: 0,
        compressed_bytes: 0,
        sha256: String::new(),
        duration_ms: 0,
        error: None,
    };
    let outcome = write_folder(path, &archive, &mut line).and_then(|()| {
        let (files, bytes) = read_back(&archive, line.source_bytes)?;
        if (files, bytes) != (line.files, line.source_bytes) {
            return Err(Error::Corrupt {
                path: archive.clone(),
                reason: format!(
                    "reads back as {files} files of {bytes} bytes; {} of {} were written",
                    line.files, line.source_bytes
                ),
            });
        }
        Ok(())
    });
    if let Err(e) = outcome {
        tracing::warn!(folder = name, error = %e, "folder backup failed");
        let _ = fs::remove_file(&archive);
        line.status = BackupStatus::Failed;
        line.error = Some(e.to_string());
    }
    line.duration_ms = t0.elapsed().as_millis() as u64;
    line
}

fn write_folder(path: &Path, archive: &Path, line: &mut FolderBackup) -> Result<()> {
    let out = File::create(archive).map_err(Error::io("creating", archive))?;
    let hashing = HashingWriter {
        inner: BufWriter::new(out),
        hash: Sha256::new(),
        bytes: 0,
    };
    let io = |e| Error::io("archiving into", archive)(e);
    let encoder = zstd::stream::write::Encoder::new(hashing, ZSTD_LEVEL).map_err(io)?;
    let mut tar = tar::Builder::new(encoder);
    tar.follow_symlinks(false);
    add_dir(&mut tar, path, Path::new(""), line).map_err(io)?;
    let hashing = tar.into_inner().map_err(io)?.finish().map_err(io)?;
    line.compressed_bytes = hashing.bytes;
    line.sha256 = hex(&hashing.hash.finalize());
    let file = hashing.inner.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)
}

fn add_dir<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &Path,
    rel: &Path,
    line: &mut FolderBackup,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = rel.join(entry.file_name());
        let meta = fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            line.symlinks_skipped += 1;
        } else if meta.is_dir() {
            tar.append_dir(&name, &path)?;
            add_dir(tar, &path, &name, line)?;
        } else if meta.is_file() {
            let mut f = File::open(&path)?;
            let mut header = tar::Header::new_gnu();
            header.set_metadata(&f.metadata()?);
            let size = header.size()?;
            tar.append_data(&mut header, &name, (&mut f).take(size))?;
            line.files += 1;
            line.source_bytes += size;
        }
    }
    Ok(())
}

/// Read an archive back: (files, bytes), never reading past `cap` bytes of
/// content.
fn read_back(archive: &Path, cap: u64) -> Result<(u64, u64)> {
    let corrupt = |reason: String| Error::Corrupt {
        path: archive.to_path_buf(),
        reason,
    };
    let file = File::open(archive).map_err(Error::io("reading", archive))?;
    let decoder = zstd::stream::read::Decoder::new(file)
        .map_err(|e| corrupt(format!("not a zstd archive: {e}")))?;
    let mut tar = tar::Archive::new(decoder);
    let (mut files, mut bytes) = (0u64, 0u64);
    for entry in tar.entries().map_err(|e| corrupt(e.to_string()))? {
        let mut entry = entry.map_err(|e| corrupt(e.to_string()))?;
        if entry.header().entry_type().is_file() {
            let n = std::io::copy(&mut entry, &mut std::io::sink())
                .map_err(|e| corrupt(e.to_string()))?;
            files += 1;
            bytes += n;
            if bytes > cap {
                return Err(corrupt(format!("holds more than the {cap} bytes recorded")));
            }
        }
    }
    Ok((files, bytes))
}

/// The set's directory, its name checked.
pub(super) fn set_dir(data: &DataDir, set: &str) -> Result<PathBuf> {
    if set.is_empty() || !set.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(Error::invalid(
            "backup set",
            format!("{set:?} is not a backup set name (like 20261123T020000Z)"),
        ));
    }
    Ok(data.backups().join(set))
}

/// The archive `file` of a set, checked against the manifest's SHA-256.
pub(super) fn checked_archive(dir: &Path, file: &str, sha256: &str) -> Result<PathBuf> {
    if file.contains('/') || file.starts_with('.') {
        return Err(Error::Corrupt {
            path: dir.join("manifest.json"),
            reason: format!("file name {file:?} leaves the set"),
        });
    }
    let archive = dir.join(file);
    let sha = sha256_file(&archive)?;
    if sha != sha256 {
        return Err(Error::Corrupt {
            path: archive,
            reason: format!("its SHA-256 {sha} is not the manifest's {sha256}"),
        });
    }
    Ok(archive)
}

/// Write the queue file of backup set `set` to `to`, which must not exist:
/// checked against its manifest, decompressed no further than the size it
/// records, and checked with `PRAGMA integrity_check`.  Returns its size.
pub fn restore_queue(data: &DataDir, set: &str, to: &Path) -> Result<u64> {
    let dir = set_dir(data, set)?;
    let manifest = read_manifest(&dir)?;
    let line = manifest.queue.ok_or_else(|| Error::Missing {
        what: "queue file",
        name: format!("(backup set {set} holds none)"),
    })?;
    if line.status != BackupStatus::Ok {
        return Err(Error::invalid(
            "backup set",
            format!(
                "the queue file's backup in {set} failed: {}",
                line.error.unwrap_or_default()
            ),
        ));
    }
    if to.exists() || to.with_extension("db-wal").exists() {
        return Err(Error::invalid(
            "to",
            format!(
                "{} exists: restore to a new path (nothing is overwritten)",
                to.display()
            ),
        ));
    }
    let archive = checked_archive(&dir, &line.file, &line.sha256)?;
    let partial = to.with_extension("restoring");
    let outcome = (|| {
        let n = decompress_capped(&archive, &partial, line.source_bytes)?;
        if n != line.source_bytes {
            return Err(Error::Corrupt {
                path: archive.clone(),
                reason: format!(
                    "decompresses to {n} bytes, the manifest says {}",
                    line.source_bytes
                ),
            });
        }
        integrity_check(&partial)?;
        fs::rename(&partial, to).map_err(Error::io("restoring", to))?;
        Ok(n)
    })();
    let _ = fs::remove_file(&partial);
    let n = outcome?;
    tracing::info!(set, to = %to.display(), bytes = n, "queue file restored");
    Ok(n)
}

/// What [`restore_folder`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FolderRestore {
    pub files: u64,
    pub bytes: u64,
}

/// Unpack folder `folder` of backup set `set` into `to`, a directory that
/// must not exist or be empty.
pub fn restore_folder(data: &DataDir, set: &str, folder: &str, to: &Path) -> Result<FolderRestore> {
    let dir = set_dir(data, set)?;
    let manifest = read_manifest(&dir)?;
    let line = manifest
        .folders
        .iter()
        .find(|f| f.folder == folder)
        .ok_or_else(|| Error::Missing {
            what: "folder",
            name: format!("{folder} (not in backup set {set})"),
        })?;
    if line.status != BackupStatus::Ok {
        return Err(Error::invalid(
            "backup set",
            format!(
                "{folder}'s backup in {set} failed: {}",
                line.error.clone().unwrap_or_default()
            ),
        ));
    }
    if to.exists()
        && fs::read_dir(to)
            .map_err(Error::io("reading", to))?
            .next()
            .is_some()
    {
        return Err(Error::invalid(
            "to",
            format!(
                "{} is not empty: restore into a new folder (nothing is overwritten)",
                to.display()
            ),
        ));
    }
    let archive = checked_archive(&dir, &line.file, &line.sha256)?;
    fs::create_dir_all(to).map_err(Error::io("creating", to))?;
    let corrupt = |reason: String| Error::Corrupt {
        path: archive.clone(),
        reason,
    };
    let file = File::open(&archive).map_err(Error::io("reading", &archive))?;
    let decoder = zstd::stream::read::Decoder::new(file)
        .map_err(|e| corrupt(format!("not a zstd archive: {e}")))?;
    let mut tar = tar::Archive::new(decoder);
    let mut done = FolderRestore { files: 0, bytes: 0 };
    for entry in tar.entries().map_err(|e| corrupt(e.to_string()))? {
        let mut entry = entry.map_err(|e| corrupt(e.to_string()))?;
        let rel = entry
            .path()
            .map_err(|e| corrupt(e.to_string()))?
            .into_owned();
        if rel.as_os_str().is_empty()
            || !rel.components().all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(corrupt(format!(
                "entry {} is not a plain relative path",
                rel.display()
            )));
        }
        let target = to.join(&rel);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            fs::create_dir_all(&target).map_err(Error::io("creating", &target))?;
        } else if kind.is_file() {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(Error::io("creating", parent))?;
            }
            let left = line.source_bytes.saturating_sub(done.bytes);
            let mut out = File::create_new(&target).map_err(Error::io("restoring", &target))?;
            let n = std::io::copy(&mut (&mut entry).take(left + 1), &mut out)
                .map_err(Error::io("restoring", &target))?;
            done.bytes += n;
            done.files += 1;
            if done.bytes > line.source_bytes {
                return Err(corrupt(format!(
                    "holds more than the {} bytes its manifest records",
                    line.source_bytes
                )));
            }
        } else {
            return Err(corrupt(format!(
                "entry {} is neither a file nor a folder",
                rel.display()
            )));
        }
    }
    tracing::info!(set, folder, to = %to.display(), files = done.files, "folder restored");
    Ok(done)
}
