//! Upstream faults, one table: every fault the doubles can inject, at every upstream where it
//! can happen (Cohere embed, Qdrant search, Cohere rerank, the language model answering whole
//! or streamed), through the runner binary and the real chat component. For each cell:
//!
//! - what the client gets: the status and stable error code, or, once a stream has started,
//!   the SSE `error` event with that code;
//! - how often the upstream was called: failures that may pass (timeouts, resets, 429, 5xx)
//!   are retried up to the retry policy's three attempts, while nothing has been sent to the
//!   client; a refused request (4xx but 429) or a broken answer is not retried, nor is a
//!   stream that already sent tokens;
//! - what the session holds afterwards (`GET /session/{id}`): the question always; no answer
//!   when the request failed before the stream started; the streamed part, marked
//!   incomplete, when it failed after;
//! - that the server still serves: `/health` and a normal chat after every cell.

mod support;

use std::fmt;
use std::time::{Duration, Instant};

use rag_core::sse::SseParser;
use serde_json::{json, Value};
use support::runner::Runner;
use upstream_doubles::{Doubles, Endpoint, Fault};

/// A question the sample book answers; its passages pass every relevance minimum below.
const QUESTION: &str = "What does the zero moment point mean for a walking robot's balance?";
/// Per upstream call; the delay faults wait longer than this.
const UPSTREAM_TIMEOUT_MS: u64 = 1000;
/// The chat component's retry policy: attempts per logical call (`RetryPolicy::default`).
const ATTEMPTS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upstream {
    Embed,
    Search,
    Rerank,
    LlmJson,
    LlmStream,
}

impl Upstream {
    const ALL: [Upstream; 5] = [
        Upstream::Embed,
        Upstream::Search,
        Upstream::Rerank,
        Upstream::LlmJson,
        Upstream::LlmStream,
    ];

    fn endpoint(self) -> Endpoint {
        match self {
            Upstream::Embed => Endpoint::CohereEmbed,
            Upstream::Search => Endpoint::QdrantQuery,
            Upstream::Rerank => Endpoint::CohereRerank,
            Upstream::LlmJson | Upstream::LlmStream => Endpoint::OpenAiChat,
        }
    }

    /// The calls a chat makes after this one, which a failure here must not reach.
    fn later(self) -> &'static [Endpoint] {
        match self {
            Upstream::Embed => &[
                Endpoint::QdrantQuery,
                Endpoint::CohereRerank,
                Endpoint::OpenAiChat,
            ],
            Upstream::Search => &[Endpoint::CohereRerank, Endpoint::OpenAiChat],
            Upstream::Rerank => &[Endpoint::OpenAiChat],
            Upstream::LlmJson | Upstream::LlmStream => &[],
        }
    }

    /// Retrieval faults are sent with streamed chats: retrieval ends before the stream opens,
    /// so they must still be JSON errors with their status.
    fn streamed_request(self) -> bool {
        self != Upstream::LlmJson
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    RateLimitedRetryAfter,
    RateLimited,
    ServerError,
    Unavailable,
    UnavailableOnce,
    BadRequest,
    Unauthorized,
    ResetBeforeHeaders,
    ResetAfterHeaders,
    BeyondDeadline,
    Malformed,
    WrongContentType,
    CutStream,
    StallStream,
}

impl Kind {
    const ALL: [Kind; 14] = [
        Kind::RateLimitedRetryAfter,
        Kind::RateLimited,
        Kind::ServerError,
        Kind::Unavailable,
        Kind::UnavailableOnce,
        Kind::BadRequest,
        Kind::Unauthorized,
        Kind::ResetBeforeHeaders,
        Kind::ResetAfterHeaders,
        Kind::BeyondDeadline,
        Kind::Malformed,
        Kind::WrongContentType,
        Kind::CutStream,
        Kind::StallStream,
    ];

    fn fault(self) -> Fault {
        match self {
            Kind::RateLimitedRetryAfter => Fault::rate_limited(1),
            Kind::RateLimited => Fault::status(429),
            Kind::ServerError => Fault::server_error(),
            Kind::Unavailable | Kind::UnavailableOnce => Fault::status(503),
            Kind::BadRequest => Fault::status(400),
            Kind::Unauthorized => Fault::status(401),
            Kind::ResetBeforeHeaders => Fault::ResetBeforeHeaders,
            Kind::ResetAfterHeaders => Fault::ResetAfterHeaders,
            Kind::BeyondDeadline => Fault::Delay(Duration::from_millis(4 * UPSTREAM_TIMEOUT_MS)),
            Kind::Malformed => Fault::MalformedBody,
            Kind::WrongContentType => Fault::WrongContentType,
            Kind::CutStream => Fault::CutStream,
            Kind::StallStream => Fault::StallStream,
        }
    }
}

