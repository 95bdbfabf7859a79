//! Pages into retrieval-sized chunks: one or more per section, bounded in characters, with a
//! little overlap so a sentence cut at a boundary is still found whole in one of them.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use super::Page;
use crate::retrieval::Passage;

/// Chunk size that keeps a section's context while fitting an embedding model's input.
pub const DEFAULT_MAX_CHARS: usize = 1500;
/// Text repeated from the end of one chunk at the start of the next of the same section.
pub const DEFAULT_OVERLAP_CHARS: usize = 200;

/// A bounded piece of one section of a page, ready to embed and index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// UUID-formatted and derived from page URL, anchor and ordinal, so re-ingesting the same
    /// docs addresses the same Qdrant points and SQLite rows.
    pub id: String,
    pub page_url: String,
    /// `page_url#anchor`, or `page_url` for a page's introduction.
    pub url: String,
    pub title: String,
    /// Nearest heading, "" for the introduction.
    pub heading: String,
    pub heading_path: Vec<String>,
    pub text: String,
    /// SHA-256 (hex) of title, heading and text: unchanged hash, nothing to re-embed.
    pub hash: String,
}

impl Chunk {
    /// The chunk as retrieval returns it (score 0 until a retriever scores it).
    pub fn to_passage(&self) -> Passage {
        Passage {
            url: self.url.clone(),
            page_url: self.page_url.clone(),
            title: self.title.clone(),
            heading: self.heading.clone(),
            text: self.text.clone(),
            score: 0.0,
        }
    }
}

