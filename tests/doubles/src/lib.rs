//! Test doubles of the upstream HTTP APIs, served on `127.0.0.1:0` in-process: Cohere v2
//! (`/v2/embed`, `/v2/rerank`), Qdrant (collections, payload indexes, points upsert / query /
//! delete / scroll, in memory, cosine similarity) and OpenAI chat completions
//! (`/v1/chat/completions`, JSON or SSE ending with `data: [DONE]`).
//!
//! Responses follow the published schemas (this crate's tests check them against
//! `../shared/contracts`). Embeddings are deterministic: hashed bag-of-words vectors of
//! [`EMBED_DIMS`] dimensions, normalised, so texts sharing words are close. The language model
//! answers from the first numbered context block (`[1] ...`) of the prompt and cites `[1]`,
//! so a test can see that the context reached it. The reranker scores by word overlap
//! ([`Doubles::rerank_order`]), a different measure from the search's, so a test can see
//! whether the reranker's order was applied. Faults can be queued per endpoint ([`Fault`]:
//! error statuses, delays, bodies the API never sends, connections reset before or after the
//! response headers, streams cut, stalled or broken mid-answer); a fixed
//! latency per endpoint and a token pace for streamed answers make the doubles stand in for
//! real services in load runs (`serve-doubles` serves them as their own process).

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tower::Service;

/// Dimensions of the doubles' embeddings.
pub const EMBED_DIMS: usize = 64;
/// Most texts the embed double accepts per call, as Cohere.
pub const EMBED_BATCH_LIMIT: usize = 96;
/// Model name the chat double reports.
pub const CHAT_MODEL: &str = "double-chat-1";
/// The chat double's answer when the prompt has no `[1]` context block.
pub const NO_CONTEXT_ANSWER: &str = "The provided context does not contain the answer.";

/// An upstream operation, for call counts and faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    CohereEmbed,
    CohereRerank,
    OpenAiChat,
    QdrantExists,
    QdrantCollectionInfo,
    QdrantCreateCollection,
    QdrantCreateIndex,
    QdrantUpsert,
    QdrantQuery,
    QdrantDelete,
    QdrantScroll,
}

impl Endpoint {
    fn api(self) -> Api {
        match self {
            Endpoint::CohereEmbed | Endpoint::CohereRerank => Api::Cohere,
            Endpoint::OpenAiChat => Api::OpenAi,
            _ => Api::Qdrant,
        }
    }
}

#[derive(Clone, Copy)]
enum Api {
    Cohere,
    Qdrant,
    OpenAi,
}

/// What the next call to an endpoint does instead of (or before) answering normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and the API's error body, with `Retry-After: secs` if given.
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Wait this long before answering normally (longer than the client's deadline = a hang).
    Delay(Duration),
    /// Answer 200 with a body that is not valid JSON; a chat stream sends its first deltas,
    /// then an event whose data is not JSON, then `[DONE]`.
    MalformedBody,
    /// Chat streams only: send the first deltas, then end without `data: [DONE]`.
    CutStream,
    /// Chat streams only: send the first deltas, then keep the response open without sending
    /// more, as a model that stops mid-answer; the call ends only when the client goes away.
    StallStream,
    /// Reset the connection (TCP RST) before any byte of a response, as a crashed server or a
    /// dropping load balancer.
    ResetBeforeHeaders,
    /// Send the status, the headers and part of the body (half of a JSON body; a stream's
    /// first deltas), then reset the connection.
    ResetAfterHeaders,
    /// Answer 200 with an HTML page instead of the API's format, as a captive portal or a
    /// misrouted proxy does.
    WrongContentType,
}

impl Fault {
    /// HTTP 429 with `Retry-After: secs`.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Fault::Status {
            status: 429,
            retry_after: Some(retry_after_secs),
        }
    }

    /// HTTP 500.
    pub fn server_error() -> Self {
        Fault::status(500)
    }

    /// This HTTP status (with the API's error body), without `Retry-After`.
    pub fn status(status: u16) -> Self {
        Fault::Status {
            status,
            retry_after: None,
        }
    }
}

/// How a request's body was delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// The `Content-Length` header's value, when sent.
    pub content_length: Option<u64>,
    /// Whether `Transfer-Encoding: chunked` was sent.
    pub chunked: bool,
}

impl Framing {
    fn of(headers: &HeaderMap) -> Self {
        Self {
            content_length: headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
            chunked: headers
                .get_all(header::TRANSFER_ENCODING)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.to_ascii_lowercase().contains("chunked")),
        }
    }
}

struct Point {
    id: Value,
    vector: Vec<f32>,
    /// Index -> value, for a collection with a sparse vector.
    sparse: BTreeMap<u32, f32>,
    payload: serde_json::Map<String, Value>,
}

/// How a collection was created: one unnamed dense vector, or a named dense vector and a
/// named sparse vector with the `idf` modifier.
#[derive(Clone)]
enum Vectors {
    Unnamed,
    Named { dense: String, sparse: String },
}

struct Collection {
    size: usize,
    vectors: Vectors,
    indexes: Vec<String>,
    /// Keyed by the id's JSON text, so integer and UUID ids order consistently.
    points: BTreeMap<String, Point>,
}

/// How a streamed chat answer is paced: the first content delta `first_token` after the
/// response headers, then one delta every `per_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPacing {
    pub first_token: Duration,
    pub per_token: Duration,
}

