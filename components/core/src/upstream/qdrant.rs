//! Qdrant REST: collection setup, point upsert / delete / scroll (ingestion), and the Query API
//! (retrieval). Every update waits for the write to apply (`?wait=true`), so a finished ingest
//! is immediately searchable.

use std::collections::BTreeSet;
use std::fmt;

use http::{Method, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{decode, json_request, Service, UpstreamError};
use crate::config::Settings;
use crate::keywords::SparseVector;
use crate::retrieval::Passage;

/// Payload fields indexed as `keyword`, so deletes and scrolls by page stay fast.
pub const INDEXED_FIELDS: [&str; 2] = ["url", "page_url"];

/// The dense (embedding) vector of each point in a hybrid collection.
pub const DENSE_VECTOR: &str = "dense";
/// The sparse keyword vector ([`crate::keywords::sparse_vector`]) beside it; Qdrant weighs
/// its terms by IDF over the collection (`modifier: idf`).
pub const SPARSE_VECTOR: &str = "sparse";

/// Candidates each hybrid prefetch hands to the fusion, per passage asked for.
pub const HYBRID_POOL_PER_PASSAGE: u32 = 4;
/// Most candidates a hybrid prefetch hands to the fusion.
pub const MAX_HYBRID_POOL: u32 = 100;

/// How a collection stores its vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Named `dense` and `sparse` vectors: hybrid retrieval (what ingest creates).
    Hybrid,
    /// One unnamed dense vector, as collections created before hybrid retrieval are:
    /// dense-only retrieval until the collection is deleted and ingested again.
    DenseOnly,
}

/// What an existing collection holds, as far as writing to it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectionShape {
    pub layout: Layout,
    /// Dimensions of its dense vector; embeddings of another size are refused.
    pub vector_size: usize,
}

/// What a hybrid query got back.
#[derive(Debug, Clone, PartialEq)]
pub enum HybridHits {
    Hits(Vec<Passage>),
    /// The collection has no named vectors (see [`Layout::DenseOnly`]): ask
    /// [`Qdrant::query_request`] instead.
    DenseOnlyCollection,
}

/// A Qdrant point id: an unsigned integer or a UUID string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PointId {
    Num(u64),
    Uuid(String),
}

impl fmt::Display for PointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PointId::Num(n) => write!(f, "{n}"),
            PointId::Uuid(s) => f.write_str(s),
        }
    }
}

/// A chunk to store: its id (a UUID string), vectors, passage and content hash.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPoint {
    pub id: String,
    pub vector: Vec<f32>,
    /// Its keywords; stored only in a [`Layout::Hybrid`] collection.
    pub sparse: SparseVector,
    /// Stored as the payload; its `score` is not stored.
    pub passage: Passage,
    /// Content hash, so a re-ingest can skip unchanged chunks.
    pub hash: String,
}

/// What a scroll returns about a stored point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPoint {
    pub id: PointId,
    pub page_url: String,
    pub hash: String,
}

/// One page of a scroll; pass `next_offset` to get the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrollPage {
    pub points: Vec<StoredPoint>,
    pub next_offset: Option<PointId>,
}

/// A Qdrant collection.
#[derive(Clone, PartialEq, Eq)]
pub struct Qdrant {
    /// Without a trailing slash, e.g. `https://xyz.cloud.qdrant.io:6333`.
    pub url: String,
    pub api_key: Option<String>,
    pub collection: String,
}

impl fmt::Debug for Qdrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Qdrant")
            .field("url", &self.url)
            .field("collection", &self.collection)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Envelope<T> {
    result: T,
}

#[derive(Deserialize)]
struct QueryResult {
    points: Vec<ScoredPoint>,
}

#[derive(Deserialize)]
struct ScoredPoint {
    score: f32,
    payload: Option<PassagePayload>,
}

#[derive(Deserialize)]
struct PassagePayload {
    url: String,
    #[serde(default)]
    page_url: String,
    title: String,
    #[serde(default)]
    heading: String,
    text: String,
}

#[derive(Deserialize)]
struct Existence {
    exists: bool,
}

#[derive(Deserialize)]
struct ScrollResult {
    points: Vec<ScrollRecord>,
    next_page_offset: Option<PointId>,
}

