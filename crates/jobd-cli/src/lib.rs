//! The `jobd` command: the application that puts the engine (`jobd`), the
//! server (`jobd-server`) and the built-in jobs (`jobd-handlers`) together.
//!
//! * [`app`] — the application's own HTTP routes (analytics).
//! * `serve` — `jobd serve` / `jobd worker`: workers with the built-in
//!   handlers, the scheduler, the HTTP API.
//! * `jobs`, `queues`, `schedules`, `tenants`, `tokens` — the commands over a queue
//!   file, one file per group; `config` reads `jobd.toml`.
//! * `demo`, `bench` — the demo workload and the disk benchmark.
//!
//! Every command prints one clear line and exits non-zero on error, never a
//! panic.

pub mod app;
mod bench;
mod config;
mod demo;
mod jobs;
mod queues;
mod schedules;
mod serve;
mod tenants;
mod tokens;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "jobd",
    version,
    about = "A durable background-job queue in one SQLite file"
)]
struct Cli {
    /// The configuration file (default: ./jobd.toml when it exists).
    #[arg(long, global = true, env = "JOBD_CONFIG")]
    config: Option<PathBuf>,

    /// The queue database: a SQLite file (default: <data dir>/queue.db) or a
    /// PostgreSQL URL, postgres://user@host/dbname (the password from
    /// $PGPASSWORD rather than the URL, to keep it out of process lists).
    #[arg(long, global = true, env = "JOBD_DB")]
    db: Option<PathBuf>,

    /// The data directory: queue.db, tenants/, artifacts/, backups/ (default:
    /// $JOBD_DATA_DIR, else jobd-data; `demo` reads only this flag, default jobd-demo).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the data directory, the queue database, a commented jobd.toml
    /// with an API token, and the default schedules.
    Init(schedules::InitArgs),
    /// Run the daemon: workers (built-in handlers), the scheduler and the HTTP API.
    Serve(serve::ServeArgs),
    /// Run workers only (extra processes on the same queue file).
    Worker(serve::WorkerArgs),
    /// How fast is jobd on this disk: enqueue and drain no-op jobs, measure latency.
    Bench(bench::BenchArgs),
    /// Run the demo: enqueue a mixed workload, work it off with several
    /// workers, and print a report.
    Demo(demo::DemoArgs),
    /// Enqueue one job from flags, or many as JSON lines on stdin.
    Enqueue(jobs::EnqueueArgs),
    /// Show one job: state, progress, tries, result, error.
    Show(jobs::ShowArgs),
    /// A progress bar until the job ends (exit code: 0 succeeded, 1 dead, 2 cancelled).
    Watch(jobs::WatchArgs),
    /// List jobs, newest first.
    List(jobs::ListArgs),
    /// Cancel a job, or with --all every unfinished job the filters match (a running one is asked to stop).
    Cancel(jobs::TargetArgs),
    /// Revive a dead or cancelled job with a fresh set of tries, or with --all every dead job the filters match.
    Retry(jobs::TargetArgs),
    /// Delete a waiting or finished job with its tries and progress (a running one: cancel it first).
    Delete(jobs::DeleteArgs),
    /// Counts per queue and state, and live workers.
    Stats(queues::StatsArgs),
    /// Pause, resume, limit or purge a queue.
    #[command(subcommand)]
    Queue(queues::QueueCommand),
    /// Manage recurring jobs: add, list, show, remove, pause, resume, run-now.
    #[command(subcommand)]
    Schedule(schedules::ScheduleCommand),
    /// Run the cron scheduler in the foreground until SIGINT/SIGTERM.
    Scheduler(schedules::SchedulerArgs),
    /// Tenant databases: seed demo data, list.
    #[command(subcommand)]
    Tenants(tenants::TenantsCommand),
    /// Tenant backups: run one now, list sets, restore a tenant.
    #[command(subcommand)]
    Backup(tenants::BackupCommand),
    /// API tokens with a role (admin, producer, worker).
    #[command(subcommand)]
    Token(tokens::TokenCommand),
    /// Send back jobs whose worker stopped heartbeating.
    Reap,
    /// Check the queue file with PRAGMA integrity_check.
    Check,
    /// Copy a queue file into a PostgreSQL database, verified table by table
    /// (counts and SHA-256); stop the daemon first.  Run it again to resume.
    MigrateStore(MigrateArgs),
}

