//! jobd embedded in an application: define a handler, enqueue a job, run the
//! worker and the scheduler in the same process, print the results.
//!
//! ```text
//! cargo run --example embedded
//! ```

use std::time::Duration;

use jobd::scheduler::{NewSchedule, Scheduler};
use jobd::worker::{Handler, JobContext, JobError, Worker};
use jobd::{JobState, NewJob, Store};
use serde::{Deserialize, Serialize};

/// The payload of a `make_invoice` job.
#[derive(Serialize, Deserialize)]
struct Invoice {
    customer: String,
    lines: Vec<(String, u32, f64)>,
}

#[derive(Serialize)]
struct Total {
    customer: String,
    total: f64,
}

#[derive(Default)]
struct MakeInvoice;

impl Handler for MakeInvoice {
    const KIND: &'static str = "make_invoice";
    type Payload = Invoice;
    type Output = Total;

    async fn run(&self, ctx: JobContext, invoice: Invoice) -> Result<Total, JobError> {
        if invoice.lines.is_empty() {
            return Err(JobError::permanent("an invoice needs at least one line"));
        }
        ctx.progress(10.0, "pricing", None).await?;
        // CPU work goes to the blocking pool, not the async runtime.
        let total = ctx
            .blocking(move || {
                invoice
                    .lines
                    .iter()
                    .map(|(_, qty, price)| f64::from(*qty) * price)
                    .sum::<f64>()
            })
            .await;
        ctx.progress(100.0, "done", None).await?;
        Ok(Total {
            customer: invoice.customer,
            total,
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("app-queue.db"))?;

    // The worker runs in this process until we tell it to stop.
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn({
        let stop = stop.clone();
        Worker::builder(store.clone())
            .handler::<MakeInvoice>()
            .queue("billing", 2)
            .run(async move { stop.cancelled().await })
    });

    // A recurring job: in an app this would be "0 2 * * *"; here a short
    // interval so the example sees it fire.
    let scheduler = tokio::spawn({
        let stop = stop.clone();
        Scheduler::new(store.clone())
            .poll_interval(Duration::from_millis(50))
            .run(async move { stop.cancelled().await })
    });
    let monthly = Invoice {
        customer: "subscription".into(),
        lines: vec![("hosting".into(), 1, 20.0)],
    };
    store.add_schedule(
        &NewSchedule::every(
            "subscription-invoice",
            Duration::from_millis(250),
            "billing",
            "make_invoice",
        )
        .payload(&monthly),
    )?;

    let invoice = Invoice {
        customer: "ACME".into(),
        lines: vec![
            ("QR stickers".into(), 500, 0.12),
            ("PDF menu".into(), 3, 9.5),
        ],
    };
    let id = store.enqueue(&NewJob::new("billing", "make_invoice").payload(&invoice))?;

    // A web handler would return `id` and let the client poll; here we wait.
    let job = loop {
        let job = store.get(id)?;
        if job.state.is_finished() {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Wait for two ticks of the schedule to have run.
    let fired = loop {
        let fires = store.schedule_fires("subscription-invoice", 10)?;
        let done = fires
            .iter()
            .filter_map(|f| f.job_id)
            .filter(|id| matches!(store.get(*id).map(|j| j.state), Ok(JobState::Succeeded)))
            .count();
        if done >= 2 {
            break fires.len();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop.cancel();
    let report = worker.await??;
    scheduler.await??;

    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.last_error);
    println!(
        "job {id} {:?}: {}",
        job.state,
        job.result.unwrap_or_default()
    );
    println!("schedule subscription-invoice fired {fired} time(s)");
    println!("worker ran {} job(s)", report.succeeded);
    Ok(())
}
