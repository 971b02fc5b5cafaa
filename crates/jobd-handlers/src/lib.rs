//! The built-in handlers: the jobs the platform behind jobd used to block
//! its HTTP requests on.
//!
//! * `blocking` — the shape every job here has: a [`BlockingJob`] (a plain
//!   blocking function with its check) run by [`Blocking`].
//! * [`tenants`] — the directory of tenant SQLite databases, and demo data.
//! * [`qr`], [`analytics`], [`backup`], [`maintenance`], [`export`], [`images`],
//!   [`files`] — the
//!   jobs (below); [`email`] — `send_email`, `send_batch_email`;
//!   [`notify`] — the notifications of jobs that ended; [`alerts`] — the
//!   throttled dead-job mails.
//! * [`command`] — a kind backed by a program of the user's (`[kinds.X]` in
//!   `jobd.toml`): JSON on stdin, JSON lines on stdout, its process group
//!   ended on cancel and timeout.
//! * [`schedules`] — their queues, kinds and default schedules.
//! * this module — the data directory, [`builtin`] (every job and queue on
//!   a worker), the handlers' own migrations ([`migrate`]), file helpers.
//!
//! | kind | queue | payload | does |
//! |---|---|---|---|
//! | `backup_tenants` | maintenance | `{"keep": 7, "tenants": [..]?}` | zstd-compressed, verified online backup of every tenant ([`backup`]) |
//! | `generate_qr_pdf` | pdf | `{"template_id": 7, "page_size": "A4", "columns": 2, "rows": 3, "copies": 12, "ecc"?}` + the job's tenant | a print-ready PDF with vector QR codes ([`qr`]) |
//! | `batch_qr` | batch | `{"template_ids": [..], "formats": ["png", "svg"], "scale": 8}` + tenant | PNG/SVG per template; failed items recorded, the batch goes on ([`qr`]) |
//! | `analytics_rollup` | analytics | `{"period": "daily", "domain"?, "template"?, "from_ms"?, "to_ms"?, "ttl_secs": 3600}` | scans aggregated across all tenants, cached in the queue file ([`analytics`]) |
//! | `health_check` | maintenance | `{}` | `quick_check` of the queue file and every tenant ([`maintenance`]) |
//! | `export_data` | exports | `{"format": "csv"\|"jsonl"\|"xlsx", "table": "scans", "fields"?, "from_ms"?, "to_ms"?, "email"?}` + tenant | the rows to `artifacts/exports/<tenant>/`, streamed, renamed when complete ([`export`]) |
//! | `notify` | notify | `{"job": {..}, "notify": {"webhook": url} \| {"email": {..}}}`, enqueued by the store when a job with a `notify` list ends | a signed webhook POST or a templated mail ([`notify`]) |
//! | `dead_alerts` | notify | `{}`, every minute (schedule `dead-alerts`, with `[alerts]`) | one summary mail of the jobs that died since the last, at most one per window ([`alerts`]) |
//! | `process_image` | images | `{"source": "uploads/t/photo.jpg", "sizes"?: [150, [400, 300]], "quality"?: 85, "original"?: true, "webp_quality"?: 80}` + tenant | thumbnails, a re-encoded original and a lossy WebP in `artifacts/images/<tenant>/<name>/`, decoded within limits ([`images`]) |
//! | `cleanup_files` | maintenance | `{"folders": ["temp"], "older_than_hours": 24, "dry_run"?}`, every 6 hours (schedule `file-cleanup`) | old files under temp/, artifacts/, uploads/ or logs/ removed, symlinks never followed; count and bytes ([`files`]) |
//! | `compress_files` | maintenance | `{"files": ["artifacts/t/a.pdf", ..], "name"?, "level"?, "overwrite"?}` | one `.tar.zst` under `artifacts/archives/` with a manifest of sizes and SHA-256 ([`files`]) |
//! | `cleanup` | maintenance | `{"finished_older_than_days": 7, ...}` | purge finished jobs, optimize and truncate the queue file ([`maintenance`]) |
//!
//! Each handler is a plain blocking function (testable without a worker,
//! reporting through a [`Reporter`]) wrapped in a [`Handler`](jobd::worker::Handler)
//! that runs it on the blocking pool and stores its progress.  One tenant's
//! failure is recorded as that tenant's; the batch goes on.  Bad input
//! (unknown tenant, invalid options) fails the job for good; I/O failures
//! are retried.

#[macro_use]
mod blocking;

pub mod alerts;
pub mod analytics;
pub mod backup;
pub mod command;
pub mod email;
pub mod export;
pub mod files;
pub mod images;
pub mod maintenance;
pub mod notify;
pub mod qr;
pub mod schedules;
pub mod tenants;
pub mod tls;

use std::io::Write;
use std::path::{Path, PathBuf};

use jobd::error::Error;
use jobd::worker::{JobContext, JobError};

use crate::tenants::TenantDir;

