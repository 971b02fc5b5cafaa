//! `GET /metrics`: Prometheus text exposition of the queue file's state.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::server::{ApiError, ApiState};
use crate::store::Stats;

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

/// Every named statement of this module, for the prepare-them-all test.
#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[("TRY_TOTALS", TRY_TOTALS)];

/// Finished tries per (queue, outcome): count and total run time in ms.
type TryTotals = std::collections::BTreeMap<(String, String), (i64, i64)>;

/// Tries that ended without success from `tries`; succeeded ones (one per
/// succeeded job, schema/0005) from the stats' counter of them.  Both count
/// the purged ones too, so each is a counter that never goes down.
fn try_totals(c: &rusqlite::Connection, stats: &Stats) -> crate::Result<TryTotals> {
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

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(super) async fn metrics(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let store = s.store.clone();
    let (stats, attempts) = super::api::blocking(move || {
        let stats = store.stats_recent()?;
        let attempts = store.with_conn("metrics", |c| try_totals(c, &stats))?;
        Ok((stats, attempts))
    })
    .await?;

    let mut out = String::new();
    out.push_str(
        "# HELP jobd_jobs Jobs in the queue file by queue and state.\n# TYPE jobd_jobs gauge\n",
    );
    for q in &stats.queues {
        for (state, n) in [
            ("scheduled", q.scheduled),
            ("ready", q.ready),
            ("running", q.running),
            ("succeeded", q.succeeded),
            ("dead", q.dead),
            ("cancelled", q.cancelled),
        ] {
            let _ = writeln!(
                out,
                "jobd_jobs{{queue=\"{}\",state=\"{state}\"}} {n}",
                label(&q.queue)
            );
        }
    }
    out.push_str(
        "# HELP jobd_queue_paused 1 when the queue is paused.\n# TYPE jobd_queue_paused gauge\n",
    );
    for q in &stats.queues {
        let _ = writeln!(
            out,
            "jobd_queue_paused{{queue=\"{}\"}} {}",
            label(&q.queue),
            q.paused as u8
        );
    }
    out.push_str("# HELP jobd_oldest_ready_age_seconds Age of the oldest ready job.\n# TYPE jobd_oldest_ready_age_seconds gauge\n");
    for q in &stats.queues {
        let age = q.oldest_ready_age_ms.unwrap_or(0) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "jobd_oldest_ready_age_seconds{{queue=\"{}\"}} {age}",
            label(&q.queue)
        );
    }
    out.push_str("# HELP jobd_live_workers Worker processes with a fresh heartbeat.\n# TYPE jobd_live_workers gauge\n");
    let _ = writeln!(out, "jobd_live_workers {}", stats.live_workers);
    out.push_str("# HELP jobd_attempts_total Finished tries by queue and outcome (succeeded, failed, lost, cancelled, released).\n# TYPE jobd_attempts_total counter\n");
    for ((queue, outcome), (n, _)) in &attempts {
        let _ = writeln!(
            out,
            "jobd_attempts_total{{queue=\"{}\",outcome=\"{}\"}} {n}",
            label(queue),
            label(outcome)
        );
    }
    out.push_str("# HELP jobd_attempt_duration_seconds Run time of finished tries.\n# TYPE jobd_attempt_duration_seconds summary\n");
    for ((queue, outcome), (n, ms)) in &attempts {
        let l = format!("queue=\"{}\",outcome=\"{}\"", label(queue), label(outcome));
        let _ = writeln!(
            out,
            "jobd_attempt_duration_seconds_sum{{{l}}} {}",
            *ms as f64 / 1000.0
        );
        let _ = writeln!(out, "jobd_attempt_duration_seconds_count{{{l}}} {n}");
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}