#[derive(Default)]
struct Inner {
    calls: HashMap<Endpoint, usize>,
    latency: HashMap<Endpoint, Duration>,
    pacing: Option<StreamPacing>,
    faults: HashMap<Endpoint, VecDeque<Fault>>,
    last_bodies: HashMap<Endpoint, Value>,
    framings: HashMap<Endpoint, Framing>,
    qdrant_api_key: Option<String>,
    collections: HashMap<String, Collection>,
    chat_answer: Option<String>,
    operation_id: u64,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Inner>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The running doubles; dropping it stops the server.
pub struct Doubles {
    addr: SocketAddr,
    shared: Shared,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Doubles {
    /// Binds `127.0.0.1:0` and serves all three APIs on it.
    pub async fn start() -> Doubles {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind a loopback port")
    }

    /// Binds `addr` (port 0: any free port) and serves all three APIs on it.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Doubles> {
        let shared = Shared::default();
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(serve(listener, router(shared.clone()), stopped));
        Ok(Doubles {
            addr,
            shared,
            shutdown: Some(shutdown),
        })
    }

    /// `http://127.0.0.1:PORT`: the Cohere base URL and the Qdrant URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1`: the OpenAI-compatible base URL.
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.base_url())
    }

    /// Calls received by `endpoint` so far, faulted ones included.
    pub fn calls(&self, endpoint: Endpoint) -> usize {
        self.shared
            .lock()
            .calls
            .get(&endpoint)
            .copied()
            .unwrap_or(0)
    }

    /// From now on every call to `endpoint` waits `latency` before it answers (a queued
    /// fault comes after the wait). For a streamed chat answer this is the time to the
    /// response headers; [`Doubles::set_stream_pacing`] paces the tokens after them.
    pub fn set_latency(&self, endpoint: Endpoint, latency: Duration) {
        self.shared.lock().latency.insert(endpoint, latency);
    }

    /// From now on streamed chat answers send their first content delta `first_token` after
    /// the headers and each further delta `per_token` after the one before; without it the
    /// whole stream goes out at once.
    pub fn set_stream_pacing(&self, first_token: Duration, per_token: Duration) {
        self.shared.lock().pacing = Some(StreamPacing {
            first_token,
            per_token,
        });
    }

    /// Queues a fault for the next call to `endpoint` that has no earlier fault queued.
    pub fn push_fault(&self, endpoint: Endpoint, fault: Fault) {
        self.shared
            .lock()
            .faults
            .entry(endpoint)
            .or_default()
            .push_back(fault);
    }

    /// Queues `fault` for the next `count` calls to `endpoint`.
    pub fn push_faults(&self, endpoint: Endpoint, fault: Fault, count: usize) {
        for _ in 0..count {
            self.push_fault(endpoint, fault.clone());
        }
    }

    /// Faults queued for `endpoint` that no call has met yet.
    pub fn pending_faults(&self, endpoint: Endpoint) -> usize {
        self.shared
            .lock()
            .faults
            .get(&endpoint)
            .map_or(0, VecDeque::len)
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// The JSON body of the latest call to `endpoint`.
    pub fn last_request(&self, endpoint: Endpoint) -> Option<Value> {
        self.shared.lock().last_bodies.get(&endpoint).cloned()
    }

    /// How the body of the latest call to `endpoint` was delimited.
    pub fn last_framing(&self, endpoint: Endpoint) -> Option<Framing> {
        self.shared.lock().framings.get(&endpoint).copied()
    }

    /// Makes every Qdrant operation (not `/readyz`, which needs no key, as in Qdrant) require
    /// this `api-key`: a request without it, or with another, gets Qdrant's 401.
    pub fn require_qdrant_api_key(&self, key: impl Into<String>) {
        self.shared.lock().qdrant_api_key = Some(key.into());
    }

    /// Replaces the chat double's derived answer with a fixed one.
    pub fn set_chat_answer(&self, answer: impl Into<String>) {
        self.shared.lock().chat_answer = Some(answer.into());
    }

    /// Replaces the chat double's answer with `words` distinct words ("word1 word2 ..."), each
    /// one streamed token; returns the answer.
    pub fn set_chat_answer_of_words(&self, words: usize) -> String {
        let answer = (1..=words)
            .map(|n| format!("word{n}"))
            .collect::<Vec<_>>()
            .join(" ");
        self.set_chat_answer(answer.clone());
        answer
    }

    /// Points stored in `collection` (0 if it does not exist).
    pub fn point_count(&self, collection: &str) -> usize {
        self.shared
            .lock()
            .collections
            .get(collection)
            .map_or(0, |c| c.points.len())
    }

    /// Keyword-indexed payload fields of `collection`.
    pub fn indexed_fields(&self, collection: &str) -> Vec<String> {
        self.shared
            .lock()
            .collections
            .get(collection)
            .map_or(Vec::new(), |c| c.indexes.clone())
    }

    /// The order (indexes into `documents`, best first) the rerank double returns for
    /// `query`, before `top_n` cuts it.
    pub fn rerank_order(query: &str, documents: &[String]) -> Vec<usize> {
        rerank_order(query, documents)
    }

    /// The embedding the embed double returns for `text`.
    pub fn embed(text: &str) -> Vec<f32> {
        embed(text)
    }
}

impl Drop for Doubles {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Accepts connections until `stopped`, then drops every open one (a stalled stream too).
async fn serve(listener: TcpListener, app: Router, mut stopped: oneshot::Receiver<()>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, app.clone()));
                }
                // Out of descriptors, or the peer left before the accept: try again shortly.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Lets a request's handling reset the connection it came on.
#[derive(Clone)]
struct ConnectionReset(Arc<Notify>);

impl ConnectionReset {
    fn now(&self) {
        self.0.notify_one();
    }
}

/// HTTP/1.1 on one connection, whose requests carry a [`ConnectionReset`]. A reset sets a zero
/// linger on the socket before closing it, so the peer gets a TCP RST, not an orderly FIN.
async fn serve_connection(stream: TcpStream, app: Router) {
    let _ = stream.set_nodelay(true);
    // A second descriptor of the same socket: hyper owns the first, and the reset needs the
    // socket after hyper's connection is dropped.
    let Ok(stream) = stream.into_std() else {
        return;
    };
    let Ok(twin) = stream.try_clone() else {
        return;
    };
    let Ok(stream) = TcpStream::from_std(stream) else {
        return;
    };
    let reset = ConnectionReset(Arc::new(Notify::new()));
    let handle = reset.clone();
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(handle.clone());
        let mut app = app.clone();
        async move { app.call(request).await }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        _ = reset.0.notified() => {
            if let Ok(twin) = TcpStream::from_std(twin) {
                let _ = twin.set_zero_linger();
            }
        }
    }
}