pub use blocking::{Blocking, BlockingJob, Run};
pub use jobd::worker::{run_blocking, Report, Reporter};

/// The handlers' own tables in a queue file from before the store's
/// `state` (the analytics cache, the dead-job alerts' mark, read once on an
/// upgrade), in order; applied by [`migrate`].
pub const MIGRATIONS: &[&str] = &[
    include_str!("../schema/0001_analytics_cache.sql"),
    include_str!("../schema/0002_alert_marks.sql"),
];

/// Bring the handlers' tables in `store`'s file up to date (one read when
/// they are).  Only a SQLite queue file has them (the dead-job alerts read
/// an old mark there once, on their first run after an upgrade).
pub fn migrate(store: &jobd::Store) -> jobd::Result<()> {
    store
        .require_sqlite("the handlers' own tables")?
        .migrate_extension("jobd-handlers", MIGRATIONS)
}

/// The data directory: `tenants/`, `artifacts/`, `backups/` (and usually the
/// queue file, `queue.db`).
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
    tenants: TenantDir,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        let root = root.into();
        DataDir {
            tenants: TenantDir::new(root.join("tenants")),
            root,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn tenants(&self) -> &TenantDir {
        &self.tenants
    }

    pub fn artifacts(&self) -> PathBuf {
        self.root.join("artifacts")
    }

    pub fn backups(&self) -> PathBuf {
        self.root.join("backups")
    }

    /// Where uploaded files live (`uploads/`): what `process_image` reads
    /// and the backup copies.
    pub fn uploads(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// `rel`, a path relative to the data directory, resolved (symlinks
    /// followed) and checked to stay inside it — and, when `under` is not
    /// empty, inside one of those folders of it.  `what` names the path in
    /// the error.  The path need not exist when `must_exist` is false (its
    /// deepest existing ancestor is what is checked).
    pub fn resolve(
        &self,
        what: &str,
        rel: &str,
        under: &[&str],
        must_exist: bool,
    ) -> Result<PathBuf, String> {
        let refuse = |why: String| Err(format!("{what} {rel:?}: {why}"));
        let p = Path::new(rel);
        if rel.is_empty()
            || p.is_absolute()
            || p.components().any(|c| {
                !matches!(
                    c,
                    std::path::Component::Normal(_) | std::path::Component::CurDir
                )
            })
        {
            return refuse(format!(
                "give a path inside the data directory, relative to it (like {})",
                under
                    .first()
                    .map_or("uploads/tenant-001/photo.jpg".to_string(), |u| format!(
                        "{u}/…"
                    ))
            ));
        }
        let root = self
            .root
            .canonicalize()
            .map_err(|e| format!("{what} {rel:?}: the data directory: {e}"))?;
        // The deepest part of the path that exists, resolved; the rest
        // (no symlinks in it: it does not exist) appended.
        let joined = self.root.join(p);
        let mut existing = joined.as_path();
        let mut rest = Vec::new();
        let resolved = loop {
            match existing.canonicalize() {
                Ok(r) => break r,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                    rest.push(existing.file_name().unwrap_or_default().to_owned());
                    existing = match existing.parent() {
                        Some(parent) => parent,
                        None => return refuse(format!("not found: {e}")),
                    };
                }
                Err(e) => return refuse(format!("not found: {e}")),
            }
        };
        let resolved = rest.iter().rev().fold(resolved, |acc, c| acc.join(c));
        if !resolved.starts_with(&root) {
            return refuse("outside the data directory (a symlink out of it?)".into());
        }
        if !under.is_empty() && !under.iter().any(|u| resolved.starts_with(root.join(u))) {
            return refuse(format!(
                "not under {} of the data directory",
                under.join(", ")
            ));
        }
        Ok(resolved)
    }
}

/// An error as the reason a job is refused before it is enqueued (the
/// catalog says "invalid job: …" in front of it).
pub(crate) fn said(e: Error) -> String {
    match e {
        Error::InvalidInput { field, reason } => format!("{field}: {reason}"),
        e => e.to_string(),
    }
}

/// A jobd error as a job failure: bad input is permanent, the rest retryable.
pub(crate) fn job_error(e: Error) -> JobError {
    match e {
        Error::InvalidInput { .. } | Error::Missing { what: "tenant", .. } => {
            JobError::permanent(e)
        }
        other => JobError::retryable(other),
    }
}

/// Write `bytes` to `path` through a temporary file and a rename, fsynced.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> jobd::Result<()> {
    write_file(path, bytes, true)
}

