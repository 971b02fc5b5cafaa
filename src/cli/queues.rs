//! `jobd stats` and `jobd queue pause | resume | limit | purge`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use jobd::store::parse_concurrency_limit;

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

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// Stop handing out the queue's jobs (running ones finish).
    Pause { queue: String },
    /// Hand out the queue's jobs again.
    Resume { queue: String },
    /// Run at most LIMIT of the queue's jobs at once, counted across every
    /// worker process on this file; `none` lifts the limit.
    Limit { queue: String, limit: String },
    /// Delete the queue's finished jobs (succeeded, dead, cancelled).
    Purge {
        queue: String,
        /// Only jobs finished at least this many seconds ago.
        #[arg(long, default_value_t = 0)]
        older_than_secs: u64,
    },
}

pub fn queue(db: &Path, cmd: QueueCommand) -> CliResult {
    let store = open(db)?;
    match cmd {
        QueueCommand::Pause { queue } => {
            store.pause(&queue)?;
            println!("queue {queue}: paused");
        }
        QueueCommand::Resume { queue } => {
            store.resume(&queue)?;
            println!("queue {queue}: resumed");
        }
        QueueCommand::Limit { queue, limit } => {
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
            let n = store.purge(Duration::from_secs(older_than_secs), Some(&queue))?;
            println!("queue {queue}: purged {n} finished jobs");
        }
    }
    Ok(ExitCode::SUCCESS)
}
