//! The worker protocol: workers in any language claim jobs over HTTP,
//! heartbeat them, report progress and end them — every call about a job
//! fenced by the lease token its claim handed out (a stale token is a 409
//! and changes nothing).  Remote workers are registered like in-process
//! ones, under `<token name>/<worker name>`; their jobs are reaped when
//! their heartbeats stop, and a try past its timeout cannot complete.
//!
//! * `POST /api/v1/worker/claim` — up to `n` jobs of `queues`, with `ack`s
//!   of finished tries first, one transaction; `wait` long-polls.
//! * `POST /api/v1/worker/ack` — many tries ended in one transaction.
//! * `POST /api/v1/worker/heartbeat` — every held try's lease extended;
//!   the answer says which to stop (cancelled, timed out) and which are lost.
//! * `POST /api/v1/worker/stop` — the worker leaves the registry.
//! * `POST /api/v1/jobs/{id}/heartbeat|progress|complete|fail|release` —
//!   one try at a time, for clients that want no batching.

use std::time::{Duration, Instant};

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::api::{blocking, job_id, json_body};
use crate::{ApiError, ApiResult, ApiState, Caller, ErrorBody};
use jobd::clock::Millis;
use jobd::store::{Ack, AckOutcome, ClaimedJob, JobId, Progress};

/// Most jobs one claim hands out.
pub const MAX_CLAIM: usize = 1000;
/// Shortest and longest lease a remote worker may ask for.
pub const MIN_LEASE: Duration = Duration::from_secs(1);
pub const MAX_LEASE: Duration = Duration::from_secs(3600);
/// Longest long-poll (below the server's 60 s answer limit).
pub const MAX_WAIT: Duration = Duration::from_secs(50);
/// Largest result a completion may store, in bytes of JSON.
pub const MAX_RESULT_BYTES: usize = 256 * 1024;
/// Most tries one acknowledgement (or heartbeat) may name.
pub const MAX_BATCH: usize = 1000;

/// A duration as a number of seconds or a humantime string (`"30s"`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Secs(pub Duration);

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secs, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) if (0.0..1e9).contains(&n) => Ok(Secs(Duration::from_secs_f64(n))),
            Raw::Number(n) => Err(serde::de::Error::custom(format!(
                "{n} is not a number of seconds"
            ))),
            Raw::Text(t) => humantime::parse_duration(&t).map(Secs).map_err(|e| {
                serde::de::Error::custom(format!("{t:?} is not a duration (\"30s\", \"5m\"): {e}"))
            }),
        }
    }
}

/// A lease token: a string (JavaScript numbers cannot hold 64 bits) or an
/// integer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Token(pub i64);

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Token, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Token(n)),
            Raw::Text(t) => t.parse().map(Token).map_err(|_| {
                serde::de::Error::custom(format!("lease token {t:?} is not a token from a claim"))
            }),
        }
    }
}

fn check_lease(lease: Duration) -> ApiResult<Duration> {
    if lease < MIN_LEASE || lease > MAX_LEASE {
        return Err(ApiError::bad_request(format!(
            "lease of {} is out of range: from {} to {}",
            humantime::format_duration(lease),
            humantime::format_duration(MIN_LEASE),
            humantime::format_duration(MAX_LEASE)
        )));
    }
    Ok(lease)
}

/// One try ended, as a worker says it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AckEntry {
    id: JobId,
    #[schema(value_type = String, example = "5764607523034234881")]
    token: Token,
    outcome: AckKind,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    result: Option<Box<RawValue>>,
    error: Option<String>,
    #[serde(default = "yes")]
    retryable: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum AckKind {
    Complete,
    Fail,
    Release,
}

/// Longest error message kept from a failed try.
const MAX_ERROR_BYTES: usize = 16 * 1024;

impl AckEntry {
    fn into_ack(self) -> Result<(JobId, i64, Ack), String> {
        let ack = match self.outcome {
            AckKind::Complete => {
                if self.error.is_some() {
                    return Err("a completion has no \"error\"".into());
                }
                let result = self.result.map(|r| r.get().to_string());
                if let Some(r) = &result {
                    if r.len() > MAX_RESULT_BYTES {
                        return Err(format!(
                            "the result is {} bytes of JSON; the limit is {MAX_RESULT_BYTES}",
                            r.len()
                        ));
                    }
                }
                // `null` is no result (SQL NULL), like an in-process handler's.
                Ack::Complete {
                    result: result.filter(|r| r != "null"),
                }
            }
            AckKind::Fail => {
                if self.result.is_some() {
                    return Err("a failure has no \"result\"".into());
                }
                let mut error = self.error.unwrap_or_else(|| "failed (no message)".into());
                if error.len() > MAX_ERROR_BYTES {
                    let mut cut = MAX_ERROR_BYTES;
                    while !error.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    error.truncate(cut);
                    error.push_str(" […]");
                }
                Ack::Fail {
                    error,
                    retryable: self.retryable,
                }
            }
            AckKind::Release => {
                if self.result.is_some() || self.error.is_some() {
                    return Err("a release has no \"result\" or \"error\"".into());
                }
                Ack::Release
            }
        };
        Ok((self.id, self.token.0, ack))
    }
}

