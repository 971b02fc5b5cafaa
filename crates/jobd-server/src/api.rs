//! The `/api/v1` routes and `/healthz`.

use axum::extract::rejection::{BytesRejection, QueryRejection};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use jobd::store::Role;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{ApiError, ApiState, Caller, ErrorBody};
use jobd::scheduler::ScheduleSpec;
use jobd::store::{parse_concurrency_limit, JobSelection, JobSpec, ListFilter, NewJob};

/// What a route returns: its answer, or an error response.
pub type ApiResult<T> = Result<T, ApiError>;

/// Run a store call on the blocking pool (SQLite calls block).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> jobd::Result<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "API task failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        })?
        .map_err(ApiError::from)
}

/// The body as JSON, whatever its Content-Type says (`curl -d` sends
/// form-encoded headers with a JSON body); too large is 413, not JSON 400.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<T> {
    let bytes = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    jobd::store::json::check_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("bad request body: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("bad request body: {e}")))
}

/// A parsed query string, or a 400 saying what was wrong with it.
pub fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(v)| v)
        .map_err(|r| ApiError::bad_request(format!("bad query string: {}", r.body_text())))
}

pub(crate) fn job_id(raw: &str) -> ApiResult<i64> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("job id {raw:?} is not a number")))
}

/// `POST /api/v1/jobs`: one job object, or an array of them (one transaction).
#[utoipa::path(post, path = "/jobs", tag = "jobs", request_body(content = serde_json::Value, description = "JSON"), responses((status = 201, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody)))]
pub(super) async fn enqueue(
    State(s): State<ApiState>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body: Value = json_body(body)?;
    let (specs, many) = match body {
        Value::Array(items) => (items, true),
        obj @ Value::Object(_) => (vec![obj], false),
        _ => {
            return Err(ApiError::bad_request(
                "the body must be a job object or an array of them",
            ))
        }
    };
    if specs.is_empty() {
        return Err(ApiError::bad_request("an empty array enqueues nothing"));
    }
    let at = |i: usize, e: String| {
        ApiError::bad_request(if many { format!("job #{i}: {e}") } else { e })
    };
    let mut jobs: Vec<NewJob> = Vec::with_capacity(specs.len());
    for (i, v) in specs.into_iter().enumerate() {
        let spec: JobSpec =
            serde_json::from_value(v).map_err(|e| at(i, format!("invalid job: {e}")))?;
        jobs.push(spec.into_new_job().map_err(|e| at(i, e.to_string()))?);
    }
    // Checked and enqueued in one blocking call; the inner `Err` is the
    // first job the catalog refused, with its index.
    let enqueued = blocking(move || {
        if let Some(catalog) = &s.catalog {
            let checker = catalog.checker(&s.store);
            for (i, job) in jobs.iter().enumerate() {
                // Any kind on a queue only remote workers serve: they name
                // their kinds, the configuration does not.
                if s.is_remote_queue(job.queue_name()) {
                    jobd::store::validate_name("kind", job.kind_name())?;
                    continue;
                }
                if let Err(e) = checker.check_job(job) {
                    return Ok(Err((i, e)));
                }
            }
        }
        if many {
            s.store.enqueue_many(&jobs)
        } else {
            s.store.enqueue(&jobs[0]).map(|id| vec![id])
        }
        .map(Ok)
    })
    .await?;
    match enqueued {
        Ok(ids) if many => Ok((StatusCode::CREATED, Json(json!({ "ids": ids })))),
        Ok(ids) => Ok((StatusCode::CREATED, Json(json!({ "id": ids[0] })))),
        Err((i, e @ crate::Error::InvalidInput { .. })) => Err(at(i, e.to_string())),
        Err((_, e)) => Err(ApiError::from(e)),
    }
}

/// How many jobs (by id) one payload search reads.
pub const PAYLOAD_SEARCH_WINDOW: i64 = 50_000;

