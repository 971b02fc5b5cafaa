//! `export_data`: one table of a tenant's database (its scans by default;
//! the tables are configurable) to CSV, JSON lines or XLSX, filtered by a
//! time range and a field list.
//!
//! Rows stream from SQLite to the file — CSV and JSON lines through a
//! buffer, XLSX in `rust_xlsxwriter`'s constant-memory mode — so memory
//! stays flat however many rows; progress is stored after every chunk of
//! [`CHUNK`] rows.  The file is written under a temporary name in
//! `<data dir>/artifacts/exports/<tenant>/` and renamed at the end: a file
//! with the final name is always complete.  Exports older than the
//! configured days are removed by each export (and by `cleanup_files`).
//! With `email`, a `send_email` job (the `export-ready` template) follows.
//!
//! Table and column names are never taken from a payload into SQL: the
//! table must be one the configuration lists and each field one of that
//! table's columns as SQLite reports them (`PRAGMA table_info`); the
//! statement is built from those names, quoted, and the times are bound.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jobd::error::{Error, Result};
use jobd::store::NewJob;
use jobd::worker::{Handler, JobContext, JobError, WorkerBuilder};
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::email::{Recipients, EMAIL_QUEUE};
use crate::{job_error, run_blocking, said, DataDir, Reporter};

/// The kind.
pub const KIND: &str = "export_data";
/// Its queue.
pub const QUEUE: &str = "exports";
/// Rows between progress reports (and cancellation checks).
pub const CHUNK: u64 = 50_000;
/// Rows an XLSX worksheet holds under its header; more go on the next sheet.
const XLSX_ROWS_PER_SHEET: u64 = 1_048_575;

/// What may be exported and for how long it is kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// Table → its time column (what `from_ms`/`to_ms` filter on), or `""`
    /// for a table without one.  Default: `scans` (`scanned_at`) and
    /// `templates` (`created_at`).
    #[serde(default = "default_tables")]
    pub tables: BTreeMap<String, String>,
    /// Exports older than this many days are removed.  Default 7.
    #[serde(default = "default_keep_days")]
    pub keep_days: u32,
    /// Prefix of the `download_url` in the export-ready e-mail (the app that
    /// serves `artifacts/exports/`); without it the mail gives the path.
    #[serde(default)]
    pub base_url: Option<String>,
}

fn default_tables() -> BTreeMap<String, String> {
    [("scans", "scanned_at"), ("templates", "created_at")]
        .into_iter()
        .map(|(t, c)| (t.to_string(), c.to_string()))
        .collect()
}

fn default_keep_days() -> u32 {
    7
}

impl Default for ExportConfig {
    fn default() -> ExportConfig {
        ExportConfig {
            tables: default_tables(),
            keep_days: default_keep_days(),
            base_url: None,
        }
    }
}

/// The file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Jsonl,
    Xlsx,
}

impl Format {
    fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Xlsx => "xlsx",
        }
    }
}

/// The `export_data` payload (the tenant is the job's).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSpec {
    pub format: Format,
    /// Default `scans`.
    #[serde(default = "scans")]
    pub table: String,
    /// Columns, in this order (default: all of the table's).
    #[serde(default)]
    pub fields: Vec<String>,
    /// Rows whose time column is in `[from_ms, to_ms)`.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Send the `export-ready` e-mail to these when the file is written.
    pub email: Option<Recipients>,
}

fn scans() -> String {
    "scans".into()
}

/// What an export wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportResult {
    /// Relative to the data directory.
    pub path: String,
    pub format: Format,
    pub rows: u64,
    pub bytes: u64,
    pub fields: Vec<String>,
    /// Older exports removed.
    pub removed: u64,
    /// The `send_email` job of the export-ready mail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_job: Option<i64>,
}

/// Quote an SQL identifier (`"a""b"`).
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The plan of one export, checked against the configuration and the
/// tenant's database.
struct Plan {
    columns: Vec<String>,
    sql: String,
    count_sql: String,
    binds: Vec<i64>,
}

