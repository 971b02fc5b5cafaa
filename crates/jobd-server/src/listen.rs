//! The accept loop: HTTP/1.1 connections with a header-read timeout, a
//! request timeout, and a cap on open connections below the process's file
//! limit — so idle or half-sent requests cannot lock everyone out.
//!
//! At the cap, or when `accept` runs out of file descriptors, the oldest
//! connection with no request in progress (one still sending its headers,
//! or idle between keep-alive requests) is closed to make room: a flood of
//! idle sockets costs them their place, not the next real request.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;

/// Limits of [`serve_with`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Connections open at once; past it the oldest idle one is closed.
    pub max_connections: usize,
    /// A client must send a request's whole header within this.
    pub header_read_timeout: Duration,
    /// A request (its body included) must be answered within this; past
    /// it the client gets a 503.
    pub request_timeout: Duration,
}

impl Default for ServeOptions {
    /// Timeouts of 10 s and 60 s; a cap of three quarters of the soft file
    /// limit (what is left is for the queue, tenant databases and logs).
    fn default() -> ServeOptions {
        let files = nofile_limit().map_or(1024, |(soft, _)| soft);
        ServeOptions {
            max_connections: (files - files / 4).clamp(64, 65_536) as usize,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// The soft and hard `RLIMIT_NOFILE`.
fn nofile_limit() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid resource and a struct for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    Some((lim.rlim_cur, lim.rlim_max))
}

/// Raise this process's soft file limit to its hard limit (a daemon serving
/// many connections needs more than the usual 1024), and return the soft
/// limit in force.  For a program to call at start; changes nothing else.
pub fn raise_file_limit() -> Option<u64> {
    let (soft, hard) = nofile_limit()?;
    if soft < hard {
        let lim = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: a valid resource and limits within the hard limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Some(soft);
        }
    }
    nofile_limit().map(|(soft, _)| soft)
}

/// One open connection: how to close it, and whether a request is running.
struct Conn {
    close: CancellationToken,
    requests: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Conns {
    next: u64,
    open: BTreeMap<u64, Conn>,
}

impl Conns {
    /// Close the oldest connection with no request in progress.
    fn shed_one(&mut self) -> bool {
        let idle = self
            .open
            .iter()
            .find(|(_, c)| c.requests.load(Ordering::Acquire) == 0)
            .map(|(id, _)| *id);
        match idle.and_then(|id| self.open.remove(&id)) {
            Some(conn) => {
                conn.close.cancel();
                true
            }
            None => false,
        }
    }
}

/// Serve `router` on `listener` with `opts` until `shutdown` resolves; then
/// stop accepting, let requests in progress finish (up to the request
/// timeout) and return.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        max_connections = opts.max_connections,
        header_read_timeout = ?opts.header_read_timeout,
        request_timeout = ?opts.request_timeout,
        "HTTP API listening"
    );
    let conns = Arc::new(Mutex::new(Conns::default()));
    let stopping = CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    tokio::pin!(shutdown);
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors (or another passing failure):
                // make room and try again shortly instead of spinning.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    tracing::warn!(error = %e, "accepting a connection failed; closing an idle one");
                    last_warning = Some(tokio::time::Instant::now());
                }
                conns.lock().unwrap().shed_one();
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let (id, close, requests) = {
            let mut c = conns.lock().unwrap();
            if c.open.len() >= opts.max_connections && !c.shed_one() {
                // Every connection is busy with a request: this one waits
                // for none of them; it is closed at once.
                drop(stream);
                continue;
            }
            let id = c.next;
            c.next += 1;
            let conn = Conn {
                close: stopping.child_token(),
                requests: Arc::new(AtomicUsize::new(0)),
            };
            let handles = (conn.close.clone(), conn.requests.clone());
            c.open.insert(id, conn);
            (id, handles.0, handles.1)
        };
        let service = RequestService {
            inner: TowerToHyperService::new(router.clone()),
            requests,
            timeout: opts.request_timeout,
        };
        let header_read_timeout = opts.header_read_timeout;
        let (conns, stopping) = (conns.clone(), stopping.clone());
        tasks.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = close.cancelled() => {
                    if stopping.is_cancelled() {
                        // Shutdown: finish what runs, then close.
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.as_mut().await;
                    }
                    // Shed: dropped, so closed at once.
                }
            }
            conns.lock().unwrap().open.remove(&id);
        });
    }
    drop(listener);
    stopping.cancel();
    tasks.close();
    if tokio::time::timeout(opts.request_timeout, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("requests still running at shutdown were cut off");
    }
    Ok(())
}

/// The router as a hyper service that counts its connection's requests in
/// progress and answers 503 past the request timeout.
#[derive(Clone)]
struct RequestService {
    inner: TowerToHyperService<Router>,
    requests: Arc<AtomicUsize>,
    timeout: Duration,
}

impl hyper::service::Service<Request<hyper::body::Incoming>> for RequestService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: Request<hyper::body::Incoming>) -> Self::Future {
        let requests = self.requests.clone();
        requests.fetch_add(1, Ordering::AcqRel);
        let (call, timeout) = (self.inner.call(req), self.timeout);
        Box::pin(async move {
            let answered = tokio::time::timeout(timeout, call).await;
            requests.fetch_sub(1, Ordering::AcqRel);
            Ok(match answered {
                Ok(Ok(resp)) => resp,
                Ok(Err(never)) => match never {},
                Err(_) => {
                    tracing::warn!(?timeout, "request timed out");
                    let body = serde_json::json!({
                        "error": format!("the request took longer than {} s", timeout.as_secs())
                    });
                    Response::builder()
                        .status(StatusCode::SERVICE_UNAVAILABLE)
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Body::from(body.to_string()))
                        .expect("a static response")
                }
            })
        })
    }
}
