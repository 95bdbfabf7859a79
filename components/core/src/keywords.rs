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
    // Sorted (a test checks): every word of every passage is looked up.
    STOP_WORDS.binary_search(&word).is_ok()
}

/// The runs of alphanumeric characters in `text`, as written.
fn tokens(text: &str) -> impl Iterator<Item = &str> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|token| !token.is_empty())
}

/// A token lower-cased, unless it is a stop word or a single letter.
fn word(token: &str) -> Option<String> {
    let word = token.to_lowercase();
    let single_letter = word.chars().count() == 1 && !word.chars().all(char::is_numeric);
    (!word.is_empty() && !single_letter && !is_stop_word(&word)).then_some(word)
}

/// The lower-cased words of `text` that carry meaning, in order, duplicates kept.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    tokens(text).filter_map(word)
}

/// The stems of [`words`], in order, duplicates kept.
pub fn stems(text: &str) -> Vec<String> {
    let stemmer = Stemmer::create(Algorithm::English);
    words(text)
        .map(|word| stemmer.stem(&word).into_owned())
        .collect()
}

/// Finds the words of texts whose stems are among a few given ones (a question's), stemming only
/// the words that can have one of them. A Snowball English stem always begins with its word's
/// first letter: the algorithm only rewrites suffixes and never removes a word's first letter
/// (every deletion needs a vowel or its R1 region before it, and the initial `y` it marks is
/// restored), so a word whose first letter begins none of the stems is skipped unstemmed.
/// Choosing an extractive answer's sentences stemmed every word of the passages before, which
/// was the largest cost of a keyless chat inside the component.
pub struct StemMatcher<'a> {
    /// Sorted, distinct.
    stems: &'a [String],
    initials: Vec<char>,
    stemmer: Stemmer,
}

impl<'a> StemMatcher<'a> {
    /// `stems` sorted and distinct, as [`stems`] gives them after `sort` and `dedup`.
    pub fn new(stems: &'a [String]) -> Self {
        let mut initials: Vec<char> = stems.iter().filter_map(|s| s.chars().next()).collect();
        initials.sort_unstable();
        initials.dedup();
        Self {
            stems,
            initials,
            stemmer: Stemmer::create(Algorithm::English),
        }
    }

    /// Calls `found` with the index in `stems` of the stem of each word of `text` ([`words`])
    /// that has one of them, in text order.
    pub fn for_each_match(&self, text: &str, mut found: impl FnMut(usize)) {
        for token in tokens(text) {
            let Some(first) = token.chars().next() else {
                continue;
            };
            // Non-ASCII letters can lower-case to more than one character: always stemmed.
            if first.is_ascii()
                && self
                    .initials
                    .binary_search(&first.to_ascii_lowercase())
                    .is_err()
            {
                continue;
            }
            let Some(word) = word(token) else { continue };
            let stem = self.stemmer.stem(&word);
            if let Ok(index) = self.stems.binary_search_by(|s| s.as_str().cmp(&stem)) {
                found(index);
            }
        }
    }
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
    fn stop_words_are_sorted_for_binary_search() {
        assert!(STOP_WORDS.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(STOP_WORDS.iter().all(|word| is_stop_word(word)));
        assert!(!is_stop_word("robot"));
    }

    /// Every word of the book's pages and of the labelled questions.
    fn sample_text() -> String {
        fn read(dir: &std::path::Path, into: &mut String) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    read(&path, into);
                } else if path
                    .extension()
                    .is_some_and(|e| e == "md" || e == "mdx" || e == "json" || e == "jsonl")
                {
                    into.push_str(&std::fs::read_to_string(&path).unwrap());
                    into.push('\n');
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut text = String::new();
        read(&root.join("book/docs"), &mut text);
        read(&root.join("eval"), &mut text);
        text
    }

    #[test]
    fn a_stem_begins_with_its_words_first_letter() {
        let text = sample_text();
        let stemmer = Stemmer::create(Algorithm::English);
        let mut checked = 0;
        for word in words(&text).chain(
            [
                "skies", "dying", "ying", "yelling", "aing", "ied", "ies", "eed", "idly",
            ]
            .map(String::from),
        ) {
            let stem = stemmer.stem(&word);
            assert_eq!(stem.chars().next(), word.chars().next(), "{word} -> {stem}");
            checked += 1;
        }
        assert!(checked > 5_000, "{checked} words");
    }

    #[test]
    fn matched_stems_are_the_words_stems() {
        let text = sample_text();
        let mut sentences: Vec<&str> = text.split(['.', '\n']).collect();
        sentences.push("Ünïcödé Straße ΣΊΣΥΦΟΣ skies dying x 7 the Deploying deployed");
        let mut found = 0;
        for question in [
            "What does ZMP stand for?",
            "How do I deploy with netlify? Ünïcödé straße skies",
            "inverse kinematics joint angles of the robot arm",
        ] {
            let mut question_stems = stems(question);
            question_stems.sort();
            question_stems.dedup();
            let matcher = StemMatcher::new(&question_stems);
            for sentence in &sentences {
                let mut matched = Vec::new();
                matcher.for_each_match(sentence, |index| matched.push(index));
                let expected: Vec<usize> = stems(sentence)
                    .iter()
                    .filter_map(|stem| question_stems.binary_search(stem).ok())
                    .collect();
                assert_eq!(matched, expected, "{question} / {sentence}");
                found += matched.len();
            }
        }
        assert!(found > 100, "{found} matches");
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