/// `GET /api/v1/jobs?queue=&state=&kind=&tenant=&error=&payload=&before_id=&after_id=&limit=`
#[utoipa::path(get, path = "/jobs", tag = "jobs", params(("queue" = Option<String>, Query), ("state" = Option<String>, Query, description = "scheduled, ready, running, succeeded, dead or cancelled"), ("kind" = Option<String>, Query), ("tenant" = Option<String>, Query), ("error" = Option<String>, Query, description = "text the last error contains"), ("payload" = Option<String>, Query, description = "PATH=VALUE: a value in the payload"), ("before_id" = Option<i64>, Query), ("after_id" = Option<i64>, Query), ("limit" = Option<i64>, Query, description = "1 to 10000, default 100")), responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody)))]
pub(super) async fn list_jobs(
    State(s): State<ApiState>,
    params: Result<Query<ListFilter>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let mut filter = query(params)?;
    // A payload search reads every job's payload: one request searches a
    // window of the newest (or, with before_id, the next older) jobs, and
    // says which, so that a big file answers in time and the next page
    // goes on from there.
    if filter.payload.is_none() || filter.after_id.is_some() {
        let jobs = blocking(move || s.store.list(&filter)).await?;
        return Ok(Json(json!({ "jobs": jobs })));
    }
    let (jobs, top) = blocking(move || {
        let top = match filter.before_id {
            Some(id) => id,
            None => {
                let newest = jobd::store::ListFilter {
                    limit: Some(1),
                    ..Default::default()
                };
                s.store.list(&newest)?.first().map_or(1, |j| j.id + 1)
            }
        };
        filter.after_id = Some(top - PAYLOAD_SEARCH_WINDOW - 1);
        Ok((s.store.list(&filter)?, top))
    })
    .await?;
    let from = (top - PAYLOAD_SEARCH_WINDOW).max(1);
    Ok(Json(
        json!({ "jobs": jobs, "searched_from": from, "searched_to": top - 1 }),
    ))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct GetParams {
    /// Answer once the job has finished, or after this long (`30s`, `2m`,
    /// or seconds), whichever comes first.
    wait: Option<String>,
}

/// `GET /api/v1/jobs/{id}[?wait=30s]`.  A worker token reads only the jobs
/// its own workers ran.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", params(("id" = i64, Path, description = "the job"), GetParams), responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody), (status = 404, description = "no such job", body = ErrorBody)))]
pub(super) async fn get_job(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    params: Result<Query<GetParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let id = job_id(&id)?;
    let wait = match query(params)?.wait {
        None => Duration::ZERO,
        Some(text) => parse_wait(&text)?,
    };
    let give_up = Instant::now() + wait;
    // Taken before the first look: a commit between the look and the wait
    // wakes the wait.
    let mut commits = (wait > Duration::ZERO).then(|| s.commits.wait());
    loop {
        let st = s.store.clone();
        let job = blocking(move || st.get(id)).await?;
        if caller.role == Role::Worker {
            let own = format!("{}/", caller.name);
            if !job.worker.as_deref().is_some_and(|w| w.starts_with(&own)) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("job {id} was not run by this worker token's workers"),
                ));
            }
        }
        let done = job.state.is_finished();
        let Some(commits) = commits.as_mut().filter(|_| !done) else {
            return Ok(Json(job_json(&job)));
        };
        tokio::select! {
            _ = commits.changed() => {}
            _ = tokio::time::sleep_until(give_up.into()) => return Ok(Json(job_json(&job))),
        }
    }
}

fn parse_wait(text: &str) -> ApiResult<Duration> {
    let wait = match text.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => Duration::from_secs_f64(n.min(1e9)),
        Ok(_) => {
            return Err(ApiError::bad_request(format!(
                "wait={text} is not a duration"
            )))
        }
        Err(_) => humantime::parse_duration(text).map_err(|e| {
            ApiError::bad_request(format!("wait={text} is not a duration (30s, 2m): {e}"))
        })?,
    };
    if wait > crate::protocol::MAX_WAIT {
        return Err(ApiError::bad_request(format!(
            "wait={text} is longer than {}",
            humantime::format_duration(crate::protocol::MAX_WAIT)
        )));
    }
    Ok(wait)
}

/// A job as the API shows it: progress details (stored as JSON text) as
/// the object they are.
fn job_json(job: &jobd::store::JobInfo) -> Value {
    let mut v = serde_json::to_value(job).unwrap_or_default();
    let details = job
        .progress
        .detail
        .as_deref()
        .and_then(|d| serde_json::from_str::<Value>(d).ok())
        .filter(Value::is_object);
    if let Some(d) = details {
        v["progress"]["details"] = d;
    }
    v
}

