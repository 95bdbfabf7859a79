//! Every body the doubles send, checked against the published API schemas in
//! `../shared/contracts`, and read back with rag-core's parsers.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rag_core::keywords;
use rag_core::retrieval::Passage;
use rag_core::upstream::cohere::{Cohere, InputType};
use rag_core::upstream::openai::{ChatMessage, ChatRole, ChatStream, OpenAi};
use rag_core::upstream::qdrant::{HybridHits, Layout, NewPoint, Qdrant};
use serde_json::{json, Value};
use upstream_doubles::{Doubles, Endpoint, Fault, EMBED_DIMS};

struct Contract {
    subset: Value,
}

impl Contract {
    fn load(api: &str) -> Option<Self> {
        let dir = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/contracts"
        ));
        if !dir.is_dir() {
            assert!(
                std::env::var_os("TEST_REQUIRE_SHARED").is_none(),
                "TEST_REQUIRE_SHARED is set but {} is missing",
                dir.display()
            );
            println!("skipping: ../shared/contracts not found");
            return None;
        }
        let text =
            std::fs::read_to_string(dir.join(format!("{api}-subset.normalized.json"))).unwrap();
        Some(Self {
            subset: serde_json::from_str(&text).unwrap(),
        })
    }

    fn assert_response(&self, operation: &str, status: &str, body: &Value) {
        let responses = &self.subset["x-contract-index"][operation]["responses"];
        let pointer = responses[status]["application/json"]
            .as_str()
            .or_else(|| {
                responses["4XX"]["application/json"]
                    .as_str()
                    .filter(|_| status.starts_with('4'))
            })
            .or_else(|| responses["default"]["application/json"].as_str())
            .unwrap_or_else(|| panic!("no schema for {operation} {status}"));
        self.assert_schema(pointer, body);
    }

    fn assert_schema(&self, pointer: &str, body: &Value) {
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": pointer,
            "components": self.subset["components"],
        });
        let validator = jsonschema::validator_for(&root).expect("schema compiles");
        let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{pointer} rejects {body}: {errors:#?}");
    }
}

async fn send(request: http::Request<Vec<u8>>) -> http::Response<Vec<u8>> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let (parts, body) = request.into_parts();
    let response = client
        .request(http::Request::from_parts(
            parts,
            Full::new(Bytes::from(body)),
        ))
        .await
        .expect("the doubles answer");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    http::Response::from_parts(parts, bytes)
}

fn json_of(response: &http::Response<Vec<u8>>) -> Value {
    serde_json::from_slice(response.body())
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(response.body())))
}

fn cohere(doubles: &Doubles, key: &str) -> Cohere {
    Cohere {
        base_url: doubles.base_url(),
        api_key: key.into(),
        embed_model: "embed-v4.0".into(),
        rerank_model: Some("rerank-v3.5".into()),
    }
}

fn passage(page: &str, text: &str) -> Passage {
    Passage {
        url: format!("https://book/docs/{page}#intro"),
        page_url: format!("https://book/docs/{page}"),
        title: page.into(),
        heading: "Intro".into(),
        text: text.into(),
        score: 0.0,
    }
}

#[tokio::test]
async fn cohere_double_follows_the_schema() {
    let Some(contract) = Contract::load("cohere") else {
        return;
    };
    let doubles = Doubles::start().await;
    let co = cohere(&doubles, "key");

    let texts = [
        "ROS 2 nodes communicate over topics",
        "Humanoid legs use inverse kinematics",
    ];
    let response = send(co.embed_request(&texts, InputType::SearchDocument)).await;
    assert_eq!(response.status(), 200);
    contract.assert_response("POST /v2/embed", "200", &json_of(&response));
    let vectors = Cohere::parse_embed_response(&response, 2).unwrap();
    assert_eq!(vectors[0].len(), EMBED_DIMS);
    assert_eq!(vectors[0], Doubles::embed(texts[0]));

    let rerank = send(
        co.rerank_request("how do nodes communicate", &texts, 2)
            .unwrap(),
    )
    .await;
    contract.assert_response("POST /v2/rerank", "200", &json_of(&rerank));
    let results = Cohere::parse_rerank_response(&rerank, 2).unwrap();
    assert_eq!(results[0].index, 0, "the related document ranks first");

    let unauthorised =
        send(cohere(&doubles, "").embed_request(&["x"], InputType::SearchQuery)).await;
    assert_eq!(unauthorised.status(), 401);
    contract.assert_response("POST /v2/embed", "401", &json_of(&unauthorised));

    doubles.push_fault(Endpoint::CohereEmbed, Fault::rate_limited(3));
    let limited = send(co.embed_request(&["x"], InputType::SearchQuery)).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "3");
    contract.assert_response("POST /v2/embed", "429", &json_of(&limited));
    let error = Cohere::parse_embed_response(&limited, 1).unwrap_err();
    assert!(error.is_retryable());
    assert_eq!(error.retry_after, Some(Duration::from_secs(3)));

    doubles.push_fault(Endpoint::CohereRerank, Fault::server_error());
    let failed = send(co.rerank_request("q", &["d"], 1).unwrap()).await;
    contract.assert_response("POST /v2/rerank", "500", &json_of(&failed));

    assert_eq!(doubles.calls(Endpoint::CohereEmbed), 3);
    assert_eq!(doubles.calls(Endpoint::CohereRerank), 2);
}

