//! The reaper: expired leases of stopped workers taken back now and then.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::worker::runtime::{blocking, Shared};

/// Reap expired leases now and then (with jitter, so processes spread out).
pub(super) async fn reap_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let every = shared.opts.reap_interval;
    let mut n = 0u64;
    loop {
        n += 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jitter = f64::from((nanos ^ n as u32) % 1000) / 1000.0;
        let pause = every.mul_f64(0.75 + 0.5 * jitter);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let store = shared.store.clone();
        if let Err(e) = blocking(move || store.reap()).await {
            tracing::error!(error = %e, "reap failed");
        }
    }
}