/// What the client must see.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// The normal answer (a fault that passed on retry).
    Answered,
    /// A JSON error before any output: status and code; nothing answered is stored.
    Error(u16, &'static str),
    /// A stream that started (sources and some deltas) and ends with an `error` event of this
    /// code; the deltas sent are stored as an incomplete answer.
    StreamError(&'static str),
}

struct Expected {
    /// Faults to queue: the calls that must meet one.
    queued: usize,
    /// Calls the faulted endpoint must receive.
    calls: usize,
    outcome: Outcome,
}

/// The expectation of one cell, or `None` where the fault cannot happen at that upstream.
fn expected(kind: Kind, upstream: Upstream) -> Option<Expected> {
    let stream = upstream == Upstream::LlmStream;
    let retried = |outcome| Expected {
        queued: ATTEMPTS,
        calls: ATTEMPTS,
        outcome,
    };
    let once = |outcome| Expected {
        queued: 1,
        calls: 1,
        outcome,
    };
    let unavailable = Outcome::Error(503, "upstream_unavailable");
    let bad_response = Outcome::Error(502, "upstream_bad_response");
    Some(match kind {
        Kind::RateLimitedRetryAfter | Kind::RateLimited | Kind::ServerError | Kind::Unavailable => {
            retried(unavailable)
        }
        Kind::UnavailableOnce => Expected {
            queued: 1,
            calls: 2,
            outcome: Outcome::Answered,
        },
        Kind::BadRequest => once(bad_response),
        Kind::Unauthorized => once(Outcome::Error(502, "upstream_auth_failed")),
        Kind::ResetBeforeHeaders => retried(unavailable),
        // A whole body that breaks off is retried; a stream that sent tokens is not.
        Kind::ResetAfterHeaders if stream => once(Outcome::StreamError("upstream_unavailable")),
        Kind::ResetAfterHeaders => retried(unavailable),
        Kind::BeyondDeadline => retried(Outcome::Error(504, "upstream_timeout")),
        Kind::Malformed if stream => once(Outcome::StreamError("upstream_bad_response")),
        Kind::Malformed => once(bad_response),
        // Known before any token: a JSON error, whatever the request asked for.
        Kind::WrongContentType => once(bad_response),
        Kind::CutStream if stream => once(Outcome::StreamError("upstream_bad_response")),
        Kind::StallStream if stream => once(Outcome::StreamError("upstream_timeout")),
        Kind::CutStream | Kind::StallStream => return None,
    })
}

/// What one chat request produced.
#[derive(Debug)]
struct Seen {
    status: u16,
    /// The JSON body, or for a stream its events as (name, data).
    body: Option<Value>,
    events: Vec<(String, Value)>,
    elapsed: Duration,
}

impl Seen {
    fn streamed_text(&self) -> String {
        self.events
            .iter()
            .filter(|(name, _)| name == "delta")
            .map(|(_, data)| data["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    fn event_names(&self) -> Vec<&str> {
        self.events.iter().map(|(name, _)| name.as_str()).collect()
    }
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.body {
            Some(body) => write!(f, "{} {body}", self.status),
            None => write!(f, "{} events {:?}", self.status, self.events),
        }
    }
}

struct Rig {
    doubles: Doubles,
    runner: Runner,
    client: reqwest::Client,
    _data_dir: tempfile::TempDir,
}

impl Rig {
    /// The doubles with the sample book ingested into their Qdrant by the real ingester, and
    /// the runner binary pointed at them, reranking, with a short upstream deadline.
    async fn start(runner_env: &[(&str, &str)]) -> Rig {
        let doubles = Doubles::start().await;
        let data_dir = tempfile::tempdir().unwrap();
        let base = doubles.base_url();
        let lookup = |name: &str| match name {
            "cohere_api_key" => Some("test-cohere-key".to_owned()),
            "cohere_base_url" | "qdrant_url" => Some(base.clone()),
            "qdrant_collection" => Some("book".to_owned()),
            _ => None,
        };
        let settings = rag_core::config::Settings::from_lookup(lookup).unwrap();
        let mut options =
            host::ingest::Options::new(support::workspace().join("book/docs"), data_dir.path());
        options.target = host::ingest::Target::Qdrant;
        let report = host::ingest::ingest(&options, &settings).await.unwrap();
        assert!(report.summary.written > 0, "{:?}", report.summary);

        let variables = [
            ("openai_api_key", "test-openai-key".to_owned()),
            ("openai_base_url", doubles.openai_base_url()),
            ("cohere_api_key", "test-cohere-key".to_owned()),
            ("cohere_base_url", doubles.base_url()),
            ("cohere_rerank_model", "rerank-v3.5".to_owned()),
            ("qdrant_url", doubles.base_url()),
            ("qdrant_collection", "book".to_owned()),
            ("upstream_timeout_ms", UPSTREAM_TIMEOUT_MS.to_string()),
            // The rerank double scores by word overlap, which is low for long passages.
            ("rerank_min_relevance", "0.01".to_owned()),
        ];
        let runner = Runner::start_with_env(data_dir.path(), &variables, runner_env).await;
        Rig {
            doubles,
            runner,
            client: reqwest::Client::new(),
            _data_dir: data_dir,
        }
    }

    async fn new_session(&self) -> String {
        let response = self
            .client
            .post(self.runner.url("/session"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        body["session_id"].as_str().unwrap().to_owned()
    }

    async fn chat(&self, session_id: &str, stream: bool) -> Seen {
        let started = Instant::now();
        let response = self
            .client
            .post(self.runner.url("/chat"))
            .json(&json!({"query": QUESTION, "session_id": session_id, "stream": stream}))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let event_stream = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let bytes = response.bytes().await.unwrap();
        let elapsed = started.elapsed();
        if !event_stream {
            let body = serde_json::from_slice(&bytes).unwrap_or_else(
                |_| json!({"not_json": String::from_utf8_lossy(&bytes).into_owned()}),
            );
            return Seen {
                status,
                body: Some(body),
                events: Vec::new(),
                elapsed,
            };
        }
        let events = SseParser::new()
            .feed(&bytes)
            .into_iter()
            .map(|event| {
                let data = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                (event.event.unwrap_or_else(|| "message".to_owned()), data)
            })
            .collect();
        Seen {
            status,
            body: None,
            events,
            elapsed,
        }
    }

    /// The stored messages of a session as (role, status, content).
    async fn turns(&self, session_id: &str) -> Vec<(String, String, String)> {
        let response = self
            .client
            .get(self.runner.url(&format!("/session/{session_id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let session: Value = response.json().await.unwrap();
        session["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let text = |key: &str| m[key].as_str().unwrap_or_default().to_owned();
                (text("role"), text("status"), text("content"))
            })
            .collect()
    }

    fn calls(&self) -> Vec<(Endpoint, usize)> {
        [
            Endpoint::CohereEmbed,
            Endpoint::QdrantQuery,
            Endpoint::CohereRerank,
            Endpoint::OpenAiChat,
        ]
        .into_iter()
        .map(|e| (e, self.doubles.calls(e)))
        .collect()
    }

    /// `/health` answers and a normal chat is answered in full.
    async fn assert_serving(&self) -> Result<(), String> {
        let health = self
            .client
            .get(self.runner.url("/health"))
            .send()
            .await
            .map_err(|e| format!("/health: {e}"))?;
        if health.status() != 200 {
            return Err(format!("/health answered {}", health.status()));
        }
        let session = self.new_session().await;
        let seen = self.chat(&session, false).await;
        let body = seen.body.clone().unwrap_or_default();
        if seen.status != 200 || body["mode"] != "generated" {
            return Err(format!("a normal chat afterwards got {seen}"));
        }
        Ok(())
    }
}

/// Runs one cell; returns every way it differed from the expectation.
async fn run_cell(rig: &Rig, kind: Kind, upstream: Upstream, expected: &Expected) -> Vec<String> {
    let mut problems = Vec::new();
    let endpoint = upstream.endpoint();
    let session = rig.new_session().await;
    let before = rig.calls();
    rig.doubles
        .push_faults(endpoint, kind.fault(), expected.queued);
    let seen = rig.chat(&session, upstream.streamed_request()).await;
    let after = rig.calls();
    let delta = |e: Endpoint| {
        let get = |list: &[(Endpoint, usize)]| list.iter().find(|(x, _)| *x == e).unwrap().1;
        get(&after) - get(&before)
    };

    // (a) what the client got
    match &expected.outcome {
        Outcome::Answered => {
            let body = seen.body.clone().unwrap_or_default();
            let answered = if upstream.streamed_request() {
                seen.status == 200 && seen.event_names().last() == Some(&"done")
            } else {
                seen.status == 200 && body["mode"] == "generated"
            };
            if !answered {
                problems.push(format!("expected an answer, got {seen}"));
            }
        }
        Outcome::Error(status, code) => {
            let body = seen.body.clone().unwrap_or_default();
            if seen.status != *status || body["error"]["code"] != *code {
                problems.push(format!("expected {status} {code}, got {seen}"));
            }
            if body["error"]["message"].as_str().is_none_or(str::is_empty) {
                problems.push(format!("no error message: {seen}"));
            }
        }
        Outcome::StreamError(code) => {
            let names = seen.event_names();
            let started = names.first() == Some(&"sources") && names.contains(&"delta");
            let ended = seen
                .events
                .last()
                .is_some_and(|(name, data)| name == "error" && data["code"] == *code);
            if seen.status != 200 || !started || !ended {
                problems.push(format!(
                    "expected sources, deltas, then an error event {code}; got {seen}"
                ));
            }
        }
    }

    // (b) the calls: the retries that must happen, and no others
    if delta(endpoint) != expected.calls {
        problems.push(format!(
            "{endpoint:?} called {} times, expected {}",
            delta(endpoint),
            expected.calls
        ));
    }
    let pending = rig.doubles.pending_faults(endpoint);
    if pending != 0 {
        problems.push(format!("{pending} queued faults never met"));
        rig.doubles.clear_faults();
    }
    if !matches!(expected.outcome, Outcome::Answered) {
        for later in upstream.later() {
            if delta(*later) != 0 {
                problems.push(format!(
                    "{later:?} called {} times after the failure",
                    delta(*later)
                ));
            }
        }
    }
    if kind == Kind::RateLimitedRetryAfter && seen.elapsed < Duration::from_secs(2) {
        problems.push(format!(
            "Retry-After: 1 twice, yet answered after {:?}",
            seen.elapsed
        ));
    }

    // (c) the stored turn
    let turns = rig.turns(&session).await;
    let question = (
        "user".to_owned(),
        "complete".to_owned(),
        QUESTION.to_owned(),
    );
    let expected_turns = match &expected.outcome {
        Outcome::Answered => None,
        Outcome::Error(..) => Some(vec![question.clone()]),
        Outcome::StreamError(_) => Some(vec![
            question.clone(),
            (
                "assistant".to_owned(),
                "incomplete".to_owned(),
                seen.streamed_text(),
            ),
        ]),
    };
    match expected_turns {
        Some(expected_turns) if turns != expected_turns => {
            problems.push(format!("stored {turns:?}, expected {expected_turns:?}"))
        }
        None if turns.len() != 2
            || turns[0] != question
            || turns[1].0 != "assistant"
            || turns[1].1 != "complete" =>
        {
            problems.push(format!("stored {turns:?}, expected a complete answer"))
        }
        _ => {}
    }

    // (d) still serving
    if let Err(problem) = rig.assert_serving().await {
        problems.push(problem);
    }
    problems
}

/// Runs every applicable cell of `upstreams` on one rig (its runner with `runner_env`), in
/// order; returns the report lines and the problems.
async fn run_rows(
    upstreams: &[Upstream],
    runner_env: &[(&str, &str)],
) -> (Vec<String>, Vec<String>) {
    let rig = Rig::start(runner_env).await;
    let label = match runner_env {
        [] => String::new(),
        env => format!(
            " ({})",
            env.iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    };
    rig.assert_serving()
        .await
        .unwrap_or_else(|p| panic!("before any fault: {p}\n{}", rig.runner.log_text()));
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for kind in Kind::ALL {
        for &upstream in upstreams {
            let Some(expected) = expected(kind, upstream) else {
                continue;
            };
            let cell = Instant::now();
            let problems = run_cell(&rig, kind, upstream, &expected).await;
            report.push(format!(
                "{:<22} {:<10} {:>2} calls  {:<40} {:>5} ms  {}",
                format!("{kind:?}"),
                format!("{upstream:?}{label}"),
                expected.calls,
                format!("{:?}", expected.outcome),
                cell.elapsed().as_millis(),
                if problems.is_empty() { "ok" } else { "FAILED" }
            ));
            for problem in problems {
                failures.push(format!("{kind:?} at {upstream:?}{label}: {problem}"));
            }
        }
    }
    (report, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_fault_has_its_code_retries_stored_turn_and_recovery() {
    let started = Instant::now();
    // Retrieval and the model on a rig each (doubles and runner of their own), side by side:
    // a cell counts the calls of its own rig only. A streamed answer is relayed by the runner
    // (`host::stream_relay`); a third rig has the component stream it, as under `spin up`.
    let (retrieval, model, guest_streams) = tokio::join!(
        run_rows(&Upstream::ALL[..3], &[]),
        run_rows(&Upstream::ALL[3..], &[]),
        run_rows(&[Upstream::LlmStream], &[("STREAM_RELAY", "false")]),
    );
    let report: Vec<String> = [retrieval.0, model.0, guest_streams.0].concat();
    let failures: Vec<String> = [retrieval.1, model.1, guest_streams.1].concat();
    println!("{}", report.join("\n"));
    println!(
        "{} cells in {:.1} s",
        report.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
