//! The requests our builders produce, and the official example responses our parsers read,
//! checked against the upstream APIs' published schemas in `../shared/contracts`.

use std::path::PathBuf;

use http::Response;
use rag_core::keywords;
use rag_core::retrieval::Passage;
use rag_core::upstream::cohere::{Cohere, InputType};
use rag_core::upstream::openai::{ChatMessage, ChatRole, ChatStream, OpenAi};
use rag_core::upstream::qdrant::{Layout, NewPoint, PointId, Qdrant};
use serde_json::{json, Value};

fn contracts_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/contracts"
    ));
    if dir.is_dir() {
        Some(dir)
    } else {
        assert!(
            std::env::var_os("TEST_REQUIRE_SHARED").is_none(),
            "TEST_REQUIRE_SHARED is set but {} is missing",
            dir.display()
        );
        println!("skipping: ../shared/contracts not found");
        None
    }
}

struct Contract {
    subset: Value,
}

impl Contract {
    fn load(api: &str) -> Option<Self> {
        let path = contracts_dir()?.join(format!("{api}-subset.normalized.json"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        Some(Self {
            subset: serde_json::from_str(&text).unwrap(),
        })
    }

    /// The schema pointer for `operation`'s request body, or one of its responses.
    fn pointer(&self, operation: &str, part: &[&str]) -> Value {
        let mut node = &self.subset["x-contract-index"][operation];
        for key in part {
            node = &node[*key];
        }
        assert!(node.is_string(), "no schema at {operation} {part:?}");
        node.clone()
    }

    fn assert_valid(&self, pointer: Value, body: &Value) {
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": pointer,
            "components": self.subset["components"],
        });
        let validator = jsonschema::validator_for(&root).expect("schema compiles");
        let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{pointer} rejects {body}: {errors:#?}");
    }

    fn assert_request(&self, operation: &str, request: &http::Request<Vec<u8>>) {
        let body: Value = serde_json::from_slice(request.body()).unwrap();
        self.assert_valid(
            self.pointer(operation, &["request", "application/json"]),
            &body,
        );
    }

    fn assert_invalid_request(&self, operation: &str, body: &Value) {
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": self.pointer(operation, &["request", "application/json"]),
            "components": self.subset["components"],
        });
        assert!(
            !jsonschema::validator_for(&root).unwrap().is_valid(body),
            "{body} should fail"
        );
    }

    fn examples(&self, operation: &str) -> Vec<Value> {
        self.subset["x-contract-examples"][operation]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

fn ok(value: &Value) -> Response<Vec<u8>> {
    Response::new(serde_json::to_vec(value).unwrap())
}

fn cohere() -> Cohere {
    Cohere {
        base_url: "https://api.cohere.com".into(),
        api_key: "k".into(),
        embed_model: "embed-v4.0".into(),
        rerank_model: Some("rerank-v3.5".into()),
    }
}

fn qdrant() -> Qdrant {
    Qdrant {
        url: "http://localhost:6333".into(),
        api_key: None,
        collection: "book".into(),
    }
}

fn passage() -> Passage {
    Passage {
        url: "https://b/docs/a#h".into(),
        page_url: "https://b/docs/a".into(),
        title: "A".into(),
        heading: "H".into(),
        text: "text".into(),
        score: 0.0,
    }
}

#[test]
fn cohere_requests_follow_the_schema() {
    let Some(contract) = Contract::load("cohere") else {
        return;
    };
    for input_type in [InputType::SearchQuery, InputType::SearchDocument] {
        contract.assert_request(
            "POST /v2/embed",
            &cohere().embed_request(&["a", "b"], input_type),
        );
    }
    let rerank = cohere().rerank_request("q", &["d1", "d2"], 2).unwrap();
    contract.assert_request("POST /v2/rerank", &rerank);
    // The check can fail: documents as objects are not v2.
    contract.assert_invalid_request(
        "POST /v2/rerank",
        &json!({"model": "m", "query": "q", "documents": [{"text": "d"}]}),
    );
}

#[test]
fn cohere_parsers_read_the_official_examples() {
    let Some(contract) = Contract::load("cohere") else {
        return;
    };
    let embeds = contract.examples("POST /v2/embed");
    assert!(!embeds.is_empty());
    for example in embeds {
        let response = &example["response"];
        let count = response["embeddings"]["float"].as_array().unwrap().len();
        let vectors = Cohere::parse_embed_response(&ok(response), count).unwrap();
        assert_eq!(vectors.len(), count);
    }
    for example in contract.examples("POST /v2/rerank") {
        let documents = example["request"]["documents"].as_array().unwrap().len();
        let results = Cohere::parse_rerank_response(&ok(&example["response"]), documents).unwrap();
        assert!(!results.is_empty());
        assert!(results
            .windows(2)
            .all(|w| w[0].relevance_score >= w[1].relevance_score));
    }
}

#[test]
fn qdrant_requests_follow_the_schema() {
    let Some(contract) = Contract::load("qdrant") else {
        return;
    };
    let q = qdrant();
    contract.assert_request(
        "POST /collections/{collection_name}/points/query",
        &q.query_request(&[0.1, 0.2, 0.3], 5, 0.3),
    );
    contract.assert_request(
        "PUT /collections/{collection_name}",
        &q.create_collection_request(1536),
    );
    for field in rag_core::upstream::qdrant::INDEXED_FIELDS {
        contract.assert_request(
            "PUT /collections/{collection_name}/index",
            &q.create_index_request(field),
        );
    }
    contract.assert_request(
        "POST /collections/{collection_name}/points/query",
        &q.hybrid_query_request(
            &[0.1, 0.2, 0.3],
            &keywords::query_sparse_vector("How do ROS 2 nodes talk?"),
            5,
            0.3,
        ),
    );
    let point = NewPoint {
        id: "550e8400-e29b-41d4-a716-446655440000".into(),
        vector: vec![0.1, 0.2, 0.3],
        sparse: keywords::sparse_vector("Nodes talk over topics; topics carry messages."),
        passage: passage(),
        hash: "h".into(),
    };
    for layout in [Layout::Hybrid, Layout::DenseOnly] {
        contract.assert_request(
            "PUT /collections/{collection_name}/points",
            &q.upsert_request(std::slice::from_ref(&point), layout),
        );
    }
    let delete = "POST /collections/{collection_name}/points/delete";
    contract.assert_request(delete, &q.delete_pages_request(&["p1", "p2"]));
    contract.assert_request(
        delete,
        &q.delete_points_request(&[
            PointId::Uuid("550e8400-e29b-41d4-a716-446655440000".into()),
            PointId::Num(4),
        ]),
    );
    let scroll = "POST /collections/{collection_name}/points/scroll";
    contract.assert_request(scroll, &q.scroll_request(64, None));
    contract.assert_request(scroll, &q.scroll_request(64, Some(&PointId::Num(9))));
    contract.assert_invalid_request(
        "PUT /collections/{collection_name}",
        &json!({"vectors": {"size": 3, "distance": "cosine"}}),
    );
    // The schema does catch a malformed fusion or sparse vector.
    contract.assert_invalid_request(
        "POST /collections/{collection_name}/points/query",
        &json!({"prefetch": [], "query": {"fusion": "sum"}}),
    );
    contract.assert_invalid_request(
        "PUT /collections/{collection_name}/points",
        &json!({"points": [{"id": 1, "vector": {"sparse": {"indices": [1]}}}]}),
    );
}

#[test]
fn qdrant_parsers_read_schema_shaped_responses() {
    let Some(contract) = Contract::load("qdrant") else {
        return;
    };
    let query = json!({"status": "ok", "time": 0.002, "usage": null, "result": {"points": [
        {"id": "550e8400-e29b-41d4-a716-446655440000", "version": 3, "score": 0.75,
         "payload": {"url": "u#a", "page_url": "u", "title": "T", "heading": "", "text": "x", "hash": "h"}}]}});
    contract.assert_valid(
        contract.pointer(
            "POST /collections/{collection_name}/points/query",
            &["responses", "200", "application/json"],
        ),
        &query,
    );
    assert_eq!(
        Qdrant::parse_query_response(&ok(&query)).unwrap()[0].score,
        0.75
    );
    let scroll = json!({"status": "ok", "time": 0.001, "result": {"points": [
        {"id": 40, "payload": {"page_url": "u", "hash": "h"}}], "next_page_offset": null}});
    contract.assert_valid(
        contract.pointer(
            "POST /collections/{collection_name}/points/scroll",
            &["responses", "200", "application/json"],
        ),
        &scroll,
    );
    assert_eq!(
        Qdrant::parse_scroll_response(&ok(&scroll)).unwrap().points[0].id,
        PointId::Num(40)
    );
    let exists = json!({"status": "ok", "time": 0.0, "result": {"exists": false}});
    contract.assert_valid(
        contract.pointer(
            "GET /collections/{collection_name}/exists",
            &["responses", "200", "application/json"],
        ),
        &exists,
    );
    assert!(!Qdrant::parse_exists_response(&ok(&exists)).unwrap());
}

#[test]
fn openai_requests_follow_the_schema() {
    let Some(contract) = Contract::load("openai") else {
        return;
    };
    let openai = OpenAi {
        base_url: "https://api.openai.com/v1".into(),
        api_key: "k".into(),
        model: "gpt-4o-mini".into(),
    };
    let messages = [
        ChatMessage::new(ChatRole::System, "rules"),
        ChatMessage::new(ChatRole::User, "earlier"),
        ChatMessage::new(ChatRole::Assistant, "reply [1]"),
        ChatMessage::new(ChatRole::User, "question"),
    ];
    for stream in [false, true] {
        contract.assert_request(
            "POST /chat/completions",
            &openai.chat_request(&messages, stream, 0.2),
        );
    }
    contract.assert_invalid_request(
        "POST /chat/completions",
        &json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
    );
}

#[test]
fn openai_parsers_read_the_official_examples() {
    let Some(contract) = Contract::load("openai") else {
        return;
    };
    let mut plain = 0;
    let mut streamed = 0;
    for example in contract.examples("POST /chat/completions") {
        if let Some(chunks) = example["stream_chunks"].as_array() {
            let mut body = String::new();
            for chunk in chunks {
                body.push_str(&format!("data: {chunk}\n\n"));
            }
            body.push_str("data: [DONE]\n\n");
            let mut decoder = ChatStream::new();
            let mut parsed = decoder.feed(body.as_bytes()).unwrap();
            parsed.extend(decoder.finish().unwrap());
            assert_eq!(parsed.len(), chunks.len());
            assert!(parsed.iter().any(|c| !c.delta.is_empty()));
            streamed += 1;
        } else if example["response"]["choices"][0]["message"]["content"].is_string() {
            let completion = OpenAi::parse_chat_response(&ok(&example["response"])).unwrap();
            assert!(!completion.content.is_empty());
            plain += 1;
        }
    }
    assert!(
        plain >= 1 && streamed >= 1,
        "plain {plain}, streamed {streamed}"
    );
}
