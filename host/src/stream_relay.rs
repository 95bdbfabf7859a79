//! The runner's side of the token relay (`rag_core::relay`): a component that opted in
//! (`tool.runner.relay_streams`) hands over a streamed answer once its row is stored, and its
//! instance ends. The runner sends the model request under the component's own allow-list,
//! writes the stream's events with the same encoders the component uses, and calls the
//! component back to store how the answer ended. A stream then holds a connection and a small
//! task instead of a whole instance, and a token costs a read and a write, not a trip through
//! the guest.

use std::convert::Infallible;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use rag_core::error::ApiError;
use rag_core::relay::{HandOver, ModelRequest, Outcome, Ready, Refusal, Settle, OPENAI_CHAT};
use rag_core::retry::RetryPolicy;
use rag_core::sse;
use rag_core::upstream::openai::{check_stream_content_type, ChatStream};
use rag_core::upstream::{SendFailure, Service, UpstreamError};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tracing::Instrument;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiBody;

use crate::metrics;
use crate::outbound_http::OutboundHttp;

pub use rag_core::relay::{RELAY_HEADER, TOKEN_ENV, TOKEN_HEADER};

/// Largest hand-over read from a component: a prompt with its passages and history is tens of
/// KiB.
const MAX_HAND_OVER_BYTES: usize = 4 << 20;

/// Most of a model's error body read (for the log).
const MAX_ERROR_BODY_BYTES: usize = 64 << 10;

/// The longest answer relayed; a model that writes more is cut off, as a guest's memory cap
/// would cut it.
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// Events waiting for a slow client before the relay waits for it.
const EVENTS_BUFFERED: usize = 16;

/// Stores a relayed answer's ending by calling the component back.
pub type SettleCall = Arc<dyn Fn(Settle) -> BoxFuture<'static, ()> + Send + Sync>;

/// What the relay of one stream needs from the request path.
pub struct Relay {
    pub component: Arc<str>,
    /// The component's outbound rules and the shared client.
    pub outbound: OutboundHttp,
    pub settle: SettleCall,
    /// Resolves once the handing-over instance has ended (and freed its pool slot).
    pub guest_ended: BoxFuture<'static, ()>,
    /// The stream ends here at the latest, like a guest's.
    pub stream_timeout: Duration,
    /// The request's place among those in flight, held until the stream ends.
    pub permit: Arc<OwnedSemaphorePermit>,
    /// The runner's count of streams being relayed.
    pub open: Arc<AtomicUsize>,
}

/// Counts one stream as relayed while it lives.
struct OpenRelay(Arc<AtomicUsize>);

impl OpenRelay {
    fn new(open: Arc<AtomicUsize>) -> Self {
        let now = open.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::stream_relays_open(now);
        Self(open)
    }
}

impl Drop for OpenRelay {
    fn drop(&mut self) {
        let now = self.0.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::stream_relays_open(now);
    }
}

/// Whether a guest's response hands its stream over.
pub fn is_hand_over<B>(head: &http::Response<B>) -> bool {
    head.headers()
        .get(RELAY_HEADER)
        .is_some_and(|value| value.as_bytes() == OPENAI_CHAT.as_bytes())
}

/// Reads the hand-over, opens the model's stream and answers: the event stream, or the JSON
/// error the component would have answered with.
pub async fn relay(head: http::Response<HyperOutgoingBody>, relay: Relay) -> Response<Body> {
    let Relay {
        component,
        outbound,
        settle,
        guest_ended,
        stream_timeout,
        permit,
        open,
    } = relay;
    let (mut parts, body) = head.into_parts();
    parts.headers.remove(RELAY_HEADER);
    let mut lines = Lines::new(body);
    let request = match lines.next().await {
        Ok(HandOver::Open(request)) => request,
        other => return broken_hand_over(&component, parts, other.err()),
    };
    // The model request goes out now; the component is storing the answer's row meanwhile.
    let opening = open_model_stream(&outbound, &request);
    tokio::pin!(opening);
    let mut opened = None;
    let ready = loop {
        tokio::select! {
            line = lines.next() => break line,
            result = &mut opening, if opened.is_none() => opened = Some(result),
        }
    };
    drop(lines);
    guest_ended.await;
    let ready = match ready {
        Ok(HandOver::Ready(ready)) => ready,
        Ok(HandOver::Refused(refusal)) => return refused(parts, refusal),
        other => return broken_hand_over(&component, parts, other.err()),
    };
    let opened = match opened {
        Some(opened) => opened,
        None => opening.await,
    };
    let upstream = match opened {
        Ok(upstream) => upstream,
        Err(error) => {
            tracing::warn!(component = %component, "generation failed: {error}");
            settle(Settle {
                ready,
                answer: String::new(),
                outcome: Outcome::Discard,
            })
            .await;
            let error = ApiError::from(error);
            return refused(
                parts,
                Refusal {
                    status: error.status,
                    body: String::from_utf8_lossy(&error.to_json_body()).into_owned(),
                },
            );
        }
    };
    let (events, receiver) = mpsc::channel(EVENTS_BUFFERED);
    let stream = Stream {
        component,
        idle_limit: request.timeout(),
        deadline: tokio::time::Instant::now() + stream_timeout,
        settle,
        _permit: permit,
        _open: OpenRelay::new(open),
    };
    // Its log lines keep the request's span (and so its `x-request-id`).
    tokio::spawn(pump(upstream, ready, events, stream).in_current_span());
    let body = futures::stream::unfold(receiver, |mut receiver| async move {
        let event: Bytes = receiver.recv().await?;
        Some((Ok::<_, Infallible>(event), receiver))
    });
    Response::from_parts(parts, Body::from_stream(body))
}

