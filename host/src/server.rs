//! The HTTP server: axum with request ids, tracing, TCP_NODELAY, a deadline for request heads
//! ([`crate::connections`]), per-client rate limits,
//! `/metrics` (behind a bearer token, or on its own loopback listener), the chat WebSocket
//! (`/chat/ws`, [`crate::websocket`]), and a graceful shutdown that drains in-flight requests
//! and WebSocket answers. CORS is the components' (`allowed_origins`), so it
//! is the same under `spin up`; the runner only puts the same headers on the answers it makes
//! itself.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use axum::middleware::Next;
use axum::routing::{any, get};
use axum::Router;
use futures::FutureExt;
use metrics_exporter_prometheus::PrometheusHandle;
use rag_core::cors::AllowedOrigins;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::ServerSettings;
use crate::connections;
use crate::errors::json_error;
use crate::rate_limit::{self, RateLimits};
use crate::runtime::{Incoming, Runtime};
use crate::websocket::{self, ChatSocket, Sockets};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Clone)]
struct AppState {
    runtime: Arc<Runtime>,
    base_path: Arc<str>,
}

/// Who may read `/metrics`: with a token, whoever presents it; without, only the separate
/// listener (which must then be on loopback).
#[derive(Clone)]
struct MetricsAccess {
    runtime: Arc<Runtime>,
    handle: PrometheusHandle,
    token_digest: Option<[u8; 32]>,
}

impl MetricsAccess {
    fn new(runtime: Arc<Runtime>, settings: &ServerSettings) -> Self {
        let token = settings.metrics_token.trim();
        Self {
            runtime,
            handle: crate::metrics::install(),
            token_digest: (!token.is_empty()).then(|| Sha256::digest(token.as_bytes()).into()),
        }
    }

    /// Compares digests, in constant time, so neither the token's bytes nor its length leak
    /// through timing.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.token_digest else {
            return true;
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let presented: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        bool::from(presented[..].ct_eq(&expected[..]))
    }
}

pub fn router(runtime: Arc<Runtime>, settings: &ServerSettings) -> Result<Router> {
    build(runtime, settings, &Sockets::new())
}

fn build(runtime: Arc<Runtime>, settings: &ServerSettings, sockets: &Sockets) -> Result<Router> {
    let base_path = settings.base_path();
    let allowed_origins = Arc::new(AllowedOrigins::parse(
        runtime
            .variables
            .get("allowed_origins")
            .map_or("", |resolved| resolved.value.as_str()),
    ));
    let limits = RateLimits::from_settings(settings)?;
    let state = AppState {
        runtime: runtime.clone(),
        base_path: Arc::from(base_path.as_str()),
    };
    // What a WebSocket ask is sent through: the same layers and request path as HTTP.
    let requests = with_layers(
        Router::new().fallback(dispatch).with_state(state.clone()),
        limits.clone(),
        allowed_origins.clone(),
    );
    let mut router = Router::new();
    if !settings.metrics_token.trim().is_empty() {
        router = router.route(
            &format!("{base_path}/metrics"),
            get(metrics).with_state(MetricsAccess::new(runtime, settings)),
        );
    }
    let chat_socket = ChatSocket::new(
        requests,
        &base_path,
        allowed_origins.clone(),
        settings.websocket.clone(),
        sockets.clone(),
    );
    let router = router
        .route(
            &format!("{base_path}/chat/ws"),
            any(websocket::upgrade).with_state(chat_socket),
        )
        .fallback(dispatch)
        .with_state(state);
    Ok(with_layers(router, limits, allowed_origins))
}

