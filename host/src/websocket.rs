//! `GET /chat/ws`: the chat over a WebSocket. Each `ask` frame becomes an internal streamed
//! `POST /chat` that takes the same path as one sent over HTTP (rate limits, then the runtime
//! with its permits, body limit, memory cap and deadlines), and the events of the answer's
//! stream are forwarded as JSON frames as they arrive. The chat component stays the only place
//! that answers; this module only translates between the two transports, and keeps each
//! connection alive, bounded and closed politely. The frames are described in README, "WebSocket".

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{
    header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode,
};
use axum::Router;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota};
use http_body_util::{BodyExt, Limited};
use rag_core::cors::AllowedOrigins;
use rag_core::sse::{SseEvent, SseParser};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tower::ServiceExt;

use crate::config::WebSocketSettings;
use crate::errors::json_error;

/// Longest client-chosen ask id.
const ASK_ID_MAX_CHARS: usize = 64;
/// Refused messages in a row (over the rate or the size limit) after which the connection is
/// closed with 1008: the client is not listening to the error frames.
const REFUSALS_BEFORE_CLOSE: u32 = 10;
/// Messages larger than the limit times this are not read at all: the connection is closed
/// with 1009 instead of answering them with an error frame.
const HARD_SIZE_FACTOR: usize = 16;
/// Frames of one answer that may wait for a slow client before the answer itself waits.
const FRAME_BUFFER: usize = 16;
/// How much of a refused `/chat` answer is read to find its error.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// How long a closing handshake may take before the connection is dropped.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(2);

/// Where the server is in its life; every connection watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// SIGTERM: no new asks; each connection closes (1001) once its answer in flight is done.
    Draining,
    /// The drain deadline passed: answers in flight are cut and every connection closes now.
    Closing,
}

/// The open WebSockets, so that shutdown can drain them: the HTTP server's graceful shutdown
/// does not see a connection once it has been upgraded.
#[derive(Clone)]
pub struct Sockets {
    phase: watch::Sender<Phase>,
    open: watch::Sender<usize>,
}

impl Default for Sockets {
    fn default() -> Self {
        Self::new()
    }
}

impl Sockets {
    pub fn new() -> Self {
        Self {
            phase: watch::Sender::new(Phase::Serving),
            open: watch::Sender::new(0),
        }
    }

    /// Stop taking asks; close each connection once its answer in flight has finished.
    pub fn drain(&self) {
        self.phase.send_if_modified(|phase| {
            let changed = *phase == Phase::Serving;
            if changed {
                *phase = Phase::Draining;
            }
            changed
        });
    }

    /// Cut the answers still in flight and close every connection now.
    pub fn close_all(&self) {
        self.phase.send_replace(Phase::Closing);
    }

    /// Resolves when no WebSocket is open.
    pub async fn closed(&self) {
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|count| *count == 0).await;
    }

    pub fn count(&self) -> usize {
        *self.open.borrow()
    }

    fn opened(&self) -> OpenSocket {
        self.open.send_modify(|count| *count += 1);
        crate::metrics::websocket_opened();
        OpenSocket(self.open.clone())
    }
}

/// Counts one connection from its upgrade until it ends (or its upgrade fails).
struct OpenSocket(watch::Sender<usize>);

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.send_modify(|count| *count -= 1);
        crate::metrics::websocket_closed();
    }
}

/// The route's state: where asks go and the limits of each connection.
#[derive(Clone)]
pub struct ChatSocket(Arc<Shared>);

struct Shared {
    /// The runner's HTTP app without this route: every ask is sent through it as a
    /// `POST /chat`, so it spends the chat budget and meets every limit an HTTP chat meets.
    requests: Router,
    /// `BASE_PATH` + `/chat`.
    chat_path: String,
    allowed_origins: Arc<AllowedOrigins>,
    settings: WebSocketSettings,
    sockets: Sockets,
}

impl ChatSocket {
    pub fn new(
        requests: Router,
        base_path: &str,
        allowed_origins: Arc<AllowedOrigins>,
        settings: WebSocketSettings,
        sockets: Sockets,
    ) -> Self {
        Self(Arc::new(Shared {
            requests,
            chat_path: format!("{base_path}/chat"),
            allowed_origins,
            settings,
            sockets,
        }))
    }
}