#[tokio::test]
async fn qdrant_double_follows_the_schema() {
    let Some(contract) = Contract::load("qdrant") else {
        return;
    };
    let doubles = Doubles::start().await;
    let q = Qdrant {
        url: doubles.base_url(),
        api_key: Some("qk".into()),
        collection: "book".into(),
    };
    let ops = |path: &str| {
        format!(
            "{} /collections/{{collection_name}}{path}",
            if path.is_empty() || path == "/points" || path == "/index" {
                "PUT"
            } else {
                "POST"
            }
        )
    };

    let exists = send(q.exists_request()).await;
    contract.assert_response(
        "GET /collections/{collection_name}/exists",
        "200",
        &json_of(&exists),
    );
    assert!(!Qdrant::parse_exists_response(&exists).unwrap());

    let missing = send(q.query_request(&[0.0; EMBED_DIMS], 3, 0.0)).await;
    assert_eq!(missing.status(), 404);
    contract.assert_response(&ops("/points/query"), "404", &json_of(&missing));

    let created = send(q.create_collection_request(EMBED_DIMS)).await;
    contract.assert_response(&ops(""), "200", &json_of(&created));
    Qdrant::check_ok(&created).unwrap();
    for field in rag_core::upstream::qdrant::INDEXED_FIELDS {
        let indexed = send(q.create_index_request(field)).await;
        contract.assert_response(&ops("/index"), "200", &json_of(&indexed));
    }
    assert_eq!(doubles.indexed_fields("book"), ["url", "page_url"]);

    let texts = [
        ("ros", "ROS 2 nodes communicate over topics and services"),
        ("legs", "Humanoid legs use inverse kinematics for walking"),
        ("sim", "Gazebo simulates robots with physics engines"),
    ];
    let points: Vec<NewPoint> = texts
        .iter()
        .enumerate()
        .map(|(i, (page, text))| NewPoint {
            id: format!("00000000-0000-4000-8000-00000000000{i}"),
            vector: Doubles::embed(text),
            sparse: keywords::sparse_vector(text),
            passage: passage(page, text),
            hash: format!("h{i}"),
        })
        .collect();
    let info = send(q.collection_info_request()).await;
    contract.assert_response("GET /collections/{collection_name}", "200", &json_of(&info));
    assert_eq!(Qdrant::parse_layout(&info).unwrap(), Layout::Hybrid);
    let upserted = send(q.upsert_request(&points, Layout::Hybrid)).await;
    contract.assert_response(&ops("/points"), "200", &json_of(&upserted));
    assert_eq!(doubles.point_count("book"), 3);

    let question = "how do humanoid legs walk";
    let hybrid = send(q.hybrid_query_request(
        &Doubles::embed(question),
        &keywords::query_sparse_vector(question),
        2,
        0.1,
    ))
    .await;
    contract.assert_response(&ops("/points/query"), "200", &json_of(&hybrid));
    let HybridHits::Hits(hits) = Qdrant::parse_hybrid_query_response(&hybrid).unwrap() else {
        panic!("the collection has named vectors");
    };
    assert_eq!(hits[0].title, "legs", "dense and keyword rankings agree");
    assert!(
        (hits[0].score - 1.0).abs() < 1e-6,
        "RRF: 1/2 + 1/2 for first in both lists"
    );
    let off_topic = send(q.hybrid_query_request(
        &Doubles::embed("photosynthesis chlorophyll"),
        &keywords::query_sparse_vector("photosynthesis chlorophyll"),
        2,
        0.9,
    ))
    .await;
    assert_eq!(
        Qdrant::parse_hybrid_query_response(&off_topic).unwrap(),
        HybridHits::Hits(vec![]),
        "nothing passes the similarity threshold, so keywords cannot bring anything in"
    );
    let dense_only_query = send(q.query_request(&Doubles::embed("x"), 1, 0.0)).await;
    assert_eq!(
        dense_only_query.status(),
        400,
        "a named-vector collection needs `using`"
    );

    let first = send(q.scroll_request(2, None)).await;
    contract.assert_response(&ops("/points/scroll"), "200", &json_of(&first));
    let page = Qdrant::parse_scroll_response(&first).unwrap();
    assert_eq!(page.points.len(), 2);
    assert_eq!(page.points[0].hash, "h0");
    let rest =
        Qdrant::parse_scroll_response(&send(q.scroll_request(2, page.next_offset.as_ref())).await)
            .unwrap();
    assert_eq!(rest.points.len(), 1);
    assert_eq!(rest.next_offset, None);

    let deleted = send(q.delete_pages_request(&["https://book/docs/legs"])).await;
    contract.assert_response(&ops("/points/delete"), "200", &json_of(&deleted));
    assert_eq!(doubles.point_count("book"), 2);
    let by_id = send(q.delete_points_request(&[page.points[0].id.clone()])).await;
    Qdrant::check_ok(&by_id).unwrap();
    assert_eq!(doubles.point_count("book"), 1);

    let wrong_size = send(q.query_request(&[1.0, 0.0], 1, 0.0)).await;
    assert_eq!(wrong_size.status(), 400);
    contract.assert_response(&ops("/points/query"), "400", &json_of(&wrong_size));
    doubles.push_fault(
        Endpoint::QdrantQuery,
        Fault::Status {
            status: 503,
            retry_after: None,
        },
    );
    let unavailable = send(q.query_request(&Doubles::embed("x"), 1, 0.0)).await;
    contract.assert_response(&ops("/points/query"), "503", &json_of(&unavailable));
    assert!(Qdrant::parse_query_response(&unavailable)
        .unwrap_err()
        .is_retryable());
}

