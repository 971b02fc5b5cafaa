//! Heartbeats: every lease of a worker extended in one statement, lost
//! leases and cancel requests noticed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::JobId;
use crate::worker::context::StopReason;
use crate::worker::runtime::{blocking, Shared};

/// How often, at most, a worker reads the cancel flags of its running jobs
/// when the file changes (see [`heartbeat_loop`]).
const CANCEL_LOOK_EVERY: Duration = Duration::from_millis(100);

/// Extend every lease of this worker in one statement; notice lost leases and
/// cancel requests.  Also refreshes the worker's own row.  Runs every
/// heartbeat interval, and at once when this process asks a running job to
/// stop (so a cancel from the daemon's API or dashboard is not kept waiting).
///
/// A cancel asked by another process (`jobd cancel` beside a daemon) is a
/// commit to the file, which the [`Watcher`] notices: then, while jobs run,
/// their cancel flags are read (a read, no lease extended) — at most every
/// [`CANCEL_LOOK_EVERY`], however busy the file — so such a cancel stops its
/// run within a fraction of a second instead of at the next heartbeat.
pub(super) async fn heartbeat_loop(
    shared: Arc<Shared>,
    stop: CancellationToken,
    mut cancels: tokio::sync::watch::Receiver<u64>,
) {
    let mut tick = tokio::time::interval(shared.opts.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut changes = shared.store.watch_work();
    let mut last_look = tokio::time::Instant::now();
    let mut next_look: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            // The store (and so the senders) outlives this loop: `changed`
            // cannot fail here.
            Ok(()) = cancels.changed() => {}
            Ok(()) = changes.changed() => {
                if next_look.is_none() && !shared.in_flight.lock().unwrap().is_empty() {
                    next_look = Some((last_look + CANCEL_LOOK_EVERY).max(tokio::time::Instant::now()));
                }
                continue;
            }
            _ = tokio::time::sleep_until(next_look.unwrap_or_else(tokio::time::Instant::now)), if next_look.is_some() => {
                next_look = None;
                last_look = tokio::time::Instant::now();
                stop_cancelled_runs(&shared).await;
                continue;
            }
        }
        let held = held_tries(&shared);
        let (store, name, lease) = (shared.store.clone(), shared.name.clone(), shared.opts.lease);
        let beat = blocking(move || {
            store.worker_heartbeat(&name)?;
            store
                .heartbeat_many(&held, lease)
                .map(|alive| (held, alive))
        })
        .await;
        let (held, alive) = match beat {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "heartbeat failed");
                continue;
            }
        };
        let alive: HashMap<JobId, bool> = alive.into_iter().collect();
        let in_flight = shared.in_flight.lock().unwrap();
        for (id, token) in held {
            let Some(r) = in_flight.get(&id).filter(|r| r.token == token) else {
                continue; // finished meanwhile
            };
            match alive.get(&id) {
                None => {
                    r.span
                        .in_scope(|| tracing::warn!("lease lost; stopping the run"));
                    r.stop(StopReason::LeaseLost);
                }
                Some(true) => {
                    r.span
                        .in_scope(|| tracing::info!("cancel requested; stopping the run"));
                    r.stop(StopReason::CancelRequested);
                }
                Some(false) => {}
            }
        }
    }
}

/// The tries in flight, as `(id, lease token)`.
fn held_tries(shared: &Shared) -> Vec<(JobId, i64)> {
    shared
        .in_flight
        .lock()
        .unwrap()
        .iter()
        .map(|(id, r)| (*id, r.token))
        .collect()
}

/// Read the cancel flags of the runs in flight and stop those asked to.
async fn stop_cancelled_runs(shared: &Shared) {
    let held = held_tries(shared);
    let (store, asked) = (shared.store.clone(), held.clone());
    let flagged = match blocking(move || store.cancel_requested(&asked)).await {
        Ok(flagged) => flagged,
        Err(e) => {
            tracing::warn!(error = %e, "could not read cancel requests; the heartbeat will");
            return;
        }
    };
    let in_flight = shared.in_flight.lock().unwrap();
    for id in flagged {
        // The try that was asked about, not one of the same job begun since.
        if let Some(r) = in_flight.get(&id).filter(|r| held.contains(&(id, r.token))) {
            r.span
                .in_scope(|| tracing::info!("cancel requested; stopping the run"));
            r.stop(StopReason::CancelRequested);
        }
    }
}