/// Rate limits, CORS on the runner's own answers, request ids and the request span.
fn with_layers(
    router: Router,
    limits: Option<Arc<RateLimits>>,
    allowed_origins: Arc<AllowedOrigins>,
) -> Router {
    let router = match limits {
        Some(limits) => router.layer(axum::middleware::from_fn_with_state(
            limits,
            rate_limit::enforce,
        )),
        None => router,
    };
    router
        .layer(axum::middleware::from_fn_with_state(
            allowed_origins,
            cors_on_runner_answers,
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let id = request
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %request.method(), path = %loggable_path(request.uri().path()), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// The path as logs show it. A session id is a bearer secret (whoever holds it reads and
/// deletes the conversation), so the segment after `/session/` is written as `{id}`.
fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    match path.split_once("/session/") {
        Some((before, after)) if !after.is_empty() => {
            let rest = after.find('/').map_or("", |end| &after[end..]);
            format!("{before}/session/{{id}}{rest}").into()
        }
        _ => path.into(),
    }
}

/// The `METRICS_ADDR` listener's app: `/metrics` and nothing else.
fn metrics_router(runtime: Arc<Runtime>, settings: &ServerSettings) -> Result<Router> {
    let loopback = settings.metrics_addr.is_some_and(|a| a.ip().is_loopback());
    if !loopback && settings.metrics_token.trim().is_empty() {
        anyhow::bail!(
            "METRICS_ADDR is not a loopback address; set METRICS_TOKEN too, or bind it to 127.0.0.1"
        );
    }
    Ok(Router::new()
        .route("/metrics", get(metrics))
        .with_state(MetricsAccess::new(runtime, settings)))
}

/// The answers the runner makes itself (rate limits, overload, deadlines, traps, unknown
/// paths) carry the CORS headers the components put on theirs, from the same decision in core,
/// so a page can read why it was refused. An answer that has them (or `Vary`) is left alone.
async fn cors_on_runner_answers(
    State(allowed): State<Arc<AllowedOrigins>>,
    request: Request,
    next: Next,
) -> Response<Body> {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        || headers.contains_key(header::VARY)
    {
        return response;
    }
    for (name, value) in rag_core::cors::headers(&allowed, origin.as_deref(), false) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

async fn metrics(State(access): State<MetricsAccess>, headers: HeaderMap) -> Response<Body> {
    if !access.admits(&headers) {
        let mut response = json_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "metrics need the bearer token set in METRICS_TOKEN",
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    crate::metrics::in_flight(access.runtime.in_flight());
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(Body::from(access.handle.render()))
        .expect("static response parts are valid")
}

async fn dispatch(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response<Body> {
    let path = request.uri().path();
    let path = if state.base_path.is_empty() {
        Some(path.to_string())
    } else {
        path.strip_prefix(&*state.base_path)
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            .map(|rest| {
                if rest.is_empty() {
                    "/".to_string()
                } else {
                    rest.to_string()
                }
            })
    };
    let Some(path) = path else {
        return crate::errors::not_found();
    };
    state
        .runtime
        .handle(Incoming {
            request,
            path,
            client,
            base_path: state.base_path.to_string(),
        })
        .await
}

/// Serves until SIGTERM or SIGINT, then stops accepting and lets in-flight requests finish
/// for up to `SHUTDOWN_GRACE_SECS`. With more than one `SERVER_WORKERS`, each worker is a
/// thread with a single-threaded runtime and its own listener on the port (see
/// [`serve_workers`]); otherwise one listener on the caller's runtime.
pub async fn serve(runtime: Arc<Runtime>, settings: &ServerSettings) -> Result<()> {
    let addr = format!("{}:{}", settings.bind, settings.port);
    let workers = settings.server_workers.resolve();
    if workers <= 1 {
        let listener = TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        return serve_on(listener, runtime, settings).await;
    }
    let listeners = bind_shared(&addr, workers)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    serve_workers(listeners, runtime, settings).await
}

/// Serves on `listener` from the caller's runtime, every connection a task of it.
pub async fn serve_on(
    listener: TcpListener,
    runtime: Arc<Runtime>,
    settings: &ServerSettings,
) -> Result<()> {
    let local = listener.local_addr()?;
    let header_timeout = Duration::from_secs(settings.header_read_timeout_secs);
    let sockets = Sockets::new();
    let app = build(runtime.clone(), settings, &sockets)?
        .into_make_service_with_connect_info::<SocketAddr>();
    serve_metrics(runtime, settings).await?;
    tracing::info!(address = %local, "listening");
    let (stop, stopping) = watch::channel(Stop::Serving);
    let (ended_tx, ended) = mpsc::unbounded_channel();
    // The worker is polled here rather than spawned, so that dropping this future (a test or
    // `host eval` aborting its server) stops it too.
    let worker = async {
        let end = AssertUnwindSafe(worker(
            listener,
            app,
            sockets.clone(),
            header_timeout,
            stopping,
        ))
        .catch_unwind()
        .await;
        let _ = ended_tx.send((0, WorkerEnd::from_result(end)));
        std::future::pending::<()>().await
    };
    let supervised = supervise(
        ended,
        1,
        &stop,
        &sockets,
        Duration::from_secs(settings.shutdown_grace_secs),
        shutdown_signal(),
    );
    tokio::select! {
        result = supervised => result,
        _ = worker => unreachable!("the worker future never ends"),
    }
}

/// `SERVER_WORKERS` threads, each running a single-threaded tokio runtime that accepts from
/// its own listener (the kernel spreads new connections over the listeners of the port), so a
/// connection's request, guest call and response stay on one thread: no work-stealing, no
/// wake-ups across cores on the request path.
///
/// Threads of one process, not processes: what the runtime shares must stay one per process.
/// The instance pools and idle instances, the SQLite connection pools and the write gate, the
/// per-client rate limits, the in-flight permits, the metrics and the WebSocket registry are
/// all built once here and shared by every worker, so a client's budget, `/metrics` and the
/// concurrency cap mean the same as with one runtime.
///
/// A worker that ends on its own (its runtime cannot start, its accept loop fails or panics)
/// stops the process with an error after the others drained within the grace period, rather
/// than being restarted: per-request panics are already contained (hyper's connection tasks,
/// the inline guest call's `catch_unwind`), so one reaching the worker is a bug in the server
/// itself, which a restart would repeat, and a process that silently serves with fewer
/// listeners than it shows is worse than one that exits and is restarted by its supervisor.
pub async fn serve_workers(
    listeners: Vec<std::net::TcpListener>,
    runtime: Arc<Runtime>,
    settings: &ServerSettings,
) -> Result<()> {
    let local = listeners
        .first()
        .context("no listener to serve on")?
        .local_addr()?;
    let count = listeners.len();
    let header_timeout = Duration::from_secs(settings.header_read_timeout_secs);
    let sockets = Sockets::new();
    let app = build(runtime.clone(), settings, &sockets)?
        .into_make_service_with_connect_info::<SocketAddr>();
    serve_metrics(runtime, settings).await?;
    tracing::info!(address = %local, workers = count, "listening");
    let (stop, stopping) = watch::channel(Stop::Serving);
    let (ended_tx, ended) = mpsc::unbounded_channel();
    let mut threads = Vec::with_capacity(count);
    for (index, listener) in listeners.into_iter().enumerate() {
        let (app, sockets, stopping) = (app.clone(), sockets.clone(), stopping.clone());
        let body = move || async move {
            let listener = TcpListener::from_std(listener)?;
            worker(listener, app, sockets, header_timeout, stopping).await
        };
        match spawn_worker(index, ended_tx.clone(), body) {
            Ok(thread) => threads.push(thread),
            Err(err) => {
                // The threads already started stop with the channel's sender (`stop`) dropped.
                return Err(err).context("cannot start a server worker thread");
            }
        }
    }
    drop(ended_tx);
    let result = supervise(
        ended,
        count,
        &stop,
        &sockets,
        Duration::from_secs(settings.shutdown_grace_secs),
        shutdown_signal(),
    )
    .await;
    // Every worker has reported its end, its last act, so these joins do not wait.
    for thread in threads {
        let _ = thread.join();
    }
    result
}

/// `workers` listeners on one address with SO_REUSEPORT, not yet registered with any runtime
/// (each worker registers its own).
async fn bind_shared(addr: &str, workers: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut last = None;
    for candidate in tokio::net::lookup_host(addr).await? {
        match bind_group(candidate, workers) {
            Ok(listeners) => return Ok(listeners),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}

fn bind_group(addr: SocketAddr, workers: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    // SO_REUSEPORT would let this runner join the listeners of another process of the same
    // user on the port (and share its connections) where one listener fails with "address in
    // use". A plain bind first keeps that failure, and picks the port when PORT is 0.
    let addr = std::net::TcpListener::bind(addr)?.local_addr()?;
    (0..workers)
        .map(|_| {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(true)?;
            socket.bind(addr)?;
            socket.listen(1024)?.into_std()
        })
        .collect()
}

/// The `METRICS_ADDR` listener, on the caller's runtime.
async fn serve_metrics(runtime: Arc<Runtime>, settings: &ServerSettings) -> Result<()> {
    let Some(addr) = settings.metrics_addr else {
        return Ok(());
    };
    let metrics_app = metrics_router(runtime, settings)?;
    let metrics_listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on METRICS_ADDR {addr}"))?;
    tracing::info!(address = %metrics_listener.local_addr()?, "serving /metrics");
    let header_timeout = Duration::from_secs(settings.header_read_timeout_secs);
    tokio::spawn(connections::serve(
        metrics_listener,
        metrics_app.into_make_service_with_connect_info::<SocketAddr>(),
        header_timeout,
        std::future::pending(),
    ));
    Ok(())
}

/// What the workers are told: serve, drain (stop accepting, finish what is in flight), or stop
/// now (the grace period is over).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stop {
    Serving,
    Drain,
    Now,
}

/// How a worker ended.
#[derive(Debug)]
enum WorkerEnd {
    Stopped,
    Failed(String),
    Panicked(String),
}

impl WorkerEnd {
    fn from_result(ended: std::thread::Result<std::io::Result<()>>) -> Self {
        match ended {
            Ok(Ok(())) => WorkerEnd::Stopped,
            Ok(Err(err)) => WorkerEnd::Failed(err.to_string()),
            Err(panic) => WorkerEnd::Panicked(
                panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-text panic".into()),
            ),
        }
    }
}

impl std::fmt::Display for WorkerEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerEnd::Stopped => f.write_str("stopped"),
            WorkerEnd::Failed(err) => write!(f, "failed: {err}"),
            WorkerEnd::Panicked(message) => write!(f, "panicked: {message}"),
        }
    }
}

/// Runs `body` on a new thread in its own single-threaded runtime and reports how it ended on
/// `ended` (also when it panicked).
fn spawn_worker<F, Fut>(
    index: usize,
    ended: mpsc::UnboundedSender<(usize, WorkerEnd)>,
    body: F,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    std::thread::Builder::new()
        .name(format!("http-worker-{index}"))
        .spawn(move || {
            let end = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => {
                    let ran =
                        std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(body())));
                    // A statement on a blocking thread cannot be cancelled; the process must
                    // not wait for it without bound.
                    runtime.shutdown_timeout(Duration::from_secs(1));
                    WorkerEnd::from_result(ran)
                }
                Err(err) => WorkerEnd::Failed(format!("cannot start its runtime: {err}")),
            };
            let _ = ended.send((index, end));
        })
}

