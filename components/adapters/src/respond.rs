//! JSON responses, and core's errors as the API shows them.

use rag_core::error::ApiError;
use rag_core::store::StoreError;
use spin_sdk::http::Response;

/// A JSON body, with this request's CORS headers.
pub fn json(status: u16, value: &serde_json::Value) -> Response {
    crate::cors::apply(
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(value.to_string())
            .build(),
    )
}

/// `{"error":{"code","message","field"?}}` with the error's status.
pub fn error(error: &ApiError) -> Response {
    crate::cors::apply(
        Response::builder()
            .status(error.status)
            .header("content-type", "application/json")
            .body(error.to_json_body())
            .build(),
    )
}

/// [`error`], with `Allow` naming the resource's methods when the method was wrong (405).
pub fn error_allowing(error: &ApiError, allow: &str) -> Response {
    let mut response = self::error(error);
    if error.status == 405 {
        response.set_header("allow", allow);
    }
    response
}

/// A storage failure as a client sees it ([`ApiError::from_store`]: the stable code, a fixed
/// message); what the database said is logged for the operator, with the request id.
pub fn store_failure(component: &str, failure: &StoreError) -> ApiError {
    if matches!(
        failure,
        StoreError::Unavailable(_) | StoreError::Query(_) | StoreError::Full(_)
    ) {
        crate::log::failure(component, failure);
    }
    ApiError::from_store(failure)
}