/// How a relayed stream ended.
enum End {
    Complete,
    Failed(UpstreamError),
    ClientLeft,
    /// `STREAM_TIMEOUT_SECS` ran out, as it does for a guest that streams.
    Deadline,
}

/// Queues one event for the client, waiting for room no later than the stream's deadline (a
/// client that stops reading would otherwise hold the relay for ever).
async fn send_by(
    events: &mpsc::Sender<Bytes>,
    event: Bytes,
    deadline: tokio::time::Instant,
) -> Result<(), End> {
    match tokio::time::timeout_at(deadline, events.send(event)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::ClientLeft),
        Err(_) => Err(End::Deadline),
    }
}

/// One relayed stream's limits and ending.
struct Stream {
    component: Arc<str>,
    /// The longest wait for the model's next read.
    idle_limit: Duration,
    deadline: tokio::time::Instant,
    settle: SettleCall,
    _permit: Arc<OwnedSemaphorePermit>,
    _open: OpenRelay,
}

/// Writes the events of one answer until the model ends, fails or the client leaves; then
/// stores the answer through the component and sends the last event.
async fn pump(
    upstream: http::Response<WasiBody>,
    mut ready: Ready,
    events: mpsc::Sender<Bytes>,
    relay: Stream,
) {
    let Stream {
        idle_limit,
        deadline,
        ..
    } = relay;
    let mut body = upstream.into_body();
    let mut decoder = ChatStream::new();
    let mut answer = String::new();
    let mut usage = None;
    // Sent once; the call back needs only the ids.
    let sources = Bytes::from(std::mem::take(&mut ready.sources_event));
    let end = 'stream: {
        if let Err(end) = send_by(&events, sources, deadline).await {
            break 'stream end;
        }
        loop {
            let read = tokio::select! {
                _ = events.closed() => break 'stream End::ClientLeft,
                _ = tokio::time::sleep_until(deadline) => break 'stream End::Deadline,
                read = tokio::time::timeout(idle_limit, body.frame()) => read,
            };
            let finished = matches!(read, Ok(None));
            let chunks = match read {
                Err(_) => break 'stream End::Failed(UpstreamError::timeout(Service::OpenAi)),
                Ok(Some(Err(_))) => {
                    break 'stream End::Failed(UpstreamError::connect(
                        Service::OpenAi,
                        "the stream broke off",
                    ))
                }
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => decoder.feed(&data),
                    Err(_) => continue,
                },
                Ok(None) => decoder.finish(),
            };
            let chunks = match chunks {
                Ok(chunks) => chunks,
                Err(error) => break 'stream End::Failed(error),
            };
            for chunk in chunks {
                usage = chunk.usage.or(usage);
                if chunk.delta.is_empty() {
                    continue;
                }
                if answer.len() + chunk.delta.len() > MAX_ANSWER_BYTES {
                    break 'stream End::Failed(UpstreamError::bad_response(
                        Service::OpenAi,
                        format!("the answer is longer than {MAX_ANSWER_BYTES} bytes"),
                    ));
                }
                answer.push_str(&chunk.delta);
                let event = sse::delta_event(&chunk.delta).into();
                if let Err(end) = send_by(&events, event, deadline).await {
                    break 'stream end;
                }
            }
            if finished {
                break 'stream End::Complete;
            }
        }
    };
    let (outcome, last_event) = match end {
        End::Complete => (
            Outcome::Complete,
            Some(sse::done_event(&ready.session_id, ready.message_id, usage)),
        ),
        End::Failed(error) => {
            tracing::warn!(component = %relay.component, "the answer stream failed: {error}");
            (
                Outcome::Incomplete,
                Some(sse::error_event(&ApiError::from(error))),
            )
        }
        End::Deadline => {
            tracing::warn!(
                component = %relay.component,
                "message {} ran past the stream's limit; stored as incomplete",
                ready.message_id
            );
            let error = ApiError::new(
                504,
                "deadline_exceeded",
                "the answer took longer than the stream's limit",
            );
            (Outcome::Incomplete, Some(sse::error_event(&error)))
        }
        End::ClientLeft => {
            tracing::info!(
                component = %relay.component,
                "the client left during message {}; stored as incomplete",
                ready.message_id
            );
            (Outcome::Incomplete, None)
        }
    };
    let settling = Instant::now();
    (relay.settle)(Settle {
        ready,
        answer,
        outcome,
    })
    .await;
    metrics::stream_relay_settled(
        match outcome {
            Outcome::Complete => "complete",
            Outcome::Incomplete => "incomplete",
            Outcome::Discard => "discard",
        },
        settling.elapsed(),
    );
    if let Some(event) = last_event {
        // A client that stopped reading gets it only if there is room; the stream ends anyway.
        let _ = send_by(&events, event.into(), deadline).await;
    }
    drop(relay);
}