/// A connection-level fault a handler asked for; the [`aborting`] middleware carries it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abort {
    BeforeHeaders,
    AfterHeaders,
}

tokio::task_local! {
    static ABORT: Cell<Option<Abort>>;
}

/// Runs the handler, then resets the connection where a [`Fault::ResetBeforeHeaders`] or
/// [`Fault::ResetAfterHeaders`] said.
async fn aborting(request: Request, next: Next) -> Response {
    let reset = request.extensions().get::<ConnectionReset>().cloned();
    let (response, abort) = ABORT
        .scope(Cell::new(None), async move {
            let response = next.run(request).await;
            (response, ABORT.with(Cell::get))
        })
        .await;
    match (abort, reset) {
        (Some(Abort::BeforeHeaders), Some(reset)) => {
            reset.now();
            std::future::pending().await
        }
        (Some(Abort::AfterHeaders), Some(reset)) => part_then_reset(response, reset),
        _ => response,
    }
}

/// `response` with its headers, then half of a whole body (all of a stream, which the
/// handler has cut already), then a connection reset.
fn part_then_reset(response: Response, reset: ConnectionReset) -> Response {
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let streamed = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == "text/event-stream");
    let limit = match body.size_hint().exact() {
        Some(length) if !streamed => length / 2,
        _ => u64::MAX,
    };
    let head = body.into_data_stream().scan(0u64, move |sent, frame| {
        let part = frame.ok().filter(|_| *sent < limit).map(|frame| {
            let keep = (limit - *sent).min(frame.len() as u64);
            *sent += keep;
            Ok::<_, Infallible>(frame.slice(..keep as usize))
        });
        std::future::ready(part)
    });
    let tail = futures::stream::once(async move {
        // Time for the part sent to leave the socket: a reset discards unsent data.
        tokio::time::sleep(Duration::from_millis(50)).await;
        reset.now();
        std::future::pending::<Result<Bytes, Infallible>>().await
    });
    Response::from_parts(parts, Body::from_stream(head.chain(tail)))
}

fn set_abort(abort: Abort) {
    let _ = ABORT.try_with(|slot| slot.set(Some(abort)));
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/v2/embed", post(cohere_embed))
        .route("/v2/rerank", post(cohere_rerank))
        .route("/v1/chat/completions", post(openai_chat))
        .route("/readyz", get(qdrant_readyz))
        .route("/collections/{name}/exists", get(qdrant_exists))
        .route(
            "/collections/{name}",
            put(qdrant_create_collection).get(qdrant_collection_info),
        )
        .route("/collections/{name}/index", put(qdrant_create_index))
        .route("/collections/{name}/points", put(qdrant_upsert))
        .route("/collections/{name}/points/query", post(qdrant_query))
        .route("/collections/{name}/points/delete", post(qdrant_delete))
        .route("/collections/{name}/points/scroll", post(qdrant_scroll))
        .layer(axum::middleware::from_fn(aborting))
        .with_state(shared)
}

/// Hashed bag of words, L2-normalised.
fn embed(text: &str) -> Vec<f32> {
    let mut vector = vec![0f32; EMBED_DIMS];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        // FNV-1a: stable across runs and platforms, unlike the std hasher.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in word.to_lowercase().bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        vector[(hash % EMBED_DIMS as u64) as usize] += 1.0;
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

/// The rerank double's relevance of `document` to `query`: the Jaccard overlap of their
/// distinct lowercase words (shared words / all words). It is deliberately not the search's
/// measure (cosine of hashed word counts, fused with keyword ranks): it ignores repeats and
/// punishes long documents harder, so a reranked order can be told from the search order.
fn rerank_relevance(query: &str, document: &str) -> f32 {
    let words = |text: &str| -> std::collections::BTreeSet<String> {
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let (query, document) = (words(query), words(document));
    let union = query.union(&document).count();
    if union == 0 {
        return 0.0;
    }
    query.intersection(&document).count() as f32 / union as f32
}

/// Indexes of `documents` from most to least relevant by [`rerank_relevance`]; equal scores
/// go in reverse of the order sent, so ties too differ from the order the caller sent.
fn rerank_order(query: &str, documents: &[String]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..documents.len()).collect();
    order.sort_by(|&a, &b| {
        rerank_relevance(query, &documents[b])
            .total_cmp(&rerank_relevance(query, &documents[a]))
            .then(b.cmp(&a))
    });
    order
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norms =
        a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norms == 0.0 {
        0.0
    } else {
        dot / norms
    }
}

fn json_response(status: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(status).expect("valid status"),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error_response(api: Api, status: u16, message: &str) -> Response {
    let body = match api {
        Api::Cohere => json!({ "id": "double-error", "message": message }),
        Api::Qdrant => json!({ "status": { "error": message }, "time": 0.0 }),
        Api::OpenAi => json!({ "error": {
            "message": message,
            "type": if status == 429 { "rate_limit_error" } else { "invalid_request_error" },
            "param": null,
            "code": null,
        }}),
    };
    json_response(status, body)
}

fn qdrant_ok(result: Value) -> Response {
    json_response(
        200,
        json!({ "result": result, "status": "ok", "time": 0.0001 }),
    )
}

/// What a handler should do after the call has been counted.
/// How a streamed chat answer ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StreamEnd {
    Finish,
    Cut,
    Stall,
    /// The first deltas, an event that is not JSON, then `[DONE]`.
    Malformed,
}

enum Start {
    Proceed { body: Value, stream_end: StreamEnd },
    Respond(Response),
}

/// Counts the call, records its body, applies any queued fault, and parses the JSON body.
async fn begin(shared: &Shared, endpoint: Endpoint, headers: &HeaderMap, body: &[u8]) -> Start {
    let parsed: Result<Value, _> = if body.is_empty() {
        Ok(Value::Null)
    } else {
        serde_json::from_slice(body)
    };
    let (latency, fault) = {
        let mut inner = shared.lock();
        *inner.calls.entry(endpoint).or_default() += 1;
        inner.framings.insert(endpoint, Framing::of(headers));
        if let Some(refusal) = qdrant_key_refusal(&inner, endpoint, headers) {
            return Start::Respond(refusal);
        }
        if let Ok(value) = &parsed {
            inner.last_bodies.insert(endpoint, value.clone());
        }
        let fault = inner
            .faults
            .get_mut(&endpoint)
            .and_then(VecDeque::pop_front);
        (inner.latency.get(&endpoint).copied(), fault)
    };
    if let Some(latency) = latency {
        tokio::time::sleep(latency).await;
    }
    let mut stream_end = StreamEnd::Finish;
    let streamed = parsed
        .as_ref()
        .is_ok_and(|body| body["stream"].as_bool() == Some(true));
    match fault {
        Some(Fault::Status {
            status,
            retry_after,
        }) => {
            let mut response = error_response(endpoint.api(), status, "fault injected by the test");
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, secs.into());
            }
            return Start::Respond(response);
        }
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::MalformedBody) if streamed => stream_end = StreamEnd::Malformed,
        Some(Fault::MalformedBody) => {
            return Start::Respond(
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    "{\"truncated\": ",
                )
                    .into_response(),
            )
        }
        Some(Fault::CutStream) => stream_end = StreamEnd::Cut,
        Some(Fault::StallStream) => stream_end = StreamEnd::Stall,
        Some(Fault::ResetBeforeHeaders) => {
            set_abort(Abort::BeforeHeaders);
            return Start::Respond(StatusCode::OK.into_response());
        }
        Some(Fault::ResetAfterHeaders) => {
            set_abort(Abort::AfterHeaders);
            if streamed {
                stream_end = StreamEnd::Cut;
            }
        }
        Some(Fault::WrongContentType) => {
            return Start::Respond(
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    "<!DOCTYPE html>\n<html><head><title>Welcome</title></head><body><p>Sign in to continue.</p></body></html>\n",
                )
                    .into_response(),
            )
        }
        None => {}
    }
    match parsed {
        Ok(body) => Start::Proceed { body, stream_end },
        Err(error) => Start::Respond(error_response(
            endpoint.api(),
            400,
            &format!("invalid JSON body: {error}"),
        )),
    }
}

