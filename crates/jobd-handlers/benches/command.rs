//! Command handlers: short-lived processes through a worker, beside a bare
//! `fork+exec` of the same program in the same run.
//!
//! ```text
//! cargo bench -p jobd-handlers --bench command     # JOBD_BENCH_JOBS (2000), JOBD_BENCH_ROUNDS (3)
//! ```
//!
//! Each job runs `sh -c 'cat >/dev/null; echo {"result":1}'` — it reads its
//! payload and prints a result, the least a command handler does; the bare
//! side spawns the same program with the same pipes, writes the same
//! payload and reads its output, on as many threads as the worker's
//! concurrency.  Prints processes per second for both and the overhead per
//! job the worker adds.

use jobd_testkit::env_usize as env;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jobd::store::NewJob;
use jobd::worker::Worker;
use jobd::Store;
use jobd_handlers::command::{register, CommandKind};

const SCRIPT: &str = r#"cat >/dev/null; echo '{"result": 1}'"#;
const CONCURRENCY: usize = 4;

/// Jobs per second through a worker running the command kind.
fn through_jobd(jobs: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let batch: Vec<NewJob> = (0..jobs)
        .map(|i| NewJob::new("cmd", "short").payload(&serde_json::json!({"n": i})))
        .collect();
    store.enqueue_many(&batch).unwrap();
    let spec = CommandKind::new(
        "short",
        vec!["sh".into(), "-c".into(), SCRIPT.into()],
        dir.path().to_path_buf(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    rt.block_on(async {
        let stop = tokio_util::sync::CancellationToken::new();
        let run = tokio::spawn({
            let stop = stop.clone();
            register(Worker::builder(store.clone()), spec)
                .queue("cmd", CONCURRENCY)
                .run(async move { stop.cancelled().await })
        });
        loop {
            let stats = store.stats().unwrap();
            let done = stats.queue("cmd").map_or(0, |q| q.succeeded + q.dead);
            if done as usize >= jobs {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        run.await.unwrap().unwrap();
    });
    let secs = started.elapsed().as_secs_f64();
    let stats = store.stats().unwrap();
    assert_eq!(
        stats.queue("cmd").unwrap().succeeded as usize,
        jobs,
        "every job succeeded"
    );
    jobs as f64 / secs
}

/// The same program spawned bare, with the same pipes and input.
fn bare(jobs: usize) -> f64 {
    let started = Instant::now();
    let per = jobs / CONCURRENCY;
    let threads: Vec<_> = (0..CONCURRENCY)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..per {
                    let mut child = Command::new("sh")
                        .args(["-c", SCRIPT])
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()
                        .unwrap();
                    let mut stdin = child.stdin.take().unwrap();
                    stdin
                        .write_all(format!("{{\"n\": {}}}", t * per + i).as_bytes())
                        .unwrap();
                    drop(stdin);
                    let mut out = String::new();
                    child
                        .stdout
                        .take()
                        .unwrap()
                        .read_to_string(&mut out)
                        .unwrap();
                    assert!(child.wait().unwrap().success());
                    assert!(out.contains("result"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    (per * CONCURRENCY) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let jobs = env("JOBD_BENCH_JOBS", 2000);
    let rounds = env("JOBD_BENCH_ROUNDS", 3);
    println!(
        "command handlers: {jobs} jobs of `sh -c '{SCRIPT}'`, concurrency {CONCURRENCY}, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Alternately, so the host's drift moves both.
        let b = bare(jobs);
        let j = through_jobd(jobs);
        println!(
            "round {round}: jobd {j:>7.0} processes/s   bare fork+exec {b:>7.0}/s   jobd/bare {:>4.0}%   overhead {:>5.0} µs/job (per slot)",
            100.0 * j / b,
            (1.0 / j - 1.0 / b) * 1e6 * CONCURRENCY as f64
        );
        ours.push(j);
        theirs.push(b);
    }
    ours.sort_by(f64::total_cmp);
    theirs.sort_by(f64::total_cmp);
    let (j, b) = (ours[ours.len() / 2], theirs[theirs.len() / 2]);
    println!(
        "median: jobd {j:.0} processes/s, bare {b:.0}/s ({:.0}%), overhead {:.0} µs per job per slot",
        100.0 * j / b,
        (1.0 / j - 1.0 / b) * 1e6 * CONCURRENCY as f64
    );
}
