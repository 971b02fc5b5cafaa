//! `jobd serve` (workers + scheduler + HTTP API in one process) and
//! `jobd worker` (workers only, for extra processes on the same file).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use jobd::scheduler::Scheduler;
use jobd::worker::{Catalog, Worker, WorkerBuilder};
use jobd_handlers::{self, DataDir};
use jobd_server::{self as server, ApiState, MIN_TOKEN_BYTES};
use tokio_util::sync::CancellationToken;

use super::config::{Config, DEFAULT_LISTEN};
use super::{open_or_create, CliResult};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address of the HTTP API.
    #[arg(long, env = "JOBD_LISTEN")]
    listen: Option<String>,
    /// Serve the console and the API under this path prefix (`/jobd`: the
    /// console at /jobd/, the API at /jobd/api/v1), for a reverse proxy
    /// that passes the prefix on.
    #[arg(long, env = "JOBD_BASE_PATH")]
    base_path: Option<String>,
    /// Do not run the cron scheduler in this process.
    #[arg(long)]
    no_scheduler: bool,
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Only these queues (default: every configured queue).  A queue that is
    /// not configured is served with --concurrency.
    #[arg(long = "queue")]
    queues: Vec<String>,
    /// Concurrency of --queue queues that the configuration does not list.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

/// The concurrency of a command kind's queue that `[queues]` does not list.
const UNLISTED_COMMAND_QUEUE: usize = 2;

/// The mailer of `[email]`, if the configuration has one.
fn mailer(
    config: &Config,
    data: &DataDir,
) -> CliResult<Option<std::sync::Arc<jobd_handlers::email::Mailer>>> {
    let Some(email) = &config.email else {
        return Ok(None);
    };
    let mailer = jobd_handlers::email::Mailer::new(&email.smtp(&config.base())?, data.clone())?;
    Ok(Some(std::sync::Arc::new(mailer)))
}

/// The command kinds of the configuration, checked.
fn commands(
    config: &Config,
    data: &DataDir,
) -> CliResult<Vec<jobd_handlers::command::CommandKind>> {
    let base = config.base();
    config
        .kinds
        .iter()
        .map(|(kind, k)| k.spec(kind, &base, data.root()))
        .collect()
}

/// The worker of this process: built-in handlers, command kinds and queues
/// from the config.
fn worker(
    store: &jobd::Store,
    data: &DataDir,
    config: &Config,
    mailer: Option<std::sync::Arc<jobd_handlers::email::Mailer>>,
    only: &[String],
    unlisted: usize,
) -> CliResult<WorkerBuilder> {
    let commands = commands(config, data)?;
    let mut queues: Vec<(String, usize)> = jobd_handlers::BUILTIN_QUEUES
        .iter()
        .map(|(q, n)| (q.to_string(), *n))
        .collect();
    for (q, n) in &config.queues {
        match queues.iter_mut().find(|(name, _)| name == q) {
            Some(entry) => entry.1 = *n,
            None => queues.push((q.clone(), *n)),
        }
    }
    for q in only {
        if !queues.iter().any(|(name, _)| name == q) {
            queues.push((q.clone(), unlisted));
        }
    }
    for kind in config.kinds.values() {
        if !queues.iter().any(|(name, _)| name == kind.queue()) {
            queues.push((kind.queue().to_string(), UNLISTED_COMMAND_QUEUE));
        }
    }
    // `builtin` adds its default queues; start from a builder without them
    // and add the configured ones instead.
    let mut builder = jobd_handlers::builtin(Worker::builder(store.clone()), data);
    builder = builder.clear_queues();
    for spec in commands {
        builder = jobd_handlers::command::register(builder, spec);
    }
    let exports = jobd_handlers::export::ExportHandler::new(
        data.clone(),
        config.exports.clone().unwrap_or_default(),
        mailer.is_some(),
    );
    builder = jobd_handlers::export::register(builder, exports);
    let notify = config
        .notify
        .clone()
        .unwrap_or_default()
        .with_secret_from_env()?
        .with_base(&config.base());
    builder = jobd_handlers::notify::register(builder, notify, mailer.clone())?;
    if let Some(alerts) = &config.alerts {
        alerts.check(mailer.as_deref())?;
    }
    builder = jobd_handlers::alerts::register(builder, config.alerts.clone(), mailer.clone());
    if let Some(mailer) = mailer {
        builder = jobd_handlers::email::register(builder, mailer);
    }
    for (q, n) in queues {
        if (only.is_empty() || only.contains(&q)) && n > 0 {
            builder = builder.queue(&q, n);
        }
    }
    if let Some(n) = config.max_concurrency {
        builder = builder.max_concurrency(n);
    }
    if let Some(secs) = config.shutdown_grace_secs {
        builder = builder.shutdown_grace(Duration::from_secs(secs));
    }
    Ok(builder)
}

