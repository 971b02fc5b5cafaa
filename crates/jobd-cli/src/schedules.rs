//! `jobd init`, `jobd schedule add | list | show | remove | pause | resume |
//! run-now`, and `jobd scheduler` (run the scheduler in the foreground).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use jobd::scheduler::{Misfire, NewSchedule, ScheduleInfo, Scheduler, Timetable, When};
use jobd::NewJob;

use super::config::Config;
use super::{iso, open, open_or_create, CliResult};

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Do not install the default schedules.
    #[arg(long)]
    no_defaults: bool,
    /// Re-add default schedules that were removed since the first init.
    #[arg(long, conflicts_with = "no_defaults")]
    restore_defaults: bool,
}

/// Create the data directory and the queue file (if missing), a commented
/// `jobd.toml` with a fresh API token (if there is none), and the default
/// schedules (once).
pub fn init(db: &Path, data_dir: &Path, config: Option<&Path>, args: InitArgs) -> CliResult {
    super::private_dir(data_dir)?;
    for sub in ["tenants", "artifacts", "backups"] {
        super::private_dir(&data_dir.join(sub))?;
    }
    let store = open_or_create(db)?;
    let version = match store.sqlite() {
        Some(_) => jobd::store::SCHEMA_VERSION,
        None => jobd::store::postgres::SCHEMA_VERSION,
    };
    println!("{}: ready (schema version {version})", store.location());
    let templates = jobd_handlers::email::templates_dir(&jobd_handlers::DataDir::new(data_dir));
    let written = jobd_handlers::email::templates::write_builtin(&templates).map_err(|e| {
        format!(
            "writing the e-mail templates to {}: {e}",
            templates.display()
        )
    })?;
    if !written.is_empty() {
        println!(
            "{}: {} e-mail template files written, to edit (existing ones kept)",
            templates.display(),
            written.len()
        );
    }
    let config_path = config.unwrap_or(Path::new("jobd.toml"));
    if config_path.exists() {
        let has_token = super::config::Config::load(Some(config_path))
            .map(|c| c.api_token.is_some())
            .unwrap_or(false);
        println!(
            "{}: exists, kept as it is ({}); to start over, move it away and run `jobd init` again",
            config_path.display(),
            if has_token {
                "its api_token is unchanged"
            } else {
                "it has no api_token, which `jobd serve` needs: add one \
                 (`openssl rand -hex 32`) or set JOBD_API_TOKEN"
            }
        );
    } else {
        let token = super::config::new_token()?;
        write_private(config_path, &super::config::template(data_dir, db, &token))?;
        println!(
            "{}: written, with a new API token (api_token; readable by you only)",
            config_path.display()
        );
    }
    if args.no_defaults {
        return Ok(ExitCode::SUCCESS);
    }
    let added = jobd_handlers::schedules::install_default_schedules(&store, args.restore_defaults)?;
    if added.is_empty() {
        println!("default schedules: already installed (jobd schedule list)");
    }
    for name in added {
        let s = store.schedule(&name)?;
        println!("added schedule {}: {}", s.name, describe(&s));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Add a schedule (or with --replace, redefine one).
    Add(Box<AddArgs>),
    /// Every schedule with its next fire time.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One schedule: definition, next fire times, recent fires.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a schedule (jobs it enqueued stay).
    Remove { name: String },
    /// Stop firing a schedule.
    Pause { name: String },
    /// Fire a paused schedule again, from its next tick.
    Resume { name: String },
    /// Enqueue the schedule's job now, outside its timetable.
    RunNow { name: String },
}

#[derive(Args, Debug)]
pub struct AddArgs {
    name: String,
    /// Cron expression: "min hour dom month dow" or "sec min hour dom month dow [year]".
    #[arg(long, required_unless_present = "every", conflicts_with = "every")]
    cron: Option<String>,
    /// Fixed interval of real time, e.g. 30m, 1h, 90s (aligned to the epoch).
    #[arg(long)]
    every: Option<String>,
    /// IANA timezone of the cron expression's wall clock.
    #[arg(long, default_value = "UTC")]
    tz: String,
    /// Queue of the jobs it enqueues.
    #[arg(long)]
    queue: String,
    /// Kind of the jobs it enqueues.
    #[arg(long)]
    kind: String,
    /// The jobs' payload, as JSON.
    #[arg(long, default_value = "{}")]
    payload: String,
    /// Priority of its jobs (lower runs first).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i64,
    /// Tries per job.
    #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
    max_attempts: i64,
    /// Stop a try after this many milliseconds.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Tenant of its jobs.
    #[arg(long)]
    tenant: Option<String>,
    /// After downtime: skip, once (default) or all.
    #[arg(long, default_value = "once")]
    misfire: String,
    /// Most missed ticks fired with --misfire all.
    #[arg(long, default_value_t = 24, allow_negative_numbers = true)]
    misfire_cap: i64,
    /// Add it paused.
    #[arg(long)]
    paused: bool,
    /// Redefine the schedule of this name if there is one (its history stays).
    #[arg(long)]
    replace: bool,
    /// Add it even when no worker could run its jobs now: a queue or kind
    /// that neither this configuration nor a live worker on the file serves.
    #[arg(long)]
    unchecked: bool,
}

pub fn schedule(db: &Path, data_dir: &Path, config: &Config, cmd: ScheduleCommand) -> CliResult {
    match cmd {
        ScheduleCommand::Add(args) => add(db, data_dir, config, *args),
        ScheduleCommand::List { json } => list(db, json),
        ScheduleCommand::Show { name, json } => show(db, &name, json),
        ScheduleCommand::Remove { name } => {
            open(db)?.remove_schedule(&name)?;
            println!("schedule {name}: removed");
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCommand::Pause { name } => {
            open(db)?.pause_schedule(&name)?;
            println!("schedule {name}: paused");
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCommand::Resume { name } => {
            let store = open(db)?;
            store.resume_schedule(&name)?;
            let s = store.schedule(&name)?;
            println!("schedule {name}: resumed, next {}", next(&s));
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCommand::RunNow { name } => {
            let id = open(db)?.run_schedule_now(&name)?;
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn add(db: &Path, data_dir: &Path, config: &Config, a: AddArgs) -> CliResult {
    let when = match (a.cron, a.every) {
        (Some(expr), _) => When::Cron(expr),
        (None, Some(every)) => When::Every(
            humantime::parse_duration(&every)
                .map_err(|e| format!("invalid --every {every:?}: {e} (try 30m, 1h, 90s)"))?,
        ),
        (None, None) => return Err("give --cron or --every".into()),
    };
    // Refuse a bad expression or zone before creating a queue file for it.
    Timetable::new(&when, &a.tz)?;
    let mut job = NewJob::new(a.queue, a.kind)
        .payload_json(a.payload)
        .priority(a.priority)
        .max_attempts(a.max_attempts);
    if let Some(ms) = a.timeout_ms {
        job = job.timeout(Duration::from_millis(ms));
    }
    if let Some(t) = a.tenant {
        job = job.tenant(t);
    }
    let schedule = NewSchedule::new(a.name, when, job)
        .timezone(a.tz)
        .misfire(Misfire::parse(&a.misfire)?)
        .misfire_cap(a.misfire_cap)
        .enabled(!a.paused);
    let store = open(db)?;
    if !a.unchecked {
        super::serve::catalog(&store, data_dir, config)?
            .checker(&store)
            .check_schedule(&schedule)
            .map_err(super::serve::unchecked_hint)?;
    }
    let s = if a.replace {
        store.replace_schedule(&schedule)?
    } else {
        store.add_schedule(&schedule)?
    };
    println!("schedule {}: {}", s.name, describe(&s));
    for t in upcoming(&s, 3) {
        println!("  next: {}", iso(t));
    }
    Ok(ExitCode::SUCCESS)
}

fn list(db: &Path, json: bool) -> CliResult {
    let schedules = open(db)?.schedules()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&schedules)?);
        return Ok(ExitCode::SUCCESS);
    }
    if schedules.is_empty() {
        println!("no schedules (jobd init installs the defaults; jobd schedule add adds one)");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<22} {:<16} {:<32} {:<8} {:<24} {:<24}",
        "name", "when", "timezone", "queue/kind", "state", "last fire", "next fire"
    );
    for s in &schedules {
        println!(
            "{:<20} {:<22} {:<16} {:<32} {:<8} {:<24} {:<24}",
            s.name,
            when(&s.when),
            s.timezone,
            format!("{}/{}", s.queue, s.kind),
            if s.enabled { "enabled" } else { "paused" },
            s.last_fire_at.map(iso).unwrap_or_else(|| "-".into()),
            next(s),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn show(db: &Path, name: &str, json: bool) -> CliResult {
    let store = open(db)?;
    let s = store.schedule(name)?;
    if json {
        let value = serde_json::json!({
            "schedule": s,
            "upcoming": upcoming(&s, 5),
            "recent_fires": store.schedule_fires(name, 10)?,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("schedule {}: {}", s.name, describe(&s));
    println!("  payload:  {}", s.payload);
    println!(
        "  job:      priority {}, {} attempts{}{}",
        s.priority,
        s.max_attempts,
        s.timeout_ms
            .map(|ms| format!(", timeout {ms} ms"))
            .unwrap_or_default(),
        s.tenant
            .as_deref()
            .map(|t| format!(", tenant {t}"))
            .unwrap_or_default()
    );
    println!("  misfire:  {} (cap {})", s.misfire.as_str(), s.misfire_cap);
    println!(
        "  state:    {}",
        if s.enabled { "enabled" } else { "paused" }
    );
    if let Some(e) = &s.last_error {
        println!("  error:    {e}");
    }
    for t in upcoming(&s, 5) {
        println!("  next:     {}", iso(t));
    }
    println!("  fired:    {} ticks", s.fires);
    for f in store.schedule_fires(name, 10)? {
        println!(
            "    {} -> job {}",
            iso(f.fire_at),
            f.job_id
                .map(|id| id.to_string())
                .unwrap_or_else(|| "(purged)".into())
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn when(w: &When) -> String {
    match w {
        When::Cron(expr) => expr.clone(),
        When::Every(d) => format!("every {}", humantime::format_duration(*d)),
    }
}

fn describe(s: &ScheduleInfo) -> String {
    format!(
        "{} ({}) -> {}/{}, next {}",
        when(&s.when),
        s.timezone,
        s.queue,
        s.kind,
        next(s)
    )
}

fn next(s: &ScheduleInfo) -> String {
    match (s.enabled, s.next_fire_at) {
        (false, _) => "- (paused)".into(),
        (true, Some(t)) => iso(t),
        (true, None) => "- (no future tick)".into(),
    }
}

/// The next `n` ticks from the stored next one.
fn upcoming(s: &ScheduleInfo, n: usize) -> Vec<i64> {
    let (Some(first), true) = (s.next_fire_at, s.enabled) else {
        return Vec::new();
    };
    let mut ticks = vec![first];
    if let Ok(t) = Timetable::new(&s.when, &s.timezone) {
        ticks.extend(t.upcoming(first, n.saturating_sub(1)));
    }
    ticks
}

#[derive(Args, Debug)]
pub struct SchedulerArgs {
    /// How late a tick may fire and still be on time, e.g. 60s.
    #[arg(long, default_value = "60s")]
    grace: String,
    /// Longest sleep between looks at the schedules, e.g. 1s.
    #[arg(long, default_value = "1s")]
    poll: String,
}

/// Run the scheduler in the foreground until SIGINT/SIGTERM.
pub fn run_scheduler(db: &Path, args: SchedulerArgs) -> CliResult {
    let parse = |flag: &str, v: &str| {
        humantime::parse_duration(v).map_err(|e| format!("invalid --{flag} {v:?}: {e}"))
    };
    let grace = parse("grace", &args.grace)?;
    let poll = parse("poll", &args.poll)?;
    let store = open_or_create(db)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = jobd::worker::shutdown_signal();
        Scheduler::new(store)
            .misfire_grace(grace)
            .poll_interval(poll)
            .run(shutdown)
            .await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Create `path` with `text`, readable and writable by the owner only.
fn write_private(path: &Path, text: &str) -> CliResult<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(())
}
