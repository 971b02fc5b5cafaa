//! Command handlers: a job kind run by a program — the payload on stdin,
//! progress and the result from JSON lines on stdout, the exit status
//! deciding retryable or permanent failure, timeout and cancel ending the
//! whole process tree (a child that ignores TERM too), garbage output.

use std::path::Path;
use std::time::{Duration, Instant};

use jobd::store::{JobState, NewJob};
use jobd::worker::Worker;
use jobd::Store;
use jobd_handlers::command::{register, CommandKind};
use serde_json::json;
use tokio_util::sync::CancellationToken;

struct Rig {
    dir: tempfile::TempDir,
    store: Store,
    stop: CancellationToken,
    worker: tokio::task::JoinHandle<jobd::Result<jobd::worker::WorkerReport>>,
}

/// A worker running `kinds` (each a shell script, written to the temp dir)
/// on queue `cmd`.
fn rig(kinds: &[(&str, &str, Option<Duration>)]) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let mut builder = Worker::builder(store.clone()).queue("cmd", 4);
    for (kind, script, timeout) in kinds {
        let path = dir.path().join(format!("{kind}.sh"));
        std::fs::write(&path, script).unwrap();
        let mut spec = CommandKind::new(
            kind,
            vec!["sh".into(), path.display().to_string()],
            dir.path().join("data"),
        );
        spec.cwd = dir.path().to_path_buf();
        spec.timeout = *timeout;
        spec.kill_grace = Duration::from_millis(300);
        builder = register(builder, spec);
    }
    let stop = CancellationToken::new();
    let worker = tokio::spawn({
        let stop = stop.clone();
        builder.run(async move { stop.cancelled().await })
    });
    Rig {
        dir,
        store,
        stop,
        worker,
    }
}

impl Rig {
    fn enqueue(&self, kind: &str, payload: serde_json::Value) -> i64 {
        self.store
            .enqueue(
                &NewJob::new("cmd", kind)
                    .payload(&payload)
                    .tenant("tenant-007")
                    .max_attempts(3),
            )
            .unwrap()
    }

