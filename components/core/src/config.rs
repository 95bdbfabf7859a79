//! Settings read from Spin variables (lower-case names; an empty value counts as unset).
//!
//! The set of configured upstreams decides the modes: with no keys at all the product still
//! answers, from the embedded FTS5 index and with extractive answers.

use std::fmt;
use std::time::Duration;

/// Default OpenAI-compatible endpoint.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// Default chat model.
pub const DEFAULT_OPENAI_MODEL: &str = "gpt-4o-mini";
/// Default Cohere endpoint.
pub const DEFAULT_COHERE_BASE_URL: &str = "https://api.cohere.com";
/// Default Cohere embedding model.
pub const DEFAULT_COHERE_EMBED_MODEL: &str = "embed-v4.0";
/// Default Qdrant collection.
pub const DEFAULT_QDRANT_COLLECTION: &str = "book";
/// Default least share of a question's IDF mass a keyword passage must match (calibrated on
/// the labelled sets in `eval/`; see eval/README.md).
pub const DEFAULT_KEYWORD_MIN_COVERAGE: f32 = 0.42;
/// Default least cosine similarity between question and passage embeddings.
pub const DEFAULT_VECTOR_MIN_SIMILARITY: f32 = 0.3;
/// Default least Cohere rerank relevance score.
pub const DEFAULT_RERANK_MIN_RELEVANCE: f32 = 0.1;

/// Where passages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrievalMode {
    /// Cohere embeddings + Qdrant (both configured).
    Vector,
    /// The embedded SQLite FTS5 (BM25) index.
    Keyword,
}

/// How answers are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerationMode {
    /// An OpenAI-compatible LLM writes the answer.
    Llm,
    /// The answer is made of the best retrieved sentences.
    Extractive,
}

/// A variable that could not be understood; the message names it and says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable's name.
    pub variable: &'static str,
    /// What is wrong, including the accepted range.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "variable `{}`: {}", self.variable, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every setting the chat pipeline reads.
#[derive(Clone, PartialEq)]
pub struct Settings {
    /// PostgreSQL URL for sessions; `None` = embedded SQLite.
    pub database_url: Option<String>,
    pub openai_api_key: Option<String>,
    /// Without a trailing slash.
    pub openai_base_url: String,
    pub openai_model: String,
    pub cohere_api_key: Option<String>,
    /// Without a trailing slash.
    pub cohere_base_url: String,
    pub cohere_embed_model: String,
    /// `None` = no reranking.
    pub cohere_rerank_model: Option<String>,
    /// Without a trailing slash; `None` = Qdrant not configured.
    pub qdrant_url: Option<String>,
    pub qdrant_api_key: Option<String>,
    pub qdrant_collection: String,
    /// Passages handed to the prompt, 1..=20.
    pub top_k: u32,
    /// Keyword retrieval: least share (0..=1) of the question's IDF mass a passage matches.
    pub keyword_min_coverage: f32,
    /// Vector retrieval: least cosine similarity (0..=1) of a passage to the question.
    pub vector_min_similarity: f32,
    /// With a reranker: least relevance score (0..=1) the reranker gives a passage.
    pub rerank_min_relevance: f32,
    /// Deadline for one upstream call.
    pub upstream_timeout: Duration,
    /// Characters of earlier turns allowed into the prompt.
    pub history_budget_chars: usize,
}

