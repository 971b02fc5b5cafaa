//! The HTTP API (axum, JSON) that `jobd serve` runs beside the workers and
//! the scheduler.
//!
//! Every `/api/v1` route needs `Authorization: Bearer <token>` (compared in
//! constant time; never logged).  `/healthz` and `/metrics` are open, for
//! load balancers and Prometheus.  Errors are JSON `{"error": "..."}` with a
//! status that says whose fault it is: 400 bad input, 401 no or wrong token,
//! 404 no such thing, 409 not in this state, 413 body too large, 503 busy,
//! 507 disk full, 500 anything else — whose details (paths, SQL) go to the
//! log, not the client.
//!
//! * this module — [`ApiState`] (store, token, catalog), [`router`] and
//!   [`router_with`] (an application's routes beside the server's), the
//!   token check, framing headers, JSON errors, the dashboard page.
//! * `api` — the `/api/v1` routes and `/healthz`; [`blocking`] and
//!   [`query`] for an application's own routes.
//! * `metrics` — `GET /metrics` in Prometheus' text format.
//! * `listen` — the accept loop: timeouts, a connection cap below the
//!   file limit ([`serve_with`], [`ServeOptions`]).
//! * `static/` — the dashboard's HTML and script, served as they are.

mod api;
mod listen;
pub(crate) mod metrics;

pub use api::{blocking, query, ApiResult};
pub use listen::{raise_file_limit, serve_with, ServeOptions};

use jobd::worker::Catalog;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use jobd::error::Error;
use jobd::store::Store;

/// The largest request body accepted (a batch of many jobs fits).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The shortest API token accepted, in bytes (`jobd init` writes 64 hex
/// characters: 32 random bytes).
pub const MIN_TOKEN_BYTES: usize = 32;

/// What the API serves.
#[derive(Clone)]
pub struct ApiState {
    pub(crate) store: Store,
    token_hash: [u8; 32],
    /// The queues and kinds the daemon's workers run: a job (or schedule)
    /// none of them nor any live worker on the file could run is refused.
    /// `None` accepts any job.
    pub(crate) catalog: Option<Catalog>,
    /// Whether this process runs a scheduler (reported by `/healthz`).
    pub(crate) scheduler: bool,
}

impl ApiState {
    /// An API on `store` guarded by `token` (at least [`MIN_TOKEN_BYTES`]).
    pub fn new(store: Store, token: &str) -> jobd::Result<ApiState> {
        if token.len() < MIN_TOKEN_BYTES {
            return Err(Error::invalid(
                "api token",
                format!("must be at least {MIN_TOKEN_BYTES} bytes (jobd init makes one)"),
            ));
        }
        Ok(ApiState {
            store,
            token_hash: Sha256::digest(token.as_bytes()).into(),
            catalog: None,
            scheduler: false,
        })
    }

    /// The queue the API serves (for an application's own routes).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Refuse jobs and schedules that no worker could run: of a queue or
    /// kind neither in `catalog` nor registered by a live worker on the
    /// file, or with a payload `catalog`'s handler of their kind would not
    /// decode.
    pub fn catalog(mut self, catalog: Catalog) -> ApiState {
        self.catalog = Some(catalog);
        self
    }

    /// Report a running scheduler in `/healthz`.
    pub fn with_scheduler(mut self, running: bool) -> ApiState {
        self.scheduler = running;
        self
    }

    /// Compare a presented token with ours in constant time (hashes are
    /// compared, so not even the length leaks).
    fn token_ok(&self, presented: &str) -> bool {
        let h: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(h.ct_eq(&self.token_hash))
    }
}

/// The whole HTTP surface: the API, `/healthz`, `/metrics`, the dashboard.
pub fn router(state: ApiState) -> Router {
    router_with(state, Router::new())
}