    /// Wait until the job's first try has ended.
    async fn ended(&self, id: i64) -> jobd::store::JobInfo {
        let t0 = Instant::now();
        loop {
            let j = self.store.get(id).unwrap();
            if j.state.is_finished() || j.state == JobState::Scheduled {
                return j;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "job {id} did not end: {j:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.worker.await.unwrap().unwrap();
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

async fn read_pid(path: &Path) -> i32 {
    let t0 = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no pid in {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_payload_goes_in_on_stdin_and_progress_and_result_come_out_on_stdout() {
    // Reads its payload, reports progress twice, logs a plain line, prints
    // its environment into the result.
    let script = r#"
payload=$(cat)
echo '{"progress": 20, "stage": "reading"}'
echo "a log line, not JSON"
echo '{"progress": 60, "stage": "rendering", "details": {"completed": 3, "failed": 1, "total": 5}}'
printf '{"result": {"payload": %s, "id": "%s", "attempt": "%s", "tenant": "%s", "queue": "%s", "kind": "%s", "data": "%s", "pwd": "%s"}}\n' \
  "$payload" "$JOBD_JOB_ID" "$JOBD_ATTEMPT" "$JOBD_TENANT" "$JOBD_QUEUE" "$JOBD_KIND" "$JOBD_DATA_DIR" "$(pwd)"
"#;
    let r = rig(&[("render", script, None)]);
    let id = r.enqueue("render", json!({"template_id": 3, "copies": 12}));
    let j = r.ended(id).await;
    assert_eq!(j.state, JobState::Succeeded, "{:?}", j.last_error);
    let res = j.result.unwrap();
    assert_eq!(res["payload"], json!({"template_id": 3, "copies": 12}));
    assert_eq!(res["id"], id.to_string());
    assert_eq!(res["attempt"], "1");
    assert_eq!(res["tenant"], "tenant-007");
    assert_eq!(
        (res["queue"].as_str(), res["kind"].as_str()),
        (Some("cmd"), Some("render"))
    );
    assert!(res["data"].as_str().unwrap().ends_with("data"));
    assert_eq!(
        Path::new(res["pwd"].as_str().unwrap())
            .canonicalize()
            .unwrap(),
        r.dir.path().canonicalize().unwrap()
    );
    // The last progress report is stored, with its details.
    let logged: Vec<(Option<f64>, Option<String>, Option<String>)> = {
        let c = r.store.sqlite().unwrap().connection().unwrap();
        let mut s = c
            .prepare("SELECT percent, stage, detail FROM progress WHERE job_id = ?1 ORDER BY at")
            .unwrap();
        s.query_map([id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let last = logged.last().unwrap();
    assert_eq!(last.0, Some(60.0));
    assert_eq!(last.1.as_deref(), Some("rendering"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(last.2.as_deref().unwrap()).unwrap(),
        json!({"completed": 3, "failed": 1, "total": 5})
    );
    r.stop().await;
}

#[tokio::test]
async fn the_exit_status_decides_between_retryable_and_permanent_failure() {
    let r = rig(&[
        ("flaky", "echo 'SMTP 451 try later' >&2; exit 3", None),
        ("bad_input", "echo 'no template 9' >&2; exit 65", None),
        (
            "says_why",
            r#"echo '{"error": "mailbox does not exist", "retryable": false}'; exit 1"#,
            None,
        ),
        ("crashes", "kill -KILL $$", None),
        ("missing", "exec /no/such/program", None),
    ]);
    let flaky = r.enqueue("flaky", json!({}));
    let bad = r.enqueue("bad_input", json!({}));
    let says = r.enqueue("says_why", json!({}));
    let crash = r.enqueue("crashes", json!({}));
    let missing = r.enqueue("missing", json!({}));
    let j = r.ended(flaky).await;
    assert_eq!(j.state, JobState::Scheduled, "retryable: {j:?}");
    assert_eq!(
        j.last_error.as_deref(),
        Some("exited with status 3: SMTP 451 try later")
    );
    let j = r.ended(bad).await;
    assert_eq!(
        (j.state, j.attempts),
        (JobState::Dead, 1),
        "65 is permanent"
    );
    assert!(j.last_error.unwrap().contains("no template 9"));
    let j = r.ended(says).await;
    assert_eq!(j.state, JobState::Dead);
    assert_eq!(j.last_error.as_deref(), Some("mailbox does not exist"));
    let j = r.ended(crash).await;
    assert_eq!(j.state, JobState::Scheduled);
    assert!(j
        .last_error
        .unwrap()
        .contains("killed by signal 9 (SIGKILL)"));
    let j = r.ended(missing).await;
    assert_eq!(j.state, JobState::Scheduled);
    assert!(j.last_error.unwrap().contains("exited with status 127"));
    r.stop().await;
}

/// A program whose child ignores SIGTERM, both writing their pids.
fn stubborn(dir: &Path) -> String {
    format!(
        r#"
sh -c 'trap "" TERM; echo $$ > {dir}/child.pid; while true; do sleep 0.05; done' &
echo $$ > {dir}/parent.pid
wait
"#,
        dir = dir.display()
    )
}

#[tokio::test]
async fn a_timeout_ends_the_whole_process_tree() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(&[(
        "hangs",
        &stubborn(dir.path()),
        Some(Duration::from_millis(800)),
    )]);
    let id = r.enqueue("hangs", json!({}));
    let parent = read_pid(&dir.path().join("parent.pid")).await;
    let child = read_pid(&dir.path().join("child.pid")).await;
    assert!(alive(parent) && alive(child));
    let j = r.ended(id).await;
    assert_eq!(j.state, JobState::Scheduled);
    assert!(j.last_error.unwrap().contains("timed out after 800ms"));
    // The child ignored TERM; KILL came after the grace.
    let t0 = Instant::now();
    while alive(child) || alive(parent) {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "the process tree survived the timeout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    r.stop().await;
}

#[tokio::test]
async fn cancelling_a_running_command_ends_its_process_tree() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(&[("hangs", &stubborn(dir.path()), None)]);
    let id = r.enqueue("hangs", json!({}));
    let child = read_pid(&dir.path().join("child.pid")).await;
    r.store.cancel(id).unwrap();
    let j = r.ended(id).await;
    assert_eq!(j.state, JobState::Cancelled);
    let t0 = Instant::now();
    while alive(child) {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "the child survived the cancel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    r.stop().await;
}

#[tokio::test]
async fn garbage_on_stdout_fails_the_try_with_a_message_and_other_jobs_go_on() {
    let r = rig(&[
        ("half_json", r#"echo '{"result": '; exit 0"#, None),
        ("unknown_key", r#"echo '{"reslt": 1}'"#, None),
        ("binary", r#"printf '\377\376\375\n'"#, None),
        ("floods", "yes 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' | head -c 100000000", None),
        ("long_line", "head -c 2000000 /dev/zero | tr '\\0' 'a'", None),
        ("deaf", r#"echo '{"result": "did not read stdin"}'"#, None),
        ("fine", r#"cat > /dev/null; echo '{"result": 42}'"#, None),
    ]);
    let big = json!({"blob": "x".repeat(512 * 1024)});
    let ids: Vec<(i64, &str)> = [
        ("half_json", json!({})),
        ("unknown_key", json!({})),
        ("binary", json!({})),
        ("floods", json!({})),
        ("long_line", json!({})),
        ("deaf", big.clone()),
        ("fine", big),
    ]
    .into_iter()
    .map(|(k, p)| (r.enqueue(k, p), k))
    .collect();
    for (id, kind) in &ids {
        let j = r.ended(*id).await;
        let err = j.last_error.clone().unwrap_or_default();
        match *kind {
            "half_json" => assert!(
                err.contains("line 1 of stdout starts with '{' but is not a JSON object"),
                "{err}"
            ),
            "unknown_key" => assert!(err.contains("unknown key \"reslt\""), "{err}"),
            "binary" => assert!(err.contains("not UTF-8"), "{err}"),
            "floods" => assert!(err.contains("more than 16 MiB on stdout"), "{err}"),
            "long_line" => assert!(err.contains("longer than 1024 KiB"), "{err}"),
            "deaf" => assert_eq!(j.result, Some(json!("did not read stdin"))),
            "fine" => assert_eq!(j.result, Some(json!(42))),
            _ => unreachable!(),
        }
        if !matches!(*kind, "deaf" | "fine") {
            assert_eq!(
                j.state,
                JobState::Dead,
                "{kind}: garbage fails for good: {j:?}"
            );
        } else {
            assert_eq!(j.state, JobState::Succeeded, "{kind}: {j:?}");
        }
    }
    r.stop().await;
}
