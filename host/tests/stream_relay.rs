//! The runner's token relay for streamed answers (`host::stream_relay`), on the real chat
//! component and a real model stream: it holds no instance while the model writes, it answers
//! and stores exactly what the component streaming by itself does (the runner with
//! `--stream-relay false`, as under `spin up`), its outbound request keeps the component's
//! allow-list, and its call back cannot be made by a client.
//!
//! The fault table (`tests/faults.rs`) runs the streamed model's faults both ways too.

mod support;

use std::time::{Duration, Instant};

use rag_core::sse::{SseEvent, SseParser};
use serde_json::{json, Value};
use support::{start, Options, Server};

const QUESTION: &str = "What does ZMP stand for?";

/// Keyless retrieval over the sample book and the model at `model_url`: a streamed question
/// is answered by the model.
async fn start_runner(
    model_url: &str,
    relay: bool,
    manifest: Option<std::path::PathBuf>,
) -> Server {
    start_runner_with(model_url, relay, manifest, &[]).await
}

/// As [`start_runner`], with more runner flags.
async fn start_runner_with(
    model_url: &str,
    relay: bool,
    manifest: Option<std::path::PathBuf>,
    args: &[&str],
) -> Server {
    let variables = [
        ("openai_api_key", "test-openai-key"),
        ("openai_base_url", model_url),
        ("upstream_timeout_ms", "5000"),
    ];
    start(Options {
        manifest,
        variables: &variables,
        args: &[
            &["--stream-relay", if relay { "true" } else { "false" }],
            args,
        ]
        .concat(),
        data_dir: Some(support::data_dir_with_book_index().await),
    })
    .await
}

/// The project's spin.toml, its components' sources made absolute, to edit and load from
/// another folder.
fn project_manifest() -> String {
    let project = support::workspace();
    std::fs::read_to_string(project.join("spin.toml"))
        .unwrap()
        .replace(
            "source = \"target/",
            &format!("source = \"{}/target/", project.display()),
        )
}

async fn send_chat(server: &Server, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/chat", server.base_url))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn events_of(response: reqwest::Response) -> Vec<SseEvent> {
    let bytes = response.bytes().await.unwrap();
    let mut parser = SseParser::new();
    let mut events = parser.feed(&bytes);
    events.extend(parser.finish());
    events
}

fn data(event: &SseEvent) -> Value {
    serde_json::from_str(&event.data).unwrap()
}

/// The session's messages as the embedded database holds them: (role, content, status).
fn stored(server: &Server, session_id: &str) -> Vec<(String, String, String)> {
    let connection = rusqlite::Connection::open(server.data_dir.path().join("default.db")).unwrap();
    let mut statement = connection
        .prepare("SELECT role, content, status FROM messages WHERE session_id = ?1 ORDER BY id")
        .unwrap();
    statement
        .query_map([rag_core::store::session_key(session_id)], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn count_rows(server: &Server, table: &str) -> i64 {
    let connection = rusqlite::Connection::open(server.data_dir.path().join("default.db")).unwrap();
    // A database no write reached has no session tables yet.
    match connection.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
        row.get(0)
    }) {
        Err(error) if error.to_string().contains("no such table") => 0,
        counted => counted.unwrap(),
    }
}