fn plan(conn: &Connection, config: &ExportConfig, spec: &ExportSpec) -> Result<Plan> {
    let Some(time_column) = config.tables.get(&spec.table) else {
        return Err(Error::invalid(
            "table",
            format!(
                "{:?} is not exportable (the configuration allows: {})",
                spec.table,
                config.tables.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    };
    // The names as SQLite has them; the payload's only pick among them.
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_info(?1)")
        .map_err(sql_error)?;
    let known: Vec<String> = stmt
        .query_map([&spec.table], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(sql_error)?;
    if known.is_empty() {
        return Err(Error::invalid(
            "table",
            format!("the tenant's database has no table {:?}", spec.table),
        ));
    }
    let columns = if spec.fields.is_empty() {
        known.clone()
    } else {
        let mut out = Vec::new();
        for f in &spec.fields {
            match known.iter().find(|k| *k == f) {
                Some(k) if !out.contains(k) => out.push(k.clone()),
                Some(_) => return Err(Error::invalid("fields", format!("{f:?} twice"))),
                None => {
                    return Err(Error::invalid(
                        "fields",
                        format!(
                            "{} has no field {f:?} (it has: {})",
                            spec.table,
                            known.join(", ")
                        ),
                    ))
                }
            }
        }
        out
    };
    let mut filter = Vec::new();
    let mut binds = Vec::new();
    if spec.from_ms.is_some() || spec.to_ms.is_some() {
        if time_column.is_empty() {
            return Err(Error::invalid(
                "from_ms",
                format!("{} has no time column to filter on", spec.table),
            ));
        }
        if let (Some(a), Some(b)) = (spec.from_ms, spec.to_ms) {
            if a > b {
                return Err(Error::invalid("from_ms", "after to_ms"));
            }
        }
        let t = quoted(time_column);
        if let Some(a) = spec.from_ms {
            binds.push(a);
            filter.push(format!("{t} >= ?{}", binds.len()));
        }
        if let Some(b) = spec.to_ms {
            binds.push(b);
            filter.push(format!("{t} < ?{}", binds.len()));
        }
    }
    let table = quoted(&spec.table);
    let filter = if filter.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", filter.join(" AND "))
    };
    let list: Vec<String> = columns.iter().map(|c| quoted(c)).collect();
    Ok(Plan {
        sql: format!(
            "SELECT {} FROM {table}{filter} ORDER BY rowid",
            list.join(", ")
        ),
        count_sql: format!("SELECT count(*) FROM {table}{filter}"),
        columns,
        binds,
    })
}

fn sql_error(e: rusqlite::Error) -> Error {
    Error::from(e)
}

/// Check an export before it is enqueued: the tenant exists, the table and
/// fields are exportable, the range is one, the addresses are addresses.
pub fn check(
    data: &DataDir,
    config: &ExportConfig,
    spec: &ExportSpec,
    tenant: Option<&str>,
    mailer: bool,
) -> Result<()> {
    let tenant =
        tenant.ok_or_else(|| Error::invalid("tenant", "an export needs the job's tenant"))?;
    let conn = data.tenants().open_read_only(tenant)?;
    plan(&conn, config, spec)?;
    if let Some(to) = &spec.email {
        if !mailer {
            return Err(Error::invalid(
                "email",
                "no [email] server is configured to send the export-ready mail",
            ));
        }
        for a in to.list() {
            a.parse::<lettre::message::Mailbox>()
                .map_err(|e| Error::invalid("email", format!("{a:?} is not an address: {e}")))?;
        }
    }
    Ok(())
}

/// Where `tenant`'s exports go.
pub fn exports_dir(data: &DataDir) -> PathBuf {
    data.artifacts().join("exports")
}

/// Write the export (on a blocking thread).  `name` is the file name
/// without extension.
pub fn export(
    data: &DataDir,
    config: &ExportConfig,
    tenant: &str,
    spec: &ExportSpec,
    name: &str,
    reporter: &Reporter,
) -> Result<ExportResult> {
    let conn = data.tenants().open_read_only(tenant)?;
    let plan = plan(&conn, config, spec)?;
    let total: i64 = conn
        .query_row(
            &plan.count_sql,
            rusqlite::params_from_iter(&plan.binds),
            |r| r.get(0),
        )
        .map_err(sql_error)?;
    let total = total.max(0) as u64;
    let dir = exports_dir(data).join(tenant);
    std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
    let file_name = format!("{name}.{}", spec.format.extension());
    let path = dir.join(&file_name);
    let partial = dir.join(format!(".{file_name}.partial"));
    let written = write_rows(&conn, &plan, spec.format, &partial, total, reporter);
    let rows = match written {
        Ok(rows) => rows,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, &path).map_err(Error::io("renaming", &partial))?;
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let removed = prune(&exports_dir(data), config.keep_days, &path);
    let rel = path
        .strip_prefix(data.root())
        .unwrap_or(&path)
        .to_string_lossy()
        .into_owned();
    Ok(ExportResult {
        path: rel,
        format: spec.format,
        rows,
        bytes,
        fields: plan.columns,
        removed,
        email_job: None,
    })
}

/// Stop when the job was cancelled.
fn stopped(reporter: &Reporter) -> Result<()> {
    if reporter.is_cancelled() {
        return Err(Error::Stopped {
            operation: "the export",
        });
    }
    Ok(())
}

fn progress(reporter: &Reporter, n: u64, total: u64) {
    let pct = if total == 0 {
        100.0
    } else {
        100.0 * n as f64 / total as f64
    };
    reporter.report(pct, "rows", Some(format!("{n}/{total}")));
}

fn write_rows(
    conn: &Connection,
    plan: &Plan,
    format: Format,
    to: &Path,
    total: u64,
    reporter: &Reporter,
) -> Result<u64> {
    let mut stmt = conn.prepare(&plan.sql).map_err(sql_error)?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(&plan.binds))
        .map_err(sql_error)?;
    let io = |e| Error::io("writing", to)(e);
    let other = |e: String| Error::io("writing", to)(std::io::Error::other(e));
    let width = plan.columns.len();
    let mut n = 0u64;
    match format {
        Format::Csv => {
            let file = std::fs::File::create(to).map_err(io)?;
            let mut w = csv::WriterBuilder::new()
                .buffer_capacity(256 << 10)
                .from_writer(file);
            w.write_record(&plan.columns)
                .map_err(|e| other(e.to_string()))?;
            let mut num = itoa::Buffer::new();
            while let Some(row) = rows.next().map_err(sql_error)? {
                for i in 0..width {
                    let r = match row.get_ref(i).map_err(sql_error)? {
                        ValueRef::Null => w.write_field(b""),
                        ValueRef::Integer(x) => w.write_field(num.format(x)),
                        ValueRef::Real(x) => w.write_field(x.to_string()),
                        ValueRef::Text(t) => w.write_field(t),
                        ValueRef::Blob(b) => w.write_field(crate::hex(b)),
                    };
                    r.map_err(|e| other(e.to_string()))?;
                }
                w.write_record(None::<&[u8]>)
                    .map_err(|e| other(e.to_string()))?;
                n += 1;
                if n.is_multiple_of(CHUNK) {
                    progress(reporter, n, total);
                    stopped(reporter)?;
                }
            }
            let file = w.into_inner().map_err(|e| other(e.to_string()))?;
            file.sync_all().map_err(io)?;
        }
        Format::Jsonl => {
            let file = std::fs::File::create(to).map_err(io)?;
            let mut out = std::io::BufWriter::with_capacity(256 << 10, file);
            // JSON keys, escaped once.
            let keys: Vec<String> = plan
                .columns
                .iter()
                .map(|c| serde_json::to_string(c).expect("a string serializes"))
                .collect();
            let mut buf = Vec::with_capacity(64 << 10);
            let mut num = itoa::Buffer::new();
            while let Some(row) = rows.next().map_err(sql_error)? {
                buf.push(b'{');
                for (i, key) in keys.iter().enumerate() {
                    if i > 0 {
                        buf.push(b',');
                    }
                    buf.extend_from_slice(key.as_bytes());
                    buf.push(b':');
                    match row.get_ref(i).map_err(sql_error)? {
                        ValueRef::Null => buf.extend_from_slice(b"null"),
                        ValueRef::Integer(x) => buf.extend_from_slice(num.format(x).as_bytes()),
                        ValueRef::Real(x) => {
                            serde_json::to_writer(&mut buf, &x).map_err(|e| other(e.to_string()))?
                        }
                        ValueRef::Text(t) => {
                            serde_json::to_writer(&mut buf, &String::from_utf8_lossy(t))
                                .map_err(|e| other(e.to_string()))?
                        }
                        ValueRef::Blob(b) => serde_json::to_writer(&mut buf, &crate::hex(b))
                            .map_err(|e| other(e.to_string()))?,
                    }
                }
                buf.extend_from_slice(b"}\n");
                n += 1;
                if buf.len() >= 60 << 10 {
                    out.write_all(&buf).map_err(io)?;
                    buf.clear();
                }
                if n.is_multiple_of(CHUNK) {
                    progress(reporter, n, total);
                    stopped(reporter)?;
                }
            }
            out.write_all(&buf).map_err(io)?;
            let file = out.into_inner().map_err(|e| io(e.into_error()))?;
            file.sync_all().map_err(io)?;
        }
        Format::Xlsx => {
            let xlsx = |e: rust_xlsxwriter::XlsxError| other(format!("xlsx: {e}"));
            let mut book = rust_xlsxwriter::Workbook::new();
            if let Some(dir) = to.parent() {
                // Constant-memory sheets spill to temporary files beside
                // the export, not to /tmp.
                book.set_tempdir(dir).map_err(xlsx)?;
            }
            book.use_zip_large_file(true);
            // Deflate dominates the save; level 1 (Excel uses 3) for speed
            // over a file a fifth larger.
            book.set_zip_compression_level(1);
            // A sheet holds at most XLSX_ROWS_PER_SHEET rows under its header.
            let new_sheet = |book: &mut rust_xlsxwriter::Workbook, n: usize| -> Result<()> {
                let s = book.add_worksheet_with_constant_memory().map_err(xlsx)?;
                s.set_name(format!("export-{n}")).map_err(xlsx)?;
                for (c, name) in plan.columns.iter().enumerate() {
                    s.write_string(0, c as u16, name).map_err(xlsx)?;
                }
                Ok(())
            };
            let mut sheet_row = 0u32;
            let mut sheets = 0;
            while let Some(row) = rows.next().map_err(sql_error)? {
                if sheets == 0 || u64::from(sheet_row) > XLSX_ROWS_PER_SHEET {
                    sheets += 1;
                    new_sheet(&mut book, sheets)?;
                    sheet_row = 1;
                }
                let s = book.worksheets_mut().last_mut().expect("a sheet was added");
                for c in 0..width {
                    let col = c as u16;
                    match row.get_ref(c).map_err(sql_error)? {
                        ValueRef::Null => continue,
                        ValueRef::Integer(x) => s.write_number(sheet_row, col, x as f64),
                        ValueRef::Real(x) => s.write_number(sheet_row, col, x),
                        ValueRef::Text(t) => {
                            s.write_string(sheet_row, col, String::from_utf8_lossy(t))
                        }
                        ValueRef::Blob(b) => s.write_string(sheet_row, col, crate::hex(b)),
                    }
                    .map_err(xlsx)?;
                }
                sheet_row += 1;
                n += 1;
                if n.is_multiple_of(CHUNK) {
                    progress(reporter, n, total);
                    stopped(reporter)?;
                }
            }
            if sheets == 0 {
                new_sheet(&mut book, 1)?;
            }
            book.save(to).map_err(xlsx)?;
            std::fs::File::open(to)
                .and_then(|f| f.sync_all())
                .map_err(io)?;
        }
    }
    progress(reporter, n, total);
    Ok(n)
}

/// Remove regular files under `dir` (symlinks not followed) last modified
/// more than `days` ago, but `keep`; the number removed.
pub(crate) fn prune(dir: &Path, days: u32, keep: &Path) -> u64 {
    let Some(cutoff) =
        std::time::SystemTime::now().checked_sub(Duration::from_secs(u64::from(days) * 86_400))
    else {
        return 0;
    };
    let mut removed = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file()
                && e.path() != keep
                && meta.modified().is_ok_and(|m| m < cutoff)
                && std::fs::remove_file(e.path()).is_ok()
            {
                removed += 1;
            }
        }
    }
    removed
}

