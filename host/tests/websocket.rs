//! `GET /chat/ws` end to end: the real runner binary serving the project's spin.toml with the
//! real chat component, in the keyless mode over the sample book (or with the model double
//! where an answer has to stall or crawl), driven by a WebSocket client.

mod support;

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use upstream_doubles::{Doubles, Endpoint, Fault};

const QUESTION: &str = "What is the zero moment point of a walking robot?";
const FOLLOW_UP: &str = "How does the support polygon keep a robot balanced?";
/// Long enough for any frame of these answers; a test that waits longer has failed.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The runner binary, keyless over the sample book, with its data folder.
struct Runner {
    process: support::runner::Runner,
    data_dir: tempfile::TempDir,
}

impl Runner {
    /// Keyless over the sample book, with `env` on top (rate limits off unless `env` sets them).
    async fn start(env: &[(&str, &str)]) -> Runner {
        let data_dir = support::data_dir_with_book_index().await;
        let process = support::runner::Runner::start_with_env(data_dir.path(), &[], env).await;
        Runner { process, data_dir }
    }

    fn url(&self, path: &str) -> String {
        self.process.url(path)
    }

    fn ws_url(&self) -> String {
        self.url("/chat/ws").replacen("http://", "ws://", 1)
    }

    fn log_text(&self) -> String {
        self.process.log_text()
    }

    fn terminate(&self) {
        self.process.terminate();
    }

    /// The stored messages of a session, through the API.
    async fn history(&self, session_id: &str) -> Vec<Value> {
        let response = reqwest::get(self.url(&format!("/session/{session_id}")))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["messages"].as_array().unwrap().clone()
    }
}

/// Opens the socket with these extra request headers (`Origin`, `X-Forwarded-For`).
async fn try_connect(runner: &Runner, headers: &[(&str, &str)]) -> Result<Socket, WsError> {
    let mut request = runner.ws_url().into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, response)| {
            assert_eq!(response.status(), 101);
            socket
        })
}

async fn connect(runner: &Runner) -> Socket {
    try_connect(runner, &[]).await.unwrap()
}

async fn send(socket: &mut Socket, frame: Value) {
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}

/// What the server sent next, apart from keep-alive pings.
enum Received {
    Frame(Value),
    Closed(Option<CloseFrame>),
}

async fn receive(socket: &mut Socket) -> Received {
    loop {
        let message = tokio::time::timeout(FRAME_TIMEOUT, socket.next())
            .await
            .expect("no frame within the timeout");
        match message {
            Some(Ok(Message::Text(text))) => {
                return Received::Frame(serde_json::from_str(&text).unwrap())
            }
            Some(Ok(Message::Close(frame))) => return Received::Closed(frame),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(other)) => panic!("unexpected message {other:?}"),
            Some(Err(err)) => panic!("socket failed: {err}"),
            None => return Received::Closed(None),
        }
    }
}

async fn frame(socket: &mut Socket) -> Value {
    match receive(socket).await {
        Received::Frame(frame) => frame,
        Received::Closed(close) => panic!("closed instead of a frame: {close:?}"),
    }
}

/// The close frame that must come next.
async fn close_frame(socket: &mut Socket) -> CloseFrame {
    match receive(socket).await {
        Received::Frame(frame) => panic!("a frame instead of the close: {frame}"),
        Received::Closed(Some(close)) => close,
        Received::Closed(None) => panic!("the connection ended without a close frame"),
    }
}

/// Every frame about ask `id` until its last (`done`, `error` or `cancelled`).
async fn frames_until_end(socket: &mut Socket, id: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = frame(socket).await;
        assert_eq!(frame["id"], id, "{frame}");
        let last = matches!(frame["type"].as_str(), Some("done" | "error" | "cancelled"));
        frames.push(frame);
        if last {
            return frames;
        }
    }
}

fn types(frames: &[Value]) -> Vec<&str> {
    frames.iter().map(|f| f["type"].as_str().unwrap()).collect()
}

fn answer_text(frames: &[Value]) -> String {
    frames
        .iter()
        .filter(|f| f["type"] == "delta")
        .map(|f| f["text"].as_str().unwrap())
        .collect()
}