/// [`router`] with an application's own routes under `/api/v1` (behind the
/// same token, with the same JSON errors).  Its handlers reach the queue
/// through `State<ApiState>` ([`ApiState::store`]) and run store calls with
/// [`blocking`].
pub fn router_with(state: ApiState, app: Router<ApiState>) -> Router {
    let api = Router::new()
        .route("/jobs", post(api::enqueue).get(api::list_jobs))
        .route("/jobs/retry", post(api::retry_matching))
        .route("/jobs/cancel", post(api::cancel_matching))
        .route("/jobs/{id}", get(api::get_job))
        .route("/jobs/{id}/cancel", post(api::cancel))
        .route("/jobs/{id}/retry", post(api::retry))
        .route("/queues", get(api::queues))
        .route("/queues/{name}/{action}", post(api::queue_action))
        .route("/schedules", get(api::schedules).post(api::add_schedule))
        .route(
            "/schedules/{name}",
            get(api::get_schedule).delete(api::remove_schedule),
        )
        .merge(app)
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .layer(axum::middleware::from_fn(errors_as_json));
    Router::new()
        .route("/", get(dashboard))
        .route("/dashboard.js", get(dashboard_js))
        .nest("/api/v1", api)
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(metrics::metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(no_framing))
        .with_state(state)
}

/// No page of jobd's may be framed by another site (its pause and
/// cancel-all buttons could be clickjacked): `X-Frame-Options` for old
/// browsers, CSP `frame-ancestors` (on the dashboard) for the rest.
async fn no_framing(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    headers.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    resp
}

/// Every error of the API is `{"error": ...}`, including those axum makes
/// itself (405 with an empty body, a rejected extractor's plain text); the
/// other headers (`Allow`) stay.
async fn errors_as_json(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let resp = next.run(req).await;
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if resp.status().as_u16() < 400 || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match (parts.status, text.is_empty()) {
        (StatusCode::METHOD_NOT_ALLOWED, _) => {
            let allowed = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            format!("method {method} not allowed here (allowed: {allowed})")
        }
        (status, true) => status.canonical_reason().unwrap_or("error").to_lowercase(),
        (_, false) => text,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    let body = serde_json::json!({ "error": message }).to_string();
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// Serve `router` on `listener` until `shutdown` resolves, with the default
/// [`ServeOptions`] (timeouts, a connection cap below the file limit).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, ServeOptions::default(), shutdown).await
}

/// The web dashboard: one self-contained page (no CDN; works offline).  It
/// asks for the token and keeps it in the browser.
const DASHBOARD: &str = include_str!("static/dashboard.html");
const DASHBOARD_JS: &str = include_str!("static/dashboard.js");

/// Only this origin's script and no inline script: text from the queue
/// could never run even if it reached the page as markup.
const CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'";

async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        DASHBOARD,
    )
        .into_response()
}

async fn dashboard_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        DASHBOARD_JS,
    )
        .into_response()
}

async fn auth(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match presented {
        Some(token) if state.token_ok(token) => next.run(req).await,
        _ => {
            let mut resp = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API token: send Authorization: Bearer <token>",
            )
            .into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            resp
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is
/// case-insensitive (RFC 9110, 11.1), so `bearer` and `BEARER` work too.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once([' ', '\t'])?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
        .filter(|t| !t.is_empty())
}

/// An error response: a status and a message for the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        if let Error::PartlyDone { done, what, source } = e {
            let inner = ApiError::from(*source);
            return ApiError::new(
                inner.status,
                format!(
                    "{}; {done} jobs were {what} in earlier batches",
                    inner.message
                ),
            );
        }
        let status = match &e {
            Error::InvalidInput { .. } => StatusCode::BAD_REQUEST,
            Error::NotFound { .. } | Error::ScheduleNotFound { .. } | Error::Missing { .. } => {
                StatusCode::NOT_FOUND
            }
            Error::InvalidState { .. } | Error::Conflict { .. } | Error::ScheduleExists { .. } => {
                StatusCode::CONFLICT
            }
            Error::Busy { .. } | Error::Pool(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::IoFault { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match status {
            StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(error = %e, "API request failed");
                "internal error (details are in the daemon's log)".to_string()
            }
            StatusCode::SERVICE_UNAVAILABLE if matches!(e, Error::IoFault { .. }) => {
                tracing::warn!(error = %e, "API request failed on a passing I/O fault");
                "the queue's disk had a passing I/O error; nothing was changed, try again"
                    .to_string()
            }
            StatusCode::SERVICE_UNAVAILABLE => "the queue is busy; try again".to_string(),
            StatusCode::INSUFFICIENT_STORAGE => {
                "the queue's disk is full; nothing was written".to_string()
            }
            _ => e.to_string(),
        };
        ApiError::new(status, message)
    }
}
