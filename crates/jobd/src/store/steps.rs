//! Steps of the wall clock, told apart from time passing.
//!
//! Leases expire by the wall clock (the times in the file are wall-clock
//! milliseconds, readable by anyone).  When that clock steps forward — an
//! NTP correction, a VM resumed after hours — every running job's lease
//! looks expired at once, and a reaper would send back jobs whose workers
//! are alive and heartbeating, to run a second time.  So every reap first
//! compares the wall clock with the [`Steady`] clock (same boot, never
//! steps) against what the last reap on the file saw: when the wall clock
//! has gained more than it could by drifting, reaping holds off for
//! [`StoreOptions::worker_liveness`](crate::store::StoreOptions) — in every
//! process on the file, since the hold is kept in the file — while live
//! workers heartbeat their leases under the new time.  Leases of workers
//! that really stopped expire after the hold.
//!
//! A step back makes leases look longer by the step: a stopped worker's jobs
//! are reaped that much later; live ones are not affected.  A new boot of
//! the host is not a step: every process of the old boot is gone.

use rusqlite::{OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use crate::clock::{Millis, Steady};
use crate::store::meta::{GET_META, SET_META};

/// The last clocks a reap saw, kept in `meta` under [`KEY`].
#[derive(Debug, Serialize, Deserialize)]
struct Seen {
    boot: u64,
    /// `steady.ms` then.
    steady: Millis,
    /// Wall minus steady then: what a step changes.
    offset: Millis,
    /// No reaping before this steady time (after a forward step).
    hold_until: Option<Millis>,
}

const KEY: &str = "clock_seen_by_reap";

/// A record older than this is written again, so the drift allowed stays
/// small (a step of more than about 1.6 s is noticed).
const REFRESH_MS: Millis = 10 * 60 * 1000;

/// How far the two clocks may drift apart between reaps without it being a
/// step: a second, plus what a clock slewed by NTP (at most 500 ppm) moves.
fn tolerance(elapsed: Millis) -> Millis {
    1000 + elapsed / 1000
}

/// What a reap may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Reap,
    /// A forward step was seen; no reaping for this much longer (ms).
    Hold(Millis),
}

/// Record the clocks and say whether to reap, inside the reap's write
/// transaction.  `hold` is how long live workers may take to heartbeat.
pub(crate) fn check(
    tx: &Transaction,
    now: Millis,
    steady: Option<Steady>,
    hold: Millis,
) -> rusqlite::Result<Verdict> {
    let Some(steady) = steady else {
        return Ok(Verdict::Reap);
    };
    let offset = now - steady.ms;
    let seen: Option<Seen> = tx
        .prepare_cached(GET_META)?
        .query_row([KEY], |r| r.get::<_, String>(0))
        .optional()?
        .and_then(|text| serde_json::from_str(&text).ok());
    let mut hold_until = None;
    // Written again only when something changed or the record is old: a
    // reap that finds nothing commits nothing (and wakes no idle worker).
    let mut changed = true;
    if let Some(seen) = seen.filter(|s| s.boot == steady.boot) {
        hold_until = seen.hold_until.filter(|until| *until > steady.ms);
        let step = offset - seen.offset;
        let elapsed = (steady.ms - seen.steady).max(0);
        let allowed = tolerance(elapsed);
        changed = hold_until != seen.hold_until || step.abs() > allowed || elapsed > REFRESH_MS;
        if step > allowed {
            hold_until = Some(steady.ms + hold);
            tracing::warn!(
                step_ms = step,
                hold_ms = hold,
                "the wall clock stepped forward; leases are not reaped until live workers \
                 have heartbeated under the new time"
            );
        } else if step < -allowed {
            tracing::warn!(
                step_ms = step,
                "the wall clock stepped back; leases of stopped workers expire that much later"
            );
        }
    }
    if changed {
        let record = Seen {
            boot: steady.boot,
            steady: steady.ms,
            offset,
            hold_until,
        };
        let text = serde_json::to_string(&record).expect("plain numbers");
        tx.prepare_cached(SET_META)?.execute([KEY, &text])?;
    }
    Ok(match hold_until {
        Some(until) => Verdict::Hold(until - steady.ms),
        None => Verdict::Reap,
    })
}