/// The handler of `/chat/ws`: checks the Origin, then upgrades.
pub async fn upgrade(
    State(socket): State<ChatSocket>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response<Body> {
    let shared = socket.0;
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) if rejection.status() == StatusCode::METHOD_NOT_ALLOWED => {
            let mut response = json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route takes only GET with a WebSocket upgrade",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            return response;
        }
        Err(_) => {
            let mut response = json_error(
                StatusCode::UPGRADE_REQUIRED,
                "upgrade_required",
                "this route speaks WebSocket only (Connection: upgrade, Upgrade: websocket); without WebSockets, POST /chat with Accept: text/event-stream",
            );
            let headers = response.headers_mut();
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            return response;
        }
    };
    if !origin_allowed(&shared.allowed_origins, &headers) {
        return json_error(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this page's origin is not in ALLOWED_ORIGINS",
        );
    }
    if *shared.sockets.phase.borrow() != Phase::Serving {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down; connect again shortly",
        );
    }
    let client = Client::from_upgrade(peer, &headers);
    let open = shared.sockets.opened();
    let hard_limit = shared
        .settings
        .ws_max_message_bytes
        .saturating_mul(HARD_SIZE_FACTOR)
        .max(1024);
    upgrade
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |ws| async move {
            Connection::new(ws, shared, client).run().await;
            drop(open);
        })
}

/// A browser's WebSocket may come from a page the allow-list names, or from a page of this
/// server itself (same-origin needs no CORS either). Clients that are not browsers send no
/// Origin and are let in, as CORS lets them.
fn origin_allowed(allowed: &AllowedOrigins, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let same_origin = origin
        .split_once("://")
        .zip(host)
        .is_some_and(|((_, authority), host)| authority.eq_ignore_ascii_case(host));
    same_origin
        || rag_core::cors::headers(allowed, Some(origin), false)
            .iter()
            .any(|(name, _)| *name == "access-control-allow-origin")
}

/// What an ask's internal request carries from the upgrade, so the client is the same client
/// (peer and `X-Forwarded-For`, read by `TRUSTED_PROXIES`) and the URL the same URL.
#[derive(Clone)]
struct Client {
    peer: SocketAddr,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Client {
    fn from_upgrade(peer: SocketAddr, headers: &HeaderMap) -> Self {
        let carried = [
            header::HOST,
            header::USER_AGENT,
            HeaderName::from_static("x-forwarded-for"),
            HeaderName::from_static("x-forwarded-proto"),
        ];
        let headers = carried
            .iter()
            .flat_map(|name| {
                headers
                    .get_all(name)
                    .iter()
                    .map(move |value| (name.clone(), value.clone()))
            })
            .collect();
        Self { peer, headers }
    }
}

/// A frame for the client, and whether it ends its ask.
struct Outbound {
    frame: Value,
    last: bool,
}

/// The answer being streamed on a connection.
struct InFlight {
    id: String,
    frames: mpsc::Receiver<Outbound>,
    task: JoinHandle<()>,
}

struct Connection {
    ws: WebSocket,
    shared: Arc<Shared>,
    client: Client,
    budget: Option<DefaultDirectRateLimiter>,
    refusals: u32,
    in_flight: Option<InFlight>,
    draining: bool,
}

/// Why a connection loop ended.
enum End {
    /// The client closed or went away; nothing more to send.
    Gone,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

impl Connection {
    fn new(ws: WebSocket, shared: Arc<Shared>, client: Client) -> Self {
        let budget = std::num::NonZeroU32::new(shared.settings.ws_max_messages_per_minute)
            .map(|per_minute| DefaultDirectRateLimiter::direct(Quota::per_minute(per_minute)));
        Self {
            ws,
            shared,
            client,
            budget,
            refusals: 0,
            in_flight: None,
            draining: false,
        }
    }

