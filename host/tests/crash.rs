//! `kill -9` of the real runner binary while 50 streamed chats are mid-answer, then a restart on
//! the same data: every acknowledged user turn is stored, every answer left behind is marked
//! incomplete, the stores are intact, and the restarted server serves. Once on the embedded
//! SQLite file, once with sessions on a real PostgreSQL (skipped, with the reason printed, when
//! none answers on 127.0.0.1:5432, unless `TEST_REQUIRE_POSTGRES` is set).
//!
//! The model double streams the first words of each answer and then holds the response open, so
//! every chat is mid-stream when the runner dies.

mod support;

use std::path::Path;
use std::time::Duration;

use rag_core::sse::SseParser;
use serde_json::{json, Value};
use support::postgres::postgres_or_skip;
use support::runner::Runner;
use upstream_doubles::{Doubles, Endpoint, Fault};

const CHATS: usize = 50;
const QUESTION: &str = "Which ROS 2 command lists topics?";

/// A chat whose `sources` event has arrived, i.e. whose user turn the server acknowledged. The
/// response is kept so the connection stays open until the runner dies.
struct Acknowledged {
    session_id: String,
    _open: reqwest::Response,
}

/// Posts a streamed chat without a session id and reads until the first event.
async fn chat_until_acknowledged(client: reqwest::Client, base: String) -> Acknowledged {
    let mut response = client
        .post(format!("{base}/chat"))
        .json(&json!({"query": QUESTION, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let mut parser = SseParser::new();
    loop {
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("the stream ended before its first event");
        if let Some(event) = parser.feed(&chunk).into_iter().next() {
            assert_eq!(event.event.as_deref(), Some("sources"), "{}", event.data);
            let data: Value = serde_json::from_str(&event.data).unwrap();
            return Acknowledged {
                session_id: data["session_id"].as_str().unwrap().to_owned(),
                _open: response,
            };
        }
    }
}

/// Figures from one crash: how many chats were acknowledged, and how many answers were left
/// behind (all incomplete).
struct CrashFigures {
    acknowledged: usize,
    incomplete_answers: usize,
}

/// Runs the whole scenario; `database_url` puts sessions on PostgreSQL, else on SQLite.
async fn crash_mid_stream(database_url: Option<String>) -> CrashFigures {
    let doubles = Doubles::start().await;
    doubles.push_faults(Endpoint::OpenAiChat, Fault::StallStream, CHATS);
    let data_dir = support::data_dir_with_book_index().await;
    let mut variables = vec![
        ("openai_api_key", "test-openai-key".to_owned()),
        ("openai_base_url", doubles.openai_base_url()),
        ("upstream_timeout_ms", "60000".to_owned()),
    ];
    if let Some(url) = database_url {
        variables.push(("database_url", url));
    }

    let mut runner = Runner::start(data_dir.path(), &variables).await;
    let client = reqwest::Client::new();
    let chats: Vec<_> = (0..CHATS)
        .map(|_| tokio::spawn(chat_until_acknowledged(client.clone(), runner.base.clone())))
        .collect();
    let mut acknowledged = Vec::new();
    for chat in chats {
        acknowledged.push(
            tokio::time::timeout(Duration::from_secs(120), chat)
                .await
                .expect("a chat was not acknowledged within 120 s")
                .unwrap(),
        );
    }
    // Every chat reached the model, which holds every answer open: all 50 are mid-stream.
    assert_eq!(doubles.calls(Endpoint::OpenAiChat), CHATS);
    runner.kill_9();
    drop(runner);
    assert_sqlite_intact(&data_dir.path().join("default.db"));

    let runner = Runner::start(data_dir.path(), &variables).await;
    let mut incomplete_answers = 0;
    for chat in &acknowledged {
        let response = client
            .get(runner.url(&format!("/session/{}", chat.session_id)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "session {}", chat.session_id);
        let session: Value = response.json().await.unwrap();
        let messages = session["messages"].as_array().unwrap();
        let users: Vec<&Value> = messages.iter().filter(|m| m["role"] == "user").collect();
        assert_eq!(users.len(), 1, "{session}");
        assert_eq!(users[0]["content"], QUESTION, "{session}");
        for answer in messages.iter().filter(|m| m["role"] == "assistant") {
            assert_eq!(answer["status"], "incomplete", "{session}");
            incomplete_answers += 1;
        }
    }

    let health = client.get(runner.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    // A crashed session carries on: the next answer is stored complete after the incomplete one.
    let continued = &acknowledged[0].session_id;
    let follow_up = client
        .post(runner.url("/chat"))
        .json(&json!({"query": QUESTION, "session_id": continued}))
        .send()
        .await
        .unwrap();
    assert_eq!(follow_up.status(), 200, "{}", runner.log_text());
    let follow_up: Value = follow_up.json().await.unwrap();
    assert!(
        !follow_up["answer"].as_str().unwrap().is_empty(),
        "{follow_up}"
    );
    let session: Value = client
        .get(runner.url(&format!("/session/{continued}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let turns: Vec<(&str, &str)> = session["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        turns,
        [
            ("user", "complete"),
            ("assistant", "incomplete"),
            ("user", "complete"),
            ("assistant", "complete"),
        ],
        "{session}"
    );
    drop(runner);
    assert_sqlite_intact(&data_dir.path().join("default.db"));

    CrashFigures {
        acknowledged: acknowledged.len(),
        incomplete_answers,
    }
}

fn assert_sqlite_intact(path: &Path) {
    let db = rusqlite::Connection::open(path).unwrap();
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok", "{}", path.display());
    let broken_links: i64 = db
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(broken_links, 0, "{}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_on_sqlite_keeps_every_acknowledged_turn() {
    let figures = crash_mid_stream(None).await;
    println!(
        "sqlite: {} acknowledged, {} answers left incomplete",
        figures.acknowledged, figures.incomplete_answers
    );
    assert_eq!(figures.acknowledged, CHATS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_on_postgres_keeps_every_acknowledged_turn() {
    let Some(pg) = postgres_or_skip().await else {
        return;
    };
    let (admin, schema) = (&pg.admin, pg.name.clone());
    let figures = crash_mid_stream(Some(pg.url())).await;
    println!(
        "postgres: {} acknowledged, {} answers left incomplete",
        figures.acknowledged, figures.incomplete_answers
    );
    assert_eq!(figures.acknowledged, CHATS);

    // What the runner left in PostgreSQL: every message belongs to a stored session, and
    // besides the follow-up's answer every stored answer is incomplete.
    let count =
        |sql: String| async move { admin.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) };
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM {schema}.messages m WHERE NOT EXISTS \
             (SELECT 1 FROM {schema}.sessions s WHERE s.id = m.session_id)"
        ))
        .await,
        0
    );
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM {schema}.messages WHERE role = 'user'"
        ))
        .await,
        CHATS as i64 + 1
    );
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM {schema}.messages WHERE role = 'assistant' AND status = 'incomplete'"
        ))
        .await,
        figures.incomplete_answers as i64
    );
    // PostgreSQL's own checker (contrib `amcheck`): every index of the schema matches its
    // table, and no table page is corrupt.
    admin
        .batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        .await
        .expect("the amcheck extension (PostgreSQL contrib) is needed for the integrity check");
    let checked_indexes = admin
        .execute(
            "SELECT public.bt_index_check(c.oid, true) FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_am a ON a.oid = c.relam \
             WHERE n.nspname = $1 AND a.amname = 'btree'",
            &[&schema],
        )
        .await
        .unwrap();
    assert!(checked_indexes >= 3, "{checked_indexes} indexes checked");
    for table in ["sessions", "messages", "feedback"] {
        let corrupt = admin
            .query(
                &format!("SELECT * FROM public.verify_heapam('{schema}.{table}')"),
                &[],
            )
            .await
            .unwrap();
        assert!(
            corrupt.is_empty(),
            "{table}: {} corrupt tuples",
            corrupt.len()
        );
    }
    pg.drop_schema().await;
}
