//! Citation markers in an answer: `[1]`, `[1, 2]`, `[1][2]`, mapped to the numbered sources.

use crate::chat::Source;

/// The source numbers cited in `answer`, in order of first appearance, without repeats;
/// numbers outside `1..=source_count` (invented by the model) are dropped.
pub fn cited_numbers(answer: &str, source_count: usize) -> Vec<usize> {
    let mut cited = Vec::new();
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find(']') else { break };
        let inside = &rest[..close];
        let numbers: Option<Vec<usize>> = inside
            .split(',')
            .map(|part| {
                let part = part.trim();
                (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| part.parse().ok())
                    .flatten()
            })
            .collect();
        // Only a bracket made entirely of numbers is a citation ("[see 2]" is not).
        if let Some(numbers) = numbers {
            for n in numbers {
                if (1..=source_count).contains(&n) && !cited.contains(&n) {
                    cited.push(n);
                }
            }
            rest = &rest[close + 1..];
        }
    }
    cited
}

/// The sources `answer` cites, in order of first citation.
pub fn cited_sources(answer: &str, sources: &[Source]) -> Vec<Source> {
    cited_numbers(answer, sources.len())
        .into_iter()
        .filter_map(|n| sources.iter().find(|source| source.n == n).cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_single_grouped_and_adjacent_markers() {
        assert_eq!(cited_numbers("A [2]. B [1, 3]. C [3][4].", 5), [2, 1, 3, 4]);
        assert_eq!(cited_numbers("x [1,2] y", 5), [1, 2]);
    }

    #[test]
    fn drops_out_of_range_and_non_citations() {
        assert_eq!(cited_numbers("[0] [6] [2] [see 3] [] [a] [1.5]", 5), [2]);
        assert_eq!(cited_numbers("[1, 9]", 2), [1]);
        assert!(cited_numbers("no markers", 3).is_empty());
        assert!(cited_numbers("[1]", 0).is_empty());
        assert_eq!(cited_numbers("[99999999999999999999999] [1]", 2), [1]);
    }

    #[test]
    fn unclosed_and_nested_brackets() {
        assert_eq!(cited_numbers("[x [2] [1", 3), [2]);
        assert_eq!(cited_numbers("[[1]]", 3), [1]);
    }

    #[test]
    fn maps_to_sources_in_citation_order() {
        let source = |n: usize| Source {
            n,
            title: format!("t{n}"),
            url: format!("u{n}"),
            heading: String::new(),
            score: 0.5,
            snippet: String::new(),
        };
        let sources = [source(1), source(2), source(3)];
        let cited = cited_sources("B [3] then A [1] and [7]", &sources);
        let titles: Vec<_> = cited.iter().map(|s| s.title.as_str()).collect();
        assert_eq!(titles, ["t3", "t1"]);
    }
}