    async fn run(mut self) {
        let end = self.serve().await;
        if let Some(ask) = self.in_flight.take() {
            // Dropping the answer's body is what a departing SSE client does: the chat
            // component stores what it had as incomplete.
            ask.task.abort();
            crate::metrics::websocket_ask("abandoned");
        }
        let End::Close(code, reason) = end else {
            // Sends the reply to a client's close frame, which the protocol layer has queued.
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE, SinkExt::close(&mut self.ws)).await;
            return;
        };
        tracing::debug!(code, reason, "closing a WebSocket");
        let _ = self
            .ws
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
        // Give the client the chance to answer the close, as the protocol asks.
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
            while let Some(Ok(_)) = self.ws.recv().await {}
        })
        .await;
    }

    async fn serve(&mut self) -> End {
        let settings = self.shared.settings.clone();
        let mut phase = self.shared.sockets.phase.subscribe();
        let mut pings = every(settings.ws_ping_interval_secs);
        let idle_timeout = (settings.ws_idle_timeout_secs > 0)
            .then(|| Duration::from_secs(settings.ws_idle_timeout_secs));
        let mut awaiting_pong = false;
        let mut last_heard = Instant::now();
        let mut watching_phase = true;
        match *phase.borrow_and_update() {
            Phase::Serving => {}
            Phase::Draining => self.draining = true,
            Phase::Closing => return End::Close(close_code::AWAY, "server shutting down"),
        }
        loop {
            if self.draining && self.in_flight.is_none() {
                return End::Close(close_code::AWAY, "server shutting down");
            }
            let idle_at = idle_timeout
                .filter(|_| self.in_flight.is_none())
                .map(|timeout| last_heard + timeout);
            tokio::select! {
                received = self.ws.recv() => {
                    let message = match received {
                        None => return End::Gone,
                        Some(Ok(message)) => message,
                        Some(Err(err)) => {
                            tracing::debug!("websocket read failed: {err}");
                            return read_failure(&err.to_string());
                        }
                    };
                    match message {
                        Message::Text(text) => {
                            last_heard = Instant::now();
                            if let Some(end) = self.on_message(Some(text.as_str()), text.len()).await {
                                return end;
                            }
                        }
                        Message::Binary(data) => {
                            last_heard = Instant::now();
                            if let Some(end) = self.on_message(None, data.len()).await {
                                return end;
                            }
                        }
                        Message::Pong(_) => awaiting_pong = false,
                        // Answered by the protocol layer.
                        Message::Ping(_) => {}
                        Message::Close(_) => return End::Gone,
                    }
                }
                frame = next_frame(&mut self.in_flight) => {
                    let outbound = frame.unwrap_or_else(|| Outbound {
                        frame: error_frame(
                            Some(self.in_flight.as_ref().map_or("", |a| a.id.as_str())),
                            "component_failed",
                            "the answer stopped before it was complete",
                        ),
                        last: true,
                    });
                    if outbound.last {
                        let outcome = if outbound.frame["type"] == "done" { "done" } else { "error" };
                        crate::metrics::websocket_ask(outcome);
                        self.in_flight = None;
                        // Idleness counts from the end of the answer, however long it took.
                        last_heard = Instant::now();
                    }
                    if self.send(outbound.frame).await.is_err() {
                        return End::Gone;
                    }
                }
                _ = tick(&mut pings) => {
                    if awaiting_pong {
                        return End::Close(close_code::AWAY, "no pong");
                    }
                    if self.ws.send(Message::Ping(Bytes::from_static(b"keep-alive"))).await.is_err() {
                        return End::Gone;
                    }
                    awaiting_pong = true;
                }
                _ = sleep_until(idle_at) => return End::Close(close_code::AWAY, "idle timeout"),
                changed = phase.changed(), if watching_phase => {
                    if changed.is_err() {
                        watching_phase = false;
                        continue;
                    }
                    match *phase.borrow_and_update() {
                        Phase::Serving => {}
                        Phase::Draining => self.draining = true,
                        Phase::Closing => return End::Close(close_code::AWAY, "server shutting down"),
                    }
                }
            }
        }
    }

    /// A text (`Some`) or binary (`None`) message of `size` bytes.
    async fn on_message(&mut self, text: Option<&str>, size: usize) -> Option<End> {
        let over_rate = self.budget.as_ref().and_then(|budget| {
            budget
                .check()
                .err()
                .map(|not_until| not_until.wait_time_from(budget.clock().now()))
        });
        let refusal = if let Some(wait) = over_rate {
            let mut frame = error_frame(
                None,
                "too_many_messages",
                &format!(
                    "more than {} messages a minute on this connection",
                    self.shared.settings.ws_max_messages_per_minute
                ),
            );
            frame["retry_after_secs"] = Value::from(whole_seconds(wait));
            Some(frame)
        } else if size > self.shared.settings.ws_max_message_bytes {
            Some(error_frame(
                None,
                "message_too_large",
                &format!(
                    "messages may be at most {} bytes (got {size})",
                    self.shared.settings.ws_max_message_bytes
                ),
            ))
        } else {
            None
        };
        if let Some(mut frame) = refusal {
            // A client waiting on this ask's id learns that it was refused.
            if let Some(id) = text.and_then(frame_id) {
                frame["id"] = id.into();
            }
            self.refusals += 1;
            if self.refusals >= REFUSALS_BEFORE_CLOSE {
                return Some(End::Close(close_code::POLICY, "too many refused messages"));
            }
            return self.send(frame).await.err();
        }
        self.refusals = 0;
        let Some(text) = text else {
            return self
                .send(error_frame(
                    None,
                    "bad_frame",
                    "binary frames are not part of the protocol; send JSON text frames",
                ))
                .await
                .err();
        };
        let result = match parse(text) {
            Err(frame) => self.send(frame).await,
            Ok(Inbound::Ping) => self.send(serde_json::json!({"type": "pong"})).await,
            Ok(Inbound::Cancel { id }) => self.cancel(&id).await,
            Ok(Inbound::Ask { id, body }) => self.ask(id, body).await,
        };
        result.err()
    }

    async fn ask(&mut self, id: String, body: Map<String, Value>) -> Result<(), End> {
        if self.draining {
            return self
                .send(error_frame(
                    Some(&id),
                    "shutting_down",
                    "the server is shutting down; ask again after reconnecting",
                ))
                .await;
        }
        if let Some(in_flight) = &self.in_flight {
            let message = format!(
                "the answer to {:?} is still streaming; cancel it or wait for it",
                in_flight.id
            );
            return self.send(error_frame(Some(&id), "busy", &message)).await;
        }
        let (sender, frames) = mpsc::channel(FRAME_BUFFER);
        let request = chat_request(&self.shared.chat_path, &self.client, &body);
        let task = tokio::spawn(bridge(
            self.shared.requests.clone(),
            request,
            id.clone(),
            sender,
        ));
        self.in_flight = Some(InFlight { id, frames, task });
        Ok(())
    }

    async fn cancel(&mut self, id: &str) -> Result<(), End> {
        if self.in_flight.as_ref().is_none_or(|ask| ask.id != id) {
            // Already over (its last frame may be on the way): nothing to cancel.
            return Ok(());
        }
        // Frames the answer had already produced go out first; one may end it.
        while let Some(ask) = &mut self.in_flight {
            let Ok(outbound) = ask.frames.try_recv() else {
                break;
            };
            if outbound.last {
                let outcome = if outbound.frame["type"] == "done" {
                    "done"
                } else {
                    "error"
                };
                crate::metrics::websocket_ask(outcome);
                self.in_flight = None;
            }
            self.send(outbound.frame).await?;
        }
        let Some(ask) = self.in_flight.take() else {
            return Ok(());
        };
        ask.task.abort();
        crate::metrics::websocket_ask("cancelled");
        self.send(serde_json::json!({"type": "cancelled", "id": ask.id}))
            .await
    }

    async fn send(&mut self, frame: Value) -> Result<(), End> {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .map_err(|_| End::Gone)
    }
}