#[derive(Deserialize)]
struct ScrollRecord {
    id: PointId,
    payload: Option<ScrollPayload>,
}

#[derive(Deserialize)]
struct ScrollPayload {
    #[serde(default)]
    page_url: String,
    #[serde(default)]
    hash: String,
}

impl Qdrant {
    /// `None` when no Qdrant URL is configured.
    pub fn from_settings(settings: &Settings) -> Option<Self> {
        Some(Self {
            url: settings.qdrant_url.clone()?,
            api_key: settings.qdrant_api_key.clone(),
            collection: settings.qdrant_collection.clone(),
        })
    }

    fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Request<Vec<u8>> {
        let uri = format!("{}/collections/{}{path}", self.url, self.collection);
        let credential = self.api_key.as_ref().map(|key| ("api-key", key.clone()));
        json_request(method, &uri, credential, body)
    }

    /// `POST /collections/{c}/points/query`: the `limit` nearest passages scoring at least
    /// `score_threshold`.
    pub fn query_request(
        &self,
        vector: &[f32],
        limit: u32,
        score_threshold: f32,
    ) -> Request<Vec<u8>> {
        let body = json!({
            "query": vector,
            "limit": limit,
            "score_threshold": score_threshold,
            "with_payload": true,
        });
        self.request(Method::POST, "/points/query", Some(&body))
    }

    /// `POST /collections/{c}/points/query` of a hybrid collection, in one call: a dense
    /// prefetch of the nearest passages with at least `min_similarity`, and a sparse prefetch
    /// that ranks those same candidates by the question's keywords; the two rankings are fused
    /// with Reciprocal Rank Fusion. Keyword evidence reorders the candidates but cannot bring
    /// in a passage below the similarity threshold, so an off-topic question still finds
    /// nothing. Scores are RRF scores, not similarities.
    pub fn hybrid_query_request(
        &self,
        dense: &[f32],
        sparse: &SparseVector,
        limit: u32,
        min_similarity: f32,
    ) -> Request<Vec<u8>> {
        let pool = limit
            .saturating_mul(HYBRID_POOL_PER_PASSAGE)
            .clamp(limit, MAX_HYBRID_POOL.max(limit));
        let nearest = json!({
            "query": dense,
            "using": DENSE_VECTOR,
            "score_threshold": min_similarity,
            "limit": pool,
        });
        let body = json!({
            "prefetch": [
                nearest,
                {
                    "prefetch": nearest,
                    "query": { "indices": sparse.indices, "values": sparse.values },
                    "using": SPARSE_VECTOR,
                    "limit": pool,
                },
            ],
            "query": { "fusion": "rrf" },
            "limit": limit,
            "with_payload": true,
        });
        self.request(Method::POST, "/points/query", Some(&body))
    }

    /// The hits of [`Self::hybrid_query_request`], or word that the collection has only an
    /// unnamed vector (Qdrant answers 400 naming the missing vector).
    pub fn parse_hybrid_query_response(
        response: &Response<Vec<u8>>,
    ) -> Result<HybridHits, UpstreamError> {
        if response.status() == http::StatusCode::BAD_REQUEST {
            let error: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
            let message = error["status"]["error"].as_str().unwrap_or("");
            if message.to_ascii_lowercase().contains("vector name") {
                return Ok(HybridHits::DenseOnlyCollection);
            }
        }
        Self::parse_query_response(response).map(HybridHits::Hits)
    }

    /// The hits as passages, best first, with Qdrant's cosine similarity as the score.
    pub fn parse_query_response(
        response: &Response<Vec<u8>>,
    ) -> Result<Vec<Passage>, UpstreamError> {
        let parsed: Envelope<QueryResult> = decode(Service::Qdrant, response)?;
        parsed
            .result
            .points
            .into_iter()
            .map(|point| {
                let payload = point.payload.ok_or_else(|| {
                    UpstreamError::bad_response(Service::Qdrant, "a hit has no payload")
                })?;
                Ok(Passage {
                    url: payload.url,
                    page_url: payload.page_url,
                    title: payload.title,
                    heading: payload.heading,
                    text: payload.text,
                    score: point.score,
                })
            })
            .collect()
    }

