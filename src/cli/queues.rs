//! `jobd stats` and `jobd queue pause | resume | purge`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

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
        let name = if q.paused {
            format!("{} (paused)", q.queue)
        } else {
            q.queue.clone()
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
