//! The runner's own error responses: JSON with a stable code, like the components' errors.

use axum::body::Body;
use axum::http::{header, Response, StatusCode};

pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("static response parts are valid")
}

pub fn not_found() -> Response<Body> {
    json_error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no route matches this path",
    )
}
