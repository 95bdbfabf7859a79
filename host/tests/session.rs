//! The session component in wasmtime, through the runner, on the embedded SQLite file and on a
//! real PostgreSQL (skipped, with a printed reason, when none answers on 127.0.0.1:5432).
//!
//! The session API has no way to add messages (answers are written by /chat), so tests insert
//! messages with plain SQL on their own connection to the same database, as /chat would leave them
//! (under the session's stored key, the digest of its id).

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use support::postgres::{postgres_or_skip, PgSchema, PG_ADDRESS};
use support::{start, Options, Server};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// The runner's per-client rate limit is off: every request here comes from one address, and
/// these tests are about sessions, not about the limiter.
const UNLIMITED: &[&str] = &["--rate-limit-per-minute", "0"];

// ---------------------------------------------------------------------------------------------
// Backends

/// Direct access to the database a runner uses, for what the session API cannot do itself:
/// adding messages, and counting rows to prove nothing was written.
enum Direct<'a> {
    Sqlite(PathBuf),
    Postgres(&'a PgSchema),
}

impl Direct<'_> {
    fn sqlite(server: &Server) -> Self {
        Direct::Sqlite(server.data_dir.path().join("default.db"))
    }

    async fn append(&self, session_id: &str, role: &str, content: &str, sources: &str) -> i64 {
        let (session_id, role, content, sources) = (
            rag_core::store::session_key(session_id),
            role.to_owned(),
            content.to_owned(),
            sources.to_owned(),
        );
        match self {
            Direct::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let conn = rusqlite::Connection::open(path).unwrap();
                    conn.busy_timeout(Duration::from_secs(5)).unwrap();
                    conn.query_row(
                        "INSERT INTO messages (session_id, role, content, sources, status) \
                         VALUES (?1, ?2, ?3, ?4, 'complete') RETURNING id",
                        rusqlite::params![session_id, role, content, sources],
                        |row| row.get(0),
                    )
                    .unwrap()
                })
                .await
                .unwrap()
            }
            Direct::Postgres(schema) => schema
                .admin
                .query_one(
                    &format!(
                        "INSERT INTO {}.messages (session_id, role, content, sources, status) \
                         VALUES ($1, $2, $3, $4, 'complete') RETURNING id",
                        schema.name
                    ),
                    &[&session_id, &role, &content, &sources],
                )
                .await
                .unwrap()
                .get(0),
        }
    }

    /// Rows in `table`; none in a table not created yet (a first question creates the schema
    /// only when it stores its answer).
    async fn count(&self, table: &str) -> i64 {
        match self {
            Direct::Sqlite(path) => {
                let (path, table) = (path.clone(), table.to_owned());
                tokio::task::spawn_blocking(move || {
                    let conn = rusqlite::Connection::open(path).unwrap();
                    let exists: bool = conn
                        .query_row(
                            "SELECT EXISTS \
                             (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
                            [&table],
                            |row| row.get(0),
                        )
                        .unwrap();
                    if !exists {
                        return 0;
                    }
                    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                        row.get(0)
                    })
                    .unwrap()
                })
                .await
                .unwrap()
            }
            Direct::Postgres(schema) => schema
                .admin
                .query_one(
                    &format!("SELECT count(*) FROM {}.{table}", schema.name),
                    &[],
                )
                .await
                .unwrap()
                .get(0),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

struct Api {
    client: Client,
    base: String,
}

impl Api {
    fn new(server: &Server) -> Self {
        Self {
            client: Client::new(),
            base: server.base_url.clone(),
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        read(request.send().await.unwrap()).await
    }

    async fn send_raw(&self, method: Method, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        read(request.send().await.unwrap()).await
    }

    async fn create(&self) -> String {
        let (status, body) = self.send(Method::POST, "/session", None).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["session_id"].as_str().unwrap().to_owned()
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }

    async fn rate(&self, session_id: &str, message_id: i64, body: &Value) -> (StatusCode, Value) {
        let path = format!("/session/{session_id}/messages/{message_id}/feedback");
        self.send(Method::POST, &path, Some(body)).await
    }
}

/// Status and JSON body; an empty body reads as `null`.
async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let is_json = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("application/json"));
    let text = response.text().await.unwrap();
    if text.is_empty() {
        return (status, Value::Null);
    }
    assert!(
        is_json,
        "{status} answered without a JSON content type: {text}"
    );
    (status, serde_json::from_str(&text).unwrap())
}

