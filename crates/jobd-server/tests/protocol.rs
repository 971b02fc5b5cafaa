//! The worker protocol: every route's success, fencing by lease token (a
//! stale token is a 409 and changes nothing), roles (401, 403), bad input
//! (400, nothing changed), long polls woken by a commit, timeouts and
//! cancellation reaching a remote worker, its jobs reaped when it goes
//! quiet, and `GET /jobs/{id}?wait=`.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use axum::Router;
use jobd::clock::ManualClock;
use jobd::store::{JobState, NewJob, Role, StoreOptions};
use jobd::worker::Worker;
use jobd::Store;
use jobd_server::{router, ApiState};
use jobd_testkit::api::{call, error_of, ok, with_token, TOKEN};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const WORKER: &str = "worker-token-0123456789abcdef0123456789";
const OTHER_WORKER: &str = "other-worker-token-0123456789abcdef01234";
const PRODUCER: &str = "producer-token-0123456789abcdef0123456789";

struct Api {
    _dir: tempfile::TempDir,
    app: Router,
    store: Store,
    clock: Option<ManualClock>,
}

fn api() -> Api {
    build(None)
}

/// The API on a store whose time the test moves.
fn api_in_manual_time() -> Api {
    build(Some(ManualClock::new(1_700_000_000_000)))
}

fn build(clock: Option<ManualClock>) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let opts = match &clock {
        Some(c) => StoreOptions::default().clock(c.clone()),
        None => StoreOptions::default(),
    };
    let store = Store::open_with(dir.path().join("queue.db"), opts).unwrap();
    for (name, role, token) in [
        ("py", Role::Worker, WORKER),
        ("node", Role::Worker, OTHER_WORKER),
        ("flask", Role::Producer, PRODUCER),
    ] {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        store.add_api_token(name, role, &hash).unwrap();
    }
    // The daemon's own workers run `noop` on `q`; `email` is served only by
    // remote workers.
    let catalog = Worker::builder(store.clone())
        .handle_fn("noop", |_ctx, _p| async { Ok(Value::Null) })
        .queue("q", 1)
        .catalog();
    let state = ApiState::new(store.clone(), TOKEN)
        .unwrap()
        .catalog(catalog)
        .remote_queues(["email".to_string()]);
    Api {
        app: router(state),
        store,
        clock,
        _dir: dir,
    }
}

async fn post(app: &Router, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    with_token(app, token, Method::POST, path, Some(body)).await
}

fn enqueue(store: &Store, queue: &str, kind: &str) -> i64 {
    store
        .enqueue(&NewJob::new(queue, kind).payload(&json!({"to": "a@example.com"})))
        .unwrap()
}

