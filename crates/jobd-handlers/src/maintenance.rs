//! Maintenance of the queue file and the tenant databases (`cleanup`), and
//! the `health_check` job.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::blocking::no_check;
use crate::schedules::{CLEANUP_KIND, HEALTH_KIND};
use crate::{job_error, DataDir, Reporter, Run};
use jobd::error::{Error, Result};
use jobd::store::Store;
use jobd::worker::JobError;

/// The `cleanup` job's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanupOptions {
    /// Finished jobs (and progress rows, and fired-tick rows) older than this
    /// many days are deleted.  Default 7.
    #[serde(default = "default_days")]
    pub finished_older_than_days: u32,
    /// Per-minute rollups (the dashboard's charts) older than this many
    /// days fold into their queue's totals.  Default 8: a week of charts.
    #[serde(default = "default_rollup_days")]
    pub rollups_older_than_days: u32,
    /// `ANALYZE` + `PRAGMA optimize` each tenant database.
    #[serde(default)]
    pub analyze_tenants: bool,
    /// `VACUUM` each tenant database (rewrites the file; takes a write lock).
    #[serde(default)]
    pub vacuum_tenants: bool,
}

fn default_days() -> u32 {
    7
}

fn default_rollup_days() -> u32 {
    8
}

impl Default for CleanupOptions {
    fn default() -> Self {
        CleanupOptions {
            finished_older_than_days: default_days(),
            rollups_older_than_days: default_rollup_days(),
            analyze_tenants: false,
            vacuum_tenants: false,
        }
    }
}

/// What `cleanup` did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CleanupReport {
    pub purged_jobs: usize,
    pub purged_progress: usize,
    pub purged_fires: usize,
    /// Per-minute rollups folded into their queue's totals.
    #[serde(default)]
    pub purged_rollups: usize,
    /// Expired analytics cache entries.
    #[serde(default)]
    pub purged_cache: usize,
    /// Tenants analyzed / vacuumed, and those that failed (with the reason).
    pub tenants_done: usize,
    pub tenants_failed: Vec<(String, String)>,
}

/// Purge, optimize and checkpoint the queue file; optionally tend the tenants.
pub fn cleanup(
    store: &Store,
    data: Option<&DataDir>,
    opts: &CleanupOptions,
    reporter: &Reporter,
) -> Result<CleanupReport> {
    let retention = Duration::from_secs(u64::from(opts.finished_older_than_days) * 86_400);
    let cutoff = store.clock().now_ms() - retention.as_millis() as i64;
    let mut report = CleanupReport::default();

    reporter.report(0.0, "purging finished jobs", None);
    report.purged_jobs = store.purge(retention, None)?;
    reporter.report(20.0, "purging progress rows", None);
    report.purged_progress = store.purge_progress(cutoff)?;
    report.purged_fires = store.purge_fires(cutoff)?;
    let rollup_cutoff =
        store.clock().now_ms() - i64::from(opts.rollups_older_than_days) * 86_400_000;
    report.purged_rollups = store.purge_rollups(rollup_cutoff)?;

    report.purged_cache = crate::analytics::purge_expired(store)?;
    reporter.report(40.0, "optimizing the queue file", None);
    store.optimize()?;
    store.checkpoint()?;

    if let Some(data) = data.filter(|_| opts.analyze_tenants || opts.vacuum_tenants) {
        let tenants = data.tenants().list()?;
        for (i, tenant) in tenants.iter().enumerate() {
            if reporter.is_cancelled() {
                return Err(Error::Stopped {
                    operation: "cleanup",
                });
            }
            reporter.report(
                50.0 + 50.0 * i as f64 / tenants.len().max(1) as f64,
                "tending tenants",
                Some(tenant.clone()),
            );
            let tend = || -> Result<()> {
                let conn = data.tenants().open_read_write(tenant)?;
                let path = data.tenants().path(tenant)?;
                let mut sql = String::new();
                if opts.analyze_tenants {
                    sql.push_str("ANALYZE; PRAGMA optimize;");
                }
                if opts.vacuum_tenants {
                    sql.push_str("VACUUM;");
                }
                conn.execute_batch(&sql)
                    .map_err(|e| Error::from_sqlite("maintaining tenant", &path, e))
            };
            match tend() {
                Ok(()) => report.tenants_done += 1,
                Err(e) => report.tenants_failed.push((tenant.clone(), e.to_string())),
            }
        }
    }
    reporter.report(100.0, "done", None);
    tracing::info!(
        jobs = report.purged_jobs,
        progress = report.purged_progress,
        fires = report.purged_fires,
        "cleanup done"
    );
    Ok(report)
}

blocking_job! {
    /// The `cleanup` job.
    Cleanup = CleanupHandler: CLEANUP_KIND, CleanupOptions => CleanupReport, no_check, run_cleanup
}

fn run_cleanup(run: &Run, opts: CleanupOptions, r: &Reporter) -> Result<CleanupReport, JobError> {
    cleanup(&run.store, run.data.as_ref(), &opts, r).map_err(job_error)
}

/// What `health_check` found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub queue_ok: bool,
    pub live_workers: i64,
    pub tenants: usize,
    /// Tenants that failed `PRAGMA quick_check` or could not be opened.
    pub unhealthy_tenants: Vec<(String, String)>,
}

/// Check the queue file and every tenant (`PRAGMA quick_check`, read-only).
pub fn health_check(store: &Store, data: Option<&DataDir>, reporter: &Reporter) -> Result<Health> {
    reporter.report(0.0, "checking the queue file", None);
    let queue_ok = store.quick_check()? == "ok";
    let live_workers = store.live_workers()?;
    let mut health = Health {
        queue_ok,
        live_workers,
        tenants: 0,
        unhealthy_tenants: Vec::new(),
    };
    if let Some(data) = data {
        let tenants = data.tenants().list()?;
        health.tenants = tenants.len();
        for (i, tenant) in tenants.iter().enumerate() {
            reporter.report(
                100.0 * i as f64 / tenants.len() as f64,
                "checking tenants",
                Some(tenant.clone()),
            );
            let check = || -> Result<String> {
                let conn = data.tenants().open_read_only(tenant)?;
                Ok(conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?)
            };
            match check() {
                Ok(v) if v == "ok" => {}
                Ok(v) => health.unhealthy_tenants.push((tenant.clone(), v)),
                Err(e) => health
                    .unhealthy_tenants
                    .push((tenant.clone(), e.to_string())),
            }
        }
    }
    reporter.report(100.0, "done", None);
    Ok(health)
}

blocking_job! {
    /// The `health_check` job: fails (retryably) when something is unhealthy,
    /// so an operator sees it among the failed jobs.
    HealthCheck = HealthHandler: HEALTH_KIND, serde_json::Value => Health, no_check, run_health
}

fn run_health(run: &Run, _: serde_json::Value, r: &Reporter) -> Result<Health, JobError> {
    let health = health_check(&run.store, run.data.as_ref(), r).map_err(job_error)?;
    if !health.queue_ok || !health.unhealthy_tenants.is_empty() {
        return Err(JobError::retryable(format!(
            "unhealthy: queue file ok = {}, tenants failing: {:?}",
            health.queue_ok, health.unhealthy_tenants
        )));
    }
    Ok(health)
}
