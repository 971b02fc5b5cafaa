//! The HTTP API (axum, JSON) that `jobd serve` runs beside the workers and
//! the scheduler.
//!
//! Every `/api/v1` route needs `Authorization: Bearer <token>` (compared in
//! constant time; never logged): the daemon's own token (admin), or one of
//! the file's API tokens, each with a role — `admin` everything, `producer`
//! enqueue and read jobs, `worker` the worker protocol and its own jobs
//! (403 otherwise).  `/healthz` and `/metrics` are open, for
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
//! * `console` — the routes the operations console reads and acts through:
//!   the overview (throughput, timing, health from the rollups), workers,
//!   who the caller is, deleting a job, a schedule's page and actions.
//! * `protocol` — the worker protocol: claim (long-polling), acknowledge,
//!   heartbeat, progress, for workers in any language.
//! * `metrics` — `GET /metrics` in Prometheus' text format, encoded by
//!   `prometheus-client` (histograms of run time and queue wait, process
//!   metrics).
//! * `listen` — the accept loop: timeouts, a connection cap below the
//!   file limit ([`serve_with`], [`ServeOptions`]).
//! * `static/` — the console's page, script and style, served as they are
//!   (every URL in them relative: [`at_base_path`] puts it all under a
//!   prefix).

mod api;
mod console;
mod listen;
pub(crate) mod metrics;
pub mod protocol;

pub use api::{blocking, query, ApiResult};
pub use listen::{raise_file_limit, serve_with, ServeOptions};

use jobd::worker::Catalog;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use jobd::store::Role;
use jobd::worker::CommitWatch;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use utoipa::OpenApi as _;

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
    /// Queues only remote workers serve: claims for them are accepted
    /// before any job names them.
    remote_queues: Arc<Vec<String>>,
    /// Commits to the file, for long polls.
    pub(crate) commits: CommitWatch,
    /// Remote workers registered lately, with when and what (registration
    /// is refreshed at a claim at most every few seconds).
    pub(crate) registered: Arc<Mutex<HashMap<String, (Instant, String)>>>,
    /// Tokens of the file looked up lately: hash → caller, and when.
    tokens: Arc<Mutex<TokenCache>>,
    /// More of the daemon's health for `/healthz` (the e-mail server, say).
    pub(crate) checks: Arc<Vec<(String, HealthCheck)>>,
}

/// One part of the daemon's health: `Ok`, or what is wrong.  Runs on the
/// blocking pool; it should answer within a few seconds (and cache).
pub type HealthCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Token hash → who presents it, and since when that is known.
type TokenCache = HashMap<[u8; 32], (Caller, Instant)>;

