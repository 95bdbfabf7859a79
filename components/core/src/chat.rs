//! The `/chat` request and response bodies: parsing with validation, and serialisation.
//!
//! Unknown request fields are rejected (400 naming the field): a misspelt optional field such
//! as `sessionId` would otherwise be dropped silently and the reader would lose their session.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::retrieval::Passage;
use crate::store::{valid_session_id, SESSION_ID_MAX_CHARS};

/// Longest accepted question, in characters after trimming.
pub const QUERY_MAX_CHARS: usize = 4000;
/// Longest accepted selected passage, in characters.
pub const SELECTED_TEXT_MAX_CHARS: usize = 8000;
/// Longest accepted page URL, in characters.
pub const PAGE_URL_MAX_CHARS: usize = 2048;
/// Largest `top_k` a client may ask for.
pub const TOP_K_MAX: u32 = 20;
/// Approximate length of a source snippet, in characters.
pub const SNIPPET_CHARS: usize = 240;

/// A validated `/chat` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRequest {
    /// The question, trimmed, 1..=4000 characters.
    pub query: String,
    /// Continue this session; `None` starts a new one.
    pub session_id: Option<String>,
    /// A passage the reader selected on the page, trimmed; empty counts as absent.
    pub selected_text: Option<String>,
    /// The page the reader is on.
    pub page_url: Option<String>,
    /// Answer as Server-Sent Events instead of one JSON body.
    pub stream: bool,
    /// Passages to retrieve, 1..=20; `None` = the configured default.
    pub top_k: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChatRequest {
    query: Option<String>,
    session_id: Option<String>,
    selected_text: Option<String>,
    page_url: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    /// Any JSON number: `20.0` is the integer 20, as JSON Schema counts it.
    top_k: Option<serde_json::Number>,
}

impl ChatRequest {
    /// Parses and validates a JSON body; every error names the field and its limit.
    pub fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        let raw: RawChatRequest = serde_json::from_slice(body).map_err(describe_json_error)?;

        let query = raw
            .query
            .ok_or_else(|| ApiError::invalid_field("query", "is required"))?
            .trim()
            .to_owned();
        let query_chars = query.chars().count();
        if !(1..=QUERY_MAX_CHARS).contains(&query_chars) {
            return Err(ApiError::invalid_field(
                "query",
                format!(
                    "must be 1 to {QUERY_MAX_CHARS} characters after trimming (got {query_chars})"
                ),
            ));
        }

        if let Some(id) = &raw.session_id {
            if !valid_session_id(id) {
                return Err(ApiError::invalid_field(
                    "session_id",
                    format!(
                        "must be 1 to {SESSION_ID_MAX_CHARS} characters of A-Z, a-z, 0-9, '_' or '-'"
                    ),
                ));
            }
        }

        let selected_text = raw
            .selected_text
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty());
        if let Some(text) = &selected_text {
            let chars = text.chars().count();
            if chars > SELECTED_TEXT_MAX_CHARS {
                return Err(ApiError::invalid_field(
                    "selected_text",
                    format!("must be at most {SELECTED_TEXT_MAX_CHARS} characters (got {chars})"),
                ));
            }
        }

        let page_url = raw
            .page_url
            .map(|url| url.trim().to_owned())
            .filter(|url| !url.is_empty());
        if let Some(url) = &page_url {
            let chars = url.chars().count();
            if chars > PAGE_URL_MAX_CHARS {
                return Err(ApiError::invalid_field(
                    "page_url",
                    format!("must be at most {PAGE_URL_MAX_CHARS} characters (got {chars})"),
                ));
            }
        }

        let top_k = match raw.top_k {
            None => None,
            Some(k)
                if whole_number(&k).is_some_and(|k| (1..=i64::from(TOP_K_MAX)).contains(&k)) =>
            {
                whole_number(&k).map(|k| k as u32)
            }
            Some(k) => {
                return Err(ApiError::invalid_field(
                    "top_k",
                    format!("must be an integer from 1 to {TOP_K_MAX} (got {k})"),
                ))
            }
        };

        Ok(Self {
            query,
            session_id: raw.session_id,
            selected_text,
            page_url,
            stream: raw.stream.unwrap_or(false),
            top_k,
        })
    }
}

/// `number` as an integer when it has no fractional part.
fn whole_number(number: &serde_json::Number) -> Option<i64> {
    number.as_i64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() <= 2f64.powi(53))
            .map(|f| f as i64)
    })
}

fn describe_json_error(error: serde_json::Error) -> ApiError {
    let text = error.to_string();
    // serde names the offending key in these messages; surface it as the field.
    if let Some(rest) = text.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        return ApiError::invalid_field(
            field,
            "is not a known field; expected query, session_id, selected_text, page_url, stream, top_k",
        );
    }
    match error.classify() {
        serde_json::error::Category::Data => ApiError::invalid_request(format!(
            "request body has a field of the wrong type: {text}"
        )),
        _ => ApiError::invalid_request(format!("request body is not valid JSON: {text}")),
    }
}

