//! A worker process built on the runtime, with two test handlers — the
//! process the crash, shutdown and throughput tests spawn (and kill).
//!
//! ```text
//! cargo run --example worker_process -- QUEUE_DB QUEUE=CONCURRENCY[,QUEUE=CONCURRENCY…]
//! ```
//!
//! Handlers: `noop` (returns at once) and `sleep` (payload `{"ms": N}`;
//! sleeps, reporting progress half way).  Timings come from the environment
//! (milliseconds): `JOBD_LEASE_MS`, `JOBD_HEARTBEAT_MS`, `JOBD_REAP_MS`,
//! `JOBD_GRACE_MS`, `JOBD_POLL_MS`.  It runs until SIGINT or SIGTERM, then
//! prints its report.

use std::time::Duration;

use jobd::worker::{Handler, JobContext, JobError, Worker};
use jobd::Store;

#[derive(Default)]
struct Noop;

impl Handler for Noop {
    const KIND: &'static str = "noop";
    type Payload = serde_json::Value;
    type Output = ();
    async fn run(&self, _ctx: JobContext, _p: serde_json::Value) -> Result<(), JobError> {
        Ok(())
    }
}

#[derive(serde::Deserialize)]
struct Nap {
    ms: u64,
}

#[derive(Default)]
struct Sleep;

impl Handler for Sleep {
    const KIND: &'static str = "sleep";
    type Payload = Nap;
    type Output = serde_json::Value;
    async fn run(&self, ctx: JobContext, nap: Nap) -> Result<serde_json::Value, JobError> {
        let half = Duration::from_millis(nap.ms / 2);
        tokio::time::sleep(half).await;
        ctx.progress(50.0, "sleeping", None).await?;
        tokio::time::sleep(Duration::from_millis(nap.ms) - half).await;
        Ok(serde_json::json!({ "slept_ms": nap.ms, "pid": std::process::id() }))
    }
}

fn env_ms(name: &str) -> Option<Duration> {
    std::env::var(name)
        .ok()
        .map(|v| Duration::from_millis(v.parse().expect("milliseconds")))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("JOBD_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, queues] = args.as_slice() else {
        return Err("usage: worker_process QUEUE_DB QUEUE=CONCURRENCY[,QUEUE=CONCURRENCY…]".into());
    };
    let store = Store::open(db)?;
    let mut builder = Worker::builder(store).handler::<Noop>().handler::<Sleep>();
    for spec in queues.split(',') {
        let (queue, n) = spec
            .split_once('=')
            .ok_or_else(|| format!("'{spec}' is not QUEUE=CONCURRENCY"))?;
        builder = builder.queue(queue, n.parse()?);
    }
    if let Some(d) = env_ms("JOBD_LEASE_MS") {
        builder = builder.lease(d);
    }
    if let Some(d) = env_ms("JOBD_HEARTBEAT_MS") {
        builder = builder.heartbeat_interval(d);
    }
    if let Some(d) = env_ms("JOBD_REAP_MS") {
        builder = builder.reap_interval(d);
    }
    if let Some(d) = env_ms("JOBD_GRACE_MS") {
        builder = builder.shutdown_grace(d);
    }
    if let Some(d) = env_ms("JOBD_POLL_MS") {
        builder = builder.poll_interval(d);
    }
    let report = builder.run(jobd::worker::shutdown_signal()).await?;
    println!(
        "{}",
        serde_json::json!({
            "worker": report.worker, "succeeded": report.succeeded, "failed": report.failed,
            "released": report.released, "lost": report.lost, "cancelled": report.cancelled,
        })
    );
    Ok(())
}
