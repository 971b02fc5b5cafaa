//! What the handlers' tests share: a worker run until the jobs are done.

use std::time::{Duration, Instant};

use jobd::store::JobId;
use jobd::worker::WorkerBuilder;
use jobd::Store;
use tokio_util::sync::CancellationToken;

/// Run `builder` until `done` says so (looked at every 20 ms; a test that
/// waits 30 s fails, saying `what`), then stop it and wait for it.
pub async fn run_until(builder: WorkerBuilder, what: &str, mut done: impl FnMut() -> bool) {
    let stop = CancellationToken::new();
    let worker = tokio::spawn({
        let stop = stop.clone();
        builder.run(async move { stop.cancelled().await })
    });
    let t0 = Instant::now();
    while !done() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{what} did not happen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    worker.await.unwrap().unwrap();
}

/// Run `builder` until every job of `ids` has finished.
#[allow(dead_code)]
pub async fn run_until_finished(builder: WorkerBuilder, store: &Store, ids: &[JobId]) {
    run_until(builder, "the jobs' ends", || {
        ids.iter()
            .all(|id| store.get(*id).unwrap().state.is_finished())
    })
    .await
}
