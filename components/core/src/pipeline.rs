//! The decisions `/chat` makes between its I/O steps: how many passages to fetch, which of them
//! count, whether to refuse, extract or generate, and how answers are cut into stream events.
//! The component performs the I/O; everything here is pure so it is tested natively.

use crate::chat::{ChatRequest, Source};
use crate::config::{GenerationMode, RetrievalMode, Settings};
use crate::extractive;
use crate::retrieval::Passage;

/// Passages fetched to go with a selected passage: the selection is the main context, so only
/// a few book passages are added around it.
pub const SELECTED_TEXT_TOP_K: u32 = 3;

/// Characters of the selected passage added to the retrieval query, so retrieval looks for
/// what the selection is about and not only for the (often short) question.
pub const SELECTED_TEXT_QUERY_CHARS: usize = 500;

/// Candidates Qdrant returns per passage kept when a reranker reorders them.
pub const RERANK_CANDIDATES_PER_PASSAGE: u32 = 4;

/// Most candidates sent to the reranker.
pub const MAX_RERANK_CANDIDATES: u32 = 40;

/// Sampling temperature of generated answers: low, since answers quote the book.
pub const ANSWER_TEMPERATURE: f32 = 0.2;

/// Whether the client asked for Server-Sent Events: `stream: true` or an `Accept` header that
/// lists `text/event-stream`.
pub fn wants_stream(request: &ChatRequest, accept: Option<&str>) -> bool {
    request.stream
        || accept.is_some_and(|accept| {
            accept.split(',').any(|part| {
                part.split(';')
                    .next()
                    .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/event-stream"))
            })
        })
}

/// Passages to hand to the answer: the request's `top_k`, else the configured one, and at
/// most [`SELECTED_TEXT_TOP_K`] when the reader selected a passage.
pub fn effective_top_k(request: &ChatRequest, settings: &Settings) -> u32 {
    let top_k = request.top_k.unwrap_or(settings.top_k).max(1);
    if request.selected_text.is_some() {
        top_k.min(SELECTED_TEXT_TOP_K)
    } else {
        top_k
    }
}

/// What retrieval searches for: the question, plus the start of the selected passage.
pub fn retrieval_query(request: &ChatRequest) -> String {
    match &request.selected_text {
        Some(selected) => {
            let start: String = selected.chars().take(SELECTED_TEXT_QUERY_CHARS).collect();
            format!("{}\n{start}", request.query)
        }
        None => request.query.clone(),
    }
}

/// How many nearest passages to ask the vector store for: more than `top_k` when a reranker
/// will choose among them.
pub fn vector_candidates(top_k: u32, reranking: bool) -> u32 {
    if reranking {
        (top_k * RERANK_CANDIDATES_PER_PASSAGE).clamp(top_k, MAX_RERANK_CANDIDATES.max(top_k))
    } else {
        top_k
    }
}

/// The least score a retrieved passage needs, by what its score means: the share of the
/// question's IDF mass it matches for keyword retrieval ([`crate::search_index::coverage`]),
/// the cosine similarity of the embeddings for vector retrieval. Each has its own setting,
/// since the two scales have nothing in common.
pub fn score_threshold(mode: RetrievalMode, settings: &Settings) -> f32 {
    match mode {
        RetrievalMode::Keyword => settings.keyword_min_coverage,
        RetrievalMode::Vector => settings.vector_min_similarity,
    }
}

/// The least relevance score a reranked passage needs (the reranker's own scale).
pub fn rerank_threshold(settings: &Settings) -> f32 {
    settings.rerank_min_relevance
}

/// The passages that count: at least `threshold`, best first, at most `top_k`.
pub fn relevant_passages(mut passages: Vec<Passage>, threshold: f32, top_k: u32) -> Vec<Passage> {
    passages.retain(|passage| passage.score >= threshold);
    passages.sort_by(|a, b| b.score.total_cmp(&a.score));
    passages.truncate(top_k as usize);
    passages
}

