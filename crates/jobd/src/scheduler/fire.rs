//! Firing due ticks: exactly once, whoever fires them.
//!
//! One pass is one `BEGIN IMMEDIATE` transaction.  For each enabled schedule
//! whose `next_fire_at` has come, it works out the due ticks, applies the
//! misfire policy, and for every tick it fires inserts a `schedule_fires`
//! row — whose primary key `(schedule, fire_at)` refuses a second fire of the
//! same tick — and the job, then moves `next_fire_at` past now.  All of it
//! commits together or not at all: a scheduler killed mid-pass leaves the
//! ticks due for the next pass (its own after a restart, or another
//! scheduler's), and schedulers racing on one file serialize on the write
//! lock, each seeing what the one before it committed.

use std::collections::VecDeque;
use std::time::Duration;

use crate::clock::{duration_ms, Millis};
use crate::error::{Error, Result};
use crate::scheduler::manage::schedule_job;
use crate::scheduler::rows::{ScheduleRows, SqliteRows};
use crate::scheduler::schedule::{FireReport, Fired, Misfire, ScheduleInfo};
use crate::scheduler::when::Timetable;
use crate::store::job::RunAt;
use crate::store::SqliteStore;

/// The earliest tick of any enabled schedule (a seek on `schedules_due`).
pub(crate) const NEXT_DUE: &str = "SELECT min(next_fire_at) FROM schedules WHERE enabled = 1";

pub(crate) const DUE_SCHEDULES: &str = "
SELECT name, cron, interval_ms, timezone, queue, kind, payload, priority, max_attempts,
       timeout_ms, tenant, enabled, misfire, misfire_cap, last_fire_at, next_fire_at,
       last_error, 0, created_at, updated_at, notify
FROM schedules AS s
WHERE enabled = 1 AND next_fire_at <= ?1
ORDER BY next_fire_at, name";

/// Claim a tick; inserts nothing when the tick was already fired.
pub(crate) const INSERT_FIRE: &str = "
INSERT INTO schedule_fires (schedule, fire_at, fired_at) VALUES (?1, ?2, ?3)
ON CONFLICT (schedule, fire_at) DO NOTHING";

pub(crate) const SET_FIRE_JOB: &str =
    "UPDATE schedule_fires SET job_id = ?3 WHERE schedule = ?1 AND fire_at = ?2";

pub(crate) const ADVANCE: &str = "
UPDATE schedules
SET last_fire_at = coalesce(?2, last_fire_at), next_fire_at = ?3, updated_at = ?4
WHERE name = ?1";

pub(crate) const DISABLE: &str = "
UPDATE schedules
SET enabled = 0, next_fire_at = NULL, last_error = ?2, updated_at = ?3
WHERE name = ?1";

/// Every named statement of this module, for the prepare-them-all test.
#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("NEXT_DUE", NEXT_DUE),
    ("DUE_SCHEDULES", DUE_SCHEDULES),
    ("INSERT_FIRE", INSERT_FIRE),
    ("SET_FIRE_JOB", SET_FIRE_JOB),
    ("ADVANCE", ADVANCE),
    ("DISABLE", DISABLE),
];

/// Due ticks enumerated one by one before jumping ahead (a per-second
/// schedule after a week of downtime has 600k of them).
const ENUMERATION_LIMIT: u64 = 100_000;

impl SqliteStore {
    /// The earliest tick of any enabled schedule.
    pub fn next_schedule_tick(&self) -> Result<Option<Millis>> {
        self.with_conn("read next tick", |conn| {
            Ok(conn.prepare_cached(NEXT_DUE)?.query_row([], |r| r.get(0))?)
        })
    }

    /// Fire every due tick (see the module doc).  `grace` is how late a tick
    /// may be fired and still count as on time.
    pub fn fire_due_schedules(&self, grace: Duration) -> Result<FireReport> {
        let now = self.now();
        // A read first: the write lock is only taken when something is due.
        let next = self.next_schedule_tick()?;
        if next.is_none_or(|next| next > now) {
            return Ok(FireReport {
                next_fire_at: next,
                ..FireReport::default()
            });
        }
        let max_payload = self.options().max_payload_bytes;
        let grace_ms = duration_ms(grace);
        let report = self.write("fire schedules", |tx| {
            fire_pass(&mut SqliteRows(tx), now, grace_ms, max_payload)
        })?;
        if !report.fired.is_empty() {
            self.notify_work();
        }
        Ok(report)
    }
}

