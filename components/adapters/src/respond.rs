//! JSON responses.

use spin_sdk::http::Response;

pub fn json(status: u16, value: &serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(value.to_string())
        .build()
}