/// A read error ends the connection: a message over the hard size limit gets 1009, invalid
/// UTF-8 in a text frame 1007, a broken frame 1002; a lost connection gets nothing.
fn read_failure(error: &str) -> End {
    let error = error.to_ascii_lowercase();
    if error.starts_with("io error") || error.contains("closed") {
        End::Gone
    } else if error.contains("too long") || error.contains("space limit") {
        End::Close(close_code::SIZE, "message too large")
    } else if error.contains("utf-8") || error.contains("utf8") {
        End::Close(close_code::INVALID, "text frame is not UTF-8")
    } else {
        End::Close(close_code::PROTOCOL, "protocol error")
    }
}

enum Inbound {
    Ask {
        id: String,
        body: Map<String, Value>,
    },
    Cancel {
        id: String,
    },
    Ping,
}

/// Reads a client frame; what is not a frame of the protocol is answered with `bad_frame`.
fn parse(text: &str) -> Result<Inbound, Value> {
    let bad = |id: Option<&str>, message: &str| error_frame(id, "bad_frame", message);
    let Ok(Value::Object(mut frame)) = serde_json::from_str::<Value>(text) else {
        return Err(bad(None, "a frame must be a JSON object with a \"type\""));
    };
    let id = match frame.remove("id") {
        None => None,
        Some(Value::String(id)) if (1..=ASK_ID_MAX_CHARS).contains(&id.chars().count()) => Some(id),
        Some(_) => {
            let mut error = bad(
                None,
                &format!("\"id\" must be a string of 1 to {ASK_ID_MAX_CHARS} characters"),
            );
            error["field"] = "id".into();
            return Err(error);
        }
    };
    let kind = frame.remove("type");
    let missing_id = |kind: &str| {
        let mut error = bad(None, &format!("a {kind} frame needs an \"id\""));
        error["field"] = "id".into();
        error
    };
    match kind.as_ref().and_then(Value::as_str) {
        Some("ask") => {
            let id = id.ok_or_else(|| missing_id("ask"))?;
            // Everything else is the chat request's body: the chat component validates it
            // and names the field it refuses.
            Ok(Inbound::Ask { id, body: frame })
        }
        Some("cancel") => Ok(Inbound::Cancel {
            id: id.ok_or_else(|| missing_id("cancel"))?,
        }),
        Some("ping") => Ok(Inbound::Ping),
        Some(other) => Err(bad(
            id.as_deref(),
            &format!("unknown frame type {other:?}; expected ask, cancel or ping"),
        )),
        None => Err(bad(
            id.as_deref(),
            "a frame needs a \"type\": ask, cancel or ping",
        )),
    }
}

