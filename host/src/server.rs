//! The HTTP server: axum with CORS, request ids, tracing, TCP_NODELAY, `/metrics`, and a
//! graceful shutdown that drains in-flight requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, Response, StatusCode};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::SmartIpKeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::errors::json_error;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::ServerSettings;
use crate::runtime::{Incoming, Runtime};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Clone)]
struct AppState {
    runtime: Arc<Runtime>,
    metrics: PrometheusHandle,
    base_path: Arc<str>,
}

pub fn router(runtime: Arc<Runtime>, settings: &ServerSettings) -> Router {
    let base_path = settings.base_path();
    let state = AppState {
        runtime,
        metrics: crate::metrics::install(),
        base_path: Arc::from(base_path.as_str()),
    };
    let metrics_path = format!("{base_path}/metrics");
    let router = Router::new()
        .route(&metrics_path, get(metrics))
        .fallback(dispatch)
        .with_state(state);
    with_rate_limit(router, settings)
        .layer(cors(&settings.origins()))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let id = request
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Per-client rate limit with a JSON 429 and `Retry-After`.
fn with_rate_limit(router: Router, settings: &ServerSettings) -> Router {
    if settings.rate_limit_per_minute == 0 {
        return router;
    }
    let Some(config) = GovernorConfigBuilder::default()
        .per_millisecond((60_000 / u64::from(settings.rate_limit_per_minute)).max(1))
        .burst_size(settings.rate_limit_burst.max(1))
        .key_extractor(SmartIpKeyExtractor)
        .finish()
    else {
        return router;
    };
    let config = Arc::new(config);
    let limiter = config.limiter().clone();
    // Forget clients that have been quiet, so the table does not grow without bound.
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            limiter.retain_recent();
        }
    });
    router.layer(
        GovernorLayer::new(config).error_handler(|error| match error {
            GovernorError::TooManyRequests { wait_time, .. } => {
                let mut response = json_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    &format!("too many requests; retry in {wait_time} s"),
                );
                if let Ok(value) = HeaderValue::from_str(&wait_time.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                response
            }
            _ => json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "cannot identify the client",
            ),
        }),
    )
}

fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::AUTHORIZATION,
            REQUEST_ID,
        ])
        .expose_headers([REQUEST_ID])
        .max_age(Duration::from_secs(600))
}

async fn metrics(State(state): State<AppState>) -> Response<Body> {
    crate::metrics::in_flight(state.runtime.in_flight());
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(Body::from(state.metrics.render()))
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
    tracing::info!(address = %local, "listening");
    let app = router(runtime, settings).into_make_service_with_connect_info::<SocketAddr>();
    // SSE tokens must leave as soon as they are written, not wait for Nagle.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let (signalled_tx, signalled_rx) = tokio::sync::watch::channel(false);
    let grace = Duration::from_secs(settings.shutdown_grace_secs);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        let _ = signalled_tx.send(true);
    });
    let mut signalled = signalled_rx;
    tokio::select! {
        result = server => result.context("server failed")?,
        _ = async {
            let _ = signalled.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!("grace period over; closing remaining connections"),
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