/// What `jobd serve` and `jobd worker` run with this configuration: the
/// catalog `jobd enqueue` and `jobd schedule add` check jobs against.
pub(super) fn catalog(store: &jobd::Store, data_dir: &Path, config: &Config) -> CliResult<Catalog> {
    let data = DataDir::new(std::path::absolute(data_dir)?);
    Ok(worker(store, &data, config, mailer(config, &data)?, &[], 0)?.catalog())
}

/// The error, and for an unknown queue or kind, the way past the check.
pub(super) fn unchecked_hint(e: jobd::Error) -> Box<dyn std::error::Error> {
    match e {
        jobd::Error::InvalidInput {
            field: "queue" | "kind",
            ..
        } => format!(
            "{e}\n(a job for a worker of your own that is not running yet: pass --unchecked)"
        )
        .into(),
        e => e.into(),
    }
}

/// Run `work` on a fresh runtime, then end the runtime without waiting for
/// blocking work that ignored its stop: a runtime dropped the usual way
/// waits for every thread of its blocking pool, forever for one that never
/// returns — and the process with it, long after SIGTERM.
fn run_to_end<T>(work: impl std::future::Future<Output = T>) -> CliResult<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let out = runtime.block_on(work);
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(out)
}

/// The line a stopping daemon or worker ends with.
fn stopped_line(report: &jobd::worker::WorkerReport) -> String {
    let mut line = format!(
        "stopped ({} jobs succeeded, {} failed, {} released)",
        report.succeeded, report.failed, report.released
    );
    if report.abandoned > 0 {
        line += &format!(
            "; {} ended runs' blocking work had not returned and was left to the exit",
            report.abandoned
        );
    }
    line
}

/// Tokens that were published (an early checkout shipped a `jobd.toml` with
/// this one): whoever has a copy of the repository knows them.
const PUBLISHED_TOKENS: &[&str] =
    &["99a95c5aeb12e5e50c7250309b81c58e8b0ccd09776fbe36ea6ed171c622de07"];

/// The API token `serve` guards `/api` with: `JOBD_API_TOKEN`, else the
/// configuration's `api_token`.  Refused when missing, shorter than
/// `MIN_TOKEN_BYTES` or published; a warning when the file holding it can
/// be read by other users.
fn api_token(config: &Config) -> CliResult<String> {
    let (token, from_file) = match std::env::var("JOBD_API_TOKEN") {
        Ok(t) => (t, false),
        Err(_) => match &config.api_token {
            Some(t) => (t.clone(), true),
            None => {
                return Err(
                    "no API token: run `jobd init` (it writes a new one to ./jobd.toml, \
                     readable by you only) or set JOBD_API_TOKEN"
                        .into(),
                )
            }
        },
    };
    let source = match (&config.path, from_file) {
        (Some(p), true) => format!("api_token in {}", p.display()),
        _ => "JOBD_API_TOKEN".to_string(),
    };
    if token.len() < MIN_TOKEN_BYTES {
        return Err(format!(
            "{source} is {} bytes; it must be at least {MIN_TOKEN_BYTES} \
             (`openssl rand -hex 32` makes one, `jobd init` writes one to a new jobd.toml)",
            token.len()
        )
        .into());
    }
    if PUBLISHED_TOKENS.contains(&token.as_str()) {
        return Err(format!(
            "{source} is the example token published with jobd's source: anyone can use it; \
             put a new one there (`openssl rand -hex 32`)"
        )
        .into());
    }
    if let (Some(path), true) = (&config.path, from_file) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    file = %path.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "the file holding the API token can be read by other users: chmod 600 it"
                );
            }
        }
    }
    Ok(token)
}