/// The `id` of a frame that is not otherwise read, if it has a valid one.
fn frame_id(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct WithId {
        id: Option<Value>,
    }
    match serde_json::from_str::<WithId>(text).ok()?.id? {
        Value::String(id) if (1..=ASK_ID_MAX_CHARS).contains(&id.chars().count()) => Some(id),
        _ => None,
    }
}

fn error_frame(id: Option<&str>, code: &str, message: &str) -> Value {
    let mut frame = serde_json::json!({"type": "error", "code": code, "message": message});
    if let Some(id) = id {
        frame["id"] = id.into();
    }
    frame
}

fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The ask as the chat component receives a streamed chat over HTTP.
fn chat_request(path: &str, client: &Client, body: &Map<String, Value>) -> Request<Body> {
    let body = serde_json::to_vec(body).expect("a JSON object serialises");
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "text/event-stream")
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body))
        .expect("the chat path is a valid URI");
    for (name, value) in &client.headers {
        request.headers_mut().append(name.clone(), value.clone());
    }
    request.extensions_mut().insert(ConnectInfo(client.peer));
    request
}

/// Sends one ask through the HTTP app and turns its answer into frames. A refusal (any
/// non-2xx JSON error, the runner's 429 included) becomes one `error` frame.
async fn bridge(
    requests: Router,
    request: Request<Body>,
    id: String,
    frames: mpsc::Sender<Outbound>,
) {
    let response = match requests.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let streamed = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !response.status().is_success() || !streamed {
        let frame = refusal_frame(&id, response).await;
        let _ = frames.send(Outbound { frame, last: true }).await;
        return;
    }
    let mut parser = SseParser::new();
    let mut body = response.into_body().into_data_stream();
    let mut finished = false;
    // Read to the end even after the last event, as an SSE client does, so the component is
    // not told its client left.
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else { break };
        for event in parser.feed(&chunk) {
            if finished {
                continue;
            }
            if let Some(outbound) = event_frame(&id, &event) {
                finished = outbound.last;
                if frames.send(outbound).await.is_err() {
                    return;
                }
            }
        }
    }
    if let Some(outbound) = parser.finish().and_then(|event| event_frame(&id, &event)) {
        if !finished {
            finished = outbound.last;
            let _ = frames.send(outbound).await;
        }
    }
    if !finished {
        let _ = frames
            .send(Outbound {
                frame: error_frame(
                    Some(&id),
                    "component_failed",
                    "the answer stopped before it was complete",
                ),
                last: true,
            })
            .await;
    }
}

