//! An OpenAI-compatible chat endpoint that streams slowly (a word every 150 ms), so a test can
//! act in the middle of an answer: leave, cancel, or stop the server.

use std::time::Duration;

use serde_json::json;

/// Serves `/v1/chat/completions` on a free loopback port and returns its base URL (`.../v1`).
/// The n-th call streams `words[n]` words `word0 word1 ...` then `[DONE]` (the last count
/// repeats for later calls).
pub async fn start(words: &[u32]) -> String {
    start_after(words, Duration::ZERO).await
}

/// As [`start`], each response's head sent only after `head_delay`.
pub async fn start_after(words: &[u32], head_delay: Duration) -> String {
    use axum::routing::post;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let counts = std::sync::Arc::new(words.to_vec());
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            let words = counts[call.min(counts.len() - 1)];
            async move {
                tokio::time::sleep(head_delay).await;
                answer(words).await
            }
        }),
    );
    async fn answer(words: u32) -> axum::response::Response {
        let chunks = futures::stream::unfold(0u32, move |i| async move {
            if i > words {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
            let data = if i == words {
                "[DONE]".to_owned()
            } else {
                json!({
                    "id": "chatcmpl-slow", "object": "chat.completion.chunk", "created": 1,
                    "model": "slow",
                    "choices": [{"index": 0, "delta": {"content": format!("word{i} ")},
                                 "finish_reason": null}],
                })
                .to_string()
            };
            Some((
                Ok::<_, std::convert::Infallible>(format!("data: {data}\n\n")),
                i + 1,
            ))
        });
        axum::response::Response::builder()
            .header("content-type", "text/event-stream")
            .body(axum::body::Body::from_stream(chunks))
            .unwrap()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}