/// How an answer was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerMode {
    /// Written by the language model from the retrieved context.
    Generated,
    /// Assembled from retrieved sentences (no language model configured).
    Extractive,
    /// Nothing relevant was found; the answer says so.
    Refused,
}

/// A cited source as the client sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// The number the answer cites as `[n]`, from 1.
    pub n: usize,
    pub title: String,
    pub url: String,
    pub heading: String,
    pub score: f32,
    /// The start of the passage, cut on a word boundary.
    pub snippet: String,
}

impl Source {
    /// The source numbered `n` for a retrieved passage.
    pub fn from_passage(n: usize, passage: &Passage) -> Self {
        Self {
            n,
            title: passage.title.clone(),
            url: passage.url.clone(),
            heading: passage.heading.clone(),
            score: passage.score,
            snippet: snippet(&passage.text, SNIPPET_CHARS),
        }
    }

    /// Numbers passages 1.. in their ranked order.
    pub fn list(passages: &[Passage]) -> Vec<Self> {
        passages
            .iter()
            .enumerate()
            .map(|(i, passage)| Self::from_passage(i + 1, passage))
            .collect()
    }
}

/// At most `max_chars` characters of `text` (whitespace collapsed), cut at the last word
/// boundary and marked with an ellipsis when shortened. Reads only as far as the cut: a chat
/// takes a snippet of every passage it cites and of every sentence it quotes.
pub fn snippet(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut chars = 0;
    // Where the last whole word in `out` starts (bytes).
    let mut last_word = 0;
    for word in text.split_whitespace() {
        let word_chars = word.chars().count();
        let space = usize::from(!out.is_empty());
        if chars + space + word_chars <= max_chars {
            if space == 1 {
                out.push(' ');
            }
            last_word = out.len();
            out.push_str(word);
            chars += space + word_chars;
            continue;
        }
        if out.is_empty() {
            // One word longer than the whole snippet: cut inside it.
            out.extend(word.chars().take(max_chars));
        } else if chars == max_chars && last_word > 0 {
            // A word ending exactly at the cut is not known to be whole there: dropped.
            out.truncate(last_word - 1);
        }
        let kept = out
            .trim_end_matches(|c: char| c.is_ascii_punctuation())
            .len();
        out.truncate(kept);
        out.push('…');
        return out;
    }
    out
}

/// The non-streamed `/chat` response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub answer: String,
    pub sources: Vec<Source>,
    pub session_id: String,
    /// Id of the stored assistant message (for feedback).
    pub message_id: i64,
    pub mode: AnswerMode,
}

impl ChatResponse {
    /// The JSON body.
    pub fn to_json_body(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a response always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: serde_json::Value) -> Result<ChatRequest, ApiError> {
        ChatRequest::from_json(value.to_string().as_bytes())
    }

    fn field_of(result: Result<ChatRequest, ApiError>) -> String {
        let error = result.unwrap_err();
        assert_eq!(error.status, 400);
        error
            .field
            .clone()
            .unwrap_or_else(|| panic!("no field in {error}"))
    }

    #[test]
    fn minimal_request_gets_defaults() {
        let request = parse(json!({"query": "  What is ROS 2?  "})).unwrap();
        assert_eq!(request.query, "What is ROS 2?");
        assert_eq!(request.session_id, None);
        assert!(!request.stream);
        assert_eq!(request.top_k, None);
    }

    #[test]
    fn full_request_is_kept() {
        let request = parse(json!({
            "query": "q", "session_id": "abc_DEF-1", "selected_text": " passage ",
            "page_url": "https://book/docs/intro", "stream": true, "top_k": 20
        }))
        .unwrap();
        assert_eq!(request.session_id.as_deref(), Some("abc_DEF-1"));
        assert_eq!(request.selected_text.as_deref(), Some("passage"));
        assert_eq!(request.page_url.as_deref(), Some("https://book/docs/intro"));
        assert!(request.stream);
        assert_eq!(request.top_k, Some(20));
    }

    #[test]
    fn query_limits() {
        assert_eq!(field_of(parse(json!({}))), "query");
        assert_eq!(field_of(parse(json!({"query": "   "}))), "query");
        let error = parse(json!({"query": "x".repeat(4001)})).unwrap_err();
        assert!(error.message.contains("4000"), "{}", error.message);
        // characters, not bytes: 4000 multi-byte characters are fine
        assert!(parse(json!({"query": "é".repeat(4000)})).is_ok());
    }

    #[test]
    fn session_id_limits() {
        assert_eq!(
            field_of(parse(json!({"query": "q", "session_id": ""}))),
            "session_id"
        );
        assert_eq!(
            field_of(parse(json!({"query": "q", "session_id": "a b"}))),
            "session_id"
        );
        assert_eq!(
            field_of(parse(json!({"query": "q", "session_id": "a".repeat(129)}))),
            "session_id"
        );
        assert!(parse(json!({"query": "q", "session_id": "a".repeat(128)})).is_ok());
    }

