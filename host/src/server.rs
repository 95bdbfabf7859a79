//! The HTTP server: axum with request ids, tracing, TCP_NODELAY, per-client rate limits,
//! `/metrics` (behind a bearer token, or on its own loopback listener), the chat WebSocket
//! (`/chat/ws`, [`crate::websocket`]), and a graceful shutdown that drains in-flight requests
//! and WebSocket answers. CORS is the components' (`allowed_origins`), so it
//! is the same under `spin up`; the runner only puts the same headers on the answers it makes
//! itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use axum::middleware::Next;
use axum::routing::{any, get};
use axum::serve::ListenerExt;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use rag_core::cors::AllowedOrigins;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::ServerSettings;
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
/// for up to `SHUTDOWN_GRACE_SECS`.
pub async fn serve(runtime: Arc<Runtime>, settings: &ServerSettings) -> Result<()> {
    let addr = format!("{}:{}", settings.bind, settings.port);
    let listener = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    serve_on(listener, runtime, settings).await
}

pub async fn serve_on(
    listener: TcpListener,
    runtime: Arc<Runtime>,
    settings: &ServerSettings,
) -> Result<()> {
    let local = listener.local_addr()?;
    let sockets = Sockets::new();
    let app = build(runtime.clone(), settings, &sockets)?
        .into_make_service_with_connect_info::<SocketAddr>();
    if let Some(addr) = settings.metrics_addr {
        let metrics_app = metrics_router(runtime, settings)?;
        let metrics_listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on METRICS_ADDR {addr}"))?;
        tracing::info!(address = %metrics_listener.local_addr()?, "serving /metrics");
        tokio::spawn(async move {
            if let Err(err) = axum::serve(metrics_listener, metrics_app).await {
                tracing::error!("metrics listener failed: {err}");
            }
        });
    }
    tracing::info!(address = %local, "listening");
    // SSE tokens must leave as soon as they are written, not wait for Nagle.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let (signalled_tx, signalled_rx) = tokio::sync::watch::channel(false);
    let grace = Duration::from_secs(settings.shutdown_grace_secs);
    let draining = sockets.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        draining.drain();
        let _ = signalled_tx.send(true);
    });
    let mut signalled = signalled_rx;
    // Upgraded connections are no longer the HTTP server's: their answers are waited for here.
    let drained = async {
        server.await?;
        if sockets.count() > 0 {
            tracing::info!(
                open = sockets.count(),
                "waiting for WebSocket answers in flight"
            );
        }
        sockets.closed().await;
        std::io::Result::Ok(())
    };
    tokio::select! {
        result = drained => result.context("server failed")?,
        _ = async {
            let _ = signalled.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("grace period over; closing remaining connections");
            sockets.close_all();
            let _ = tokio::time::timeout(Duration::from_secs(3), sockets.closed()).await;
        }
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
    use super::loggable_path;

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
