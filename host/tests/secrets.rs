//! No secret reaches a response or a log line: the runner is given recognisable keys and
//! database passwords, and every endpoint and failure path is exercised (upstream success,
//! errors, hangs and unreachable upstreams; PostgreSQL reachable and not; bad input; unknown
//! routes), through the real runner and the real built components; `host check` as well,
//! through the real binary.

mod support;

use std::time::Duration;

use rag_core::retrieval::Passage;
use rag_core::upstream::qdrant::{Layout, NewPoint, Qdrant};
use serde_json::{json, Value};
use support::postgres::{postgres_or_skip, PG_ADDRESS, PG_DATABASE};
use support::{start, Options, Server};
use upstream_doubles::{Doubles, Endpoint, Fault};

const OPENAI_KEY: &str = "sk-leakcheck-OpenAiKeyQuokka";
const COHERE_KEY: &str = "co-leakcheck-CohereKeyWombat";
const QDRANT_KEY: &str = "qd-leakcheck-QdrantKeyNumbat";
const DB_PASSWORD: &str = "pw-leakcheck-DbPassPlatypus";
const DEAD_DB_PASSWORD: &str = "pw-leakcheck-DeadDbPassBilby";

/// What must not appear: each secret whole and the parts that make it recognisable.
const NEEDLES: &[&str] = &[
    OPENAI_KEY,
    COHERE_KEY,
    QDRANT_KEY,
    DB_PASSWORD,
    DEAD_DB_PASSWORD,
    "leakcheck",
    "Quokka",
    "Wombat",
    "Numbat",
    "Platypus",
    "Bilby",
];

/// An address nothing listens on.
const UNREACHABLE: &str = "http://127.0.0.1:9";

/// Every per-client budget off: one test client sends every request.
const UNLIMITED: &[&str] = &["--rate-limit-per-minute", "0"];

fn dead_database_url() -> String {
    format!("postgres://app:{DEAD_DB_PASSWORD}@127.0.0.1:5432/no_such_db")
}

fn assert_clean(what: &str, text: &str) {
    let lower = text.to_lowercase();
    for needle in NEEDLES {
        assert!(
            !lower.contains(&needle.to_lowercase()),
            "{what} holds the secret part {needle:?}:\n{text}"
        );
    }
}

/// Every answer, headers and body, as one text to search.
#[derive(Default)]
struct Transcript(String);

impl Transcript {
    async fn send(&mut self, request: reqwest::RequestBuilder) -> (u16, String) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        self.0.push_str(&format!("{status}\n"));
        for (name, value) in response.headers() {
            self.0.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        let body = response.text().await.unwrap_or_default();
        self.0.push_str(&body);
        self.0.push('\n');
        (status, body)
    }
}

struct Client<'a> {
    server: &'a Server,
    http: reqwest::Client,
    transcript: Transcript,
}