/// `POST /api/v1/jobs/{id}/cancel`
#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "jobs", params(("id" = i64, Path, description = "the job")), responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody), (status = 404, description = "no such job", body = ErrorBody), (status = 409, description = "not in this state", body = ErrorBody)))]
pub(super) async fn cancel(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = job_id(&id)?;
    let outcome = blocking(move || s.store.cancel(id)).await?;
    Ok(Json(
        json!({ "id": id, "outcome": format!("{outcome:?}").to_lowercase() }),
    ))
}

/// `POST /api/v1/jobs/{id}/retry`
#[utoipa::path(post, path = "/jobs/{id}/retry", tag = "jobs", params(("id" = i64, Path, description = "the job")), responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody), (status = 404, description = "no such job", body = ErrorBody), (status = 409, description = "not in this state", body = ErrorBody)))]
pub(super) async fn retry(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = job_id(&id)?;
    blocking(move || s.store.retry(id)).await?;
    Ok(Json(json!({ "id": id, "state": "ready" })))
}

/// `?dry_run=true` on a bulk action: say what it would do, change nothing.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct BulkParams {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/v1/jobs/retry`: revive every dead (or, with `"state":
/// "cancelled"`, cancelled) job a [`JobSelection`] matches — `{}` for all.
/// With `?dry_run=true`, how many it would revive.
#[utoipa::path(post, path = "/jobs/retry", tag = "jobs", params(BulkParams), request_body(content = serde_json::Value, description = "JSON"), responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody)))]
pub(super) async fn retry_matching(
    State(s): State<ApiState>,
    params: Result<Query<BulkParams>, QueryRejection>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let dry_run = query(params)?.dry_run;
    let selection: JobSelection = json_body(body)?;
    if dry_run {
        let n = blocking(move || s.store.count_retryable(&selection)).await?;
        return Ok(Json(json!({ "dry_run": true, "would_retry": n })));
    }
    let report = blocking(move || s.store.retry_matching(&selection)).await?;
    Ok(Json(serde_json::to_value(report).unwrap_or_default()))
}

/// `POST /api/v1/jobs/cancel`: cancel every unfinished job a
/// [`JobSelection`] matches (running ones are asked to stop).  With
/// `?dry_run=true`, how many it would cancel and ask to stop.
#[utoipa::path(post, path = "/jobs/cancel", tag = "jobs", params(BulkParams), request_body(content = serde_json::Value, description = "JSON"), responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody)))]
pub(super) async fn cancel_matching(
    State(s): State<ApiState>,
    params: Result<Query<BulkParams>, QueryRejection>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let dry_run = query(params)?.dry_run;
    let selection: JobSelection = json_body(body)?;
    if dry_run {
        let r = blocking(move || s.store.count_cancellable(&selection)).await?;
        return Ok(Json(json!({
            "dry_run": true,
            "would_cancel": r.cancelled,
            "would_ask_to_stop": r.requested,
        })));
    }
    let report = blocking(move || s.store.cancel_matching(&selection)).await?;
    Ok(Json(serde_json::to_value(report).unwrap_or_default()))
}