/// A collection created before hybrid retrieval: one unnamed vector, no keyword vectors.
#[tokio::test]
async fn qdrant_double_serves_dense_only_collections() {
    let Some(contract) = Contract::load("qdrant") else {
        return;
    };
    let doubles = Doubles::start().await;
    let q = Qdrant {
        url: doubles.base_url(),
        api_key: None,
        collection: "legacy".into(),
    };
    let legacy = serde_json::json!({"vectors": {"size": EMBED_DIMS, "distance": "Cosine"}});
    let created = send(
        http::Request::put(format!("{}/collections/legacy", doubles.base_url()))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&legacy).unwrap())
            .unwrap(),
    )
    .await;
    assert_eq!(created.status(), 200);
    let info = send(q.collection_info_request()).await;
    contract.assert_response("GET /collections/{collection_name}", "200", &json_of(&info));
    assert_eq!(Qdrant::parse_layout(&info).unwrap(), Layout::DenseOnly);
    let text = "Humanoid legs use inverse kinematics for walking";
    let point = NewPoint {
        id: "00000000-0000-4000-8000-000000000001".into(),
        vector: Doubles::embed(text),
        sparse: keywords::sparse_vector(text),
        passage: passage("legs", text),
        hash: "h".into(),
    };
    let hybrid_write = send(q.upsert_request(std::slice::from_ref(&point), Layout::Hybrid)).await;
    assert_eq!(hybrid_write.status(), 400, "no named vectors here");
    let upserted = send(q.upsert_request(&[point], Layout::DenseOnly)).await;
    assert_eq!(upserted.status(), 200);

    let question = "how do legs walk";
    let hybrid = send(q.hybrid_query_request(
        &Doubles::embed(question),
        &keywords::query_sparse_vector(question),
        2,
        0.1,
    ))
    .await;
    contract.assert_response(
        "POST /collections/{collection_name}/points/query",
        "400",
        &json_of(&hybrid),
    );
    assert_eq!(
        Qdrant::parse_hybrid_query_response(&hybrid).unwrap(),
        HybridHits::DenseOnlyCollection
    );
    let dense = send(q.query_request(&Doubles::embed(question), 2, 0.1)).await;
    assert_eq!(
        Qdrant::parse_query_response(&dense).unwrap()[0].title,
        "legs"
    );
}

