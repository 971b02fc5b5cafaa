//! `GET /metrics`: Prometheus text exposition of the queue file's state.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, ApiState};

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(super) async fn metrics(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let store = s.store.clone();
    let (stats, attempts) = crate::blocking(move || {
        let stats = store.stats_recent()?;
        let attempts = store.try_totals(&stats)?;
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
