//! Requests to and responses from the upstream services (Cohere, Qdrant, an OpenAI-compatible
//! LLM), as plain `http` values: the caller sends them with whatever client its host offers.
//!
//! Failures are classified once, here, into [`UpstreamError`], which knows whether a retry can
//! help and which [`ApiError`] the client finally sees. Upstream bodies are never copied into
//! messages: some services echo parts of the credentials they were given.

pub mod cohere;
pub mod openai;
pub mod qdrant;

use std::fmt;
use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Request, Response};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Which upstream a failure came from; its name appears in client-facing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Cohere,
    Qdrant,
    OpenAi,
}

impl Service {
    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Service::Cohere => "Cohere",
            Service::Qdrant => "Qdrant",
            Service::OpenAi => "the language model",
        }
    }
}

/// What went wrong talking to an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// No answer within the deadline.
    Timeout,
    /// The connection could not be made (DNS, refused, TLS, reset).
    Connect,
    /// HTTP 429.
    RateLimited,
    /// HTTP 5xx.
    ServerError(u16),
    /// Any other non-success status (our request or credentials were refused).
    Rejected(u16),
    /// A success status with a body we cannot use.
    BadResponse,
}

/// A classified upstream failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    pub service: Service,
    pub kind: UpstreamErrorKind,
    /// The server's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
    /// A short description for logs; never contains upstream bodies or credentials.
    pub detail: String,
}

impl UpstreamError {
    fn new(service: Service, kind: UpstreamErrorKind, detail: impl Into<String>) -> Self {
        Self {
            service,
            kind,
            retry_after: None,
            detail: detail.into(),
        }
    }

    /// The call did not complete within its deadline.
    pub fn timeout(service: Service) -> Self {
        Self::new(
            service,
            UpstreamErrorKind::Timeout,
            "no response within the deadline",
        )
    }

    /// The transport failed before a response arrived.
    pub fn connect(service: Service, detail: impl fmt::Display) -> Self {
        Self::new(service, UpstreamErrorKind::Connect, detail.to_string())
    }

    /// A success response whose body does not match the API.
    pub fn bad_response(service: Service, detail: impl fmt::Display) -> Self {
        Self::new(service, UpstreamErrorKind::BadResponse, detail.to_string())
    }

    /// Classifies a response's status; `None` for 2xx. `now` resolves an HTTP-date
    /// `Retry-After`.
    pub fn from_response<B>(
        service: Service,
        response: &Response<B>,
        now: SystemTime,
    ) -> Option<Self> {
        let status = response.status();
        if status.is_success() {
            return None;
        }
        let code = status.as_u16();
        let kind = match code {
            429 => UpstreamErrorKind::RateLimited,
            500..=599 => UpstreamErrorKind::ServerError(code),
            _ => UpstreamErrorKind::Rejected(code),
        };
        let detail = match code {
            401 | 403 => format!("HTTP {code}: credentials were refused (check the API key)"),
            _ => format!("HTTP {code}"),
        };
        Some(Self {
            retry_after: parse_retry_after(response.headers(), now),
            ..Self::new(service, kind, detail)
        })
    }

    /// Whether trying again may succeed: timeouts, connection failures, 429 and 5xx.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            UpstreamErrorKind::Timeout
                | UpstreamErrorKind::Connect
                | UpstreamErrorKind::RateLimited
                | UpstreamErrorKind::ServerError(_)
        )
    }

    /// What the client sees: 504 `upstream_timeout`, 503 `upstream_unavailable`, or 502
    /// `upstream_bad_response`.
    pub fn to_api_error(&self) -> ApiError {
        let name = self.service.name();
        match &self.kind {
            UpstreamErrorKind::Timeout => ApiError::upstream_timeout(name),
            UpstreamErrorKind::Connect => ApiError::upstream_unavailable(name, "connection failed"),
            UpstreamErrorKind::RateLimited => {
                ApiError::upstream_unavailable(name, "too many requests, try again shortly")
            }
            UpstreamErrorKind::ServerError(code) => {
                ApiError::upstream_unavailable(name, format!("HTTP {code}"))
            }
            UpstreamErrorKind::Rejected(_) | UpstreamErrorKind::BadResponse => {
                ApiError::upstream_bad_response(name, &self.detail)
            }
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {:?}: {}",
            self.service.name(),
            self.kind,
            self.detail
        )
    }
}

impl std::error::Error for UpstreamError {}

impl From<UpstreamError> for ApiError {
    fn from(error: UpstreamError) -> Self {
        error.to_api_error()
    }
}

