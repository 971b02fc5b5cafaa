//! The application's part of `jobd serve`'s HTTP surface: its own route
//! (`/api/v1/analytics`, behind the server's token, its query checked,
//! queued once and then served from the cache) and the built-in jobs'
//! checks when a job is posted.

use axum::http::{Method, StatusCode};
use axum::Router;
use jobd::worker::Worker;
use jobd::Store;
use jobd_handlers::tenants::{seed, SeedOptions};
use jobd_handlers::{DataDir, Reporter};
use jobd_server::{router_with, ApiState};
use jobd_testkit::api::{call, error_of, ok, TOKEN};
use serde_json::{json, Value};

struct App {
    _dir: tempfile::TempDir,
    app: Router,
    store: Store,
    data: DataDir,
}

/// What `jobd serve` serves: the server's routes and the application's,
/// refusing jobs the built-in handlers would refuse.
fn app() -> App {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let data = DataDir::new(dir.path());
    let catalog = jobd_handlers::builtin(Worker::builder(store.clone()), &data).catalog();
    let state = ApiState::new(store.clone(), TOKEN)
        .unwrap()
        .catalog(catalog);
    App {
        app: router_with(state, jobd_cli::app::routes()),
        store,
        data,
        _dir: dir,
    }
}

#[tokio::test]
async fn the_applications_route_is_behind_the_servers_token() {
    let a = app();
    for token in [None, Some("wrong-token-0123456789abcdef"), Some("")] {
        let (status, body) = call(&a.app, Method::GET, "/api/v1/analytics", token, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}: {body}");
        assert!(!body.contains(TOKEN));
    }
    let (status, v) = ok(&a.app, Method::GET, "/api/v1/analytics?period=daily", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
}

#[tokio::test]
async fn bad_input_to_the_application_is_a_400_that_says_what_is_wrong_and_writes_nothing() {
    let a = app();
    let cases: Vec<(Method, &str, Option<Value>, &str)> = vec![
        (
            Method::GET,
            "/api/v1/analytics?period=hourly",
            None,
            "bad query string",
        ),
        (
            Method::GET,
            "/api/v1/analytics?from_ms=9&to_ms=3",
            None,
            "from_ms 9 is not before to_ms 3",
        ),
        (
            Method::POST,
            "/api/v1/jobs",
            Some(
                json!({"queue": "pdf", "kind": "generate_qr_pdf", "tenant": "ghost", "payload": {"template_id": 1}}),
            ),
            "invalid job: tenant \"ghost\" not found",
        ),
        (
            Method::POST,
            "/api/v1/jobs",
            Some(json!({"queue": "maintenance", "kind": "backup_tenants", "payload": {"keep": 0}})),
            "keep",
        ),
    ];
    for (m, p, body, wanted) in cases {
        let (s, v) = ok(&a.app, m.clone(), p, body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{m} {p}: {v}");
        assert!(error_of(&v).contains(wanted), "{m} {p}: {v}");
    }
    assert!(
        a.store.stats().unwrap().queues.is_empty(),
        "nothing was enqueued"
    );
}

#[tokio::test]
async fn analytics_are_queued_then_served_from_the_cache() {
    let a = app();
    seed(
        a.data.tenants(),
        &SeedOptions {
            tenants: 3,
            templates_per_tenant: 2,
            scans_per_tenant: 40,
            ..Default::default()
        },
    )
    .unwrap();
    let path = "/api/v1/analytics?period=weekly";
    let (s, v) = ok(&a.app, Method::GET, path, None).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let job = v["job_id"].as_i64().unwrap();
    // Asked again while pending: the same job, not a second one.
    let (_, again) = ok(&a.app, Method::GET, path, None).await;
    assert_eq!(again["job_id"].as_i64(), Some(job));

    // A worker runs the job (here: the handler's function directly).
    let q: jobd_handlers::analytics::AnalyticsQuery =
        serde_json::from_value(a.store.get(job).unwrap().payload).unwrap();
    jobd_handlers::analytics::analytics(&a.store, &a.data, &q, &Reporter::silent()).unwrap();
    let (s, v) = ok(&a.app, Method::GET, path, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["cached"], true);
    assert_eq!(v["result"]["total_scans"], 120);
}
