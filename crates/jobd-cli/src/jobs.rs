//! `jobd enqueue | show | list | cancel | retry | delete`.

use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use jobd::store::{JobSelection, JobSpec, JobState, ListFilter, NewJob};

use super::config::Config;
use super::{iso, open, CliResult};

#[derive(Args, Debug)]
pub struct EnqueueArgs {
    /// Queue name (with --kind; without both, jobs are read as JSON lines from stdin).
    #[arg(long, requires = "kind")]
    queue: Option<String>,
    /// Job kind.
    #[arg(long, requires = "queue")]
    kind: Option<String>,
    /// Payload as JSON.
    #[arg(long, default_value = "{}")]
    payload: String,
    /// Lower runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i64,
    /// Start no earlier than this many milliseconds from now.
    #[arg(long)]
    delay_ms: Option<u64>,
    /// Tries in all before the job is dead (a retryable failure is retried after a backoff).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
    max_attempts: i64,
    /// Stop a try after this many milliseconds.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// At most one waiting or running job per key: enqueueing the key again returns that job.
    #[arg(long)]
    unique_key: Option<String>,
    /// The tenant the job is for (shown and filtered on; handlers default to it).
    #[arg(long)]
    tenant: Option<String>,
    /// Reading stdin, commit every N jobs as they are read (for a long or endless
    /// stream; a bad line then stops the run with the earlier batches enqueued).
    /// Without it, every line is checked first and all the jobs go in one
    /// transaction: all or none.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    batch: Option<u64>,
    /// Enqueue even a job no worker could run now: one of a queue or kind
    /// that neither this configuration nor a live worker on the file serves
    /// (for workers of your own that are not running yet).
    #[arg(long)]
    unchecked: bool,
}

