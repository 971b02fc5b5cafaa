//! `jobd demo`: the platform's day in one command.  A fresh data dir, 101
//! seeded tenant databases, a QR PDF per tenant, a batch of QR images, an
//! analytics rollup, a verified backup of every tenant, and a stream of
//! small jobs (a few flaky, a few doomed) — run by the real worker runtime
//! with the built-in handlers while progress bars show them, then a report
//! read back from the queue file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use jobd::store::{Backoff, JobState, NewJob};
use jobd::worker::{JobError, Worker};
use jobd::Store;
use jobd_handlers::email::{Mailer, SmtpConfig, TlsMode};
use jobd_handlers::tenants::{seed, SeedOptions};
use jobd_handlers::{self, DataDir};
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::CliResult;

/// The demo's own directory when `--data-dir` is not given.  The demo never
/// reads `JOBD_DATA_DIR` or `jobd.toml`: those name the user's real data.
pub const DEFAULT_DIR: &str = "jobd-demo";

/// The file the demo writes into a directory it made; only a directory that
/// holds it is ever cleared by a later demo.
const MARKER: &str = ".jobd-demo";

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Tenant databases to seed.
    #[arg(long, default_value_t = 101)]
    tenants: usize,
    /// Scans per tenant.
    #[arg(long, default_value_t = 20_000)]
    scans: usize,
    /// Small jobs (1% fail once and are retried, 0.1% always fail).
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// An SMTP server (`HOST:PORT`) for the batch-complete and backup-report
    /// mails: plain on loopback (a local relay or test server), STARTTLS
    /// elsewhere.
    #[arg(long, value_name = "HOST:PORT")]
    smtp: Option<String>,
    /// Who the demo's mails go to.
    #[arg(long, default_value = "demo@example.com")]
    mail_to: String,
}

/// The mailer of `--smtp`.
fn demo_mailer(smtp: &str, data: &DataDir) -> CliResult<std::sync::Arc<Mailer>> {
    let (host, port) = smtp
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("--smtp {smtp:?}: give HOST:PORT, like 127.0.0.1:2525"))?;
    let mut config = SmtpConfig::loopback(port, "jobd demo <demo@jobd.localhost>");
    config.host = host.to_string();
    if !matches!(host, "127.0.0.1" | "localhost" | "::1" | "[::1]") {
        config.tls = TlsMode::Starttls;
    }
    Ok(std::sync::Arc::new(Mailer::new(&config, data.clone())?))
}

/// What `jobd demo` reports (and `--json` prints).
#[derive(Debug, Serialize)]
struct Report {
    data_dir: PathBuf,
    queue_db: PathBuf,
    tenants: usize,
    seed_secs: f64,
    run_secs: f64,
    jobs: i64,
    jobs_per_sec: f64,
    states: std::collections::BTreeMap<String, i64>,
    pdfs: usize,
    artifacts: PathBuf,
    batch: serde_json::Value,
    analytics_total_scans: serde_json::Value,
    backup_set: serde_json::Value,
    /// The mails sent (template, recipients, the server's answer), or why none.
    emails: serde_json::Value,
}