/// Keyword retrieval's passages that count: coverage at least `threshold`, in the search's
/// (BM25) order, at most `top_k`. Coverage decides relevance, not rank.
pub fn covered_passages(mut passages: Vec<Passage>, threshold: f32, top_k: u32) -> Vec<Passage> {
    passages.retain(|passage| passage.score >= threshold);
    passages.truncate(top_k as usize);
    passages
}

/// How the answer will be produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing relevant: answer [`extractive::REFUSAL`] without calling a language model.
    Refuse,
    /// Answer with this text, made of quoted sentences (no language model configured).
    Extract(String),
    /// Ask the language model.
    Generate,
}

/// Refuse when there is neither a relevant passage nor a selected passage to answer from;
/// otherwise extract or generate according to the configuration.
pub fn plan(
    query: &str,
    passages: &[Passage],
    selected_text: Option<&str>,
    mode: GenerationMode,
) -> Plan {
    if passages.is_empty() && selected_text.is_none() {
        return Plan::Refuse;
    }
    match mode {
        GenerationMode::Llm => Plan::Generate,
        GenerationMode::Extractive => {
            let answer = extractive::extractive_answer(query, passages, selected_text);
            if answer == extractive::REFUSAL {
                Plan::Refuse
            } else {
                Plan::Extract(answer)
            }
        }
    }
}

/// The sources as stored with the assistant message: the JSON array the client received.
pub fn sources_json(sources: &[Source]) -> String {
    serde_json::to_string(sources).expect("sources always serialise")
}