macro_rules! begin_or_return {
    ($shared:expr, $endpoint:expr, $headers:expr, $body:expr) => {
        match begin(&$shared, $endpoint, &$headers, &$body).await {
            Start::Proceed { body, stream_end } => (body, stream_end),
            Start::Respond(response) => return response,
        }
    };
}

fn has_bearer(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer ") && v.len() > "Bearer ".len())
}

fn strings(value: &Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect()
}

async fn cohere_embed(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (request, _) = begin_or_return!(shared, Endpoint::CohereEmbed, headers, body);
    if !has_bearer(&headers) {
        return error_response(Api::Cohere, 401, "no api key supplied");
    }
    let Some(texts) = strings(&request["texts"]) else {
        return error_response(Api::Cohere, 400, "texts must be an array of strings");
    };
    if texts.len() > EMBED_BATCH_LIMIT {
        return error_response(Api::Cohere, 400, "too many texts: at most 96 per call");
    }
    if request["model"].as_str().is_none() || request["input_type"].as_str().is_none() {
        return error_response(Api::Cohere, 400, "model and input_type are required");
    }
    let vectors: Vec<Vec<f32>> = texts.iter().map(|t| embed(t)).collect();
    let tokens: usize = texts.iter().map(|t| t.split_whitespace().count()).sum();
    json_response(
        200,
        json!({
            "id": "double-embed",
            "texts": texts,
            "embeddings": { "float": vectors },
            "meta": { "api_version": { "version": "2" }, "billed_units": { "input_tokens": tokens } },
        }),
    )
}

async fn cohere_rerank(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (request, _) = begin_or_return!(shared, Endpoint::CohereRerank, headers, body);
    if !has_bearer(&headers) {
        return error_response(Api::Cohere, 401, "no api key supplied");
    }
    let (Some(query), Some(documents)) =
        (request["query"].as_str(), strings(&request["documents"]))
    else {
        return error_response(
            Api::Cohere,
            400,
            "query and documents (strings) are required",
        );
    };
    let results = rerank_order(query, &documents);
    let mut results: Vec<(usize, f32)> = results
        .into_iter()
        .map(|index| (index, rerank_relevance(query, &documents[index])))
        .collect();
    let top_n = request["top_n"]
        .as_u64()
        .map_or(results.len(), |n| n as usize);
    results.truncate(top_n);
    json_response(
        200,
        json!({
            "id": "double-rerank",
            "results": results.iter().map(|(index, score)| json!({"index": index, "relevance_score": score})).collect::<Vec<_>>(),
            "meta": { "api_version": { "version": "2" }, "billed_units": { "search_units": 1 } },
        }),
    )
}

/// The scripted answer: the first sentence of context block `[1]`, cited.
fn derive_answer(messages: &[Value]) -> String {
    for message in messages {
        let Some(content) = message["content"].as_str() else {
            continue;
        };
        let Some(start) = content.find("\n[1] ") else {
            continue;
        };
        let block = &content[start + 1..];
        // The block is "[1] title — heading (url)\ntext"; quote the text's first sentence.
        let Some(text) = block.split_once('\n').map(|(_, rest)| rest) else {
            continue;
        };
        let text = text.lines().next().unwrap_or_default().trim();
        let sentence = match text.find(". ") {
            Some(end) => &text[..=end],
            None => text,
        };
        if !sentence.is_empty() {
            return format!("According to the book: {sentence} [1]");
        }
    }
    NO_CONTEXT_ANSWER.to_owned()
}

