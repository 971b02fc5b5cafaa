//! The HTTP API: every route's success, 401 without or with a wrong token,
//! 400 on bad input, 404 on unknown things.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use jobd::store::NewJob;
use jobd::worker::{Handler, JobContext, JobError, Worker};
use jobd::Store;
use jobd_server::{router, ApiState};
use jobd_testkit::api::{call, error_of, ok, TOKEN};
use serde_json::{json, Value};
use tower::ServiceExt;

struct Api {
    _dir: tempfile::TempDir,
    app: Router,
    store: Store,
}

fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    api_on(dir, store)
}

/// The API over a store of the test's own (a simulated clock, say) in `dir`.
fn api_on(dir: tempfile::TempDir, store: Store) -> Api {
    // What the workers would run: the API refuses other jobs.
    let catalog = Worker::builder(store.clone())
        .handle_fn("noop", |_ctx, _p| async { Ok(Value::Null) })
        .handle_fn("send_email", |_ctx, _p| async { Ok(Value::Null) })
        .handler::<Resize>()
        .queue("q", 1)
        .queue("email", 1)
        .queue("analytics", 1)
        .catalog();
    let state = ApiState::new(store.clone(), TOKEN)
        .unwrap()
        .catalog(catalog)
        .with_scheduler(true);
    Api {
        app: router(state),
        store,
        _dir: dir,
    }
}

/// A handler with a typed payload, whose payload the API checks.
#[derive(Default)]
struct Resize;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Size {
    width: u32,
}

impl Handler for Resize {
    const KIND: &'static str = "resize";
    type Payload = Size;
    type Output = ();

    fn check(&self, size: &Size, _tenant: Option<&str>) -> Result<(), String> {
        if size.width > 20_000 {
            return Err(format!("{} px is wider than any image", size.width));
        }
        Ok(())
    }
    async fn run(&self, _ctx: JobContext, _size: Size) -> Result<(), JobError> {
        Ok(())
    }
}

#[tokio::test]
async fn every_api_route_needs_the_token() {
    let a = api();
    let routes = [
        (Method::POST, "/api/v1/jobs"),
        (Method::GET, "/api/v1/jobs"),
        (Method::GET, "/api/v1/jobs/1"),
        (Method::POST, "/api/v1/jobs/1/cancel"),
        (Method::POST, "/api/v1/jobs/1/retry"),
        (Method::POST, "/api/v1/jobs/retry"),
        (Method::POST, "/api/v1/jobs/cancel"),
        (Method::GET, "/api/v1/queues"),
        (Method::POST, "/api/v1/queues/email/pause"),
        (Method::POST, "/api/v1/queues/email/resume"),
        (Method::POST, "/api/v1/queues/email/purge"),
        (Method::POST, "/api/v1/queues/email/limit?limit=2"),
        (Method::GET, "/api/v1/schedules"),
        (Method::POST, "/api/v1/schedules"),
        (Method::GET, "/api/v1/schedules/x"),
        (Method::DELETE, "/api/v1/schedules/x"),
        (Method::PUT, "/api/v1/schedules/x"),
        (Method::POST, "/api/v1/schedules/x/run"),
        (Method::DELETE, "/api/v1/jobs/1"),
        (Method::GET, "/api/v1/overview"),
        (Method::GET, "/api/v1/workers"),
        (Method::GET, "/api/v1/whoami"),
        (Method::GET, "/api/v1/nope"),
    ];
    for (method, path) in routes {
        for token in [None, Some("wrong-token-0123456789abcdef"), Some("")] {
            let (status, body) = call(&a.app, method.clone(), path, token, Some("{}".into())).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}"
            );
            let v: Value = serde_json::from_str(&body).unwrap();
            assert!(error_of(&v).contains("token"), "{body}");
            assert!(!body.contains(TOKEN));
        }
    }
    // Basic auth or a bare token is not a bearer token.
    let req = Request::get("/api/v1/queues")
        .header("authorization", TOKEN)
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        a.app.clone().oneshot(req).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(a.store.stats().unwrap().queues.len(), 0, "nothing was done");
    // A short token is refused when the API is built.
    assert!(ApiState::new(a.store.clone(), "short").is_err());
}

