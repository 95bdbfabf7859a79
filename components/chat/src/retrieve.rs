//! Passages for a question: Cohere embeddings + Qdrant (+ Cohere rerank) when configured,
//! else the embedded SQLite FTS5 index written by `host ingest`.

use adapters::db::Db;
use rag_core::config::{RetrievalMode, Settings};
use rag_core::error::ApiError;
use rag_core::pipeline;
use rag_core::retrieval::Passage;
use rag_core::embedded_index;
use rag_core::search_index;
use rag_core::upstream::cohere::{apply_rerank, Cohere, InputType};
use rag_core::upstream::qdrant::Qdrant;
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
                eprintln!("chat: retrieval failed: {error}");
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
    let hits = upstream::call(
        Service::Qdrant,
        settings,
        || qdrant.query_request(&vector, limit, threshold),
        Qdrant::parse_query_response,
    )
    .await?;
    let hits = pipeline::relevant_passages(hits, threshold, limit);
    if !reranking || hits.len() < 2 {
        return Ok(pipeline::relevant_passages(hits, threshold, top_k));
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
    let mut reranked = apply_rerank(&hits, &results);
    reranked.truncate(top_k as usize);
    Ok(reranked)
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
    let passages = match search_index::search(&db, query, top_k) {
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
    Ok(pipeline::relevant_passages(passages, threshold, top_k))
}
