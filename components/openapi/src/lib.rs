//! GET /openapi.json: the API description kept at the repository root, compiled in so the
//! document served is always the one the build was made from.

use adapters::respond;
use rag_core::error::ApiError;
use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;

const DOCUMENT: &str = include_str!("../../../openapi.json");
const ALLOW: &str = "GET, OPTIONS";

#[http_component]
fn handle(request: Request) -> impl IntoResponse {
    adapters::cors::remember_origin(request.header("origin").and_then(|value| value.as_str()));
    match request.method() {
        Method::Options => adapters::cors::preflight(ALLOW),
        Method::Get => adapters::cors::apply(
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header("cache-control", "no-cache")
                .body(DOCUMENT)
                .build(),
        ),
        _ => respond::error_allowing(&ApiError::method_not_allowed("GET"), ALLOW),
    }
}