/// Splits a page by its sections, then bounds each section to `max_chars` characters at
/// paragraph, line, sentence or word boundaries, repeating up to `overlap_chars` characters of
/// the previous chunk. Overlap is capped at a quarter of `max_chars` so chunks always advance.
pub fn chunk_page(page: &Page, max_chars: usize, overlap_chars: usize) -> Vec<Chunk> {
    let max_chars = max_chars.max(16);
    let overlap_chars = overlap_chars.min(max_chars / 4);
    let mut chunks = Vec::new();
    let mut used_keys = HashSet::new();
    for section in &page.sections {
        if section.text.trim().is_empty() {
            continue;
        }
        let url = if section.anchor.is_empty() {
            page.url.clone()
        } else {
            format!("{}#{}", page.url, section.anchor)
        };
        for (ordinal, text) in bound_text(&section.text, max_chars, overlap_chars)
            .into_iter()
            .enumerate()
        {
            let mut key = format!("{}#{}#{ordinal}", page.url, section.anchor);
            // An explicit heading id may repeat an anchor; ids must stay unique per page.
            let mut repeat = 0;
            while !used_keys.insert(key.clone()) {
                repeat += 1;
                key = format!("{}#{}#{ordinal}#{repeat}", page.url, section.anchor);
            }
            let hash = hex(&Sha256::digest(
                format!("{}\n{}\n{}", page.title, section.heading, text).as_bytes(),
            ));
            chunks.push(Chunk {
                id: uuid_from(&key),
                page_url: page.url.clone(),
                url: url.clone(),
                title: page.title.clone(),
                heading: section.heading.clone(),
                heading_path: section.heading_path.clone(),
                text,
                hash,
            });
        }
    }
    chunks
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A UUID (version 8, "custom") from the first 16 bytes of the key's SHA-256.
fn uuid_from(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h = hex(&bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn char_len(text: &str) -> usize {
    text.chars().count()
}

/// Splits `text` into pieces of at most `max_chars`, each but the first starting with up to
/// `overlap_chars` of prose from the end of the previous one.
fn bound_text(text: &str, max_chars: usize, overlap_chars: usize) -> Vec<String> {
    let text = text.trim();
    if char_len(text) <= max_chars {
        return vec![text.to_owned()];
    }
    // Units leave room for the overlap and the blank line that joins it.
    let unit_limit = max_chars - overlap_chars - 2;
    let units: Vec<(bool, String)> = blocks(text)
        .into_iter()
        .flat_map(|block| match code_fence(block) {
            Some(fence) => split_code_block(block, fence, unit_limit)
                .into_iter()
                .map(|piece| (true, piece))
                .collect::<Vec<_>>(),
            None => split_unit(block, unit_limit)
                .into_iter()
                .map(|piece| (false, piece))
                .collect(),
        })
        .filter(|(_, unit)| !unit.is_empty())
        .collect();

    let mut pieces: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut current_has_new_text = false;
    let mut last_unit_is_code = false;
    for (is_code, unit) in units {
        let joined_len = char_len(&current) + 2 + char_len(&unit);
        if !current.is_empty() && joined_len > max_chars {
            // Half a code block out of its fence would read as prose: overlap prose only.
            let overlap = if last_unit_is_code {
                String::new()
            } else {
                tail_at_boundary(&current, overlap_chars)
            };
            pieces.push(std::mem::take(&mut current));
            current = overlap;
        }
        if !current.is_empty() {
            current.push_str("\n\n");
        }
        current.push_str(&unit);
        current_has_new_text = true;
        last_unit_is_code = is_code;
    }
    if current_has_new_text && !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// Blank-line separated blocks, keeping each fenced code block whole.
fn blocks(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut fence: Option<&str> = None;
    let mut offset = 0;
    let mut previous_blank = false;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        match fence {
            Some(open) if trimmed == open => fence = None,
            Some(_) => {}
            None if trimmed.starts_with("```") => {
                fence = Some(&trimmed[..trimmed.len() - trimmed.trim_start_matches('`').len()]);
            }
            None if trimmed.is_empty() && !previous_blank => {
                out.push(text[start..offset].trim());
                start = offset;
            }
            None => {}
        }
        previous_blank = fence.is_none() && trimmed.is_empty();
        offset += line.len();
    }
    out.push(text[start..].trim());
    out.retain(|block| !block.is_empty());
    out
}

/// The opening fence line of a block that is a fenced code block.
fn code_fence(block: &str) -> Option<&str> {
    let first_line = block.lines().next()?;
    (first_line.starts_with("```") && block.trim_end().ends_with("```")).then_some(first_line)
}

/// Splits a fenced code block at lines, giving every piece its own fences.
fn split_code_block(block: &str, opening: &str, limit: usize) -> Vec<String> {
    if char_len(block) <= limit {
        return vec![block.to_owned()];
    }
    let closing = &opening[..opening.len() - opening.trim_start_matches('`').len()];
    let body = block[opening.len()..]
        .trim_start_matches('\n')
        .trim_end()
        .strip_suffix(closing)
        .unwrap_or(block)
        .trim_end_matches('\n');
    let fence_chars = char_len(opening) + char_len(closing) + 2;
    let body_limit = limit.saturating_sub(fence_chars).max(1);
    split_unit(body, body_limit)
        .into_iter()
        .map(|piece| format!("{opening}\n{piece}\n{closing}"))
        .collect()
}

/// Breaks one paragraph that is too long at lines, then sentences, then words, then chars.
fn split_unit(paragraph: &str, limit: usize) -> Vec<String> {
    if char_len(paragraph) <= limit {
        return vec![paragraph.to_owned()];
    }
    let separators: [&str; 3] = ["\n", ". ", " "];
    for separator in separators {
        let parts: Vec<&str> = paragraph.split_inclusive(separator).collect();
        if parts.len() > 1 {
            let mut out = Vec::new();
            let mut current = String::new();
            for part in parts {
                if !current.is_empty() && char_len(&current) + char_len(part) > limit {
                    out.push(current.trim_end().to_owned());
                    current.clear();
                }
                if char_len(part) > limit {
                    out.extend(split_unit(part.trim(), limit));
                } else {
                    current.push_str(part);
                }
            }
            if !current.trim().is_empty() {
                out.push(current.trim_end().to_owned());
            }
            return out;
        }
    }
    let chars: Vec<char> = paragraph.chars().collect();
    chars.chunks(limit).map(|c| c.iter().collect()).collect()
}

/// The last at most `limit` characters of `text`, starting at a sentence or word boundary.
fn tail_at_boundary(text: &str, limit: usize) -> String {
    if limit == 0 {
        return String::new();
    }
    let total = char_len(text);
    if total <= limit {
        return text.to_owned();
    }
    let start_byte = text
        .char_indices()
        .nth(total - limit)
        .map_or(text.len(), |(i, _)| i);
    let tail = &text[start_byte..];
    let boundary = [". ", "\n", " "]
        .iter()
        .find_map(|separator| tail.find(separator).map(|i| i + separator.len()))
        .unwrap_or(0);
    tail[boundary..].trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docs::{parse_page, SiteConfig};

    fn page(source: &str) -> Page {
        let cfg = SiteConfig {
            site_url: "https://example.github.io".to_owned(),
            ..SiteConfig::default()
        };
        parse_page("robots/walking.md", source.as_bytes(), &cfg)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn one_chunk_per_short_section_with_anchored_urls() {
        let chunks = chunk_page(
            &page("# Walking\n\nIntro.\n\n## Balance\n\nZMP.\n\n## Empty\n\n### Inner\n\nText.\n"),
            DEFAULT_MAX_CHARS,
            DEFAULT_OVERLAP_CHARS,
        );
        let urls: Vec<&str> = chunks.iter().map(|c| c.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://example.github.io/docs/robots/walking",
                "https://example.github.io/docs/robots/walking#balance",
                "https://example.github.io/docs/robots/walking#inner",
            ]
        );
        assert_eq!(chunks[2].heading_path, ["Empty", "Inner"]);
        assert_eq!(chunks[1].to_passage().heading, "Balance");
        assert!(chunks.iter().all(|c| c.title == "Walking"));
    }

    #[test]
    fn ids_are_stable_uuids_and_hashes_follow_content() {
        let first = chunk_page(&page("# W\n\n## A\n\nOne.\n"), 1500, 200);
        let again = chunk_page(&page("# W\n\n## A\n\nOne.\n"), 1500, 200);
        let edited = chunk_page(&page("# W\n\n## A\n\nTwo.\n"), 1500, 200);
        assert_eq!(first, again);
        assert_eq!(first[0].id, edited[0].id);
        assert_ne!(first[0].hash, edited[0].hash);
        let id = &first[0].id;
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert_eq!(&id[14..15], "8");
    }

    #[test]
    fn long_sections_are_bounded_with_overlap() {
        let sentence = "The zero moment point must stay inside the support polygon. ";
        let paragraphs: Vec<String> = (0..12)
            .map(|i| format!("Paragraph {i}. {}", sentence.repeat(4)))
            .collect();
        let source = format!("# W\n\n## Long\n\n{}\n", paragraphs.join("\n\n"));
        let chunks = chunk_page(&page(&source), 600, 100);
        assert!(chunks.len() > 3, "{}", chunks.len());
        for chunk in &chunks {
            assert!(chunk.text.chars().count() <= 600, "{}", chunk.text.len());
        }
        for pair in chunks.windows(2) {
            let tail: String = pair[0]
                .text
                .chars()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            assert!(
                pair[1].text.contains(tail.trim()),
                "no overlap between {:?} and {:?}",
                pair[0].text,
                pair[1].text
            );
        }
        let ids: HashSet<&str> = chunks.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids.len(), chunks.len());
        // Every paragraph survives somewhere.
        for i in 0..12 {
            assert!(chunks
                .iter()
                .any(|c| c.text.contains(&format!("Paragraph {i}."))));
        }
    }

    #[test]
    fn long_code_blocks_are_split_inside_their_fences() {
        let code: Vec<String> = (0..80)
            .map(|i| format!("node_{i} = create_node('talker_{i}')"))
            .collect();
        let source = format!(
            "# W\n\n## Code\n\nBefore.\n\n```python\n{}\n\n# end\n```\n\nAfter.\n",
            code.join("\n")
        );
        let chunks = chunk_page(&page(&source), 500, 100);
        assert!(chunks.len() > 3);
        for chunk in &chunks {
            assert!(chunk.text.chars().count() <= 500);
            assert_eq!(chunk.text.matches("```").count() % 2, 0, "{}", chunk.text);
        }
        assert!(chunks
            .iter()
            .any(|c| c.text.contains("```python\nnode_79")
                || c.text.contains("node_79 = create_node")));
        assert!(chunks.last().unwrap().text.ends_with("After."));
    }

    #[test]
    fn a_single_huge_word_is_still_bounded() {
        let source = format!("# W\n\n{}\n", "x".repeat(5000));
        let chunks = chunk_page(&page(&source), 1000, 100);
        assert!(chunks.iter().all(|c| c.text.chars().count() <= 1000));
        let total: usize = chunks.iter().map(|c| c.text.matches('x').count()).sum();
        assert!(total >= 5000);
    }
}