async fn claim(app: &Router, body: Value) -> Vec<Value> {
    let (status, v) = post(app, WORKER, "/api/v1/worker/claim", body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["jobs"].as_array().unwrap().clone()
}

/// What a fenced call must not have touched: the job's state, tries,
/// progress, result and error.
fn snapshot(store: &Store, id: i64) -> Value {
    let j = store.get(id).unwrap();
    json!([
        j.state,
        j.attempts,
        j.progress,
        j.result,
        j.last_error,
        j.lease_expires_at,
        j.worker
    ])
}

#[tokio::test]
async fn a_remote_worker_claims_reports_progress_and_completes() {
    let a = api();
    let id = enqueue(&a.store, "email", "send_email");
    let jobs = claim(
        &a.app,
        json!({"worker": "host-1", "queues": ["email"], "n": 10, "lease": "30s", "host": "h", "pid": 7}),
    )
    .await;
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job["id"], id);
    assert_eq!(job["queue"], "email");
    assert_eq!(job["kind"], "send_email");
    assert_eq!(job["payload"], json!({"to": "a@example.com"}));
    assert_eq!(job["attempt"], 1);
    assert!(job["token"].is_string(), "tokens are strings: {job}");
    assert!(job["lease_expires_at"].as_i64().unwrap() > 0);
    let token = job["token"].clone();

    // Registered under its token's name, with its queues.
    let info = a.store.get(id).unwrap();
    assert_eq!(info.worker.as_deref(), Some("py/host-1"));
    assert!(a.store.live_work().unwrap().serves("email"));

    let (s, v) = post(
        &a.app,
        WORKER,
        &format!("/api/v1/jobs/{id}/progress"),
        json!({"token": token, "percent": 40, "stage": "sending", "details": {"completed": 3, "failed": 1, "total": 5}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = post(
        &a.app,
        WORKER,
        &format!("/api/v1/jobs/{id}/heartbeat"),
        json!({"token": token, "lease": 60}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["stop"], false);

    // The producer sees the progress, its details as an object.
    let (s, v) = with_token(
        &a.app,
        PRODUCER,
        Method::GET,
        &format!("/api/v1/jobs/{id}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["progress"]["percent"], 40.0);
    assert_eq!(v["progress"]["stage"], "sending");
    assert_eq!(
        v["progress"]["details"],
        json!({"completed": 3, "failed": 1, "total": 5})
    );

    let (s, v) = post(
        &a.app,
        WORKER,
        &format!("/api/v1/jobs/{id}/complete"),
        json!({"token": token, "result": {"sent": true}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["outcome"], "completed");
    let info = a.store.get(id).unwrap();
    assert_eq!(info.state, JobState::Succeeded);
    assert_eq!(info.result, Some(json!({"sent": true})));

    // The worker leaves the registry.
    let (s, _) = post(
        &a.app,
        WORKER,
        "/api/v1/worker/stop",
        json!({"worker": "host-1"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(!a.store.live_work().unwrap().serves("email"));
}

#[tokio::test]
async fn fail_and_release_end_the_try_as_asked() {
    let a = api();
    let retry = a
        .store
        .enqueue(&NewJob::new("email", "send_email").max_attempts(3))
        .unwrap();
    let dead = a
        .store
        .enqueue(&NewJob::new("email", "send_email").max_attempts(3))
        .unwrap();
    let back = a
        .store
        .enqueue(&NewJob::new("email", "send_email"))
        .unwrap();
    let jobs = claim(&a.app, json!({"worker": "w", "queues": ["email"], "n": 3})).await;
    let token = |id: i64| jobs.iter().find(|j| j["id"] == id).unwrap()["token"].clone();
    let (s, v) = post(
        &a.app,
        WORKER,
        &format!("/api/v1/jobs/{retry}/fail"),
        json!({"token": token(retry), "error": "SMTP 451"}),
    )
    .await;
    assert_eq!(
        (s, v["outcome"].as_str()),
        (StatusCode::OK, Some("retrying")),
        "{v}"
    );
    let (s, v) = post(
        &a.app,
        WORKER,
        &format!("/api/v1/jobs/{dead}/fail"),
        json!({"token": token(dead), "error": "no such mailbox", "retryable": false}),
    )
    .await;
    assert_eq!(
        (s, v["outcome"].as_str()),
        (StatusCode::OK, Some("dead")),
        "{v}"
    );
    let (s, v) = post(
        &a.app,
        WORKER,
        &format!("/api/v1/jobs/{back}/release"),
        json!({"token": token(back)}),
    )
    .await;
    assert_eq!(
        (s, v["outcome"].as_str()),
        (StatusCode::OK, Some("released")),
        "{v}"
    );
    assert_eq!(a.store.get(retry).unwrap().state, JobState::Scheduled);
    assert_eq!(
        a.store.get(retry).unwrap().last_error.as_deref(),
        Some("SMTP 451")
    );
    assert_eq!(a.store.get(dead).unwrap().state, JobState::Dead);
    let b = a.store.get(back).unwrap();
    assert_eq!((b.state, b.attempts), (JobState::Ready, 1));
}

#[tokio::test]
async fn a_stale_token_is_a_409_and_changes_nothing() {
    let a = api();
    let id = enqueue(&a.store, "email", "send_email");
    let jobs = claim(&a.app, json!({"worker": "w", "queues": ["email"]})).await;
    let token: i64 = jobs[0]["token"].as_str().unwrap().parse().unwrap();
    let stale = (token ^ 1).to_string();
    let before = snapshot(&a.store, id);
    for (action, body) in [
        ("heartbeat", json!({"token": stale})),
        ("progress", json!({"token": stale, "percent": 50})),
        ("complete", json!({"token": stale, "result": 1})),
        ("fail", json!({"token": stale, "error": "x"})),
        ("release", json!({"token": stale})),
    ] {
        let (s, v) = post(&a.app, WORKER, &format!("/api/v1/jobs/{id}/{action}"), body).await;
        assert_eq!(s, StatusCode::CONFLICT, "{action}: {v}");
        assert!(
            error_of(&v).contains("does not hold the job"),
            "{action}: {v}"
        );
        assert_eq!(snapshot(&a.store, id), before, "{action} changed the job");
    }
    // In a batch, a stale entry is reported lost; the others go through.
    let other = enqueue(&a.store, "email", "send_email");
    let more = claim(&a.app, json!({"worker": "w", "queues": ["email"]})).await;
    let (s, v) = post(
        &a.app,
        WORKER,
        "/api/v1/worker/ack",
        json!({"acks": [
            {"id": id, "token": stale, "outcome": "complete"},
            {"id": other, "token": more[0]["token"], "outcome": "complete", "result": [1, 2]},
        ]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["acks"][0]["outcome"], "lost");
    assert_eq!(v["acks"][1]["outcome"], "completed");
    assert_eq!(snapshot(&a.store, id), before);
    // The heartbeat of a batch names the lost ones.
    let (s, v) = post(
        &a.app,
        WORKER,
        "/api/v1/worker/heartbeat",
        json!({"worker": "w", "jobs": [{"id": id, "token": token.to_string()}, {"id": other, "token": stale}]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["lost"], json!([other]));
    assert_eq!(v["stop"], json!([]));
}

#[tokio::test]
async fn acknowledgements_and_the_next_claim_go_in_one_call() {
    let a = api();
    let ids: Vec<i64> = (0..5)
        .map(|_| enqueue(&a.store, "email", "send_email"))
        .collect();
    let jobs = claim(&a.app, json!({"worker": "w", "queues": ["email"], "n": 3})).await;
    assert_eq!(jobs.len(), 3);
    let acks: Vec<Value> = jobs
        .iter()
        .map(|j| json!({"id": j["id"], "token": j["token"], "outcome": "complete", "result": {"n": j["id"]}}))
        .collect();
    let (s, v) = post(
        &a.app,
        WORKER,
        "/api/v1/worker/claim",
        json!({"worker": "w", "queues": ["email"], "n": 3, "ack": acks}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["acks"].as_array().unwrap().len(), 3);
    assert!(
        v["acks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["outcome"] == "completed"),
        "{v}"
    );
    assert_eq!(v["jobs"].as_array().unwrap().len(), 2);
    for id in &ids[..3] {
        assert_eq!(a.store.get(*id).unwrap().state, JobState::Succeeded);
    }

    // One malformed entry: the whole batch is refused, nothing changed.
    let rest = v["jobs"].as_array().unwrap().clone();
    let before: Vec<Value> = ids.iter().map(|id| snapshot(&a.store, *id)).collect();
    for bad in [
        json!({"id": rest[1]["id"], "token": rest[1]["token"], "outcome": "explode"}),
        json!({"id": rest[1]["id"], "token": "not-a-token", "outcome": "complete"}),
        json!({"id": rest[1]["id"], "token": rest[1]["token"], "outcome": "complete", "error": "both"}),
        json!({"id": rest[1]["id"], "token": rest[1]["token"], "outcome": "complete", "result": "x".repeat(300 * 1024)}),
        json!({"token": rest[1]["token"], "outcome": "complete"}),
    ] {
        let batch = json!({"acks": [
            {"id": rest[0]["id"], "token": rest[0]["token"], "outcome": "complete"},
            bad,
        ]});
        let (s, v) = post(&a.app, WORKER, "/api/v1/worker/ack", batch).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(!error_of(&v).is_empty());
        let after: Vec<Value> = ids.iter().map(|id| snapshot(&a.store, *id)).collect();
        assert_eq!(after, before, "a refused batch changed something");
    }
    // A body that is not JSON at all.
    let (s, v) = call(
        &a.app,
        Method::POST,
        "/api/v1/worker/ack",
        Some(WORKER),
        Some("{\"acks\": [".into()),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test]
async fn bad_claims_are_400s_that_say_what_is_wrong() {
    let a = api();
    let id = enqueue(&a.store, "email", "send_email");
    let before = snapshot(&a.store, id);
    for (body, says) in [
        (
            json!({"worker": "w", "queues": ["emial"]}),
            "unknown queue \"emial\"",
        ),
        (
            json!({"worker": "w", "queues": ["email"], "lease": 0}),
            "lease of 0s is out of range",
        ),
        (
            json!({"worker": "w", "queues": ["email"], "lease": "1day"}),
            "out of range",
        ),
        (
            json!({"worker": "w", "queues": ["email"], "n": 0}),
            "n = 0 is out of range",
        ),
        (
            json!({"worker": "w", "queues": ["email"], "n": 100000}),
            "n = 100000 is out of range",
        ),
        (
            json!({"worker": "w", "queues": ["email"], "wait": "5m"}),
            "longer than",
        ),
        (json!({"worker": "w", "queues": []}), "at least one queue"),
        (
            json!({"worker": "bad name!", "queues": ["email"]}),
            "invalid worker",
        ),
        (
            json!({"worker": "w", "queues": ["email"], "lease": "soon"}),
            "not a duration",
        ),
        (
            json!({"worker": "w", "queues": ["email"], "color": "red"}),
            "unknown field",
        ),
    ] {
        let (s, v) = post(&a.app, WORKER, "/api/v1/worker/claim", body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(error_of(&v).contains(says), "{body}: {v}");
    }
    assert_eq!(
        snapshot(&a.store, id),
        before,
        "a refused claim changed the job"
    );
    // Bad progress.
    let jobs = claim(&a.app, json!({"worker": "w", "queues": ["email"]})).await;
    let t = &jobs[0]["token"];
    for (body, says) in [
        (json!({"token": t, "percent": 140}), "not between 0 and 100"),
        (
            json!({"token": t, "details": [1, 2]}),
            "details must be a JSON object",
        ),
    ] {
        let (s, v) = post(
            &a.app,
            WORKER,
            &format!("/api/v1/jobs/{id}/progress"),
            body.clone(),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(error_of(&v).contains(says), "{body}: {v}");
    }
    let (s, v) = post(
        &a.app,
        WORKER,
        &format!("/api/v1/jobs/{id}/complete"),
        json!({"token": t, "result": "x".repeat(300 * 1024)}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(error_of(&v).contains("the limit is"), "{v}");
    assert_eq!(a.store.get(id).unwrap().state, JobState::Running);
}

#[tokio::test]
async fn tokens_have_roles() {
    let a = api();
    let id = enqueue(&a.store, "email", "send_email");
    // No token, or one nobody issued.
    for token in [None, Some("nobody-issued-this-token-0123456789abcdef")] {
        let (s, _) = call(
            &a.app,
            Method::POST,
            "/api/v1/worker/claim",
            token,
            Some(json!({"worker": "w", "queues": ["email"]}).to_string()),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    // A worker token: no enqueue, no listing, no queue management, no
    // cancel, no schedules.
    for (method, path, body) in [
        (
            Method::POST,
            "/api/v1/jobs",
            Some(json!({"queue": "q", "kind": "noop"})),
        ),
        (Method::GET, "/api/v1/jobs", None),
        (Method::POST, "/api/v1/queues/email/pause", None),
        (Method::POST, &*format!("/api/v1/jobs/{id}/cancel"), None),
        (Method::GET, "/api/v1/schedules", None),
    ] {
        let (s, v) = with_token(&a.app, WORKER, method.clone(), path, body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path}: {v}");
        assert!(error_of(&v).contains("role (worker)"), "{v}");
    }
    assert!(!a
        .store
        .stats()
        .unwrap()
        .queue("email")
        .is_some_and(|q| q.paused));
    // A producer: enqueue and read, but not the protocol or admin routes.
    let (s, v) = with_token(
        &a.app,
        PRODUCER,
        Method::POST,
        "/api/v1/jobs",
        Some(json!({"queue": "q", "kind": "noop"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = with_token(
        &a.app,
        PRODUCER,
        Method::GET,
        "/api/v1/jobs?queue=email",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    for (path, body) in [
        (
            "/api/v1/worker/claim",
            json!({"worker": "w", "queues": ["email"]}),
        ),
        ("/api/v1/queues/email/pause", json!({})),
    ] {
        let (s, v) = post(&a.app, PRODUCER, path, body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {v}");
    }
    assert_eq!(a.store.get(id).unwrap().state, JobState::Ready);
    // A worker token reads the jobs its workers ran, not others'.
    let jobs = claim(&a.app, json!({"worker": "w", "queues": ["email"]})).await;
    assert_eq!(jobs[0]["id"], id);
    let (s, v) = with_token(
        &a.app,
        WORKER,
        Method::GET,
        &format!("/api/v1/jobs/{id}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = with_token(
        &a.app,
        OTHER_WORKER,
        Method::GET,
        &format!("/api/v1/jobs/{id}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v.get("payload").is_none());
    // ... nor complete them with another token's worker name: the token is the fence.
    let (s, _) = post(
        &a.app,
        OTHER_WORKER,
        &format!("/api/v1/jobs/{id}/complete"),
        json!({"token": "1"}),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    // The admin token does everything.
    let (s, _) = ok(&a.app, Method::POST, "/api/v1/queues/email/pause", None).await;
    assert_eq!(s, StatusCode::OK);
    // A revoked token stops working (within the token cache's 2 s).
    a.store.revoke_api_token("flask").unwrap();
    let fresh = router(ApiState::new(a.store.clone(), TOKEN).unwrap());
    let (s, _) = with_token(&fresh, PRODUCER, Method::GET, "/api/v1/jobs", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_long_poll_answers_within_50_ms_of_an_enqueue() {
    let a = api();
    // Through this process's API (the in-process wake-up), then from
    // another connection to the file, as another process would (the
    // commit watcher).
    let other = Store::open(a.store.path().unwrap()).unwrap();
    for round in 0..2 {
        let app = a.app.clone();
        let poll = tokio::spawn(async move {
            let (s, v) = post(
                &app,
                WORKER,
                "/api/v1/worker/claim",
                json!({"worker": "w", "queues": ["email"], "wait": 10}),
            )
            .await;
            (s, v, Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !poll.is_finished(),
            "the claim answered before any job was there"
        );
        let enqueued = Instant::now();
        if round == 0 {
            let (s, v) = ok(
                &a.app,
                Method::POST,
                "/api/v1/jobs",
                Some(json!({"queue": "email", "kind": "send_email"})),
            )
            .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
        } else {
            other.enqueue(&NewJob::new("email", "send_email")).unwrap();
        }
        let (s, v, answered) = poll.await.unwrap();
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["jobs"].as_array().unwrap().len(), 1, "{v}");
        let took = answered - enqueued;
        assert!(
            took < Duration::from_millis(50),
            "round {round}: answered {took:?} after the enqueue"
        );
    }
    // With nothing to claim, the poll answers empty at the end of its wait.
    let started = Instant::now();
    let jobs = claim(
        &a.app,
        json!({"worker": "w", "queues": ["email"], "wait": 0.3}),
    )
    .await;
    assert!(jobs.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_remote_try_past_its_timeout_is_told_to_stop_and_cannot_complete() {
    let a = api_in_manual_time();
    let clock = a.clock.clone().unwrap();
    let id = a
        .store
        .enqueue(
            &NewJob::new("email", "send_email")
                .timeout(Duration::from_secs(10))
                .max_attempts(3),
        )
        .unwrap();
    let jobs = claim(
        &a.app,
        json!({"worker": "w", "queues": ["email"], "lease": 60}),
    )
    .await;
    assert_eq!(jobs[0]["deadline"], json!(1_700_000_000_000i64 + 10_000));
    let token = jobs[0]["token"].clone();
    clock.advance(Duration::from_secs(11));
    let (s, v) = post(
        &a.app,
        WORKER,
        &format!("/api/v1/jobs/{id}/heartbeat"),
        json!({"token": token}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (v["stop"].as_bool(), v["reason"].as_str()),
        (Some(true), Some("timeout")),
        "{v}"
    );
    let (s, v) = post(
        &a.app,
        WORKER,
        "/api/v1/worker/heartbeat",
        json!({"worker": "w", "jobs": [{"id": id, "token": token}]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["stop"], json!([{"id": id, "reason": "timeout"}]));
    // The late completion is refused; the try failed as timed out.
    let (s, v) = post(
        &a.app,
        WORKER,
        &format!("/api/v1/jobs/{id}/complete"),
        json!({"token": token, "result": 1}),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(error_of(&v).contains("ran past its timeout"), "{v}");
    let j = a.store.get(id).unwrap();
    assert_eq!(j.state, JobState::Scheduled);
    assert_eq!(j.result, None);
    assert!(j.last_error.unwrap().contains("timed out after 10s"));

    // A worker that says nothing: the reap fails the try once it is past
    // its deadline by the grace.
    clock.advance(Duration::from_secs(60));
    a.store.reap().unwrap();
    let jobs = claim(
        &a.app,
        json!({"worker": "w", "queues": ["email"], "lease": 600}),
    )
    .await;
    assert_eq!(jobs[0]["attempt"], 2);
    clock.advance(Duration::from_secs(10) + jobd::store::OVERDUE_GRACE);
    let report = a.store.reap().unwrap();
    assert_eq!(report.timed_out, vec![id]);
    let j = a.store.get(id).unwrap();
    assert_eq!(j.state, JobState::Scheduled);
    assert!(j.last_error.unwrap().contains("its worker did not end it"));
}

#[tokio::test]
async fn cancellation_reaches_a_remote_worker_and_a_quiet_one_loses_its_jobs() {
    let a = api_in_manual_time();
    let clock = a.clock.clone().unwrap();
    let id = enqueue(&a.store, "email", "send_email");
    let jobs = claim(
        &a.app,
        json!({"worker": "w", "queues": ["email"], "lease": 5}),
    )
    .await;
    let token = jobs[0]["token"].clone();
    let (s, v) = ok(
        &a.app,
        Method::POST,
        &format!("/api/v1/jobs/{id}/cancel"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = post(
        &a.app,
        WORKER,
        "/api/v1/worker/heartbeat",
        json!({"worker": "w", "jobs": [{"id": id, "token": token}]}),
    )
    .await;
    assert_eq!(v["stop"], json!([{"id": id, "reason": "cancel"}]));
    // The worker stops the function and says so: the job is cancelled.
    let (s, v) = post(
        &a.app,
        WORKER,
        &format!("/api/v1/jobs/{id}/fail"),
        json!({"token": token, "error": "cancelled"}),
    )
    .await;
    assert_eq!(
        (s, v["outcome"].as_str()),
        (StatusCode::OK, Some("cancelled")),
        "{v}"
    );
    assert_eq!(a.store.get(id).unwrap().state, JobState::Cancelled);

    // A worker that stops heartbeating: its job goes back after its lease.
    let id = enqueue(&a.store, "email", "send_email");
    let jobs = claim(
        &a.app,
        json!({"worker": "w", "queues": ["email"], "lease": 5}),
    )
    .await;
    let token = jobs[0]["token"].clone();
    clock.advance(Duration::from_secs(6));
    assert_eq!(a.store.reap().unwrap().requeued, vec![id]);
    let (s, _) = post(
        &a.app,
        WORKER,
        &format!("/api/v1/jobs/{id}/complete"),
        json!({"token": token}),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let again = claim(&a.app, json!({"worker": "w2", "queues": ["email"]})).await;
    assert_eq!(
        (again[0]["id"].as_i64(), again[0]["attempt"].as_i64()),
        (Some(id), Some(2))
    );
}

#[tokio::test]
async fn a_remote_workers_kinds_are_accepted_by_enqueue_and_others_given_back() {
    let a = api();
    // A queue only remote workers serve takes any kind, before any worker
    // is there (a Flask app enqueues while its workers restart).
    let (s, v) = ok(
        &a.app,
        Method::POST,
        "/api/v1/jobs",
        Some(json!({"queue": "email", "kind": "send_email"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // On a queue of the daemon's own, a kind is accepted once a live
    // remote worker registered it.
    let job = json!({"queue": "q", "kind": "resize_image"});
    let (s, v) = ok(&a.app, Method::POST, "/api/v1/jobs", Some(job.clone())).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "no worker runs resize_image yet: {v}"
    );
    let jobs = claim(
        &a.app,
        json!({"worker": "w", "queues": ["q"], "kinds": ["resize_image"]}),
    )
    .await;
    assert!(jobs.is_empty());
    let (s, v) = ok(&a.app, Method::POST, "/api/v1/jobs", Some(job)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // A job of a kind the worker does not run is given back, not handed out.
    let other = enqueue(&a.store, "email", "send_sms");
    let jobs = claim(
        &a.app,
        json!({"worker": "w", "queues": ["email"], "kinds": ["send_email"], "n": 5}),
    )
    .await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["kind"], "send_email");
    let o = a.store.get(other).unwrap();
    assert_eq!(o.state, JobState::Scheduled);
    assert!(o
        .last_error
        .unwrap()
        .contains("does not run kind \"send_sms\""));
}

#[tokio::test]
async fn get_with_wait_answers_when_the_job_finishes() {
    let a = api();
    let id = enqueue(&a.store, "email", "send_email");
    let app = a.app.clone();
    let waiting = tokio::spawn(async move {
        let (s, v) = with_token(
            &app,
            PRODUCER,
            Method::GET,
            &format!("/api/v1/jobs/{id}?wait=10s"),
            None,
        )
        .await;
        (s, v, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished());
    let jobs = claim(&a.app, json!({"worker": "w", "queues": ["email"]})).await;
    let done = Instant::now();
    let (s, _) = post(
        &a.app,
        WORKER,
        &format!("/api/v1/jobs/{id}/complete"),
        json!({"token": jobs[0]["token"], "result": {"ok": 1}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v, answered) = waiting.await.unwrap();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["state"], "succeeded");
    assert_eq!(v["result"], json!({"ok": 1}));
    assert!(
        answered - done < Duration::from_millis(500),
        "{:?}",
        answered - done
    );
    // An unfinished job comes back as it is at the end of the wait.
    let id = enqueue(&a.store, "email", "send_email");
    let (s, v) = with_token(
        &a.app,
        PRODUCER,
        Method::GET,
        &format!("/api/v1/jobs/{id}?wait=0.2"),
        None,
    )
    .await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("ready")));
    for bad in ["forever", "5m", "-1"] {
        let (s, v) = with_token(
            &a.app,
            PRODUCER,
            Method::GET,
            &format!("/api/v1/jobs/{id}?wait={bad}"),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
}