fn acks_of(entries: Vec<AckEntry>) -> ApiResult<Vec<(JobId, i64, Ack)>> {
    if entries.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "{} acknowledgements in one call; at most {MAX_BATCH}",
            entries.len()
        )));
    }
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            e.into_ack()
                .map_err(|m| ApiError::bad_request(format!("ack #{i}: {m}")))
        })
        .collect()
}

/// Each acknowledged try's outcome, in order.
fn outcomes_json(acks: &[(JobId, i64, Ack)], outcomes: &[AckOutcome]) -> Value {
    let list: Vec<Value> = acks
        .iter()
        .zip(outcomes)
        .map(|((id, _, _), o)| {
            let mut v = serde_json::to_value(o).unwrap_or_default();
            v["id"] = json!(id);
            v
        })
        .collect();
    Value::Array(list)
}

/// `POST /api/v1/worker/claim`
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClaimRequest {
    worker: String,
    queues: Vec<String>,
    /// The kinds this worker runs (default: any kind of its queues).
    kinds: Option<Vec<String>>,
    #[serde(default = "one")]
    n: usize,
    #[schema(value_type = Option<f64>)]
    lease: Option<Secs>,
    #[schema(value_type = Option<f64>)]
    wait: Option<Secs>,
    #[serde(default)]
    ack: Vec<AckEntry>,
    host: Option<String>,
    pid: Option<u32>,
}

fn one() -> usize {
    1
}

/// The lease a claim gets when it names none.
const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// A claimed job as a worker gets it; the payload goes out as the JSON
/// text it was stored as.
#[derive(serde::Serialize)]
struct JobOut<'a> {
    id: JobId,
    queue: &'a str,
    kind: &'a str,
    payload: &'a RawValue,
    attempt: i64,
    max_attempts: i64,
    tenant: Option<&'a str>,
    token: String,
    lease_expires_at: Millis,
    /// When the try times out (the job's timeout from now), if it has one.
    deadline: Option<Millis>,
}

fn jobs_json(jobs: &[ClaimedJob], now: Millis) -> ApiResult<Vec<Box<RawValue>>> {
    jobs.iter()
        .map(|j| {
            let payload: &RawValue = serde_json::from_str(&j.payload).map_err(|e| {
                tracing::error!(job_id = j.id, error = %e, "stored payload is not JSON");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            })?;
            let out = JobOut {
                id: j.id,
                queue: &j.queue,
                kind: &j.kind,
                payload,
                attempt: j.attempt,
                max_attempts: j.attempt_limit,
                tenant: j.tenant.as_deref(),
                token: j.lease_token.to_string(),
                lease_expires_at: j.lease_expires_at,
                deadline: j
                    .timeout
                    .map(|t| now.saturating_add(t.as_millis().min(i64::MAX as u128) as i64)),
            };
            serde_json::value::to_raw_value(&out)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        })
        .collect()
}

/// The registered name of a caller's worker: its token's name first.
fn worker_id(caller: &Caller, worker: &str) -> ApiResult<String> {
    jobd::store::validate_name("worker", worker)?;
    Ok(format!("{}/{worker}", caller.name))
}

