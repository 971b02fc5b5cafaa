//! A worker written directly against the store API: claim a batch, do the
//! work, complete it — for apps that want full control over their loop.
//!
//! ```text
//! cargo run --example manual_worker -- QUEUE_DB QUEUE WORKER_NAME [STOP_AFTER_TOTAL]
//! ```
//!
//! It works until the queue holds `STOP_AFTER_TOTAL` succeeded jobs (or,
//! without it, until the queue is empty), then prints how many jobs it ran.

use std::time::Duration;

use jobd::Store;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, queue, name, rest @ ..] = args.as_slice() else {
        return Err("usage: manual_worker QUEUE_DB QUEUE WORKER_NAME [STOP_AFTER_TOTAL]".into());
    };
    let stop_after: Option<i64> = rest.first().map(|s| s.parse()).transpose()?;
    let store = Store::open(db)?;
    store.register_worker(name, "localhost", std::process::id(), &[queue], &["echo"])?;
    let mut ran = 0u64;
    loop {
        let jobs = store.claim(name, &[queue], 16, Duration::from_secs(30))?;
        if jobs.is_empty() {
            let stats = store.stats()?;
            let q = stats.queue(queue).cloned().unwrap_or_default();
            let finished = match stop_after {
                Some(total) => q.succeeded >= total,
                None => q.ready + q.scheduled + q.running == 0,
            };
            if finished {
                break;
            }
            store.worker_heartbeat(name)?;
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        // "Work": echo the payload back as the result.
        let done: Vec<_> = jobs
            .iter()
            .map(|j| {
                (
                    j.id,
                    j.lease_token,
                    Some(serde_json::json!({"echo": j.payload, "by": name})),
                )
            })
            .collect();
        let batch = store.complete_many(&done)?;
        assert!(batch.lost.is_empty(), "leases lost: {:?}", batch.lost);
        ran += batch.completed as u64;
    }
    store.deregister_worker(name)?;
    println!("{ran}");
    Ok(())
}