/// Asks and expects a complete answer: sources, deltas, done.
async fn ask_answered(socket: &mut Socket, id: &str, ask: Value) -> Vec<Value> {
    let mut ask = ask;
    ask["type"] = "ask".into();
    ask["id"] = id.into();
    send(socket, ask).await;
    let frames = frames_until_end(socket, id).await;
    let kinds = types(&frames);
    assert_eq!(kinds.first(), Some(&"sources"), "{frames:?}");
    assert_eq!(kinds.last(), Some(&"done"), "{frames:?}");
    assert!(
        kinds[1..kinds.len() - 1].iter().all(|k| *k == "delta") && kinds.len() > 2,
        "{frames:?}"
    );
    frames
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ask_streams_a_cited_answer_and_a_follow_up_continues_its_session() {
    let runner = Runner::start(&[("METRICS_TOKEN", "metrics-token")]).await;
    let mut socket = connect(&runner).await;

    let first = ask_answered(&mut socket, "q1", json!({"query": QUESTION})).await;
    let sources = &first[0];
    let session_id = sources["session_id"].as_str().unwrap().to_owned();
    let cited = sources["sources"].as_array().unwrap();
    assert!(!cited.is_empty(), "{sources}");
    assert!(
        cited[0]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://example.github.io/physical-ai-book/docs/"),
        "{sources}"
    );
    let done = first.last().unwrap();
    assert_eq!(done["session_id"], session_id.as_str());
    let text = answer_text(&first);
    assert!(!text.is_empty());

    // The same question over HTTP gets the same answer: the runner adds nothing of its own.
    let over_http: Value = reqwest::Client::new()
        .post(runner.url("/chat"))
        .json(&json!({"query": QUESTION}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http["answer"].as_str(), Some(text.as_str()));
    assert_eq!(over_http["sources"], sources["sources"]);

    let stored = runner.history(&session_id).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[1]["id"], done["message_id"]);
    assert_eq!(stored[1]["content"].as_str(), Some(text.as_str()));
    assert_eq!(stored[1]["status"], "complete");

    let second = ask_answered(
        &mut socket,
        "q2",
        json!({"query": FOLLOW_UP, "session_id": session_id}),
    )
    .await;
    assert_eq!(second[0]["session_id"], session_id.as_str());
    let done = second.last().unwrap();
    assert_eq!(done["session_id"], session_id.as_str());
    let stored = runner.history(&session_id).await;
    assert_eq!(stored.len(), 4, "{stored:?}");
    assert_eq!(stored[2]["content"], FOLLOW_UP);
    assert_eq!(stored[3]["id"], done["message_id"]);

    let metrics = reqwest::Client::new()
        .get(runner.url("/metrics"))
        .bearer_auth("metrics-token")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("websocket_connections_open 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("websocket_asks_total{outcome=\"done\"} 2\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_asks_are_error_frames_with_the_http_code_and_the_connection_stays_usable() {
    let runner = Runner::start(&[]).await;
    let mut socket = connect(&runner).await;

    // A session id of the right shape that the server never issued.
    send(
        &mut socket,
        json!({"type": "ask", "id": "u1", "query": QUESTION, "session_id": "Zq3-vT_8kLmN0pQrStUvWx"}),
    )
    .await;
    let error = frame(&mut socket).await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["id"], "u1");
    assert_eq!(error["code"], "not_found");

    for (ask, field) in [
        (json!({"query": QUESTION, "top_k": 99}), "top_k"),
        (json!({"query": "   "}), "query"),
        (json!({"query": QUESTION, "sessionId": "x"}), "sessionId"),
    ] {
        let mut ask = ask;
        ask["type"] = "ask".into();
        ask["id"] = "u2".into();
        send(&mut socket, ask.clone()).await;
        let error = frame(&mut socket).await;
        assert_eq!(error["type"], "error", "{ask}: {error}");
        assert_eq!(error["id"], "u2");
        assert_eq!(error["code"], "invalid_request", "{ask}: {error}");
        assert_eq!(error["field"], field, "{ask}: {error}");
    }

    ask_answered(&mut socket, "u3", json!({"query": QUESTION})).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_frames_get_bad_frame_errors_and_the_connection_stays_usable() {
    let runner = Runner::start(&[]).await;
    let mut socket = connect(&runner).await;

    for text in [
        "not json",
        "[1, 2]",
        r#"{"type": "shout", "id": "b1"}"#,
        r#"{"query": "no type"}"#,
    ] {
        socket.send(Message::Text(text.into())).await.unwrap();
        let error = frame(&mut socket).await;
        assert_eq!(error["type"], "error", "{text}: {error}");
        assert_eq!(error["code"], "bad_frame", "{text}: {error}");
    }
    send(&mut socket, json!({"type": "ask", "query": QUESTION})).await;
    let error = frame(&mut socket).await;
    assert_eq!(error["code"], "bad_frame");
    assert_eq!(error["field"], "id");
    socket
        .send(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .unwrap();
    let error = frame(&mut socket).await;
    assert_eq!(error["code"], "bad_frame", "{error}");

    send(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(frame(&mut socket).await, json!({"type": "pong"}));
    ask_answered(&mut socket, "b2", json!({"query": QUESTION})).await;

    // The client's close is answered, as the closing handshake asks.
    socket
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        })))
        .await
        .unwrap();
    match tokio::time::timeout(FRAME_TIMEOUT, socket.next())
        .await
        .unwrap()
    {
        Some(Ok(Message::Close(_))) | None => {}
        other => panic!("the close was not answered: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn under_a_base_path_the_socket_and_its_asks_move_with_it() {
    let runner = Runner::start(&[("BASE_PATH", "/api")]).await;
    let mut socket = connect(&runner).await;
    let frames = ask_answered(&mut socket, "p1", json!({"query": QUESTION})).await;
    let session_id = frames[0]["session_id"].as_str().unwrap();
    assert_eq!(runner.history(session_id).await.len(), 2);
    let unprefixed = format!("ws://127.0.0.1:{}/chat/ws", runner.process.port);
    match tokio_tungstenite::connect_async(unprefixed).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!(
            "the socket answered outside BASE_PATH: {:?}",
            other.map(|_| ())
        ),
    }
}

/// The model streams a long answer slowly, so it is in flight while the client asks again and
/// cancels; its next answers are short.
#[tokio::test(flavor = "multi_thread")]
async fn an_ask_while_one_streams_is_busy_and_cancel_stores_the_answer_incomplete() {
    const WORDS: u32 = 100;
    let model = support::slow_model::start(&[WORDS, 3]).await;
    let runner = Runner::start(&[
        ("SPIN_VARIABLE_OPENAI_API_KEY", "test-openai-key"),
        ("SPIN_VARIABLE_OPENAI_BASE_URL", &model),
    ])
    .await;
    let mut socket = connect(&runner).await;

    send(
        &mut socket,
        json!({"type": "ask", "id": "c1", "query": QUESTION}),
    )
    .await;
    let mut frames = vec![frame(&mut socket).await];
    assert_eq!(frames[0]["type"], "sources", "{frames:?}");
    let session_id = frames[0]["session_id"].as_str().unwrap().to_owned();
    frames.push(frame(&mut socket).await);
    assert_eq!(frames[1]["type"], "delta", "{frames:?}");
    assert_eq!(frames[1]["id"], "c1");

    send(
        &mut socket,
        json!({"type": "ask", "id": "c2", "query": FOLLOW_UP}),
    )
    .await;
    // Deltas of c1 keep coming around the answers to c2 and to the cancel.
    let busy = loop {
        let frame = frame(&mut socket).await;
        if frame["type"] != "delta" {
            break frame;
        }
        frames.push(frame);
    };
    assert_eq!(busy["type"], "error", "{busy}");
    assert_eq!(busy["code"], "busy");
    assert_eq!(busy["id"], "c2");

    send(&mut socket, json!({"type": "cancel", "id": "c1"})).await;
    let cancelled = loop {
        let frame = frame(&mut socket).await;
        if frame["type"] != "delta" {
            break frame;
        }
        frames.push(frame);
    };
    assert_eq!(cancelled, json!({"type": "cancelled", "id": "c1"}));
    let received = answer_text(&frames);

    // The component saves what it had once its next write finds the client gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stored = loop {
        let stored = runner.history(&session_id).await;
        if stored.len() == 2 && stored[1]["content"] != "" {
            break stored;
        }
        assert!(
            Instant::now() < deadline,
            "the cancelled answer was not saved: {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stored[1]["status"], "incomplete", "{stored:?}");
    let content = stored[1]["content"].as_str().unwrap();
    assert!(
        content.starts_with(&received),
        "{content:?} vs {received:?}"
    );
    assert!(
        !content.contains(&format!("word{}", WORDS - 1)),
        "the answer was not cut: {content}"
    );
    // The component's own log line, through the runner's guest output, as for any request.
    let left = format!("the client left during message {}", stored[1]["id"]);
    assert!(runner.log_text().contains(&left), "{}", runner.log_text());

    // The connection takes the next ask.
    let frames = ask_answered(
        &mut socket,
        "c3",
        json!({"query": QUESTION, "session_id": session_id}),
    )
    .await;
    let stored = runner.history(&session_id).await;
    assert_eq!(stored.len(), 4, "{stored:?}");
    assert_eq!(stored[3]["id"], frames.last().unwrap()["message_id"]);
    assert_eq!(stored[3]["status"], "complete");
}

/// An ask takes an instance permit like any request: with one permit held by a streaming
/// answer, another connection's ask is refused as `server_busy`, and served once it is free.
#[tokio::test(flavor = "multi_thread")]
async fn asks_take_the_runtimes_permits_like_any_request() {
    let model = support::slow_model::start(&[100, 3]).await;
    let runner = Runner::start(&[
        ("SPIN_VARIABLE_OPENAI_API_KEY", "test-openai-key"),
        ("SPIN_VARIABLE_OPENAI_BASE_URL", &model),
        ("MAX_CONCURRENT_REQUESTS", "1"),
    ])
    .await;
    let mut streaming = connect(&runner).await;
    send(
        &mut streaming,
        json!({"type": "ask", "id": "l1", "query": QUESTION}),
    )
    .await;
    assert_eq!(frame(&mut streaming).await["type"], "sources");

    let mut other = connect(&runner).await;
    send(
        &mut other,
        json!({"type": "ask", "id": "l2", "query": QUESTION}),
    )
    .await;
    let refused = frame(&mut other).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["id"], "l2");
    assert_eq!(refused["code"], "server_busy");

    send(&mut streaming, json!({"type": "cancel", "id": "l1"})).await;
    loop {
        let frame = frame(&mut streaming).await;
        if frame["type"] == "cancelled" {
            break;
        }
        assert_eq!(frame["type"], "delta", "{frame}");
    }
    // The cancelled answer's instance ends at its next write; then the permit is free.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let id = format!("l3-{attempt}");
        send(
            &mut other,
            json!({"type": "ask", "id": id, "query": QUESTION}),
        )
        .await;
        let frames = frames_until_end(&mut other, &id).await;
        if types(&frames).last() == Some(&"done") {
            break;
        }
        assert_eq!(frames.last().unwrap()["code"], "server_busy", "{frames:?}");
        assert!(Instant::now() < deadline, "the permit was not given back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the model double does wrong reaches the client as the HTTP client would see it: a
/// refusal before the stream as an error frame with the JSON error's code, a cut stream as the
/// stream's own error event.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_failures_arrive_as_error_frames() {
    let doubles = Doubles::start().await;
    let model = doubles.openai_base_url();
    let runner = Runner::start(&[
        ("SPIN_VARIABLE_OPENAI_API_KEY", "test-openai-key"),
        ("SPIN_VARIABLE_OPENAI_BASE_URL", &model),
    ])
    .await;
    let mut socket = connect(&runner).await;

    doubles.push_faults(Endpoint::OpenAiChat, Fault::server_error(), 3);
    send(
        &mut socket,
        json!({"type": "ask", "id": "f1", "query": QUESTION}),
    )
    .await;
    let frames = frames_until_end(&mut socket, "f1").await;
    assert_eq!(types(&frames), ["error"], "{frames:?}");
    assert_eq!(frames[0]["code"], "upstream_unavailable", "{frames:?}");

    doubles.push_fault(Endpoint::OpenAiChat, Fault::CutStream);
    send(
        &mut socket,
        json!({"type": "ask", "id": "f2", "query": QUESTION}),
    )
    .await;
    let frames = frames_until_end(&mut socket, "f2").await;
    let kinds = types(&frames);
    assert_eq!(kinds.first(), Some(&"sources"), "{frames:?}");
    assert!(kinds.contains(&"delta"), "{frames:?}");
    assert_eq!(kinds.last(), Some(&"error"), "{frames:?}");
    assert_eq!(frames.last().unwrap()["code"], "upstream_bad_response");

    let frames = ask_answered(&mut socket, "f3", json!({"query": QUESTION})).await;
    assert!(answer_text(&frames).contains("[1]"), "{frames:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_over_the_size_and_rate_limits_are_refused_then_closed() {
    let runner = Runner::start(&[
        ("WS_MAX_MESSAGE_BYTES", "1024"),
        ("WS_MAX_MESSAGES_PER_MINUTE", "6"),
    ])
    .await;
    let mut socket = connect(&runner).await;
    let long = "why ".repeat(300);
    send(
        &mut socket,
        json!({"type": "ask", "id": "m1", "query": long}),
    )
    .await;
    let error = frame(&mut socket).await;
    assert_eq!(error["code"], "message_too_large", "{error}");
    assert_eq!(error["id"], "m1", "{error}");
    ask_answered(&mut socket, "m2", json!({"query": QUESTION})).await;

    // Far over the limit: not read at all.
    let huge = "x".repeat(1024 * 17);
    socket.send(Message::Text(huge.into())).await.unwrap();
    let close = close_frame(&mut socket).await;
    assert_eq!(close.code, CloseCode::Size, "{close:?}");

    // Six messages a minute: the seventh is refused, and a client that keeps sending is closed.
    let mut socket = connect(&runner).await;
    for _ in 0..6 {
        send(&mut socket, json!({"type": "ping"})).await;
        assert_eq!(frame(&mut socket).await["type"], "pong");
    }
    send(
        &mut socket,
        json!({"type": "ask", "id": "m3", "query": QUESTION}),
    )
    .await;
    let refused = frame(&mut socket).await;
    assert_eq!(refused["code"], "too_many_messages", "{refused}");
    assert_eq!(refused["id"], "m3", "{refused}");
    assert!(refused["retry_after_secs"].as_u64().unwrap() >= 1);
    for _ in 0..8 {
        send(&mut socket, json!({"type": "ping"})).await;
        assert_eq!(frame(&mut socket).await["code"], "too_many_messages");
    }
    send(&mut socket, json!({"type": "ping"})).await;
    let close = close_frame(&mut socket).await;
    assert_eq!(close.code, CloseCode::Policy, "{close:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_origin_is_checked_against_the_cors_list_before_the_upgrade() {
    let runner = Runner::start(&[("ALLOWED_ORIGINS", "http://book.example")]).await;
    match try_connect(&runner, &[("origin", "http://evil.example")]).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), 403);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "origin_not_allowed");
        }
        other => panic!("a refused origin was let in: {:?}", other.map(|_| ())),
    }
    let self_origin = format!("http://127.0.0.1:{}", runner.process.port);
    for origin in [
        Some("http://book.example"),
        Some(self_origin.as_str()),
        None,
    ] {
        let headers: Vec<(&str, &str)> = origin.iter().map(|o| ("origin", *o)).collect();
        let mut socket = try_connect(&runner, &headers)
            .await
            .unwrap_or_else(|err| panic!("{origin:?} was refused: {err}"));
        send(&mut socket, json!({"type": "ping"})).await;
        assert_eq!(frame(&mut socket).await["type"], "pong");
    }

    // Without WebSocket headers the route says what it is.
    let plain = reqwest::get(runner.ws_url().replace("ws://", "http://"))
        .await
        .unwrap();
    assert_eq!(plain.status(), 426);
    let body: Value = plain.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upgrade_required");
}