impl Settings {
    /// Reads every setting through `lookup` (a Spin variable getter, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let url = |name: &str, default: &str| {
            get(name)
                .unwrap_or_else(|| default.to_owned())
                .trim_end_matches('/')
                .to_owned()
        };
        Ok(Self {
            database_url: get("database_url"),
            openai_api_key: get("openai_api_key"),
            openai_base_url: url("openai_base_url", DEFAULT_OPENAI_BASE_URL),
            openai_model: get("openai_model").unwrap_or_else(|| DEFAULT_OPENAI_MODEL.into()),
            cohere_api_key: get("cohere_api_key"),
            cohere_base_url: url("cohere_base_url", DEFAULT_COHERE_BASE_URL),
            cohere_embed_model: get("cohere_embed_model")
                .unwrap_or_else(|| DEFAULT_COHERE_EMBED_MODEL.into()),
            cohere_rerank_model: get("cohere_rerank_model"),
            qdrant_url: get("qdrant_url").map(|u| u.trim_end_matches('/').to_owned()),
            qdrant_api_key: get("qdrant_api_key"),
            qdrant_collection: get("qdrant_collection")
                .unwrap_or_else(|| DEFAULT_QDRANT_COLLECTION.into()),
            top_k: parse_in_range(get("top_k"), "top_k", 5, 1..=20)?,
            keyword_min_coverage: parse_in_range(
                get("keyword_min_coverage"),
                "keyword_min_coverage",
                DEFAULT_KEYWORD_MIN_COVERAGE,
                0.0..=1.0,
            )?,
            vector_min_similarity: parse_in_range(
                get("vector_min_similarity"),
                "vector_min_similarity",
                DEFAULT_VECTOR_MIN_SIMILARITY,
                0.0..=1.0,
            )?,
            rerank_min_relevance: parse_in_range(
                get("rerank_min_relevance"),
                "rerank_min_relevance",
                DEFAULT_RERANK_MIN_RELEVANCE,
                0.0..=1.0,
            )?,
            upstream_timeout: Duration::from_millis(parse_in_range(
                get("upstream_timeout_ms"),
                "upstream_timeout_ms",
                20_000,
                1..=600_000,
            )?),
            history_budget_chars: parse_in_range(
                get("history_budget_chars"),
                "history_budget_chars",
                6_000,
                0..=200_000,
            )?,
        })
    }

    /// Vector retrieval when both Cohere and Qdrant are configured, else the embedded index.
    pub fn retrieval_mode(&self) -> RetrievalMode {
        if self.cohere_api_key.is_some() && self.qdrant_url.is_some() {
            RetrievalMode::Vector
        } else {
            RetrievalMode::Keyword
        }
    }

    /// LLM answers when an OpenAI key is set, else extractive answers.
    pub fn generation_mode(&self) -> GenerationMode {
        if self.openai_api_key.is_some() {
            GenerationMode::Llm
        } else {
            GenerationMode::Extractive
        }
    }
}

fn parse_in_range<T>(
    raw: Option<String>,
    variable: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    let Some(raw) = raw else { return Ok(default) };
    let limits = format!("expected a number in {}..={}", range.start(), range.end());
    match raw.parse::<T>() {
        Ok(value) if range.contains(&value) => Ok(value),
        Ok(_) => Err(ConfigError {
            variable,
            message: format!("{raw:?} is out of range; {limits}"),
        }),
        Err(_) => Err(ConfigError {
            variable,
            message: format!("{raw:?} is not a number; {limits}"),
        }),
    }
}

const REDACTED: &str = "<redacted>";

fn redact(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| REDACTED)
}

