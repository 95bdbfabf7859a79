//! The answer without a language model: the best sentences of the top passages, each cited,
//! under a label that says plainly the text was extracted, not generated.

use crate::keywords::{self, StemMatcher};
use crate::retrieval::Passage;

/// First line of every extractive answer.
pub const EXTRACTIVE_LABEL: &str =
    "From the book (extracted passages, no language model configured):";

/// The answer when retrieval found nothing relevant.
pub const REFUSAL: &str = "I could not find this in the book. Try rephrasing the question \
     with the words the book would use, or ask about a topic it covers.";

/// Passages quoted in an extractive answer.
pub const MAX_PASSAGES: usize = 3;
/// Sentences quoted from each passage.
pub const SENTENCES_PER_PASSAGE: usize = 2;
/// Longest quoted sentence, in characters; longer ones are cut on a word boundary.
pub const MAX_SENTENCE_CHARS: usize = 300;

/// An answer quoting the sentences of the top passages that share most words (by stem) with
/// the question, each followed by its `[n]`, after the best sentences of the selected passage
/// when one is given. A passage with no sentence sharing a word with the question is not
/// quoted: retrieval matched it on something other than what the sentences say. Falls back to
/// [`REFUSAL`] when there is nothing to quote.
pub fn extractive_answer(query: &str, passages: &[Passage], selected_text: Option<&str>) -> String {
    let terms = terms(query);
    let matcher = StemMatcher::new(&terms);
    let mut lines = Vec::new();
    if let Some(selected) = selected_text {
        // The reader chose this passage, so its opening stands in when no word is shared
        // ("explain this").
        let mut best = best_sentences(selected, &matcher, SENTENCES_PER_PASSAGE);
        if best.is_empty() {
            best = sentences(selected)
                .iter()
                .take(SENTENCES_PER_PASSAGE)
                .map(|s| crate::chat::snippet(s, MAX_SENTENCE_CHARS))
                .collect();
        }
        if !best.is_empty() {
            lines.push(format!("From your selection: {}", best.join(" ")));
        }
    }
    for (i, passage) in passages.iter().take(MAX_PASSAGES).enumerate() {
        let best = best_sentences(&passage.text, &matcher, SENTENCES_PER_PASSAGE);
        if best.is_empty() {
            continue;
        }
        let place = if passage.heading.is_empty() {
            passage.title.clone()
        } else {
            format!("{} — {}", passage.title, passage.heading)
        };
        lines.push(format!("- {place}: {} [{}]", best.join(" "), i + 1));
    }
    if lines.is_empty() {
        return REFUSAL.to_owned();
    }
    format!("{EXTRACTIVE_LABEL}\n\n{}", lines.join("\n"))
}

/// The distinct stems of `text`, sorted.
fn terms(text: &str) -> Vec<String> {
    let mut terms = keywords::stems(text);
    terms.sort();
    terms.dedup();
    terms
}

/// Splits on sentence-ending punctuation followed by whitespace, and on blank lines; runs of
/// whitespace become one space.
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for paragraph in text.split("\n\n") {
        let mut sentence = String::new();
        let mut words = paragraph.split_whitespace().peekable();
        while let Some(word) = words.next() {
            if !sentence.is_empty() {
                sentence.push(' ');
            }
            sentence.push_str(word);
            if word.ends_with(['.', '!', '?']) && words.peek().is_some() {
                out.push(std::mem::take(&mut sentence));
            }
        }
        out.push(sentence);
    }
    out.retain(|s| s.chars().filter(|c| c.is_alphanumeric()).count() >= 3);
    out
}

