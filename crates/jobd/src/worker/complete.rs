//! Group commit of completions: whatever has queued up while the previous
//! batch committed goes in the next one (one transaction for many jobs).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::store::JobId;
use crate::worker::runtime::{blocking, Shared};

/// A succeeded run, waiting for its batch.
pub(super) struct Completion {
    pub(super) id: JobId,
    pub(super) token: i64,
    pub(super) result: serde_json::Value,
    /// The run's span, for what is logged about this completion.
    pub(super) span: tracing::Span,
}

/// Commit completions in batches: whatever has queued up while the previous
/// batch committed goes in the next one.
///
/// A batch whose commit fails (an I/O error, the lock held past the busy
/// timeout, a full disk) is tried again with backoff for as long as its
/// leases surely hold — half of what remains of a lease after its last
/// heartbeat — and only then left to expire, so one failed write does not
/// run every job of the batch a second time.
pub(super) async fn complete_loop(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Completion>,
) {
    let max = shared.opts.complete_batch;
    let store = shared.store.clone();
    let budget = shared
        .opts
        .lease
        .saturating_sub(shared.opts.heartbeat_interval)
        / 2;
    drop(shared); // do not keep the channel's sender alive
    let mut batch: Vec<Completion> = Vec::with_capacity(max);
    while rx.recv_many(&mut batch, max).await > 0 {
        let spans: Vec<(JobId, tracing::Span)> =
            batch.iter().map(|c| (c.id, c.span.clone())).collect();
        let done: Arc<Vec<_>> = Arc::new(
            batch
                .drain(..)
                .map(|c| (c.id, c.token, Some(c.result)))
                .collect(),
        );
        tracing::debug!(count = done.len(), "committing completions");
        let started = tokio::time::Instant::now();
        let mut pause = COMPLETE_RETRY_FIRST;
        let mut tries = 0u32;
        loop {
            let (s, d) = (store.clone(), done.clone());
            tries += 1;
            match blocking(move || s.complete_many(&d)).await {
                Ok(b) => {
                    for (_, span) in spans.iter().filter(|(id, _)| b.lost.contains(id)) {
                        span.in_scope(|| {
                            tracing::warn!("completion discarded: the lease was lost")
                        });
                    }
                    if tries > 1 {
                        tracing::info!(
                            count = done.len(),
                            tries,
                            "completions stored after a retry"
                        );
                    }
                    break;
                }
                Err(e) if started.elapsed() + pause < budget => {
                    let ids: Vec<JobId> = spans.iter().map(|(id, _)| *id).collect();
                    tracing::warn!(error = %e, job_ids = ?ids, tries, "could not store completions; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(COMPLETE_RETRY_MAX);
                }
                Err(e) => {
                    for (_, span) in &spans {
                        span.in_scope(|| {
                            tracing::error!(error = %e, tries, "could not store the completion; the lease will expire and the job be retried")
                        });
                    }
                    break;
                }
            }
        }
    }
}

/// The first pause before a failed batch of completions is tried again; it
/// doubles up to [`COMPLETE_RETRY_MAX`].
const COMPLETE_RETRY_FIRST: Duration = Duration::from_millis(10);
const COMPLETE_RETRY_MAX: Duration = Duration::from_secs(1);