/// Waits until `check` holds, for at most `limit`.
async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// One streamed answer: the events' names and payloads with the ids taken out, whether the
/// stream was relayed while it ran, and the session's stored messages.
async fn one_streamed_answer(
    relay: bool,
) -> (Vec<(String, Value)>, bool, Vec<(String, String, String)>) {
    let model = support::slow_model::start(&[4]).await;
    let server = start_runner(&model, relay, None).await;
    let response = send_chat(&server, json!({"query": QUESTION, "stream": true})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "{:?}",
        response.headers()
    );
    assert!(
        response
            .headers()
            .get(rag_core::relay::RELAY_HEADER)
            .is_none(),
        "the hand-over's marker is the runner's business"
    );
    // The model writes a word every 150 ms: mid-answer, the stream is either the relay's or
    // a guest's.
    let relayed = eventually(Duration::from_secs(2), || server.runtime.relays_open() == 1).await;
    let events = events_of(response).await;
    let session_id = data(&events[0])["session_id"].as_str().unwrap().to_owned();
    let without_ids: Vec<(String, Value)> = events
        .iter()
        .map(|event| {
            let mut payload = data(event);
            if let Some(fields) = payload.as_object_mut() {
                for id in ["session_id", "message_id"] {
                    if fields.remove(id).is_some() {
                        fields.insert(id.into(), json!("<id>"));
                    }
                }
            }
            (event.event.clone().unwrap_or_default(), payload)
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(2), || server.runtime.relays_open() == 0).await,
        "a finished relay is counted as open"
    );
    (without_ids, relayed, stored(&server, &session_id))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relayed_stream_holds_no_instance_and_sends_and_stores_what_the_component_would() {
    let (relayed_events, relayed, relayed_rows) = one_streamed_answer(true).await;
    let (guest_events, guest_relayed, guest_rows) = one_streamed_answer(false).await;
    assert!(relayed, "the runner did not relay the stream");
    assert!(!guest_relayed, "--stream-relay false still relayed");

    let names: Vec<&str> = relayed_events
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        names,
        ["sources", "delta", "delta", "delta", "delta", "done"],
        "{relayed_events:?}"
    );
    assert_eq!(relayed_events, guest_events);
    assert_eq!(relayed_rows, guest_rows);
    assert_eq!(relayed_rows.len(), 2);
    assert_eq!(
        relayed_rows[1],
        (
            "assistant".to_owned(),
            "word0 word1 word2 word3 ".to_owned(),
            "complete".to_owned()
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_a_relayed_stream_leaves_its_part_stored_incomplete() {
    let model = support::slow_model::start(&[40]).await;
    let server = start_runner(&model, true, None).await;
    let mut response = send_chat(&server, json!({"query": QUESTION, "stream": true})).await;
    let mut received = Vec::new();
    while !String::from_utf8_lossy(&received).contains("word1") {
        received.extend_from_slice(&response.chunk().await.unwrap().expect("the stream ended"));
    }
    drop(response);
    let mut parser = SseParser::new();
    let session_id = data(&parser.feed(&received)[0])["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        eventually(Duration::from_secs(5), || server.runtime.relays_open() == 0).await,
        "the relay went on after its client left"
    );
    let rows = stored(&server, &session_id);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (role, content, status) = &rows[1];
    assert_eq!(
        (role.as_str(), status.as_str()),
        ("assistant", "incomplete")
    );
    assert!(content.starts_with("word0 word1 "), "{content}");
    assert!(!content.contains("word39"), "{content}");
}

/// A client that leaves while the model has not yet answered (the relay's start, which runs
/// in a task of its own) holds nothing afterwards: once the model's head comes the relay finds
/// no one to write to, stores the turn as incomplete without reading the answer, and lets go
/// of its place among the requests in flight. The runner then answers the next question.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_before_the_relayed_stream_starts_holds_nothing() {
    let model = support::slow_model::start_after(&[3], Duration::from_millis(800)).await;
    let server = start_runner(&model, true, None).await;
    let left = tokio::time::timeout(
        Duration::from_millis(300),
        send_chat(&server, json!({"query": QUESTION, "stream": true})),
    )
    .await;
    assert!(left.is_err(), "the model answered before the client left");
    assert!(
        eventually(Duration::from_secs(5), || count_rows(&server, "messages")
            == 2)
        .await,
        "the turn was not stored"
    );
    assert!(
        eventually(Duration::from_secs(5), || server.runtime.in_flight() == 0
            && server.runtime.relays_open() == 0)
        .await,
        "in flight {}, relays open {}",
        server.runtime.in_flight(),
        server.runtime.relays_open()
    );
    // Long enough for the model's three words, had the relay read them.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let connection = rusqlite::Connection::open(server.data_dir.path().join("default.db")).unwrap();
    let answer: (String, String) = connection
        .query_row(
            "SELECT content, status FROM messages WHERE role = 'assistant'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(answer, (String::new(), "incomplete".to_owned()));

    let events =
        events_of(send_chat(&server, json!({"query": QUESTION, "stream": true})).await).await;
    assert_eq!(
        events.last().unwrap().event.as_deref(),
        Some("done"),
        "{events:?}"
    );
}

/// A relayed stream ends at `STREAM_TIMEOUT_SECS`, as a guest's does, and says so: what was
/// sent is stored as incomplete and the last event is a `deadline_exceeded` error.
#[tokio::test(flavor = "multi_thread")]
async fn a_relayed_stream_ends_at_the_stream_deadline() {
    let model = support::slow_model::start(&[40]).await;
    let server = start_runner_with(&model, true, None, &["--stream-timeout-secs", "1"]).await;
    let started = Instant::now();
    let response = send_chat(&server, json!({"query": QUESTION, "stream": true})).await;
    let events = events_of(response).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "the stream ran {took:?}");
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"), "{events:?}");
    assert_eq!(data(last)["code"], "deadline_exceeded");
    let session_id = data(&events[0])["session_id"].as_str().unwrap().to_owned();
    let sent: String = events
        .iter()
        .filter(|event| event.event.as_deref() == Some("delta"))
        .map(|event| data(event)["text"].as_str().unwrap().to_owned())
        .collect();
    assert!(sent.starts_with("word0 "), "{events:?}");
    let rows = stored(&server, &session_id);
    assert_eq!(
        rows[1],
        ("assistant".to_owned(), sent, "incomplete".to_owned())
    );
    assert!(eventually(Duration::from_secs(2), || server.runtime.relays_open() == 0).await);
}

/// A client that stops reading while the model writes fast fills the socket and the relay's
/// queue of events; the relay then waits for room only until the stream's deadline, stores
/// what it has as incomplete and lets go, as a guest would be stopped there.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_holds_the_relay_only_until_the_deadline() {
    use tokio::io::AsyncWriteExt;
    let doubles = upstream_doubles::Doubles::start().await;
    doubles.set_chat_answer_of_words(200_000);
    doubles.set_stream_pacing(Duration::ZERO, Duration::ZERO);
    let server = start_runner_with(
        &doubles.openai_base_url(),
        true,
        None,
        &["--stream-timeout-secs", "2"],
    )
    .await;
    let body = json!({"query": QUESTION, "stream": true}).to_string();
    let address = server.base_url.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "POST /chat HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    assert!(
        // Generous: a busy machine (tests run side by side) may take seconds to set a chat up.
        eventually(Duration::from_secs(20), || server.runtime.relays_open()
            == 1)
        .await,
        "the stream was not relayed"
    );
    assert!(
        eventually(Duration::from_secs(10), || server.runtime.relays_open()
            == 0)
        .await,
        "a client that stopped reading held the relay past the stream's deadline"
    );
    let connection = rusqlite::Connection::open(server.data_dir.path().join("default.db")).unwrap();
    let (status, length): (String, i64) = connection
        .query_row(
            "SELECT status, length(content) FROM messages WHERE role = 'assistant'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(status, "incomplete");
    assert!(length > 0);
    drop(socket);
}

/// A client cannot make the relay's call back: the runner takes the token header off every
/// request, so a forged settle reaches the component as a chat request (and fails as one),
/// and the answer it aimed at is unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_call_back_cannot_rewrite_an_answer() {
    let model = support::slow_model::start(&[2]).await;
    let server = start_runner(&model, true, None).await;
    let response = send_chat(&server, json!({"query": QUESTION, "stream": true})).await;
    let events = events_of(response).await;
    let done = data(events.last().unwrap());
    let session_id = done["session_id"].as_str().unwrap().to_owned();
    let message_id = done["message_id"].as_i64().unwrap();
    let before = stored(&server, &session_id);

    let forged = json!({
        "ready": {
            "sources_event": "", "session_id": session_id, "message_id": message_id,
            "started_here": false
        },
        "answer": "forged",
        "outcome": "complete",
    });
    for token in ["guess", "", &"0".repeat(64)] {
        let response = reqwest::Client::new()
            .post(format!("{}/chat", server.base_url))
            .header(rag_core::relay::TOKEN_HEADER, token)
            .json(&forged)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        // A chat request's complaint: the component never saw the token.
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("expected query"),
            "{body}"
        );
    }
    assert_eq!(stored(&server, &session_id), before);
}

