//! The health component in wasmtime, through the runner.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

async fn get_json(url: String) -> (u16, serde_json::Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn ask(base_url: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{base_url}/chat"))
        .json(&serde_json::json!({"query": "What does ZMP stand for?"}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

const BOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../book/docs");

/// Indexes the sample book into a data folder, as `host ingest --target sqlite` does.
async fn ingest_book(data_dir: &Path) {
    let mut options = host::ingest::Options::new(BOOK, data_dir);
    options.target = host::ingest::Target::Sqlite;
    let settings = rag_core::config::Settings::from_lookup(|_| None).unwrap();
    let report = host::ingest::ingest(&options, &settings).await.unwrap();
    assert!(report.summary.chunks > 0, "no sample book under {BOOK}");
}

/// Readiness in keyless mode says what chat will do: down (503) while the embedded index has
/// not been built, up once it holds the book.
#[tokio::test(flavor = "multi_thread")]
async fn keyless_readiness_follows_the_embedded_index() {
    let server = start(Options::default()).await;
    let ready = format!("{}/health/ready", server.base_url);
    let (status, body) = get_json(ready.clone()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["mode"]["keyless"], true);
    let index = &body["checks"]["embedded_index"];
    assert_eq!(index["status"], "down", "{body}");
    assert!(
        index["detail"].as_str().unwrap().contains("host ingest"),
        "{body}"
    );
    let (status, chat) = ask(&server.base_url).await;
    assert_eq!(
        (status, &chat["error"]["code"]),
        (503, &"index_unavailable".into())
    );

    ingest_book(server.data_dir.path()).await;
    let (status, body) = get_json(ready).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["embedded_index"]["status"], "up");
    let (status, chat) = ask(&server.base_url).await;
    assert_eq!(status, 200, "{chat}");
}

/// `host serve` indexes DOCS_DIR when the index is empty; pointed at a folder without docs it
/// serves with an empty index, and readiness says so until `host ingest` fills it.
#[tokio::test(flavor = "multi_thread")]
async fn served_with_an_empty_docs_folder_readiness_is_503_until_ingest() {
    let empty_docs = tempfile::tempdir().unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let manifest = support::workspace().join("spin.toml");
    let env = |command: &mut Command| {
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SPIN_MANIFEST", &manifest)
            .env("DATA_DIR", data_dir.path())
            .env(
                "COMPILE_CACHE_DIR",
                support::workspace().join("target/test-compile-cache"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    };
    let mut serve = Command::new(env!("CARGO_BIN_EXE_host"));
    env(&mut serve);
    serve
        .arg("serve")
        .env("PORT", port.to_string())
        .env("BIND_ADDR", "127.0.0.1")
        .env("DOCS_DIR", empty_docs.path())
        .env("RATE_LIMIT_PER_MINUTE", "0");
    let runner = Runner(serve.spawn().unwrap());
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(response) = reqwest::get(format!("{base}/health")).await {
            if response.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the runner did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (status, body) = get_json(format!("{base}/health/ready")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["embedded_index"]["status"], "down", "{body}");
    let detail = body["checks"]["embedded_index"]["detail"].as_str().unwrap();
    assert!(detail.contains("host ingest"), "{detail}");
    let (status, chat) = ask(&base).await;
    assert_eq!(status, 503, "{chat}");
    assert_eq!(chat["error"]["code"], "index_unavailable");

    let mut ingest = Command::new(env!("CARGO_BIN_EXE_host"));
    env(&mut ingest);
    ingest.args(["ingest", BOOK, "--target", "sqlite"]);
    let status = tokio::task::spawn_blocking(move || ingest.status().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "host ingest failed");

    let (status, body) = get_json(format!("{base}/health/ready")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["embedded_index"]["status"], "up");
    let (status, chat) = ask(&base).await;
    assert_eq!(status, 200, "{chat}");
    drop(runner);
}

/// Stops the runner however the test ends.
struct Runner(Child);

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let detail = body["checks"]["qdrant"]["detail"].as_str().unwrap();
    assert!(detail.starts_with("unreachable:"), "{detail}");
    assert_eq!(body["mode"]["retrieval"], "vector");
}

/// Readiness probes Qdrant as chat uses it: the collection, with the configured key (Qdrant's
/// `/readyz` needs no key). Each failure says which check failed.
#[tokio::test(flavor = "multi_thread")]
async fn qdrant_readiness_checks_the_key_and_the_collection() {
    let doubles = upstream_doubles::Doubles::start().await;
    doubles.require_qdrant_api_key("qk-right-key");
    let base = doubles.base_url();
    let qdrant_check = |api_key: Option<&'static str>| {
        let base = base.clone();
        async move {
            let mut variables = vec![("qdrant_url", base.as_str())];
            variables.extend(api_key.map(|key| ("qdrant_api_key", key)));
            let server = start(Options {
                variables: &variables,
                ..Options::default()
            })
            .await;
            let response = reqwest::get(format!("{}/health/ready", server.base_url))
                .await
                .unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            assert!(!text.contains("qk-"), "a key in the report: {text}");
            let body: serde_json::Value = serde_json::from_str(&text).unwrap();
            (status, body["checks"]["qdrant"].clone())
        }
    };

    for key in [Some("qk-wrong-key"), None] {
        let (status, qdrant) = qdrant_check(key).await;
        assert_eq!(status, 503, "{qdrant}");
        assert_eq!(qdrant["status"], "down", "{qdrant}");
        let detail = qdrant["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("auth:") && detail.contains("QDRANT_API_KEY"),
            "{detail}"
        );
    }

    let (status, qdrant) = qdrant_check(Some("qk-right-key")).await;
    assert_eq!(status, 503);
    let detail = qdrant["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("missing collection:") && detail.contains("host ingest"),
        "{detail}"
    );

    let created = reqwest::Client::new()
        .put(format!("{base}/collections/book"))
        .header("api-key", "qk-right-key")
        .json(&serde_json::json!({"vectors": {"size": 4, "distance": "Cosine"}}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    let (_, qdrant) = qdrant_check(Some("qk-right-key")).await;
    assert_eq!(qdrant["status"], "up", "{qdrant}");
    assert!(qdrant.get("detail").is_none(), "{qdrant}");
    let framing = doubles
        .last_framing(upstream_doubles::Endpoint::QdrantCollectionInfo)
        .unwrap();
    assert!(
        !framing.chunked,
        "a bodyless probe sent chunked: {framing:?}"
    );
}
