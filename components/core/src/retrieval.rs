//! What retrieval hands to prompting, whichever index answered (Qdrant or the embedded FTS5 one).

use serde::{Deserialize, Serialize};

/// One retrieved chunk of the book. In Qdrant these fields (except `score`) are the point's
/// payload, under exactly these keys; in the embedded index they are columns of `chunks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Passage {
    /// Public URL of the chunk, with its heading anchor (`https://site/docs/page#anchor`).
    pub url: String,
    /// Public URL of the page the chunk belongs to (no anchor).
    pub page_url: String,
    /// Page title.
    pub title: String,
    /// Nearest heading above the chunk, "" for a page's introduction.
    pub heading: String,
    /// The chunk's readable text (Markdown cleaned of MDX noise).
    pub text: String,
    /// Relevance: higher is better, in 0..=1 for every retriever so one threshold fits all.
    #[serde(default)]
    pub score: f32,
}
