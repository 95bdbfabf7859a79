//! The benchmark's ceiling: an axum server answering the same JSON as /health, with no
//! WebAssembly in the path.

#[tokio::main]
async fn main() {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(7870);
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(|| async {
            (
                [("content-type", "application/json")],
                r#"{"service":"ai-book-rag","status":"ok","version":"0.1.0"}"#,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    axum::serve(listener, app).await.unwrap();
}
