//! `jobd stats` and `jobd queue pause | resume | limit | purge`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use jobd::store::parse_concurrency_limit;

use super::config::Config;
use super::{open, CliResult};

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn stats(db: &Path, args: StatsArgs) -> CliResult {
    let stats = open(db)?.stats()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "queue", "scheduled", "ready", "running", "succeeded", "dead", "cancelled", "oldest ready"
    );
    for q in &stats.queues {
        let mut notes = Vec::new();
        if q.paused {
            notes.push("paused".to_string());
        }
        if let Some(n) = q.concurrency {
            notes.push(format!("at most {n}"));
        }
        let name = if notes.is_empty() {
            q.queue.clone()
        } else {
            format!("{} ({})", q.queue, notes.join(", "))
        };
        let age = q
            .oldest_ready_age_ms
            .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
            .unwrap_or_default();
        println!(
            "{:<16} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12}",
            name, q.scheduled, q.ready, q.running, q.succeeded, q.dead, q.cancelled, age
        );
    }
    println!("live workers: {}", stats.live_workers);
    Ok(ExitCode::SUCCESS)
}

/// A queue named on the command line, and whether it may be new.
#[derive(Args, Debug)]
pub struct QueueName {
    queue: String,
    /// Act on a queue nothing knows yet (no job, no configuration, no
    /// worker): without it such a name is refused as a likely typo.
    #[arg(long)]
    create: bool,
}

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// Stop handing out the queue's jobs (running ones finish).
    Pause(QueueName),
    /// Hand out the queue's jobs again.
    Resume(QueueName),
    /// Run at most LIMIT of the queue's jobs at once, counted across every
    /// worker process on this file; `none` lifts the limit.
    Limit {
        #[command(flatten)]
        name: QueueName,
        limit: String,
    },
    /// Delete the queue's finished jobs (succeeded, dead, cancelled).
    Purge {
        queue: String,
        /// Only jobs finished at least this many seconds ago.
        #[arg(long, default_value_t = 0)]
        older_than_secs: u64,
    },
}

/// Refuse a queue that no job, configuration or worker knows, unless
/// `create` says it is meant.
fn known(
    store: &jobd::Store,
    data_dir: &Path,
    config: &Config,
    queue: &str,
    create: bool,
) -> CliResult<()> {
    if create || store.knows_queue(queue)? {
        return Ok(());
    }
    let catalog = super::serve::catalog(store, data_dir, config)?;
    if catalog.queues().any(|q| q == queue) {
        return Ok(());
    }
    let configured: Vec<&str> = catalog.queues().collect();
    Err(format!(
        "unknown queue {queue:?}: no job, configuration or worker knows it (configured: {}); \
         pass --create if you mean a new queue",
        configured.join(", ")
    )
    .into())
}

pub fn queue(db: &Path, data_dir: &Path, config: &Config, cmd: QueueCommand) -> CliResult {
    let store = open(db)?;
    match cmd {
        QueueCommand::Pause(QueueName { queue, create }) => {
            known(&store, data_dir, config, &queue, create)?;
            store.pause(&queue)?;
            println!("queue {queue}: paused");
        }
        QueueCommand::Resume(QueueName { queue, create }) => {
            known(&store, data_dir, config, &queue, create)?;
            store.resume(&queue)?;
            println!("queue {queue}: resumed");
        }
        QueueCommand::Limit {
            name: QueueName { queue, create },
            limit,
        } => {
            known(&store, data_dir, config, &queue, create)?;
            let limit = parse_concurrency_limit(&limit)?;
            store.set_concurrency(&queue, limit)?;
            match limit {
                Some(n) => println!("queue {queue}: at most {n} jobs at once"),
                None => println!("queue {queue}: no concurrency limit"),
            }
        }
        QueueCommand::Purge {
            queue,
            older_than_secs,
        } => {
            known(&store, data_dir, config, &queue, false)?;
            let n = store.purge(Duration::from_secs(older_than_secs), Some(&queue))?;
            println!("queue {queue}: purged {n} finished jobs");
        }
    }
    Ok(ExitCode::SUCCESS)
}