/// A finished answer cut into stream pieces at line ends (an extractive answer is one line per
/// passage), so a streaming client renders it progressively like a generated one. Joining the
/// pieces gives the answer back.
pub fn stream_pieces(answer: &str) -> Vec<&str> {
    answer.split_inclusive('\n').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> ChatRequest {
        ChatRequest::from_json(json.to_string().as_bytes()).unwrap()
    }

    fn settings() -> Settings {
        Settings::from_lookup(|_| None).unwrap()
    }

    fn passage(name: &str, score: f32) -> Passage {
        Passage {
            url: format!("https://b/docs/{name}"),
            page_url: format!("https://b/docs/{name}"),
            title: name.into(),
            heading: String::new(),
            text: format!("{name} is described here. It matters."),
            score,
        }
    }

    #[test]
    fn streaming_is_asked_by_flag_or_accept_header() {
        let plain = request(serde_json::json!({"query": "q"}));
        assert!(!wants_stream(&plain, None));
        assert!(!wants_stream(&plain, Some("application/json")));
        assert!(wants_stream(&plain, Some("text/event-stream")));
        assert!(wants_stream(
            &plain,
            Some("application/json;q=0.9, Text/Event-Stream; q=1")
        ));
        assert!(!wants_stream(&plain, Some("text/event-streams")));
        assert!(wants_stream(
            &request(serde_json::json!({"query": "q", "stream": true})),
            None
        ));
    }

    #[test]
    fn top_k_comes_from_request_then_settings_and_shrinks_for_selections() {
        let s = settings();
        assert_eq!(
            effective_top_k(&request(serde_json::json!({"query": "q"})), &s),
            5
        );
        assert_eq!(
            effective_top_k(&request(serde_json::json!({"query": "q", "top_k": 9})), &s),
            9
        );
        let selected = request(serde_json::json!({"query": "q", "top_k": 9, "selected_text": "x"}));
        assert_eq!(effective_top_k(&selected, &s), SELECTED_TEXT_TOP_K);
        let selected = request(serde_json::json!({"query": "q", "top_k": 2, "selected_text": "x"}));
        assert_eq!(effective_top_k(&selected, &s), 2);
    }

    #[test]
    fn retrieval_query_adds_the_start_of_the_selection() {
        let long = "word ".repeat(400);
        let with = request(serde_json::json!({"query": "why?", "selected_text": long}));
        let query = retrieval_query(&with);
        assert!(query.starts_with("why?\nword"));
        assert_eq!(query.chars().count(), 5 + SELECTED_TEXT_QUERY_CHARS);
        assert_eq!(
            retrieval_query(&request(serde_json::json!({"query": "q"}))),
            "q"
        );
    }

    #[test]
    fn rerank_fetches_more_candidates_within_a_cap() {
        assert_eq!(vector_candidates(5, false), 5);
        assert_eq!(vector_candidates(5, true), 20);
        assert_eq!(vector_candidates(20, true), 40);
        assert_eq!(vector_candidates(1, true), 4);
    }

    #[test]
    fn relevant_passages_are_thresholded_sorted_and_capped() {
        let kept = relevant_passages(
            vec![
                passage("a", 0.2),
                passage("b", 0.9),
                passage("c", 0.5),
                passage("d", 0.3),
            ],
            0.3,
            2,
        );
        let titles: Vec<_> = kept.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(titles, ["b", "c"]);
        assert!(relevant_passages(vec![passage("a", 0.1)], 0.3, 5).is_empty());
    }

    #[test]
    fn covered_passages_keep_their_rank_order() {
        let kept = covered_passages(
            vec![
                passage("a", 0.5),
                passage("b", 0.2),
                passage("c", 0.9),
                passage("d", 0.6),
            ],
            0.4,
            2,
        );
        let titles: Vec<_> = kept.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(titles, ["a", "c"]);
    }

    #[test]
    fn each_retrieval_mode_has_its_own_threshold() {
        let s = Settings::from_lookup(|name| match name {
            "keyword_min_coverage" => Some("0.55".into()),
            "vector_min_similarity" => Some("0.35".into()),
            "rerank_min_relevance" => Some("0.15".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(score_threshold(RetrievalMode::Keyword, &s), 0.55);
        assert_eq!(score_threshold(RetrievalMode::Vector, &s), 0.35);
        assert_eq!(rerank_threshold(&s), 0.15);
    }

    #[test]
    fn plans_refusal_extraction_or_generation() {
        let passages = [passage("ZMP", 0.8)];
        assert_eq!(
            plan("q", &[], None, GenerationMode::Llm),
            Plan::Refuse,
            "no model call without context"
        );
        assert_eq!(
            plan("q", &[], Some("A selected passage."), GenerationMode::Llm),
            Plan::Generate,
            "a selection alone is enough to answer from"
        );
        assert_eq!(
            plan("zmp", &passages, None, GenerationMode::Llm),
            Plan::Generate
        );
        match plan("zmp", &passages, None, GenerationMode::Extractive) {
            Plan::Extract(answer) => {
                assert!(answer.starts_with(extractive::EXTRACTIVE_LABEL));
                assert!(answer.contains("[1]"), "{answer}");
            }
            other => panic!("{other:?}"),
        }
        let empty_text = Passage {
            text: "  ".into(),
            ..passage("x", 0.9)
        };
        assert_eq!(
            plan("q", &[empty_text], None, GenerationMode::Extractive),
            Plan::Refuse
        );
    }

    #[test]
    fn pieces_rejoin_to_the_answer() {
        let answer = "Label:\n\n- one [1]\n- two [2]";
        let pieces = stream_pieces(answer);
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces.concat(), answer);
        assert_eq!(stream_pieces("single").concat(), "single");
    }

    #[test]
    fn sources_are_stored_as_the_client_saw_them() {
        let sources = Source::list(&[passage("a", 0.5)]);
        let value: serde_json::Value = serde_json::from_str(&sources_json(&sources)).unwrap();
        assert_eq!(value[0]["n"], 1);
        assert_eq!(value[0]["url"], "https://b/docs/a");
        assert_eq!(sources_json(&[]), "[]");
    }
}