/// One worker's server: accepts from `listener` until told to drain, then waits for its
/// in-flight requests and for every WebSocket answer, unless told to stop now.
async fn worker(
    listener: TcpListener,
    app: IntoMakeServiceWithConnectInfo<Router, SocketAddr>,
    sockets: Sockets,
    header_timeout: Duration,
    stopping: watch::Receiver<Stop>,
) -> std::io::Result<()> {
    let mut draining = stopping.clone();
    let server = connections::serve(listener, app, header_timeout, async move {
        let _ = draining.wait_for(|stop| *stop != Stop::Serving).await;
    });
    // Upgraded connections are no longer the HTTP server's: their answers are waited for here
    // (the registry is the process's, so every worker waits for all of them).
    let drained = async {
        server.await;
        sockets.closed().await;
        std::io::Result::Ok(())
    };
    let mut now = stopping;
    tokio::select! {
        result = drained => result,
        _ = now.wait_for(|stop| *stop == Stop::Now) => Ok(()),
    }
}

/// Waits for the shutdown signal or for a worker to end on its own; then drains every worker
/// within `grace` (WebSocket answers included), and past it closes what is left.
async fn supervise(
    mut ended: mpsc::UnboundedReceiver<(usize, WorkerEnd)>,
    workers: usize,
    stop: &watch::Sender<Stop>,
    sockets: &Sockets,
    grace: Duration,
    signal: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let mut running = workers;
    let mut failures = Vec::new();
    tokio::select! {
        _ = signal => tracing::info!("shutting down: draining in-flight requests"),
        Some((index, end)) = ended.recv() => {
            running -= 1;
            tracing::error!(worker = index, "server worker {end} while serving; stopping the others");
            failures.push(format!("server worker {index} {end}"));
        }
    }
    sockets.drain();
    stop.send_replace(Stop::Drain);
    let deadline = tokio::time::Instant::now() + grace;
    let mut cut = false;
    let mut announced = false;
    while running > 0 {
        if !announced && sockets.count() > 0 {
            announced = true;
            tracing::info!(
                open = sockets.count(),
                "waiting for WebSocket answers in flight"
            );
        }
        let next = if cut {
            ended.recv().await
        } else {
            match tokio::time::timeout_at(deadline, ended.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    tracing::warn!("grace period over; closing remaining connections");
                    sockets.close_all();
                    let _ = tokio::time::timeout(Duration::from_secs(3), sockets.closed()).await;
                    stop.send_replace(Stop::Now);
                    cut = true;
                    continue;
                }
            }
        };
        let Some((index, end)) = next else { break };
        running -= 1;
        if !matches!(end, WorkerEnd::Stopped) {
            tracing::error!(worker = index, "server worker {end}");
            failures.push(format!("server worker {index} {end}"));
        }
    }
    if !failures.is_empty() {
        anyhow::bail!("{}", failures.join("; "));
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker whose runtime panics stops the process with an error naming the panic, after
    /// the other workers were told to drain (not to stop at once) and did.
    #[tokio::test]
    async fn a_panicking_worker_drains_the_others_and_fails_the_server() {
        let (stop, stopping) = watch::channel(Stop::Serving);
        let (ended_tx, ended) = mpsc::unbounded_channel();
        let (told_tx, told) = std::sync::mpsc::channel();
        let mut healthy = stopping.clone();
        let threads = [
            spawn_worker(0, ended_tx.clone(), move || async move {
                let _ = healthy.wait_for(|stop| *stop != Stop::Serving).await;
                let stop = *healthy.borrow();
                told_tx.send(stop).unwrap();
                Ok(())
            })
            .unwrap(),
            spawn_worker(1, ended_tx, || async {
                tokio::task::yield_now().await;
                panic!("accept loop broke");
            })
            .unwrap(),
        ];
        let sockets = Sockets::new();
        let supervised = supervise(
            ended,
            2,
            &stop,
            &sockets,
            Duration::from_secs(30),
            std::future::pending(),
        );
        let error = tokio::time::timeout(Duration::from_secs(10), supervised)
            .await
            .expect("the panic went unnoticed")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("server worker 1 panicked: accept loop broke"),
            "{error}"
        );
        assert_eq!(told.try_recv(), Ok(Stop::Drain));
        for thread in threads {
            thread.join().unwrap();
        }
    }

    /// A worker that is still busy when the grace period ends is told to stop at once.
    #[tokio::test]
    async fn past_the_grace_period_workers_are_stopped() {
        let (stop, stopping) = watch::channel(Stop::Serving);
        let (ended_tx, ended) = mpsc::unbounded_channel();
        let mut now = stopping;
        let sockets = Sockets::new();
        let thread = spawn_worker(0, ended_tx, move || async move {
            let _ = now.wait_for(|stop| *stop == Stop::Now).await;
            Ok(())
        })
        .unwrap();
        let supervised = supervise(
            ended,
            1,
            &stop,
            &sockets,
            Duration::from_millis(50),
            std::future::ready(()),
        );
        tokio::time::timeout(Duration::from_secs(10), supervised)
            .await
            .expect("the worker was not stopped")
            .unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn session_ids_stay_out_of_logged_paths() {
        assert_eq!(
            loggable_path("/session/Zq3-vT_8kLmN0pQrStUvWx"),
            "/session/{id}"
        );
        assert_eq!(
            loggable_path("/book/session/abc/messages/3/feedback"),
            "/book/session/{id}/messages/3/feedback"
        );
        for unchanged in ["/session", "/session/", "/chat", "/health/ready"] {
            assert_eq!(loggable_path(unchanged), unchanged);
        }
    }
}
