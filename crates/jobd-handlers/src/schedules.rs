//! The default schedules `jobd init` installs: what the platform behind jobd
//! ran with rq-scheduler / Bull repeatable jobs.  They are ordinary rows —
//! edit them with `jobd schedule add --replace`, remove them with
//! `jobd schedule remove`; a removed default stays removed (the file records
//! that the defaults were installed once).

use std::time::Duration;

use jobd::scheduler::{Misfire, NewSchedule};
use jobd::{Result, Store};

/// Queue of the maintenance jobs (backup, cleanup, health check).
pub const MAINTENANCE_QUEUE: &str = "maintenance";
/// Queue of the analytics jobs.
pub const ANALYTICS_QUEUE: &str = "analytics";

/// Job kind: back up every tenant database.
pub const BACKUP_KIND: &str = "backup_tenants";
/// Job kind: purge finished jobs and old progress rows, optimize the queue file.
pub const CLEANUP_KIND: &str = "cleanup";
/// Job kind: roll up scan analytics across all tenants.
pub const ANALYTICS_KIND: &str = "analytics_rollup";
/// Job kind: check the queue file and the tenant databases.
pub const HEALTH_KIND: &str = "health_check";

/// `meta` key recording that the defaults were installed.
const INSTALLED_KEY: &str = "default_schedules_installed_at";
/// The same for the defaults added since (a file initialised before them
/// gets them at its next `jobd init`).
const INSTALLED_FILES_KEY: &str = "file_cleanup_schedule_installed_at";

/// Job kind: remove old files of the data directory.
pub const FILE_CLEANUP_KIND: &str = crate::files::CLEANUP_KIND;

/// The default schedules (all UTC).
pub fn default_schedules() -> Vec<NewSchedule> {
    vec![
        NewSchedule::cron("tenant-backup", "0 2 * * *", MAINTENANCE_QUEUE, BACKUP_KIND)
            .payload(&serde_json::json!({ "keep": 7 }))
            .timeout(Duration::from_secs(3600)),
        NewSchedule::cron("job-cleanup", "0 3 * * 0", MAINTENANCE_QUEUE, CLEANUP_KIND)
            .payload(&serde_json::json!({ "finished_older_than_days": 7 })),
        NewSchedule::cron(
            "analytics-rollup",
            "0 1 * * *",
            ANALYTICS_QUEUE,
            ANALYTICS_KIND,
        )
        .payload(&serde_json::json!({ "period": "daily" })),
        NewSchedule::every(
            "health-check",
            Duration::from_secs(30 * 60),
            MAINTENANCE_QUEUE,
            HEALTH_KIND,
        )
        .misfire(Misfire::Skip),
        file_cleanup(),
    ]
}

/// Every 6 hours: files of `temp/` older than a day.
fn file_cleanup() -> NewSchedule {
    NewSchedule::cron(
        "file-cleanup",
        "0 */6 * * *",
        MAINTENANCE_QUEUE,
        FILE_CLEANUP_KIND,
    )
    .payload(&serde_json::json!({ "folders": ["temp"], "older_than_hours": 24 }))
}

/// Install the default schedules, once per file: the first call adds them
/// and records it; later calls add nothing (so removed defaults stay
/// removed) unless `again` is set, which re-adds the missing ones.  Returns
/// the names added.
pub fn install_default_schedules(store: &Store, again: bool) -> Result<Vec<String>> {
    let mut added = store.install_schedules_once(INSTALLED_KEY, &default_schedules(), again)?;
    for name in store.install_schedules_once(INSTALLED_FILES_KEY, &[file_cleanup()], again)? {
        if !added.contains(&name) {
            added.push(name);
        }
    }
    Ok(added)
}