    /// `GET /collections/{c}/exists`.
    pub fn exists_request(&self) -> Request<Vec<u8>> {
        self.request(Method::GET, "/exists", None)
    }

    /// Whether the collection exists.
    pub fn parse_exists_response(response: &Response<Vec<u8>>) -> Result<bool, UpstreamError> {
        let parsed: Envelope<Existence> = decode(Service::Qdrant, response)?;
        Ok(parsed.result.exists)
    }

    /// `PUT /collections/{c}` with a [`Layout::Hybrid`] layout: a cosine [`DENSE_VECTOR`] of
    /// `vector_size` dimensions and a [`SPARSE_VECTOR`] weighed by IDF.
    pub fn create_collection_request(&self, vector_size: usize) -> Request<Vec<u8>> {
        let body = json!({
            "vectors": { DENSE_VECTOR: { "size": vector_size, "distance": "Cosine" } },
            "sparse_vectors": { SPARSE_VECTOR: { "modifier": "idf" } },
        });
        self.request(Method::PUT, "", Some(&body))
    }

    /// `GET /collections/{c}`: the collection's configuration.
    pub fn collection_info_request(&self) -> Request<Vec<u8>> {
        self.request(Method::GET, "", None)
    }

    /// How the collection stores vectors; an error for a layout this service did not create.
    pub fn parse_layout(response: &Response<Vec<u8>>) -> Result<Layout, UpstreamError> {
        Self::parse_shape(response).map(|shape| shape.layout)
    }

    /// The collection's layout and dense vector size; an error for a layout this service did
    /// not create.
    pub fn parse_shape(response: &Response<Vec<u8>>) -> Result<CollectionShape, UpstreamError> {
        let info: Envelope<Value> = decode(Service::Qdrant, response)?;
        let params = &info.result["config"]["params"];
        let vectors = &params["vectors"];
        let size_of = |dense: &Value| {
            dense["size"]
                .as_u64()
                .map(|size| size as usize)
                .ok_or_else(|| {
                    UpstreamError::bad_response(
                        Service::Qdrant,
                        "the collection's vector has no size",
                    )
                })
        };
        if vectors.get("size").is_some() {
            return Ok(CollectionShape {
                layout: Layout::DenseOnly,
                vector_size: size_of(vectors)?,
            });
        }
        let has_sparse = params["sparse_vectors"].get(SPARSE_VECTOR).is_some();
        if let (Some(dense), true) = (vectors.get(DENSE_VECTOR), has_sparse) {
            return Ok(CollectionShape {
                layout: Layout::Hybrid,
                vector_size: size_of(dense)?,
            });
        }
        Err(UpstreamError::bad_response(
            Service::Qdrant,
            format!(
                "the collection's vectors are neither one unnamed vector nor `{DENSE_VECTOR}` + `{SPARSE_VECTOR}`; delete it and ingest again"
            ),
        ))
    }

    /// `PUT /collections/{c}/index?wait=true`: a keyword index on one payload field (see
    /// [`INDEXED_FIELDS`]).
    pub fn create_index_request(&self, field_name: &str) -> Request<Vec<u8>> {
        let body = json!({ "field_name": field_name, "field_schema": "keyword" });
        self.request(Method::PUT, "/index?wait=true", Some(&body))
    }

    /// `PUT /collections/{c}/points?wait=true`, with the vectors the layout holds.
    pub fn upsert_request(&self, points: &[NewPoint], layout: Layout) -> Request<Vec<u8>> {
        let points: Vec<Value> = points
            .iter()
            .map(|point| {
                let p = &point.passage;
                let vector = match layout {
                    Layout::DenseOnly => json!(point.vector),
                    Layout::Hybrid => json!({
                        DENSE_VECTOR: point.vector,
                        SPARSE_VECTOR: {
                            "indices": point.sparse.indices,
                            "values": point.sparse.values,
                        },
                    }),
                };
                json!({
                    "id": point.id,
                    "vector": vector,
                    "payload": {
                        "url": p.url, "page_url": p.page_url, "title": p.title,
                        "heading": p.heading, "text": p.text, "hash": point.hash,
                    },
                })
            })
            .collect();
        self.request(
            Method::PUT,
            "/points?wait=true",
            Some(&json!({ "points": points })),
        )
    }