pub fn enqueue(db: &Path, data_dir: &Path, config: &Config, args: EnqueueArgs) -> CliResult {
    let store = open(db)?;
    let catalog = (!args.unchecked)
        .then(|| super::serve::catalog(&store, data_dir, config))
        .transpose()?;
    let checker = catalog.as_ref().map(|c| c.checker(&store));
    let remote = config.remote_queues();
    let check = |job: &NewJob| -> CliResult<()> {
        match &checker {
            // Any kind on a queue only remote workers serve: they name
            // their kinds, the configuration does not.
            Some(_) if remote.iter().any(|q| q == job.queue_name()) => Ok(()),
            Some(checker) => checker.check_job(job).map_err(super::serve::unchecked_hint),
            None => Ok(()),
        }
    };
    if let (Some(queue), Some(kind)) = (&args.queue, &args.kind) {
        let mut job = NewJob::new(queue, kind)
            .payload_json(args.payload)
            .priority(args.priority)
            .max_attempts(args.max_attempts);
        if let Some(ms) = args.delay_ms {
            job = job.delay(std::time::Duration::from_millis(ms));
        }
        if let Some(ms) = args.timeout_ms {
            job = job.timeout(std::time::Duration::from_millis(ms));
        }
        if let Some(k) = args.unique_key {
            job = job.unique_key(k);
        }
        if let Some(t) = args.tenant {
            job = job.tenant(t);
        }
        check(&job)?;
        println!("{}", store.enqueue(&job)?);
        return Ok(ExitCode::SUCCESS);
    }
    // JSON lines: each line is one job object.
    let batch_size = args.batch.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut jobs = Vec::new();
    let mut committed = 0usize;
    let flush = |jobs: &mut Vec<NewJob>, out: &mut dyn std::io::Write| -> CliResult<usize> {
        for id in store.enqueue_many(jobs)? {
            writeln!(out, "{id}")?;
        }
        out.flush()?;
        Ok(std::mem::take(jobs).len())
    };
    // What an error leaves behind: nothing, or the batches committed so far.
    let left = |committed: usize, pending: usize| match batch_size {
        None => "nothing was enqueued".to_string(),
        Some(n) => format!(
            "{committed} jobs read before it were enqueued (--batch {n} commits as it reads; \
             their ids are on stdout); the {pending} since the last commit were not"
        ),
    };
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let job = line
            .map_err(|e| e.to_string())
            .and_then(|line| {
                if line.trim().is_empty() {
                    return Ok(None);
                }
                let job = JobSpec::from_json(&line)
                    .and_then(JobSpec::into_new_job)
                    .map_err(|e| e.to_string())?;
                check(&job).map_err(|e| e.to_string())?;
                Ok(Some(job))
            })
            .map_err(|e| format!("line {}: {e}\n{}", n + 1, left(committed, jobs.len())))?;
        jobs.extend(job);
        if batch_size.is_some_and(|b| jobs.len() >= b) {
            let pending = jobs.len();
            committed += flush(&mut jobs, &mut out)
                .map_err(|e| format!("{e}\n{}", left(committed, pending)))?;
        }
    }
    let pending = jobs.len();
    flush(&mut jobs, &mut out).map_err(|e| format!("{e}\n{}", left(committed, pending)))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    id: i64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn show(db: &Path, args: ShowArgs) -> CliResult {
    let job = open(db)?.get(args.id)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&job)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "job {}  {}  ({} on queue {})",
        job.id, job.state, job.kind, job.queue
    );
    println!("  tries     {} of {}", job.attempts, job.attempt_limit);
    if let Some(t) = &job.tenant {
        println!("  tenant    {t}");
    }
    println!("  created   {}", iso(job.created_at));
    println!("  run at    {}", iso(job.run_at));
    if let Some(p) = job.progress.percent {
        println!(
            "  progress  {p:.1}% {}",
            job.progress.stage.as_deref().unwrap_or("")
        );
    }
    if let Some(w) = &job.worker {
        println!("  worker    {w}");
    }
    println!("  payload   {}", job.payload);
    if let Some(r) = &job.result {
        println!("  result    {r}");
    }
    if let Some(e) = &job.last_error {
        println!("  error     {e}");
    }
    for a in &job.attempt_log {
        println!(
            "  try {:>3}  {:<9} {} ({} ms) {}{}",
            a.attempt,
            a.outcome,
            iso(a.started_at),
            a.finished_at - a.started_at,
            a.worker.as_deref().unwrap_or("-"),
            a.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only this queue.
    #[arg(long)]
    queue: Option<String>,
    /// scheduled, ready, running, succeeded, dead or cancelled.
    #[arg(long)]
    state: Option<String>,
    /// Only this job kind.
    #[arg(long)]
    kind: Option<String>,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Only jobs whose last error contains this text (ASCII letters in any case).
    #[arg(long)]
    error: Option<String>,
    /// Only jobs whose payload holds this value at this path: `customer.id=42`,
    /// `to=ops@example.com` (a value that is not JSON is a string).
    #[arg(long, value_name = "PATH=VALUE")]
    payload: Option<String>,
    /// Only jobs older than this one (the next page: the last id printed).
    #[arg(long, value_name = "ID")]
    before: Option<i64>,
    /// At most this many jobs.
    #[arg(long, default_value_t = 50)]
    limit: i64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn list(db: &Path, args: ListArgs) -> CliResult {
    let filter = ListFilter {
        queue: args.queue,
        state: args
            .state
            .as_deref()
            .map(str::parse::<JobState>)
            .transpose()?,
        kind: args.kind,
        tenant: args.tenant,
        error_contains: args.error,
        before_id: args.before,
        after_id: None,
        limit: Some(args.limit),
        payload: args.payload,
    };
    let jobs = open(db)?.list(&filter)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>8}  {:<12} {:<20} {:<10} {:>5}  {:<24} error",
        "id", "queue", "kind", "state", "tries", "created"
    );
    for j in jobs {
        println!(
            "{:>8}  {:<12} {:<20} {:<10} {:>2}/{:<2}  {:<24} {}",
            j.id,
            j.queue,
            j.kind,
            j.state,
            j.attempts,
            j.attempt_limit,
            iso(j.created_at),
            j.last_error.unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Which jobs a bulk `cancel --all` or `retry --all` acts on.
#[derive(Args, Debug)]
pub struct SelectionArgs {
    /// Every job the filters below match (all of them: no filter, every job
    /// the command applies to), in batches of 1,000.
    #[arg(long)]
    all: bool,
    /// With --all: only this queue.
    #[arg(long, conflicts_with = "id")]
    queue: Option<String>,
    /// With --all: only this job kind.
    #[arg(long, conflicts_with = "id")]
    kind: Option<String>,
    /// With --all: only this tenant.
    #[arg(long, conflicts_with = "id")]
    tenant: Option<String>,
    /// With --all: only jobs whose last error contains this text (ASCII letters in any case).
    #[arg(long, conflicts_with = "id")]
    error: Option<String>,
    /// With --all: only jobs in this state (cancel: scheduled, ready or
    /// running, default all three; retry: dead, the default, or cancelled).
    #[arg(long, conflicts_with = "id")]
    state: Option<String>,
    /// With --all: only say how many jobs it would act on; change nothing.
    #[arg(long, conflicts_with = "id")]
    dry_run: bool,
}

impl SelectionArgs {
    fn selection(self) -> Result<JobSelection, jobd::Error> {
        Ok(JobSelection {
            queue: self.queue,
            kind: self.kind,
            tenant: self.tenant,
            error_contains: self.error,
            state: self.state.as_deref().map(str::parse).transpose()?,
        })
    }
}

/// One job by id, or `--all` with filters (`jobd cancel`, `jobd retry`).
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["id", "all"])))]
pub struct TargetArgs {
    /// The job (or --all with filters).
    id: Option<i64>,
    #[command(flatten)]
    select: SelectionArgs,
}

