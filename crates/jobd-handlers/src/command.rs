//! Command handlers: a job kind backed by a program (`[kinds.NAME]` in
//! `jobd.toml`), for job code in any language.
//!
//! Each try runs the program in a process group of its own, never through
//! a shell, the payload on its stdin as JSON (never in argv), with
//! `JOBD_JOB_ID`, `JOBD_ATTEMPT`, `JOBD_QUEUE`, `JOBD_KIND`, `JOBD_TENANT`
//! (when the job has one) and `JOBD_DATA_DIR` in its environment (and
//! never the daemon's `JOBD_API_TOKEN`).  It speaks JSON lines on stdout:
//!
//! * `{"progress": 40, "stage": "render", "details": {"done": 2}}` — stored
//!   as the job's progress (at most every 100 ms; the last one always);
//! * `{"result": …}` — the job's result (the last one printed wins);
//! * `{"error": "…", "retryable": false}` — the message (and whether to
//!   try again) of a failure, for a program that exits non-zero.
//!
//! Other lines that do not start with `{` are its log (logged at info in
//! the job's span); a line that starts with `{` and is not such an object
//! fails the try for good, as do a line over [`MAX_LINE`] and more than
//! [`MAX_STDOUT`] in all.  The exit status decides: 0 succeeded; non-zero
//! failed — retryable unless the code is one of `permanent_exit_codes`
//! (default 65, `EX_DATAERR`) or the program said `"retryable": false`;
//! killed by a signal, retryable.  The message is the `error` line's, else
//! the status and the tail of stderr ([`STDERR_TAIL`] bytes).
//!
//! Cancellation and timeout (the kind's `timeout`, or the job's) end the
//! whole group: SIGTERM, then SIGKILL after `kill_grace`.  Whatever the
//! program left behind in its group when it exits is killed too.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobd::worker::{JobContext, JobError, WorkerBuilder};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest line of stdout.
pub const MAX_LINE: usize = 1 << 20;
/// Most stdout a try may print.
pub const MAX_STDOUT: usize = 16 << 20;
/// How much of stderr a failure keeps (its end).
pub const STDERR_TAIL: usize = 4096;
/// Progress is stored at most this often (the last report always).
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// One command-backed kind.
#[derive(Debug, Clone)]
pub struct CommandKind {
    pub kind: String,
    /// The program and its arguments (`argv[0]` found on `PATH`).
    pub argv: Vec<String>,
    /// The working directory (the configuration file's, by default).
    pub cwd: PathBuf,
    /// Every try of the kind ends after this.
    pub timeout: Option<Duration>,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Exit codes that fail the job for good.
    pub permanent_exit_codes: Vec<i32>,
    /// More environment for the program.
    pub env: BTreeMap<String, String>,
    /// The data directory, as `JOBD_DATA_DIR`.
    pub data_dir: PathBuf,
}

impl CommandKind {
    pub fn new(kind: &str, argv: Vec<String>, data_dir: PathBuf) -> CommandKind {
        CommandKind {
            kind: kind.to_string(),
            argv,
            cwd: PathBuf::from("."),
            timeout: None,
            kill_grace: Duration::from_secs(5),
            permanent_exit_codes: vec![65],
            env: BTreeMap::new(),
            data_dir,
        }
    }

    /// Refuse what could never run: no program, a kind name jobd refuses.
    pub fn check(&self) -> Result<(), String> {
        jobd::store::validate_name("kind", &self.kind).map_err(|e| e.to_string())?;
        match self.argv.first() {
            None => Err(format!("kind {}: command is empty", self.kind)),
            Some(p) if p.is_empty() => {
                Err(format!("kind {}: the program's name is empty", self.kind))
            }
            Some(_) => Ok(()),
        }
    }
}

/// Register `spec` on `builder` (its queue is the builder's business).
pub fn register(builder: WorkerBuilder, spec: CommandKind) -> WorkerBuilder {
    let kind = spec.kind.clone();
    let spec = Arc::new(spec);
    builder.handle_fn(&kind, move |ctx, payload| {
        let spec = spec.clone();
        async move { run(&spec, ctx, payload).await }
    })
}

/// A process group, killed when dropped unless told it is empty.
struct Group {
    pgid: i32,
    grace: Duration,
    armed: bool,
}