/// The relay sends the model request under the component's `allowed_outbound_hosts`, as the
/// component would: a model the list leaves out is refused, with the same error either way,
/// and the first question leaves nothing stored.
#[tokio::test(flavor = "multi_thread")]
async fn the_relay_keeps_the_components_allow_list() {
    let model = support::slow_model::start(&[2]).await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = project_manifest();
    let (before_chat, chat_onwards) = manifest.split_at(manifest.find("[component.chat]").unwrap());
    let chat_hosts = chat_onwards
        .lines()
        .find(|line| line.starts_with("allowed_outbound_hosts"))
        .unwrap();
    let manifest = format!(
        "{before_chat}{}",
        chat_onwards.replacen(
            chat_hosts,
            "allowed_outbound_hosts = [\"https://{{ llm_host }}\"]",
            1
        )
    );
    let path = dir.path().join("spin.toml");
    std::fs::write(&path, manifest).unwrap();

    let mut answers = Vec::new();
    for relay in [true, false] {
        let server = start_runner(&model, relay, Some(path.clone())).await;
        let response = send_chat(&server, json!({"query": QUESTION, "stream": true})).await;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("relay {relay}: not JSON ({status}): {text}"));
        assert_eq!(count_rows(&server, "messages"), 0, "relay {relay}");
        assert_eq!(count_rows(&server, "sessions"), 0, "relay {relay}");
        answers.push((status, body));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].0, 503, "{:?}", answers[0]);
    assert_eq!(answers[0].1["error"]["code"], "upstream_unavailable");
}

/// The token is the runner's alone: a manifest that sets it in a component's environment (where
/// it could shadow the runner's, or let a component hand over a stream no relay reads) is
/// refused at start.
#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_cannot_set_the_relays_token() {
    let dir = tempfile::tempdir().unwrap();
    let project = support::workspace();
    let manifest = project_manifest().replacen(
        "[component.chat]\n",
        "[component.chat]\nenvironment = { STREAM_RELAY_TOKEN = \"chosen\" }\n",
        1,
    );
    let path = dir.path().join("spin.toml");
    std::fs::write(&path, manifest).unwrap();
    let app = host::manifest::App::load(&path).unwrap();
    let variables = host::variables::AppVariables::resolve(&app.manifest, |_| None).unwrap();
    let data = dir.path().join("data");
    let cache = project.join("target/test-compile-cache");
    let (settings, _) = host::config::settings_from_args(&[
        "--manifest",
        path.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    let loaded =
        tokio::task::spawn_blocking(move || host::runtime::Runtime::load(settings, variables, app))
            .await
            .unwrap();
    let error = format!("{:#}", loaded.err().expect("the manifest was accepted"));
    assert!(error.contains("STREAM_RELAY_TOKEN"), "{error}");
}