/// Up to `count` sentences sharing the most of the question's terms, in text order; none when
/// no sentence shares any.
fn best_sentences(text: &str, terms: &StemMatcher<'_>, count: usize) -> Vec<String> {
    let sentences = sentences(text);
    let mut shared = Vec::new();
    let mut scored: Vec<(usize, usize)> = sentences
        .iter()
        .enumerate()
        .map(|(i, sentence)| {
            shared.clear();
            terms.for_each_match(sentence, |term| shared.push(term));
            shared.sort_unstable();
            shared.dedup();
            (shared.len(), i)
        })
        .filter(|&(shared, _)| shared > 0)
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut chosen: Vec<usize> = scored.iter().take(count).map(|&(_, i)| i).collect();
    chosen.sort_unstable();
    chosen
        .into_iter()
        .map(|i| crate::chat::snippet(&sentences[i], MAX_SENTENCE_CHARS))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(title: &str, text: &str) -> Passage {
        Passage {
            url: format!("https://b/{title}"),
            page_url: format!("https://b/{title}"),
            title: title.into(),
            heading: "Intro".into(),
            text: text.into(),
            score: 0.5,
        }
    }

    #[test]
    fn quotes_the_most_relevant_sentences_with_citations() {
        let passages = [
            passage("ROS 2", "ROS 2 is middleware. A node is a process that performs computation. Nodes talk over topics. Launch files start many nodes."),
            passage("Gazebo", "Gazebo simulates robots. It models physics."),
        ];
        let answer = extractive_answer("What is a node in ROS?", &passages, None);
        let mut lines = answer.lines();
        assert_eq!(lines.next(), Some(EXTRACTIVE_LABEL));
        assert!(
            answer.contains(
                "- ROS 2 — Intro: ROS 2 is middleware. A node is a process that performs computation. [1]"
            ),
            "{answer}"
        );
        assert!(answer.contains("[1]"));
        assert!(
            !answer.contains("[2]"),
            "the Gazebo passage shares no word with the question: {answer}"
        );
        assert!(
            !answer.contains("Launch files start many nodes"),
            "weaker sentence kept: {answer}"
        );
    }

    #[test]
    fn uses_at_most_three_passages() {
        let passages: Vec<_> = (0..5)
            .map(|i| passage(&format!("p{i}"), "Some text here."))
            .collect();
        let answer = extractive_answer("text", &passages, None);
        assert!(
            answer.contains("[3]") && !answer.contains("[4]"),
            "{answer}"
        );
    }

    #[test]
    fn selected_text_is_quoted_first() {
        let answer = extractive_answer(
            "why torque",
            &[],
            Some("Motors matter. Torque limits the arm's payload. Colour is irrelevant."),
        );
        assert!(answer.starts_with(EXTRACTIVE_LABEL));
        assert!(answer.contains("From your selection:"));
        assert!(
            answer.contains("Torque limits the arm's payload."),
            "{answer}"
        );
    }

    #[test]
    fn passages_sharing_no_word_with_the_question_are_not_quoted() {
        let passages = [
            passage("Theme aliases", "Swizzled components import the original through an alias. It resolves at build time."),
            passage("Deploy", "Run the deploy command. It pushes the build."),
        ];
        assert_eq!(
            extractive_answer("boiling point of water on Everest", &passages, None),
            REFUSAL,
            "no sentence shares a word: nothing to quote"
        );
        let answer = extractive_answer("How is it deployed?", &passages, None);
        assert!(
            answer.contains("Run the deploy command. [2]"),
            "stems match: {answer}"
        );
        assert!(!answer.contains("[1]"), "{answer}");
        let selection = extractive_answer("explain", &[], Some("Torque limits payload. More."));
        assert!(
            selection.contains("From your selection: Torque limits payload. More."),
            "{selection}"
        );
    }

    #[test]
    fn nothing_to_quote_is_a_refusal() {
        assert_eq!(extractive_answer("anything", &[], None), REFUSAL);
        assert_eq!(
            extractive_answer("anything", &[passage("x", "  ")], None),
            REFUSAL
        );
    }

    #[test]
    fn sentence_splitting() {
        assert_eq!(
            sentences("One. Two! Three?\n\nFour v1.2 ok"),
            ["One.", "Two!", "Three?", "Four v1.2 ok"]
        );
        assert_eq!(
            sentences("  Spaced \t out.\n  Next line?   End.\n\n\n\nAfter... gap.\u{a0}Yes ."),
            [
                "Spaced out.",
                "Next line?",
                "End.",
                "After...",
                "gap.",
                "Yes ."
            ]
        );
        assert_eq!(
            sentences("Ab.Cd. x\n\n.\n\nEnds here."),
            ["Ab.Cd.", "Ends here."]
        );
    }
}
