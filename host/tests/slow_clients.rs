//! Clients that send their requests slowly or not at all (slowloris) against the real runner
//! binary with `HEADER_READ_TIMEOUT_SECS=1`: each such connection is closed after the deadline
//! while other clients are served meanwhile, an idle keep-alive connection is closed after as
//! long, and an answer that streams for longer than the deadline is not cut.

mod support;

use std::time::{Duration, Instant};

use rag_core::sse::SseParser;
use serde_json::{json, Value};
use support::runner::Runner;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const HEADER_TIMEOUT: Duration = Duration::from_secs(1);

async fn runner(variables: &[(&str, String)]) -> (Runner, tempfile::TempDir) {
    runner_with_env(variables, &[]).await
}

async fn runner_with_env(
    variables: &[(&str, String)],
    env: &[(&str, &str)],
) -> (Runner, tempfile::TempDir) {
    let data = support::data_dir_with_book_index().await;
    let env = [&[("HEADER_READ_TIMEOUT_SECS", "1")], env].concat();
    let runner = Runner::start_with_env(data.path(), variables, &env).await;
    (runner, data)
}

async fn connect(runner: &Runner) -> TcpStream {
    TcpStream::connect(("127.0.0.1", runner.port))
        .await
        .unwrap()
}

/// Reads until the server closes the connection, which must happen within `limit`; returns
/// what it sent before closing.
async fn closed_within(connection: &mut TcpStream, limit: Duration) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, connection.read_to_end(&mut received)).await;
    assert!(
        read.is_ok(),
        "the connection is still open after {limit:?}: {}",
        String::from_utf8_lossy(&received)
    );
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn heads_that_never_finish_are_cut_off_while_others_are_served() {
    let (runner, _data) = runner(&[]).await;
    let started = Instant::now();
    // Many connections that send nothing, and one that sends half a request head.
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(connect(&runner).await);
    }
    let mut partial = connect(&runner).await;
    partial
        .write_all(b"POST /chat HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    // A connection that trickles a header a byte at a time never finishes it in time either.
    let mut trickling = connect(&runner).await;
    trickling
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for byte in b"X-Slow: ".iter().cycle().take(100) {
            if trickling.write_all(&[*byte]).await.is_err() {
                return (trickling, true);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (trickling, false)
    });

    // Meanwhile the server answers everyone else.
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let health = client.get(runner.url("/health")).send().await.unwrap();
        assert_eq!(health.status(), 200);
    }
    assert!(
        started.elapsed() < HEADER_TIMEOUT,
        "the checks took too long to mean anything"
    );

    let limit = HEADER_TIMEOUT * 4;
    for connection in &mut silent {
        let sent = closed_within(connection, limit).await;
        assert!(!sent.contains("200"), "{sent}");
    }
    let sent = closed_within(&mut partial, limit).await;
    assert!(!sent.contains("HTTP/1.1 2"), "{sent}");
    let (mut trickling, refused) = trickle.await.unwrap();
    if !refused {
        closed_within(&mut trickling, limit).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the trickling client was served for {:?}",
        started.elapsed()
    );
    let health = client.get(runner.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_deadline() {
    let (runner, _data) = runner(&[]).await;
    let mut connection = connect(&runner).await;
    connection
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    connection.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    // The rest of that answer, then nothing until the server closes the idle connection.
    closed_within(&mut connection, HEADER_TIMEOUT * 4).await;
}

#[tokio::test]
async fn an_answer_that_streams_longer_than_the_deadline_is_not_cut() {
    // 20 words at 150 ms each: about 3 s of streaming against a 1 s head deadline.
    let model = support::slow_model::start(&[20]).await;
    let (runner, _data) = runner(&[
        ("openai_api_key", "test-key".to_owned()),
        ("openai_base_url", model),
    ])
    .await;
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(runner.url("/chat"))
        .json(&json!({"query": "What does ZMP stand for?", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The whole body: a connection cut mid-answer fails here, or lacks the `done` event.
    let mut parser = SseParser::new();
    let mut events = parser.feed(&response.bytes().await.unwrap());
    events.extend(parser.finish());
    let last = events.last().expect("no events");
    assert_eq!(last.event.as_deref(), Some("done"), "{events:?}");
    let deltas: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("delta"))
        .map(|e| {
            let delta: Value = serde_json::from_str(&e.data).unwrap();
            delta["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(deltas.contains("word19"), "{deltas}");
    assert!(
        started.elapsed() > HEADER_TIMEOUT * 2,
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_metrics_listener_cuts_off_slow_heads_too() {
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_addr = metrics.local_addr().unwrap().to_string();
    drop(metrics);
    let (_runner, _data) = runner_with_env(&[], &[("METRICS_ADDR", &metrics_addr)]).await;
    let mut silent = TcpStream::connect(&metrics_addr).await.unwrap();
    let served = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    closed_within(&mut silent, HEADER_TIMEOUT * 4).await;
}