impl Group {
    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with a negative pid signals the group; no memory
        // is involved.
        unsafe {
            libc::kill(-self.pgid, sig);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // The run was dropped (its worker gave up on it): end the group
        // without waiting here.
        self.signal(libc::SIGTERM);
        let (pgid, grace) = (self.pgid, self.grace);
        let _ = std::thread::Builder::new()
            .name("jobd-kill".into())
            .spawn(move || {
                std::thread::sleep(grace);
                // SAFETY: as above.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            });
    }
}

/// What stdout said.
#[derive(Default)]
struct Said {
    result: Option<Value>,
    error: Option<(String, bool)>,
    /// A protocol violation: the try fails for good with this.
    broken: Option<String>,
}

async fn run(spec: &CommandKind, ctx: JobContext, payload: Value) -> Result<Value, JobError> {
    let mut cmd = tokio::process::Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..])
        .current_dir(&spec.cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .env_remove("JOBD_API_TOKEN")
        .envs(&spec.env)
        .env("JOBD_JOB_ID", ctx.id().to_string())
        .env("JOBD_ATTEMPT", ctx.attempt().to_string())
        .env("JOBD_QUEUE", ctx.queue())
        .env("JOBD_KIND", ctx.kind())
        .env("JOBD_DATA_DIR", &spec.data_dir)
        .env_remove("JOBD_TENANT");
    if let Some(t) = ctx.tenant() {
        cmd.env("JOBD_TENANT", t);
    }
    let mut child = cmd.spawn().map_err(|e| {
        JobError::permanent(format!(
            "cannot start {:?} (in {}): {e}",
            spec.argv[0],
            spec.cwd.display()
        ))
    })?;
    let Some(pid) = child.id() else {
        return Err(JobError::retryable(
            "the program exited before it could be watched",
        ));
    };
    let mut group = Group {
        pgid: pid as i32,
        grace: spec.kill_grace,
        armed: true,
    };
    tracing::debug!(pid, program = %spec.argv[0], "command started");

    // The payload in, then stdin closed; a program that never reads it
    // (or exits first) does not hold anything up.
    let mut stdin = child.stdin.take().expect("piped");
    let input = payload.to_string().into_bytes();
    tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
        let _ = stdin.shutdown().await;
    });
    let mut stderr = child.stderr.take().expect("piped");
    let stderr_tail = tokio::spawn(async move {
        let mut tail: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > 2 * STDERR_TAIL {
                tail.drain(..tail.len() - STDERR_TAIL);
            }
        }
        if tail.len() > STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL);
        }
        String::from_utf8_lossy(&tail).trim().to_string()
    });
    let stdout = child.stdout.take().expect("piped");
    let reading = read_stdout(stdout, &ctx);
    tokio::pin!(reading);

    let timeout = async {
        match spec.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(timeout);

    enum End {
        Exited(std::io::Result<std::process::ExitStatus>),
        Broken(Said),
        Cancelled,
        TimedOut,
    }
    let mut said = None;
    let end = loop {
        tokio::select! {
            status = child.wait() => break End::Exited(status),
            s = &mut reading, if said.is_none() => {
                match s.broken {
                    Some(_) => break End::Broken(s),
                    None => said = Some(s),
                }
            }
            _ = ctx.cancelled() => break End::Cancelled,
            _ = &mut timeout => break End::TimedOut,
        }
    };
    let stop = |why: &str| {
        tracing::info!(
            pid,
            "{why}: ending the command's process group (TERM, then KILL)"
        );
    };
    match end {
        End::Exited(status) => {
            // Its output to the end (a child left in the group may hold the
            // pipe open: a second at most), then whatever is left of the group.
            let said = match said {
                Some(s) => s,
                None => tokio::time::timeout(Duration::from_secs(1), &mut reading)
                    .await
                    .unwrap_or_default(),
            };
            group.signal(libc::SIGKILL);
            group.armed = false;
            let tail = stderr_tail.await.unwrap_or_default();
            let status =
                status.map_err(|e| JobError::retryable(format!("waiting for the program: {e}")))?;
            outcome(spec, status, said, &tail)
        }
        End::Broken(said) => {
            stop("its output broke the protocol");
            terminate(&mut child, &mut group).await;
            Err(JobError::permanent(said.broken.unwrap_or_default()))
        }
        End::Cancelled => {
            stop("the job was told to stop");
            terminate(&mut child, &mut group).await;
            Err(JobError::retryable(
                "stopped: the job was cancelled or timed out",
            ))
        }
        End::TimedOut => {
            stop("the kind's timeout passed");
            terminate(&mut child, &mut group).await;
            let t = spec.timeout.unwrap_or_default();
            Err(JobError::retryable(format!(
                "timed out after {} (the kind's timeout)",
                humantime::format_duration(t)
            )))
        }
    }
}

/// TERM to the group, KILL after the grace, and reap the program.
async fn terminate(child: &mut tokio::process::Child, group: &mut Group) {
    group.signal(libc::SIGTERM);
    if tokio::time::timeout(group.grace, child.wait())
        .await
        .is_err()
    {
        group.signal(libc::SIGKILL);
        let _ = child.wait().await;
    }
    // The program is gone; anything of its group that ignored TERM goes now.
    group.signal(libc::SIGKILL);
    group.armed = false;
}