#[derive(clap::Args, Debug)]
struct MigrateArgs {
    /// The queue file to copy (it is only read).
    #[arg(long)]
    from: PathBuf,
    /// The PostgreSQL database: postgres://user@host:port/dbname (jobd's
    /// tables are set up in it; rows it already has are kept).
    #[arg(long)]
    to: String,
}

/// Parse the command line, run the command, report errors as one line.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    // The demo fails jobs on purpose: its progress bars say so, not a log line each.
    let default_log = match cli.command {
        Command::Demo(_) => "error",
        // The one line `serve` and `worker` log when they start.
        _ => "warn,jobd::daemon=info",
    };
    if let Err(e) = init_logging(default_log) {
        eprintln!("jobd: {e}");
        return ExitCode::from(2);
    }
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("jobd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `JOBD_LOG` (default `default_filter`), as
/// text — coloured only when stderr is a terminal — or, with
/// `JOBD_LOG_FORMAT=json`, one JSON object a line for log shippers (the
/// run's job id, queue, kind and attempt under "span").
fn init_logging(default_filter: &str) -> Result<(), String> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("JOBD_LOG")
        .unwrap_or_else(|_| default_filter.into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("JOBD_LOG_FORMAT").as_deref() {
        Ok("json") => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        Ok("text") | Err(_) => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        Ok(other) => return Err(format!("JOBD_LOG_FORMAT={other:?}: give text or json")),
    }
    Ok(())
}

/// An error for the user: one line, no backtrace.
type CliResult<T = ExitCode> = Result<T, Box<dyn std::error::Error>>;

fn dispatch(cli: Cli) -> CliResult {
    let config = config::Config::load(cli.config.as_deref())?;
    let data_dir = cli
        .data_dir
        .clone()
        .or_else(|| std::env::var_os("JOBD_DATA_DIR").map(PathBuf::from))
        .or_else(|| config.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_DATA_DIR));
    let db = cli
        .db
        .clone()
        .or_else(|| config.db.clone())
        .unwrap_or_else(|| data_dir.join("queue.db"));
    let (db, data_dir) = (db.as_path(), data_dir.as_path());
    match cli.command {
        Command::Serve(args) => serve::serve(db, data_dir, &config, args),
        Command::Worker(args) => serve::worker_only(db, data_dir, &config, args),
        Command::Bench(args) => bench::run(data_dir, args),
        Command::Init(args) => schedules::init(db, data_dir, cli.config.as_deref(), args),
        Command::Schedule(cmd) => schedules::schedule(db, data_dir, &config, cmd),
        Command::Scheduler(args) => schedules::run_scheduler(db, args),
        Command::Tenants(cmd) => tenants::tenants(data_dir, cmd),
        Command::Backup(cmd) => tenants::backup(db, data_dir, cmd),
        Command::Token(cmd) => tokens::token(db, cmd),
        // The flag alone, not JOBD_DATA_DIR or jobd.toml: those name real data.
        Command::Demo(args) => demo::run(cli.data_dir.as_deref(), args),
        Command::Enqueue(args) => jobs::enqueue(db, data_dir, &config, args),
        Command::Show(args) => jobs::show(db, args),
        Command::Watch(args) => jobs::watch(db, args),
        Command::List(args) => jobs::list(db, args),
        Command::Cancel(args) => jobs::cancel(db, args),
        Command::Retry(args) => jobs::retry(db, args),
        Command::Delete(args) => jobs::delete(db, args),
        Command::Stats(args) => queues::stats(db, args),
        Command::Queue(cmd) => queues::queue(db, data_dir, &config, cmd),
        Command::Reap => {
            let report = open(db)?.reap()?;
            println!(
                "requeued {}, dead {}, cancelled {}, timed out {}",
                report.requeued.len(),
                report.dead.len(),
                report.cancelled.len(),
                report.timed_out.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::MigrateStore(args) => migrate_store(&args),
        Command::Check => {
            let store = open(db)?;
            store.integrity_check()?;
            println!("{}: ok", store.location());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Open an existing queue file.  Only what consumes the queue (`init`,
/// `serve`, `worker`, `scheduler`, `demo`) creates one: a job or schedule
/// added to a file no worker reads — a misspelt `--db` — would wait forever.
fn open(db: &std::path::Path) -> CliResult<jobd::Store> {
    let opts = jobd::store::StoreOptions::default().create(false);
    if let Some(url) = postgres_url(db) {
        return jobd::Store::connect(url, opts).map_err(|e| match e {
            e @ jobd::Error::NotAQueue { .. } => format!(
                "{e} (`jobd init --db {}` sets it up)",
                jobd::store::postgres::redact(url)
            )
            .into(),
            e => e.into(),
        });
    }
    jobd::Store::open_with(db, opts).map_err(|e| match e {
        jobd::Error::NotAQueue { .. } if !db.exists() => format!(
            "{}: no such queue database (set --db or JOBD_DB; `jobd init` creates it)",
            db.display()
        )
        .into(),
        e @ jobd::Error::NotAQueue { .. } => {
            format!("{e} (`jobd init` creates a queue; it never takes over another file)").into()
        }
        e => e.into(),
    })
}

/// `jobd migrate-store`: copy, verify, report per table.
fn migrate_store(args: &MigrateArgs) -> CliResult {
    let src = jobd::SqliteStore::open_with(
        &args.from,
        jobd::store::StoreOptions::default().create(false),
    )
    .map_err(|e| format!("{}: {e}", args.from.display()))?;
    if !jobd::store::postgres::is_url(&args.to) {
        return Err(format!("--to {:?}: give a postgres:// URL", args.to).into());
    }
    let dst = jobd::PgStore::connect(&args.to, jobd::store::StoreOptions::default())?;
    let report = jobd::store::postgres::copy::copy_from_sqlite(&src, &dst, |table, rows| {
        tracing::info!(table, rows, "copied");
    })?;
    println!(
        "{:<16} {:>10} {:>10} {:>10}  sha256",
        "table", "file", "postgres", "inserted"
    );
    let mut ok = true;
    for t in &report {
        ok &= t.verified();
        println!(
            "{:<16} {:>10} {:>10} {:>10}  {}{}",
            t.table,
            t.source_rows,
            t.target_rows,
            t.inserted,
            &t.source_sha256[..16],
            if t.verified() {
                String::new()
            } else {
                format!("  DIFFERS (postgres {})", &t.target_sha256[..16])
            }
        );
    }
    if !ok {
        return Err(format!(
            "{} does not hold the same rows as {}: nothing was overwritten; \
             copy into an empty database",
            dst.location(),
            args.from.display()
        )
        .into());
    }
    println!(
        "verified: {} holds every row of {}",
        dst.location(),
        args.from.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `db` when it is a PostgreSQL URL rather than a file's path.
fn postgres_url(db: &std::path::Path) -> Option<&str> {
    db.to_str().filter(|s| jobd::store::postgres::is_url(s))
}

/// Open the queue file, creating it and its directory when missing; or
/// the PostgreSQL database, setting up (or migrating) jobd's tables.
fn open_or_create(db: &std::path::Path) -> CliResult<jobd::Store> {
    if let Some(url) = postgres_url(db) {
        return Ok(jobd::Store::connect(
            url,
            jobd::store::StoreOptions::default(),
        )?);
    }
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        private_dir(dir)?;
    }
    Ok(jobd::Store::open(db)?)
}

/// Create `dir` (and missing parents) readable by its owner only — 0700
/// whatever the umask: it holds payloads and tenant data.  A directory that
/// exists keeps the mode its owner gave it.
fn private_dir(dir: &std::path::Path) -> CliResult<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| format!("creating {}: {e}", dir.display()).into())
}

/// Milliseconds since the epoch as an ISO-8601 UTC time.
fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    #[test]
    fn iso_formats_utc_times() {
        assert_eq!(super::iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::iso(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