/// One SSE event of the chat stream as a frame: its JSON object with `type` and `id` added.
fn event_frame(id: &str, event: &SseEvent) -> Option<Outbound> {
    let name = event.event.as_deref()?;
    if !matches!(name, "sources" | "delta" | "done" | "error") {
        return None;
    }
    let Ok(Value::Object(mut frame)) = serde_json::from_str::<Value>(&event.data) else {
        tracing::warn!(
            event = name,
            "chat stream event is not a JSON object; skipped"
        );
        return None;
    };
    frame.insert("type".into(), name.into());
    frame.insert("id".into(), id.into());
    Some(Outbound {
        frame: Value::Object(frame),
        last: matches!(name, "done" | "error"),
    })
}

/// The `error` frame of a refused ask: the JSON error's code, message and field, and
/// `retry_after_secs` from `Retry-After`.
async fn refusal_frame(id: &str, response: Response<Body>) -> Value {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    let body = Limited::new(response.into_body(), ERROR_BODY_LIMIT)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let error = &parsed["error"];
    let mut frame = match (error["code"].as_str(), error["message"].as_str()) {
        (Some(code), Some(message)) => error_frame(Some(id), code, message),
        _ => {
            tracing::warn!(%status, "chat answered an ask without a stream or a JSON error");
            error_frame(
                Some(id),
                "component_failed",
                &format!("the chat answered with status {}", status.as_u16()),
            )
        }
    };
    if let Some(field) = error["field"].as_str() {
        frame["field"] = field.into();
    }
    if let Some(secs) = retry_after {
        frame["retry_after_secs"] = secs.into();
    }
    frame
}

/// The next frame of the answer in flight; pending when there is none.
async fn next_frame(in_flight: &mut Option<InFlight>) -> Option<Outbound> {
    match in_flight {
        Some(ask) => ask.frames.recv().await,
        None => std::future::pending().await,
    }
}