/// Who made a request: the token's name and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// How long a looked-up token is trusted before it is looked up again (a
/// revoked token stops working within this).
const TOKEN_CACHE: Duration = Duration::from_secs(2);

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
            store: store.clone(),
            token_hash: Sha256::digest(token.as_bytes()).into(),
            catalog: None,
            scheduler: false,
            remote_queues: Arc::new(Vec::new()),
            commits: CommitWatch::start(&store),
            registered: Arc::default(),
            tokens: Arc::default(),
            checks: Arc::default(),
        })
    }

    /// Queues only remote workers serve: claims for them are accepted
    /// before any job names them, and jobs of any kind are accepted on them
    /// (the remote workers name their kinds; the catalog does not know them).
    pub fn remote_queues(mut self, queues: impl IntoIterator<Item = String>) -> ApiState {
        self.remote_queues = Arc::new(queues.into_iter().collect());
        self
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

    /// Report `check` in `/healthz` under `name` (`"ok"`, or
    /// `{"error": …}`; the daemon's status stays ok: its queue works).
    pub fn health_check(mut self, name: &str, check: HealthCheck) -> ApiState {
        let mut checks: Vec<(String, HealthCheck)> = self.checks.iter().cloned().collect();
        checks.push((name.to_string(), check));
        self.checks = Arc::new(checks);
        self
    }

    /// Report a running scheduler in `/healthz`.
    pub fn with_scheduler(mut self, running: bool) -> ApiState {
        self.scheduler = running;
        self
    }

    /// Who presents this token: the daemon's own (compared in constant
    /// time, as hashes, so not even the length leaks), or one of the file's
    /// tokens (looked up by hash).
    async fn caller(&self, presented: &str) -> ApiResult<Option<Caller>> {
        let h: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if bool::from(h.ct_eq(&self.token_hash)) {
            return Ok(Some(Caller {
                name: "admin".into(),
                role: Role::Admin,
            }));
        }
        if let Some((caller, at)) = self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&h)
        {
            if at.elapsed() < TOKEN_CACHE {
                return Ok(Some(caller.clone()));
            }
        }
        let store = self.store.clone();
        let found = blocking(move || store.api_token(&h)).await?;
        let mut cache = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        match found {
            Some((name, role)) => {
                let caller = Caller { name, role };
                if cache.len() > 1000 {
                    cache.clear();
                }
                cache.insert(h, (caller.clone(), Instant::now()));
                Ok(Some(caller))
            }
            None => {
                cache.remove(&h);
                Ok(None)
            }
        }
    }

    /// Whether only remote workers serve `queue` (see [`ApiState::remote_queues`]).
    pub(crate) fn is_remote_queue(&self, queue: &str) -> bool {
        self.remote_queues.iter().any(|r| r == queue)
    }

    /// A claim's queues are configured, remote, or known to the file.
    pub(crate) async fn check_queues(&self, queues: &[String]) -> ApiResult<()> {
        for q in queues {
            let configured = self.remote_queues.iter().any(|r| r == q)
                || self
                    .catalog
                    .as_ref()
                    .is_some_and(|c| c.queues().any(|c| c == q));
            if configured {
                continue;
            }
            let (store, name) = (self.store.clone(), q.clone());
            if !blocking(move || store.knows_queue(&name)).await? {
                return Err(ApiError::bad_request(format!(
                    "unknown queue {q:?}: no job, configuration or worker knows it \
                     (a queue only remote workers serve goes in jobd.toml: [queues] {q} = 0)"
                )));
            }
        }
        Ok(())
    }

    /// Register (or refresh) a remote worker with its queues and kinds, at
    /// most every few seconds unless they change.
    pub(crate) async fn register(
        &self,
        worker: &str,
        host: Option<&str>,
        pid: Option<u32>,
        queues: &[String],
        kinds: Option<&[String]>,
    ) -> ApiResult<()> {
        let what = serde_json::json!([queues, kinds]).to_string();
        let refresh = self.store.options().worker_liveness / 4;
        {
            let seen = self.registered.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, w)) = seen.get(worker) {
                if *w == what && at.elapsed() < refresh {
                    return Ok(());
                }
            }
        }
        let (store, w) = (self.store.clone(), worker.to_string());
        let host = host.unwrap_or("remote").to_string();
        let ks = match kinds {
            Some(k) => k.to_vec(),
            None => vec![jobd::store::ANY_KIND.to_string()],
        };
        let qs = queues.to_vec();
        blocking(move || {
            let qs: Vec<&str> = qs.iter().map(String::as_str).collect();
            let ks: Vec<&str> = ks.iter().map(String::as_str).collect();
            store.register_worker(&w, &host, pid.unwrap_or(0), &qs, &ks)
        })
        .await?;
        let mut seen = self.registered.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > 10_000 {
            seen.clear();
        }
        seen.insert(worker.to_string(), (Instant::now(), what));
        Ok(())
    }

    /// The claimed jobs this worker runs; any of a kind it does not run is
    /// given back (to be claimed by a worker that does, a second later, then
    /// later each time it comes back to one that does not).
    pub(crate) async fn keep_runnable(
        &self,
        worker: &str,
        jobs: Vec<jobd::store::ClaimedJob>,
        kinds: Option<&[String]>,
    ) -> ApiResult<Vec<jobd::store::ClaimedJob>> {
        let Some(kinds) = kinds else {
            return Ok(jobs);
        };
        let (keep, back): (Vec<_>, Vec<_>) =
            jobs.into_iter().partition(|j| kinds.contains(&j.kind));
        if !back.is_empty() {
            let (store, w) = (self.store.clone(), worker.to_string());
            blocking(move || {
                for j in &back {
                    let note = format!("worker {w} does not run kind {:?}; given back", j.kind);
                    // As an in-process worker hands back a kind it has no
                    // handler for: 1 s, doubling with each claim of the job,
                    // up to a minute.
                    let after = Duration::from_secs(1 << (j.attempt - 1).clamp(0, 6))
                        .min(Duration::from_secs(60));
                    match store.release_for(j.id, j.lease_token, after, &note) {
                        Ok(()) | Err(Error::LeaseLost { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })
            .await?;
        }
        Ok(keep)
    }
}

/// The whole HTTP surface: the API, `/healthz`, `/metrics`, the console.
pub fn router(state: ApiState) -> Router {
    router_with(state, Router::new())
}

/// [`router`] with an application's own routes under `/api/v1` (behind the
/// same token, with the same JSON errors).  Its handlers reach the queue
/// through `State<ApiState>` ([`ApiState::store`]) and run store calls with
/// [`blocking`].
pub fn router_with(state: ApiState, app: Router<ApiState>) -> Router {
    let (api, doc) = api_routes();
    let doc = Arc::new(doc);
    // The application's routes: beside the server's, a producer's to call,
    // not in its OpenAPI description.
    let api = if app.has_routes() {
        api.merge(app.route_layer(axum::middleware::from_fn(|r, n| need(Role::Producer, r, n))))
    } else {
        api
    };
    let api = api
        .fallback(api::not_found)
        .layer(axum::Extension(doc))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .layer(axum::middleware::from_fn(errors_as_json));
    Router::new()
        .route("/", get(dashboard))
        .route("/dashboard.js", get(dashboard_js))
        .route("/dashboard.css", get(dashboard_css))
        .nest("/api/v1", api)
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(metrics::metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(no_framing))
        .with_state(state)
}

/// The server's `/api/v1` routes and their OpenAPI description, made from
/// the same declarations (each handler's `#[utoipa::path]`): a route cannot
/// be served without being described, nor described without being served.
fn api_routes() -> (Router<ApiState>, utoipa::openapi::OpenApi) {
    use protocol as p;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    let admin = OpenApiRouter::<ApiState>::new()
        .routes(routes!(api::retry_matching))
        .routes(routes!(api::cancel_matching))
        .routes(routes!(api::cancel))
        .routes(routes!(api::retry))
        .routes(routes!(console::delete_job))
        .routes(routes!(api::queue_action))
        .routes(routes!(api::add_schedule))
        .routes(routes!(console::replace_schedule, api::remove_schedule))
        .routes(routes!(console::schedule_action))
        .route_layer(axum::middleware::from_fn(|r, n| need(Role::Admin, r, n)));
    let producer = OpenApiRouter::<ApiState>::new()
        .routes(routes!(api::enqueue, api::list_jobs))
        .routes(routes!(api::queues))
        .routes(routes!(console::overview))
        .routes(routes!(api::schedules))
        .routes(routes!(console::get_schedule))
        .routes(routes!(console::workers))
        .route_layer(axum::middleware::from_fn(|r, n| need(Role::Producer, r, n)));
    let worker = OpenApiRouter::<ApiState>::new()
        .routes(routes!(p::claim))
        .routes(routes!(p::ack))
        .routes(routes!(p::worker_heartbeat))
        .routes(routes!(p::worker_stop))
        .routes(routes!(p::job_heartbeat))
        .routes(routes!(p::job_progress))
        .routes(routes!(p::job_complete))
        .routes(routes!(p::job_fail))
        .routes(routes!(p::job_release))
        .route_layer(axum::middleware::from_fn(|r, n| need(Role::Worker, r, n)));
    // Any role: a worker token reads only its own workers' jobs.
    let any = OpenApiRouter::<ApiState>::new()
        .routes(routes!(api::get_job))
        .routes(routes!(console::whoami))
        .routes(routes!(openapi_json));
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(any)
        .merge(admin)
        .merge(producer)
        .merge(worker)
        .split_for_parts();
    doc.servers = Some(vec![utoipa::openapi::Server::new("/api/v1")]);
    (router, doc)
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "jobd",
        description = "The HTTP API of a jobd queue: enqueue and read jobs, queues, schedules, the console's reads, and the worker protocol. Every route needs `Authorization: Bearer <token>`; a token's role (admin, producer, worker) says which routes it may call.",
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(ErrorBody)),
)]
struct ApiDoc;

/// The bearer token every route needs.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// An error: what was wrong, for the client.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    pub error: String,
}

