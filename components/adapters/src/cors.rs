//! CORS for every component, from `rag_core::cors` and the `allowed_origins` variable: the
//! request's `Origin` is remembered at the start of each request, then every answer (JSON,
//! errors, event streams) carries the headers, and `OPTIONS` is answered here.

use std::sync::Mutex;

use rag_core::cors::{self, AllowedOrigins};
use spin_sdk::http::Response;

/// This request's `Origin`. Replaced at the start of every request: an instance may serve
/// several requests one after another when its component opts into instance reuse, and one
/// request's origin must never be allowed on the next one's answer.
static ORIGIN: Mutex<Option<String>> = Mutex::new(None);

/// Remembers the request's `Origin` header for the answer; call first, on every request.
pub fn remember_origin(origin: Option<&str>) {
    *ORIGIN.lock().unwrap_or_else(|e| e.into_inner()) = origin.map(str::to_owned);
}

fn allowed() -> AllowedOrigins {
    AllowedOrigins::parse(&spin_sdk::variables::get("allowed_origins").unwrap_or_default())
}

/// The CORS headers of this request's answer (`preflight` for the answer to `OPTIONS`).
pub fn headers(preflight: bool) -> Vec<(&'static str, String)> {
    let origin = ORIGIN.lock().unwrap_or_else(|e| e.into_inner()).clone();
    cors::headers(&allowed(), origin.as_deref(), preflight)
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