#[tokio::test]
async fn jobs_enqueue_get_list_cancel_retry() {
    let a = api();
    let (s, v) = ok(&a.app, Method::POST, "/api/v1/jobs", Some(json!({"queue": "email", "kind": "send_email", "payload": {"to": "a@b.c"}, "priority": 2}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_i64().unwrap();
    let (s, v) = ok(
        &a.app,
        Method::POST,
        "/api/v1/jobs",
        Some(json!([
            {"queue": "email", "kind": "send_email"},
            {"queue": "email", "kind": "noop", "delay_ms": 60000}
        ])),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(v["ids"].as_array().unwrap().len(), 2);

    // `curl -d` labels a JSON body as a form: it is still read as JSON.
    let req = Request::post("/api/v1/jobs")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(
            r#"{"queue":"email","kind":"noop","delay_ms":60000}"#,
        ))
        .unwrap();
    assert_eq!(
        a.app.clone().oneshot(req).await.unwrap().status(),
        StatusCode::CREATED
    );
    let (s, v) = ok(&a.app, Method::GET, &format!("/api/v1/jobs/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (
            v["state"].as_str(),
            v["payload"]["to"].as_str(),
            v["priority"].as_i64()
        ),
        (Some("ready"), Some("a@b.c"), Some(2))
    );
    let (s, v) = ok(
        &a.app,
        Method::GET,
        "/api/v1/jobs?queue=email&state=ready&limit=10",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["jobs"].as_array().unwrap().len(), 2);
    let (_, v) = ok(&a.app, Method::GET, "/api/v1/jobs?state=scheduled", None).await;
    assert_eq!(v["jobs"].as_array().unwrap().len(), 2);

    // Retry of a live job is a conflict; cancel, then retry works.
    let (s, v) = ok(
        &a.app,
        Method::POST,
        &format!("/api/v1/jobs/{id}/retry"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, v) = ok(
        &a.app,
        Method::POST,
        &format!("/api/v1/jobs/{id}/cancel"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(a.store.get(id).unwrap().state, jobd::JobState::Cancelled);
    let (s, _) = ok(
        &a.app,
        Method::POST,
        &format!("/api/v1/jobs/{id}/retry"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(a.store.get(id).unwrap().state, jobd::JobState::Ready);

    // 404s.
    for (m, p) in [
        (Method::GET, "/api/v1/jobs/999999"),
        (Method::POST, "/api/v1/jobs/999999/cancel"),
        (Method::POST, "/api/v1/jobs/999999/retry"),
        (Method::GET, "/api/v1/nope"),
    ] {
        let (s, v) = ok(&a.app, m.clone(), p, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{m} {p}: {v}");
        error_of(&v);
    }
}

/// Bulk retry and cancel over the API: every job a selection matches.
#[tokio::test]
async fn retry_and_cancel_every_job_a_selection_matches() {
    let a = api();
    let mut dead = Vec::new();
    for error in ["smtp timeout", "smtp timeout", "bad address"] {
        let id = a
            .store
            .enqueue(&NewJob::new("email", "send_email").max_attempts(1))
            .unwrap();
        let c = a
            .store
            .claim("w", &["email"], 1, std::time::Duration::from_secs(30))
            .unwrap();
        a.store.fail(id, c[0].lease_token, error, true).unwrap();
        dead.push(id);
    }
    let waiting: Vec<i64> = (0..2)
        .map(|_| a.store.enqueue(&NewJob::new("q", "noop")).unwrap())
        .collect();
    let state = |id: i64| a.store.get(id).unwrap().state.as_str();

    // Bad selections: 400, saying what is wrong, nothing changed.
    for (path, body, says) in [
        (
            "/api/v1/jobs/retry",
            json!({"state": "ready"}),
            "dead or cancelled",
        ),
        (
            "/api/v1/jobs/cancel",
            json!({"state": "succeeded"}),
            "scheduled, ready or running",
        ),
        (
            "/api/v1/jobs/retry",
            json!({"queue": "email", "colour": "red"}),
            "unknown field",
        ),
        (
            "/api/v1/jobs/cancel",
            json!({"state": "late"}),
            "unknown variant",
        ),
        ("/api/v1/jobs/cancel", json!({"queue": ""}), "invalid queue"),
        ("/api/v1/jobs/retry?dry_run=maybe", json!({}), "dry_run"),
        (
            "/api/v1/jobs/cancel?dry_run=true",
            json!({"state": "dead"}),
            "scheduled, ready or running",
        ),
    ] {
        let (s, v) = ok(&a.app, Method::POST, path, Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path} {body}: {v}");
        assert!(error_of(&v).contains(says), "{path} {body}: {v}");
    }
    assert!(dead.iter().all(|&id| state(id) == "dead"));
    assert!(waiting.iter().all(|&id| state(id) == "ready"));

    // Dry runs: how many jobs each would touch, nothing changed.
    for (path, body, would) in [
        (
            "/api/v1/jobs/retry?dry_run=true",
            json!({"queue": "email", "error": "SMTP"}),
            json!({"dry_run": true, "would_retry": 2}),
        ),
        (
            "/api/v1/jobs/retry?dry_run=true",
            json!({}),
            json!({"dry_run": true, "would_retry": 3}),
        ),
        (
            "/api/v1/jobs/cancel?dry_run=true",
            json!({"queue": "q"}),
            json!({"dry_run": true, "would_cancel": 2, "would_ask_to_stop": 0}),
        ),
    ] {
        let (s, v) = ok(&a.app, Method::POST, path, Some(body.clone())).await;
        assert_eq!(s, StatusCode::OK, "{path} {body}: {v}");
        assert_eq!(v, would, "{path} {body}");
    }
    assert!(dead.iter().all(|&id| state(id) == "dead"));
    assert!(waiting.iter().all(|&id| state(id) == "ready"));

    let (s, v) = ok(
        &a.app,
        Method::POST,
        "/api/v1/jobs/retry",
        Some(json!({"queue": "email", "error": "SMTP"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"retried": 2, "key_taken": []}));
    assert_eq!(
        [state(dead[0]), state(dead[1]), state(dead[2])],
        ["ready", "ready", "dead"]
    );

    let (s, v) = ok(
        &a.app,
        Method::POST,
        "/api/v1/jobs/cancel",
        Some(json!({"queue": "q"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"cancelled": 2, "requested": 0}));
    assert!(waiting.iter().all(|&id| state(id) == "cancelled"));
    assert_eq!(state(dead[0]), "ready", "another queue's job is untouched");

    // {} selects every job the operation applies to.
    let (_, v) = ok(&a.app, Method::POST, "/api/v1/jobs/retry", Some(json!({}))).await;
    assert_eq!(v["retried"], 1);
    assert_eq!(state(dead[2]), "ready");
}

#[tokio::test]
async fn bad_input_is_a_400_that_says_what_is_wrong_and_writes_nothing() {
    let a = api();
    let cases: Vec<(Method, &str, Option<String>, &str)> = vec![
        (Method::POST, "/api/v1/jobs", Some("{not json".into()), "bad request body"),
        (Method::POST, "/api/v1/jobs", Some(json!({"kind": "noop"}).to_string()), "queue"),
        (Method::POST, "/api/v1/jobs", Some(json!({"queue": "q", "kind": "noop", "prio": 1}).to_string()), "prio"),
        (Method::POST, "/api/v1/jobs", Some(json!({"queue": "q", "kind": "make_coffee"}).to_string()), "unknown job kind \"make_coffee\": no worker runs it"),
        (Method::POST, "/api/v1/jobs", Some(json!({"queue": "qq", "kind": "noop"}).to_string()), "unknown queue \"qq\": no worker serves it (the configured queues are analytics, email, q"),
        (Method::POST, "/api/v1/jobs", Some(json!({"queue": "q", "kind": "resize", "payload": {"width": -1}}).to_string()), "payload does not fit job kind 'resize': invalid value: integer `-1`"),
        (Method::POST, "/api/v1/jobs", Some(json!({"queue": "q", "kind": "resize", "payload": {"w": 1}}).to_string()), "unknown field `w`"),
        (Method::POST, "/api/v1/jobs", Some(json!({"queue": "q", "kind": "resize", "payload": {"width": 100000}}).to_string()), "invalid job: 100000 px is wider than any image"),
        (Method::POST, "/api/v1/jobs", Some(json!([{"queue": "q", "kind": "resize", "payload": {"width": 1}}, {"queue": "q", "kind": "resize"}]).to_string()), "job #1: invalid payload: payload does not fit job kind 'resize': missing field `width`"),
        (Method::POST, "/api/v1/jobs", Some(json!({"queue": "bad queue", "kind": "noop"}).to_string()), "queue"),
        (Method::POST, "/api/v1/jobs", Some(json!([{"queue": "q", "kind": "noop"}, {"queue": "q", "kind": "noop", "max_attempts": 0}]).to_string()), "job #1"),
        (Method::POST, "/api/v1/jobs", Some("[]".into()), "empty"),
        (Method::POST, "/api/v1/jobs", Some("42".into()), "job object"),
        (Method::GET, "/api/v1/jobs/abc", None, "not a number"),
        (Method::GET, "/api/v1/jobs?state=bogus", None, "bogus"),
        (Method::GET, "/api/v1/jobs?limit=many", None, "bad query string"),
        (Method::GET, "/api/v1/jobs?colour=red", None, "colour"),
        (Method::POST, "/api/v1/queues/bad%20name/pause", None, "queue"),
        (Method::POST, "/api/v1/queues/q/purge?older_than_secs=-1", None, "bad query string"),
        (Method::POST, "/api/v1/queues/q/limit", None, "limit is required"),
        (Method::POST, "/api/v1/queues/q/limit?limit=lots", None, "\"lots\""),
        (Method::POST, "/api/v1/queues/q/limit?limit=0", None, "less than 1"),
        (Method::POST, "/api/v1/schedules", Some(json!({"name": "s", "cron": "0 2 * *", "queue": "q", "kind": "noop"}).to_string()), "4 fields"),
        (Method::POST, "/api/v1/schedules", Some(json!({"name": "s", "cron": "0 2 * * *", "timezone": "Mars/Base", "queue": "q", "kind": "noop"}).to_string()), "Mars/Base"),
        (Method::POST, "/api/v1/schedules", Some(json!({"name": "s", "every": "soonish", "queue": "q", "kind": "noop"}).to_string()), "soonish"),
        (Method::POST, "/api/v1/schedules", Some(json!({"name": "s", "queue": "q", "kind": "noop"}).to_string()), "exactly one of cron, every"),
        (Method::POST, "/api/v1/schedules", Some(json!({"name": "s", "every": "1h", "queue": "q", "kind": "make_coffee"}).to_string()), "unknown job kind \"make_coffee\""),
        (Method::POST, "/api/v1/schedules", Some(json!({"name": "s", "every": "1h", "queue": "q", "kind": "resize", "payload": {}}).to_string()), "missing field `width`"),
    ];
    for (m, p, body, wanted) in cases {
        let (s, text) = call(&a.app, m.clone(), p, Some(TOKEN), body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{m} {p}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        assert!(error_of(&v).contains(wanted), "{m} {p}: {text}");
    }
    // An oversized body: 413, not read into memory.
    let big = format!(
        "{{\"queue\":\"q\",\"kind\":\"noop\",\"payload\":\"{}\"}}",
        "x".repeat(2 << 20)
    );
    let (s, _) = call(&a.app, Method::POST, "/api/v1/jobs", Some(TOKEN), Some(big)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        a.store.stats().unwrap().queues.len(),
        0,
        "nothing was enqueued"
    );
    assert!(
        a.store.schedules().unwrap().is_empty(),
        "no schedule was stored"
    );
}

#[tokio::test]
async fn queues_schedules_health_and_metrics() {
    let a = api();
    ok(
        &a.app,
        Method::POST,
        "/api/v1/jobs",
        Some(json!({"queue": "email", "kind": "noop"})),
    )
    .await;
    let (s, v) = ok(&a.app, Method::POST, "/api/v1/queues/email/pause", None).await;
    assert_eq!((s, v["paused"].as_bool()), (StatusCode::OK, Some(true)));
    let (s, v) = ok(&a.app, Method::GET, "/api/v1/queues", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["queues"][0]["queue"], "email");
    assert_eq!(v["queues"][0]["paused"], true);
    assert_eq!(v["queues"][0]["ready"], 1);
    let (s, _) = ok(&a.app, Method::POST, "/api/v1/queues/email/resume", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = ok(
        &a.app,
        Method::POST,
        "/api/v1/queues/email/purge?older_than_secs=0",
        None,
    )
    .await;
    assert_eq!((s, v["purged"].as_i64()), (StatusCode::OK, Some(0)));
    // Set, then lift: the answer and the queue's stats say the same.
    for (text, limit) in [("3", json!(3)), ("none", Value::Null)] {
        let path = format!("/api/v1/queues/email/limit?limit={text}");
        let (s, v) = ok(&a.app, Method::POST, &path, None).await;
        assert_eq!((s, &v["concurrency"]), (StatusCode::OK, &limit), "{text}");
        let (_, v) = ok(&a.app, Method::GET, "/api/v1/queues", None).await;
        assert_eq!(v["queues"][0]["concurrency"], limit, "{text}");
    }
    let (s, _) = ok(&a.app, Method::POST, "/api/v1/queues/email/explode", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let spec = json!({"name": "nightly", "cron": "30 2 * * *", "timezone": "Europe/Berlin", "queue": "email", "kind": "noop", "payload": {"a": 1}});
    let (s, v) = ok(
        &a.app,
        Method::POST,
        "/api/v1/schedules",
        Some(spec.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(v["next_fire_at"].as_i64().is_some());
    let (s, v) = ok(&a.app, Method::POST, "/api/v1/schedules", Some(spec)).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (_, v) = ok(&a.app, Method::GET, "/api/v1/schedules", None).await;
    assert_eq!(v["schedules"][0]["name"], "nightly");
    let (s, v) = ok(&a.app, Method::GET, "/api/v1/schedules/nightly", None).await;
    assert_eq!(
        (s, v["timezone"].as_str()),
        (StatusCode::OK, Some("Europe/Berlin"))
    );
    let (s, _) = ok(&a.app, Method::DELETE, "/api/v1/schedules/nightly", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for m in [Method::GET, Method::DELETE] {
        let (s, _) = ok(&a.app, m, "/api/v1/schedules/nightly", None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }

    // Open endpoints.
    let (s, text) = call(&a.app, Method::GET, "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["scheduler"].as_str()),
        (Some("ok"), Some("running"))
    );
    // Finished tries of both kinds: a success (stored on its job row) and a
    // failure (a row in `tries`).
    for _ in 0..3 {
        a.store.enqueue(&NewJob::new("m", "noop")).unwrap();
    }
    let lease = std::time::Duration::from_secs(30);
    let tries = a.store.claim("w", &["m"], 3, lease).unwrap();
    a.store
        .complete(tries[0].id, tries[0].lease_token, None)
        .unwrap();
    a.store
        .complete(tries[1].id, tries[1].lease_token, None)
        .unwrap();
    a.store
        .fail(tries[2].id, tries[2].lease_token, "boom", true)
        .unwrap();
    let (s, text) = call(&a.app, Method::GET, "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    for line in [
        "jobd_attempts_total{queue=\"m\",outcome=\"succeeded\"} 2",
        "jobd_attempts_total{queue=\"m\",outcome=\"failed\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing: {text}");
    }
    assert!(
        text.contains("jobd_jobs{queue=\"email\",state=\"ready\"} 1"),
        "{text}"
    );
    assert!(text.contains("# TYPE jobd_attempts_total counter"));
    assert!(text.contains("jobd_live_workers 0"));
    // Run time and queue wait as histograms per queue, cumulative buckets:
    // the three tries ran in no time.
    for line in [
        "# TYPE jobd_run_duration_seconds histogram",
        "jobd_run_duration_seconds_bucket{queue=\"m\",le=\"0.01\"} 3\n",
        "jobd_run_duration_seconds_bucket{queue=\"m\",le=\"300\"} 3\n",
        "jobd_run_duration_seconds_bucket{queue=\"m\",le=\"+Inf\"} 3\n",
        "jobd_run_duration_seconds_count{queue=\"m\"} 3\n",
        "jobd_queue_wait_seconds_count{queue=\"m\"} 3\n",
        "jobd_jobs_ended_total{queue=\"m\",outcome=\"succeeded\"} 2\n",
        "jobd_build_info{version=\"",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "jobd_queue_file_bytes ",
        "jobd_wal_bytes ",
    ] {
        assert!(text.contains(line), "{line} missing: {text}");
    }
    if std::path::Path::new("/usr/bin/promtool").exists() {
        let mut check = std::process::Command::new("/usr/bin/promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        check
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The `/metrics` lines of one queue's finished tries.
fn try_lines(text: &str, queue: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("jobd_attempt") && l.contains(&format!("queue=\"{queue}\"")))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn metrics_counters_never_go_down_when_finished_jobs_are_purged() {
    let dir = tempfile::tempdir().unwrap();
    let clock = jobd::clock::ManualClock::new(1_700_000_000_000);
    let store = Store::open_with(
        dir.path().join("queue.db"),
        jobd::store::StoreOptions::default().clock(clock.clone()),
    )
    .unwrap();
    let a = api_on(dir, store);
    let lease = std::time::Duration::from_secs(30);
    let second = std::time::Duration::from_secs(1);
    // Two successes, one death, and a success after a failed try; 1 s each.
    for _ in 0..4 {
        a.store.enqueue(&NewJob::new("m", "noop")).unwrap();
    }
    let tries = a.store.claim("w", &["m"], 4, lease).unwrap();
    clock.advance(second);
    for t in &tries[..2] {
        a.store.complete(t.id, t.lease_token, None).unwrap();
    }
    a.store
        .fail(tries[2].id, tries[2].lease_token, "boom", false)
        .unwrap();
    a.store
        .fail(tries[3].id, tries[3].lease_token, "flaky", true)
        .unwrap();
    clock.advance(std::time::Duration::from_secs(600));
    let again = a.store.claim("w", &["m"], 1, lease).unwrap().remove(0);
    clock.advance(second);
    a.store.complete(again.id, again.lease_token, None).unwrap();
    // A job still waiting is not purged, nor counted.
    a.store.enqueue(&NewJob::new("m", "noop")).unwrap();

    let (_, before) = call(&a.app, Method::GET, "/metrics", None, None).await;
    let expected = [
        "jobd_attempt_seconds_total{queue=\"m\",outcome=\"failed\"} 2.0",
        "jobd_attempt_seconds_total{queue=\"m\",outcome=\"succeeded\"} 3.0",
        "jobd_attempts_total{queue=\"m\",outcome=\"failed\"} 2",
        "jobd_attempts_total{queue=\"m\",outcome=\"succeeded\"} 3",
    ];
    assert_eq!(try_lines(&before, "m"), expected, "{before}");

    // The nightly cleanup: every finished job goes, with its tries.
    clock.advance(std::time::Duration::from_secs(7200));
    let (s, v) = ok(
        &a.app,
        Method::POST,
        "/api/v1/queues/m/purge?older_than_secs=3600",
        None,
    )
    .await;
    assert_eq!((s, v["purged"].as_i64()), (StatusCode::OK, Some(4)), "{v}");
    let (_, after) = call(&a.app, Method::GET, "/metrics", None, None).await;
    assert_eq!(try_lines(&after, "m"), expected, "{after}");
    // The gauges say what the file holds now.
    for line in [
        "jobd_jobs{queue=\"m\",state=\"succeeded\"} 0",
        "jobd_jobs{queue=\"m\",state=\"dead\"} 0",
        "jobd_jobs{queue=\"m\",state=\"ready\"} 1",
    ] {
        assert!(after.contains(line), "{line} missing: {after}");
    }

    // The counters go on from there; a second purge adds to the tallies.
    let t = a.store.claim("w", &["m"], 1, lease).unwrap().remove(0);
    clock.advance(second);
    a.store.complete(t.id, t.lease_token, None).unwrap();
    let (_, more) = call(&a.app, Method::GET, "/metrics", None, None).await;
    assert!(
        more.contains("jobd_attempts_total{queue=\"m\",outcome=\"succeeded\"} 4"),
        "{more}"
    );
    clock.advance(std::time::Duration::from_secs(7200));
    assert_eq!(
        a.store
            .purge(std::time::Duration::from_secs(3600), None)
            .unwrap(),
        1
    );
    let (_, last) = call(&a.app, Method::GET, "/metrics", None, None).await;
    assert!(
        last.contains("jobd_attempts_total{queue=\"m\",outcome=\"succeeded\"} 4"),
        "{last}"
    );
    assert!(
        last.contains("jobd_attempt_seconds_total{queue=\"m\",outcome=\"succeeded\"} 4.0\n"),
        "{last}"
    );
    let stats = a.store.stats().unwrap();
    let m = stats.queues.iter().find(|q| q.queue == "m").unwrap();
    assert_eq!(
        (m.succeeded, m.succeeded_total, m.succeeded_total_run_ms),
        (0, 4, 4000)
    );
}

/// The dashboard could be framed by another site (its pause and
/// cancel-all buttons clickjacked), and `Authorization: bearer <token>` was
/// refused although the scheme is case-insensitive (RFC 9110).
#[tokio::test]
async fn pages_cannot_be_framed_and_the_bearer_scheme_is_case_insensitive() {
    let a = api();
    for path in ["/", "/dashboard.js", "/api/v1/queues", "/healthz"] {
        let req = Request::get(path)
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let resp = a.app.clone().oneshot(req).await.unwrap();
        assert_eq!(
            resp.headers().get("x-frame-options").map(|v| v.as_bytes()),
            Some(&b"DENY"[..]),
            "{path}"
        );
    }
    let req = Request::get("/").body(Body::empty()).unwrap();
    let resp = a.app.clone().oneshot(req).await.unwrap();
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");

    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let req = Request::get("/api/v1/queues")
            .header("authorization", format!("{scheme} {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            a.app.clone().oneshot(req).await.unwrap().status(),
            StatusCode::OK,
            "{scheme}"
        );
    }
    for wrong in [
        format!("Basic {TOKEN}"),
        format!("Bearer{TOKEN}"),
        "Bearer ".to_string(),
    ] {
        let req = Request::get("/api/v1/queues")
            .header("authorization", wrong.clone())
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            a.app.clone().oneshot(req).await.unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "{wrong}"
        );
    }
}

/// An object with a duplicate key was accepted with the last
/// one winning (`"queue":"default","queue":"pdf"` enqueued into pdf).  It
/// is a 400 that names the key, like an unknown field, and nothing is written.
#[tokio::test]
async fn a_duplicate_json_key_is_a_400_and_writes_nothing() {
    let a = api();
    for body in [
        r#"{"queue":"q","queue":"email","kind":"noop"}"#,
        r#"{"queue":"q","kind":"noop","payload":{"n":1,"n":2}}"#,
        r#"[{"queue":"q","kind":"noop"},{"queue":"q","kind":"noop","kind":"noop"}]"#,
    ] {
        let (status, text) = call(
            &a.app,
            Method::POST,
            "/api/v1/jobs",
            Some(TOKEN),
            Some(body.into()),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(error_of(&v).contains("duplicate key"), "{text}");
    }
    let (status, text) = call(
        &a.app,
        Method::POST,
        "/api/v1/schedules",
        Some(TOKEN),
        Some(r#"{"name":"a","name":"b","cron":"* * * * *","queue":"q","kind":"noop"}"#.into()),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("duplicate key"), "{text}");
    assert_eq!(
        a.store.stats().unwrap().queues.len(),
        0,
        "nothing was enqueued"
    );
    assert!(a.store.schedules().unwrap().is_empty());
    // The library and the CLI's JSON lines refuse them too.
    let err = a
        .store
        .enqueue(&jobd::NewJob::new("q", "noop").payload_json(r#"{"a":1,"a":2}"#))
        .unwrap_err();
    assert!(err.to_string().contains("duplicate key"), "{err}");
    assert!(jobd::store::JobSpec::from_json(r#"{"queue":"q","queue":"r","kind":"k"}"#).is_err());
}

/// A 405 on an `/api/v1` route had an empty body; every error
/// is `{"error": ...}`, and the 405 still says which methods are allowed.
#[tokio::test]
async fn every_api_error_is_a_json_error() {
    let a = api();
    for (method, path) in [
        (Method::DELETE, "/api/v1/jobs"),
        (Method::PUT, "/api/v1/queues"),
        (Method::GET, "/api/v1/jobs/1/cancel"),
        (Method::PATCH, "/api/v1/schedules/x"),
    ] {
        let req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let resp = a.app.clone().oneshot(req).await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert!(resp.headers().contains_key("allow"), "{method} {path}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}: {bytes:?}"));
        assert!(error_of(&v).contains("not allowed"), "{v}");
    }
    // A body over the limit and a query the route cannot read: JSON too.
    let (status, text) = call(
        &a.app,
        Method::POST,
        "/api/v1/jobs",
        Some(TOKEN),
        Some("x".repeat(jobd_server::MAX_BODY_BYTES + 10)),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        serde_json::from_str::<Value>(&text).unwrap()["error"].is_string(),
        "{text}"
    );
    let (status, text) = call(
        &a.app,
        Method::GET,
        "/api/v1/jobs?limit=lots",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        serde_json::from_str::<Value>(&text).unwrap()["error"].is_string(),
        "{text}"
    );
}

/// An unknown queue is a 404 that says so;
/// `?create=true` means it.
#[tokio::test]
async fn queue_actions_refuse_a_queue_nothing_knows() {
    let a = api();
    for action in ["pause", "resume", "limit?limit=2", "purge"] {
        let (status, v) = ok(
            &a.app,
            Method::POST,
            &format!("/api/v1/queues/emial/{action}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{action}: {v}");
        assert!(error_of(&v).contains("unknown queue \"emial\""), "{v}");
    }
    let (status, _) = ok(&a.app, Method::POST, "/api/v1/queues/email/pause", None).await;
    assert_eq!(status, StatusCode::OK, "a configured queue");
    let (status, v) = ok(
        &a.app,
        Method::POST,
        "/api/v1/queues/reports/pause?create=true",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(a.store.knows_queue("reports").unwrap());
    assert!(!a.store.knows_queue("emial").unwrap());
}

/// A half-sent header
/// is cut off after the header-read timeout, a request past the request
/// timeout gets a 503, and at the connection cap the oldest idle connection
/// makes room for a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_cuts_off_slow_clients_and_sheds_idle_connections() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = Router::new()
        .route("/fast", axum::routing::get(|| async { "fast" }))
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "slow"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let opts = jobd_server::ServeOptions {
        max_connections: 8,
        header_read_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(300),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(jobd_server::serve_with(listener, app, opts, {
        let stop = stop.clone();
        async move { stop.cancelled().await }
    }));
    let get = |path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };

    // A header never finished: closed after the header-read timeout.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /fast HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "a partial header held for {took:?}"
    );

    // A request past its timeout: 503.
    let answer = get("/slow").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");

    // Twice the cap of idle connections, then a real request: answered.
    let mut idle = Vec::new();
    for _ in 0..16 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /fast HTTP/1.1\r\n").await.unwrap();
        idle.push(s);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = Instant::now();
    let answer = get("/fast").await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("fast"),
        "{answer}"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );

    stop.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_consoles_routes_overview_workers_delete_and_schedule_actions() {
    let dir = tempfile::tempdir().unwrap();
    let clock = jobd::clock::ManualClock::new(1_700_000_000_000);
    let store = Store::open_with(
        dir.path().join("queue.db"),
        jobd::store::StoreOptions::default().clock(clock.clone()),
    )
    .unwrap();
    let a = api_on(dir, store);
    let lease = std::time::Duration::from_secs(30);
    // Three jobs of "email": one waits 2 s and runs 300 ms, one fails for
    // good, one stays running on a registered worker.
    for i in 0..3 {
        let job = NewJob::new("email", "send_email").payload(&json!({"to": format!("u{i}@x.io")}));
        a.store.enqueue(&job).unwrap();
    }
    a.store
        .register_worker("h:1:w", "h", 1, &["email"], &["send_email"])
        .unwrap();
    clock.advance(std::time::Duration::from_secs(2));
    let tries = a.store.claim("h:1:w", &["email"], 3, lease).unwrap();
    clock.advance(std::time::Duration::from_millis(300));
    a.store
        .complete(tries[0].id, tries[0].lease_token, None)
        .unwrap();
    a.store
        .fail(tries[1].id, tries[1].lease_token, "no", false)
        .unwrap();

    let (s, o) = ok(&a.app, Method::GET, "/api/v1/overview", None).await;
    assert_eq!(s, StatusCode::OK, "{o}");
    assert_eq!(
        o["minutes"]["total"]["succeeded"].as_array().unwrap().len(),
        60
    );
    assert_eq!(
        o["minutes"]["total"]["succeeded"][59], 1,
        "this minute, last"
    );
    assert_eq!(o["minutes"]["queues"]["email"]["dead"][59], 1);
    assert_eq!(o["minutes"]["total"]["failed"][59], 1);
    assert_eq!(
        o["hours"]["total"]["succeeded"].as_array().unwrap().len(),
        24
    );
    assert_eq!(o["hours"]["total"]["succeeded"][23], 1);
    let t = &o["timing"]["email"];
    assert_eq!(t["tries"], 2);
    // Run 300 ms (the 250–500 ms bucket) and 300 ms; wait 2 s both.
    let p50 = t["run_p50_ms"].as_f64().unwrap();
    assert!((250.0..=500.0).contains(&p50), "{t}");
    let w = t["wait_p95_ms"].as_f64().unwrap();
    assert!((1000.0..=2500.0).contains(&w), "{t}");
    assert_eq!(o["health"]["backend"], "sqlite");
    assert_eq!(o["health"]["scheduler"], "running");
    assert!(o["health"]["queue_file_bytes"].as_u64().unwrap() > 0);
    assert!(o["health"]["free_disk_bytes"].as_u64().is_some());
    assert_eq!(o["queues"][0]["queue"], "email");

    let (_, w) = ok(&a.app, Method::GET, "/api/v1/workers", None).await;
    assert_eq!(w["workers"][0]["id"], "h:1:w");
    assert_eq!(w["workers"][0]["running"], 1);
    let (_, me) = ok(&a.app, Method::GET, "/api/v1/whoami", None).await;
    assert_eq!(me, json!({"name": "admin", "role": "admin"}));

    // The list's new columns, and a payload search.
    let (_, l) = ok(&a.app, Method::GET, "/api/v1/jobs?state=running", None).await;
    assert_eq!(l["jobs"][0]["worker"], "h:1:w");
    assert_eq!(l["jobs"][0]["started_at"], 1_700_000_002_000i64);
    let (_, l) = ok(
        &a.app,
        Method::GET,
        "/api/v1/jobs?payload=to%3Du2@x.io",
        None,
    )
    .await;
    assert_eq!(l["jobs"].as_array().unwrap().len(), 1, "{l}");
    assert_eq!(l["jobs"][0]["id"], tries[2].id);
    // It says which jobs it searched (a window of the newest, here all).
    assert_eq!(
        (l["searched_from"].as_i64(), l["searched_to"].as_i64()),
        (Some(1), Some(3)),
        "{l}"
    );
    let (_, l) = ok(
        &a.app,
        Method::GET,
        "/api/v1/jobs?payload=to%3Du2@x.io&before_id=3",
        None,
    )
    .await;
    assert_eq!(
        (
            l["jobs"].as_array().unwrap().len(),
            l["searched_to"].as_i64()
        ),
        (0, Some(2)),
        "{l}"
    );
    let (_, l) = ok(
        &a.app,
        Method::GET,
        "/api/v1/jobs?after_id=1&limit=10",
        None,
    )
    .await;
    let ids: Vec<i64> = l["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [3, 2]);
    let (s, e) = ok(&a.app, Method::GET, "/api/v1/jobs?payload=to", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_of(&e).contains("path=value"), "{e}");

    // Delete: a finished job goes; a running one is a 409; a missing one 404.
    let dead = tries[1].id;
    let (s, v) = ok(
        &a.app,
        Method::DELETE,
        &format!("/api/v1/jobs/{dead}"),
        None,
    )
    .await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("dead")),
        "{v}"
    );
    let (s, _) = ok(&a.app, Method::GET, &format!("/api/v1/jobs/{dead}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = ok(
        &a.app,
        Method::DELETE,
        &format!("/api/v1/jobs/{dead}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let running = tries[2].id;
    let (s, e) = ok(
        &a.app,
        Method::DELETE,
        &format!("/api/v1/jobs/{running}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(error_of(&e).contains("cancel it"), "{e}");
    // The dead job's try is still counted.
    let (_, o) = ok(&a.app, Method::GET, "/api/v1/overview", None).await;
    assert_eq!(o["minutes"]["total"]["dead"][59], 1);

    // Schedules: pause, resume, run now, replace, next and recent fires.
    let spec = json!({"name": "nightly", "cron": "0 3 * * *", "queue": "email", "kind": "noop"});
    ok(&a.app, Method::POST, "/api/v1/schedules", Some(spec)).await;
    let (s, v) = ok(
        &a.app,
        Method::POST,
        "/api/v1/schedules/nightly/pause",
        None,
    )
    .await;
    assert_eq!((s, v["enabled"].as_bool()), (StatusCode::OK, Some(false)));
    let (_, v) = ok(&a.app, Method::GET, "/api/v1/schedules/nightly", None).await;
    assert_eq!(
        (
            v["enabled"].as_bool(),
            v["next_fires"].as_array().unwrap().len()
        ),
        (Some(false), 0)
    );
    ok(
        &a.app,
        Method::POST,
        "/api/v1/schedules/nightly/resume",
        None,
    )
    .await;
    let (s, v) = ok(&a.app, Method::POST, "/api/v1/schedules/nightly/run", None).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let job = v["job_id"].as_i64().unwrap();
    assert_eq!(a.store.get(job).unwrap().kind, "noop");
    // A day later the scheduler has fired the 03:00 tick: a recent fire.
    clock.advance(std::time::Duration::from_secs(86_400));
    let fired = a
        .store
        .fire_due_schedules(std::time::Duration::from_secs(3600))
        .unwrap();
    assert_eq!(fired.fired.len(), 1, "{fired:?}");
    let (_, v) = ok(
        &a.app,
        Method::GET,
        "/api/v1/schedules/nightly?next=3",
        None,
    )
    .await;
    let next = v["next_fires"].as_array().unwrap();
    assert_eq!(next.len(), 3);
    assert!(next.windows(2).all(|w| w[0].as_i64() < w[1].as_i64()));
    assert_eq!(v["recent_fires"][0]["job_id"], fired.fired[0].job_id);
    assert!(v["recent_fires"][0]["job_id"].as_i64().is_some(), "{v}");
    let (s, _) = ok(
        &a.app,
        Method::POST,
        "/api/v1/schedules/nightly/explode",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let edit = json!({"name": "nightly", "cron": "15 4 * * *", "queue": "email", "kind": "noop"});
    let (s, v) = ok(&a.app, Method::PUT, "/api/v1/schedules/nightly", Some(edit)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["when"]["cron"], "15 4 * * *");
    let rename = json!({"name": "other", "cron": "15 4 * * *", "queue": "email", "kind": "noop"});
    let (s, e) = ok(
        &a.app,
        Method::PUT,
        "/api/v1/schedules/nightly",
        Some(rename),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_of(&e).contains("not renamed"), "{e}");
    let (s, _) = ok(
        &a.app,
        Method::PUT,
        "/api/v1/schedules/nope",
        Some(json!({"name": "nope", "cron": "* * * * *", "queue": "email", "kind": "noop"})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(matches!(
        a.store.schedule("nope"),
        Err(jobd::Error::ScheduleNotFound { .. })
    ));
}

#[tokio::test]
async fn a_producer_reads_the_console_and_may_not_act() {
    use sha2::{Digest, Sha256};
    let a = api();
    let viewer = "viewer-token-0123456789abcdef0123456789";
    let hash: [u8; 32] = Sha256::digest(viewer.as_bytes()).into();
    a.store
        .add_api_token("viewer", jobd::store::Role::Producer, &hash)
        .unwrap();
    let id = a.store.enqueue(&NewJob::new("email", "noop")).unwrap();
    let spec = json!({"name": "n", "cron": "0 3 * * *", "queue": "email", "kind": "noop"});
    ok(&a.app, Method::POST, "/api/v1/schedules", Some(spec)).await;
    let (_, me) =
        jobd_testkit::api::with_token(&a.app, viewer, Method::GET, "/api/v1/whoami", None).await;
    assert_eq!(me, json!({"name": "viewer", "role": "producer"}));
    for path in [
        "/api/v1/overview",
        "/api/v1/workers",
        "/api/v1/schedules",
        "/api/v1/schedules/n",
        "/api/v1/queues",
    ] {
        let (s, v) = jobd_testkit::api::with_token(&a.app, viewer, Method::GET, path, None).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
    }
    for (m, path) in [
        (Method::DELETE, format!("/api/v1/jobs/{id}")),
        (Method::POST, "/api/v1/schedules/n/run".to_string()),
        (Method::POST, "/api/v1/schedules/n/pause".to_string()),
        (Method::PUT, "/api/v1/schedules/n".to_string()),
        (Method::DELETE, "/api/v1/schedules/n".to_string()),
        (Method::POST, "/api/v1/queues/email/pause".to_string()),
    ] {
        let (s, v) =
            jobd_testkit::api::with_token(&a.app, viewer, m.clone(), &path, Some(json!({}))).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{m} {path}: {v}");
    }
    assert!(a.store.get(id).is_ok());
    assert!(a.store.schedule("n").unwrap().enabled);
    assert_eq!(a.store.schedule("n").unwrap().fires, 0);
}

#[tokio::test]
async fn the_console_and_api_under_a_path_prefix() {
    let a = api();
    let app = jobd_server::at_base_path(a.app.clone(), "/ops/jobd/").unwrap();
    let (s, _) = call(&app, Method::GET, "/ops/jobd", None, None).await;
    assert_eq!(s, StatusCode::PERMANENT_REDIRECT);
    let req = Request::get("/ops/jobd").body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.headers()["location"], "/ops/jobd/");
    let (s, page) = call(&app, Method::GET, "/ops/jobd/", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("src=\"dashboard.js\""), "relative URLs");
    for path in [
        "/ops/jobd/dashboard.js",
        "/ops/jobd/dashboard.css",
        "/ops/jobd/healthz",
        "/ops/jobd/metrics",
    ] {
        let (s, _) = call(&app, Method::GET, path, None, None).await;
        assert_eq!(s, StatusCode::OK, "{path}");
    }
    let (s, v) = call(
        &app,
        Method::GET,
        "/ops/jobd/api/v1/whoami",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = call(&app, Method::GET, "/api/v1/whoami", Some(TOKEN), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "only under the prefix");
    for bad in ["jobd", "/a b", "/../x", "/x//y", "/a?b"] {
        assert!(
            jobd_server::at_base_path(a.app.clone(), bad).is_err(),
            "{bad}"
        );
    }
    assert!(jobd_server::at_base_path(a.app.clone(), "/").is_ok());
}