fn openai(doubles: &Doubles) -> OpenAi {
    OpenAi {
        base_url: doubles.openai_base_url(),
        api_key: "sk-double".into(),
        model: "gpt-4o-mini".into(),
    }
}

fn prompt() -> Vec<ChatMessage> {
    let passages = [passage(
        "ros",
        "A node is a process that performs computation. Nodes talk over topics.",
    )];
    rag_core::prompt::build_messages(&rag_core::prompt::PromptInput {
        question: "What is a node?",
        passages: &passages,
        selected_text: None,
        history: &[],
    })
}

#[tokio::test]
async fn openai_double_answers_from_the_context() {
    let Some(contract) = Contract::load("openai") else {
        return;
    };
    let doubles = Doubles::start().await;
    let response = send(openai(&doubles).chat_request(&prompt(), false, 0.0)).await;
    assert_eq!(response.status(), 200);
    let body = json_of(&response);
    contract.assert_response("POST /chat/completions", "200", &body);
    assert!(
        body["choices"][0]["message"]["refusal"].is_null()
            && body["choices"][0]["logprobs"].is_null()
    );
    let completion = OpenAi::parse_chat_response(&response).unwrap();
    assert!(
        completion
            .content
            .contains("A node is a process that performs computation."),
        "{}",
        completion.content
    );
    assert!(completion.content.contains("[1]"));
    let sent = doubles.last_request(Endpoint::OpenAiChat).unwrap();
    assert_eq!(sent["messages"][0]["role"], "system");

    let no_context =
        send(openai(&doubles).chat_request(&[ChatMessage::new(ChatRole::User, "hi")], false, 0.0))
            .await;
    assert_eq!(
        OpenAi::parse_chat_response(&no_context).unwrap().content,
        upstream_doubles::NO_CONTEXT_ANSWER
    );
}

#[tokio::test]
async fn openai_double_streams_schema_valid_chunks() {
    let Some(contract) = Contract::load("openai") else {
        return;
    };
    let stream_schema = contract.subset["x-contract-index"]["extra-schemas"]
        ["CreateChatCompletionStreamResponse"]
        .as_str()
        .unwrap()
        .to_owned();
    let doubles = Doubles::start().await;
    let response = send(openai(&doubles).chat_request(&prompt(), true, 0.0)).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = rag_core::sse::SseParser::new().feed(response.body());
    assert_eq!(events.last().unwrap().data, "[DONE]");
    for event in &events[..events.len() - 1] {
        contract.assert_schema(&stream_schema, &serde_json::from_str(&event.data).unwrap());
    }
    let mut decoder = ChatStream::new();
    let mut chunks = decoder.feed(response.body()).unwrap();
    chunks.extend(decoder.finish().unwrap());
    let text: String = chunks.iter().map(|c| c.delta.as_str()).collect();
    assert!(
        text.starts_with("According to the book: A node is a process") && text.ends_with("[1]"),
        "{text}"
    );
    assert!(
        chunks.iter().any(|c| c.usage.is_some()),
        "usage chunk requested via stream_options"
    );

    doubles.push_fault(Endpoint::OpenAiChat, Fault::CutStream);
    let cut = send(openai(&doubles).chat_request(&prompt(), true, 0.0)).await;
    let mut decoder = ChatStream::new();
    decoder.feed(cut.body()).unwrap();
    assert!(
        decoder.finish().is_err(),
        "a stream without [DONE] is an error"
    );

    doubles.push_fault(Endpoint::OpenAiChat, Fault::rate_limited(1));
    let limited = send(openai(&doubles).chat_request(&prompt(), true, 0.0)).await;
    assert_eq!(limited.status(), 429);
    contract.assert_response("POST /chat/completions", "429", &json_of(&limited));
}