pub fn cancel(db: &Path, args: TargetArgs) -> CliResult {
    let store = open(db)?;
    let Some(id) = args.id else {
        let dry_run = args.select.dry_run;
        let selection = args.select.selection()?;
        if dry_run {
            let r = store.count_cancellable(&selection)?;
            println!(
                "would cancel {} waiting jobs and ask {} running jobs to stop (nothing changed)",
                r.cancelled, r.requested
            );
            return Ok(ExitCode::SUCCESS);
        }
        let r = store.cancel_matching(&selection)?;
        println!(
            "{} waiting jobs cancelled, {} running jobs asked to stop",
            r.cancelled, r.requested
        );
        return Ok(ExitCode::SUCCESS);
    };
    let outcome = store.cancel(id)?;
    println!(
        "job {id}: {}",
        serde_json::to_value(outcome)?.as_str().unwrap_or("done")
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// The jobs to delete.
    #[arg(required = true)]
    ids: Vec<i64>,
}

/// Delete each job named; one that cannot be (running, missing) is said,
/// the others go, and the exit code is 1.
pub fn delete(db: &Path, args: DeleteArgs) -> CliResult {
    let store = open(db)?;
    let mut failed = false;
    for id in args.ids {
        match store.delete(id) {
            Ok(state) => println!("job {id}: deleted (was {state})"),
            Err(e) => {
                eprintln!("job {id}: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub fn retry(db: &Path, args: TargetArgs) -> CliResult {
    let store = open(db)?;
    let Some(id) = args.id else {
        let dry_run = args.select.dry_run;
        let selection = args.select.selection()?;
        if dry_run {
            let n = store.count_retryable(&selection)?;
            println!("would retry {n} jobs (nothing changed)");
            return Ok(ExitCode::SUCCESS);
        }
        let r = store.retry_matching(&selection)?;
        println!("{} jobs retried", r.retried);
        if !r.key_taken.is_empty() {
            let ids: Vec<String> = r.key_taken.iter().map(|id| id.to_string()).collect();
            println!(
                "{} left as they were: a waiting or running job holds their unique key (jobs {})",
                r.key_taken.len(),
                ids.join(", ")
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    store.retry(id)?;
    println!("job {id}: ready");
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    id: i64,
    /// Seconds to wait at most (default: until the job ends).
    #[arg(long)]
    timeout: Option<u64>,
}

/// A progress bar until the job ends.  Exit code: 0 succeeded, 1 dead,
/// 2 cancelled, 3 timed out watching.
pub fn watch(db: &Path, args: WatchArgs) -> CliResult {
    use indicatif::{ProgressBar, ProgressStyle};
    let store = open(db)?;
    let job = store.get(args.id)?;
    let bar = ProgressBar::new(100);
    bar.set_style(
        ProgressStyle::with_template("job {prefix} [{bar:40}] {pos:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{} {}/{}", job.id, job.queue, job.kind));
    let deadline = args
        .timeout
        .map(|s| std::time::Instant::now() + std::time::Duration::from_secs(s));
    let job = loop {
        let job = store.get(args.id)?;
        bar.set_position(job.progress.percent.unwrap_or(0.0).clamp(0.0, 100.0) as u64);
        let stage = job.progress.stage.clone().unwrap_or_default();
        let detail = job
            .progress
            .detail
            .clone()
            .map(|d| format!(" — {d}"))
            .unwrap_or_default();
        bar.set_message(format!("{} {stage}{detail}", job.state.as_str()));
        if job.state.is_finished() {
            break job;
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            bar.abandon_with_message(format!(
                "{} (still going; stopped watching)",
                job.state.as_str()
            ));
            return Ok(ExitCode::from(3));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    bar.finish_with_message(job.state.as_str().to_string());
    match job.state {
        JobState::Succeeded => {
            println!("{}", job.result.map(|r| r.to_string()).unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        JobState::Dead => {
            eprintln!(
                "job {} is dead: {}",
                job.id,
                job.last_error.unwrap_or_default()
            );
            Ok(ExitCode::from(1))
        }
        _ => {
            eprintln!("job {} was cancelled", job.id);
            Ok(ExitCode::from(2))
        }
    }
}