async fn openai_chat(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (request, stream_end) = begin_or_return!(shared, Endpoint::OpenAiChat, headers, body);
    if !has_bearer(&headers) {
        return error_response(Api::OpenAi, 401, "You didn't provide an API key.");
    }
    let Some(messages) = request["messages"].as_array().filter(|m| !m.is_empty()) else {
        return error_response(Api::OpenAi, 400, "messages must be a non-empty array");
    };
    let model = request["model"].as_str().unwrap_or(CHAT_MODEL).to_owned();
    let answer = shared
        .lock()
        .chat_answer
        .clone()
        .unwrap_or_else(|| derive_answer(messages));
    let prompt_tokens: usize = messages
        .iter()
        .filter_map(|m| m["content"].as_str())
        .map(|c| c.split_whitespace().count())
        .sum();
    let completion_tokens = answer.split_whitespace().count();
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    let created = 1_700_000_000u64;
    if request["stream"].as_bool() != Some(true) {
        return json_response(
            200,
            json!({
                "id": "chatcmpl-double",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": { "role": "assistant", "content": answer, "refusal": null, "annotations": [] },
                    "logprobs": null,
                    "finish_reason": "stop",
                }],
                "usage": usage,
            }),
        );
    }

    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": "chatcmpl-double", "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        })
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    // Word-sized pieces, keeping the spaces, so joining the deltas gives the answer back.
    let mut piece = String::new();
    for c in answer.chars() {
        piece.push(c);
        if c == ' ' {
            events.push(chunk(
                json!({ "content": std::mem::take(&mut piece) }),
                Value::Null,
            ));
        }
    }
    if !piece.is_empty() {
        events.push(chunk(json!({ "content": piece }), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    if request["stream_options"]["include_usage"].as_bool() == Some(true) {
        events.push(json!({
            "id": "chatcmpl-double", "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [], "usage": usage,
        }));
    }
    if stream_end != StreamEnd::Finish {
        events.truncate(3.min(events.len()));
    }
    let mut frames: Vec<String> = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    if stream_end == StreamEnd::Malformed {
        frames.push(
            "data: {\"id\": \"chatcmpl-double\", \"choices\": [{\"delta\": {\"content\n\n"
                .to_owned(),
        );
    }
    if matches!(stream_end, StreamEnd::Finish | StreamEnd::Malformed) {
        frames.push("data: [DONE]\n\n".to_owned());
    }
    let pacing = shared.lock().pacing;
    let body = match (pacing, stream_end) {
        (None, StreamEnd::Finish | StreamEnd::Cut | StreamEnd::Malformed) => {
            Body::from(frames.concat())
        }
        (pacing, end) => paced_body(frames, pacing, end == StreamEnd::Stall),
    };
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .expect("valid response")
}

/// A streamed body sending `frames` (SSE events) in order: the role chunk with the headers,
/// the first content delta after `first_token`, each further content delta `per_token` later,
/// and what follows the last content delta (finish, usage, `[DONE]`) at once. With `stall`
/// the body then stays open without sending more; it goes out chunked, so the client cannot
/// tell that it is over.
fn paced_body(frames: Vec<String>, pacing: Option<StreamPacing>, stall: bool) -> Body {
    let content =
        |frame: &String| frame.contains("\"content\":") && !frame.contains("\"content\":\"\"");
    let waits: Vec<Duration> = {
        let mut tokens_sent = 0usize;
        frames
            .iter()
            .map(|frame| match pacing {
                Some(pacing) if content(frame) => {
                    tokens_sent += 1;
                    if tokens_sent == 1 {
                        pacing.first_token
                    } else {
                        pacing.per_token
                    }
                }
                _ => Duration::ZERO,
            })
            .collect()
    };
    let paced =
        futures::stream::iter(frames.into_iter().zip(waits)).then(|(frame, wait)| async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            Ok::<_, std::convert::Infallible>(Bytes::from(frame))
        });
    if stall {
        Body::from_stream(paced.chain(futures::stream::pending()))
    } else {
        Body::from_stream(paced)
    }
}

/// Qdrant's answer to a request without the configured `api-key` (plain text, as its
/// authentication middleware sends it), or `None` when the key matches or none is required.
fn qdrant_key_refusal(inner: &Inner, endpoint: Endpoint, headers: &HeaderMap) -> Option<Response> {
    if !matches!(endpoint.api(), Api::Qdrant) {
        return None;
    }
    let expected = inner.qdrant_api_key.as_deref()?;
    let message = match headers.get("api-key").and_then(|v| v.to_str().ok()) {
        Some(presented) if presented == expected => return None,
        Some(_) => "Invalid API key or JWT",
        None => "Must provide an API key or an Authorization bearer token",
    };
    Some((StatusCode::UNAUTHORIZED, message).into_response())
}

/// `GET /readyz`: Qdrant answers it without a key.
async fn qdrant_readyz() -> Response {
    (StatusCode::OK, "all shards are ready").into_response()
}

fn missing_collection(name: &str) -> Response {
    error_response(
        Api::Qdrant,
        404,
        &format!("Not found: Collection `{name}` doesn't exist!"),
    )
}

fn next_operation(inner: &mut Inner) -> Value {
    inner.operation_id += 1;
    json!({ "operation_id": inner.operation_id, "status": "completed" })
}

async fn qdrant_exists(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let _ = begin_or_return!(shared, Endpoint::QdrantExists, headers, Bytes::new());
    let exists = shared.lock().collections.contains_key(&name);
    qdrant_ok(json!({ "exists": exists }))
}

async fn qdrant_create_collection(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (request, _) = begin_or_return!(shared, Endpoint::QdrantCreateCollection, headers, body);
    let cosine_size = |params: &Value| {
        let size = params["size"].as_u64().filter(|s| *s > 0);
        match (size, params["distance"].as_str()) {
            (Some(size), Some("Cosine")) => Some(size as usize),
            _ => None,
        }
    };
    let unsupported = || {
        error_response(
            Api::Qdrant,
            422,
            "the doubles support one Cosine vector, unnamed ({size, distance}) or named beside one sparse vector with modifier idf",
        )
    };
    let (size, vectors) = if let Some(size) = cosine_size(&request["vectors"]) {
        (size, Vectors::Unnamed)
    } else {
        let named = request["vectors"].as_object().filter(|v| v.len() == 1);
        let sparse = request["sparse_vectors"]
            .as_object()
            .filter(|v| v.len() == 1);
        let (Some(named), Some(sparse)) = (named, sparse) else {
            return unsupported();
        };
        let (dense_name, params) = named.iter().next().expect("one entry");
        let (sparse_name, sparse_params) = sparse.iter().next().expect("one entry");
        let Some(size) = cosine_size(params) else {
            return unsupported();
        };
        if sparse_params["modifier"] != "idf" {
            return unsupported();
        }
        (
            size,
            Vectors::Named {
                dense: dense_name.clone(),
                sparse: sparse_name.clone(),
            },
        )
    };
    let mut inner = shared.lock();
    if inner.collections.contains_key(&name) {
        return error_response(
            Api::Qdrant,
            409,
            &format!("Wrong input: Collection `{name}` already exists!"),
        );
    }
    inner.collections.insert(
        name,
        Collection {
            size,
            vectors,
            indexes: Vec::new(),
            points: BTreeMap::new(),
        },
    );
    qdrant_ok(json!(true))
}

/// `GET /collections/{name}`: the configuration as Qdrant reports it (the fields its schema
/// requires, with Qdrant's defaults).
async fn qdrant_collection_info(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let _ = begin_or_return!(
        shared,
        Endpoint::QdrantCollectionInfo,
        headers,
        Bytes::new()
    );
    let inner = shared.lock();
    let Some(collection) = inner.collections.get(&name) else {
        return missing_collection(&name);
    };
    let dense = json!({ "size": collection.size, "distance": "Cosine" });
    let mut params = match &collection.vectors {
        Vectors::Unnamed => json!({ "vectors": dense }),
        Vectors::Named { dense: d, sparse } => json!({
            "vectors": { d.as_str(): dense },
            "sparse_vectors": { sparse.as_str(): { "modifier": "idf" } },
        }),
    };
    params["shard_number"] = json!(1);
    params["replication_factor"] = json!(1);
    params["write_consistency_factor"] = json!(1);
    params["on_disk_payload"] = json!(true);
    let payload_schema: serde_json::Map<String, Value> = collection
        .indexes
        .iter()
        .map(|field| {
            (
                field.clone(),
                json!({ "data_type": "keyword", "points": collection.points.len() }),
            )
        })
        .collect();
    qdrant_ok(json!({
        "status": "green",
        "optimizer_status": "ok",
        "indexed_vectors_count": 0,
        "points_count": collection.points.len(),
        "segments_count": 1,
        "config": {
            "params": params,
            "hnsw_config": { "m": 16, "ef_construct": 100, "full_scan_threshold": 10000 },
            "optimizer_config": { "default_segment_number": 0, "flush_interval_sec": 5 },
            "wal_config": { "wal_capacity_mb": 32, "wal_segments_ahead": 0 },
        },
        "payload_schema": payload_schema,
    }))
}

async fn qdrant_create_index(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (request, _) = begin_or_return!(shared, Endpoint::QdrantCreateIndex, headers, body);
    let Some(field) = request["field_name"].as_str() else {
        return error_response(Api::Qdrant, 422, "field_name is required");
    };
    let mut inner = shared.lock();
    let Some(collection) = inner.collections.get_mut(&name) else {
        return missing_collection(&name);
    };
    if !collection.indexes.iter().any(|f| f == field) {
        collection.indexes.push(field.to_owned());
    }
    let result = next_operation(&mut inner);
    qdrant_ok(result)
}

fn id_key(id: &Value) -> Option<String> {
    match id {
        Value::Number(n) if n.is_u64() => Some(format!("{:020}", n.as_u64()?)),
        Value::String(s)
            if s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-') =>
        {
            Some(s.to_lowercase())
        }
        _ => None,
    }
}

async fn qdrant_upsert(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (request, _) = begin_or_return!(shared, Endpoint::QdrantUpsert, headers, body);
    let Some(points) = request["points"].as_array() else {
        return error_response(Api::Qdrant, 422, "points is required");
    };
    let mut inner = shared.lock();
    let Some(collection) = inner.collections.get_mut(&name) else {
        return missing_collection(&name);
    };
    let mut parsed = Vec::new();
    for point in points {
        let Some(key) = id_key(&point["id"]) else {
            return error_response(
                Api::Qdrant,
                400,
                "point id must be an unsigned integer or a UUID",
            );
        };
        let (vector, sparse) = match point_vectors(collection, &point["vector"]) {
            Ok(vectors) => vectors,
            Err(message) => return error_response(Api::Qdrant, 400, &message),
        };
        let payload = point["payload"].as_object().cloned().unwrap_or_default();
        parsed.push((
            key,
            Point {
                id: point["id"].clone(),
                vector,
                sparse,
                payload,
            },
        ));
    }
    collection.points.extend(parsed);
    let result = next_operation(&mut inner);
    qdrant_ok(result)
}

fn dense_vector(value: &Value) -> Option<Vec<f32>> {
    value
        .as_array()
        .and_then(|v| v.iter().map(|x| x.as_f64().map(|f| f as f32)).collect())
}

/// `{indices, values}` with distinct indices and as many values, as Qdrant requires.
fn sparse_vector(value: &Value) -> Result<BTreeMap<u32, f32>, String> {
    let indices: Option<Vec<u32>> = value["indices"].as_array().and_then(|v| {
        v.iter()
            .map(|x| x.as_u64().and_then(|i| u32::try_from(i).ok()))
            .collect()
    });
    let values: Option<Vec<f32>> = value["values"]
        .as_array()
        .and_then(|v| v.iter().map(|x| x.as_f64().map(|f| f as f32)).collect());
    let (Some(indices), Some(values)) = (indices, values) else {
        return Err("Wrong input: a sparse vector is {indices: [u32], values: [f32]}".into());
    };
    if indices.len() != values.len() {
        return Err("Wrong input: sparse vector indices and values differ in length".into());
    }
    let map: BTreeMap<u32, f32> = indices.iter().copied().zip(values).collect();
    if map.len() != indices.len() {
        return Err("Wrong input: sparse vector indices must be unique".into());
    }
    Ok(map)
}

fn wrong_dimension(size: usize) -> String {
    format!("Wrong input: Vector dimension error: expected dim: {size}")
}

/// The dense and sparse vectors of an upserted point, as the collection's layout wants them.
fn point_vectors(
    collection: &Collection,
    value: &Value,
) -> Result<(Vec<f32>, BTreeMap<u32, f32>), String> {
    match &collection.vectors {
        Vectors::Unnamed => dense_vector(value)
            .filter(|v| v.len() == collection.size)
            .map(|v| (v, BTreeMap::new()))
            .ok_or_else(|| wrong_dimension(collection.size)),
        Vectors::Named { dense, sparse } => {
            let Some(named) = value.as_object() else {
                return Err("Wrong input: Not existing vector name error: ".to_owned());
            };
            if let Some(unknown) = named.keys().find(|k| *k != dense && *k != sparse) {
                return Err(format!(
                    "Wrong input: Not existing vector name error: {unknown}"
                ));
            }
            let vector = named
                .get(dense)
                .and_then(dense_vector)
                .filter(|v| v.len() == collection.size)
                .ok_or_else(|| wrong_dimension(collection.size))?;
            let keywords = match named.get(sparse) {
                Some(value) => sparse_vector(value)?,
                None => BTreeMap::new(),
            };
            Ok((vector, keywords))
        }
    }
}

/// Qdrant's `idf` modifier: ln((N - n + 0.5) / (n + 0.5) + 1), n = points holding the index.
fn sparse_idf(collection: &Collection, index: u32) -> f32 {
    let total = collection.points.len() as f32;
    let holding = collection
        .points
        .values()
        .filter(|p| p.sparse.contains_key(&index))
        .count() as f32;
    ((total - holding + 0.5) / (holding + 0.5) + 1.0).ln()
}

/// Reciprocal Rank Fusion as Qdrant computes it: each list adds 1 / (rank + 2), rank from 0.
const RRF_K: f32 = 2.0;

type Scored<'a> = Vec<(f32, &'a Point)>;