/// Write `bytes` to `path` through a temporary file and a rename; fsync the
/// file first when `durable` (a batch instead flushes the whole file system
/// once at its end, see [`sync_fs`]).
pub(crate) fn write_file(path: &Path, bytes: &[u8], durable: bool) -> jobd::Result<()> {
    let io = |source| Error::io("writing", path)(source);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    if durable {
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// Flush everything written to the file system holding `dir` — one flush for
/// a whole batch of files instead of an fsync per file (~1 ms each).
pub(crate) fn sync_fs(dir: &Path) -> jobd::Result<()> {
    use std::os::fd::AsRawFd;
    let io = |source| Error::io("syncing", dir)(source);
    let d = std::fs::File::open(dir).map_err(io)?;
    // SAFETY: syncfs only reads the descriptor, which `d` keeps open.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Queues of the built-in handlers, with the concurrency the platform ran
/// them at: pdf ×2, batch ×1, exports ×2, analytics ×1, maintenance ×1, email ×5,
/// notify ×4, images ×2, and `default` ×4 for `noop`/`sleep` and anything else.
pub const BUILTIN_QUEUES: &[(&str, usize)] = &[
    ("pdf", 2),
    ("email", 5),
    ("default", 4),
    ("batch", 1),
    (crate::export::QUEUE, 2),
    (crate::notify::QUEUE, 4),
    (crate::images::QUEUE, 2),
    (crate::schedules::ANALYTICS_QUEUE, 1),
    (crate::schedules::MAINTENANCE_QUEUE, 1),
];

/// Register every built-in handler (and `noop`, `sleep`), working on `data`, and their queues
/// (see [`BUILTIN_QUEUES`]) on `builder`.
pub fn builtin(
    builder: jobd::worker::WorkerBuilder,
    data: &DataDir,
) -> jobd::worker::WorkerBuilder {
    let mut builder = builder
        .register(qr::PdfHandler::new(data.clone()))
        .register(qr::BatchHandler::new(data.clone()))
        .register(analytics::AnalyticsHandler::new(data.clone()))
        .register(backup::BackupHandler::new(data.clone()))
        .register(maintenance::CleanupHandler::new(Some(data.clone())))
        .register(maintenance::HealthHandler::new(Some(data.clone())))
        .register(export::ExportHandler::new(
            data.clone(),
            export::ExportConfig::default(),
            false,
        ))
        .register(
            notify::NotifyHandler::new(notify::NotifyConfig::default(), None)
                .expect("no ca_file to read"),
        )
        .register(alerts::AlertHandler::new(None, None))
        .register(images::ImageHandler::new(data.clone()))
        .register(files::CleanupFilesHandler::new(data.clone()))
        .register(files::CompressFilesHandler::new(data.clone()));
    builder = sleep_handler(noop_handler(builder));
    for (queue, concurrency) in BUILTIN_QUEUES {
        builder = builder.queue(queue, *concurrency);
    }
    builder
}

/// `noop`: does nothing and succeeds (smoke tests, `jobd bench`).
pub fn noop_handler(builder: jobd::worker::WorkerBuilder) -> jobd::worker::WorkerBuilder {
    builder.handle_fn("noop", |_ctx, _payload| async { Ok(serde_json::json!({})) })
}

/// `sleep`: `{"ms": N}` — waits N ms (stopping early when cancelled).
pub fn sleep_handler(builder: jobd::worker::WorkerBuilder) -> jobd::worker::WorkerBuilder {
    builder.handler::<Sleep>()
}

/// The `sleep` job: waits `ms` milliseconds (smoke tests, demos).
#[derive(Debug, Default)]
pub struct Sleep;

/// The payload of a `sleep` job.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nap {
    pub ms: u64,
}

impl jobd::worker::Handler for Sleep {
    const KIND: &'static str = "sleep";
    type Payload = Nap;
    type Output = serde_json::Value;

    async fn run(&self, ctx: JobContext, nap: Nap) -> Result<serde_json::Value, JobError> {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(nap.ms)) => {}
            _ = ctx.cancelled() => return Err(JobError::retryable("stopped while sleeping")),
        }
        Ok(serde_json::json!({ "slept_ms": nap.ms }))
    }
}

/// Run `f` over `tenants` on at most `workers` threads, reporting progress
/// under `stage` after each tenant.  Results come back in `tenants`' order;
/// `None` when the job was cancelled before every tenant was done.
pub(crate) fn per_tenant<T: Send>(
    tenants: &[String],
    workers: usize,
    reporter: &Reporter,
    stage: &str,
    f: impl Fn(&str) -> T + Sync,
) -> Option<Vec<T>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<T>>> = tenants.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, tenants.len().max(1)) {
            scope.spawn(|| loop {
                if reporter.is_cancelled() {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(tenant) = tenants.get(i) else { return };
                let value = f(tenant);
                *slots[i].lock().expect("slot lock") = Some(value);
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                reporter.report(
                    100.0 * n as f64 / tenants.len() as f64,
                    stage,
                    Some(format!("{n}/{} ({tenant})", tenants.len())),
                );
            });
        }
    });
    slots
        .into_iter()
        .map(|m| m.into_inner().expect("slot lock"))
        .collect()
}

/// Threads for work across tenants: the CPUs, at most `cap`.
pub(crate) fn tenant_threads(cap: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(cap)
}
