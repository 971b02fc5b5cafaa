//! The application's own HTTP routes, added to the server's under
//! `/api/v1`: what the QR platform asks of its built-in jobs.
//!
//! * `GET /api/v1/analytics` — scan analytics across tenants: the cached
//!   answer, or a queued `analytics_rollup` job computing it.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use jobd::NewJob;
use jobd_handlers::analytics::{self, AnalyticsQuery, Period};
use jobd_handlers::schedules::{ANALYTICS_KIND, ANALYTICS_QUEUE};
use jobd_server::{blocking, query, ApiResult, ApiState};

/// The routes, for [`jobd_server::router_with`].
pub fn routes() -> Router<ApiState> {
    Router::new().route("/analytics", get(analytics))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnalyticsParams {
    #[serde(default)]
    period: Period,
    domain: Option<String>,
    template: Option<i64>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    ttl_secs: Option<u64>,
}

/// `GET /api/v1/analytics?period=&domain=&template=`: the cached answer
/// (200), or a queued `analytics_rollup` job computing it (202).
async fn analytics(
    State(s): State<ApiState>,
    params: Result<Query<AnalyticsParams>, QueryRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let p = query(params)?;
    let q = AnalyticsQuery {
        period: p.period,
        domain: p.domain,
        template: p.template,
        from_ms: p.from_ms,
        to_ms: p.to_ms,
        ttl_secs: p.ttl_secs.unwrap_or(3600),
        concurrency: None,
    };
    // A query no run could answer is refused now, not queued to fail.
    q.validate()?;
    let store = s.store().clone();
    let probe = q.clone();
    if let Some(hit) = blocking(move || analytics::cached(&store, &probe)).await? {
        return Ok((
            StatusCode::OK,
            Json(json!({ "cached": true, "result": hit })),
        ));
    }
    // One job per distinct query while it is pending.
    let job = NewJob::new(ANALYTICS_QUEUE, ANALYTICS_KIND)
        .payload(&q)
        .unique_key(format!("analytics:{}", q.cache_key()));
    let store = s.store().clone();
    let id = blocking(move || store.enqueue(&job)).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "cached": false, "job_id": id, "status": format!("/api/v1/jobs/{id}") })),
    ))
}
