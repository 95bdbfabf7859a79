//! JSON responses, and core's errors as the API shows them.

use rag_core::error::ApiError;
use rag_core::store::StoreError;
use spin_sdk::http::Response;

pub fn json(status: u16, value: &serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(value.to_string())
        .build()
}

/// `{"error":{"code","message","field"?}}` with the error's status.
pub fn error(error: &ApiError) -> Response {
    Response::builder()
        .status(error.status)
        .header("content-type", "application/json")
        .body(error.to_json_body())
        .build()
}

/// A storage failure as a client sees it. Database texts stay out of the response: they can
/// name tables, statements or hosts, none of which helps a client and some of which is private.
pub fn store_failure(failure: &StoreError) -> ApiError {
    match failure {
        StoreError::Unavailable(_) => {
            ApiError::database_unavailable("cannot reach the database; try again shortly")
        }
        StoreError::Query(_) => ApiError::new(
            failure.status(),
            failure.code(),
            "the session store failed to run a statement",
        ),
        StoreError::Conflict(message) | StoreError::NotFound(message) => {
            ApiError::new(failure.status(), failure.code(), message.clone())
        }
        StoreError::Invalid(field) => ApiError::invalid_field(field.field, &field.message),
    }
}
