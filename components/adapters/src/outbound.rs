//! Sends the requests core builds, through the host's `wasi:http` client.

use std::time::Duration;

use spin_sdk::http::IncomingResponse;

pub use rag_core::upstream::SendFailure;

/// Sends a buffered request and reads the whole response, within `limit`. A body that breaks
/// off (the connection reset after the headers) is a failed exchange like a refused connection;
/// spin-sdk's own conversion to `http::Response` would trap the component instead.
pub async fn send(
    request: http::Request<Vec<u8>>,
    limit: Duration,
) -> Result<http::Response<Vec<u8>>, SendFailure> {
    let exchange = async {
        let response = spin_sdk::http::send::<_, IncomingResponse>(request)
            .await
            .map_err(|err| classify(&err))?;
        let mut head = http::Response::builder().status(response.status());
        for (name, value) in response.headers().entries() {
            head = head.header(name, value);
        }
        let body = response
            .into_body()
            .await
            .map_err(|_| SendFailure::Connect)?;
        head.body(body).map_err(|_| SendFailure::Connect)
    };
    match crate::timer::timeout(limit, exchange).await {
        Some(result) => result,
        None => Err(SendFailure::Timeout),
    }
}

/// Why a `spin_sdk::http::send` failed, for callers that send without [`send`] (e.g. to stream).
pub fn classify(err: &spin_sdk::http::SendError) -> SendFailure {
    SendFailure::from_error_code_name(&format!("{err:?}"))
}
