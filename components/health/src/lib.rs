//! GET /health (liveness: no upstream calls) and GET /health/ready (each configured
//! dependency probed concurrently with a short timeout).

use std::time::Duration;

use adapters::respond::json;
use adapters::timer;
use rag_core::config::Settings;
use rag_core::readiness::{self, Check, Dependency};
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_component;
use spin_sdk::variables;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[http_component]
async fn handle(request: Request) -> impl IntoResponse {
    let path = request.path().trim_end_matches('/');
    let service = variables::get("service_name").unwrap_or_else(|_| "ai-book-rag".into());
    if *request.method() != spin_sdk::http::Method::Get {
        return json(
            405,
            &serde_json::json!({"error": {"code": "method_not_allowed", "message": "use GET"}}),
        );
    }
    match path.rsplit('/').next() {
        Some("health") => json(
            200,
            &serde_json::json!({"status": "ok", "service": service, "version": VERSION}),
        ),
        Some("ready") if path.ends_with("/health/ready") => ready(&service).await,
        _ => json(
            404,
            &serde_json::json!({"error": {"code": "not_found", "message": "no route matches this path"}}),
        ),
    }
}

async fn ready(service: &str) -> spin_sdk::http::Response {
    let settings = match Settings::from_lookup(|name| variables::get(name).ok()) {
        Ok(settings) => settings,
        Err(err) => {
            return json(
                503,
                &serde_json::json!({"status": "unavailable", "error": {"code": "misconfigured", "message": err.to_string()}}),
            )
        }
    };
    let probes =
        readiness::http_probes(&settings)
            .into_iter()
            .map(|(dependency, request)| async move {
                let started = timer::now();
                let outcome = adapters::outbound::send(request, PROBE_TIMEOUT).await;
                let latency_ms = timer::since(started).as_millis() as u64;
                let detail = match outcome {
                    Ok(response) => readiness::judge_status(response.status().as_u16()).err(),
                    Err(failure) => Some(format!("{failure:?}").to_lowercase()),
                };
                Check {
                    dependency,
                    up: detail.is_none(),
                    latency_ms,
                    detail,
                }
            });
    let mut checks = futures::future::join_all(probes).await;
    checks.push(match &settings.database_url {
        Some(url) => check_postgres(url),
        None => check_embedded(),
    });
    let (status, body) = readiness::report(service, VERSION, &settings, &checks);
    json(status, &body)
}

fn check_postgres(url: &str) -> Check {
    let started = timer::now();
    let outcome = spin_sdk::pg4::Connection::open(url)
        .and_then(|conn| conn.query("SELECT 1", &[]).map(|_| ()));
    Check {
        dependency: Dependency::Postgres,
        up: outcome.is_ok(),
        latency_ms: timer::since(started).as_millis() as u64,
        detail: outcome.err().map(|e| match e {
            spin_sdk::pg4::PgError::ConnectionFailed(_) => "connection failed".to_string(),
            _ => "query failed".to_string(),
        }),
    }
}

/// The keyless mode's SQLite database (sessions and the FTS5 index).
fn check_embedded() -> Check {
    let started = timer::now();
    let outcome = spin_sdk::sqlite3::Connection::open_default()
        .and_then(|conn| conn.execute("SELECT 1", &[]).map(|_| ()));
    Check {
        dependency: Dependency::EmbeddedIndex,
        up: outcome.is_ok(),
        latency_ms: timer::since(started).as_millis() as u64,
        detail: outcome
            .err()
            .map(|_| "cannot open the embedded database".to_string()),
    }
}