fn outcome(
    spec: &CommandKind,
    status: std::process::ExitStatus,
    said: Said,
    stderr: &str,
) -> Result<Value, JobError> {
    use std::os::unix::process::ExitStatusExt;
    if let Some(broken) = said.broken {
        return Err(JobError::permanent(broken));
    }
    if status.success() {
        return Ok(said.result.unwrap_or(Value::Null));
    }
    let tail = if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    };
    if let Some(sig) = status.signal() {
        return Err(JobError::retryable(format!(
            "killed by signal {sig} ({}){tail}",
            signal_name(sig)
        )));
    }
    let code = status.code().unwrap_or(-1);
    let permanent = spec.permanent_exit_codes.contains(&code);
    match said.error {
        Some((message, retryable)) => Err(JobError {
            message,
            retryable: retryable && !permanent,
        }),
        None => Err(JobError {
            message: format!("exited with status {code}{tail}"),
            retryable: !permanent,
        }),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGINT => "SIGINT",
        libc::SIGBUS => "SIGBUS",
        _ => "signal",
    }
}

/// Read stdout to its end (or to the first violation), storing progress
/// as it comes.
async fn read_stdout(mut out: tokio::process::ChildStdout, ctx: &JobContext) -> Said {
    let mut said = Said::default();
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 64 * 1024];
    let (mut total, mut line_no) = (0usize, 0usize);
    let mut last_stored: Option<Instant> = None;
    let mut pending: Option<Value> = None;
    loop {
        let n = match out.read(&mut chunk).await {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        total += n;
        if total > MAX_STDOUT {
            said.broken = Some(format!(
                "the program printed more than {} MiB on stdout",
                MAX_STDOUT >> 20
            ));
            return said;
        }
        buf.extend_from_slice(&chunk[..n]);
        let eof = n == 0;
        // Every whole line (and at the end, what is left).
        loop {
            let line_end = buf.iter().position(|b| *b == b'\n');
            let line: Vec<u8> = match line_end {
                Some(i) => {
                    let l = buf[..i].to_vec();
                    buf.drain(..=i);
                    l
                }
                None if eof && !buf.is_empty() => std::mem::take(&mut buf),
                None => break,
            };
            line_no += 1;
            if let Err(e) = take_line(&line, line_no, &mut said, &mut pending) {
                said.broken = Some(e);
                return said;
            }
            if let Some(p) = pending.take() {
                let due = last_stored.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
                if due {
                    store_progress(ctx, &p).await;
                    last_stored = Some(Instant::now());
                } else {
                    pending = Some(p);
                }
            }
        }
        if buf.len() > MAX_LINE {
            said.broken = Some(format!(
                "line {} of stdout is longer than {} KiB",
                line_no + 1,
                MAX_LINE >> 10
            ));
            return said;
        }
        if eof {
            if let Some(p) = pending.take() {
                store_progress(ctx, &p).await;
            }
            return said;
        }
    }
}

fn take_line(
    line: &[u8],
    n: usize,
    said: &mut Said,
    pending: &mut Option<Value>,
) -> Result<(), String> {
    if line.len() > MAX_LINE {
        return Err(format!(
            "line {n} of stdout is longer than {} KiB",
            MAX_LINE >> 10
        ));
    }
    let text = std::str::from_utf8(line)
        .map_err(|_| format!("line {n} of stdout is not UTF-8 text"))?
        .trim();
    if !text.starts_with('{') {
        if !text.is_empty() {
            tracing::info!(line = n, "stdout: {text}");
        }
        return Ok(());
    }
    let start: String = text.chars().take(80).collect();
    let mut obj = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => o,
        Ok(_) | Err(_) => {
            return Err(format!(
                "line {n} of stdout starts with '{{' but is not a JSON object: {start}"
            ))
        }
    };
    if let Some(result) = obj.remove("result") {
        said.result = Some(result);
    }
    if let Some(error) = obj.remove("error") {
        let retryable = obj
            .remove("retryable")
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        let message = match error {
            Value::String(s) => s,
            other => other.to_string(),
        };
        said.error = Some((message, retryable));
    }
    if obj.contains_key("progress") || obj.contains_key("stage") || obj.contains_key("details") {
        *pending = Some(Value::Object(obj.clone()));
        obj.remove("progress");
        obj.remove("stage");
        obj.remove("details");
    }
    obj.remove("retryable");
    if let Some(key) = obj.keys().next() {
        return Err(format!(
            "line {n} of stdout has an unknown key {key:?} (use progress, stage, details, result, error, retryable): {start}"
        ));
    }
    Ok(())
}

async fn store_progress(ctx: &JobContext, p: &Value) {
    let percent = p.get("progress").and_then(Value::as_f64);
    let stage = p.get("stage").and_then(Value::as_str).unwrap_or("");
    let details = p
        .get("details")
        .filter(|d| d.is_object())
        .map(Value::to_string);
    if let Err(e) = ctx.progress(percent, stage, details.as_deref()).await {
        tracing::warn!(error = %e.message, "progress from the command not stored");
    }
}