#[utoipa::path(post, path = "/worker/claim", tag = "worker protocol", request_body(content = ClaimRequest, description = "JSON"), responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody)))]
pub(crate) async fn claim(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let req: ClaimRequest = json_body(body)?;
    let worker = worker_id(&caller, &req.worker)?;
    if req.n == 0 || req.n > MAX_CLAIM {
        return Err(ApiError::bad_request(format!(
            "n = {} is out of range: a claim asks for 1 to {MAX_CLAIM} jobs",
            req.n
        )));
    }
    let lease = check_lease(req.lease.map_or(DEFAULT_LEASE, |l| l.0))?;
    let wait = req.wait.map_or(Duration::ZERO, |w| w.0);
    if wait > MAX_WAIT {
        return Err(ApiError::bad_request(format!(
            "wait of {} is longer than {}",
            humantime::format_duration(wait),
            humantime::format_duration(MAX_WAIT)
        )));
    }
    if req.queues.is_empty() {
        return Err(ApiError::bad_request("a claim names at least one queue"));
    }
    for q in &req.queues {
        jobd::store::validate_name("queue", q)?;
    }
    let kinds = req.kinds.clone();
    for k in kinds.iter().flatten() {
        jobd::store::validate_name("kind", k)?;
    }
    s.check_queues(&req.queues).await?;
    let acks = acks_of(req.ack)?;
    s.register(
        &worker,
        req.host.as_deref(),
        req.pid,
        &req.queues,
        kinds.as_deref(),
    )
    .await?;

    let give_up = Instant::now() + wait;
    let mut acks = Some(acks);
    let mut outcomes_out = Value::Array(Vec::new());
    // Taken before the first look: a commit between a claim and the wait
    // wakes the wait.
    let mut commits = (wait > Duration::ZERO).then(|| s.commits.wait());
    let mut work = s.store.watch_work();
    let mut first = true;
    loop {
        work.mark_unchanged();
        if !std::mem::take(&mut first) {
            // Woken by some commit: a read says whether claiming could find
            // anything, before a write transaction does.
            let (st, qs) = (s.store.clone(), req.queues.clone());
            let worth = blocking(move || {
                let qs: Vec<&str> = qs.iter().map(String::as_str).collect();
                st.claimable(&qs)
            })
            .await?;
            if !worth && Instant::now() < give_up {
                wait_for_work(&s, commits.as_mut(), &mut work, give_up).await?;
                continue;
            }
        }
        let (st, w, qs, n, now_acks) = (
            s.store.clone(),
            worker.clone(),
            req.queues.clone(),
            req.n,
            acks.take().unwrap_or_default(),
        );
        let (now_acks, outcomes, jobs, now) = blocking(move || {
            let claims: Vec<(&str, usize)> = qs.iter().map(|q| (q.as_str(), n)).collect();
            let now = st.clock().now_ms();
            let (outcomes, jobs) = st.ack_and_claim(&now_acks, &w, &claims, n, lease)?;
            Ok((now_acks, outcomes, jobs, now))
        })
        .await?;
        if !now_acks.is_empty() {
            outcomes_out = outcomes_json(&now_acks, &outcomes);
        }
        let jobs = s.keep_runnable(&worker, jobs, kinds.as_deref()).await?;
        if !jobs.is_empty() || Instant::now() >= give_up {
            return Ok(Json(json!({
                "worker": worker,
                "jobs": jobs_json(&jobs, now)?,
                "acks": outcomes_out,
            })));
        }
        wait_for_work(&s, commits.as_mut(), &mut work, give_up).await?;
    }
}

