//! `GET /metrics`: the queue's state in Prometheus' text format, encoded by
//! `prometheus-client` from one snapshot read per scrape — counts per queue
//! and state, finished tries, run time and queue wait as histograms (from
//! the rollups, so purges do not make them go down), the queue file's and
//! WAL's size, free disk, the build, and the process (CPU, memory, files).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use jobd::store::{QueueStats, Rollup, TryTotals, BUCKET_BOUNDS_MS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::{ApiError, ApiState};

/// What one scrape reports, read before encoding.
#[derive(Debug)]
struct Snapshot {
    queues: Vec<QueueStats>,
    live_workers: i64,
    attempts: TryTotals,
    rollups: Vec<Rollup>,
    files: Option<(u64, u64, Option<u64>)>,
    process: Process,
}

/// This process, from `/proc/self` (Linux; zeros elsewhere).
#[derive(Debug, Default)]
struct Process {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    open_fds: u64,
    max_fds: u64,
    start_time_seconds: f64,
}

impl Process {
    fn read() -> Process {
        let mut p = Process::default();
        // SAFETY: sysconf reads a constant of the system.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name (which may hold spaces), from
            // field 3 on: utime is 14, stime 15, starttime 22, vsize 23, rss 24.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let num = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok());
                if ticks > 0 {
                    let t = ticks as f64;
                    p.cpu_seconds = (num(14).unwrap_or(0.0) + num(15).unwrap_or(0.0)) / t;
                    if let Some(boot) = boot_time() {
                        p.start_time_seconds = boot + num(22).unwrap_or(0.0) / t;
                    }
                }
                p.virtual_bytes = num(23).unwrap_or(0.0) as u64;
                p.resident_bytes = num(24).unwrap_or(0.0) as u64 * page.max(0) as u64;
            }
        }
        p.open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            p.max_fds = lim.rlim_cur;
        }
        p
    }
}

/// When the host booted, in seconds since the epoch (`btime` of /proc/stat).
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels<'_>, f64)],
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        m.encode_family(labels)?.encode_gauge(v)?;
    }
    Ok(())
}

/// A counter of each label set: whole counts (`u64`) or seconds (`f64`).
fn counter<V: prometheus_client::encoding::EncodeCounterValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels<'_>, V)],
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        m.encode_family(labels)?
            .encode_counter::<NoLabelSet, _, f64>(v, None)?;
    }
    Ok(())
}