    /// `POST /collections/{c}/points/delete?wait=true` of every point of these pages.
    pub fn delete_pages_request(&self, page_urls: &[impl AsRef<str>]) -> Request<Vec<u8>> {
        // Qdrant requires the values of `match.any` to be unique.
        let unique: BTreeSet<&str> = page_urls.iter().map(AsRef::as_ref).collect();
        let body = json!({
            "filter": { "must": [ { "key": "page_url", "match": { "any": unique } } ] }
        });
        self.request(Method::POST, "/points/delete?wait=true", Some(&body))
    }

    /// `POST /collections/{c}/points/delete?wait=true` of these point ids.
    pub fn delete_points_request(&self, ids: &[PointId]) -> Request<Vec<u8>> {
        self.request(
            Method::POST,
            "/points/delete?wait=true",
            Some(&json!({ "points": ids })),
        )
    }

    /// `POST /collections/{c}/points/scroll`: ids with their `page_url` and `hash`, no vectors.
    pub fn scroll_request(&self, limit: u32, offset: Option<&PointId>) -> Request<Vec<u8>> {
        let mut body = json!({
            "limit": limit,
            "with_payload": ["page_url", "hash"],
            "with_vector": false,
        });
        if let Some(offset) = offset {
            body["offset"] = json!(offset);
        }
        self.request(Method::POST, "/points/scroll", Some(&body))
    }

    /// One page of stored points.
    pub fn parse_scroll_response(
        response: &Response<Vec<u8>>,
    ) -> Result<ScrollPage, UpstreamError> {
        let parsed: Envelope<ScrollResult> = decode(Service::Qdrant, response)?;
        Ok(ScrollPage {
            points: parsed
                .result
                .points
                .into_iter()
                .map(|record| {
                    let payload = record.payload.unwrap_or(ScrollPayload {
                        page_url: String::new(),
                        hash: String::new(),
                    });
                    StoredPoint {
                        id: record.id,
                        page_url: payload.page_url,
                        hash: payload.hash,
                    }
                })
                .collect(),
            next_offset: parsed.result.next_page_offset,
        })
    }

