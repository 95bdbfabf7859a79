//! Errors as the API shows them: an HTTP status, a stable machine-readable code, a message.
//!
//! Every failure a client can see goes through [`ApiError`], so the JSON shape
//! `{"error":{"code":..,"message":..,"field":..}}` is the same on every endpoint. Messages are
//! written for readers and never carry secrets: upstream bodies are summarised, never echoed.

use std::fmt;

/// A failure as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code of the response.
    pub status: u16,
    /// Stable snake_case code clients can match on (see the constructors for the list).
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// The request field at fault, for validation errors.
    pub field: Option<String>,
}

impl ApiError {
    /// Any status and code; prefer the named constructors.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// 400 `invalid_request` about the request as a whole (e.g. malformed JSON).
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", message)
    }

    /// 400 `invalid_request` naming the offending field; the message should state the limit.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.to_owned()),
            ..Self::new(
                400,
                "invalid_request",
                format!("{field}: {}", message.into()),
            )
        }
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self::new(
            413,
            "payload_too_large",
            format!("request body exceeds {limit_bytes} bytes"),
        )
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed(allowed: &str) -> Self {
        Self::new(
            405,
            "method_not_allowed",
            format!("method not allowed; use {allowed}"),
        )
    }

    /// 504 `upstream_timeout`: the named service did not answer in time.
    pub fn upstream_timeout(service: &str) -> Self {
        Self::new(
            504,
            "upstream_timeout",
            format!("{service} did not answer in time"),
        )
    }

    /// 503 `upstream_unavailable`: the named service could not be reached or is overloaded.
    pub fn upstream_unavailable(service: &str, detail: impl fmt::Display) -> Self {
        Self::new(
            503,
            "upstream_unavailable",
            format!("{service} is unavailable: {detail}"),
        )
    }

    /// 502 `upstream_bad_response`: the named service answered something we cannot use.
    pub fn upstream_bad_response(service: &str, detail: impl fmt::Display) -> Self {
        Self::new(
            502,
            "upstream_bad_response",
            format!("{service} returned an unusable response: {detail}"),
        )
    }

    /// 503 `database_unavailable`.
    pub fn database_unavailable(detail: impl fmt::Display) -> Self {
        Self::new(
            503,
            "database_unavailable",
            format!("session store is unavailable: {detail}"),
        )
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal", message)
    }

    /// The JSON object inside the body: `{"code","message","field"?}`.
    pub fn to_json_value(&self) -> serde_json::Value {
        let mut error = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(field) = &self.field {
            error["field"] = serde_json::Value::String(field.clone());
        }
        error
    }

    /// The response body: `{"error":{"code","message","field"?}}`.
    pub fn to_json_body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "error": self.to_json_value() }))
            .expect("a JSON value always serialises")
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn body(error: &ApiError) -> Value {
        serde_json::from_slice(&error.to_json_body()).unwrap()
    }

    #[test]
    fn field_errors_name_the_field_in_body_and_message() {
        let error = ApiError::invalid_field("query", "must be 1..=4000 characters");
        assert_eq!(error.status, 400);
        assert_eq!(
            body(&error),
            json!({"error": {"code": "invalid_request", "message": "query: must be 1..=4000 characters", "field": "query"}})
        );
    }

    #[test]
    fn errors_without_field_omit_the_key() {
        let error = ApiError::upstream_timeout("Cohere");
        assert_eq!(error.status, 504);
        let value = body(&error);
        assert_eq!(value["error"]["code"], "upstream_timeout");
        assert!(value["error"].get("field").is_none());
    }

    #[test]
    fn statuses_match_codes() {
        assert_eq!(ApiError::payload_too_large(10).status, 413);
        assert_eq!(ApiError::not_found("x").status, 404);
        assert_eq!(
            ApiError::upstream_unavailable("Qdrant", "refused").status,
            503
        );
        assert_eq!(
            ApiError::upstream_bad_response("OpenAI", "bad json").status,
            502
        );
        assert_eq!(
            ApiError::database_unavailable("down").code,
            "database_unavailable"
        );
        assert_eq!(ApiError::internal("x").status, 500);
    }
}