/// This API's OpenAPI description.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "api",
    responses((status = 200, description = "the OpenAPI 3.1 description of /api/v1", body = serde_json::Value))
)]
async fn openapi_json(
    axum::Extension(doc): axum::Extension<Arc<utoipa::openapi::OpenApi>>,
) -> Response {
    match doc.to_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `router` under a path prefix, for a reverse proxy that passes the
/// prefix on (`base_path = "/jobd"`: the console at `/jobd/`, the API at
/// `/jobd/api/v1`); `/jobd` redirects to `/jobd/`, so that the console's
/// relative URLs resolve under the prefix.  `""` or `"/"` is no prefix.
/// A prefix is `/` and segments of letters, digits, `-`, `_`, `.` and `~`.
pub fn at_base_path(router: Router, base: &str) -> jobd::Result<Router> {
    let base = base.trim_end_matches('/');
    if base.is_empty() {
        return Ok(router);
    }
    let ok = base.starts_with('/')
        && base[1..].split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
        });
    if !ok {
        return Err(Error::invalid(
            "base_path",
            format!(
                "{base:?} is not a path prefix such as \"/jobd\" (segments of letters, \
                 digits, '-', '_', '.' and '~')"
            ),
        ));
    }
    let base = base.to_string();
    let slash = format!("{base}/");
    Ok(Router::new().fallback(move |mut req: Request| {
        let (inner, base, slash) = (router.clone(), base.clone(), slash.clone());
        async move {
            let path = req.uri().path();
            if path == base {
                return axum::response::Redirect::permanent(&slash).into_response();
            }
            let Some(rest) = path.strip_prefix(&base).filter(|r| r.starts_with('/')) else {
                return ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("nothing here: jobd is under {slash}"),
                )
                .into_response();
            };
            let mut target = rest.to_string();
            if let Some(q) = req.uri().query() {
                target.push('?');
                target.push_str(q);
            }
            match target.parse() {
                Ok(uri) => *req.uri_mut() = uri,
                Err(_) => return StatusCode::BAD_REQUEST.into_response(),
            }
            tower::ServiceExt::oneshot(inner, req).await.into_response()
        }
    }))
}