/// Runs one query level (the request or a prefetch): its own prefetches first, then its query
/// over their candidates (or over the whole collection), `score_threshold`, `limit`.
fn run_query<'a>(collection: &'a Collection, request: &Value) -> Result<Scored<'a>, String> {
    let prefetches: Vec<&Value> = match &request["prefetch"] {
        Value::Null => Vec::new(),
        Value::Array(list) => list.iter().collect(),
        single => vec![single],
    };
    let prefetched: Vec<Scored<'a>> = prefetches
        .into_iter()
        .map(|prefetch| run_query(collection, prefetch))
        .collect::<Result<_, _>>()?;
    let candidates: Vec<&'a Point> = if request.get("prefetch").is_some() {
        let mut seen: Vec<&'a Point> = Vec::new();
        for (_, point) in prefetched.iter().flatten() {
            if !seen.iter().any(|p| std::ptr::eq(*p, *point)) {
                seen.push(point);
            }
        }
        seen
    } else {
        collection.points.values().collect()
    };
    let using = request["using"].as_str();
    let query = &request["query"];
    let mut scored: Scored<'a> = if query["fusion"].is_string() {
        if query["fusion"] != "rrf" {
            return Err("the doubles support fusion \"rrf\" only".into());
        }
        let mut fused: Scored<'a> = Vec::new();
        for list in &prefetched {
            for (rank, (_, point)) in list.iter().enumerate() {
                let add = 1.0 / (rank as f32 + RRF_K);
                match fused.iter_mut().find(|(_, p)| std::ptr::eq(*p, *point)) {
                    Some(entry) => entry.0 += add,
                    None => fused.push((add, point)),
                }
            }
        }
        fused
    } else if let Some(dense) = dense_vector(query) {
        let expected = match &collection.vectors {
            Vectors::Unnamed => None,
            Vectors::Named { dense, .. } => Some(dense.as_str()),
        };
        if using != expected {
            return Err(format!(
                "Wrong input: Not existing vector name error: {}",
                using.unwrap_or("")
            ));
        }
        if dense.len() != collection.size {
            return Err(wrong_dimension(collection.size));
        }
        candidates
            .into_iter()
            .map(|p| (cosine(&dense, &p.vector), p))
            .collect()
    } else if query.get("indices").is_some() {
        let Vectors::Named { sparse: name, .. } = &collection.vectors else {
            return Err(format!(
                "Wrong input: Not existing vector name error: {}",
                using.unwrap_or("")
            ));
        };
        if using != Some(name.as_str()) {
            return Err(format!(
                "Wrong input: Not existing vector name error: {}",
                using.unwrap_or("")
            ));
        }
        let keywords = sparse_vector(query)?;
        candidates
            .into_iter()
            .filter_map(|p| {
                let score: f32 = keywords
                    .iter()
                    .filter_map(|(index, weight)| {
                        p.sparse
                            .get(index)
                            .map(|value| sparse_idf(collection, *index) * weight * value)
                    })
                    .sum();
                keywords
                    .keys()
                    .any(|index| p.sparse.contains_key(index))
                    .then_some((score, p))
            })
            .collect()
    } else {
        return Err(
            "the doubles support a dense vector, a sparse vector or {fusion: rrf} as query".into(),
        );
    };
    if let Some(threshold) = request["score_threshold"].as_f64() {
        scored.retain(|(score, _)| *score >= threshold as f32);
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.truncate(request["limit"].as_u64().unwrap_or(10) as usize);
    Ok(scored)
}