/// `Retry-After` as a wait: delta-seconds, or an HTTP-date relative to `now` (a date in the
/// past means "now"). Unparseable values count as absent.
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A JSON request with an optional credential header.
pub(crate) fn json_request(
    method: Method,
    uri: &str,
    credential: Option<(&str, String)>,
    body: Option<&serde_json::Value>,
) -> Request<Vec<u8>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::ACCEPT, "application/json");
    if let Some((name, value)) = credential {
        builder = builder.header(name, value);
    }
    // The body is whole before sending, so its length goes in `Content-Length`: without it
    // the host streams it chunked, which some gateways and simple servers refuse.
    let bytes = match body {
        Some(body) => {
            let bytes = serde_json::to_vec(body).expect("a JSON value always serialises");
            builder = builder
                .header(CONTENT_TYPE, "application/json")
                .header(CONTENT_LENGTH, bytes.len());
            bytes
        }
        None => Vec::new(),
    };
    builder
        .body(bytes)
        .unwrap_or_else(|error| panic!("invalid upstream request for {uri:?}: {error}"))
}

/// `Authorization: Bearer <key>`.
pub(crate) fn bearer(key: &str) -> Option<(&'static str, String)> {
    Some((AUTHORIZATION.as_str(), format!("Bearer {key}")))
}

/// Checks the status, then decodes the JSON body.
pub(crate) fn decode<T: DeserializeOwned>(
    service: Service,
    response: &Response<Vec<u8>>,
) -> Result<T, UpstreamError> {
    if let Some(error) = UpstreamError::from_response(service, response, SystemTime::now()) {
        return Err(error);
    }
    serde_json::from_slice(response.body())
        .map_err(|error| UpstreamError::bad_response(service, format!("unexpected JSON: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, retry_after: Option<&str>) -> Response<Vec<u8>> {
        let mut builder = Response::builder().status(status);
        if let Some(value) = retry_after {
            builder = builder.header(RETRY_AFTER, value);
        }
        builder
            .body(b"{\"message\":\"bad key sk-123\"}".to_vec())
            .unwrap()
    }

    fn classify(status: u16) -> UpstreamError {
        UpstreamError::from_response(Service::Cohere, &response(status, None), SystemTime::now())
            .unwrap()
    }

    #[test]
    fn success_is_not_an_error() {
        assert!(UpstreamError::from_response(
            Service::Qdrant,
            &response(200, None),
            SystemTime::now()
        )
        .is_none());
    }

    #[test]
    fn statuses_map_to_retryability_and_api_codes() {
        let cases = [
            (429, true, 503, "upstream_unavailable"),
            (500, true, 503, "upstream_unavailable"),
            (503, true, 503, "upstream_unavailable"),
            (400, false, 502, "upstream_bad_response"),
            (401, false, 502, "upstream_bad_response"),
            (404, false, 502, "upstream_bad_response"),
        ];
        for (status, retryable, api_status, code) in cases {
            let error = classify(status);
            assert_eq!(error.is_retryable(), retryable, "{status}");
            let api = error.to_api_error();
            assert_eq!((api.status, api.code), (api_status, code), "{status}");
            assert!(
                !api.message.contains("sk-123"),
                "body leaked: {}",
                api.message
            );
        }
    }

    #[test]
    fn transport_failures() {
        let timeout = UpstreamError::timeout(Service::OpenAi);
        assert!(timeout.is_retryable());
        assert_eq!(timeout.to_api_error().status, 504);
        assert_eq!(timeout.to_api_error().code, "upstream_timeout");
        let connect = UpstreamError::connect(Service::Qdrant, "connection refused");
        assert!(connect.is_retryable());
        assert_eq!(ApiError::from(connect).code, "upstream_unavailable");
        let bad = UpstreamError::bad_response(Service::Cohere, "missing embeddings");
        assert!(!bad.is_retryable());
        assert_eq!(bad.to_api_error().status, 502);
    }

    #[test]
    fn json_bodies_carry_their_length() {
        let body = serde_json::json!({"texts": ["ünïcode"]});
        let request = json_request(Method::POST, "http://u/v2/embed", None, Some(&body));
        let length = request.headers()[CONTENT_LENGTH].to_str().unwrap();
        assert_eq!(length, request.body().len().to_string());
        let bodyless = json_request(Method::GET, "http://u/c", None, None);
        assert!(bodyless.headers().get(CONTENT_LENGTH).is_none());
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let parse = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, value.parse().unwrap());
            parse_retry_after(&headers, now)
        };
        assert_eq!(parse("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            parse("Wed, 21 Oct 2015 07:28:30 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse("Wed, 21 Oct 2015 07:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse("soon"), None);
        assert_eq!(parse("-3"), None);
        assert_eq!(parse_retry_after(&HeaderMap::new(), now), None);
        let error =
            UpstreamError::from_response(Service::Cohere, &response(429, Some("2")), now).unwrap();
        assert_eq!(error.retry_after, Some(Duration::from_secs(2)));
    }
}