#[tokio::test]
async fn faults_are_applied_in_order_and_counted() {
    let doubles = Doubles::start().await;
    let co = cohere(&doubles, "key");
    doubles.push_faults(Endpoint::CohereEmbed, Fault::server_error(), 2);
    doubles.push_fault(
        Endpoint::CohereEmbed,
        Fault::Delay(Duration::from_millis(200)),
    );
    doubles.push_fault(Endpoint::CohereEmbed, Fault::MalformedBody);
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(
            send(co.embed_request(&["x"], InputType::SearchQuery))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [500, 500]);
    let started = Instant::now();
    let delayed = send(co.embed_request(&["x"], InputType::SearchQuery)).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(delayed.status(), 200);
    let malformed = send(co.embed_request(&["x"], InputType::SearchQuery)).await;
    assert!(!Cohere::parse_embed_response(&malformed, 1)
        .unwrap_err()
        .is_retryable());
    assert_eq!(
        send(co.embed_request(&["x"], InputType::SearchQuery))
            .await
            .status(),
        200
    );
    assert_eq!(doubles.calls(Endpoint::CohereEmbed), 5);
    assert_eq!(doubles.calls(Endpoint::OpenAiChat), 0);
}

/// Arrival time of each body frame of a streamed chat answer, from when the headers came.
async fn frame_times(doubles: &Doubles) -> (Duration, Vec<(Duration, Bytes)>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let (parts, body) = openai(doubles)
        .chat_request(&prompt(), true, 0.0)
        .into_parts();
    let sent = Instant::now();
    let response = client
        .request(http::Request::from_parts(
            parts,
            Full::new(Bytes::from(body)),
        ))
        .await
        .unwrap();
    let headers_after = sent.elapsed();
    let headers_at = Instant::now();
    let mut body = response.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            frames.push((headers_at.elapsed(), data));
        }
    }
    (headers_after, frames)
}

#[tokio::test]
async fn latency_and_stream_pacing_apply_to_every_call() {
    let doubles = Doubles::start().await;
    let (_, unpaced) = frame_times(&doubles).await;
    let unpaced: Vec<u8> = unpaced.iter().flat_map(|(_, b)| b.to_vec()).collect();

    doubles.set_latency(Endpoint::CohereEmbed, Duration::from_millis(150));
    let co = cohere(&doubles, "key");
    for _ in 0..2 {
        let started = Instant::now();
        let response = send(co.embed_request(&["x"], InputType::SearchQuery)).await;
        assert_eq!(response.status(), 200);
        assert!(started.elapsed() >= Duration::from_millis(150));
    }

    doubles.set_latency(Endpoint::OpenAiChat, Duration::from_millis(80));
    doubles.set_stream_pacing(Duration::from_millis(120), Duration::from_millis(40));
    let (headers_after, frames) = frame_times(&doubles).await;
    assert!(
        headers_after >= Duration::from_millis(80),
        "{headers_after:?}"
    );
    let joined: Vec<u8> = frames.iter().flat_map(|(_, b)| b.to_vec()).collect();
    assert_eq!(joined, unpaced, "pacing changes when bytes come, not which");
    let content: Vec<Duration> = frames
        .iter()
        .filter(|(_, b)| {
            let text = String::from_utf8_lossy(b);
            text.contains("\"content\":") && !text.contains("\"content\":\"\"")
        })
        .map(|(at, _)| *at)
        .collect();
    assert!(content.len() >= 5, "{} content deltas", content.len());
    assert!(content[0] >= Duration::from_millis(120), "{:?}", content[0]);
    for pair in content.windows(2) {
        // Timers may fire late, never early.
        assert!(pair[1] - pair[0] >= Duration::from_millis(39), "{pair:?}");
    }
    let last = frames.last().unwrap();
    assert!(String::from_utf8_lossy(&last.1).contains("[DONE]"));
}

