//! The OpenAPI description at `/api/v1/openapi.json`: made from the same
//! declarations as the router, so every route it lists is served (with no
//! other method on its path) and the router serves no route it does not
//! list; each operation has its responses and every `$ref` resolves.

use axum::http::{Method, StatusCode};
use jobd::Store;
use jobd_server::{router, ApiState};
use jobd_testkit::api::{call, TOKEN};
use serde_json::Value;

fn app() -> (tempfile::TempDir, axum::Router) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    (dir, router(ApiState::new(store, TOKEN).unwrap()))
}

async fn document(app: &axum::Router) -> Value {
    let (s, text) = call(app, Method::GET, "/api/v1/openapi.json", Some(TOKEN), None).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// A path of the document with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{id}", "1")
        .replace("{name}", "x")
        .replace("{action}", "pause")
}

/// Whether the router answered from a route of its own (not its fallback,
/// not "this method is not allowed here").
fn routed(status: StatusCode, body: &str) -> bool {
    status != StatusCode::METHOD_NOT_ALLOWED && !body.contains("no such API route")
}

#[tokio::test]
async fn the_document_lists_every_route_the_router_serves() {
    let (_dir, app) = app();
    let doc = document(&app).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    assert_eq!(doc["servers"][0]["url"], "/api/v1");
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        let url = format!("/api/v1{}", concrete(path));
        let documented: Vec<String> = item.as_object().unwrap().keys().cloned().collect();
        for method in ["get", "post", "put", "delete", "patch"] {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, body) = call(&app, m, &url, Some(TOKEN), Some("{}".into())).await;
            if documented.iter().any(|d| d == method) {
                operations += 1;
                assert!(routed(status, &body), "{method} {path}: {status} {body}");
                let op = &item[method];
                assert!(
                    op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                    "{method} {path}"
                );
                assert!(op["tags"][0].as_str().is_some(), "{method} {path}: no tag");
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}: served but not described: {body}"
                );
            }
        }
    }
    // What the console and the clients use, by name.
    for (method, path) in [
        ("post", "/jobs"),
        ("get", "/jobs"),
        ("get", "/jobs/{id}"),
        ("delete", "/jobs/{id}"),
        ("post", "/jobs/{id}/retry"),
        ("post", "/jobs/retry"),
        ("get", "/overview"),
        ("get", "/workers"),
        ("get", "/whoami"),
        ("put", "/schedules/{name}"),
        ("post", "/schedules/{name}/{action}"),
        ("post", "/worker/claim"),
        ("post", "/worker/ack"),
        ("post", "/jobs/{id}/complete"),
        ("get", "/openapi.json"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is not described"
        );
    }
    assert!(operations >= 29, "{operations} operations");
    // A path it does not list is not served.
    let (s, body) = call(&app, Method::GET, "/api/v1/nope", Some(TOKEN), None).await;
    assert!(!routed(s, &body), "{s} {body}");
}

#[tokio::test]
async fn every_reference_resolves_and_the_bearer_scheme_is_declared() {
    let (_dir, app) = app();
    let doc = document(&app).await;
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in ["ErrorBody", "ClaimRequest", "AckRequest", "EndRequest"] {
        assert!(schemas.contains_key(name), "{name} missing");
    }
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r}"));
        assert!(schemas.contains_key(name), "{r} does not resolve");
    }
    // The document needs a token, as every /api/v1 route does.
    let (s, _) = call(&app, Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