/// Run the demo in `dir` (`--data-dir`, else [`DEFAULT_DIR`]).
pub fn run(dir: Option<&Path>, args: DemoArgs) -> CliResult {
    let root = std::path::absolute(dir.unwrap_or(Path::new(DEFAULT_DIR)))?;
    fresh(&root)?;
    let data = DataDir::new(&root);
    let db = root.join("queue.db");
    let quiet = args.json;
    let bars = MultiProgress::with_draw_target(if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });

    let seeding = bars.add(ProgressBar::new_spinner());
    seeding.set_message(format!(
        "seeding {} tenant databases ({} scans each)",
        args.tenants, args.scans
    ));
    seeding.enable_steady_tick(Duration::from_millis(120));
    let t = Instant::now();
    seed(
        data.tenants(),
        &SeedOptions {
            tenants: args.tenants,
            scans_per_tenant: args.scans,
            ..SeedOptions::default()
        },
    )?;
    let seed_secs = t.elapsed().as_secs_f64();
    seeding.finish_with_message(format!(
        "seeded {} tenants in {seed_secs:.1} s",
        args.tenants
    ));

    let mailer = args
        .smtp
        .as_deref()
        .map(|s| demo_mailer(s, &data))
        .transpose()?;
    let mail_to = mailer.as_ref().map(|_| json!([args.mail_to]));
    let store = Store::open(&db)?;
    let tenants = data.tenants().list()?;
    let started = Instant::now();
    let mut jobs: Vec<NewJob> = tenants
        .iter()
        .map(|t| {
            NewJob::new("pdf", "generate_qr_pdf")
                .tenant(t)
                .payload(&json!({"template_id": 1, "columns": 3, "rows": 4, "copies": 12}))
        })
        .collect();
    let first = tenants.first().cloned().unwrap_or_default();
    let mut batch_ids: Vec<i64> = (1..=40).collect();
    batch_ids.extend([404, 405]); // no such templates: recorded, the batch goes on
    jobs.push(NewJob::new("batch", "batch_qr").tenant(&first).payload(
        &json!({"template_ids": batch_ids, "formats": ["png", "svg"],
                             "email": mail_to}),
    ));
    jobs.push(NewJob::new("analytics", "analytics_rollup").payload(&json!({"period": "weekly"})));
    jobs.push(
        NewJob::new("maintenance", "backup_tenants").payload(&json!({"keep": 3, "email": mail_to})),
    );
    for i in 0..args.jobs {
        let kind = match i {
            i if i % 1000 == 7 => "doomed",
            i if i % 100 == 3 => "flaky",
            _ => "noop",
        };
        jobs.push(
            NewJob::new("default", kind)
                .payload(&json!({"n": i}))
                .backoff(Backoff::new(
                    Duration::from_millis(50),
                    Duration::from_millis(200),
                )),
        );
    }
    let ids = store.enqueue_many(&jobs)?;
    let (pdf_ids, rest) = ids.split_at(tenants.len());
    let (batch_id, analytics_id, backup_id) = (rest[0], rest[1], rest[2]);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut builder = jobd_handlers::builtin(Worker::builder(store.clone()), &data);
    if let Some(mailer) = &mailer {
        builder = jobd_handlers::email::register(builder, mailer.clone());
    }
    let builder = builder
        .handle_fn("flaky", |ctx, _| async move {
            if ctx.attempt() == 1 {
                return Err(JobError::retryable("flaky: fails on its first try"));
            }
            Ok(json!({"attempt": ctx.attempt()}))
        })
        .handle_fn("doomed", |_, _| async {
            Err(JobError::retryable("doomed: fails every try"))
        });
    let style = ProgressStyle::with_template("{prefix:>10} [{bar:32}] {pos:>6}/{len:<6} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bar = |prefix: &str, len: u64| {
        let b = bars.add(ProgressBar::new(len));
        b.set_style(style.clone());
        b.set_prefix(prefix.to_string());
        b
    };
    let pdf_bar = bar("pdf", pdf_ids.len() as u64);
    let batch_bar = bar("batch", 100);
    let analytics_bar = bar("analytics", 100);
    let backup_bar = bar("backup", 100);
    let small_bar = bar("small", args.jobs as u64);

    runtime.block_on(async {
        let stop = CancellationToken::new();
        let worker = tokio::spawn({
            let stop = stop.clone();
            builder.run(async move { stop.cancelled().await })
        });
        loop {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let store = store.clone();
            let pdfs = pdf_ids.to_vec();
            let snapshot = tokio::task::spawn_blocking(move || -> jobd::Result<_> {
                let stats = store.stats()?;
                let get = |id| store.get(id);
                let pdf_done = pdfs
                    .iter()
                    .filter(|id| get(**id).map(|j| j.state.is_finished()).unwrap_or(false))
                    .count();
                Ok((
                    stats,
                    pdf_done,
                    get(batch_id)?,
                    get(analytics_id)?,
                    get(backup_id)?,
                ))
            })
            .await??;
            let (stats, pdf_done, batch, analytics, backup) = snapshot;
            pdf_bar.set_position(pdf_done as u64);
            for (b, job) in [
                (&batch_bar, &batch),
                (&analytics_bar, &analytics),
                (&backup_bar, &backup),
            ] {
                b.set_position(job.progress.percent.unwrap_or(0.0) as u64);
                b.set_message(
                    job.progress
                        .detail
                        .clone()
                        .or(job.progress.stage.clone())
                        .unwrap_or_default(),
                );
                if job.state.is_finished() {
                    b.set_position(100);
                    b.set_message(job.state.as_str().to_string());
                }
            }
            if let Some(q) = stats.queue("default") {
                small_bar.set_position((q.succeeded + q.dead) as u64);
                small_bar.set_message(format!("{} retrying", q.scheduled));
            }
            let waiting: i64 = stats
                .queues
                .iter()
                .map(|q| q.scheduled + q.ready + q.running)
                .sum();
            if waiting == 0 {
                break;
            }
        }
        stop.cancel();
        worker.await??;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    for b in [
        &pdf_bar,
        &batch_bar,
        &analytics_bar,
        &backup_bar,
        &small_bar,
    ] {
        b.finish();
    }
    let run_secs = started.elapsed().as_secs_f64();

    // The report, read back from the queue file.
    let stats = store.stats()?;
    let mut states = std::collections::BTreeMap::new();
    for state in JobState::ALL {
        let n: i64 = stats
            .queues
            .iter()
            .map(|q| match state {
                JobState::Scheduled => q.scheduled,
                JobState::Ready => q.ready,
                JobState::Running => q.running,
                JobState::Succeeded => q.succeeded,
                JobState::Dead => q.dead,
                JobState::Cancelled => q.cancelled,
            })
            .sum();
        states.insert(state.as_str().to_string(), n);
    }
    let total: i64 = states.values().sum();
    let result = |id| store.get(id).map(|j| j.result.unwrap_or_default());
    let analytics = result(analytics_id)?;
    let backup = result(backup_id)?;
    let emails = match &args.smtp {
        None => json!(
            "not sent: no --smtp (jobd demo --smtp 127.0.0.1:2525 sends the \
                       batch-complete and backup-report mails to a local server)"
        ),
        Some(server) => {
            let mut sent = Vec::new();
            for s in store.list(&jobd::store::ListFilter {
                queue: Some(jobd_handlers::email::EMAIL_QUEUE.into()),
                ..Default::default()
            })? {
                let j = store.get(s.id)?;
                sent.push(json!({
                    "template": j.payload["template"], "to": j.payload["to"], "server": server,
                    "state": j.state, "answer": j.result.as_ref().map(|r| r["smtp"].clone()),
                    "error": j.last_error,
                }));
            }
            json!(sent)
        }
    };
    let report = Report {
        data_dir: root.clone(),
        queue_db: db.clone(),
        tenants: tenants.len(),
        seed_secs,
        run_secs,
        jobs: total,
        jobs_per_sec: total as f64 / run_secs,
        states,
        pdfs: pdf_ids.len(),
        artifacts: data.artifacts(),
        batch: result(batch_id)?,
        analytics_total_scans: analytics["total_scans"].clone(),
        backup_set: backup["path"].clone(),
        emails,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, &root);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(r: &Report, root: &Path) {
    println!();
    println!("jobd demo report");
    println!("  data dir        {}", r.data_dir.display());
    println!(
        "  seeding         {} tenants in {:.1} s",
        r.tenants, r.seed_secs
    );
    println!(
        "  run             {} jobs in {:.2} s ({:.0} jobs/s)",
        r.jobs, r.run_secs, r.jobs_per_sec
    );
    for (state, n) in &r.states {
        println!("    {state:<12} {n}");
    }
    println!(
        "  QR PDFs         {} under {}",
        r.pdfs,
        r.artifacts.display()
    );
    println!(
        "  batch QR        {} completed, {} failed (success rate {:.2}) in {}",
        r.batch["completed"],
        r.batch["failed"],
        r.batch["success_rate"].as_f64().unwrap_or(0.0),
        r.batch["dir"].as_str().unwrap_or("")
    );
    println!(
        "  analytics       {} scans across all tenants (cached in the queue file)",
        r.analytics_total_scans
    );
    println!("  backup set      {}", r.backup_set.as_str().unwrap_or("-"));
    match &r.emails {
        serde_json::Value::Array(mails) => {
            for m in mails {
                println!(
                    "  e-mail          {} to {} via {}: {}",
                    m["template"].as_str().unwrap_or("?"),
                    m["to"],
                    m["server"].as_str().unwrap_or("?"),
                    m["answer"].as_str().or(m["error"].as_str()).unwrap_or("?")
                );
            }
        }
        other => println!("  e-mail          {}", other.as_str().unwrap_or("-")),
    }
    println!();
    println!("Look inside:");
    println!(
        "  sqlite3 {} 'select * from queue_stats'",
        r.queue_db.display()
    );
    println!(
        "  sqlite3 {} \"select * from job_overview where state = 'dead'\"",
        r.queue_db.display()
    );
    println!("The daemon and its dashboard:");
    println!(
        "  jobd --data-dir {} init    # writes ./jobd.toml with an API token",
        root.display()
    );
    println!("  jobd serve                 # then open http://127.0.0.1:7878/ and paste the token");
}

/// Make `root` ready for a run: create it (with the demo's marker) when it is
/// missing or empty; when a previous demo made it (the marker is there),
/// remove what that demo left — its queue file, tenants, artifacts and
/// backups, nothing else.  Any other non-empty directory is refused and left
/// as it is: it may be somebody's real data.
fn fresh(root: &Path) -> CliResult<()> {
    let marker = root.join(MARKER);
    match std::fs::read_dir(root) {
        Ok(mut entries) => {
            if entries.next().is_some() && !marker.is_file() {
                return Err(format!(
                    "{} is not empty and was not made by `jobd demo` (it has no {MARKER}); \
                     the demo only replaces its own directory: pick another --data-dir \
                     (default {DEFAULT_DIR}) or an empty one",
                    root.display()
                )
                .into());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(root)
                .map_err(|e| format!("creating {}: {e}", root.display()))?;
        }
        Err(e) => return Err(format!("reading {}: {e}", root.display()).into()),
    }
    std::fs::write(
        &marker,
        "Made by `jobd demo`: a later demo may replace what is in this directory.\n",
    )
    .map_err(|e| format!("writing {}: {e}", marker.display()))?;
    for f in ["queue.db", "queue.db-wal", "queue.db-shm"] {
        let p = root.join(f);
        if p.exists() {
            std::fs::remove_file(&p).map_err(|e| format!("removing {}: {e}", p.display()))?;
        }
    }
    for d in ["tenants", "artifacts", "backups"] {
        let p = root.join(d);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(|e| format!("removing {}: {e}", p.display()))?;
        }
    }
    Ok(())
}