#[tokio::test]
async fn serve_doubles_binary_serves_at_the_flags_latencies() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_serve-doubles"))
        .args([
            "--embed-ms",
            "100",
            "--first-token-ms",
            "60",
            "--token-ms",
            "5",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("serve-doubles prints its address")
        .unwrap()
        .unwrap();
    let base_url = line.strip_prefix("listening ").expect(&line).to_owned();
    assert!(base_url.starts_with("http://127.0.0.1:"), "{line}");
    let co = Cohere {
        base_url: base_url.clone(),
        ..cohere(&Doubles::start().await, "key")
    };
    let started = Instant::now();
    let embedded = send(co.embed_request(&["x"], InputType::SearchQuery)).await;
    assert_eq!(embedded.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(100));
    let llm = OpenAi {
        base_url: format!("{base_url}/v1"),
        ..openai(&Doubles::start().await)
    };
    let started = Instant::now();
    let streamed = send(llm.chat_request(&prompt(), true, 0.0)).await;
    assert!(started.elapsed() >= Duration::from_millis(60));
    assert!(String::from_utf8_lossy(streamed.body()).ends_with("data: [DONE]\n\n"));

    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_serve-doubles"))
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success(), "only loopback addresses");
    child.kill().await.unwrap();
}

/// The status, headers and body bytes that arrived, and whether the body broke off.
async fn send_raw(
    request: http::Request<Vec<u8>>,
) -> Result<(http::response::Parts, Vec<u8>, bool), hyper_util::client::legacy::Error> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let (parts, body) = request.into_parts();
    let response = client
        .request(http::Request::from_parts(
            parts,
            Full::new(Bytes::from(body)),
        ))
        .await?;
    let (parts, mut body) = response.into_parts();
    let mut bytes = Vec::new();
    let mut broke = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => bytes.extend(frame.into_data().unwrap_or_default()),
            Err(_) => {
                broke = true;
                break;
            }
        }
    }
    Ok((parts, bytes, broke))
}

#[tokio::test]
async fn connection_faults_show_on_the_wire() {
    let doubles = Doubles::start().await;
    let co = cohere(&doubles, "key");
    let embed = || co.embed_request(&["x"], InputType::SearchQuery);
    let (_, whole, broke) = send_raw(embed()).await.unwrap();
    assert!(!broke);

    doubles.push_fault(Endpoint::CohereEmbed, Fault::ResetBeforeHeaders);
    let reset = send_raw(embed()).await;
    assert!(
        reset.is_err(),
        "no response at all: {:?}",
        reset.map(|r| r.0)
    );

    doubles.push_fault(Endpoint::CohereEmbed, Fault::ResetAfterHeaders);
    let (parts, part, broke) = send_raw(embed()).await.unwrap();
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["content-type"], "application/json");
    assert!(broke, "the body breaks off");
    assert_eq!(part, whole[..whole.len() / 2], "half the body came first");

    doubles.push_fault(Endpoint::CohereEmbed, Fault::WrongContentType);
    let html = send(embed()).await;
    assert_eq!(html.status(), 200);
    assert!(html.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(!Cohere::parse_embed_response(&html, 1)
        .unwrap_err()
        .is_retryable());

    let llm = openai(&doubles);
    doubles.push_fault(Endpoint::OpenAiChat, Fault::ResetAfterHeaders);
    let (parts, part, broke) = send_raw(llm.chat_request(&prompt(), true, 0.0))
        .await
        .unwrap();
    assert_eq!(parts.headers["content-type"], "text/event-stream");
    assert!(broke);
    let mut decoder = ChatStream::new();
    let chunks = decoder.feed(&part).unwrap();
    assert!(
        chunks.iter().any(|c| !c.delta.is_empty()),
        "tokens came before the reset"
    );
    assert!(!decoder.is_done());

    doubles.push_fault(Endpoint::OpenAiChat, Fault::MalformedBody);
    let malformed = send(llm.chat_request(&prompt(), true, 0.0)).await;
    assert_eq!(malformed.headers()["content-type"], "text/event-stream");
    let text = String::from_utf8_lossy(malformed.body()).into_owned();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let mut decoder = ChatStream::new();
    let before = decoder.feed(malformed.body()).unwrap();
    assert!(before.iter().any(|c| !c.delta.is_empty()), "deltas first");
    let error = decoder.finish().unwrap_err();
    assert!(!error.is_retryable(), "{error}");

    // The server itself is unharmed: the next calls are answered normally.
    assert_eq!(send(embed()).await.status(), 200);
    let streamed = send(llm.chat_request(&prompt(), true, 0.0)).await;
    assert!(String::from_utf8_lossy(streamed.body()).ends_with("data: [DONE]\n\n"));
    assert_eq!(doubles.calls(Endpoint::CohereEmbed), 5);
    assert_eq!(doubles.calls(Endpoint::OpenAiChat), 3);
}
