//! Sends the requests core builds, through the host's `wasi:http` client.

use std::time::Duration;

/// Why no response arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFailure {
    /// No response within the limit.
    Timeout,
    /// The host refused the destination (not in `allowed_outbound_hosts`).
    Refused,
    /// Could not connect, or the connection broke.
    Connect,
}

/// Sends a buffered request and reads the whole response, within `limit`.
pub async fn send(
    request: http::Request<Vec<u8>>,
    limit: Duration,
) -> Result<http::Response<Vec<u8>>, SendFailure> {
    let sending = spin_sdk::http::send::<_, http::Response<Vec<u8>>>(request);
    match crate::timer::timeout(limit, sending).await {
        Some(Ok(response)) => Ok(response),
        Some(Err(err)) => Err(classify(&err)),
        None => Err(SendFailure::Timeout),
    }
}

/// Why a `spin_sdk::http::send` failed, for callers that send without [`send`] (e.g. to stream).
pub fn classify(err: &spin_sdk::http::SendError) -> SendFailure {
    let text = format!("{err:?}");
    if text.contains("Timeout") {
        SendFailure::Timeout
    } else if text.contains("HttpRequestDenied") {
        SendFailure::Refused
    } else {
        SendFailure::Connect
    }
}
