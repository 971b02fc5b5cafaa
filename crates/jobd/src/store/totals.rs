//! Finished tries per queue and outcome with their run time: counters that
//! never go down (what `/metrics` exports).

use crate::error::Result;
use crate::store::{SqliteStore, Stats};

/// Tries that ended without success, per queue and outcome, with their total
/// run time: the `tries` half of the `attempts` view (schema/0005), plus the
/// tallies of those purged (schema/0007), read in one snapshot so that the
/// sum never goes down.
pub(crate) const TRY_TOTALS: &str = "
SELECT j.queue, t.outcome, count(*), sum(t.finished_at - t.started_at)
FROM tries AS t JOIN jobs AS j ON j.id = t.job_id
GROUP BY j.queue, t.outcome
UNION ALL
SELECT queue, outcome, tries, run_ms FROM purged_tries WHERE outcome != 'succeeded'";

#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[("TRY_TOTALS", TRY_TOTALS)];

/// Finished tries per (queue, outcome): count and total run time in ms.
pub type TryTotals = std::collections::BTreeMap<(String, String), (i64, i64)>;

/// Tries that ended without success from `tries`; succeeded ones (one per
/// succeeded job, schema/0005) from the stats' counter of them.  Both count
/// the purged ones too, so each is a counter that never goes down.
fn try_totals(c: &rusqlite::Connection, stats: &Stats) -> Result<TryTotals> {
    let mut totals = TryTotals::new();
    let mut stmt = c.prepare_cached(TRY_TOTALS)?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let t = totals.entry((r.get(0)?, r.get(1)?)).or_default();
        t.0 += r.get::<_, i64>(2)?;
        t.1 += r.get::<_, Option<i64>>(3)?.unwrap_or(0);
    }
    for q in stats.queues.iter().filter(|q| q.succeeded_total > 0) {
        let t = totals
            .entry((q.queue.clone(), "succeeded".to_string()))
            .or_default();
        t.0 += q.succeeded_total;
        t.1 += q.succeeded_total_run_ms;
    }
    Ok(totals)
}

impl SqliteStore {
    /// Finished tries per (queue, outcome) — count and total run time in
    /// ms — the purged ones included; `stats` (from [`Store::stats`](crate::store::Backend::stats) or
    /// [`Store::stats_recent`](crate::store::Backend::stats_recent)) gives the succeeded ones.
    pub fn try_totals(&self, stats: &Stats) -> Result<TryTotals> {
        self.with_conn("try totals", |c| try_totals(c, stats))
    }
}
