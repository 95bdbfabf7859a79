//! The chat component in wasmtime, through the runner: against the upstream doubles (Cohere,
//! Qdrant, OpenAI-compatible) and in the keyless mode over the sample book.

mod support;

use std::time::{Duration, Instant};

use rag_core::extractive::{EXTRACTIVE_LABEL, REFUSAL};
use rag_core::retrieval::Passage;
use rag_core::sse::{SseEvent, SseParser};
use rag_core::upstream::qdrant::{Layout, NewPoint, Qdrant};
use serde_json::{json, Value};
use support::{start, Options, Server};
use upstream_doubles::{Doubles, Endpoint, Fault};

const ZMP_QUESTION: &str = "What is the zero moment point of a walking robot?";

/// Book passages the doubles' Qdrant is seeded with; the first answers [`ZMP_QUESTION`].
fn passages() -> Vec<Passage> {
    let passage = |slug: &str, title: &str, heading: &str, text: &str| Passage {
        url: format!(
            "https://book.example/docs/{slug}#{}",
            heading.to_lowercase().replace(' ', "-")
        ),
        page_url: format!("https://book.example/docs/{slug}"),
        title: title.into(),
        heading: heading.into(),
        text: text.into(),
        score: 0.0,
    };
    vec![
        passage(
            "locomotion/balance",
            "Locomotion and balance",
            "Zero moment point",
            "The zero moment point is the point on the ground where the moment of the walking robot's contact forces vanishes. Keeping it inside the support polygon keeps the robot balanced.",
        ),
        passage(
            "ros2/basics",
            "ROS 2 basics",
            "Topics",
            "Nodes publish messages on named topics. Run ros2 topic list to list the active topics.",
        ),
        passage(
            "sensors",
            "Sensors",
            "IMU",
            "An inertial measurement unit combines accelerometers and gyroscopes to estimate orientation.",
        ),
        passage(
            "kinematics",
            "Kinematics",
            "Inverse kinematics",
            "Inverse kinematics finds the joint angles that place an end effector at a desired pose.",
        ),
    ]
}

async fn send_core_request(request: http::Request<Vec<u8>>) -> reqwest::Response {
    let client = reqwest::Client::new();
    let mut builder = client.request(request.method().clone(), request.uri().to_string());
    for (name, value) in request.headers() {
        builder = builder.header(name, value);
    }
    builder.body(request.into_body()).send().await.unwrap()
}

/// Creates the `book` collection on the doubles and stores [`passages`] with the doubles'
/// embeddings, through the same requests ingestion sends.
async fn seed_qdrant(doubles: &Doubles) {
    let qdrant = Qdrant {
        url: doubles.base_url(),
        api_key: Some("test-qdrant-key".into()),
        collection: "book".into(),
    };
    let created =
        send_core_request(qdrant.create_collection_request(upstream_doubles::EMBED_DIMS)).await;
    assert!(
        created.status().is_success(),
        "{}",
        created.text().await.unwrap()
    );
    let points: Vec<NewPoint> = passages()
        .into_iter()
        .enumerate()
        .map(|(i, passage)| NewPoint {
            id: format!("00000000-0000-4000-8000-{:012}", i + 1),
            vector: Doubles::embed(&passage.text),
            sparse: rag_core::keywords::sparse_vector(&format!(
                "{} — {}\n\n{}",
                passage.title, passage.heading, passage.text
            )),
            hash: format!("hash-{i}"),
            passage,
        })
        .collect();
    let upserted = send_core_request(qdrant.upsert_request(&points, Layout::Hybrid)).await;
    assert!(
        upserted.status().is_success(),
        "{}",
        upserted.text().await.unwrap()
    );
    assert_eq!(doubles.point_count("book"), points.len());
}

/// Variables pointing every upstream at the doubles, plus `extra` (later entries win).
fn upstream_variables(doubles: &Doubles, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut variables = vec![
        ("openai_api_key".to_owned(), "test-openai-key".to_owned()),
        ("openai_base_url".to_owned(), doubles.openai_base_url()),
        ("cohere_api_key".to_owned(), "test-cohere-key".to_owned()),
        ("cohere_base_url".to_owned(), doubles.base_url()),
        ("qdrant_url".to_owned(), doubles.base_url()),
        ("qdrant_api_key".to_owned(), "test-qdrant-key".to_owned()),
        ("upstream_timeout_ms".to_owned(), "5000".to_owned()),
    ];
    for (name, value) in extra {
        variables.retain(|(existing, _)| existing != name);
        variables.push(((*name).to_owned(), (*value).to_owned()));
    }
    variables
}

async fn start_with(
    variables: &[(String, String)],
    data_dir: Option<tempfile::TempDir>,
    args: &[&str],
) -> Server {
    let pairs: Vec<(&str, &str)> = variables
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    start(Options {
        variables: &pairs,
        data_dir,
        args,
        ..Options::default()
    })
    .await
}

/// A runner wired to fresh doubles whose Qdrant holds [`passages`].
async fn start_with_doubles(extra: &[(&str, &str)]) -> (Server, Doubles) {
    let doubles = Doubles::start().await;
    seed_qdrant(&doubles).await;
    let server = start_with(&upstream_variables(&doubles, extra), None, &[]).await;
    (server, doubles)
}

async fn post_chat(server: &Server, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/chat", server.base_url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, value)
}

struct Streamed {
    status: u16,
    content_type: String,
    cache_control: String,
    events: Vec<SseEvent>,
}

impl Streamed {
    fn names(&self) -> Vec<&str> {
        self.events
            .iter()
            .map(|e| e.event.as_deref().unwrap_or("message"))
            .collect()
    }

    fn data(&self, name: &str) -> Vec<Value> {
        self.events
            .iter()
            .filter(|e| e.event.as_deref() == Some(name))
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect()
    }