/// An error response: its status, stable code, and (for validation errors) the field.
#[track_caller]
fn assert_error(
    (status, body): &(StatusCode, Value),
    want_status: u16,
    code: &str,
    field: Option<&str>,
) {
    assert_eq!(status.as_u16(), want_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    match field {
        Some(field) => assert_eq!(body["error"]["field"], field, "{body}"),
        None => assert!(body["error"].get("field").is_none(), "{body}"),
    }
}

fn ids(page: &Value) -> Vec<i64> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The API, the same on both backends

async fn api_contract(server: &Server, direct: &Direct<'_>) {
    let api = Api::new(server);

    // Create, then read an empty history.
    let (status, created) = api.send(Method::POST, "/session", None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["session_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 22, "{id}");
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    let created_at = created["created_at"].as_str().unwrap();
    assert!(
        created_at.ends_with('Z') && created_at.len() == 24,
        "{created_at}"
    );
    let (status, page) = api.get(&format!("/session/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["session_id"], id.as_str());
    assert_eq!(page["created_at"], created_at);
    assert_eq!(page["messages"], json!([]));
    assert_eq!(page["next_before"], Value::Null);
    assert_ne!(api.create().await, id, "ids are random");

    // A conversation as /chat leaves it: questions and cited answers, oldest first.
    let sources = r#"[{"title":"Sensors","url":"/docs/sensors#lidar","heading":"LiDAR"}]"#;
    let mut message_ids = Vec::new();
    for turn in 0..5_usize {
        let (role, sources) = if turn.is_multiple_of(2) {
            ("user", "[]")
        } else {
            ("assistant", sources)
        };
        let content = format!("turn {turn}");
        message_ids.push(direct.append(&id, role, &content, sources).await);
    }
    let (status, page) = api.get(&format!("/session/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(ids(&page), message_ids, "newest last");
    let answer = &page["messages"][1];
    assert_eq!(answer["role"], "assistant");
    assert_eq!(answer["content"], "turn 1");
    assert_eq!(answer["status"], "complete");
    assert_eq!(answer["sources"][0]["url"], "/docs/sensors#lidar");
    assert_eq!(answer["feedback"], Value::Null);
    assert!(answer["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(page["messages"][0]["sources"], json!([]));
    assert_eq!(page["next_before"], Value::Null);

    // Pages walk backwards from the newest message.
    let (_, newest) = api.get(&format!("/session/{id}?limit=2")).await;
    assert_eq!(ids(&newest), message_ids[3..5]);
    assert_eq!(newest["next_before"], message_ids[3]);
    let (_, middle) = api
        .get(&format!("/session/{id}?limit=2&before={}", message_ids[3]))
        .await;
    assert_eq!(ids(&middle), message_ids[1..3]);
    assert_eq!(middle["next_before"], message_ids[1]);
    let (_, oldest) = api
        .get(&format!("/session/{id}?before={}&limit=2", message_ids[1]))
        .await;
    assert_eq!(ids(&oldest), message_ids[0..1]);
    assert_eq!(oldest["next_before"], Value::Null);
    let (_, exact) = api.get(&format!("/session/{id}?limit=5")).await;
    assert_eq!(ids(&exact), message_ids);
    assert_eq!(exact["next_before"], Value::Null);

    // Feedback: a second rating replaces the first, fields it leaves out included.
    let answer_id = message_ids[1];
    let first = json!({"rating": "up", "reason": "clear", "comment": "thanks"});
    let (status, body) = api.rate(&id, answer_id, &first).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, page) = api.get(&format!("/session/{id}")).await;
    let feedback = &page["messages"][1]["feedback"];
    assert_eq!(feedback["rating"], "up");
    assert_eq!(feedback["reason"], "clear");
    assert_eq!(feedback["comment"], "thanks");
    assert!(feedback["rated_at"].as_str().unwrap().ends_with('Z'));
    let (status, _) = api
        .rate(
            &id,
            answer_id,
            &json!({"rating": "down", "comment": "wrong page"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, page) = api.get(&format!("/session/{id}")).await;
    assert_eq!(
        page["messages"][1]["feedback"],
        json!({"rating": "down", "reason": null, "comment": "wrong page",
               "rated_at": page["messages"][1]["feedback"]["rated_at"]})
    );
    assert_eq!(page["messages"][3]["feedback"], Value::Null);
    assert_eq!(direct.count("feedback").await, 1);

    // Strings that look like SQL, and any Unicode, come back exactly as sent.
    let comment =
        "'); DROP TABLE sessions; -- \" \\ ` $1 ?1 %s \u{202e}日本語 🤖 مرحبا\ttab\nline é\u{301}";
    let reason = "Robert'); DELETE FROM feedback WHERE ('1'='1";
    let (status, _) = api
        .rate(
            &id,
            message_ids[3],
            &json!({"rating": "up", "reason": reason, "comment": comment}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, page) = api.get(&format!("/session/{id}")).await;
    assert_eq!(page["messages"][3]["feedback"]["comment"], comment);
    assert_eq!(page["messages"][3]["feedback"]["reason"], reason);
    assert_eq!(page["messages"][1]["feedback"]["rating"], "down");
    assert_eq!(direct.count("feedback").await, 2);
    let at_limits =
        json!({"rating": "up", "reason": "é".repeat(200), "comment": "🙂".repeat(1000)});
    let (status, body) = api.rate(&id, message_ids[3], &at_limits).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // Nothing to rate.
    let missing = 9_000_000_000_i64;
    assert_error(
        &api.rate(&id, missing, &first).await,
        404,
        "not_found",
        None,
    );
    assert_error(
        &api.rate(&id, message_ids[0], &first).await,
        404,
        "not_found",
        None,
    );
    let other = api.create().await;
    assert_error(
        &api.rate(&other, answer_id, &first).await,
        404,
        "not_found",
        None,
    );
    assert_error(
        &api.rate("no-such-session", answer_id, &first).await,
        404,
        "not_found",
        None,
    );

    // Bad input is refused with the field and its limit named, before anything is stored.
    for (body, field) in [
        (json!({"rating": "meh"}), "rating"),
        (json!({"reason": "x"}), "rating"),
        (json!({"rating": 1}), "rating"),
        (json!({"rating": "up", "comment": 5}), "comment"),
        (json!({"rating": "up", "reason": ["x"]}), "reason"),
        (
            json!({"rating": "up", "comment": "a".repeat(1001)}),
            "comment",
        ),
        (json!({"rating": "up", "reason": "a".repeat(201)}), "reason"),
        (json!({"rating": "up", "comment": "a\u{0}b"}), "comment"),
        (json!({"rating": "up", "score": 5}), "score"),
    ] {
        assert_error(
            &api.rate(&id, answer_id, &body).await,
            400,
            "invalid_request",
            Some(field),
        );
    }
    let too_long = api
        .rate(
            &id,
            answer_id,
            &json!({"rating": "up", "comment": "a".repeat(1001)}),
        )
        .await;
    assert!(too_long.1["error"]["message"]
        .as_str()
        .unwrap()
        .contains("1000"));
    let too_long = api
        .rate(
            &id,
            answer_id,
            &json!({"rating": "up", "reason": "a".repeat(201)}),
        )
        .await;
    assert!(too_long.1["error"]["message"]
        .as_str()
        .unwrap()
        .contains("200"));
    let feedback_path = format!("/session/{id}/messages/{answer_id}/feedback");
    for body in [&b"{not json"[..], b"[]", b"\"up\"", b""] {
        let response = api
            .send_raw(Method::POST, &feedback_path, body.to_vec())
            .await;
        assert_error(&response, 400, "invalid_request", None);
    }
    let (_, page) = api.get(&format!("/session/{id}")).await;
    assert_eq!(
        page["messages"][1]["feedback"]["rating"], "down",
        "unchanged"
    );

    let long_id = "x".repeat(129);
    for path in [
        "/session/a.b",
        "/session/%C3%A9",
        &format!("/session/{long_id}"),
    ] {
        assert_error(
            &api.get(path).await,
            400,
            "invalid_request",
            Some("session_id"),
        );
    }
    assert_error(
        &api.rate("a.b", answer_id, &first).await,
        400,
        "invalid_request",
        Some("session_id"),
    );
    for message in ["abc", "0", "-1", "1.5"] {
        let path = format!("/session/{id}/messages/{message}/feedback");
        let response = api.send(Method::POST, &path, Some(&first)).await;
        assert_error(&response, 400, "invalid_request", Some("message_id"));
    }
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("before=0", "before"),
        ("before=-4", "before"),
    ] {
        let response = api.get(&format!("/session/{id}?{query}")).await;
        assert_error(&response, 400, "invalid_request", Some(field));
    }
    let (status, _) = api.get(&format!("/session/{id}?limit=200&unknown=1")).await;
    assert_eq!(status, StatusCode::OK);

    // Unknown sessions, routes and methods.
    assert_error(
        &api.get("/session/never-created").await,
        404,
        "not_found",
        None,
    );
    assert_error(
        &api.get(&format!("/session/{id}/extra")).await,
        404,
        "not_found",
        None,
    );
    for (method, path) in [
        (Method::GET, "/session".to_owned()),
        (Method::PUT, "/session".to_owned()),
        (Method::POST, format!("/session/{id}")),
        (Method::PATCH, format!("/session/{id}")),
        (Method::GET, feedback_path.clone()),
    ] {
        let response = api.send(method, &path, None).await;
        assert_error(&response, 405, "method_not_allowed", None);
    }

    // Delete takes the messages and ratings along.
    let (status, body) = api
        .send(Method::DELETE, &format!("/session/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(body, Value::Null);
    assert_error(
        &api.get(&format!("/session/{id}")).await,
        404,
        "not_found",
        None,
    );
    let again = api
        .send(Method::DELETE, &format!("/session/{id}"), None)
        .await;
    assert_error(&again, 404, "not_found", None);
    assert_error(
        &api.rate(&id, answer_id, &first).await,
        404,
        "not_found",
        None,
    );
    assert_eq!(direct.count("messages").await, 0);
    assert_eq!(direct.count("feedback").await, 0);
    let (status, _) = api.get(&format!("/session/{other}")).await;
    assert_eq!(status, StatusCode::OK, "other sessions stay");
    assert_eq!(direct.count("sessions").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_on_sqlite() {
    let server = start(Options {
        args: UNLIMITED,
        ..Options::default()
    })
    .await;
    api_contract(&server, &Direct::sqlite(&server)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn api_on_postgres() {
    let Some(schema) = postgres_or_skip().await else {
        return;
    };
    let url = schema.url();
    let server = start(Options {
        variables: &[("database_url", &url)],
        args: UNLIMITED,
        ..Options::default()
    })
    .await;
    api_contract(&server, &Direct::Postgres(&schema)).await;
    // The tables were made in this test's schema: the runner honoured the URL's options.
    assert_eq!(Direct::Postgres(&schema).count("sessions").await, 2);
    assert_eq!(
        Direct::Postgres(&schema).count("schema_migrations").await,
        rag_core::store::MIGRATIONS.len() as i64
    );
    drop(server);
    schema.drop_schema().await;
}

// ---------------------------------------------------------------------------------------------
// Concurrency

/// 100 sessions created at once, and 100 ratings of one answer at once: every request succeeds,
/// ids are distinct, and exactly one rating (one of those sent) remains.
async fn concurrent_requests(server: &Server, direct: &Direct<'_>) {
    let api = Arc::new(Api::new(server));
    let mut creating = JoinSet::new();
    for _ in 0..100 {
        let api = api.clone();
        creating.spawn(async move { api.send(Method::POST, "/session", None).await });
    }
    let mut ids = std::collections::HashSet::new();
    while let Some(result) = creating.join_next().await {
        let (status, body) = result.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert!(ids.insert(body["session_id"].as_str().unwrap().to_owned()));
    }
    assert_eq!(ids.len(), 100);
    assert_eq!(direct.count("sessions").await, 100);

    let session = ids.iter().next().unwrap().clone();
    let answer = direct
        .append(&session, "assistant", "an answer", "[]")
        .await;
    let mut rating = JoinSet::new();
    for n in 0..100_usize {
        let (api, session) = (api.clone(), session.clone());
        rating.spawn(async move {
            let rating = if n.is_multiple_of(2) { "up" } else { "down" };
            let body = json!({"rating": rating, "comment": format!("rating {n}")});
            api.rate(&session, answer, &body).await
        });
    }
    while let Some(result) = rating.join_next().await {
        let (status, body) = result.unwrap();
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    let (_, page) = api.get(&format!("/session/{session}")).await;
    let feedback = &page["messages"][0]["feedback"];
    let comment = feedback["comment"].as_str().unwrap();
    let n: usize = comment.strip_prefix("rating ").unwrap().parse().unwrap();
    assert_eq!(
        feedback["rating"],
        if n.is_multiple_of(2) { "up" } else { "down" }
    );
    assert_eq!(direct.count("feedback").await, 1);
}

const CONCURRENCY_ARGS: &[&str] = &[
    "--max-concurrent-requests",
    "128",
    "--rate-limit-per-minute",
    "0",
];

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_on_sqlite() {
    let server = start(Options {
        args: CONCURRENCY_ARGS,
        ..Options::default()
    })
    .await;
    concurrent_requests(&server, &Direct::sqlite(&server)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_on_postgres() {
    let Some(schema) = postgres_or_skip().await else {
        return;
    };
    let url = schema.url();
    let server = start(Options {
        variables: &[("database_url", &url)],
        args: CONCURRENCY_ARGS,
        ..Options::default()
    })
    .await;
    concurrent_requests(&server, &Direct::Postgres(&schema)).await;
    drop(server);
    schema.drop_schema().await;
}

// ---------------------------------------------------------------------------------------------
// Durability and limits

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_sessions_survive_a_restart() {
    let server = start(Options {
        args: UNLIMITED,
        ..Options::default()
    })
    .await;
    let api = Api::new(&server);
    let id = api.create().await;
    let answer = Direct::sqlite(&server)
        .append(&id, "assistant", "kept", r#"[{"url":"/docs/a"}]"#)
        .await;
    let (status, _) = api
        .rate(&id, answer, &json!({"rating": "up", "comment": "ü"}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, before) = api.get(&format!("/session/{id}")).await;

    let data_dir = server.stop().await;
    let restarted = start(Options {
        data_dir: Some(data_dir),
        args: UNLIMITED,
        ..Options::default()
    })
    .await;
    let (status, after) = Api::new(&restarted).get(&format!("/session/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after, before);
    assert_eq!(after["messages"][0]["feedback"]["comment"], "ü");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_bodies_are_refused_before_anything_is_written() {
    let server = start(Options {
        args: &["--max-body-bytes", "1024", "--rate-limit-per-minute", "0"],
        ..Options::default()
    })
    .await;
    let api = Api::new(&server);
    let direct = Direct::sqlite(&server);
    let id = api.create().await;
    let answer = direct.append(&id, "assistant", "answer", "[]").await;
    // 900 characters are within the comment limit, but 1800 bytes are over the body limit.
    let valid_but_large = json!({"rating": "up", "comment": "é".repeat(900)});
    let response = api.rate(&id, answer, &valid_but_large).await;
    assert_error(&response, 413, "payload_too_large", None);
    assert!(response.1["error"]["message"]
        .as_str()
        .unwrap()
        .contains("1024"));
    let response = api
        .send_raw(Method::POST, "/session", vec![b' '; 4096])
        .await;
    assert_error(&response, 413, "payload_too_large", None);
    assert_eq!(direct.count("feedback").await, 0);
    assert_eq!(direct.count("sessions").await, 1);

    let small = json!({"rating": "up", "comment": "é".repeat(400)});
    let (status, _) = api.rate(&id, answer, &small).await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "the same request under the limit passes"
    );
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL going away and coming back

/// A TCP relay in front of PostgreSQL that can be taken down (closing every relayed connection,
/// as a database restart does) and brought back on the same port.
struct Relay {
    address: String,
    task: Option<JoinHandle<()>>,
}

impl Relay {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        Self {
            address,
            task: Some(tokio::spawn(relay(listener))),
        }
    }

    async fn down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    async fn up(&mut self) {
        let listener = TcpListener::bind(&self.address).await.unwrap();
        self.task = Some(tokio::spawn(relay(listener)));
    }
}

/// Accepts until aborted; aborting drops the JoinSet, which aborts and closes every connection.
async fn relay(listener: TcpListener) {
    let mut connections = JoinSet::new();
    loop {
        let (mut inbound, _) = listener.accept().await.unwrap();
        connections.spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(PG_ADDRESS).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_outage_is_503_and_the_same_runner_recovers() {
    let Some(schema) = postgres_or_skip().await else {
        return;
    };
    let mut relay = Relay::start().await;
    let url = schema.url_via(&relay.address);
    let server = start(Options {
        variables: &[("database_url", &url)],
        args: UNLIMITED,
        ..Options::default()
    })
    .await;
    let api = Api::new(&server);
    let id = api.create().await;

    relay.down().await;
    // Let the pool see its connections close.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (method, path) in [
        (Method::POST, "/session".to_owned()),
        (Method::GET, format!("/session/{id}")),
        (Method::DELETE, format!("/session/{id}")),
    ] {
        let response = api.send(method, &path, None).await;
        assert_error(&response, 503, "database_unavailable", None);
        let text = response.1.to_string();
        assert!(
            !text.contains(&schema.name) && !text.contains("postgres://"),
            "{text}"
        );
    }

    relay.up().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, page) = loop {
        let response = api.get(&format!("/session/{id}")).await;
        if response.0 != StatusCode::SERVICE_UNAVAILABLE || Instant::now() > deadline {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["session_id"], id.as_str());
    api.create().await;
    assert_eq!(Direct::Postgres(&schema).count("sessions").await, 2);
    drop(server);
    relay.down().await;
    schema.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_postgres_is_503_without_the_url_or_password() {
    let server = start(Options {
        variables: &[(
            "database_url",
            "postgres://reader:pw-very-secret@127.0.0.1:1/sessions",
        )],
        args: UNLIMITED,
        ..Options::default()
    })
    .await;
    let api = Api::new(&server);
    for (method, path) in [
        (Method::POST, "/session"),
        (Method::GET, "/session/some-session"),
    ] {
        let response = api.send(method, path, None).await;
        assert_error(&response, 503, "database_unavailable", None);
        let text = response.1.to_string();
        assert!(
            !text.contains("pw-very-secret") && !text.contains("127.0.0.1:1"),
            "{text}"
        );
    }
    // Bad input is still told apart from the outage: it needs no database.
    let response = api.get("/session/a.b").await;
    assert_error(&response, 400, "invalid_request", Some("session_id"));
}

// ---------------------------------------------------------------------------------------------
// Sessions belong to the reader holding the id

const BOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../book/docs");
const QUESTION: &str = "What does ZMP stand for?";

/// A data folder whose embedded index holds the sample book, so /chat answers without keys.
async fn data_dir_with_book_index() -> tempfile::TempDir {
    let data_dir = tempfile::tempdir().unwrap();
    let mut options = host::ingest::Options::new(BOOK, data_dir.path());
    options.target = host::ingest::Target::Sqlite;
    let settings = rag_core::config::Settings::from_lookup(|_| None).unwrap();
    let report = host::ingest::ingest(&options, &settings).await.unwrap();
    assert!(report.summary.chunks > 0, "no sample book under {BOOK}");
    data_dir
}

impl Api {
    async fn chat(&self, body: &Value) -> (StatusCode, Value) {
        self.send(Method::POST, "/chat", Some(body)).await
    }

    /// Asks without a session id; returns the session the server started.
    async fn chat_new(&self, query: &str) -> (String, Value) {
        let (status, body) = self.chat(&json!({ "query": query })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (body["session_id"].as_str().unwrap().to_owned(), body)
    }

    async fn history(&self, session_id: &str) -> Vec<(String, String)> {
        let (status, page) = self.get(&format!("/session/{session_id}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["role"].as_str().unwrap().to_owned(),
                    m["content"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

/// Server-issued: at least 22 URL-safe characters (132 random bits).
#[track_caller]
fn assert_issued(id: &str) {
    assert!(id.len() >= 22, "{id}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{id}"
    );
}

/// Ids nobody was issued: a client's own choice, the README's old example, and one shaped
/// exactly like an issued id.
const NEVER_ISSUED: [&str; 3] = ["demo", "reader-7", "AAAAAAAAAAAAAAAAAAAAAA"];

async fn chosen_ids_are_not_found_anywhere(server: &Server, direct: &Direct<'_>) {
    let api = Api::new(server);
    let mut answers = Vec::new();
    for id in NEVER_ISSUED {
        let chat = api
            .chat(&json!({"query": QUESTION, "session_id": id}))
            .await;
        let read = api.get(&format!("/session/{id}")).await;
        let delete = api
            .send(Method::DELETE, &format!("/session/{id}"), None)
            .await;
        let rate = api.rate(id, 1, &json!({"rating": "up"})).await;
        for response in [&chat, &read, &delete, &rate] {
            assert_error(response, 404, "not_found", None);
            assert!(!response.1.to_string().contains(id), "{}", response.1);
        }
        answers.push((chat.1, read.1, delete.1, rate.1));
    }
    // Never created as a side effect, and every unknown id gets the very same answers.
    assert_eq!(direct.count("sessions").await, 0);
    assert_eq!(direct.count("messages").await, 0);
    assert!(answers.windows(2).all(|pair| pair[0] == pair[1]));

    // A deleted session answers exactly as one that never existed.
    let id = api.create().await;
    let (status, _) = api
        .send(Method::DELETE, &format!("/session/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, gone) = api.get(&format!("/session/{id}")).await;
    assert_eq!(gone, answers[0].1);
    let chat = api
        .chat(&json!({"query": QUESTION, "session_id": id}))
        .await;
    assert_eq!(chat.1, answers[0].0);
}

async fn chat_starts_a_session_and_continues_it(server: &Server) {
    let api = Api::new(server);
    let (id, first) = api.chat_new(QUESTION).await;
    assert_issued(&id);
    let answer = first["answer"].as_str().unwrap().to_owned();
    assert_eq!(
        api.history(&id).await,
        [
            ("user".to_owned(), QUESTION.to_owned()),
            ("assistant".to_owned(), answer)
        ]
    );
    let follow_up = "Which ROS 2 command lists topics?";
    let (status, second) = api
        .chat(&json!({"query": follow_up, "session_id": id}))
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["session_id"], id.as_str());
    let history = api.history(&id).await;
    assert_eq!(history.len(), 4);
    assert_eq!(history[2], ("user".to_owned(), follow_up.to_owned()));

    // A streamed answer names its new session in its first and last events.
    let response = api
        .client
        .post(format!("{}/chat", api.base))
        .json(&json!({"query": QUESTION, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.bytes().await.unwrap();
    let mut parser = rag_core::sse::SseParser::new();
    let mut events = parser.feed(&bytes);
    events.extend(parser.finish());
    let data = |name: &str| -> Value {
        let event = events
            .iter()
            .find(|e| e.event.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no {name} event"));
        serde_json::from_str(&event.data).unwrap()
    };
    let streamed = data("sources")["session_id"].as_str().unwrap().to_owned();
    assert_issued(&streamed);
    assert_ne!(streamed, id);
    assert_eq!(data("done")["session_id"], streamed.as_str());
    assert_eq!(api.history(&streamed).await.len(), 2);
}

async fn readers_cannot_reach_each_others_sessions(server: &Server) {
    let api = Api::new(server);
    let (alice, alice_answer) = api.chat_new(QUESTION).await;
    let (bob, _) = api.chat_new("Which ROS 2 command lists topics?").await;
    assert_ne!(alice, bob);
    let alice_history = api.history(&alice).await;
    let bob_history = api.history(&bob).await;
    assert_eq!(alice_history[0].1, QUESTION);
    assert!(bob_history.iter().all(|(_, text)| text != QUESTION));

    // Bob's id does not rate Alice's answer; hers does.
    let alice_message = alice_answer["message_id"].as_i64().unwrap();
    let up = json!({"rating": "up"});
    assert_error(
        &api.rate(&bob, alice_message, &up).await,
        404,
        "not_found",
        None,
    );
    let (status, _) = api.rate(&alice, alice_message, &up).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Deleting Bob's leaves Alice's whole.
    let (status, _) = api
        .send(Method::DELETE, &format!("/session/{bob}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(api.history(&alice).await, alice_history);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_capabilities_on_sqlite() {
    let server = start(Options {
        data_dir: Some(data_dir_with_book_index().await),
        args: UNLIMITED,
        ..Options::default()
    })
    .await;
    let direct = Direct::sqlite(&server);
    chosen_ids_are_not_found_anywhere(&server, &direct).await;
    chat_starts_a_session_and_continues_it(&server).await;
    readers_cannot_reach_each_others_sessions(&server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_capabilities_on_postgres() {
    let Some(schema) = postgres_or_skip().await else {
        return;
    };
    let url = schema.url();
    let server = start(Options {
        variables: &[("database_url", &url)],
        data_dir: Some(data_dir_with_book_index().await),
        args: UNLIMITED,
        ..Options::default()
    })
    .await;
    let direct = Direct::Postgres(&schema);
    chosen_ids_are_not_found_anywhere(&server, &direct).await;
    chat_starts_a_session_and_continues_it(&server).await;
    readers_cannot_reach_each_others_sessions(&server).await;
    // Only digests are stored: no row holds an id a reader was given.
    let keys: Vec<String> = schema
        .admin
        .query(&format!("SELECT id FROM {}.sessions", schema.name), &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|key| key.len() == 64), "{keys:?}");
    drop(server);
    schema.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn session_ids_are_distinct_across_1000_creations() {
    const SESSIONS: usize = 1000;
    let server = start(Options {
        args: CONCURRENCY_ARGS,
        ..Options::default()
    })
    .await;
    let api = Arc::new(Api::new(&server));
    let mut creating = JoinSet::new();
    let mut ids = std::collections::HashSet::new();
    for _ in 0..SESSIONS {
        if creating.len() >= 32 {
            ids.insert(creating.join_next().await.unwrap().unwrap());
        }
        let api = api.clone();
        creating.spawn(async move { api.create().await });
    }
    while let Some(id) = creating.join_next().await {
        ids.insert(id.unwrap());
    }
    assert_eq!(ids.len(), SESSIONS, "every id distinct");
    for id in &ids {
        assert_issued(id);
    }
    // The database holds exactly their digests.
    let path = server.data_dir.path().join("default.db");
    let stored: std::collections::HashSet<String> = tokio::task::spawn_blocking(move || {
        let connection = rusqlite::Connection::open(path).unwrap();
        let mut statement = connection.prepare("SELECT id FROM sessions").unwrap();
        let keys = statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        keys
    })
    .await
    .unwrap();
    let digests: std::collections::HashSet<String> = ids
        .iter()
        .map(|id| rag_core::store::session_key(id))
        .collect();
    assert_eq!(stored, digests);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_log_line_holds_a_session_id() {
    support::logs::capture();
    let server = start(Options {
        data_dir: Some(data_dir_with_book_index().await),
        args: UNLIMITED,
        ..Options::default()
    })
    .await;
    let api = Api::new(&server);
    let request_id = format!("log-check-{}", std::process::id());
    let response = api
        .client
        .post(format!("{}/chat", api.base))
        .header("x-request-id", &request_id)
        .json(&json!({ "query": QUESTION }))
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["session_id"].as_str().unwrap().to_owned();
    let (status, _) = api
        .chat(&json!({"query": "And the support polygon?", "session_id": id}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let message = body["message_id"].as_i64().unwrap();
    api.rate(&id, message, &json!({"rating": "down"})).await;
    api.history(&id).await;
    api.send(Method::DELETE, &format!("/session/{id}"), None)
        .await;
    let (status, _) = api.get(&format!("/session/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let log = support::logs::text();
    // The chat line for the first request was captured (tagged with its request id)...
    assert!(
        log.lines()
            .any(|line| line.contains(&request_id) && line.contains("plan")),
        "{log}"
    );
    // ...and no line names the session.
    for line in log.lines() {
        assert!(!line.contains(&id), "a log line holds a session id: {line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn database_failures_are_logged_with_the_request_id_and_never_answered() {
    if postgres_or_skip().await.is_none() {
        return;
    }
    support::logs::capture();
    // PostgreSQL answers, but refuses the connection: the database does not exist.
    let database = format!("no_such_database_{}", std::process::id());
    let url = format!("postgres://postgres@{PG_ADDRESS}/{database}?sslmode=disable");
    let server = start(Options {
        variables: &[("database_url", &url)],
        args: UNLIMITED,
        ..Options::default()
    })
    .await;
    let client = Client::new();
    // Shaped like an issued id, and this test's own: no log line may ever show it.
    let session_id = format!("{:_<22}", format!("unlogged{}", std::process::id()));
    let session_path = format!("/session/{session_id}");
    let requests = [
        (Method::POST, "/chat", Some(json!({ "query": QUESTION }))),
        (
            Method::POST,
            "/chat",
            Some(json!({"query": QUESTION, "session_id": session_id})),
        ),
        (Method::POST, "/session", None),
        (Method::GET, session_path.as_str(), None),
        (Method::DELETE, session_path.as_str(), None),
        (Method::GET, "/health/ready", None),
    ];
    for (n, (method, path, body)) in requests.into_iter().enumerate() {
        let request_id = format!("db-failure-{}-{n}", std::process::id());
        let mut request = client
            .request(method, format!("{}{path}", server.base_url))
            .header("x-request-id", &request_id);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let (status, body) = read(request.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
        let code = if path == "/health/ready" {
            &body["checks"]["postgres"]["status"]
        } else {
            &body["error"]["code"]
        };
        let want = if path == "/health/ready" {
            "down"
        } else {
            "database_unavailable"
        };
        assert_eq!(code, want, "{path}: {body}");
        let text = body.to_string();
        for leak in [
            database.as_str(),
            "3D000",
            "does not exist",
            "postgres@",
            "127.0.0.1",
            "5432",
        ] {
            assert!(!text.contains(leak), "{path} answered {leak:?}: {text}");
        }
        // The operator's log has what PostgreSQL said, on a line with this request's id.
        let log = support::logs::text();
        assert!(
            log.lines()
                .any(|line| line.contains(&request_id) && line.contains("does not exist")),
            "{path}: no log line with {request_id} and the database's error in:\n{log}"
        );
    }
    // Failed requests are logged with their path; a session's id is not part of it.
    let log = support::logs::text();
    assert!(log.contains("/session/{id}"), "{log}");
    for line in log.lines() {
        assert!(
            !line.contains(&session_id),
            "a log line holds a session id: {line}"
        );
    }
}

/// A first question that cannot be answered returns no session id, so the session it started
/// would belong to nobody: it is not kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_first_question_leaves_no_session_behind() {
    // No embedded index yet: chat answers 503 index_unavailable.
    let server = start(Options {
        args: UNLIMITED,
        ..Options::default()
    })
    .await;
    let api = Api::new(&server);
    let failed = api.chat(&json!({ "query": QUESTION })).await;
    assert_error(&failed, 503, "index_unavailable", None);
    let direct = Direct::sqlite(&server);
    assert_eq!(direct.count("sessions").await, 0);
    assert_eq!(direct.count("messages").await, 0);

    // A session the reader holds keeps the question even when the answer fails.
    let id = api.create().await;
    let failed = api
        .chat(&json!({"query": QUESTION, "session_id": id}))
        .await;
    assert_error(&failed, 503, "index_unavailable", None);
    assert_eq!(
        api.history(&id).await,
        [("user".to_owned(), QUESTION.to_owned())]
    );
}
