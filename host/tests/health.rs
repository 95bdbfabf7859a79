//! The health component in wasmtime, through the runner.

mod support;

use support::{start, Options};

#[tokio::test(flavor = "multi_thread")]
async fn liveness_answers_json_without_upstreams() {
    let server = start(Options::default()).await;
    let response = reqwest::get(format!("{}/health", server.base_url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["service"], "ai-book-rag");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_reports_keyless_mode_when_nothing_is_configured() {
    let server = start(Options::default()).await;
    let response = reqwest::get(format!("{}/health/ready", server.base_url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["mode"]["keyless"], true);
    assert_eq!(body["checks"]["embedded_index"]["status"], "up");
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_is_503_when_a_configured_dependency_is_down_and_never_shows_secrets() {
    // Nothing listens on port 9 of loopback: Qdrant is configured but down.
    let server = start(Options {
        variables: &[
            ("qdrant_url", "http://127.0.0.1:9"),
            ("qdrant_api_key", "qk-very-secret"),
            ("cohere_api_key", "ck-very-secret"),
        ],
        ..Options::default()
    })
    .await;
    let response = reqwest::get(format!("{}/health/ready", server.base_url))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let text = response.text().await.unwrap();
    assert!(!text.contains("very-secret"), "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["checks"]["qdrant"]["status"], "down");
    assert_eq!(body["mode"]["retrieval"], "vector");
}
