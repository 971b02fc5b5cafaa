//! Blocking work inside a job: a plain function run on the blocking pool,
//! reporting progress through a [`Reporter`] and stopping when the job is
//! cancelled, times out, loses its lease or its worker shuts down.
//!
//! ```no_run
//! use jobd::worker::{run_blocking, JobContext, JobError};
//!
//! async fn render(ctx: JobContext, pages: u32) -> Result<u32, JobError> {
//!     run_blocking(&ctx, move |reporter| {
//!         for page in 1..=pages {
//!             reporter.check_cancelled()?;
//!             // ... CPU-bound or blocking work ...
//!             reporter.report(100.0 * page as f64 / pages as f64, "rendering", None);
//!         }
//!         Ok(pages)
//!     })
//!     .await
//! }
//! ```

use tokio_util::sync::CancellationToken;

use crate::worker::{JobContext, JobError};

/// Progress and cancellation for a handler's blocking work.
#[derive(Debug, Clone)]
pub struct Reporter {
    tx: Option<tokio::sync::watch::Sender<Option<Report>>>,
    cancel: CancellationToken,
}

/// One progress report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub percent: f64,
    pub stage: String,
    pub detail: Option<String>,
}

impl Reporter {
    /// A reporter that reports nowhere and is never cancelled (for calling
    /// the handlers' functions directly).
    pub fn silent() -> Reporter {
        Reporter {
            tx: None,
            cancel: CancellationToken::new(),
        }
    }

    /// A reporter that reports nowhere and stops when `cancel` is cancelled
    /// (for calling the handlers' functions directly with a way to stop them).
    pub fn cancellable(cancel: CancellationToken) -> Reporter {
        Reporter { tx: None, cancel }
    }

    pub fn report(&self, percent: f64, stage: &str, detail: Option<String>) {
        if let Some(tx) = &self.tx {
            tx.send_replace(Some(Report {
                percent: percent.clamp(0.0, 100.0),
                stage: stage.to_string(),
                detail,
            }));
        }
    }

    /// True once the job should stop (cancelled, lease lost, shutdown).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// An error to return when [`Reporter::is_cancelled`].
    pub fn check_cancelled(&self) -> Result<(), JobError> {
        if self.is_cancelled() {
            Err(JobError::retryable(
                "stopped: the job was cancelled or timed out, or its worker is stopping",
            ))
        } else {
            Ok(())
        }
    }
}

/// Run `f` on the blocking pool, storing its progress reports on the job as
/// they come (the latest one wins when they come faster than they are stored).
pub async fn run_blocking<T, F>(ctx: &JobContext, f: F) -> Result<T, JobError>
where
    F: FnOnce(&Reporter) -> Result<T, JobError> + Send + 'static,
    T: Send + 'static,
{
    let (tx, mut rx) = tokio::sync::watch::channel(None::<Report>);
    let reporter = Reporter {
        tx: Some(tx),
        cancel: ctx.cancellation(),
    };
    let work = ctx.blocking(move || f(&reporter));
    tokio::pin!(work);
    let mut stored: Option<Report> = None;
    let result = loop {
        tokio::select! {
            biased;
            result = &mut work => break result,
            changed = rx.changed() => {
                if changed.is_err() {
                    break (&mut work).await; // the reporter is gone: the work is ending
                }
                let report = rx.borrow_and_update().clone();
                if let Some(r) = report.as_ref().filter(|r| Some(*r) != stored.as_ref()) {
                    ctx.progress(r.percent, &r.stage, r.detail.as_deref()).await?;
                    stored = report;
                }
            }
        }
    };
    // The last report, if it was not stored yet.
    let last = rx.borrow().clone();
    if let Some(r) = last.as_ref().filter(|r| Some(*r) != stored.as_ref()) {
        ctx.progress(r.percent, &r.stage, r.detail.as_deref())
            .await?;
    }
    result
}
