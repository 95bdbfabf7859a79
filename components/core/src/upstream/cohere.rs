//! Cohere v2: `POST /v2/embed` and `POST /v2/rerank`.

use http::{Method, Request, Response};
use serde::Deserialize;
use serde_json::json;

use super::{bearer, decode, json_request, Service, UpstreamError};
use crate::config::Settings;
use crate::retrieval::Passage;

/// Most texts Cohere accepts in one embed call.
pub const EMBED_BATCH_SIZE: usize = 96;

/// What the embedded texts are for: Cohere embeds queries and documents differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    SearchQuery,
    SearchDocument,
}

impl InputType {
    fn as_str(self) -> &'static str {
        match self {
            InputType::SearchQuery => "search_query",
            InputType::SearchDocument => "search_document",
        }
    }
}

/// A Cohere account and the models to use.
#[derive(Clone, PartialEq, Eq)]
pub struct Cohere {
    /// Without a trailing slash, e.g. `https://api.cohere.com`.
    pub base_url: String,
    pub api_key: String,
    pub embed_model: String,
    /// `None` = do not rerank.
    pub rerank_model: Option<String>,
}

impl std::fmt::Debug for Cohere {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cohere")
            .field("base_url", &self.base_url)
            .field("embed_model", &self.embed_model)
            .field("rerank_model", &self.rerank_model)
            .finish_non_exhaustive()
    }
}

/// One reranked document: its index in the request and its relevance (0..=1).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct RerankResult {
    pub index: usize,
    pub relevance_score: f32,
}

#[derive(Deserialize)]
struct EmbedResponse {
    embeddings: EmbedByType,
}

#[derive(Deserialize)]
struct EmbedByType {
    float: Option<Vec<Vec<f32>>>,
}

#[derive(Deserialize)]
struct RerankResponse {
    results: Vec<RerankResult>,
}

impl Cohere {
    /// `None` when no Cohere key is configured.
    pub fn from_settings(settings: &Settings) -> Option<Self> {
        Some(Self {
            base_url: settings.cohere_base_url.clone(),
            api_key: settings.cohere_api_key.clone()?,
            embed_model: settings.cohere_embed_model.clone(),
            rerank_model: settings.cohere_rerank_model.clone(),
        })
    }

    /// `POST /v2/embed` for at most [`EMBED_BATCH_SIZE`] texts, asking for float embeddings.
    ///
    /// # Panics
    /// When given more than [`EMBED_BATCH_SIZE`] texts (split them with `chunks`).
    pub fn embed_request(
        &self,
        texts: &[impl AsRef<str>],
        input_type: InputType,
    ) -> Request<Vec<u8>> {
        assert!(
            texts.len() <= EMBED_BATCH_SIZE,
            "Cohere embeds at most {EMBED_BATCH_SIZE} texts per call, got {}",
            texts.len()
        );
        let texts: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let body = json!({
            "model": self.embed_model,
            "texts": texts,
            "input_type": input_type.as_str(),
            "embedding_types": ["float"],
        });
        json_request(
            Method::POST,
            &format!("{}/v2/embed", self.base_url),
            bearer(&self.api_key),
            Some(&body),
        )
    }

    /// The float embeddings, in request order; `expected` is the number of texts sent.
    pub fn parse_embed_response(
        response: &Response<Vec<u8>>,
        expected: usize,
    ) -> Result<Vec<Vec<f32>>, UpstreamError> {
        let parsed: EmbedResponse = decode(Service::Cohere, response)?;
        let vectors = parsed
            .embeddings
            .float
            .ok_or_else(|| UpstreamError::bad_response(Service::Cohere, "no float embeddings"))?;
        if vectors.len() != expected {
            return Err(UpstreamError::bad_response(
                Service::Cohere,
                format!("{} embeddings for {expected} texts", vectors.len()),
            ));
        }
        if let Some(first) = vectors.first() {
            if first.is_empty() || vectors.iter().any(|v| v.len() != first.len()) {
                return Err(UpstreamError::bad_response(
                    Service::Cohere,
                    "embeddings of unequal or zero length",
                ));
            }
        }
        Ok(vectors)
    }

    /// `POST /v2/rerank` of `documents` against `query`, keeping the best `top_n`.
    /// `None` when no rerank model is configured.
    pub fn rerank_request(
        &self,
        query: &str,
        documents: &[impl AsRef<str>],
        top_n: usize,
    ) -> Option<Request<Vec<u8>>> {
        let model = self.rerank_model.as_ref()?;
        let documents: Vec<&str> = documents.iter().map(AsRef::as_ref).collect();
        let body = json!({
            "model": model,
            "query": query,
            "documents": documents,
            "top_n": top_n.min(documents.len()).max(1),
        });
        Some(json_request(
            Method::POST,
            &format!("{}/v2/rerank", self.base_url),
            bearer(&self.api_key),
            Some(&body),
        ))
    }