/// The `export_data` handler.
#[derive(Debug, Clone)]
pub struct ExportHandler {
    data: DataDir,
    config: ExportConfig,
    /// Whether an e-mail server is configured (the export-ready mail).
    mailer: bool,
}

impl ExportHandler {
    pub fn new(data: DataDir, config: ExportConfig, mailer: bool) -> ExportHandler {
        ExportHandler {
            data,
            config,
            mailer,
        }
    }
}

impl Handler for ExportHandler {
    const KIND: &'static str = KIND;
    type Payload = ExportSpec;
    type Output = ExportResult;

    fn check(&self, spec: &ExportSpec, tenant: Option<&str>) -> std::result::Result<(), String> {
        check(&self.data, &self.config, spec, tenant, self.mailer).map_err(said)
    }

    async fn run(
        &self,
        ctx: JobContext,
        spec: ExportSpec,
    ) -> std::result::Result<ExportResult, JobError> {
        let tenant = ctx
            .tenant()
            .ok_or_else(|| JobError::permanent("an export needs the job's tenant"))?
            .to_string();
        let (data, config) = (self.data.clone(), self.config.clone());
        let name = format!("{}-{}", spec.table, ctx.id());
        let job = spec.clone();
        let t = tenant.clone();
        let mut result = run_blocking(&ctx, move |reporter| {
            export(&data, &config, &t, &job, &name, reporter).map_err(job_error)
        })
        .await?;
        tracing::info!(rows = result.rows, bytes = result.bytes, path = %result.path, "export written");
        if let Some(to) = &spec.email {
            let export_name = Path::new(&result.path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let url = match &self.config.base_url {
                Some(base) => format!(
                    "{}/{}",
                    base.trim_end_matches('/'),
                    result.path.trim_start_matches("artifacts/exports/")
                ),
                None => self.data.root().join(&result.path).display().to_string(),
            };
            let mail = serde_json::json!({
                "to": to,
                "template": "export-ready",
                "data": {
                    "export_name": export_name,
                    "rows": result.rows,
                    "format": spec.format.extension(),
                    "download_url": url,
                    "keep_days": self.config.keep_days,
                    "tenant": tenant,
                },
            });
            let store = ctx.store().clone();
            let key = format!("export-ready:{}", ctx.id());
            let job = NewJob::new(EMAIL_QUEUE, crate::email::SEND_KIND)
                .payload(&mail)
                .tenant(tenant)
                .unique_key(key);
            let id = tokio::task::spawn_blocking(move || store.enqueue(&job))
                .await
                .map_err(|e| JobError::retryable(e.to_string()))?
                .map_err(JobError::retryable)?;
            result.email_job = Some(id);
        }
        Ok(result)
    }
}

/// Register `export_data` (its queue, `exports`, is the builder's business).
pub fn register(builder: WorkerBuilder, handler: ExportHandler) -> WorkerBuilder {
    builder.register(handler)
}