impl<'a> Client<'a> {
    fn new(server: &'a Server) -> Self {
        Self {
            server,
            http: reqwest::Client::new(),
            transcript: Transcript::default(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url)
    }

    async fn get(&mut self, path: &str) -> (u16, String) {
        let request = self.http.get(self.url(path));
        self.transcript.send(request).await
    }

    async fn delete(&mut self, path: &str) -> (u16, String) {
        let request = self.http.delete(self.url(path));
        self.transcript.send(request).await
    }

    async fn post(&mut self, path: &str, body: &Value) -> (u16, String) {
        let request = self.http.post(self.url(path)).json(body);
        self.transcript.send(request).await
    }

    async fn post_raw(&mut self, path: &str, body: &str) -> (u16, String) {
        let request = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        self.transcript.send(request).await
    }

    async fn stream(&mut self, body: &Value) -> (u16, String) {
        let request = self
            .http
            .post(self.url("/chat"))
            .header("accept", "text/event-stream")
            .json(body);
        self.transcript.send(request).await
    }

    /// Bad input and unknown routes: the same on every configuration.
    async fn bad_requests(&mut self) {
        for body in [
            json!({}),
            json!({"query": ""}),
            json!({"query": 7}),
            json!({"query": "x".repeat(20_000)}),
            json!({"query": "What is ROS?", "session_id": "not a session"}),
        ] {
            let (status, _) = self.post("/chat", &body).await;
            assert!((400..500).contains(&status), "{status} for {body}");
        }
        let (status, _) = self.post_raw("/chat", "{not json").await;
        assert!((400..500).contains(&status), "{status}");
        for path in ["/nope", "/health/nope", "/session/x/y/z"] {
            let (status, _) = self.get(path).await;
            assert!((400..500).contains(&status), "{status} for {path}");
        }
    }

    /// Creates a session, chats in it, reads, rates and deletes it.
    async fn session_round(&mut self) {
        let (status, created) = self.post("/session", &json!({})).await;
        let Ok(created) = serde_json::from_str::<Value>(&created) else {
            return;
        };
        if status >= 300 {
            return;
        }
        let id = created["session_id"].as_str().unwrap().to_owned();
        let (_, answer) = self
            .post(
                "/chat",
                &json!({"query": "What is the zero moment point?", "session_id": id}),
            )
            .await;
        let message = serde_json::from_str::<Value>(&answer)
            .ok()
            .and_then(|v| v["message_id"].as_i64())
            .unwrap_or(1);
        self.get(&format!("/session/{id}")).await;
        self.get(&format!("/session/{id}?limit=1")).await;
        self.get(&format!("/session/{id}?limit=nope")).await;
        for body in [json!({"rating": "up"}), json!({"rating": "sideways"})] {
            self.post(&format!("/session/{id}/messages/{message}/feedback"), &body)
                .await;
        }
        self.post(
            &format!("/session/{id}/messages/999999999/feedback"),
            &json!({"rating": "down"}),
        )
        .await;
        self.delete(&format!("/session/{id}")).await;
        let (status, _) = self.get(&format!("/session/{id}")).await;
        assert_eq!(status, 404);
    }
}

/// The `book` collection on the doubles' Qdrant with one passage, stored with the key.
async fn seed_qdrant(doubles: &Doubles) {
    let qdrant = Qdrant {
        url: doubles.base_url(),
        api_key: Some(QDRANT_KEY.into()),
        collection: "book".into(),
    };
    let client = reqwest::Client::new();
    let send = |request: http::Request<Vec<u8>>| {
        let mut builder = client.request(request.method().clone(), request.uri().to_string());
        for (name, value) in request.headers() {
            builder = builder.header(name, value);
        }
        builder.body(request.into_body()).send()
    };
    let created = send(qdrant.create_collection_request(upstream_doubles::EMBED_DIMS))
        .await
        .unwrap();
    assert!(created.status().is_success());
    let passage = Passage {
        url: "https://book.example/docs/balance#zero-moment-point".into(),
        page_url: "https://book.example/docs/balance".into(),
        title: "Locomotion and balance".into(),
        heading: "Zero moment point".into(),
        text: "The zero moment point is the point on the ground where the moment of the walking robot's contact forces vanishes.".into(),
        score: 0.0,
    };
    let point = NewPoint {
        id: "00000000-0000-4000-8000-000000000001".into(),
        vector: Doubles::embed(&passage.text),
        sparse: rag_core::keywords::sparse_vector(&format!(
            "{} — {}\n\n{}",
            passage.title, passage.heading, passage.text
        )),
        hash: "hash-1".into(),
        passage,
    };
    let upserted = send(qdrant.upsert_request(&[point], Layout::Hybrid))
        .await
        .unwrap();
    assert!(upserted.status().is_success());
}

fn log_has_warnings() -> bool {
    support::logs::text()
        .lines()
        .filter(|line| line.contains(" WARN "))
        .count()
        > 10
}

const QUESTION: &str = "What is the zero moment point of a walking robot?";

#[tokio::test(flavor = "multi_thread")]
async fn no_response_or_log_line_holds_a_secret() {
    support::logs::capture();
    let doubles = Doubles::start().await;
    doubles.require_qdrant_api_key(QDRANT_KEY);
    seed_qdrant(&doubles).await;
    // The real PostgreSQL (trust authentication ignores the password), in a schema of its own.
    let schema = postgres_or_skip().await;
    let database_url = match &schema {
        Some(pg) => pg.url_as_via(&format!("postgres:{DB_PASSWORD}"), PG_ADDRESS),
        None => dead_database_url(),
    };
    let (openai_base_url, cohere_base_url, qdrant_url) = (
        doubles.openai_base_url(),
        doubles.base_url(),
        doubles.base_url(),
    );
    let reachable: Vec<(&str, &str)> = vec![
        ("openai_api_key", OPENAI_KEY),
        ("openai_base_url", &openai_base_url),
        ("cohere_api_key", COHERE_KEY),
        ("cohere_base_url", &cohere_base_url),
        ("cohere_rerank_model", "rerank-v3.5"),
        ("qdrant_url", &qdrant_url),
        ("qdrant_api_key", QDRANT_KEY),
        ("database_url", &database_url),
        ("upstream_timeout_ms", "1500"),
    ];
    let server = start(Options {
        variables: &reachable,
        args: UNLIMITED,
        ..Options::default()
    })
    .await;
    let mut client = Client::new(&server);
    client.get("/health").await;
    let (_, ready) = client.get("/health/ready").await;
    if schema.is_some() {
        let ready: Value = serde_json::from_str(&ready).unwrap();
        assert_eq!(ready["checks"]["postgres"]["status"], "up", "{ready}");
    }
    let (status, answer) = client.post("/chat", &json!({"query": QUESTION})).await;
    assert_eq!(status, 200, "{answer}");
    let (status, streamed) = client.stream(&json!({"query": QUESTION})).await;
    assert_eq!(status, 200, "{streamed}");
    client.session_round().await;
    client.bad_requests().await;

    // Each upstream failing in each way it can, JSON and streamed.
    let faults = [
        Fault::Status {
            status: 401,
            retry_after: None,
        },
        Fault::Status {
            status: 403,
            retry_after: None,
        },
        Fault::server_error(),
        Fault::rate_limited(1),
        Fault::MalformedBody,
        Fault::Delay(Duration::from_secs(3)),
    ];
    for endpoint in [
        Endpoint::OpenAiChat,
        Endpoint::CohereEmbed,
        Endpoint::CohereRerank,
        Endpoint::QdrantQuery,
    ] {
        for fault in &faults {
            for streamed in [false, true] {
                // A hang is repeated for the retries too, so the request's deadline passes
                // (504); other faults come once, so a retry, where one is made, succeeds.
                let count = if matches!(fault, Fault::Delay(_)) {
                    3
                } else {
                    1
                };
                doubles.push_faults(endpoint, fault.clone(), count);
                let (status, body) = if streamed {
                    client.stream(&json!({"query": QUESTION})).await
                } else {
                    client.post("/chat", &json!({"query": QUESTION})).await
                };
                assert!(status < 600, "{body}");
            }
        }
    }
    doubles.push_fault(Endpoint::OpenAiChat, Fault::CutStream);
    client.stream(&json!({"query": QUESTION})).await;
    doubles.push_faults(
        Endpoint::QdrantCollectionInfo,
        Fault::Status {
            status: 401,
            retry_after: None,
        },
        2,
    );
    client.get("/health/ready").await;
    let transcript = std::mem::take(&mut client.transcript.0);
    drop(client);
    drop(server);

    // Nothing reachable: every upstream refuses connections, the database does not exist.
    let dead_database_url = dead_database_url();
    let unreachable: Vec<(&str, &str)> = vec![
        ("openai_api_key", OPENAI_KEY),
        ("openai_base_url", UNREACHABLE),
        ("cohere_api_key", COHERE_KEY),
        ("cohere_base_url", UNREACHABLE),
        ("qdrant_url", UNREACHABLE),
        ("qdrant_api_key", QDRANT_KEY),
        ("database_url", &dead_database_url),
        ("upstream_timeout_ms", "1500"),
    ];
    let server = start(Options {
        variables: &unreachable,
        args: UNLIMITED,
        ..Options::default()
    })
    .await;
    let mut client = Client::new(&server);
    client.get("/health").await;
    let (status, ready) = client.get("/health/ready").await;
    assert_eq!(status, 503, "{ready}");
    let (status, answer) = client.post("/chat", &json!({"query": QUESTION})).await;
    assert!(status >= 500, "{answer}");
    client.stream(&json!({"query": QUESTION})).await;
    client.session_round().await;
    client
        .get("/session/0123456789abcdef0123456789abcdef")
        .await;
    client.bad_requests().await;
    let transcript = transcript + &client.transcript.0;
    if let Some(pg) = schema {
        pg.drop_schema().await;
    }

    // The failure paths ran: upstream and database failures were answered and logged.
    for status in ["502", "503", "504"] {
        assert!(
            transcript.lines().any(|line| line == status),
            "no {status} was answered"
        );
    }
    assert!(log_has_warnings(), "no failure was logged");
    assert_clean("a response", &transcript);
    let log = support::logs::text();
    assert!(log.lines().count() > 10, "nothing was logged:\n{log}");
    for line in log.lines() {
        assert_clean("a log line", line);
    }
}

#[test]
fn host_check_prints_no_secret() {
    let data_dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_host"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SPIN_MANIFEST", support::workspace().join("spin.toml"))
            .env("DATA_DIR", data_dir.path())
            .env("OPENAI_API_KEY", OPENAI_KEY)
            .env("COHERE_API_KEY", COHERE_KEY)
            .env("QDRANT_API_KEY", QDRANT_KEY)
            .env("QDRANT_URL", UNREACHABLE)
            .env("DATABASE_URL", dead_database_url())
            .env(
                "SPIN_VARIABLE_DATABASE_URL",
                format!("postgres://postgres:{DB_PASSWORD}@{PG_ADDRESS}/{PG_DATABASE}"),
            )
            .env("METRICS_TOKEN", "mt-leakcheck-MetricsQuokka")
            .arg("check")
            .args(extra);
        let output = command.output().unwrap();
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status, text)
    };
    for extra in [&[][..], &["--production"][..]] {
        let (status, text) = run(extra);
        assert!(
            text.to_lowercase().contains("openai_api_key"),
            "host check {extra:?} ({status}) did not report the key:\n{text}"
        );
        assert_clean(&format!("host check {extra:?}"), &text);
    }
}