    #[test]
    fn selected_text_page_url_and_top_k_limits() {
        let long = "s".repeat(SELECTED_TEXT_MAX_CHARS + 1);
        assert_eq!(
            field_of(parse(json!({"query": "q", "selected_text": long}))),
            "selected_text"
        );
        let url = format!("https://x/{}", "p".repeat(PAGE_URL_MAX_CHARS));
        assert_eq!(
            field_of(parse(json!({"query": "q", "page_url": url}))),
            "page_url"
        );
        assert_eq!(field_of(parse(json!({"query": "q", "top_k": 0}))), "top_k");
        let error = parse(json!({"query": "q", "top_k": 21})).unwrap_err();
        assert!(error.message.contains("1 to 20"));
        assert_eq!(
            parse(json!({"query": "q", "top_k": 20.0})).unwrap().top_k,
            Some(20)
        );
        assert_eq!(
            field_of(parse(json!({"query": "q", "top_k": 2.5}))),
            "top_k"
        );
        assert_eq!(
            field_of(parse(json!({"query": "q", "top_k": 1e300}))),
            "top_k"
        );
        assert_eq!(
            parse(json!({"query": "q", "selected_text": "  "}))
                .unwrap()
                .selected_text,
            None
        );
    }

    #[test]
    fn unknown_fields_and_bad_json_are_rejected() {
        assert_eq!(
            field_of(parse(json!({"query": "q", "sessionId": "x"}))),
            "sessionId"
        );
        let error = ChatRequest::from_json(b"{\"query\": ").unwrap_err();
        assert_eq!(error.code, "invalid_request");
        assert!(
            error.message.contains("not valid JSON"),
            "{}",
            error.message
        );
        let error = parse(json!({"query": 5})).unwrap_err();
        assert!(error.message.contains("wrong type"), "{}", error.message);
        assert!(ChatRequest::from_json(b"[]").is_err());
    }

    #[test]
    fn snippets_cut_on_word_boundaries() {
        assert_eq!(snippet("short  text\n here", 240), "short text here");
        let cut = snippet("alpha beta gamma delta", 13);
        assert_eq!(cut, "alpha beta…");
        let long = "word ".repeat(100);
        assert!(snippet(&long, SNIPPET_CHARS).chars().count() <= SNIPPET_CHARS + 1);
        assert_eq!(snippet("alpha beta gamma", 10), "alpha…");
        assert_eq!(snippet("unbreakable", 4), "unbr…");
        assert_eq!(snippet("end. next", 7), "end…");
    }

    /// The snippet as first written: collapse everything, then cut. The streaming version
    /// must give the same text for every input.
    fn snippet_by_collapsing(text: &str, max_chars: usize) -> String {
        let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if collapsed.chars().count() <= max_chars {
            return collapsed;
        }
        let cut: String = collapsed.chars().take(max_chars).collect();
        let at_word = match cut.rfind(' ') {
            Some(space) if space > 0 => &cut[..space],
            _ => cut.as_str(),
        };
        format!(
            "{}…",
            at_word.trim_end_matches(|c: char| c.is_ascii_punctuation())
        )
    }

    #[test]
    fn snippets_match_collapsing_then_cutting() {
        let pieces = [
            "a", "bb", "ccc,", "dddd.", " ", "  ", "\n", "é", "—", "ü!", "xyzzy",
        ];
        // A deterministic walk over many texts and limits (a linear congruential generator).
        let mut state: u64 = 7;
        let mut next = |bound: usize| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize % bound
        };
        for _ in 0..20_000 {
            let text: String = (0..next(12)).map(|_| pieces[next(pieces.len())]).collect();
            let max_chars = next(16);
            assert_eq!(
                snippet(&text, max_chars),
                snippet_by_collapsing(&text, max_chars),
                "{text:?} at {max_chars}"
            );
        }
    }

    #[test]
    fn response_serialises_with_numbered_sources() {
        let passage = Passage {
            url: "https://b/docs/a#h".into(),
            page_url: "https://b/docs/a".into(),
            title: "A".into(),
            heading: "H".into(),
            text: "Body text.".into(),
            score: 0.5,
        };
        let response = ChatResponse {
            answer: "Yes [1].".into(),
            sources: Source::list(&[passage]),
            session_id: "s1".into(),
            message_id: 7,
            mode: AnswerMode::Generated,
        };
        let value: serde_json::Value = serde_json::from_slice(&response.to_json_body()).unwrap();
        assert_eq!(
            value,
            json!({"answer": "Yes [1].", "session_id": "s1", "message_id": 7, "mode": "generated",
                   "sources": [{"n": 1, "title": "A", "url": "https://b/docs/a#h", "heading": "H",
                                "score": 0.5, "snippet": "Body text."}]})
        );
    }
}
