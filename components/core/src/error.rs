//! Errors as the API shows them: an HTTP status, a stable machine-readable code, a message.
//!
//! Every failure a client can see goes through [`ApiError`], so the JSON shape
//! `{"error":{"code":..,"message":..,"field":..}}` is the same on every endpoint. Messages are
//! written for readers and never carry secrets: upstream bodies are summarised, never echoed.

use std::fmt;

use crate::store::StoreError;

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

    /// 502 `upstream_auth_failed`: the named service refused the configured credentials. Only
    /// the operator can fix it (the log line names the setting); retrying does not help.
    pub fn upstream_auth_failed(service: &str) -> Self {
        Self::new(
            502,
            "upstream_auth_failed",
            format!("{service} refused the configured credentials"),
        )
    }

    /// A storage failure as every endpoint answers it: the stable code with a fixed message.
    /// What the database said stays out of the response: it can name the host, the user, the
    /// database, tables or statements, none of which helps a client and some of which is
    /// private. Callers log `failure` itself (see `adapters::respond::store_failure`).
    pub fn from_store(failure: &StoreError) -> Self {
        match failure {
            StoreError::Unavailable(_) => Self::new(
                503,
                failure.code(),
                "the database is unavailable; try again shortly",
            ),
            StoreError::Query(_) => Self::new(
                failure.status(),
                failure.code(),
                "the database could not complete the request",
            ),
            StoreError::Full(_) => Self::new(
                failure.status(),
                failure.code(),
                "the server's storage is full, so nothing can be saved; try again later",
            ),
            // Written for clients by the store itself, never holding ids or database text.
            StoreError::Conflict(message) | StoreError::NotFound(message) => {
                Self::new(failure.status(), failure.code(), message.clone())
            }
            StoreError::Invalid(field) => Self::invalid_field(field.field, &field.message),
        }
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

/// A request id fit for a log line: the runner's `x-request-id` (a UUID it assigns, or the
/// client's own), kept only when it is up to 64 characters of `[A-Za-z0-9._:-]`, so a client
/// cannot forge or break log lines through it; `-` otherwise.
pub fn request_id_for_log(raw: Option<&str>) -> String {
    match raw {
        Some(id)
            if (1..=64).contains(&id.len())
                && id.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
                }) =>
        {
            id.to_owned()
        }
        _ => "-".to_owned(),
    }
}

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
            ApiError::from_store(&StoreError::Unavailable("down".into())).code,
            "database_unavailable"
        );
        assert_eq!(ApiError::internal("x").status, 500);
    }

    #[test]
    fn store_failures_keep_their_code_and_drop_the_database_text() {
        let secret = "3D000: database \"sessions_prod\" does not exist (user reader@db.internal)";
        for (failure, status, code) in [
            (
                StoreError::Unavailable(secret.into()),
                503,
                "database_unavailable",
            ),
            (StoreError::Query(secret.into()), 500, "database_error"),
            (StoreError::Full(secret.into()), 503, "storage_full"),
        ] {
            let error = ApiError::from_store(&failure);
            assert_eq!((error.status, error.code), (status, code));
            let body = String::from_utf8(error.to_json_body()).unwrap();
            for leak in ["3D000", "sessions_prod", "reader", "db.internal", "exist"] {
                assert!(!body.contains(leak), "{body}");
            }
        }
        let missing = ApiError::from_store(&StoreError::NotFound("no session has this id".into()));
        assert_eq!((missing.status, missing.code), (404, "not_found"));
        assert_eq!(missing.message, "no session has this id");
        let invalid = ApiError::from_store(&StoreError::Invalid(crate::store::FieldError::new(
            "comment",
            "must not contain NUL characters",
        )));
        assert_eq!(invalid.field.as_deref(), Some("comment"));
    }

    #[test]
    fn request_ids_reach_logs_only_when_harmless() {
        let uuid = "0b6f1a9e-3c1d-4f7e-9a57-2f3c4d5e6f70";
        assert_eq!(request_id_for_log(Some(uuid)), uuid);
        assert_eq!(request_id_for_log(None), "-");
        assert_eq!(request_id_for_log(Some("")), "-");
        assert_eq!(request_id_for_log(Some("a\nfake log line")), "-");
        assert_eq!(request_id_for_log(Some(&"a".repeat(65))), "-");
    }
}