/// Hides credentials, including any password inside a database URL.
fn redact_url_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}{REDACTED}{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url_credentials),
            )
            .field("openai_api_key", &redact(&self.openai_api_key))
            .field("openai_base_url", &self.openai_base_url)
            .field("openai_model", &self.openai_model)
            .field("cohere_api_key", &redact(&self.cohere_api_key))
            .field("cohere_base_url", &self.cohere_base_url)
            .field("cohere_embed_model", &self.cohere_embed_model)
            .field("cohere_rerank_model", &self.cohere_rerank_model)
            .field("qdrant_url", &self.qdrant_url)
            .field("qdrant_api_key", &redact(&self.qdrant_api_key))
            .field("qdrant_collection", &self.qdrant_collection)
            .field("top_k", &self.top_k)
            .field("keyword_min_coverage", &self.keyword_min_coverage)
            .field("vector_min_similarity", &self.vector_min_similarity)
            .field("rerank_min_relevance", &self.rerank_min_relevance)
            .field("upstream_timeout", &self.upstream_timeout)
            .field("history_budget_chars", &self.history_budget_chars)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_are_keyless() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.openai_base_url, DEFAULT_OPENAI_BASE_URL);
        assert_eq!(s.openai_model, "gpt-4o-mini");
        assert_eq!(s.cohere_base_url, "https://api.cohere.com");
        assert_eq!(s.cohere_embed_model, "embed-v4.0");
        assert_eq!(s.qdrant_collection, "book");
        assert_eq!(s.top_k, 5);
        assert_eq!(s.keyword_min_coverage, DEFAULT_KEYWORD_MIN_COVERAGE);
        assert_eq!(s.vector_min_similarity, 0.3);
        assert_eq!(s.rerank_min_relevance, DEFAULT_RERANK_MIN_RELEVANCE);
        assert_eq!(s.upstream_timeout, Duration::from_secs(20));
        assert_eq!(s.history_budget_chars, 6000);
        assert_eq!(s.cohere_rerank_model, None);
        assert_eq!(s.retrieval_mode(), RetrievalMode::Keyword);
        assert_eq!(s.generation_mode(), GenerationMode::Extractive);
    }

    #[test]
    fn empty_values_count_as_unset() {
        let s = settings(&[
            ("openai_api_key", ""),
            ("qdrant_url", "  "),
            ("openai_model", ""),
        ])
        .unwrap();
        assert_eq!(s.openai_api_key, None);
        assert_eq!(s.qdrant_url, None);
        assert_eq!(s.openai_model, DEFAULT_OPENAI_MODEL);
    }

    #[test]
    fn modes_follow_configured_keys() {
        let s = settings(&[("cohere_api_key", "c"), ("openai_api_key", "o")]).unwrap();
        assert_eq!(s.retrieval_mode(), RetrievalMode::Keyword, "Qdrant missing");
        assert_eq!(s.generation_mode(), GenerationMode::Llm);
        let s = settings(&[("cohere_api_key", "c"), ("qdrant_url", "http://q:6333/")]).unwrap();
        assert_eq!(s.retrieval_mode(), RetrievalMode::Vector);
        assert_eq!(s.qdrant_url.as_deref(), Some("http://q:6333"));
    }

    #[test]
    fn bad_numbers_name_the_variable() {
        let error = settings(&[("top_k", "abc")]).unwrap_err();
        assert_eq!(error.variable, "top_k");
        assert!(error.to_string().contains("1..=20"), "{error}");
        let error = settings(&[("top_k", "21")]).unwrap_err();
        assert!(error.message.contains("out of range"));
        for variable in [
            "keyword_min_coverage",
            "vector_min_similarity",
            "rerank_min_relevance",
        ] {
            let error = settings(&[(variable, "1.5")]).unwrap_err();
            assert_eq!(error.variable, variable);
        }
        let s = settings(&[
            ("keyword_min_coverage", "0.6"),
            ("vector_min_similarity", "0.4"),
            ("rerank_min_relevance", "0.2"),
        ])
        .unwrap();
        assert_eq!(
            (
                s.keyword_min_coverage,
                s.vector_min_similarity,
                s.rerank_min_relevance
            ),
            (0.6, 0.4, 0.2)
        );
        let error = settings(&[("upstream_timeout_ms", "-1")]).unwrap_err();
        assert_eq!(error.variable, "upstream_timeout_ms");
        assert_eq!(settings(&[("top_k", "20")]).unwrap().top_k, 20);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let s = settings(&[
            ("openai_api_key", "sk-secret-1"),
            ("cohere_api_key", "co-secret-2"),
            ("qdrant_api_key", "qd-secret-3"),
            ("database_url", "postgres://user:pw-secret-4@db.example/app"),
        ])
        .unwrap();
        let text = format!("{s:?}");
        for secret in ["sk-secret-1", "co-secret-2", "qd-secret-3", "pw-secret-4"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("db.example"));
        assert!(text.contains(REDACTED));
    }
}