/// Until a commit, new work in this process, a delayed job falling due, or
/// the end of the wait.
async fn wait_for_work(
    s: &ApiState,
    commits: Option<&mut jobd::worker::CommitWait>,
    work: &mut tokio::sync::watch::Receiver<u64>,
    give_up: Instant,
) -> ApiResult<()> {
    let st = s.store.clone();
    let next_due = blocking(move || st.next_run_at()).await?;
    let mut until = give_up;
    if let Some(due) = next_due {
        let in_ms = (due - s.store.clock().now_ms()).max(0) as u64;
        until = until.min(Instant::now() + Duration::from_millis(in_ms));
    }
    let commit = async {
        match commits {
            Some(c) => c.changed().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = commit => {}
        _ = work.changed() => {}
        _ = tokio::time::sleep_until(until.into()) => {}
    }
    Ok(())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AckRequest {
    worker: Option<String>,
    acks: Vec<AckEntry>,
}

/// `POST /api/v1/worker/ack`
#[utoipa::path(post, path = "/worker/ack", tag = "worker protocol", request_body(content = AckRequest, description = "JSON"), responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody)))]
pub(crate) async fn ack(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let req: AckRequest = json_body(body)?;
    if let Some(w) = &req.worker {
        worker_id(&caller, w)?;
    }
    let acks = acks_of(req.acks)?;
    let st = s.store.clone();
    let (acks, outcomes) = blocking(move || {
        let (outcomes, _) = st.ack_and_claim(&acks, "", &[], 0, Duration::ZERO)?;
        Ok((acks, outcomes))
    })
    .await?;
    Ok(Json(json!({ "acks": outcomes_json(&acks, &outcomes) })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Held {
    id: JobId,
    #[schema(value_type = String, example = "5764607523034234881")]
    token: Token,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeartbeatRequest {
    worker: String,
    #[schema(value_type = Option<f64>)]
    lease: Option<Secs>,
    #[serde(default)]
    jobs: Vec<Held>,
}

/// `POST /api/v1/worker/heartbeat`: the worker is alive; its held tries'
/// leases are extended.  `stop` lists the tries to stop (cancelled or past
/// their deadline), `lost` those no longer held.
#[utoipa::path(post, path = "/worker/heartbeat", tag = "worker protocol", request_body(content = HeartbeatRequest, description = "JSON"), responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody)))]
pub(crate) async fn worker_heartbeat(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let req: HeartbeatRequest = json_body(body)?;
    let worker = worker_id(&caller, &req.worker)?;
    let lease = check_lease(req.lease.map_or(DEFAULT_LEASE, |l| l.0))?;
    if req.jobs.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "{} jobs in one heartbeat; at most {MAX_BATCH}",
            req.jobs.len()
        )));
    }
    let held: Vec<(JobId, i64)> = req.jobs.iter().map(|h| (h.id, h.token.0)).collect();
    let st = s.store.clone();
    let (found, now) = blocking(move || {
        st.worker_heartbeat(&worker)?;
        let found = st.heartbeat_held(&held, lease)?;
        Ok((found, st.clock().now_ms()))
    })
    .await?;
    let mut stop = Vec::new();
    for t in &found {
        if t.cancel_requested {
            stop.push(json!({ "id": t.id, "reason": "cancel" }));
        } else if t.deadline.is_some_and(|d| d <= now) {
            stop.push(json!({ "id": t.id, "reason": "timeout" }));
        }
    }
    let lost: Vec<JobId> = req
        .jobs
        .iter()
        .map(|h| h.id)
        .filter(|id| !found.iter().any(|t| t.id == *id))
        .collect();
    Ok(Json(json!({ "stop": stop, "lost": lost })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StopRequest {
    worker: String,
}

/// `POST /api/v1/worker/stop`: a worker stopping leaves the registry (its
/// tries should be acknowledged or released first).
#[utoipa::path(post, path = "/worker/stop", tag = "worker protocol", request_body(content = StopRequest, description = "JSON"), responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody)))]
pub(crate) async fn worker_stop(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let req: StopRequest = json_body(body)?;
    let worker = worker_id(&caller, &req.worker)?;
    let st = s.store.clone();
    let w = worker.clone();
    blocking(move || st.deregister_worker(&w)).await?;
    s.registered
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&worker);
    Ok(Json(json!({ "worker": worker, "stopped": true })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobHeartbeat {
    #[schema(value_type = String, example = "5764607523034234881")]
    token: Token,
    #[schema(value_type = Option<f64>)]
    lease: Option<Secs>,
}

/// `POST /api/v1/jobs/{id}/heartbeat`
#[utoipa::path(post, path = "/jobs/{id}/heartbeat", tag = "worker protocol", params(("id" = i64, Path, description = "the job")), request_body(content = JobHeartbeat, description = "JSON"), responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody), (status = 409, description = "not in this state", body = ErrorBody)))]
pub(crate) async fn job_heartbeat(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let id = job_id(&id)?;
    let req: JobHeartbeat = json_body(body)?;
    let lease = check_lease(req.lease.map_or(DEFAULT_LEASE, |l| l.0))?;
    let st = s.store.clone();
    let token = req.token.0;
    let (found, now) = blocking(move || {
        let found = st.heartbeat_held(&[(id, token)], lease)?;
        Ok((found, st.clock().now_ms()))
    })
    .await?;
    let Some(t) = found.first() else {
        return Err(lease_lost(id));
    };
    let reason = if t.cancel_requested {
        Some("cancel")
    } else if t.deadline.is_some_and(|d| d <= now) {
        Some("timeout")
    } else {
        None
    };
    Ok(Json(json!({
        "id": id,
        "lease_expires_at": now.saturating_add(lease.as_millis() as i64),
        "stop": reason.is_some(),
        "reason": reason,
        "deadline": t.deadline,
    })))
}

fn lease_lost(id: JobId) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "job {id}: this lease token does not hold the job (its lease expired and it \
             went to another worker, it finished, or the token is wrong); nothing changed"
        ),
    )
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProgressRequest {
    #[schema(value_type = String, example = "5764607523034234881")]
    token: Token,
    percent: Option<f64>,
    stage: Option<String>,
    /// A JSON object of details (`{"completed": 3, "total": 5}`).
    #[schema(value_type = Option<Object>)]
    details: Option<Box<RawValue>>,
}

/// `POST /api/v1/jobs/{id}/progress`
#[utoipa::path(post, path = "/jobs/{id}/progress", tag = "worker protocol", params(("id" = i64, Path, description = "the job")), request_body(content = ProgressRequest, description = "JSON"), responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody), (status = 409, description = "not in this state", body = ErrorBody)))]
pub(crate) async fn job_progress(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let id = job_id(&id)?;
    let req: ProgressRequest = json_body(body)?;
    let detail = match req.details {
        Some(d) if !d.get().trim_start().starts_with('{') => {
            return Err(ApiError::bad_request(
                "details must be a JSON object, like {\"completed\": 3, \"total\": 5}",
            ))
        }
        Some(d) => Some(d.get().to_string()),
        None => None,
    };
    let progress = Progress {
        percent: req.percent,
        stage: req.stage,
        detail,
    };
    let st = s.store.clone();
    let token = req.token.0;
    blocking(move || st.set_progress(id, token, &progress))
        .await
        .map_err(|e| match e.status {
            StatusCode::CONFLICT => lease_lost(id),
            _ => e,
        })?;
    Ok(Json(json!({ "id": id, "stored": true })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EndRequest {
    #[schema(value_type = String, example = "5764607523034234881")]
    token: Token,
    #[schema(value_type = Option<Object>)]
    result: Option<Box<RawValue>>,
    error: Option<String>,
    #[serde(default = "yes")]
    retryable: bool,
}

/// `POST /api/v1/jobs/{id}/complete`: `{"token": …, "result": …}`
#[utoipa::path(post, path = "/jobs/{id}/complete", tag = "worker protocol", params(("id" = i64, Path, description = "the job")), request_body(content = EndRequest, description = "JSON"), responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody), (status = 409, description = "not in this state", body = ErrorBody)))]
pub(crate) async fn job_complete(
    state: State<ApiState>,
    id: Path<String>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    job_end(state, id, body, AckKind::Complete).await
}

/// `POST /api/v1/jobs/{id}/fail`: `{"token": …, "error": …, "retryable": true}`
#[utoipa::path(post, path = "/jobs/{id}/fail", tag = "worker protocol", params(("id" = i64, Path, description = "the job")), request_body(content = EndRequest, description = "JSON"), responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody), (status = 409, description = "not in this state", body = ErrorBody)))]
pub(crate) async fn job_fail(
    state: State<ApiState>,
    id: Path<String>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    job_end(state, id, body, AckKind::Fail).await
}

/// `POST /api/v1/jobs/{id}/release`: `{"token": …}`
#[utoipa::path(post, path = "/jobs/{id}/release", tag = "worker protocol", params(("id" = i64, Path, description = "the job")), request_body(content = EndRequest, description = "JSON"), responses((status = 200, description = "done", body = serde_json::Value), (status = 400, description = "bad input: says what was wrong", body = ErrorBody), (status = 401, description = "no or a wrong token", body = ErrorBody), (status = 403, description = "the token's role may not", body = ErrorBody), (status = 409, description = "not in this state", body = ErrorBody)))]
pub(crate) async fn job_release(
    state: State<ApiState>,
    id: Path<String>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    job_end(state, id, body, AckKind::Release).await
}

async fn job_end(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Result<axum::body::Bytes, BytesRejection>,
    outcome: AckKind,
) -> ApiResult<Json<Value>> {
    let id = job_id(&id)?;
    let req: EndRequest = json_body(body)?;
    let entry = AckEntry {
        id,
        token: req.token,
        outcome,
        result: req.result,
        error: req.error,
        retryable: req.retryable,
    };
    let ack = entry.into_ack().map_err(ApiError::bad_request)?;
    let st = s.store.clone();
    let outcome = blocking(move || {
        let (outcomes, _) = st.ack_and_claim(&[ack], "", &[], 0, Duration::ZERO)?;
        Ok(outcomes[0])
    })
    .await?;
    match outcome {
        AckOutcome::Lost => Err(lease_lost(id)),
        AckOutcome::TimedOut => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "job {id}: the try ran past its timeout, so it failed as timed out; \
                 the result was not kept"
            ),
        )),
        o => {
            let mut v = serde_json::to_value(o).unwrap_or_default();
            v["id"] = json!(id);
            Ok(Json(v))
        }
    }
}