/// A histogram per queue from the rollups' buckets.
fn histogram(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rollups: &[Rollup],
    of: impl Fn(&Rollup) -> (&[i64], i64),
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for r in rollups {
        let (buckets, sum_ms) = of(r);
        // Per bucket, as the encoder takes them (it writes them cumulative).
        let counts: Vec<(f64, u64)> = buckets
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let bound = BUCKET_BOUNDS_MS
                    .get(i)
                    .map_or(f64::INFINITY, |ms| *ms as f64 / 1000.0);
                (bound, (*n).max(0) as u64)
            })
            .collect();
        let seen: u64 = counts.iter().map(|(_, n)| n).sum();
        let labels: Labels = vec![("queue", &r.queue)];
        m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
            sum_ms as f64 / 1000.0,
            seen,
            &counts,
            None,
        )?;
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut jobs = Vec::new();
        let (mut paused, mut oldest) = (Vec::new(), Vec::new());
        for q in &self.queues {
            for (state, n) in [
                ("scheduled", q.scheduled),
                ("ready", q.ready),
                ("running", q.running),
                ("succeeded", q.succeeded),
                ("dead", q.dead),
                ("cancelled", q.cancelled),
            ] {
                jobs.push((
                    vec![("queue", q.queue.as_str()), ("state", state)],
                    n as f64,
                ));
            }
            paused.push((vec![("queue", q.queue.as_str())], q.paused as u8 as f64));
            let age = q.oldest_ready_age_ms.unwrap_or(0) as f64 / 1000.0;
            oldest.push((vec![("queue", q.queue.as_str())], age));
        }
        gauge(
            &mut e,
            "jobd_jobs",
            "Jobs in the queue by queue and state.",
            &jobs,
        )?;
        gauge(
            &mut e,
            "jobd_queue_paused",
            "1 when the queue is paused.",
            &paused,
        )?;
        gauge(
            &mut e,
            "jobd_oldest_ready_age_seconds",
            "Age of the oldest ready job.",
            &oldest,
        )?;
        gauge(
            &mut e,
            "jobd_live_workers",
            "Worker processes with a fresh heartbeat.",
            &[(vec![], self.live_workers as f64)],
        )?;
        let attempts: Vec<(Labels, u64)> = self
            .attempts
            .iter()
            .map(|((queue, outcome), (n, _))| {
                let l = vec![("queue", queue.as_str()), ("outcome", outcome.as_str())];
                (l, (*n).max(0) as u64)
            })
            .collect();
        counter(
            &mut e,
            "jobd_attempts",
            "Finished tries by queue and outcome (succeeded, failed, lost, cancelled, released).",
            &attempts,
        )?;
        let seconds: Vec<(Labels, f64)> = self
            .attempts
            .iter()
            .map(|((queue, outcome), (_, ms))| {
                let l = vec![("queue", queue.as_str()), ("outcome", outcome.as_str())];
                (l, *ms as f64 / 1000.0)
            })
            .collect();
        counter(
            &mut e,
            "jobd_attempt_seconds",
            "Run time of finished tries summed, by queue and outcome.",
            &seconds,
        )?;
        let mut ended = Vec::new();
        for r in &self.rollups {
            for (outcome, n) in [
                ("succeeded", r.succeeded),
                ("dead", r.dead),
                ("cancelled", r.cancelled),
            ] {
                let l = vec![("queue", r.queue.as_str()), ("outcome", outcome)];
                ended.push((l, n.max(0) as u64));
            }
        }
        counter(
            &mut e,
            "jobd_jobs_ended",
            "Jobs that ended, by queue and how (from the rollups: survives purges).",
            &ended,
        )?;
        histogram(
            &mut e,
            "jobd_run_duration_seconds",
            "Run time of ended tries (started to ended), by queue.",
            &self.rollups,
            |r| (&r.run[..], r.run_ms),
        )?;
        histogram(
            &mut e,
            "jobd_queue_wait_seconds",
            "Queue wait of ended tries (due to started; a sample of a busy queue's completions), by queue.",
            &self.rollups,
            |r| (&r.wait[..], r.wait_ms),
        )?;
        if let Some((file, wal, free)) = self.files {
            gauge(
                &mut e,
                "jobd_queue_file_bytes",
                "Size of the queue file.",
                &[(vec![], file as f64)],
            )?;
            gauge(
                &mut e,
                "jobd_wal_bytes",
                "Size of the queue file's write-ahead log.",
                &[(vec![], wal as f64)],
            )?;
            if let Some(free) = free {
                gauge(
                    &mut e,
                    "jobd_free_disk_bytes",
                    "Free space on the queue file's file system.",
                    &[(vec![], free as f64)],
                )?;
            }
        }
        let info = [("version", env!("CARGO_PKG_VERSION"))];
        e.encode_descriptor("jobd_build", "This jobd's version.", None, MetricType::Info)?
            .encode_info(&info)?;
        let p = &self.process;
        counter(
            &mut e,
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds.",
            &[(Labels::new(), p.cpu_seconds)],
        )?;
        for (name, help, v) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                p.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                p.virtual_bytes as f64,
            ),
            (
                "process_open_fds",
                "Open file descriptors.",
                p.open_fds as f64,
            ),
            (
                "process_max_fds",
                "Most open file descriptors allowed.",
                p.max_fds as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds.",
                p.start_time_seconds,
            ),
        ] {
            gauge(&mut e, name, help, &[(vec![], v)])?;
        }
        Ok(())
    }
}

pub(super) async fn metrics(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let store = s.store.clone();
    let snapshot = crate::blocking(move || {
        let stats = store.stats_recent()?;
        let attempts = store.try_totals(&stats)?;
        let rollups = store.rollup_totals()?;
        Ok(Snapshot {
            queues: stats.queues,
            live_workers: stats.live_workers,
            attempts,
            rollups,
            files: crate::console::file_sizes(&store),
            process: Process::read(),
        })
    })
    .await?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "could not encode the metrics",
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        out,
    )
        .into_response())
}