/// Let through callers whose role is `role`, or admin; 403 for the rest.
async fn need(role: Role, req: Request, next: Next) -> Response {
    let allowed = req
        .extensions()
        .get::<Caller>()
        .map(|c| (c.role == role || c.role == Role::Admin, c.role));
    match allowed {
        Some((true, _)) => next.run(req).await,
        Some((false, has)) => ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this token's role ({}) may not {} {}: it needs {} (or admin)",
                has.as_str(),
                req.method(),
                req.uri().path(),
                role.as_str()
            ),
        )
        .into_response(),
        None => ApiError::new(StatusCode::UNAUTHORIZED, "no API token").into_response(),
    }
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
const DASHBOARD_CSS: &str = include_str!("static/dashboard.css");

/// Only this origin's script and no inline script: text from the queue
/// could never run even if it reached the page as markup.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'";

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

async fn dashboard_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        DASHBOARD_CSS,
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

async fn auth(State(state): State<ApiState>, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(str::to_string);
    let caller = match presented {
        Some(token) => match state.caller(&token).await {
            Ok(c) => c,
            Err(e) => return e.into_response(),
        },
        None => None,
    };
    match caller {
        Some(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        None => {
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
    pub(crate) status: StatusCode,
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
            Error::InvalidState { .. }
            | Error::Conflict { .. }
            | Error::ScheduleExists { .. }
            | Error::LeaseLost { .. } => StatusCode::CONFLICT,
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