/// `GET /api/v1/queues`: counts per queue and state, live workers.
#[utoipa::path(get, path = "/queues", tag = "queues", responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody)))]
pub(super) async fn queues(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
    let stats = blocking(move || s.store.stats_recent()).await?;
    Ok(Json(serde_json::to_value(stats).unwrap_or_default()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct QueueParams {
    /// `purge`: only jobs finished at least this long ago.
    #[serde(default)]
    older_than_secs: u64,
    /// `limit`: a number of jobs at once, or `none`.
    limit: Option<String>,
    /// Act on a queue nothing knows yet (else refused as a likely typo).
    #[serde(default)]
    create: bool,
}

/// `POST /api/v1/queues/{name}/pause|resume|purge[?older_than_secs=]|limit?limit=N|none`
#[utoipa::path(post, path = "/queues/{name}/{action}", tag = "queues", params(("name" = String, Path, description = "the queue"), ("action" = String, Path, description = "pause, resume, purge or limit"), QueueParams), responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody), (status = 404, description = "no such queue or action", body = ErrorBody)))]
pub(super) async fn queue_action(
    State(s): State<ApiState>,
    Path((name, action)): Path<(String, String)>,
    params: Result<Query<QueueParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let store = s.store.clone();
    let params = query(params)?;
    if ["pause", "resume", "limit", "purge"].contains(&action.as_str()) && !params.create {
        let configured = s
            .catalog
            .as_ref()
            .is_some_and(|c| c.queues().any(|q| q == name));
        let (n, st) = (name.clone(), store.clone());
        if !configured && !blocking(move || st.knows_queue(&n)).await? {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "unknown queue {name:?}: no job, configuration or worker knows it \
                     (?create=true if you mean a new queue)"
                ),
            ));
        }
    }
    match action.as_str() {
        "pause" => {
            let n = name.clone();
            blocking(move || store.pause(&n)).await?;
            Ok(Json(json!({ "queue": name, "paused": true })))
        }
        "resume" => {
            let n = name.clone();
            blocking(move || store.resume(&n)).await?;
            Ok(Json(json!({ "queue": name, "paused": false })))
        }
        "purge" => {
            let secs = params.older_than_secs;
            let n = name.clone();
            let purged =
                blocking(move || store.purge(std::time::Duration::from_secs(secs), Some(&n)))
                    .await?;
            Ok(Json(json!({ "queue": name, "purged": purged })))
        }
        "limit" => {
            let Some(text) = params.limit else {
                return Err(ApiError::bad_request(
                    "limit is required: ?limit=N, or ?limit=none to lift it",
                ));
            };
            let limit = parse_concurrency_limit(&text)?;
            let n = name.clone();
            blocking(move || store.set_concurrency(&n, limit)).await?;
            Ok(Json(json!({ "queue": name, "concurrency": limit })))
        }
        other => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no queue action {other:?}; use pause, resume, limit or purge"),
        )),
    }
}

/// `GET /api/v1/schedules`
#[utoipa::path(get, path = "/schedules", tag = "schedules", responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody)))]
pub(super) async fn schedules(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
    let list = blocking(move || s.store.schedules()).await?;
    Ok(Json(json!({ "schedules": list })))
}

/// `POST /api/v1/schedules`: a [`ScheduleSpec`].
#[utoipa::path(post, path = "/schedules", tag = "schedules", request_body(content = serde_json::Value, description = "JSON"), responses((status = 201, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody), (status = 409, description = "a schedule of that name exists", body = ErrorBody)))]
pub(super) async fn add_schedule(
    State(s): State<ApiState>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let spec: ScheduleSpec = json_body(body)?;
    let schedule = spec.into_new_schedule().map_err(ApiError::from)?;
    let info = blocking(move || {
        if let Some(catalog) = &s.catalog {
            catalog.checker(&s.store).check_schedule(&schedule)?;
        }
        s.store.add_schedule(&schedule)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(info).unwrap_or_default()),
    ))
}

/// `DELETE /api/v1/schedules/{name}`
#[utoipa::path(delete, path = "/schedules/{name}", tag = "schedules", params(("name" = String, Path, description = "the schedule")), responses((status = 204, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody), (status = 404, description = "no such schedule", body = ErrorBody)))]
pub(super) async fn remove_schedule(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    blocking(move || s.store.remove_schedule(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Unknown `/api/v1/...` paths.
pub(super) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such API route")
}

/// `GET /healthz`: the queue file answers, live workers, the scheduler, and
/// the daemon's other checks (the e-mail server: cached for a minute).
/// One index-sized query (not the per-queue counts, which read every job):
/// health checks come often.
pub(super) async fn healthz(State(s): State<ApiState>) -> (StatusCode, Json<Value>) {
    let store = s.store.clone();
    match blocking(move || store.live_workers()).await {
        Ok(live_workers) => {
            let mut body = json!({
                "status": "ok",
                "queue_db": "ok",
                "live_workers": live_workers,
                "scheduler": if s.scheduler { "running" } else { "not in this process" },
            });
            for (name, check) in s.checks.iter() {
                let check = check.clone();
                let answer = tokio::task::spawn_blocking(move || check())
                    .await
                    .unwrap_or_else(|e| Err(format!("the check did not run: {e}")));
                body[name] = match answer {
                    Ok(()) => json!("ok"),
                    Err(e) => json!({ "error": e }),
                };
            }
            (StatusCode::OK, Json(body))
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "queue_db": e.message })),
        ),
    }
}