    /// For updates and setup calls whose result we do not need: success or the classified error.
    pub fn check_ok(response: &Response<Vec<u8>>) -> Result<(), UpstreamError> {
        decode::<Value>(Service::Qdrant, response).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qdrant(key: Option<&str>) -> Qdrant {
        Qdrant {
            url: "http://q.example:6333".into(),
            api_key: key.map(Into::into),
            collection: "book".into(),
        }
    }

    fn body(request: &Request<Vec<u8>>) -> Value {
        serde_json::from_slice(request.body()).unwrap()
    }

    fn ok(value: Value) -> Response<Vec<u8>> {
        Response::new(serde_json::to_vec(&value).unwrap())
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
    fn query_request_and_hits() {
        let request = qdrant(Some("qk")).query_request(&[0.5, 0.25], 5, 0.3);
        assert_eq!(
            request.uri(),
            "http://q.example:6333/collections/book/points/query"
        );
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.headers()["api-key"], "qk");
        let sent = body(&request);
        assert_eq!(sent["query"], json!([0.5, 0.25]));
        assert_eq!(sent["limit"], 5);
        assert_eq!(sent["with_payload"], true);
        assert!((sent["score_threshold"].as_f64().unwrap() - 0.3).abs() < 1e-6);

        let response = ok(json!({"status": "ok", "time": 0.001, "result": {"points": [
            {"id": "6f1c0d1e-0000-4000-8000-000000000001", "version": 1, "score": 0.8,
             "payload": {"url": "u#h", "page_url": "u", "title": "T", "heading": "H", "text": "x", "hash": "h"}}
        ]}}));
        let hits = Qdrant::parse_query_response(&response).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!((hits[0].title.as_str(), hits[0].score), ("T", 0.8));
        let no_payload = ok(json!({"result": {"points": [{"id": 1, "version": 1, "score": 0.8}]}}));
        assert!(Qdrant::parse_query_response(&no_payload).is_err());
    }

    #[test]
    fn no_api_key_header_without_a_key() {
        assert!(qdrant(None)
            .exists_request()
            .headers()
            .get("api-key")
            .is_none());
    }

    #[test]
    fn collection_setup_requests() {
        let q = qdrant(None);
        let exists = q.exists_request();
        assert_eq!(
            (exists.method(), exists.uri().path()),
            (&Method::GET, "/collections/book/exists")
        );
        assert!(Qdrant::parse_exists_response(&ok(json!({"result": {"exists": true}}))).unwrap());
        let create = q.create_collection_request(1536);
        assert_eq!(create.method(), Method::PUT);
        assert_eq!(create.uri().path(), "/collections/book");
        assert_eq!(
            body(&create),
            json!({
                "vectors": {"dense": {"size": 1536, "distance": "Cosine"}},
                "sparse_vectors": {"sparse": {"modifier": "idf"}},
            })
        );
        let info = q.collection_info_request();
        assert_eq!(
            (info.method(), info.uri().path()),
            (&Method::GET, "/collections/book")
        );
        let layout = |params: Value| {
            Qdrant::parse_layout(&ok(
                json!({"result": {"status": "green", "config": {"params": params}}}),
            ))
        };
        assert_eq!(
            layout(json!({"vectors": {"size": 4, "distance": "Cosine"}})).unwrap(),
            Layout::DenseOnly
        );
        assert_eq!(
            layout(json!({"vectors": {"dense": {"size": 4, "distance": "Cosine"}}, "sparse_vectors": {"sparse": {"modifier": "idf"}}})).unwrap(),
            Layout::Hybrid
        );
        assert!(layout(json!({"vectors": {"other": {"size": 4, "distance": "Cosine"}}})).is_err());
        let shape = |params: Value| {
            Qdrant::parse_shape(&ok(
                json!({"result": {"status": "green", "config": {"params": params}}}),
            ))
        };
        assert_eq!(
            shape(json!({"vectors": {"size": 1024, "distance": "Cosine"}})).unwrap(),
            CollectionShape {
                layout: Layout::DenseOnly,
                vector_size: 1024
            }
        );
        assert_eq!(
            shape(json!({"vectors": {"dense": {"size": 1536, "distance": "Cosine"}}, "sparse_vectors": {"sparse": {"modifier": "idf"}}})).unwrap(),
            CollectionShape { layout: Layout::Hybrid, vector_size: 1536 }
        );
        let index = q.create_index_request("page_url");
        assert_eq!(index.uri().path(), "/collections/book/index");
        assert_eq!(
            body(&index),
            json!({"field_name": "page_url", "field_schema": "keyword"})
        );
    }

    #[test]
    fn upsert_payload_is_the_passage_without_score_plus_hash() {
        let point = NewPoint {
            id: "550e8400-e29b-41d4-a716-446655440000".into(),
            vector: vec![1.0, 0.0],
            sparse: SparseVector {
                indices: vec![3, 9],
                values: vec![1.0, 2.0],
            },
            passage: Passage {
                score: 0.9,
                ..passage()
            },
            hash: "abc".into(),
        };
        let dense_only =
            body(&qdrant(None).upsert_request(std::slice::from_ref(&point), Layout::DenseOnly));
        assert_eq!(dense_only["points"][0]["vector"], json!([1.0, 0.0]));
        let request = qdrant(None).upsert_request(&[point], Layout::Hybrid);
        assert_eq!(request.uri().query(), Some("wait=true"));
        let sent = body(&request);
        assert_eq!(
            sent["points"][0]["payload"],
            json!({"url": "https://b/docs/a#h", "page_url": "https://b/docs/a", "title": "A", "heading": "H", "text": "text", "hash": "abc"})
        );
        assert_eq!(
            sent["points"][0]["id"],
            "550e8400-e29b-41d4-a716-446655440000"
        );
        assert_eq!(
            sent["points"][0]["vector"],
            json!({"dense": [1.0, 0.0], "sparse": {"indices": [3, 9], "values": [1.0, 2.0]}})
        );
    }

    #[test]
    fn hybrid_query_fuses_dense_and_sparse_prefetches() {
        let sparse = SparseVector {
            indices: vec![7, 11],
            values: vec![1.0, 1.0],
        };
        let request = qdrant(Some("qk")).hybrid_query_request(&[0.5, 0.25], &sparse, 5, 0.3);
        assert_eq!(request.uri().path(), "/collections/book/points/query");
        let sent = body(&request);
        assert_eq!(sent["query"], json!({"fusion": "rrf"}));
        assert_eq!(
            (sent["limit"].clone(), sent["with_payload"].clone()),
            (json!(5), json!(true))
        );
        let dense = &sent["prefetch"][0];
        assert_eq!(dense["using"], "dense");
        assert_eq!(dense["query"], json!([0.5, 0.25]));
        assert_eq!(dense["limit"], 20);
        assert!((dense["score_threshold"].as_f64().unwrap() - 0.3).abs() < 1e-6);
        let keyword = &sent["prefetch"][1];
        assert_eq!(keyword["using"], "sparse");
        assert_eq!(
            keyword["query"],
            json!({"indices": [7, 11], "values": [1.0, 1.0]})
        );
        assert_eq!(
            keyword["prefetch"], *dense,
            "keywords rank only the similar candidates"
        );

        let hits = ok(json!({"result": {"points": [
            {"id": 1, "version": 1, "score": 0.5, "payload": {"url": "u#h", "page_url": "u", "title": "T", "heading": "", "text": "x"}}
        ]}}));
        match Qdrant::parse_hybrid_query_response(&hits).unwrap() {
            HybridHits::Hits(passages) => assert_eq!(passages[0].score, 0.5),
            other => panic!("{other:?}"),
        }
        let unnamed = Response::builder()
            .status(400)
            .body(br#"{"status":{"error":"Wrong input: Not existing vector name error: dense"},"time":0.0}"#.to_vec())
            .unwrap();
        assert_eq!(
            Qdrant::parse_hybrid_query_response(&unnamed).unwrap(),
            HybridHits::DenseOnlyCollection
        );
        let other = Response::builder()
            .status(400)
            .body(br#"{"status":{"error":"Wrong input: bad limit"}}"#.to_vec())
            .unwrap();
        assert!(Qdrant::parse_hybrid_query_response(&other).is_err());
    }

    #[test]
    fn deletes_by_page_and_by_id() {
        let by_page = qdrant(None).delete_pages_request(&["p2", "p1", "p2"]);
        assert_eq!(by_page.uri().path(), "/collections/book/points/delete");
        assert_eq!(
            body(&by_page),
            json!({"filter": {"must": [{"key": "page_url", "match": {"any": ["p1", "p2"]}}]}})
        );
        let by_id =
            qdrant(None).delete_points_request(&[PointId::Uuid("a".into()), PointId::Num(3)]);
        assert_eq!(body(&by_id), json!({"points": ["a", 3]}));
    }

    #[test]
    fn scroll_pages() {
        let first = qdrant(None).scroll_request(100, None);
        assert_eq!(
            body(&first),
            json!({"limit": 100, "with_payload": ["page_url", "hash"], "with_vector": false})
        );
        let next = qdrant(None).scroll_request(100, Some(&PointId::Uuid("x".into())));
        assert_eq!(body(&next)["offset"], "x");
        let response = ok(json!({"result": {"points": [
            {"id": "x", "payload": {"page_url": "p", "hash": "h"}}, {"id": 7, "payload": null}
        ], "next_page_offset": "y"}}));
        let page = Qdrant::parse_scroll_response(&response).unwrap();
        assert_eq!(
            page.points[0],
            StoredPoint {
                id: PointId::Uuid("x".into()),
                page_url: "p".into(),
                hash: "h".into()
            }
        );
        assert_eq!(page.points[1].id, PointId::Num(7));
        assert_eq!(page.next_offset, Some(PointId::Uuid("y".into())));
        let last = ok(json!({"result": {"points": [], "next_page_offset": null}}));
        assert_eq!(
            Qdrant::parse_scroll_response(&last).unwrap().next_offset,
            None
        );
    }

    #[test]
    fn errors_are_classified() {
        let missing = Response::builder()
            .status(404)
            .body(br#"{"status":{"error":"Not found"}}"#.to_vec())
            .unwrap();
        let error = Qdrant::check_ok(&missing).unwrap_err();
        assert!(!error.is_retryable());
        assert_eq!(error.to_api_error().status, 502);
        assert!(Qdrant::check_ok(&ok(json!({"result": true, "status": "ok"}))).is_ok());
    }
}
