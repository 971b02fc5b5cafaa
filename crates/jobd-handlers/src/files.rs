//! Files of the data directory: `cleanup_files` removes old ones,
//! `compress_files` packs some into one `.tar.zst` with a manifest.
//!
//! Both take paths relative to the data directory and resolve them with
//! [`DataDir::resolve`]: symlinks resolved, checked to stay inside, and
//! inside the folders each allows — never the tenant databases, the
//! backups, the templates or the queue file.
//!
//! * `cleanup_files` walks each folder without following symlinks (a
//!   symlink is left alone, and so is what it points to), removes the
//!   regular files whose modification time is older than the age, then the
//!   directories the removal left empty (not the folder itself); `dry_run`
//!   counts what it would remove and removes nothing.  A default schedule
//!   runs it every 6 hours on `temp/` (files older than a day).
//! * `compress_files` writes `manifest.json` (each file's path, size and
//!   SHA-256) and then the files into a zstd-compressed tar under
//!   `artifacts/archives/`, through a temporary name renamed when complete;
//!   an existing archive is not overwritten unless `overwrite` says so.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use jobd::worker::{JobError, Reporter};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::blocking::{BlockingJob, Run};
use crate::DataDir;

pub const CLEANUP_KIND: &str = "cleanup_files";
pub const COMPRESS_KIND: &str = "compress_files";
/// Folders `cleanup_files` may clean.
pub const CLEANABLE: &[&str] = &["temp", "artifacts", "uploads", "logs"];
/// Folders `compress_files` may read.
pub const READABLE: &[&str] = &["temp", "artifacts", "uploads", "logs"];
/// Files an archive may hold.
pub const MAX_FILES: usize = 10_000;

fn default_folders() -> Vec<String> {
    vec!["temp".into()]
}
fn default_age() -> u64 {
    24
}

/// `cleanup_files`' payload.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CleanupSpec {
    /// Relative to the data directory, under temp/, artifacts/, uploads/ or logs/.
    #[serde(default = "default_folders")]
    pub folders: Vec<String>,
    /// Remove files last modified more than this many hours ago.
    #[serde(default = "default_age")]
    pub older_than_hours: u64,
    /// Count, remove nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What `cleanup_files` did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupReport {
    pub dry_run: bool,
    pub files: u64,
    pub bytes: u64,
    pub dirs: u64,
    /// Symlinks met and left alone.
    pub symlinks_skipped: u64,
    /// Files that could not be removed, with why.
    pub errors: Vec<String>,
}

impl CleanupSpec {
    fn folders(&self, data: &DataDir) -> Result<Vec<(String, PathBuf)>, String> {
        if self.folders.is_empty() {
            return Err("folders is empty: name what to clean (temp, artifacts/exports…)".into());
        }
        self.folders
            .iter()
            .map(|f| Ok((f.clone(), data.resolve("folder", f, CLEANABLE, false)?)))
            .collect()
    }
}

/// Clean `spec`'s folders of `data` of files older than `now`.
pub fn cleanup(
    data: &DataDir,
    spec: &CleanupSpec,
    now: SystemTime,
    reporter: &Reporter,
) -> Result<CleanupReport, JobError> {
    let folders = spec.folders(data).map_err(JobError::permanent)?;
    let cutoff = now
        .checked_sub(Duration::from_secs(
            spec.older_than_hours.saturating_mul(3600),
        ))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut report = CleanupReport {
        dry_run: spec.dry_run,
        ..CleanupReport::default()
    };
    for (i, (name, dir)) in folders.iter().enumerate() {
        reporter.check_cancelled()?;
        if dir.is_dir() {
            walk(dir, true, cutoff, spec.dry_run, &mut report);
        }
        reporter.report(
            (i + 1) as f64 * 100.0 / folders.len() as f64,
            "cleaning",
            Some(name.clone()),
        );
    }
    tracing::info!(
        files = report.files,
        bytes = report.bytes,
        dry_run = spec.dry_run,
        "cleaned files"
    );
    Ok(report)
}

