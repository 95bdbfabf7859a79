//! Answers from an OpenAI-compatible chat-completions endpoint, whole or token by token.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use adapters::{outbound, timer};
use futures::{Stream, StreamExt};
use rag_core::config::Settings;
use rag_core::pipeline::ANSWER_TEMPERATURE;
use rag_core::upstream::openai::{
    check_stream_content_type, ChatMessage, ChatStream, Completion, OpenAi, StreamChunk,
};
use rag_core::upstream::{Service, UpstreamError};
use spin_sdk::http::IncomingResponse;

use crate::upstream;

fn client(settings: &Settings) -> OpenAi {
    OpenAi::from_settings(settings).expect("generation runs only when an OpenAI key is set")
}

/// The whole answer, retried on retryable failures.
pub async fn complete(
    settings: &Settings,
    messages: &[ChatMessage],
) -> Result<Completion, UpstreamError> {
    let openai = client(settings);
    upstream::call(
        Service::OpenAi,
        settings,
        || openai.chat_request(messages, false, ANSWER_TEMPERATURE),
        OpenAi::parse_chat_response,
    )
    .await
}

type BodyStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>, wasi::io::streams::Error>>>>;

/// A streamed answer whose response status was a success; chunks arrive as the model writes.
pub struct TokenStream {
    // Declared before `_response`: the body must be dropped before the response it came from.
    body: BodyStream,
    _response: IncomingResponse,
    decoder: ChatStream,
    pending: VecDeque<StreamChunk>,
    ended: bool,
    idle_limit: Duration,
}

/// The request for a streamed completion.
pub fn stream_request(settings: &Settings, messages: &[ChatMessage]) -> http::Request<Vec<u8>> {
    client(settings).chat_request(messages, true, ANSWER_TEMPERATURE)
}

/// Starts a streamed completion. Failures before the response arrives (no token has been
/// produced yet) are retried; once it streams, nothing is retried. A success that is not an
/// event stream fails here, before the client's stream opens.
pub async fn open_stream(
    settings: &Settings,
    messages: &[ChatMessage],
) -> Result<TokenStream, UpstreamError> {
    let limit = settings.upstream_timeout;
    let response = upstream::with_retries(|| async {
        let request = stream_request(settings, messages);
        let sending = spin_sdk::http::send::<_, IncomingResponse>(request);
        let response = match timer::timeout(limit, sending).await {
            None => return Err(UpstreamError::timeout(Service::OpenAi)),
            Some(Err(error)) => {
                return Err(UpstreamError::unsent(
                    Service::OpenAi,
                    outbound::classify(&error),
                ))
            }
            Some(Ok(response)) => response,
        };
        match status_failure(&response) {
            Some(error) => {
                // An error body is short; what the model's server said goes to the log.
                let body = timer::timeout(limit, response.into_body()).await;
                match body {
                    Some(Ok(body)) => Err(error.with_reason_from(&body)),
                    _ => Err(error),
                }
            }
            None => {
                let content_type = response.headers().get("content-type").into_iter().next();
                let content_type = content_type.map(|v| String::from_utf8_lossy(&v).into_owned());
                check_stream_content_type(content_type.as_deref()).map(|()| response)
            }
        }
    })
    .await?;
    let body: BodyStream = Box::pin(response.take_body_stream());
    Ok(TokenStream {
        body,
        _response: response,
        decoder: ChatStream::new(),
        pending: VecDeque::new(),
        ended: false,
        idle_limit: limit,
    })
}

/// The classified failure of a non-success status, with its `Retry-After`.
fn status_failure(response: &IncomingResponse) -> Option<UpstreamError> {
    let mut head = http::Response::builder().status(response.status());
    for value in response.headers().get("retry-after") {
        head = head.header(http::header::RETRY_AFTER, value);
    }
    let head = head.body(()).ok()?;
    UpstreamError::from_response(Service::OpenAi, &head, SystemTime::now())
}

impl TokenStream {
    /// The next chunk, `None` at the end of a complete stream. A pause longer than the upstream
    /// timeout, a broken connection or a stream cut before `[DONE]` is an error.
    pub async fn next(&mut self) -> Result<Option<StreamChunk>, UpstreamError> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Ok(Some(chunk));
            }
            if self.ended {
                return Ok(None);
            }
            match timer::timeout(self.idle_limit, self.body.next()).await {
                None => return Err(UpstreamError::timeout(Service::OpenAi)),
                Some(Some(Ok(bytes))) => self.pending.extend(self.decoder.feed(&bytes)?),
                Some(Some(Err(_))) => {
                    return Err(UpstreamError::connect(
                        Service::OpenAi,
                        "the stream broke off",
                    ))
                }
                Some(None) => {
                    self.ended = true;
                    self.pending.extend(self.decoder.finish()?);
                }
            }
        }
    }
}
