//! The routes the operations console reads and acts through, beside the
//! rest of `/api/v1`: the overview (throughput, timing and health), the
//! live workers, who the caller is, deleting a job, and a schedule's page
//! and actions.

use std::collections::BTreeMap;

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use jobd::scheduler::{ScheduleSpec, Timetable};
use jobd::store::{Rollup, Store};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::{blocking, job_id, json_body, query, ApiResult};
use crate::{ApiError, ApiState, Caller, ErrorBody};

/// Minutes in the overview's last hour, hours in its last day.
const MINUTES: i64 = 60;
const HOURS: i64 = 24;

/// One series of a chart: a count per step, oldest first.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Throughput {
    pub succeeded: Vec<i64>,
    pub failed: Vec<i64>,
    pub dead: Vec<i64>,
}

impl Throughput {
    fn new(steps: usize) -> Throughput {
        Throughput {
            succeeded: vec![0; steps],
            failed: vec![0; steps],
            dead: vec![0; steps],
        }
    }

    fn add(&mut self, i: usize, r: &Rollup) {
        self.succeeded[i] += r.succeeded;
        self.failed[i] += r.failed;
        self.dead[i] += r.dead;
    }
}

/// Throughput per step of one window, per queue and in total.
#[derive(Debug, Serialize)]
pub(crate) struct Window {
    /// The first step's start (ms since the epoch) and each step's length.
    pub start: i64,
    pub step_ms: i64,
    pub total: Throughput,
    pub queues: BTreeMap<String, Throughput>,
}

/// Run time and queue wait of one queue's tries in the last hour.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Timing {
    pub tries: i64,
    pub run_p50_ms: Option<f64>,
    pub run_p95_ms: Option<f64>,
    pub wait_p50_ms: Option<f64>,
    pub wait_p95_ms: Option<f64>,
}

fn window(rows: &[Rollup], start_minute: i64, minutes_per_step: i64, steps: usize) -> Window {
    let mut w = Window {
        start: start_minute * 60_000,
        step_ms: minutes_per_step * 60_000,
        total: Throughput::new(steps),
        queues: BTreeMap::new(),
    };
    for r in rows.iter().filter(|r| r.minute >= start_minute) {
        let i = ((r.minute - start_minute) / minutes_per_step) as usize;
        if i >= steps {
            continue;
        }
        w.total.add(i, r);
        w.queues
            .entry(r.queue.clone())
            .or_insert_with(|| Throughput::new(steps))
            .add(i, r);
    }
    w
}

/// The overview's numbers from the rollups of the last day, at `now`.
pub(crate) fn overview_of(rows: &[Rollup], now: i64) -> (Window, Window, BTreeMap<String, Timing>) {
    let minute = now.div_euclid(60_000);
    let minutes = window(rows, minute - MINUTES + 1, 1, MINUTES as usize);
    // Whole hours, the current one last.
    let hour_start = minute - minute.rem_euclid(60) - (HOURS - 1) * 60;
    let hours = window(rows, hour_start, 60, HOURS as usize);
    let mut last_hour: BTreeMap<String, Rollup> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.minute > minute - MINUTES) {
        last_hour.entry(r.queue.clone()).or_default().add(r);
    }
    let timing = last_hour
        .into_iter()
        .map(|(q, r)| {
            let t = Timing {
                tries: r.tries(),
                run_p50_ms: Rollup::quantile(&r.run, 0.5),
                run_p95_ms: Rollup::quantile(&r.run, 0.95),
                wait_p50_ms: Rollup::quantile(&r.wait, 0.5),
                wait_p95_ms: Rollup::quantile(&r.wait, 0.95),
            };
            (q, t)
        })
        .collect();
    (minutes, hours, timing)
}

/// The queue file's size, its WAL's and the free disk beside them; `None`
/// for a store that is not a file.
pub(crate) fn file_sizes(store: &Store) -> Option<(u64, u64, Option<u64>)> {
    let path = store.path()?;
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    Some((
        size(path),
        size(std::path::Path::new(&wal)),
        jobd::store::free_bytes(path),
    ))
}

/// `GET /api/v1/overview`: throughput per minute for the last hour and per
/// hour for the last day (per queue and in total), run time and queue wait
/// per queue over the last hour, the counts per queue and state, and the
/// system's health.
#[utoipa::path(get, path = "/overview", tag = "console", responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody)))]
pub(super) async fn overview(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
    let store = s.store.clone();
    let (rows, stats, now) = blocking(move || {
        let now = store.clock().now_ms();
        let since = now.div_euclid(60_000) - HOURS * 60;
        Ok((store.rollups(since)?, store.stats_recent()?, now))
    })
    .await?;
    let (minutes, hours, timing) = overview_of(&rows, now);
    let mut health = json!({
        "backend": if s.store.sqlite().is_some() { "sqlite" } else { "postgres" },
        "live_workers": stats.live_workers,
        "scheduler": if s.scheduler { "running" } else { "not in this process" },
    });
    if let Some((file, wal, free)) = file_sizes(&s.store) {
        health["queue_file_bytes"] = json!(file);
        health["wal_bytes"] = json!(wal);
        health["free_disk_bytes"] = json!(free);
    }
    for (name, check) in s.checks.iter() {
        let check = check.clone();
        let answer = tokio::task::spawn_blocking(move || check())
            .await
            .unwrap_or_else(|e| Err(format!("the check did not run: {e}")));
        health[name] = match answer {
            Ok(()) => json!("ok"),
            Err(e) => json!({ "error": e }),
        };
    }
    Ok(Json(json!({
        "now": now,
        "minutes": minutes,
        "hours": hours,
        "timing": timing,
        "queues": stats.queues,
        "health": health,
    })))
}