fn select_payload(payload: &serde_json::Map<String, Value>, with_payload: &Value) -> Value {
    match with_payload {
        Value::Bool(true) => Value::Object(payload.clone()),
        Value::Array(keys) => Value::Object(
            keys.iter()
                .filter_map(Value::as_str)
                .filter_map(|k| payload.get(k).map(|v| (k.to_owned(), v.clone())))
                .collect(),
        ),
        _ => Value::Null,
    }
}

async fn qdrant_query(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (request, _) = begin_or_return!(shared, Endpoint::QdrantQuery, headers, body);
    let inner = shared.lock();
    let Some(collection) = inner.collections.get(&name) else {
        return missing_collection(&name);
    };
    let hits = match run_query(collection, &request) {
        Ok(hits) => hits,
        Err(message) => return error_response(Api::Qdrant, 400, &message),
    };
    let with_payload = request
        .get("with_payload")
        .cloned()
        .unwrap_or(Value::Bool(false));
    let points: Vec<Value> = hits
        .iter()
        .map(|(score, p)| json!({ "id": p.id, "version": 1, "score": score, "payload": select_payload(&p.payload, &with_payload) }))
        .collect();
    qdrant_ok(json!({ "points": points }))
}

/// `filter.must[*]` of `{key, match: {value}|{any}}` conditions, as the doubles support.
fn matches_filter(payload: &serde_json::Map<String, Value>, filter: &Value) -> bool {
    filter["must"].as_array().is_some_and(|conditions| {
        conditions.iter().all(|condition| {
            let Some(key) = condition["key"].as_str() else {
                return false;
            };
            let actual = payload.get(key);
            let matcher = &condition["match"];
            if let Some(any) = matcher["any"].as_array() {
                actual.is_some_and(|a| any.contains(a))
            } else {
                actual.is_some_and(|a| *a == matcher["value"])
            }
        })
    })
}