/// Sends the model request, trying again as the component would (jittered backoff on timeouts,
/// connection failures, 429 and 5xx, honouring `Retry-After`); a success must be an event stream.
async fn open_model_stream(
    outbound: &OutboundHttp,
    request: &ModelRequest,
) -> Result<http::Response<WasiBody>, UpstreamError> {
    let policy = RetryPolicy::default();
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = match send_once(outbound, request).await {
            Ok(response) => return Ok(response),
            Err(error) if error.is_retryable() => error,
            Err(error) => return Err(error),
        };
        let random = RandomState::new().hash_one(attempts);
        match policy.next_delay(attempts, error.retry_after, started.elapsed(), random) {
            Some(delay) => {
                tracing::warn!("{error}; retrying in {} ms", delay.as_millis());
                tokio::time::sleep(delay).await;
            }
            None => return Err(error),
        }
    }
}

async fn send_once(
    outbound: &OutboundHttp,
    request: &ModelRequest,
) -> Result<http::Response<WasiBody>, UpstreamError> {
    let limit = request.timeout();
    let built = request
        .to_request()
        .map_err(|_| UpstreamError::connect(Service::OpenAi, "the model URL is not valid"))?
        .map(|body| {
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync()
        });
    let sending = Box::into_pin(outbound.send(built, None));
    let response = match tokio::time::timeout(limit, sending).await {
        Err(_) => return Err(UpstreamError::timeout(Service::OpenAi)),
        Ok(Err(error)) => {
            let failure = SendFailure::from_error_code_name(&format!("{error:?}"));
            return Err(UpstreamError::unsent(Service::OpenAi, failure));
        }
        Ok(Ok((response, _))) => response,
    };
    if let Some(error) = UpstreamError::from_response(Service::OpenAi, &response, SystemTime::now())
    {
        // An error body is short; what the model's server said goes to the log.
        let body = http_body_util::Limited::new(response.into_body(), MAX_ERROR_BODY_BYTES);
        let body = tokio::time::timeout(limit, body.collect()).await;
        return Err(match body {
            Ok(Ok(body)) => error.with_reason_from(&body.to_bytes()),
            _ => error,
        });
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    check_stream_content_type(content_type)?;
    Ok(response)
}

/// The component's JSON error, with the head it set (its CORS headers) but a JSON type.
fn refused(mut parts: http::response::Parts, refusal: Refusal) -> Response<Body> {
    for name in [header::CACHE_CONTROL, header::CONTENT_TYPE] {
        parts.headers.remove(name);
    }
    parts.headers.remove("x-accel-buffering");
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_GATEWAY);
    Response::from_parts(parts, Body::from(refusal.body))
}

/// 500 `component_failed`, with the component's head (its CORS headers, so that a browser can
/// read the error).
fn broken_hand_over(
    component: &str,
    parts: http::response::Parts,
    error: Option<String>,
) -> Response<Body> {
    tracing::error!(
        component,
        "the stream's hand-over is not readable: {}",
        error.as_deref().unwrap_or("an unexpected line")
    );
    let error = ApiError::new(
        500,
        "component_failed",
        "the component failed while handling the request",
    );
    refused(
        parts,
        Refusal {
            status: error.status,
            body: String::from_utf8_lossy(&error.to_json_body()).into_owned(),
        },
    )
}

/// The hand-over's JSON lines, read from the guest's body as it writes them.
struct Lines {
    body: HyperOutgoingBody,
    buffer: Vec<u8>,
    ended: bool,
}

impl Lines {
    fn new(body: HyperOutgoingBody) -> Self {
        Self {
            body,
            buffer: Vec::new(),
            ended: false,
        }
    }

    async fn next(&mut self) -> Result<HandOver, String> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return HandOver::from_line(&line[..end]).map_err(|error| error.to_string());
            }
            if self.ended {
                return Err("the body ended before the line did".into());
            }
            match self.body.frame().await {
                None => self.ended = true,
                Some(Err(code)) => return Err(format!("{code:?}")),
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if self.buffer.len() + data.len() > MAX_HAND_OVER_BYTES {
                        return Err(format!("longer than {MAX_HAND_OVER_BYTES} bytes"));
                    }
                    self.buffer.extend_from_slice(&data);
                }
            }
        }
    }
}
