//! GET /health (liveness: no upstream calls) and GET /health/ready (each configured
//! dependency probed concurrently with a short timeout).

use std::time::Duration;

use adapters::db::Db;
use adapters::outbound::SendFailure;
use adapters::respond::{self, json};
use adapters::timer;
use rag_core::config::Settings;
use rag_core::embedded_index;
use rag_core::readiness::{self, Check, Dependency};
use rag_core::store::{Database, StoreError};
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_component;
use spin_sdk::variables;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The methods both health paths answer.
const ALLOW: &str = "GET, OPTIONS";

#[http_component]
async fn handle(request: Request) -> impl IntoResponse {
    adapters::log::set_request_id(
        request
            .header("x-request-id")
            .and_then(|value| value.as_str()),
    );
    adapters::cors::remember_origin(request.header("origin").and_then(|value| value.as_str()));
    if *request.method() == spin_sdk::http::Method::Options {
        return adapters::cors::preflight(ALLOW);
    }
    let path = request.path().trim_end_matches('/');
    let service = variables::get("service_name").unwrap_or_else(|_| "ai-book-rag".into());
    if *request.method() != spin_sdk::http::Method::Get {
        let mut response = json(
            405,
            &serde_json::json!({"error": {"code": "method_not_allowed", "message": "use GET"}}),
        );
        response.set_header("allow", ALLOW);
        return response;
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
    let settings = &settings;
    let probes =
        readiness::http_probes(settings)
            .into_iter()
            .map(|(dependency, request)| async move {
                let started = timer::now();
                let outcome = adapters::outbound::send(request, PROBE_TIMEOUT).await;
                let latency_ms = timer::since(started).as_millis() as u64;
                let detail = match outcome {
                    Ok(response) => {
                        readiness::judge_status(dependency, settings, response.status().as_u16())
                            .err()
                    }
                    Err(failure) => Some(readiness::unreachable(match failure {
                        SendFailure::Timeout => "no answer within 2 s",
                        SendFailure::Connect => "connection failed",
                        SendFailure::Refused => "not in allowed_outbound_hosts",
                    })),
                };
                Check {
                    dependency,
                    up: detail.is_none(),
                    latency_ms,
                    detail,
                }
            });
    let mut checks = futures::future::join_all(probes).await;
    for dependency in readiness::database_checks(settings) {
        checks.push(check_database(dependency, settings.database_url.as_deref()));
    }
    let (status, body) = readiness::report(service, VERSION, settings, &checks);
    json(status, &body)
}

/// Opens the database and asks it what chat would: `SELECT 1` of PostgreSQL and of the
/// embedded database; of the embedded index, whether it holds anything to search.
fn check_database(dependency: Dependency, database_url: Option<&str>) -> Check {
    let started = timer::now();
    let outcome = match dependency {
        Dependency::Postgres => {
            Db::open(database_url).and_then(|db| db.query("SELECT 1", &[]).map(|_| None))
        }
        Dependency::EmbeddedIndex => Db::embedded()
            .and_then(|db| embedded_index::state(&db))
            .map(|state| state.problem()),
        _ => Db::embedded().and_then(|db| db.query("SELECT 1", &[]).map(|_| None)),
    };
    let detail = match outcome {
        Ok(problem) => problem.map(str::to_owned),
        Err(failure) => Some(failure_detail(&failure)),
    };
    Check {
        dependency,
        up: detail.is_none(),
        latency_ms: timer::since(started).as_millis() as u64,
        detail,
    }
}

/// The report shows what a client would see; the log gets what the database said.
fn failure_detail(failure: &StoreError) -> String {
    respond::store_failure("health", failure).message
}