/// Remove what is old under `dir`; true when `dir` is empty after.
fn walk(dir: &Path, top: bool, cutoff: SystemTime, dry: bool, r: &mut CleanupReport) -> bool {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            r.errors.push(format!("{}: {e}", dir.display()));
            return false;
        }
    };
    let mut empty = true;
    for entry in entries.flatten() {
        let path = entry.path();
        // The entry itself, never what a symlink points to.
        let Ok(meta) = fs::symlink_metadata(&path) else {
            empty = false;
            continue;
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            r.symlinks_skipped += 1;
            empty = false;
        } else if kind.is_dir() {
            if !walk(&path, false, cutoff, dry, r) {
                empty = false;
            }
        } else if kind.is_file() && meta.modified().is_ok_and(|m| m < cutoff) {
            if dry {
                r.files += 1;
                r.bytes += meta.len();
                empty = false;
            } else {
                match fs::remove_file(&path) {
                    Ok(()) => {
                        r.files += 1;
                        r.bytes += meta.len();
                    }
                    Err(e) => {
                        r.errors.push(format!("{}: {e}", path.display()));
                        empty = false;
                    }
                }
            }
        } else {
            empty = false;
        }
    }
    if empty && !top && !dry {
        if fs::remove_dir(dir).is_ok() {
            r.dirs += 1;
        } else {
            return false;
        }
    }
    empty
}

/// The `cleanup_files` job.
pub struct CleanupFiles;

/// The handler of [`CleanupFiles`].
pub type CleanupFilesHandler = crate::Blocking<CleanupFiles>;

impl BlockingJob for CleanupFiles {
    const KIND: &'static str = CLEANUP_KIND;
    type Payload = CleanupSpec;
    type Output = CleanupReport;

    fn check(data: Option<&DataDir>, spec: &CleanupSpec, _: Option<&str>) -> Result<(), String> {
        match data {
            Some(data) => spec.folders(data).map(drop),
            None => Ok(()),
        }
    }

    fn work(run: &Run, spec: CleanupSpec, reporter: &Reporter) -> Result<CleanupReport, JobError> {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(run.now.max(0) as u64);
        cleanup(run.data()?, &spec, now, reporter)
    }
}

/// `compress_files`' payload.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CompressSpec {
    /// Relative to the data directory, under temp/, artifacts/, uploads/ or logs/.
    pub files: Vec<String>,
    /// The archive's name under `artifacts/archives/` (default `<job id>.tar.zst`).
    #[serde(default)]
    pub name: Option<String>,
    /// zstd level, 1–19 (default 3).
    #[serde(default)]
    pub level: Option<i32>,
    /// Replace an archive of that name.
    #[serde(default)]
    pub overwrite: bool,
}

/// One file of an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// What `compress_files` stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Archive {
    /// Relative to the data directory.
    pub path: String,
    pub bytes: u64,
    pub files: Vec<ManifestEntry>,
}

