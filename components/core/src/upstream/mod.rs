//! Requests to and responses from the upstream services (Cohere, Qdrant, an OpenAI-compatible
//! LLM), as plain `http` values: the caller sends them with whatever client its host offers.
//!
//! Failures are classified once, here, into [`UpstreamError`], which knows whether a retry can
//! help and which [`ApiError`] the client finally sees. What an upstream said about a failure
//! (its [`UpstreamError::reason`]) reaches logs and command-line errors only, shortened and
//! with anything credential-like masked; client messages never carry it.

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

    /// The setting holding the credential this service checks.
    pub fn key_setting(self) -> &'static str {
        match self {
            Service::Cohere => "COHERE_API_KEY",
            Service::Qdrant => "QDRANT_API_KEY",
            Service::OpenAi => "OPENAI_API_KEY",
        }
    }
}

/// Most characters of an upstream's own message kept for logs and command-line errors.
pub const REASON_LIMIT: usize = 300;

/// Why a request got no response, as its sender (the guest's or the runner's) tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFailure {
    /// No response within the limit.
    Timeout,
    /// The host refused the destination (not in `allowed_outbound_hosts`).
    Refused,
    /// Could not connect, or the connection broke.
    Connect,
}

impl SendFailure {
    /// Classifies a `wasi:http` error code by its name, as the guest's and the runner's
    /// clients both print it (`ConnectionTimeout`, `HttpRequestDenied`, ...).
    pub fn from_error_code_name(name: &str) -> Self {
        if name.contains("Timeout") {
            SendFailure::Timeout
        } else if name.contains("HttpRequestDenied") {
            SendFailure::Refused
        } else {
            SendFailure::Connect
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
    /// HTTP 401 or 403: the configured credential was refused.
    AuthFailed(u16),
    /// Any other non-success status (our request was refused).
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
    /// A short description, fit for clients; never holds upstream text or credentials.
    pub detail: String,
    /// What the upstream said about the failure, at most [`REASON_LIMIT`] characters on one
    /// line with credential-like words masked: for logs and command-line errors only.
    pub reason: Option<String>,
}

impl UpstreamError {
    fn new(service: Service, kind: UpstreamErrorKind, detail: impl Into<String>) -> Self {
        Self {
            service,
            kind,
            retry_after: None,
            detail: detail.into(),
            reason: None,
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

    /// No response arrived, for the reason the sender gives.
    pub fn unsent(service: Service, failure: SendFailure) -> Self {
        match failure {
            SendFailure::Timeout => Self::timeout(service),
            SendFailure::Refused => {
                Self::connect(service, "the destination is not in allowed_outbound_hosts")
            }
            SendFailure::Connect => Self::connect(service, "connection failed"),
        }
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
            401 | 403 => UpstreamErrorKind::AuthFailed(code),
            429 => UpstreamErrorKind::RateLimited,
            500..=599 => UpstreamErrorKind::ServerError(code),
            _ => UpstreamErrorKind::Rejected(code),
        };
        Some(Self {
            retry_after: parse_retry_after(response.headers(), now),
            ..Self::new(service, kind, format!("HTTP {code}"))
        })
    }

    /// Keeps what the upstream said in `body` (its error message when the body is one of the
    /// services' error shapes, else the text) as [`UpstreamError::reason`].
    pub fn with_reason_from(mut self, body: &[u8]) -> Self {
        self.reason = reason_from_body(body);
        self
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

    /// What the client sees: 504 `upstream_timeout`, 503 `upstream_unavailable`, 502
    /// `upstream_auth_failed` or 502 `upstream_bad_response`.
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
            UpstreamErrorKind::AuthFailed(_) => ApiError::upstream_auth_failed(name),
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
        )?;
        if let UpstreamErrorKind::AuthFailed(_) = self.kind {
            write!(
                f,
                ": credentials refused; check {}",
                self.service.key_setting()
            )?;
        }
        match &self.reason {
            Some(reason) => write!(f, ": {reason}"),
            None => Ok(()),
        }
    }
}

/// The upstream's own words from an error body: Qdrant's `status.error`, OpenAI's
/// `error.message`, Cohere's `message`, or the body as text.
fn reason_from_body(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let message = json
        .as_ref()
        .and_then(|value| {
            [
                value.pointer("/status/error"),
                value.pointer("/error/message"),
                value.pointer("/message"),
                value.pointer("/error"),
            ]
            .into_iter()
            .flatten()
            .find_map(serde_json::Value::as_str)
        })
        .map_or(text.as_ref(), |message| message);
    let reason = scrub(message);
    (!reason.is_empty()).then_some(reason)
}

/// `text` on one line, at most [`REASON_LIMIT`] characters, with every word that looks like a
/// credential (long, mixing letters and digits, or a bearer token) masked, since some services
/// echo the key they refused.
pub fn scrub(text: &str) -> String {
    let mut out = String::new();
    let mut after_bearer = false;
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        if after_bearer || looks_like_credential(word) {
            out.push_str("[redacted]");
        } else {
            out.extend(word.chars().filter(|c| !c.is_control()));
        }
        after_bearer = word.eq_ignore_ascii_case("bearer");
    }
    match out.char_indices().nth(REASON_LIMIT) {
        Some((cut, _)) => format!("{}…", &out[..cut]),
        None => out,
    }
}

fn looks_like_credential(word: &str) -> bool {
    let token = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let letters = token.chars().filter(char::is_ascii_alphabetic).count();
    let digits = token.chars().filter(char::is_ascii_digit).count();
    let keyish = token
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*'));
    let prefixed = ["sk-", "co-", "eyJ"].iter().any(|p| token.starts_with(p)) && token.len() > 8;
    keyish && (prefixed || (token.len() >= 16 && letters > 0 && digits > 0))
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
        return Err(error.with_reason_from(response.body()));
    }
    serde_json::from_slice(response.body())
        .map_err(|error| UpstreamError::bad_response(service, format!("unexpected JSON: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_failures_are_told_by_the_error_code_name() {
        for (name, failure) in [
            ("ConnectionTimeout", SendFailure::Timeout),
            ("ErrorCode::ConnectionReadTimeout", SendFailure::Timeout),
            ("HttpRequestDenied", SendFailure::Refused),
            ("ConnectionRefused", SendFailure::Connect),
            (
                "DnsError { rcode: None, info_code: None }",
                SendFailure::Connect,
            ),
        ] {
            assert_eq!(SendFailure::from_error_code_name(name), failure, "{name}");
        }
    }

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
            (401, false, 502, "upstream_auth_failed"),
            (403, false, 502, "upstream_auth_failed"),
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
    fn refused_credentials_name_the_setting_in_logs_only() {
        let refused = Response::builder()
            .status(401)
            .body(br#"{"message":"invalid api token co-9f8e7d6c5b4a3928"}"#.to_vec())
            .unwrap();
        let error = decode::<serde_json::Value>(Service::Cohere, &refused).unwrap_err();
        assert_eq!(error.kind, UpstreamErrorKind::AuthFailed(401));
        let logged = error.to_string();
        assert!(logged.contains("check COHERE_API_KEY"), "{logged}");
        assert!(logged.contains("invalid api token"), "{logged}");
        assert!(!logged.contains("9f8e7d6c5b4a3928"), "{logged}");
        let api = error.to_api_error();
        assert_eq!((api.status, api.code), (502, "upstream_auth_failed"));
        assert!(!api.message.contains("token"), "{}", api.message);
        let qdrant =
            UpstreamError::from_response(Service::Qdrant, &response(403, None), SystemTime::now());
        assert!(qdrant.unwrap().to_string().contains("check QDRANT_API_KEY"));
    }

    #[test]
    fn upstream_reasons_reach_logs_bounded_and_without_credentials() {
        let qdrant = br#"{"status":{"error":"Wrong input: Vector dimension error: expected dim: 1536, got 1024"},"time":0.0}"#;
        let rejected = Response::builder()
            .status(400)
            .body(qdrant.to_vec())
            .unwrap();
        let error = decode::<serde_json::Value>(Service::Qdrant, &rejected).unwrap_err();
        assert_eq!(
            error.reason.as_deref(),
            Some("Wrong input: Vector dimension error: expected dim: 1536, got 1024")
        );
        assert!(error.to_string().ends_with("got 1024"), "{error}");
        assert_eq!(
            error.to_api_error().message,
            "Qdrant returned an unusable response: HTTP 400"
        );

        let openai = br#"{"error":{"message":"Incorrect API key provided: sk-proj-****WxYz.","type":"invalid_request_error"}}"#;
        assert_eq!(
            reason_from_body(openai).as_deref(),
            Some("Incorrect API key provided: [redacted]")
        );
        assert_eq!(
            reason_from_body(b"Invalid API key or JWT\n").as_deref(),
            Some("Invalid API key or JWT")
        );
        assert_eq!(
            scrub("header was Bearer abc and key 3f9a2b7c1d8e4f60a5b9"),
            "header was Bearer [redacted] and key [redacted]"
        );
        assert_eq!(scrub("line one\nline\u{1b}two"), "line one linetwo");
        let long = scrub(&"word ".repeat(200));
        assert_eq!(long.chars().count(), REASON_LIMIT + 1);
        assert!(long.ends_with('…'));
        assert_eq!(reason_from_body(b""), None);
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