async fn qdrant_delete(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (request, _) = begin_or_return!(shared, Endpoint::QdrantDelete, headers, body);
    let mut inner = shared.lock();
    let Some(collection) = inner.collections.get_mut(&name) else {
        return missing_collection(&name);
    };
    if let Some(ids) = request["points"].as_array() {
        for key in ids.iter().filter_map(id_key) {
            collection.points.remove(&key);
        }
    } else if request["filter"].is_object() {
        collection
            .points
            .retain(|_, p| !matches_filter(&p.payload, &request["filter"]));
    } else {
        return error_response(Api::Qdrant, 422, "points or filter is required");
    }
    let result = next_operation(&mut inner);
    qdrant_ok(result)
}

async fn qdrant_scroll(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (request, _) = begin_or_return!(shared, Endpoint::QdrantScroll, headers, body);
    let limit = request["limit"].as_u64().unwrap_or(10).max(1) as usize;
    let inner = shared.lock();
    let Some(collection) = inner.collections.get(&name) else {
        return missing_collection(&name);
    };
    let start = match request.get("offset").filter(|o| !o.is_null()) {
        Some(offset) => match id_key(offset) {
            Some(key) => key,
            None => return error_response(Api::Qdrant, 400, "offset must be a point id"),
        },
        None => String::new(),
    };
    let with_payload = request
        .get("with_payload")
        .cloned()
        .unwrap_or(Value::Bool(true));
    let with_vector = request["with_vector"].as_bool() == Some(true);
    let mut page = collection.points.range(start..);
    let points: Vec<Value> = page
        .by_ref()
        .take(limit)
        .map(|(_, p)| {
            let mut record =
                json!({ "id": p.id, "payload": select_payload(&p.payload, &with_payload) });
            if with_vector {
                record["vector"] = json!(p.vector);
            }
            record
        })
        .collect();
    let next = page.next().map_or(Value::Null, |(_, p)| p.id.clone());
    qdrant_ok(json!({ "points": points, "next_page_offset": next }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_are_deterministic_normalised_and_similar_for_similar_texts() {
        let a = embed("ROS 2 nodes publish topics");
        assert_eq!(a, embed("ros 2 NODES publish topics"));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        let near = cosine(&a, &embed("nodes publish topics in ROS 2 graphs"));
        let far = cosine(&a, &embed("kinematic chains of humanoid legs"));
        assert!(near > 0.7 && far < near, "near {near}, far {far}");
        assert_eq!(embed("").iter().sum::<f32>(), 0.0);
    }

    #[test]
    fn scripted_answer_quotes_context_block_one() {
        let system = json!({"role": "system", "content": "rules\n\n<context>\n[1] ROS — Nodes (https://b/ros#n)\nA node is a process. More text.\n\n[2] X (u)\nother\n</context>"});
        assert_eq!(
            derive_answer(&[system]),
            "According to the book: A node is a process. [1]"
        );
        assert_eq!(
            derive_answer(&[json!({"role": "user", "content": "hi"})]),
            NO_CONTEXT_ANSWER
        );
    }

    #[test]
    fn filters_match_value_and_any() {
        let payload = json!({"page_url": "p1"}).as_object().unwrap().clone();
        assert!(matches_filter(
            &payload,
            &json!({"must": [{"key": "page_url", "match": {"any": ["p0", "p1"]}}]})
        ));
        assert!(matches_filter(
            &payload,
            &json!({"must": [{"key": "page_url", "match": {"value": "p1"}}]})
        ));
        assert!(!matches_filter(
            &payload,
            &json!({"must": [{"key": "page_url", "match": {"value": "p2"}}]})
        ));
        assert!(!matches_filter(&payload, &json!({})));
    }
}