impl CompressSpec {
    fn check(&self, data: &DataDir) -> Result<Vec<(String, PathBuf)>, String> {
        if self.files.is_empty() {
            return Err("files is empty: name what to compress".into());
        }
        if self.files.len() > MAX_FILES {
            return Err(format!("{} files: at most {MAX_FILES}", self.files.len()));
        }
        if let Some(level) = self.level {
            if !(1..=19).contains(&level) {
                return Err(format!("level {level} is not between 1 and 19"));
            }
        }
        if let Some(name) = &self.name {
            let ok = name.ends_with(".tar.zst")
                && name.len() <= 200
                && !name.starts_with('.')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !ok {
                return Err(format!(
                    "name {name:?}: a file name ending in .tar.zst (letters, digits, . _ -)"
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        self.files
            .iter()
            .map(|f| {
                let path = data.resolve("file", f, READABLE, true)?;
                if !fs::metadata(&path)
                    .map_err(|e| format!("file {f:?}: {e}"))?
                    .is_file()
                {
                    return Err(format!("file {f:?}: not a regular file"));
                }
                if !seen.insert(path.clone()) {
                    return Err(format!("file {f:?}: listed twice"));
                }
                Ok((f.clone(), path))
            })
            .collect()
    }
}

/// Pack `spec`'s files into `archive` (a path under the data directory).
pub fn compress(
    data: &DataDir,
    spec: &CompressSpec,
    archive: &Path,
    reporter: &Reporter,
) -> Result<Archive, JobError> {
    let files = spec.check(data).map_err(JobError::permanent)?;
    if archive.exists() && !spec.overwrite {
        return Err(JobError::permanent(format!(
            "{} exists: pass \"overwrite\": true to replace it",
            archive.display()
        )));
    }
    // Checksums first: the manifest leads the archive.
    let mut manifest = Vec::with_capacity(files.len());
    for (rel, path) in &files {
        reporter.check_cancelled()?;
        let mut f = fs::File::open(path).map_err(|e| JobError::retryable(format!("{rel}: {e}")))?;
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut bytes = 0u64;
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| JobError::retryable(format!("{rel}: {e}")))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            bytes += n as u64;
        }
        manifest.push(ManifestEntry {
            path: rel.clone(),
            bytes,
            sha256: crate::hex(&hash.finalize()),
        });
    }
    let dir = archive.parent().expect("an archive has a folder");
    fs::create_dir_all(dir).map_err(JobError::retryable)?;
    let partial = archive.with_extension("zst.partial");
    let written = (|| -> Result<(), JobError> {
        let out = fs::File::create(&partial)?;
        let zstd = zstd::Encoder::new(out, spec.level.unwrap_or(3))?;
        let mut tar = tar::Builder::new(zstd);
        let body = serde_json::to_vec_pretty(&manifest).map_err(JobError::permanent)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, "manifest.json", body.as_slice())?;
        for (i, ((rel, path), entry)) in files.iter().zip(&manifest).enumerate() {
            reporter.check_cancelled()?;
            let mut f = fs::File::open(path)?;
            let mut header = tar::Header::new_gnu();
            header.set_metadata(&f.metadata()?);
            header.set_size(entry.bytes);
            tar.append_data(&mut header, rel, (&mut f).take(entry.bytes))?;
            reporter.report(
                (i + 1) as f64 * 100.0 / files.len() as f64,
                "compressing",
                Some(rel.clone()),
            );
        }
        let zstd = tar.into_inner()?;
        let mut out = zstd.finish()?;
        out.flush()?;
        out.sync_all()?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&partial);
        return Err(e);
    }
    fs::rename(&partial, archive).map_err(JobError::retryable)?;
    crate::sync_fs(dir).map_err(crate::job_error)?;
    let root = data.root().canonicalize().map_err(JobError::retryable)?;
    let bytes = fs::metadata(archive).map_err(JobError::retryable)?.len();
    Ok(Archive {
        path: archive
            .strip_prefix(&root)
            .unwrap_or(archive)
            .to_string_lossy()
            .into_owned(),
        bytes,
        files: manifest,
    })
}

/// Where `compress_files` writes: `artifacts/archives/<name>`.
pub fn archive_path(data: &DataDir, spec: &CompressSpec, job_id: i64) -> Result<PathBuf, String> {
    let root = data
        .root()
        .canonicalize()
        .map_err(|e| format!("the data directory: {e}"))?;
    let name = spec
        .name
        .clone()
        .unwrap_or_else(|| format!("{job_id}.tar.zst"));
    Ok(root.join("artifacts").join("archives").join(name))
}

/// The `compress_files` job.
pub struct CompressFiles;

/// The handler of [`CompressFiles`].
pub type CompressFilesHandler = crate::Blocking<CompressFiles>;

impl BlockingJob for CompressFiles {
    const KIND: &'static str = COMPRESS_KIND;
    type Payload = CompressSpec;
    type Output = Archive;

    fn check(data: Option<&DataDir>, spec: &CompressSpec, _: Option<&str>) -> Result<(), String> {
        match data {
            Some(data) => spec.check(data).map(drop),
            None => Ok(()),
        }
    }

    fn work(run: &Run, spec: CompressSpec, reporter: &Reporter) -> Result<Archive, JobError> {
        let data = run.data()?;
        let archive = archive_path(data, &spec, run.job_id).map_err(JobError::retryable)?;
        compress(data, &spec, &archive, reporter)
    }
}
