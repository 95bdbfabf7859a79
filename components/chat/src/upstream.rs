//! Upstream calls with retries: jittered backoff on timeouts, connection failures, 429 and
//! 5xx, honouring `Retry-After`, within the retry policy's total budget.

use std::future::Future;

use adapters::outbound;
use adapters::timer;
use rag_core::config::Settings;
use rag_core::retry::RetryPolicy;
use rag_core::upstream::{Service, UpstreamError};

/// Runs `attempt` again while its failure is retryable and the policy allows another try.
pub async fn with_retries<T, F, Fut>(mut attempt: F) -> Result<T, UpstreamError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, UpstreamError>>,
{
    let policy = RetryPolicy::default();
    let started = timer::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if error.is_retryable() => error,
            Err(error) => return Err(error),
        };
        let random = wasi::random::random::get_random_u64();
        match policy.next_delay(attempts, error.retry_after, timer::since(started), random) {
            Some(delay) => {
                adapters::log::failure(
                    "chat",
                    format_args!("{error}; retrying in {} ms", delay.as_millis()),
                );
                timer::sleep(delay).await;
            }
            None => return Err(error),
        }
    }
}

/// Sends the request `build` makes (again for each attempt) and parses the response.
pub async fn call<T>(
    service: Service,
    settings: &Settings,
    build: impl Fn() -> http::Request<Vec<u8>>,
    parse: impl Fn(&http::Response<Vec<u8>>) -> Result<T, UpstreamError>,
) -> Result<T, UpstreamError> {
    with_retries(|| async {
        let response = outbound::send(build(), settings.upstream_timeout)
            .await
            .map_err(|failure| UpstreamError::unsent(service, failure))?;
        parse(&response)
    })
    .await
}