fn every(secs: u64) -> Option<Interval> {
    (secs > 0).then(|| {
        let period = Duration::from_secs(secs);
        let mut interval = tokio::time::interval_at(Instant::now() + period, period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        interval
    })
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn origins_follow_the_cors_list_and_same_origin_pages_are_let_in() {
        let list = AllowedOrigins::parse("https://book.example");
        let host = ("host", "api.example:7860");
        assert!(origin_allowed(&list, &headers(&[host])));
        assert!(origin_allowed(
            &list,
            &headers(&[host, ("origin", "https://book.example")])
        ));
        assert!(origin_allowed(
            &list,
            &headers(&[host, ("origin", "http://api.example:7860")])
        ));
        for refused in ["https://evil.example", "null", "http://api.example:7861"] {
            assert!(
                !origin_allowed(&list, &headers(&[host, ("origin", refused)])),
                "{refused}"
            );
        }
        assert!(!origin_allowed(
            &AllowedOrigins::None,
            &headers(&[host, ("origin", "https://book.example")])
        ));
        assert!(origin_allowed(
            &AllowedOrigins::Any,
            &headers(&[host, ("origin", "https://evil.example")])
        ));
    }

    #[test]
    fn frames_are_read_or_refused_as_bad_frames() {
        let ask = parse(r#"{"type":"ask","id":"a1","query":"q","session_id":"s"}"#);
        let Ok(Inbound::Ask { id, body }) = ask else {
            panic!("not an ask")
        };
        assert_eq!(id, "a1");
        assert_eq!(
            Value::Object(body),
            serde_json::json!({"query": "q", "session_id": "s"})
        );
        assert!(matches!(
            parse(r#"{"type":"cancel","id":"a1"}"#),
            Ok(Inbound::Cancel { id }) if id == "a1"
        ));
        assert!(matches!(parse(r#"{"type":"ping"}"#), Ok(Inbound::Ping)));
        for (text, field) in [
            ("not json", None),
            ("[1]", None),
            (r#"{"id":"a"}"#, None),
            (r#"{"type":"shout","id":"a"}"#, None),
            (r#"{"type":"ask","query":"q"}"#, Some("id")),
            (r#"{"type":"cancel"}"#, Some("id")),
            (r#"{"type":"ask","id":"","query":"q"}"#, Some("id")),
            (r#"{"type":"ask","id":7,"query":"q"}"#, Some("id")),
        ] {
            let Err(frame) = parse(text) else {
                panic!("{text} was accepted")
            };
            assert_eq!(frame["code"], "bad_frame", "{text}");
            assert_eq!(frame["field"].as_str(), field, "{text}");
        }
        let long = format!(r#"{{"type":"ask","id":"{}","query":"q"}}"#, "x".repeat(65));
        assert!(parse(&long).is_err());
        assert_eq!(
            frame_id(r#"{"type":"ask","id":"a1","query":"q"}"#).as_deref(),
            Some("a1")
        );
        assert_eq!(frame_id(&long), None);
        assert_eq!(frame_id(r#"{"type":"ping"}"#), None);
        assert_eq!(frame_id("not json"), None);
    }

    #[test]
    fn stream_events_become_frames_with_type_and_id() {
        let mut parser = SseParser::new();
        let mut stream = rag_core::sse::delta_event("Hello");
        stream.extend(rag_core::sse::done_event("s-1", 7, None));
        stream.extend(b": keep-alive\n\nevent: other\ndata: {}\n\n");
        let frames: Vec<Outbound> = parser
            .feed(&stream)
            .iter()
            .filter_map(|event| event_frame("a1", event))
            .collect();
        assert_eq!(frames.len(), 2);
        assert_eq!(
            frames[0].frame,
            serde_json::json!({"type": "delta", "id": "a1", "text": "Hello"})
        );
        assert!(!frames[0].last);
        assert_eq!(
            frames[1].frame,
            serde_json::json!({"type": "done", "id": "a1", "session_id": "s-1", "message_id": 7})
        );
        assert!(frames[1].last);
    }

    #[tokio::test]
    async fn refusals_keep_code_message_field_and_retry_after() {
        let response = Response::builder()
            .status(429)
            .header("retry-after", "7")
            .body(Body::from(
                r#"{"error":{"code":"rate_limited","message":"too many"}}"#,
            ))
            .unwrap();
        let frame = refusal_frame("a1", response).await;
        assert_eq!(
            frame,
            serde_json::json!({"type": "error", "id": "a1", "code": "rate_limited",
                               "message": "too many", "retry_after_secs": 7})
        );
        let response = Response::builder()
            .status(400)
            .body(Body::from(
                r#"{"error":{"code":"invalid_request","message":"bad","field":"top_k"}}"#,
            ))
            .unwrap();
        let frame = refusal_frame("a2", response).await;
        assert_eq!(frame["field"], "top_k");
        assert_eq!(frame["code"], "invalid_request");
        let response = Response::builder()
            .status(502)
            .body(Body::from("<html>"))
            .unwrap();
        assert_eq!(
            refusal_frame("a3", response).await["code"],
            "component_failed"
        );
    }

    #[test]
    fn read_errors_close_with_the_matching_code() {
        assert!(matches!(
            read_failure("Space limit exceeded: Message too long: 2000000 > 1048576"),
            End::Close(close_code::SIZE, _)
        ));
        assert!(matches!(
            read_failure("UTF-8 encoding error"),
            End::Close(close_code::INVALID, _)
        ));
        assert!(matches!(
            read_failure("Protocol error: reserved bits are non-zero"),
            End::Close(close_code::PROTOCOL, _)
        ));
    }
}
