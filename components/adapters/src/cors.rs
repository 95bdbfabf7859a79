//! CORS for every component, from `rag_core::cors` and the `allowed_origins` variable: the
//! request's `Origin` is remembered once, then every answer (JSON, errors, event streams)
//! carries the headers, and `OPTIONS` is answered here.

use std::sync::OnceLock;

use rag_core::cors::{self, AllowedOrigins};
use spin_sdk::http::Response;

/// Each request gets a fresh component instance, so this holds that one request's `Origin`.
static ORIGIN: OnceLock<Option<String>> = OnceLock::new();

/// Remembers the request's `Origin` header for the answer; call once, first.
pub fn remember_origin(origin: Option<&str>) {
    let _ = ORIGIN.set(origin.map(str::to_owned));
}

fn allowed() -> AllowedOrigins {
    AllowedOrigins::parse(&spin_sdk::variables::get("allowed_origins").unwrap_or_default())
}

/// The CORS headers of this request's answer (`preflight` for the answer to `OPTIONS`).
pub fn headers(preflight: bool) -> Vec<(&'static str, String)> {
    let origin = ORIGIN.get().and_then(Option::as_deref);
    cors::headers(&allowed(), origin, preflight)
}

/// `response` with this request's CORS headers.
pub fn apply(mut response: Response) -> Response {
    for (name, value) in headers(false) {
        response.set_header(name, value);
    }
    response
}

/// The answer to `OPTIONS`: 204 with `allow` (the methods the resource answers), and the
/// preflight headers when the origin is allowed.
pub fn preflight(allow: &str) -> Response {
    let mut response = Response::builder()
        .status(204)
        .header("allow", allow)
        .body(Vec::new())
        .build();
    for (name, value) in headers(true) {
        response.set_header(name, value);
    }
    response
}
