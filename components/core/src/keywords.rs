//! The words of a text as keyword matching sees them: split on anything not alphanumeric,
//! lower-cased, stop-words and single letters dropped, reduced to their Snowball English stem
//! ("deploying" and "deployed" are both "deploy"). One definition serves the sparse vectors
//! written at ingest and sent at query time (they must agree to match) and the choice of the
//! sentences an extractive answer quotes.

use std::collections::BTreeMap;

use rust_stemmers::{Algorithm, Stemmer};
use sha2::{Digest, Sha256};

/// Words too common to say anything about which passage answers a question: function words,
/// and the filler of questions ("I want to ...", "is there a way to ...", "how can I make ...").
pub const STOP_WORDS: &[&str] = &[
    "a",
    "able",
    "about",
    "after",
    "again",
    "all",
    "also",
    "an",
    "and",
    "any",
    "anything",
    "are",
    "as",
    "at",
    "be",
    "been",
    "before",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "each",
    "for",
    "from",
    "get",
    "give",
    "go",
    "had",
    "has",
    "have",
    "her",
    "here",
    "how",
    "i",
    "if",
    "in",
    "instead",
    "into",
    "is",
    "it",
    "its",
    "just",
    "kind",
    "know",
    "let",
    "like",
    "lot",
    "make",
    "many",
    "me",
    "more",
    "most",
    "much",
    "my",
    "need",
    "not",
    "of",
    "on",
    "one",
    "ones",
    "only",
    "or",
    "other",
    "our",
    "out",
    "over",
    "own",
    "possible",
    "put",
    "rather",
    "really",
    "same",
    "say",
    "see",
    "set",
    "should",
    "show",
    "so",
    "some",
    "something",
    "sort",
    "still",
    "such",
    "tell",
    "than",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "thing",
    "things",
    "this",
    "those",
    "to",
    "up",
    "use",
    "using",
    "very",
    "want",
    "was",
    "way",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "without",
    "work",
    "would",
    "you",
    "your",
];

/// Whether a lower-case word is left out of matching.
pub fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.contains(&word)
}

/// The lower-cased words of `text` that carry meaning, in order, duplicates kept.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter_map(|word| {
            let word = word.to_lowercase();
            let single_letter = word.chars().count() == 1 && !word.chars().all(char::is_numeric);
            (!word.is_empty() && !single_letter && !is_stop_word(&word)).then_some(word)
        })
}

/// The stems of [`words`], in order, duplicates kept.
pub fn stems(text: &str) -> Vec<String> {
    let stemmer = Stemmer::create(Algorithm::English);
    words(text)
        .map(|word| stemmer.stem(&word).into_owned())
        .collect()
}

/// A stem's index in a sparse vector: the first four bytes of its SHA-256, so every build and
/// platform agrees without a shared vocabulary. Collisions merge two stems' counts, which is
/// rare enough (about one pair in 10^5 for a 1,000-stem question set) not to matter.
pub fn stem_index(stem: &str) -> u32 {
    let digest = Sha256::digest(stem.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// A sparse keyword vector: sorted, distinct indices and their values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseVector {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl SparseVector {
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// Term counts of `text` by stem index. The store weighs each stem by its IDF over the
/// collection (Qdrant's `idf` modifier), so counts are all the text has to say. Counts are
/// damped (`1 + ln(count)`) so one word repeated in a long passage does not swamp the others.
pub fn sparse_vector(text: &str) -> SparseVector {
    let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
    for stem in stems(text) {
        *counts.entry(stem_index(&stem)).or_default() += 1;
    }
    SparseVector {
        indices: counts.keys().copied().collect(),
        values: counts
            .values()
            .map(|count| 1.0 + (*count as f32).ln())
            .collect(),
    }
}

/// The question side: each distinct stem once, with weight 1 (the store applies the IDF).
pub fn query_sparse_vector(question: &str) -> SparseVector {
    let mut indices: Vec<u32> = stems(question).iter().map(|s| stem_index(s)).collect();
    indices.sort_unstable();
    indices.dedup();
    let values = vec![1.0; indices.len()];
    SparseVector { indices, values }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_stemmed_and_stop_words_dropped() {
        assert_eq!(
            stems("How do I deploy? Deploying, deployed: the deployments!"),
            ["deploy", "deploy", "deploy", "deploy"]
        );
        assert_eq!(stems("What is a ROS 2 node?"), ["ros", "2", "node"]);
        assert!(stems("what is the it").is_empty());
    }

    #[test]
    fn sparse_vectors_agree_between_document_and_question() {
        let document = sparse_vector("Deploying to Netlify. Netlify deploys on every push.");
        let question = query_sparse_vector("How do I deploy with netlify?");
        assert!(
            document.indices.windows(2).all(|w| w[0] < w[1]),
            "sorted, distinct"
        );
        assert_eq!(document.indices.len(), document.values.len());
        for index in &question.indices {
            assert!(
                document.indices.contains(index),
                "{question:?} vs {document:?}"
            );
        }
        let netlify = stem_index("netlifi");
        let position = document.indices.iter().position(|i| *i == netlify).unwrap();
        assert!((document.values[position] - (1.0 + 2f32.ln())).abs() < 1e-6);
        assert_eq!(question.values, vec![1.0; question.indices.len()]);
        assert!(query_sparse_vector("the of and").is_empty());
    }

    #[test]
    fn stem_indices_are_stable() {
        // Stored vectors depend on these values: changing them needs a re-ingest.
        assert_eq!(stem_index("deploy"), stem_index("deploy"));
        assert_ne!(stem_index("deploy"), stem_index("netlifi"));
        let digest = Sha256::digest(b"deploy");
        assert_eq!(
            stem_index("deploy"),
            u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
        );
    }
}