/// Behind a trusted proxy each reader has its own budget; asks spend the chat budget as
/// POST /chat does, and the upgrade itself spends from the general one.
#[tokio::test(flavor = "multi_thread")]
async fn asks_spend_the_chat_budget_and_upgrades_the_general_one() {
    let runner = Runner::start(&[
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ("RATE_LIMIT_PER_MINUTE", "60"),
        ("RATE_LIMIT_BURST", "8"),
        ("CHAT_RATE_LIMIT_PER_MINUTE", "2"),
        ("CHAT_RATE_LIMIT_BURST", "2"),
    ])
    .await;
    let reader = [("x-forwarded-for", "198.51.100.7")];
    let mut socket = try_connect(&runner, &reader).await.unwrap();
    ask_answered(&mut socket, "r1", json!({"query": QUESTION})).await;
    ask_answered(&mut socket, "r2", json!({"query": QUESTION})).await;
    send(
        &mut socket,
        json!({"type": "ask", "id": "r3", "query": QUESTION}),
    )
    .await;
    let limited = frame(&mut socket).await;
    assert_eq!(limited["type"], "error", "{limited}");
    assert_eq!(limited["id"], "r3");
    assert_eq!(limited["code"], "rate_limited");
    assert!(
        limited["message"].as_str().unwrap().contains("chat"),
        "{limited}"
    );
    assert!(limited["retry_after_secs"].as_u64().unwrap() >= 1);

    // The same budget as HTTP: this reader's POST /chat is refused too, another reader's is not.
    let client = reqwest::Client::new();
    let post = |address: &'static str| {
        client
            .post(runner.url("/chat"))
            .header("x-forwarded-for", address)
            .json(&json!({"query": QUESTION}))
            .send()
    };
    assert_eq!(post("198.51.100.7").await.unwrap().status(), 429);
    let mut other = try_connect(&runner, &[("x-forwarded-for", "198.51.100.8")])
        .await
        .unwrap();
    ask_answered(&mut other, "o1", json!({"query": QUESTION})).await;

    // Upgrades count like any request: a burst of 8, then 429 before any upgrade.
    let prober = [("x-forwarded-for", "198.51.100.9")];
    let mut opened = Vec::new();
    let refusal = loop {
        match try_connect(&runner, &prober).await {
            Ok(socket) => opened.push(socket),
            Err(err) => break err,
        }
        assert!(opened.len() <= 8, "no upgrade was refused");
    };
    assert_eq!(opened.len(), 8);
    match refusal {
        WsError::Http(response) => assert_eq!(response.status(), 429),
        other => panic!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_connection_is_closed_and_a_silent_one_too() {
    let runner = Runner::start(&[
        ("WS_PING_INTERVAL_SECS", "1"),
        ("WS_IDLE_TIMEOUT_SECS", "3"),
    ])
    .await;
    // A client that answers pings but says nothing is closed for idleness, not before.
    let mut socket = connect(&runner).await;
    let opened = Instant::now();
    let mut pings = 0;
    let close = loop {
        match tokio::time::timeout(FRAME_TIMEOUT, socket.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Close(Some(close)))) => break close,
            other => panic!("{other:?}"),
        }
    };
    let lasted = opened.elapsed();
    assert_eq!(close.code, CloseCode::Away, "{close:?}");
    assert_eq!(close.reason.as_str(), "idle timeout");
    assert!(pings >= 2, "{pings} pings");
    assert!(
        lasted >= Duration::from_millis(2900) && lasted < Duration::from_secs(6),
        "{lasted:?}"
    );

    // A client that does not read answers no ping: closed at the ping after the unanswered one.
    let mut silent = connect(&runner).await;
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let close = close_frame(&mut silent).await;
    assert_eq!(close.code, CloseCode::Away, "{close:?}");
    assert_eq!(close.reason.as_str(), "no pong");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_answer_in_flight_finish_then_closes_with_1001() {
    const WORDS: u32 = 16;
    let model = support::slow_model::start(&[WORDS]).await;
    let mut runner = Runner::start(&[
        ("SPIN_VARIABLE_OPENAI_API_KEY", "test-openai-key"),
        ("SPIN_VARIABLE_OPENAI_BASE_URL", &model),
        ("SHUTDOWN_GRACE_SECS", "30"),
    ])
    .await;
    let mut idle = connect(&runner).await;
    let mut socket = connect(&runner).await;
    send(
        &mut socket,
        json!({"type": "ask", "id": "s1", "query": QUESTION}),
    )
    .await;
    let mut frames = vec![frame(&mut socket).await];
    assert_eq!(frames[0]["type"], "sources", "{:?}", frames[0]);
    frames.push(frame(&mut socket).await);
    assert_eq!(frames[1]["type"], "delta", "{:?}", frames[1]);

    runner.terminate();
    let signalled = Instant::now();
    // A connection with nothing in flight is closed at once.
    let close = close_frame(&mut idle).await;
    assert_eq!(close.code, CloseCode::Away, "{close:?}");
    assert!(signalled.elapsed() < Duration::from_secs(2));
    assert!(
        try_connect(&runner, &[]).await.is_err(),
        "a connection was accepted after SIGTERM"
    );

    // No new asks, while the answer in flight goes on.
    send(
        &mut socket,
        json!({"type": "ask", "id": "s2", "query": FOLLOW_UP}),
    )
    .await;
    let refused = loop {
        let frame = frame(&mut socket).await;
        if frame["id"] != "s1" {
            break frame;
        }
        assert_eq!(frame["type"], "delta", "{frame}");
        frames.push(frame);
    };
    assert_eq!(refused["code"], "shutting_down", "{refused}");
    assert_eq!(refused["id"], "s2");

    frames.extend(frames_until_end(&mut socket, "s1").await);
    let done = frames.last().unwrap();
    assert_eq!(done["type"], "done", "{frames:?}");
    let text = answer_text(&frames);
    assert!(
        text.contains(&format!("word{}", WORDS - 1)),
        "the answer was cut: {text}"
    );
    let close = close_frame(&mut socket).await;
    assert_eq!(close.code, CloseCode::Away, "{close:?}");

    let status = runner.process.child.wait().unwrap();
    assert!(status.success(), "{status}: {}", runner.log_text());
    // The answer was stored complete before the process ended.
    let session_id = done["session_id"].as_str().unwrap();
    let database = runner.data_dir.path().join("default.db");
    let status: String = rusqlite::Connection::open(&database)
        .unwrap()
        .query_row(
            "SELECT status FROM messages WHERE id = ?1",
            [done["message_id"].as_i64().unwrap()],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(status, "complete", "session {session_id}");
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_drain_deadline_answers_are_cut_and_sockets_closed_with_1001() {
    let model = support::slow_model::start(&[100]).await;
    let mut runner = Runner::start(&[
        ("SPIN_VARIABLE_OPENAI_API_KEY", "test-openai-key"),
        ("SPIN_VARIABLE_OPENAI_BASE_URL", &model),
        ("SHUTDOWN_GRACE_SECS", "1"),
    ])
    .await;
    let mut socket = connect(&runner).await;
    send(
        &mut socket,
        json!({"type": "ask", "id": "g1", "query": QUESTION}),
    )
    .await;
    assert_eq!(frame(&mut socket).await["type"], "sources");
    assert_eq!(frame(&mut socket).await["type"], "delta");

    runner.terminate();
    let signalled = Instant::now();
    let close = loop {
        match receive(&mut socket).await {
            Received::Frame(frame) => assert_eq!(frame["type"], "delta", "{frame}"),
            Received::Closed(close) => break close,
        }
    };
    let waited = signalled.elapsed();
    let close = close.expect("no close frame");
    assert_eq!(close.code, CloseCode::Away, "{close:?}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let status = runner.process.child.wait().unwrap();
    assert!(status.success(), "{status}: {}", runner.log_text());
}
