//! Passages for a question: Cohere embeddings + Qdrant (+ Cohere rerank) when configured,
//! else the embedded SQLite FTS5 index written by `host ingest`.

use adapters::db::Db;
use rag_core::config::{RetrievalMode, Settings};
use rag_core::embedded_index;
use rag_core::error::ApiError;
use rag_core::keywords;
use rag_core::pipeline;
use rag_core::retrieval::Passage;
use rag_core::search_index;
use rag_core::upstream::cohere::{apply_rerank, Cohere, InputType};
use rag_core::upstream::qdrant::{HybridHits, Qdrant};
use rag_core::upstream::{Service, UpstreamError};

use crate::session::store_failure;
use crate::upstream;

/// The relevant passages for `query`, best first, at most `top_k`.
pub async fn retrieve(
    settings: &Settings,
    query: &str,
    top_k: u32,
) -> Result<Vec<Passage>, ApiError> {
    let mode = settings.retrieval_mode();
    let threshold = pipeline::score_threshold(mode, settings);
    match mode {
        RetrievalMode::Vector => vector(settings, query, top_k, threshold)
            .await
            .map_err(|error| {
                adapters::log::failure("chat", format_args!("retrieval failed: {error}"));
                ApiError::from(error)
            }),
        RetrievalMode::Keyword => keyword(query, top_k, threshold),
    }
}

async fn vector(
    settings: &Settings,
    query: &str,
    top_k: u32,
    threshold: f32,
) -> Result<Vec<Passage>, UpstreamError> {
    let (Some(cohere), Some(qdrant)) = (
        Cohere::from_settings(settings),
        Qdrant::from_settings(settings),
    ) else {
        unreachable!("vector retrieval runs only when Cohere and Qdrant are configured");
    };
    let texts = [query];
    let vector = upstream::call(
        Service::Cohere,
        settings,
        || cohere.embed_request(&texts, InputType::SearchQuery),
        |response| Cohere::parse_embed_response(response, texts.len()),
    )
    .await?
    .remove(0);

    let reranking = cohere.rerank_model.is_some();
    let limit = pipeline::vector_candidates(top_k, reranking);
    let hits = nearest(settings, &qdrant, query, &vector, limit, threshold).await?;
    if !reranking || hits.is_empty() {
        let mut hits = hits;
        hits.truncate(top_k as usize);
        return Ok(hits);
    }

    let documents: Vec<String> = hits.iter().map(rerank_document).collect();
    let results = upstream::call(
        Service::Cohere,
        settings,
        || {
            cohere
                .rerank_request(query, &documents, top_k as usize)
                .expect("a rerank model is configured")
        },
        |response| Cohere::parse_rerank_response(response, documents.len()),
    )
    .await?;
    let reranked = apply_rerank(&hits, &results);
    Ok(pipeline::relevant_passages(
        reranked,
        pipeline::rerank_threshold(settings),
        top_k,
    ))
}

/// The `limit` passages nearest the question: hybrid (dense + keyword prefetches fused in
/// one Query API call) when the question has keywords and the collection holds keyword
/// vectors; dense-only otherwise. Either way no passage below `threshold` cosine similarity
/// is returned.
async fn nearest(
    settings: &Settings,
    qdrant: &Qdrant,
    query: &str,
    vector: &[f32],
    limit: u32,
    threshold: f32,
) -> Result<Vec<Passage>, UpstreamError> {
    let sparse = keywords::query_sparse_vector(query);
    if !sparse.is_empty() {
        let hybrid = upstream::call(
            Service::Qdrant,
            settings,
            || qdrant.hybrid_query_request(vector, &sparse, limit, threshold),
            Qdrant::parse_hybrid_query_response,
        )
        .await?;
        match hybrid {
            // Fused scores are ranks, not similarities: the threshold was applied inside.
            HybridHits::Hits(hits) => return Ok(hits),
            HybridHits::DenseOnlyCollection => {
                adapters::log::failure(
                    "chat",
                    "the collection has no keyword vectors; dense-only retrieval (re-ingest to upgrade)",
                )
            }
        }
    }
    let hits = upstream::call(
        Service::Qdrant,
        settings,
        || qdrant.query_request(vector, limit, threshold),
        Qdrant::parse_query_response,
    )
    .await?;
    Ok(pipeline::relevant_passages(hits, threshold, limit))
}

/// What the reranker reads: where the passage sits in the book, then its text.
fn rerank_document(passage: &Passage) -> String {
    if passage.heading.is_empty() {
        format!("{}\n{}", passage.title, passage.text)
    } else {
        format!("{} — {}\n{}", passage.title, passage.heading, passage.text)
    }
}

fn keyword(query: &str, top_k: u32, threshold: f32) -> Result<Vec<Passage>, ApiError> {
    let db = Db::embedded().map_err(store_failure)?;
    let candidates = top_k.saturating_mul(search_index::CANDIDATES_PER_PASSAGE);
    let passages = match search_index::search(&db, query, candidates) {
        Ok(passages) if !passages.is_empty() => passages,
        // No match, or no index to search: the check readiness uses tells an unanswerable
        // question from a missing or empty index, at no cost when something matched.
        searched => {
            let state = embedded_index::state(&db).map_err(store_failure)?;
            if let Some(unavailable) = state.unavailable() {
                return Err(unavailable);
            }
            searched.map_err(store_failure)?
        }
    };
    Ok(pipeline::covered_passages(passages, threshold, top_k))
}