    fn text(&self) -> String {
        self.data("delta")
            .iter()
            .map(|d| d["text"].as_str().unwrap().to_owned())
            .collect()
    }
}

async fn post_chat_streamed(server: &Server, body: Value, accept: Option<&str>) -> Streamed {
    let mut request = reqwest::Client::new()
        .post(format!("{}/chat", server.base_url))
        .json(&body);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let status = response.status().as_u16();
    let content_type = header("content-type");
    let cache_control = header("cache-control");
    let bytes = response.bytes().await.unwrap();
    let mut parser = SseParser::new();
    let mut events = parser.feed(&bytes);
    events.extend(parser.finish());
    Streamed {
        status,
        content_type,
        cache_control,
        events,
    }
}

struct StoredMessage {
    id: i64,
    role: String,
    content: String,
    sources: Value,
    status: String,
}

/// The session's messages as the embedded database holds them, oldest first.
fn stored_messages(server: &Server, session_id: &str) -> Vec<StoredMessage> {
    let connection = rusqlite::Connection::open(server.data_dir.path().join("default.db")).unwrap();
    let mut statement = connection
        .prepare("SELECT id, role, content, sources, status FROM messages WHERE session_id = ?1 ORDER BY id")
        .unwrap();
    statement
        .query_map([rag_core::store::session_key(session_id)], |row| {
            let sources: String = row.get(3)?;
            Ok(StoredMessage {
                id: row.get(0)?,
                role: row.get(1)?,
                content: row.get(2)?,
                sources: serde_json::from_str(&sources).unwrap(),
                status: row.get(4)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A session as readers get one: issued by the server (ids are never chosen by clients).
async fn new_session(server: &Server) -> String {
    let response = reqwest::Client::new()
        .post(format!("{}/session", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["session_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn json_answer_cites_the_retrieved_passages() {
    let (server, doubles) = start_with_doubles(&[]).await;
    let (status, body) = post_chat(&server, json!({"query": ZMP_QUESTION})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mode"], "generated");
    let answer = body["answer"].as_str().unwrap();
    assert!(answer.contains("[1]"), "{answer}");
    assert!(
        answer.contains("zero moment point"),
        "the model saw passage [1]: {answer}"
    );
    let sources = body["sources"].as_array().unwrap();
    assert!(!sources.is_empty());
    assert_eq!(sources[0]["n"], 1);
    assert_eq!(
        sources[0]["url"],
        "https://book.example/docs/locomotion/balance#zero-moment-point"
    );
    assert_eq!(sources[0]["title"], "Locomotion and balance");
    for (i, source) in sources.iter().enumerate() {
        assert_eq!(source["n"], i + 1);
    }
    // One hybrid Query API call: dense candidates above the similarity threshold, ranked
    // again by the question's keywords, fused by RRF.
    let query = doubles.last_request(Endpoint::QdrantQuery).unwrap();
    assert_eq!(doubles.calls(Endpoint::QdrantQuery), 1);
    assert_eq!(query["query"], json!({"fusion": "rrf"}));
    let dense = &query["prefetch"][0];
    assert_eq!(dense["using"], "dense");
    assert!((dense["score_threshold"].as_f64().unwrap() - 0.3).abs() < 1e-6);
    let keywords = rag_core::keywords::query_sparse_vector(ZMP_QUESTION);
    assert_eq!(query["prefetch"][1]["using"], "sparse");
    assert_eq!(
        query["prefetch"][1]["query"],
        json!({"indices": keywords.indices, "values": keywords.values})
    );
    assert!(body["message_id"].as_i64().unwrap() > 0);
    let session_id = body["session_id"].as_str().unwrap();
    assert!(
        rag_core::store::valid_session_id(session_id),
        "{session_id}"
    );

    let embed = doubles.last_request(Endpoint::CohereEmbed).unwrap();
    assert_eq!(embed["input_type"], "search_query");
    assert_eq!(embed["texts"], json!([ZMP_QUESTION]));
    let chat = doubles.last_request(Endpoint::OpenAiChat).unwrap();
    assert_eq!(chat["stream"], false);
    let system = chat["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("[1] Locomotion and balance — Zero moment point"),
        "{system}"
    );
    assert_eq!(
        chat["messages"].as_array().unwrap().last().unwrap()["content"],
        ZMP_QUESTION
    );
    assert_eq!(
        doubles.calls(Endpoint::CohereRerank),
        0,
        "no rerank model configured"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rerank_reorders_candidates_when_a_model_is_configured() {
    // A question on which the double's reranker (word overlap) and the search (fused vector
    // and keyword ranks) disagree about the second passage.
    const QUESTION: &str = "How do inverse kinematics joint angles and topics work?";
    let (server, doubles) = start_with_doubles(&[
        ("cohere_rerank_model", "rerank-v3.5"),
        ("vector_min_similarity", "0"),
        ("rerank_min_relevance", "0"),
    ])
    .await;
    let (status, body) = post_chat(&server, json!({"query": QUESTION, "top_k": 2})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(doubles.calls(Endpoint::CohereRerank), 1);
    let rerank = doubles.last_request(Endpoint::CohereRerank).unwrap();
    assert_eq!(rerank["query"], QUESTION);
    assert!(
        rerank["documents"].as_array().unwrap().len() > 2,
        "more candidates than top_k: {rerank}"
    );
    assert_eq!(rerank["top_n"], 2);
    // The documents go in the search's order; each starts with "title — heading".
    let documents: Vec<String> = serde_json::from_value(rerank["documents"].clone()).unwrap();
    let reranked: Vec<usize> = Doubles::rerank_order(QUESTION, &documents)
        .into_iter()
        .take(2)
        .collect();
    assert_ne!(
        reranked,
        [0, 1],
        "the reranker disagrees with the search here"
    );
    let chosen: Vec<&str> = reranked
        .iter()
        .map(|&i| documents[i].lines().next().unwrap())
        .collect();
    let cited: Vec<String> = body["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} — {}",
                s["title"].as_str().unwrap(),
                s["heading"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(cited, chosen, "sources follow the reranker's order");
}

/// Every request body a component sends is whole before it leaves, so it goes with its
/// `Content-Length` rather than chunked (which some gateways and simple servers refuse).
#[tokio::test(flavor = "multi_thread")]
async fn upstream_request_bodies_carry_content_length() {
    let (server, doubles) = start_with_doubles(&[
        ("cohere_rerank_model", "rerank-v3.5"),
        ("vector_min_similarity", "0"),
        ("rerank_min_relevance", "0"),
    ])
    .await;
    let (status, body) = post_chat(&server, json!({"query": ZMP_QUESTION})).await;
    assert_eq!(status, 200, "{body}");
    let streamed = post_chat_streamed(
        &server,
        json!({"query": ZMP_QUESTION, "stream": true}),
        None,
    )
    .await;
    assert_eq!(streamed.status, 200);
    assert_eq!(
        doubles.calls(Endpoint::OpenAiChat),
        2,
        "JSON, then streamed"
    );
    for endpoint in [
        Endpoint::CohereEmbed,
        Endpoint::QdrantQuery,
        Endpoint::CohereRerank,
        Endpoint::OpenAiChat,
    ] {
        let framing = doubles.last_framing(endpoint).unwrap();
        assert!(!framing.chunked, "{endpoint:?} was sent chunked");
        let length = framing.content_length;
        assert!(length.is_some_and(|n| n > 0), "{endpoint:?}: {framing:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reranked_passages_below_the_rerank_minimum_are_refused() {
    // Every candidate passes the similarity gate; the reranker's relevance decides.
    let (server, doubles) = start_with_doubles(&[
        ("cohere_rerank_model", "rerank-v3.5"),
        ("vector_min_similarity", "0"),
        ("rerank_min_relevance", "0.99"),
    ])
    .await;
    let (status, body) = post_chat(&server, json!({"query": ZMP_QUESTION})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(doubles.calls(Endpoint::CohereRerank), 1);
    assert_eq!(body["mode"], "refused", "{body}");
    assert_eq!(doubles.calls(Endpoint::OpenAiChat), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collection_without_keyword_vectors_is_searched_dense_only() {
    let doubles = Doubles::start().await;
    let qdrant = Qdrant {
        url: doubles.base_url(),
        api_key: Some("test-qdrant-key".into()),
        collection: "book".into(),
    };
    // As collections were created before hybrid retrieval: one unnamed vector.
    let created = reqwest::Client::new()
        .put(format!("{}/collections/book", doubles.base_url()))
        .json(&json!({"vectors": {"size": upstream_doubles::EMBED_DIMS, "distance": "Cosine"}}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    let points: Vec<NewPoint> = passages()
        .into_iter()
        .enumerate()
        .map(|(i, passage)| NewPoint {
            id: format!("00000000-0000-4000-8000-{:012}", i + 1),
            vector: Doubles::embed(&passage.text),
            sparse: Default::default(),
            hash: format!("hash-{i}"),
            passage,
        })
        .collect();
    let upserted = send_core_request(qdrant.upsert_request(&points, Layout::DenseOnly)).await;
    assert!(upserted.status().is_success());
    let server = start_with(&upstream_variables(&doubles, &[]), None, &[]).await;
    let (status, body) = post_chat(&server, json!({"query": ZMP_QUESTION})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mode"], "generated");
    assert_eq!(body["sources"][0]["heading"], "Zero moment point");
    assert_eq!(
        doubles.calls(Endpoint::QdrantQuery),
        2,
        "the hybrid query is refused, then the dense one answers"
    );
    let dense = doubles.last_request(Endpoint::QdrantQuery).unwrap();
    assert!(dense.get("prefetch").is_none(), "{dense}");
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_answer_sends_sources_deltas_then_done() {
    let (server, doubles) = start_with_doubles(&[]).await;
    let session = new_session(&server).await;
    let streamed = post_chat_streamed(
        &server,
        json!({"query": ZMP_QUESTION, "stream": true, "session_id": session}),
        None,
    )
    .await;
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.content_type, "text/event-stream");
    assert_eq!(streamed.cache_control, "no-cache");
    let names = streamed.names();
    assert_eq!(names.first(), Some(&"sources"), "{names:?}");
    assert_eq!(names.last(), Some(&"done"), "{names:?}");
    let deltas = names.iter().filter(|n| **n == "delta").count();
    assert!(deltas >= 3, "the answer arrives in pieces: {names:?}");
    assert_eq!(
        deltas,
        names.len() - 2,
        "only deltas between sources and done: {names:?}"
    );

    let sources = &streamed.data("sources")[0]["sources"];
    assert_eq!(sources[0]["heading"], "Zero moment point");
    let answer = streamed.text();
    assert!(
        answer.starts_with("According to the book: The zero moment point"),
        "{answer}"
    );
    assert!(answer.ends_with("[1]"), "{answer}");
    let done = &streamed.data("done")[0];
    let message_id = done["message_id"].as_i64().unwrap();
    assert_eq!(done["session_id"], session.as_str());
    assert_eq!(streamed.data("sources")[0]["session_id"], session.as_str());
    assert!(
        done["usage"]["total_tokens"].as_u64().unwrap() > 0,
        "{done}"
    );
    assert_eq!(
        doubles.last_request(Endpoint::OpenAiChat).unwrap()["stream"],
        true
    );

    let stored = stored_messages(&server, &session);
    assert_eq!(stored.len(), 2);
    assert_eq!(
        (stored[0].role.as_str(), stored[0].content.as_str()),
        ("user", ZMP_QUESTION)
    );
    assert_eq!(stored[1].id, message_id);
    assert_eq!(stored[1].content, answer);
    assert_eq!(stored[1].status, "complete");
    assert_eq!(&stored[1].sources, sources);
}

/// Every token of a streamed answer waits under the stream's idle timeout. The timer used to
/// subscribe to the clock again on each poll, and Spin's executor keeps a subscription until it
/// is ready, so each token left one behind: an answer longer than the runner's cap on a
/// request's resources then failed mid-stream (and, before the cap, every token polled all of
/// the earlier subscriptions).
#[tokio::test(flavor = "multi_thread")]
async fn a_long_streamed_answer_holds_no_resource_per_token() {
    let (server, doubles) = start_with_doubles(&[]).await;
    let words = host::state::MAX_GUEST_RESOURCES + 500;
    let answer = doubles.set_chat_answer_of_words(words);
    // Paced, so that each token is waited for on its own.
    doubles.set_stream_pacing(Duration::ZERO, Duration::from_millis(1));
    let streamed = post_chat_streamed(
        &server,
        json!({"query": ZMP_QUESTION, "stream": true}),
        None,
    )
    .await;
    assert_eq!(streamed.status, 200);
    let names = streamed.names();
    assert_eq!(
        names.last(),
        Some(&"done"),
        "{:?}",
        &names[names.len().saturating_sub(3)..]
    );
    assert_eq!(names.iter().filter(|n| **n == "delta").count(), words);
    assert_eq!(streamed.text(), answer);
}

#[tokio::test(flavor = "multi_thread")]
async fn accept_header_asks_for_a_stream() {
    let (server, _doubles) = start_with_doubles(&[]).await;
    let streamed = post_chat_streamed(
        &server,
        json!({"query": ZMP_QUESTION}),
        Some("text/event-stream"),
    )
    .await;
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.content_type, "text/event-stream");
    assert_eq!(streamed.names().first(), Some(&"sources"));
    assert_eq!(streamed.names().last(), Some(&"done"));
}

#[tokio::test(flavor = "multi_thread")]
async fn selected_text_is_the_passage_the_answer_is_about() {
    let (server, doubles) = start_with_doubles(&[]).await;
    let selected = "Series elastic actuators place a spring between the motor and the load, so the joint measures and limits the force it applies.";
    let (status, body) = post_chat(
        &server,
        json!({"query": "Why put a spring there?", "selected_text": selected, "top_k": 10}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["mode"], "generated",
        "a selection is enough to answer from, even with no hit"
    );
    assert!(
        body["sources"].as_array().unwrap().len() <= 3,
        "at most 3 passages next to a selection"
    );
    let chat = doubles.last_request(Endpoint::OpenAiChat).unwrap();
    let system = chat["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains(&format!(
            "<selected_passage>\n{selected}\n</selected_passage>"
        )),
        "{system}"
    );
    assert_eq!(doubles.calls(Endpoint::OpenAiChat), 1);
    let embed = doubles.last_request(Endpoint::CohereEmbed).unwrap();
    assert!(
        embed["texts"][0]
            .as_str()
            .unwrap()
            .contains("Series elastic actuators"),
        "retrieval looks for what the selection is about"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_relevant_is_refused_without_a_model_call_and_still_stored() {
    let (server, doubles) = start_with_doubles(&[("vector_min_similarity", "0.3")]).await;
    let session = new_session(&server).await;
    let (status, body) = post_chat(
        &server,
        json!({"query": "Photosynthesis chlorophyll?", "session_id": session}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mode"], "refused");
    assert_eq!(body["answer"], REFUSAL);
    assert_eq!(body["sources"], json!([]));
    assert_eq!(doubles.calls(Endpoint::OpenAiChat), 0);
    assert_eq!(doubles.calls(Endpoint::QdrantQuery), 1, "retrieval ran");

    let streamed = post_chat_streamed(
        &server,
        json!({"query": "Photosynthesis chlorophyll?", "session_id": session, "stream": true}),
        None,
    )
    .await;
    assert_eq!(streamed.names(), ["sources", "delta", "done"]);
    assert_eq!(streamed.text(), REFUSAL);
    assert_eq!(doubles.calls(Endpoint::OpenAiChat), 0);

    let stored = stored_messages(&server, &session);
    let roles: Vec<_> = stored.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(stored[1].content, REFUSAL);
    assert_eq!(stored[1].id, body["message_id"].as_i64().unwrap());
    assert!(stored.iter().all(|m| m.status == "complete"));
}

/// Rows in a table of the embedded database; none in a table not created yet (a first question
/// creates the schema only when it stores its answer).
fn stored_rows(server: &Server, table: &str) -> i64 {
    let connection = rusqlite::Connection::open(server.data_dir.path().join("default.db")).unwrap();
    let exists: bool = connection
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
            [table],
            |row| row.get(0),
        )
        .unwrap();
    if !exists {
        return 0;
    }
    connection
        .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
            row.get(0)
        })
        .unwrap()
}

/// On PostgreSQL a streamed answer's row is written while the model is reached: when the model
/// cannot be, the row is taken back, so what is stored is what the embedded database keeps
/// (the test above): no session for a first question, the question alone in a held session.
#[tokio::test(flavor = "multi_thread")]
async fn on_postgres_a_streamed_chat_whose_model_fails_stores_no_answer() {
    let Some(schema) = support::postgres::postgres_or_skip().await else {
        return;
    };
    let url = schema.url();
    let (server, doubles) = start_with_doubles(&[("database_url", &url)]).await;
    let count = |sql: String| {
        let admin = &schema.admin;
        async move {
            let row = admin.query_one(&sql, &[]).await.unwrap();
            row.get::<_, i64>(0)
        }
    };
    let rows = |table: &str| count(format!("SELECT count(*) FROM {}.{table}", schema.name));
    let streamed = |session: Option<&str>| {
        let mut body = json!({"query": ZMP_QUESTION, "stream": true});
        if let Some(session) = session {
            body["session_id"] = session.into();
        }
        post_chat_streamed(&server, body, None)
    };

    // Every attempt fails (the retry policy makes three).
    doubles.push_faults(Endpoint::OpenAiChat, Fault::server_error(), 3);
    let failed = streamed(None).await;
    assert_eq!(failed.status, 503);
    assert_eq!((rows("sessions").await, rows("messages").await), (0, 0));

    let (status, body) = post_chat(&server, json!({"query": ZMP_QUESTION})).await;
    assert_eq!(status, 200, "{body}");
    let session = body["session_id"].as_str().unwrap().to_owned();
    doubles.push_faults(Endpoint::OpenAiChat, Fault::server_error(), 3);
    let failed = streamed(Some(&session)).await;
    assert_eq!(failed.status, 503);
    let roles = format!(
        "SELECT count(*) FROM {}.messages WHERE role = 'assistant'",
        schema.name
    );
    assert_eq!((rows("messages").await, count(roles.clone()).await), (3, 1));

    // The next streamed answer in the session is stored whole.
    let answered = streamed(Some(&session)).await;
    assert_eq!(answered.names().last(), Some(&"done"));
    let complete = format!(
        "SELECT count(*) FROM {}.messages WHERE status = 'complete'",
        schema.name
    );
    assert_eq!((rows("messages").await, count(complete).await), (5, 5));
    drop(server);
    schema.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_question_is_stored_with_its_answer_and_a_failed_one_leaves_nothing() {
    let (server, doubles) = start_with_doubles(&[]).await;
    // The model fails on every attempt: no session is left behind, streamed or not.
    doubles.push_faults(Endpoint::OpenAiChat, Fault::server_error(), 6);
    let (status, body) = post_chat(&server, json!({"query": ZMP_QUESTION})).await;
    assert_eq!(status, 503, "{body}");
    let streamed = post_chat_streamed(
        &server,
        json!({"query": ZMP_QUESTION, "stream": true}),
        None,
    )
    .await;
    assert_eq!(streamed.status, 503);
    assert_eq!(
        (
            stored_rows(&server, "sessions"),
            stored_rows(&server, "messages")
        ),
        (0, 0)
    );

    let turns = |stored: &[StoredMessage]| -> Vec<(String, String)> {
        stored
            .iter()
            .map(|m| (m.role.clone(), m.status.clone()))
            .collect()
    };
    let whole_exchange = [
        ("user".to_owned(), "complete".to_owned()),
        ("assistant".to_owned(), "complete".to_owned()),
    ];
    let (status, body) = post_chat(&server, json!({"query": ZMP_QUESTION})).await;
    assert_eq!(status, 200, "{body}");
    let stored = stored_messages(&server, body["session_id"].as_str().unwrap());
    assert_eq!(turns(&stored), whole_exchange);
    assert_eq!(stored[0].content, ZMP_QUESTION);
    assert_eq!(stored[1].content, body["answer"].as_str().unwrap());
    assert_eq!(stored[1].id, body["message_id"].as_i64().unwrap());
    assert_eq!(stored[1].sources, body["sources"]);

    let streamed = post_chat_streamed(
        &server,
        json!({"query": ZMP_QUESTION, "stream": true}),
        None,
    )
    .await;
    assert_eq!(streamed.names().last(), Some(&"done"));
    let session = streamed.data("sources")[0]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stored = stored_messages(&server, &session);
    assert_eq!(turns(&stored), whole_exchange);
    assert_eq!(stored[1].content, streamed.text());
    assert_eq!(stored_rows(&server, "sessions"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_up_sees_the_earlier_turns_and_both_turns_are_stored() {
    let (server, doubles) = start_with_doubles(&[]).await;
    let (status, first) = post_chat(&server, json!({"query": ZMP_QUESTION})).await;
    assert_eq!(status, 200, "{first}");
    let session = first["session_id"].as_str().unwrap().to_owned();
    let first_answer = first["answer"].as_str().unwrap().to_owned();
    let (status, second) = post_chat(
        &server,
        json!({"query": "And how does it keep the robot balanced?", "session_id": session}),
    )
    .await;
    assert_eq!(status, 200, "{second}");

    let messages = doubles.last_request(Endpoint::OpenAiChat).unwrap()["messages"].clone();
    let turns: Vec<(&str, &str)> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(turns.len(), 4, "{turns:?}");
    assert_eq!(turns[1], ("user", ZMP_QUESTION));
    assert_eq!(turns[2], ("assistant", first_answer.as_str()));
    assert_eq!(
        turns[3],
        ("user", "And how does it keep the robot balanced?")
    );

    let stored = stored_messages(&server, &session);
    let summary: Vec<(&str, &str)> = stored
        .iter()
        .map(|m| (m.role.as_str(), m.status.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("user", "complete"),
            ("assistant", "complete"),
            ("user", "complete"),
            ("assistant", "complete")
        ]
    );
    assert_eq!(stored[1].content, first_answer);
    assert_eq!(stored[1].id, first["message_id"].as_i64().unwrap());
    assert_eq!(stored[3].id, second["message_id"].as_i64().unwrap());
    assert_eq!(stored[1].sources, first["sources"]);
    assert!(!stored[1].sources.as_array().unwrap().is_empty());

    // A new conversation starts with no history.
    let (_, third) = post_chat(&server, json!({"query": ZMP_QUESTION})).await;
    assert_ne!(third["session_id"], session.as_str());
    let messages = doubles.last_request(Endpoint::OpenAiChat).unwrap()["messages"].clone();
    assert_eq!(messages.as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_embedding_is_retried_after_retry_after() {
    let (server, doubles) = start_with_doubles(&[]).await;
    doubles.push_fault(Endpoint::CohereEmbed, Fault::rate_limited(1));
    let started = Instant::now();
    let (status, body) = post_chat(&server, json!({"query": ZMP_QUESTION})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mode"], "generated");
    assert_eq!(doubles.calls(Endpoint::CohereEmbed), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );

    doubles.push_fault(Endpoint::OpenAiChat, Fault::server_error());
    doubles.push_fault(Endpoint::QdrantQuery, Fault::server_error());
    let streamed = post_chat_streamed(
        &server,
        json!({"query": ZMP_QUESTION, "stream": true}),
        None,
    )
    .await;
    assert_eq!(
        streamed.names().last(),
        Some(&"done"),
        "{:?}",
        streamed.names()
    );
    assert_eq!(
        doubles.calls(Endpoint::OpenAiChat),
        3,
        "1 JSON + 1 failed + 1 streamed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_failures_are_json_errors_with_stable_codes() {
    // Qdrant down: nothing listens on port 9 of loopback.
    let (server, _doubles) = start_with_doubles(&[("qdrant_url", "http://127.0.0.1:9")]).await;
    let response = reqwest::Client::new()
        .post(format!("{}/chat", server.base_url))
        .json(&json!({"query": ZMP_QUESTION, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let text = response.text().await.unwrap();
    for secret in ["test-openai-key", "test-cohere-key", "test-qdrant-key"] {
        assert!(!text.contains(secret), "{text}");
    }
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Qdrant"),
        "{body}"
    );

    // The model hangs past the deadline on every attempt.
    let (server, doubles) = start_with_doubles(&[("upstream_timeout_ms", "400")]).await;
    doubles.push_faults(
        Endpoint::OpenAiChat,
        Fault::Delay(Duration::from_secs(3)),
        3,
    );
    let (status, body) = post_chat(&server, json!({"query": ZMP_QUESTION})).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "upstream_timeout");

    // The model keeps failing before the stream opens: a JSON error, not a broken stream.
    doubles.push_faults(Endpoint::OpenAiChat, Fault::server_error(), 3);
    let streamed = post_chat_streamed(
        &server,
        json!({"query": ZMP_QUESTION, "stream": true}),
        None,
    )
    .await;
    assert_eq!(streamed.status, 503);
    assert!(streamed.content_type.starts_with("application/json"));

    // A stream cut before [DONE]: an error event after the deltas, the partial answer kept.
    let session = new_session(&server).await;
    doubles.push_fault(Endpoint::OpenAiChat, Fault::CutStream);
    let streamed = post_chat_streamed(
        &server,
        json!({"query": ZMP_QUESTION, "stream": true, "session_id": session}),
        None,
    )
    .await;
    assert_eq!(streamed.status, 200);
    let names = streamed.names();
    assert_eq!(names.first(), Some(&"sources"));
    assert_eq!(names.last(), Some(&"error"), "{names:?}");
    assert_eq!(streamed.data("error")[0]["code"], "upstream_bad_response");
    let stored = stored_messages(&server, &session);
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].status, "incomplete");
    assert_eq!(stored[1].content, streamed.text());

    // A wrong key is not retried and is not a timeout.
    let (server, doubles) = start_with_doubles(&[]).await;
    doubles.push_fault(
        Endpoint::CohereEmbed,
        Fault::Status {
            status: 401,
            retry_after: None,
        },
    );
    let (status, body) = post_chat(&server, json!({"query": ZMP_QUESTION})).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_auth_failed");
    assert_eq!(doubles.calls(Endpoint::CohereEmbed), 1);
}

/// Asks with its own `x-request-id`, so the test can find its log lines.
async fn post_chat_as(server: &Server, request_id: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/chat", server.base_url))
        .header("x-request-id", request_id)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The log lines of one request.
fn logged_for(request_id: &str) -> String {
    support::logs::text()
        .lines()
        .filter(|line| line.contains(request_id))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A refused key (HTTP 401/403) from any upstream is `upstream_auth_failed`, tried once; the
/// log names the setting to check and never the key, and the client sees neither.
#[tokio::test(flavor = "multi_thread")]
async fn refused_keys_are_upstream_auth_failed_and_the_log_names_the_setting() {
    support::logs::capture();
    let (server, doubles) = start_with_doubles(&[]).await;
    let refusal = |status| Fault::Status {
        status,
        retry_after: None,
    };

    doubles.push_fault(Endpoint::CohereEmbed, refusal(401));
    let (status, body) = post_chat_as(&server, "auth-cohere", json!({"query": ZMP_QUESTION})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (502, &json!("upstream_auth_failed")),
        "{body}"
    );
    assert_eq!(
        body["error"]["message"],
        "Cohere refused the configured credentials"
    );
    assert_eq!(doubles.calls(Endpoint::CohereEmbed), 1, "not retried");

    doubles.push_fault(Endpoint::OpenAiChat, refusal(403));
    let (status, body) = post_chat_as(
        &server,
        "auth-llm-stream",
        json!({"query": ZMP_QUESTION, "stream": true}),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (502, &json!("upstream_auth_failed")),
        "{body}"
    );
    // What the model's server said, read from the refused stream's body, reaches the log.
    let log = logged_for("auth-llm-stream");
    assert!(
        log.contains("check OPENAI_API_KEY: fault injected by the test"),
        "{log}"
    );
    doubles.push_fault(Endpoint::OpenAiChat, refusal(401));
    let (status, body) = post_chat_as(&server, "auth-llm", json!({"query": ZMP_QUESTION})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (502, &json!("upstream_auth_failed")),
        "{body}"
    );
    assert_eq!(doubles.calls(Endpoint::OpenAiChat), 2, "neither retried");

    // Qdrant checks the key itself: the runner was given another one.
    doubles.require_qdrant_api_key("the-real-qdrant-key");
    let (status, body) = post_chat_as(&server, "auth-qdrant", json!({"query": ZMP_QUESTION})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (502, &json!("upstream_auth_failed")),
        "{body}"
    );
    assert_eq!(
        body["error"]["message"],
        "Qdrant refused the configured credentials"
    );

    for (request_id, setting) in [
        ("auth-cohere", "COHERE_API_KEY"),
        ("auth-llm", "OPENAI_API_KEY"),
        ("auth-qdrant", "QDRANT_API_KEY"),
    ] {
        let log = logged_for(request_id);
        assert!(
            log.contains(&format!("check {setting}")),
            "{request_id}: {log}"
        );
        for secret in [
            "test-openai-key",
            "test-cohere-key",
            "test-qdrant-key",
            "the-real-qdrant-key",
        ] {
            assert!(!log.contains(secret), "{log}");
        }
    }
    // What Qdrant said reaches the log.
    assert!(logged_for("auth-qdrant").contains("Invalid API key or JWT"));
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_requests_are_400s_naming_the_field() {
    let server = start(Options::default()).await;
    for (body, field, needle) in [
        (json!({}), "query", "required"),
        (json!({"query": "   "}), "query", "4000"),
        (json!({"query": "x".repeat(4001)}), "query", "4000"),
        (json!({"query": "q", "top_k": 0}), "top_k", "1 to 20"),
        (
            json!({"query": "q", "session_id": "no spaces"}),
            "session_id",
            "128",
        ),
        (
            json!({"query": "q", "selected_text": "s".repeat(8001)}),
            "selected_text",
            "8000",
        ),
        (
            json!({"query": "q", "sessionId": "x"}),
            "sessionId",
            "not a known field",
        ),
    ] {
        let (status, response) = post_chat(&server, body.clone()).await;
        assert_eq!(status, 400, "{body}: {response}");
        assert_eq!(response["error"]["code"], "invalid_request");
        assert_eq!(response["error"]["field"], field, "{response}");
        assert!(
            response["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{response}"
        );
    }
    let response = reqwest::Client::new()
        .post(format!("{}/chat", server.base_url))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = reqwest::get(format!("{}/chat", server.base_url))
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST, OPTIONS");
}

#[tokio::test(flavor = "multi_thread")]
async fn keyless_mode_answers_extractively_from_the_sample_book() {
    let server = start_with(&[], Some(support::data_dir_with_book_index().await), &[]).await;
    let (status, body) = post_chat(&server, json!({"query": "What does ZMP stand for?"})).await;
    assert_eq!(status, 200, "{body}");
    let session = body["session_id"].as_str().unwrap().to_owned();
    assert_eq!(body["mode"], "extractive");
    let answer = body["answer"].as_str().unwrap();
    assert!(answer.starts_with(EXTRACTIVE_LABEL), "{answer}");
    assert!(answer.contains("[1]"), "{answer}");
    assert!(
        answer.to_lowercase().contains("zero moment point"),
        "{answer}"
    );
    let sources = body["sources"].as_array().unwrap();
    assert!(!sources.is_empty() && sources.len() <= 3);
    let first_url = sources[0]["url"].as_str().unwrap();
    assert!(
        first_url.starts_with("https://example.github.io/physical-ai-book/docs/locomotion/balance"),
        "{first_url}"
    );

    let streamed = post_chat_streamed(&server, json!({"query": "Which ROS 2 command lists topics?", "session_id": session, "stream": true}), None).await;
    let names = streamed.names();
    assert_eq!(names.first(), Some(&"sources"));
    assert_eq!(names.last(), Some(&"done"));
    assert!(
        names.iter().filter(|n| **n == "delta").count() >= 2,
        "{names:?}"
    );
    assert!(streamed.text().starts_with(EXTRACTIVE_LABEL));
    assert!(streamed.data("sources")[0]["sources"][0]["url"]
        .as_str()
        .unwrap()
        .contains("/docs/ros2/"));

    let (status, body) = post_chat(
        &server,
        json!({"query": "photosynthesis in chloroplasts", "session_id": session}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["mode"], "refused");
    assert_eq!(body["answer"], REFUSAL);

    let stored = stored_messages(&server, &session);
    assert_eq!(stored.len(), 6);
    assert_eq!(stored[3].content, streamed.text());
    assert_eq!(stored[3].status, "complete");
}

#[tokio::test(flavor = "multi_thread")]
async fn keyless_mode_without_an_index_says_so() {
    let server = start(Options::default()).await;
    let (status, body) = post_chat(&server, json!({"query": "What does ZMP stand for?"})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "index_unavailable");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ingest"));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_chats_on_one_session_lose_nothing_and_keep_order() {
    const CHATS: usize = 100;
    let server = start_with(
        &[],
        Some(support::data_dir_with_book_index().await),
        &[
            "--max-concurrent-requests",
            "128",
            // One test client sends every request; the per-client limit is not under test.
            "--rate-limit-per-minute",
            "0",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let session = new_session(&server).await;
    let requests = (0..CHATS).map(|i| {
        let client = client.clone();
        let session = session.clone();
        let url = format!("{}/chat", server.base_url);
        async move {
            let query = format!("What does ZMP stand for? question {i}");
            let response = client
                .post(url)
                .json(&json!({"query": query, "session_id": session}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (query, status, body)
        }
    });
    let results = futures::future::join_all(requests).await;
    for (_, status, body) in &results {
        assert_eq!(*status, 200, "{body}");
    }

    let stored = stored_messages(&server, &session);
    assert_eq!(
        stored.len(),
        2 * CHATS,
        "every question and answer is stored"
    );
    assert!(stored.windows(2).all(|w| w[0].id < w[1].id));
    for (query, _, body) in &results {
        let message_id = body["message_id"].as_i64().unwrap();
        let question = stored
            .iter()
            .find(|m| m.role == "user" && m.content == *query)
            .unwrap_or_else(|| panic!("{query} lost"));
        let answer = stored.iter().find(|m| m.id == message_id).unwrap();
        assert_eq!(answer.role, "assistant");
        assert_eq!(answer.content, body["answer"].as_str().unwrap());
        assert!(
            question.id < answer.id,
            "each question is stored before its answer"
        );
    }
    assert_eq!(stored.iter().filter(|m| m.role == "user").count(), CHATS);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_mid_stream_leaves_the_partial_answer_stored_incomplete() {
    use futures::StreamExt;
    let doubles = Doubles::start().await;
    seed_qdrant(&doubles).await;
    let model = support::slow_model::start(&[100]).await;
    let server = start_with(
        &upstream_variables(&doubles, &[("openai_base_url", &model)]),
        None,
        &[],
    )
    .await;
    let session = new_session(&server).await;
    let response = reqwest::Client::new()
        .post(format!("{}/chat", server.base_url))
        .json(&json!({"query": ZMP_QUESTION, "stream": true, "session_id": session}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut parser = SseParser::new();
    let mut received = String::new();
    while !received.contains("word2") {
        let bytes = body.next().await.unwrap().unwrap();
        for event in parser.feed(&bytes) {
            if event.event.as_deref() == Some("delta") {
                let delta: Value = serde_json::from_str(&event.data).unwrap();
                received.push_str(delta["text"].as_str().unwrap());
            }
        }
    }
    drop(body);

    let deadline = Instant::now() + Duration::from_secs(10);
    let stored = loop {
        let stored = stored_messages(&server, &session);
        if stored.len() == 2 && !stored[1].content.is_empty() {
            break stored;
        }
        assert!(
            Instant::now() < deadline,
            "the partial answer was not saved"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let answer = &stored[1];
    assert_eq!(answer.status, "incomplete");
    assert!(
        answer.content.starts_with(&received),
        "{:?} vs {received:?}",
        answer.content
    );
    assert!(
        !answer.content.contains("word99"),
        "the answer was cut short: {}",
        answer.content
    );
}

/// The components answer CORS themselves, as they would under `spin up`: a preflight to /chat
/// from an allowed origin gets 204 with the headers, from another origin none; JSON answers,
/// event streams, errors and the session API carry them too.
#[tokio::test(flavor = "multi_thread")]
async fn chat_answers_cors_preflights_and_marks_every_answer() {
    let (server, _doubles) =
        start_with_doubles(&[("allowed_origins", "http://localhost:3000")]).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.base_url);
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, url("/chat"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type")
            .send()
    };
    let allowed = preflight("http://localhost:3000").await.unwrap();
    assert_eq!(allowed.status(), 204);
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert!(headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert!(headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("content-type"));
    assert_eq!(headers["access-control-max-age"], "600");
    assert_eq!(headers["vary"], "origin");
    let refused = preflight("https://evil.example").await.unwrap();
    assert_eq!(refused.status(), 204);
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    assert!(refused
        .headers()
        .get("access-control-allow-methods")
        .is_none());

    let allow_origin = |response: &reqwest::Response| {
        response
            .headers()
            .get("access-control-allow-origin")
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let from_page =
        |request: reqwest::RequestBuilder| request.header("Origin", "http://localhost:3000").send();
    let answered = from_page(
        client
            .post(url("/chat"))
            .json(&json!({"query": ZMP_QUESTION})),
    )
    .await
    .unwrap();
    assert_eq!(answered.status(), 200);
    assert_eq!(
        allow_origin(&answered).as_deref(),
        Some("http://localhost:3000")
    );
    let streamed = from_page(
        client
            .post(url("/chat"))
            .json(&json!({"query": ZMP_QUESTION, "stream": true})),
    )
    .await
    .unwrap();
    assert_eq!(streamed.headers()["content-type"], "text/event-stream");
    assert_eq!(
        allow_origin(&streamed).as_deref(),
        Some("http://localhost:3000")
    );
    assert!(streamed.text().await.unwrap().contains("event: done"));
    let invalid = from_page(client.post(url("/chat")).json(&json!({"query": ""})))
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
    assert_eq!(
        allow_origin(&invalid).as_deref(),
        Some("http://localhost:3000")
    );
    let created = from_page(client.post(url("/session"))).await.unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(
        allow_origin(&created).as_deref(),
        Some("http://localhost:3000")
    );
    let session: Value = created.json().await.unwrap();
    let deleted = from_page(client.delete(url(&format!(
        "/session/{}",
        session["session_id"].as_str().unwrap()
    ))))
    .await
    .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(
        allow_origin(&deleted).as_deref(),
        Some("http://localhost:3000")
    );
    let session_preflight = client
        .request(reqwest::Method::OPTIONS, url("/session"))
        .header("Origin", "http://localhost:3000")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(session_preflight.status(), 204);
    assert_eq!(
        allow_origin(&session_preflight).as_deref(),
        Some("http://localhost:3000")
    );
}

/// Routine guest lines are logged at INFO and failures at WARN, each with its request id.
#[tokio::test(flavor = "multi_thread")]
async fn routine_lines_are_info_and_failures_warn() {
    support::logs::capture();
    let (server, doubles) = start_with_doubles(&[]).await;
    let (status, body) =
        post_chat_as(&server, "level-routine", json!({"query": ZMP_QUESTION})).await;
    assert_eq!(status, 200, "{body}");
    let routine = logged_for("level-routine");
    let plan_line = routine
        .lines()
        .find(|line| line.contains("plan generate"))
        .unwrap_or_else(|| panic!("no plan line: {routine}"));
    assert!(plan_line.contains(" INFO "), "{plan_line}");
    assert!(!routine.contains(" WARN "), "{routine}");

    doubles.push_faults(Endpoint::OpenAiChat, Fault::server_error(), 3);
    let (status, _) = post_chat_as(&server, "level-failure", json!({"query": ZMP_QUESTION})).await;
    assert_eq!(status, 503);
    let failure = logged_for("level-failure");
    let failed_line = failure
        .lines()
        .find(|line| line.contains("generation failed"))
        .unwrap_or_else(|| panic!("no failure line: {failure}"));
    assert!(failed_line.contains(" WARN "), "{failed_line}");
}