pub fn serve(db: &Path, data_dir: &Path, config: &Config, args: ServeArgs) -> CliResult {
    let token = api_token(config)?;
    // Connections, queue and tenant files all take descriptors: the usual
    // soft limit of 1024 is far below what the hard limit allows.
    server::raise_file_limit();
    let listen = args
        .listen
        .or_else(|| config.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let base_path = args
        .base_path
        .or_else(|| config.base_path.clone())
        .unwrap_or_default();
    let store = open_or_create(db)?;
    // Absolute, so the paths in job results mean the same to every reader.
    let data = DataDir::new(std::path::absolute(data_dir)?);
    let mailer = mailer(config, &data)?;
    let builder = worker(&store, &data, config, mailer.clone(), &[], 0)?;
    if config.alerts.is_some() {
        for name in jobd_handlers::alerts::install_schedule(&store)? {
            tracing::info!(target: "jobd::daemon", schedule = %name, "installed the dead-job alerts' schedule");
        }
    }
    let run_scheduler = !args.no_scheduler && config.scheduler.unwrap_or(true);
    let mut state = ApiState::new(store.clone(), &token)?
        .catalog(builder.catalog())
        .remote_queues(config.remote_queues())
        .with_scheduler(run_scheduler);
    if let Some(mailer) = mailer {
        // Checks run on the blocking pool, inside the runtime.
        let check = move || tokio::runtime::Handle::current().block_on(mailer.health());
        state = state.health_check("email", std::sync::Arc::new(check));
    }

    run_to_end(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| format!("listening on {listen}: {e}"))?;
        let addr = listener.local_addr()?;
        let queues = builder.queue_names().join(",");
        tracing::info!(
            target: "jobd::daemon",
            version = env!("CARGO_PKG_VERSION"),
            queue = %store.location(),
            queues = %queues,
            listen = %addr,
            scheduler = run_scheduler,
            "jobd serve: {} — API on http://{addr}, queues {queues}{}",
            store.location(),
            if run_scheduler { ", scheduler" } else { "" }
        );
        let stop = CancellationToken::new();
        let signal = jobd::worker::shutdown_signal();
        tokio::spawn({
            let stop = stop.clone();
            async move {
                signal.await;
                stop.cancel();
            }
        });
        let http = tokio::spawn({
            let stop = stop.clone();
            server::serve(
                listener,
                server::at_base_path(server::router_with(state, crate::app::routes()), &base_path)?,
                async move { stop.cancelled().await },
            )
        });
        let scheduler = run_scheduler.then(|| {
            let stop = stop.clone();
            tokio::spawn(Scheduler::new(store.clone()).run(async move { stop.cancelled().await }))
        });
        let stop_worker = stop.clone();
        let report = if builder.queue_names().is_empty() {
            // Every queue left to remote workers: no worker here, but their
            // expired leases and overdue tries are still taken back.
            reap_until(&store, stop_worker).await;
            Ok(jobd::worker::WorkerReport::default())
        } else {
            builder
                .run(async move { stop_worker.cancelled().await })
                .await
        };
        stop.cancel(); // a worker that failed takes the rest down with it
        let report = report?;
        http.await??;
        if let Some(s) = scheduler {
            s.await??;
        }
        tracing::info!(target: "jobd::daemon", "jobd serve: {}", stopped_line(&report));
        Ok::<_, Box<dyn std::error::Error>>(())
    })??;
    Ok(ExitCode::SUCCESS)
}

/// `Store::reap` every 5 s until `stop` (a daemon without workers of its own).
async fn reap_until(store: &jobd::Store, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.reap()).await {
            Ok(Err(e)) => tracing::error!(error = %e, "reap failed"),
            Err(e) => tracing::error!(error = %e, "reap did not run"),
            Ok(Ok(_)) => {}
        }
    }
}

pub fn worker_only(db: &Path, data_dir: &Path, config: &Config, args: WorkerArgs) -> CliResult {
    let store = open_or_create(db)?;
    let data = DataDir::new(std::path::absolute(data_dir)?);
    let mailer = mailer(config, &data)?;
    let builder = worker(
        &store,
        &data,
        config,
        mailer,
        &args.queues,
        args.concurrency,
    )?;
    if builder.queue_names().is_empty() {
        return Err(format!("no such queue among {:?}", args.queues).into());
    }
    tracing::info!(
        target: "jobd::daemon",
        version = env!("CARGO_PKG_VERSION"),
        queue = %store.location(),
        queues = %builder.queue_names().join(","),
        "jobd worker: {} — queues {}",
        store.location(),
        builder.queue_names().join(",")
    );
    run_to_end(async move {
        let report = builder.run(jobd::worker::shutdown_signal()).await?;
        tracing::info!(target: "jobd::daemon", "jobd worker: {}", stopped_line(&report));
        Ok::<_, Box<dyn std::error::Error>>(())
    })??;
    Ok(ExitCode::SUCCESS)
}