/// `GET /api/v1/workers`: every live worker, in-process and remote.
#[utoipa::path(get, path = "/workers", tag = "console", responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody)))]
pub(super) async fn workers(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
    let store = s.store.clone();
    let (workers, now) = blocking(move || Ok((store.workers()?, store.clock().now_ms()))).await?;
    Ok(Json(json!({ "now": now, "workers": workers })))
}

/// `GET /api/v1/whoami`: the token's name and role (the console hides
/// what the role may not do).
#[utoipa::path(get, path = "/whoami", tag = "console", responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody)))]
pub(super) async fn whoami(Extension(caller): Extension<Caller>) -> Json<Value> {
    Json(json!({ "name": caller.name, "role": caller.role.as_str() }))
}

/// `DELETE /api/v1/jobs/{id}`: a waiting or finished job, with its tries
/// and progress (a running one is refused: cancel it first).
#[utoipa::path(delete, path = "/jobs/{id}", tag = "jobs", params(("id" = i64, Path, description = "the job")), responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody), (status = 404, description = "no such job", body = ErrorBody), (status = 409, description = "not in this state", body = ErrorBody)))]
pub(super) async fn delete_job(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = job_id(&id)?;
    let state = blocking(move || s.store.delete(id)).await?;
    Ok(Json(
        json!({ "id": id, "deleted": true, "state": state.as_str() }),
    ))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ScheduleParams {
    /// Recent fires to list (default 20, at most 1000).
    fires: Option<usize>,
    /// Next fires to list (default 5, at most 100).
    next: Option<usize>,
}

/// `GET /api/v1/schedules/{name}`: the schedule, its next fires and its
/// recent ones.
#[utoipa::path(get, path = "/schedules/{name}", tag = "schedules", params(("name" = String, Path, description = "the schedule"), ScheduleParams), responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody), (status = 404, description = "no such schedule", body = ErrorBody)))]
pub(super) async fn get_schedule(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    params: Result<Query<ScheduleParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let p = query(params)?;
    let (fires, next) = (p.fires.unwrap_or(20), p.next.unwrap_or(5));
    if !(1..=1000).contains(&fires) || !(1..=100).contains(&next) {
        return Err(ApiError::bad_request(
            "fires is 1 to 1000 and next 1 to 100",
        ));
    }
    let store = s.store.clone();
    let (info, recent, now) = blocking(move || {
        let info = store.schedule(&name)?;
        let recent = store.schedule_fires(&name, fires)?;
        Ok((info, recent, store.clock().now_ms()))
    })
    .await?;
    let upcoming = match Timetable::new(&info.when, &info.timezone) {
        Ok(t) if info.enabled => t.upcoming(now, next),
        _ => Vec::new(),
    };
    let mut v = serde_json::to_value(&info).unwrap_or_default();
    v["next_fires"] = json!(upcoming);
    v["recent_fires"] = json!(recent);
    Ok(Json(v))
}

/// `PUT /api/v1/schedules/{name}`: replace the schedule with a
/// [`ScheduleSpec`] of the same name (its fired ticks stay).
#[utoipa::path(put, path = "/schedules/{name}", tag = "schedules", params(("name" = String, Path, description = "the schedule")), request_body(content = serde_json::Value, description = "JSON"), responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody), (status = 404, description = "no such schedule", body = ErrorBody)))]
pub(super) async fn replace_schedule(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let spec: ScheduleSpec = json_body(body)?;
    if spec.name != name {
        return Err(ApiError::bad_request(format!(
            "the body names schedule {:?}, the path {name:?}; a schedule is not renamed",
            spec.name
        )));
    }
    let schedule = spec.into_new_schedule().map_err(ApiError::from)?;
    let info = blocking(move || {
        s.store.schedule(&name)?;
        if let Some(catalog) = &s.catalog {
            catalog.checker(&s.store).check_schedule(&schedule)?;
        }
        s.store.replace_schedule(&schedule)
    })
    .await?;
    Ok(Json(serde_json::to_value(info).unwrap_or_default()))
}

/// `POST /api/v1/schedules/{name}/pause|resume|run`
#[utoipa::path(post, path = "/schedules/{name}/{action}", tag = "schedules", params(("name" = String, Path, description = "the schedule"), ("action" = String, Path, description = "pause, resume or run")), responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody), (status = 404, description = "no such schedule or action", body = ErrorBody)))]
pub(super) async fn schedule_action(
    State(s): State<ApiState>,
    Path((name, action)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let store = s.store.clone();
    let n = name.clone();
    match action.as_str() {
        "pause" => {
            blocking(move || store.pause_schedule(&n)).await?;
            Ok((
                StatusCode::OK,
                Json(json!({ "name": name, "enabled": false })),
            ))
        }
        "resume" => {
            blocking(move || store.resume_schedule(&n)).await?;
            Ok((
                StatusCode::OK,
                Json(json!({ "name": name, "enabled": true })),
            ))
        }
        "run" => {
            let id = blocking(move || store.run_schedule_now(&n)).await?;
            Ok((
                StatusCode::CREATED,
                Json(json!({ "name": name, "job_id": id })),
            ))
        }
        other => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no schedule action {other:?}; use pause, resume or run"),
        )),
    }
}
