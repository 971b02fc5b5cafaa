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

mod api;
pub(crate) mod metrics;

use crate::worker::Catalog;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::Error;
use crate::handlers::DataDir;
use crate::store::Store;

/// The largest request body accepted (a batch of many jobs fits).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What the API serves.
#[derive(Clone)]
pub struct ApiState {
    pub(crate) store: Store,
    token_hash: [u8; 32],
    pub(crate) data: Option<DataDir>,
    /// The queues and kinds the daemon's workers run: a job (or schedule)
    /// none of them nor any live worker on the file could run is refused.
    /// `None` accepts any job.
    pub(crate) catalog: Option<Catalog>,
    /// Whether this process runs a scheduler (reported by `/healthz`).
    pub(crate) scheduler: bool,
}

impl ApiState {
    /// An API on `store` guarded by `token` (at least 16 characters).
    pub fn new(store: Store, token: &str) -> crate::Result<ApiState> {
        if token.len() < 16 {
            return Err(Error::invalid(
                "api token",
                "must be at least 16 characters (jobd init makes one)",
            ));
        }
        Ok(ApiState {
            store,
            token_hash: Sha256::digest(token.as_bytes()).into(),
            data: None,
            catalog: None,
            scheduler: false,
        })
    }

    /// The data directory (analytics requests need it).
    pub fn data(mut self, data: DataDir) -> ApiState {
        self.data = Some(data);
        self
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

/// The whole HTTP surface: the API, `/healthz`, `/metrics`.
pub fn router(state: ApiState) -> Router {
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
        .route("/analytics", get(api::analytics))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/", get(dashboard))
        .route("/dashboard.js", get(dashboard_js))
        .nest("/api/v1", api)
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(metrics::metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serve `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), "HTTP API listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The web dashboard: one self-contained page (no CDN; works offline).  It
/// asks for the token and keeps it in the browser.
const DASHBOARD: &str = include_str!("static/dashboard.html");
const DASHBOARD_JS: &str = include_str!("static/dashboard.js");

/// Only this origin's script and no inline script: text from the queue
/// could never run even if it reached the page as markup.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'unsafe-inline'";

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
        .and_then(|v| v.strip_prefix("Bearer "));
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
            Error::NotFound { .. }
            | Error::ScheduleNotFound { .. }
            | Error::TenantNotFound { .. } => StatusCode::NOT_FOUND,
            Error::InvalidState { .. } | Error::Conflict { .. } | Error::ScheduleExists { .. } => {
                StatusCode::CONFLICT
            }
            Error::Busy { .. } | Error::Pool(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match status {
            StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(error = %e, "API request failed");
                "internal error (details are in the daemon's log)".to_string()
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