    /// The rerank results, best first; `document_count` is the number of documents sent.
    pub fn parse_rerank_response(
        response: &Response<Vec<u8>>,
        document_count: usize,
    ) -> Result<Vec<RerankResult>, UpstreamError> {
        let parsed: RerankResponse = decode(Service::Cohere, response)?;
        if let Some(bad) = parsed.results.iter().find(|r| r.index >= document_count) {
            return Err(UpstreamError::bad_response(
                Service::Cohere,
                format!(
                    "rerank index {} out of {document_count} documents",
                    bad.index
                ),
            ));
        }
        let mut results = parsed.results;
        results.sort_by(|a, b| b.relevance_score.total_cmp(&a.relevance_score));
        Ok(results)
    }
}

/// Reorders `passages` by rerank results, replacing each score by its relevance score;
/// passages the reranker did not return are dropped.
pub fn apply_rerank(passages: &[Passage], results: &[RerankResult]) -> Vec<Passage> {
    results
        .iter()
        .filter_map(|result| {
            let mut passage = passages.get(result.index)?.clone();
            passage.score = result.relevance_score;
            Some(passage)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn cohere(rerank: Option<&str>) -> Cohere {
        Cohere {
            base_url: "https://co.example".into(),
            api_key: "co-key".into(),
            embed_model: "embed-v4.0".into(),
            rerank_model: rerank.map(Into::into),
        }
    }

    fn body(request: &Request<Vec<u8>>) -> Value {
        serde_json::from_slice(request.body()).unwrap()
    }

    fn ok(value: Value) -> Response<Vec<u8>> {
        Response::new(serde_json::to_vec(&value).unwrap())
    }

    #[test]
    fn embed_request_shape() {
        let request = cohere(None).embed_request(&["a", "b"], InputType::SearchDocument);
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), "https://co.example/v2/embed");
        assert_eq!(request.headers()["authorization"], "Bearer co-key");
        assert_eq!(request.headers()["content-type"], "application/json");
        assert_eq!(
            body(&request),
            json!({"model": "embed-v4.0", "texts": ["a", "b"], "input_type": "search_document", "embedding_types": ["float"]})
        );
        let query = cohere(None).embed_request(&[String::from("q")], InputType::SearchQuery);
        assert_eq!(body(&query)["input_type"], "search_query");
    }

    #[test]
    #[should_panic(expected = "at most 96")]
    fn embed_batches_are_bounded() {
        let texts = vec!["t"; EMBED_BATCH_SIZE + 1];
        cohere(None).embed_request(&texts, InputType::SearchDocument);
    }

    #[test]
    fn embed_response_is_checked() {
        let good = ok(json!({"id": "x", "embeddings": {"float": [[0.1, 0.2], [0.3, 0.4]]}}));
        assert_eq!(
            Cohere::parse_embed_response(&good, 2).unwrap()[1],
            vec![0.3, 0.4]
        );
        assert!(
            Cohere::parse_embed_response(&good, 3).is_err(),
            "count mismatch"
        );
        let ragged = ok(json!({"embeddings": {"float": [[0.1, 0.2], [0.3]]}}));
        assert!(Cohere::parse_embed_response(&ragged, 2).is_err());
        let no_float = ok(json!({"embeddings": {"int8": [[1]]}}));
        assert!(Cohere::parse_embed_response(&no_float, 1).is_err());
        let limited = Response::builder().status(429).body(Vec::new()).unwrap();
        assert!(Cohere::parse_embed_response(&limited, 1)
            .unwrap_err()
            .is_retryable());
    }

    #[test]
    fn rerank_request_and_response() {
        assert!(cohere(None).rerank_request("q", &["d"], 3).is_none());
        let request = cohere(Some("rerank-v3.5"))
            .rerank_request("q", &["d1", "d2"], 5)
            .unwrap();
        assert_eq!(request.uri(), "https://co.example/v2/rerank");
        assert_eq!(
            body(&request),
            json!({"model": "rerank-v3.5", "query": "q", "documents": ["d1", "d2"], "top_n": 2})
        );
        let response = ok(
            json!({"results": [{"index": 0, "relevance_score": 0.2}, {"index": 1, "relevance_score": 0.9}]}),
        );
        let results = Cohere::parse_rerank_response(&response, 2).unwrap();
        assert_eq!(results[0].index, 1, "sorted best first");
        assert!(
            Cohere::parse_rerank_response(&response, 1).is_err(),
            "index out of range"
        );
    }

    #[test]
    fn rerank_reorders_passages() {
        let passage = |title: &str| Passage {
            url: format!("u/{title}"),
            page_url: "u".into(),
            title: title.into(),
            heading: String::new(),
            text: "t".into(),
            score: 0.4,
        };
        let passages = [passage("a"), passage("b"), passage("c")];
        let results = [
            RerankResult {
                index: 2,
                relevance_score: 0.9,
            },
            RerankResult {
                index: 0,
                relevance_score: 0.5,
            },
        ];
        let reranked = apply_rerank(&passages, &results);
        let titles: Vec<_> = reranked
            .iter()
            .map(|p| (p.title.as_str(), p.score))
            .collect();
        assert_eq!(titles, [("c", 0.9), ("a", 0.5)]);
    }

    #[test]
    fn debug_hides_the_key() {
        assert!(!format!("{:?}", cohere(None)).contains("co-key"));
    }
}