/// One pass over the due schedules, in the caller's transaction: each
/// fires its due ticks (see [`fire_one`]); then the earliest next tick.
pub(crate) fn fire_pass(
    rows: &mut impl ScheduleRows,
    now: Millis,
    grace_ms: i64,
    max_payload: usize,
) -> Result<FireReport> {
    let due = rows.due(now)?;
    let mut report = FireReport::default();
    for s in &due {
        fire_one(rows, s, now, grace_ms, max_payload, &mut report)?;
    }
    report.next_fire_at = rows.next_due()?;
    Ok(report)
}

fn fire_one(
    rows: &mut impl ScheduleRows,
    s: &ScheduleInfo,
    now: Millis,
    grace_ms: i64,
    max_payload: usize,
    report: &mut FireReport,
) -> Result<()> {
    // A row edited by hand into something unfireable is disabled with the
    // reason, rather than failing every pass of every scheduler.
    let disable = |rows: &mut _, report: &mut FireReport, err: Error| -> Result<()> {
        let reason = err.to_string();
        tracing::error!(schedule = %s.name, error = %reason, "schedule cannot fire; disabled");
        ScheduleRows::disable(rows, &s.name, &reason, now)?;
        report.disabled.push(s.name.clone());
        Ok(())
    };
    let timetable = match Timetable::new(&s.when, &s.timezone) {
        Ok(t) => t,
        Err(e) => return disable(rows, report, e),
    };
    let job = schedule_job(s, RunAt::Now);
    if let Err(e) = job.validate(max_payload) {
        return disable(rows, report, e);
    }
    let Some(first) = s.next_fire_at else {
        return Ok(());
    };

    // The due ticks: count them all, keep the latest few.
    let keep = match s.misfire {
        Misfire::All => s.misfire_cap.max(1) as usize,
        Misfire::Once | Misfire::Skip => 1,
    };
    let mut latest: VecDeque<Millis> = VecDeque::with_capacity(keep);
    let mut count: u64 = 0;
    let mut tick = Some(first);
    while let Some(t) = tick.filter(|t| *t <= now) {
        count += 1;
        if latest.len() == keep {
            latest.pop_front();
        }
        latest.push_back(t);
        tick = timetable.next_after(t);
        if count == ENUMERATION_LIMIT {
            // Jump to shortly before now: the ticks in between are missed
            // ones no policy fires, and counted only roughly.
            let gap = ((t - first) / count as i64).max(1);
            let restart = now.saturating_sub(gap.saturating_mul(2 * keep as i64 + 2));
            if restart > t {
                count += ((restart - t) / gap) as u64;
                tick = timetable.next_after(restart);
            }
        }
    }
    let next = tick; // the first tick after now

    let to_fire: Vec<Millis> = match s.misfire {
        Misfire::All => latest.iter().copied().collect(),
        Misfire::Once => latest.back().copied().into_iter().collect(),
        Misfire::Skip => latest
            .back()
            .copied()
            .filter(|t| now - t <= grace_ms)
            .into_iter()
            .collect(),
    };
    report.skipped += count - to_fire.len() as u64;
    if count > to_fire.len() as u64 {
        tracing::warn!(schedule = %s.name, due = count, firing = to_fire.len(),
                       misfire = s.misfire.as_str(), "missed ticks after downtime");
    }

    let mut last_fired = None;
    for fire_at in to_fire {
        if !rows.claim_tick(&s.name, fire_at, now)? {
            tracing::debug!(schedule = %s.name, fire_at, "tick already fired");
            continue;
        }
        let job = schedule_job(s, RunAt::At(fire_at));
        let payload = job.validate(max_payload)?;
        let job_id = rows.enqueue(&job, payload, now)?;
        rows.set_fire_job(&s.name, fire_at, job_id)?;
        tracing::info!(schedule = %s.name, fire_at, job_id, queue = %s.queue, kind = %s.kind,
                       "schedule fired");
        report.fired.push(Fired {
            schedule: s.name.clone(),
            fire_at,
            job_id,
        });
        last_fired = Some(fire_at);
    }
    rows.advance(&s.name, last_fired, next, now)?;
    Ok(())
}
