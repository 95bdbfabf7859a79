//! The front matter keys ingestion needs, read strictly from the flat `key: value` subset of
//! YAML that Docusaurus pages use. Lists and nested mappings are skipped, not interpreted.

/// Front matter keys that change a page's URL, title or visibility.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrontMatter {
    pub id: Option<String>,
    pub slug: Option<String>,
    pub title: Option<String>,
    pub draft: bool,
    pub sidebar_label: Option<String>,
    pub description: Option<String>,
}

/// Splits `source` into its front matter and the Markdown body that follows it.
/// A source that does not start with a `---` line has no front matter.
pub fn split(source: &str) -> Result<(FrontMatter, &str), String> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let Some(first_line_end) = source.find('\n') else {
        return Ok((FrontMatter::default(), source));
    };
    if source[..first_line_end].trim_end() != "---" {
        return Ok((FrontMatter::default(), source));
    }
    let mut offset = first_line_end + 1;
    let mut block_lines = Vec::new();
    loop {
        if offset >= source.len() {
            return Err("front matter starts with `---` but is never closed".to_owned());
        }
        let line_end = source[offset..]
            .find('\n')
            .map_or(source.len(), |i| offset + i);
        let line = source[offset..line_end].trim_end_matches('\r');
        let next = (line_end + 1).min(source.len());
        if line.trim_end() == "---" {
            let front_matter = parse_block(&block_lines)?;
            return Ok((front_matter, &source[next..]));
        }
        block_lines.push(line);
        offset = next;
        if line_end == source.len() {
            return Err("front matter starts with `---` but is never closed".to_owned());
        }
    }
}

fn parse_block(lines: &[&str]) -> Result<FrontMatter, String> {
    let mut front_matter = FrontMatter::default();
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index];
        let line_number = index + 2;
        index += 1;
        let trimmed = line.trim();
        // Indented lines and list items belong to a nested value we do not read.
        if trimmed.is_empty()
            || trimmed.starts_with('#')
            || line.starts_with([' ', '\t'])
            || trimmed.starts_with("- ")
            || trimmed == "-"
        {
            continue;
        }
        let Some((key, raw_value)) = line.split_once(':') else {
            return Err(format!(
                "front matter line {line_number} is not `key: value`: {trimmed:?}"
            ));
        };
        let key = key.trim();
        let raw_value = raw_value.trim();
        let value = if matches!(raw_value, "|" | "|-" | "|+" | ">" | ">-" | ">+") {
            let mut block = Vec::new();
            while index < lines.len()
                && (lines[index].starts_with([' ', '\t']) || lines[index].trim().is_empty())
            {
                block.push(lines[index].trim());
                index += 1;
            }
            let separator = if raw_value.starts_with('|') {
                "\n"
            } else {
                " "
            };
            Some(block.join(separator).trim().to_owned())
        } else if raw_value.is_empty() {
            None
        } else {
            Some(
                parse_scalar(raw_value)
                    .map_err(|problem| format!("front matter key `{key}`: {problem}"))?,
            )
        };
        let Some(value) = value else { continue };
        match key {
            "id" => front_matter.id = Some(value),
            "slug" => front_matter.slug = Some(value),
            "title" => front_matter.title = Some(value),
            "sidebar_label" => front_matter.sidebar_label = Some(value),
            "description" => front_matter.description = Some(value),
            "draft" => {
                front_matter.draft = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(format!(
                            "front matter key `draft` must be true or false, not {other:?}"
                        ))
                    }
                }
            }
            _ => {}
        }
    }
    Ok(front_matter)
}

fn parse_scalar(raw: &str) -> Result<String, String> {
    if let Some(rest) = raw.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return expect_only_comment(chars.as_str()).map(|()| value),
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some(other) => value.push(other),
                    None => break,
                },
                other => value.push(other),
            }
        }
        Err("double-quoted value is not closed".to_owned())
    } else if let Some(rest) = raw.strip_prefix('\'') {
        let mut value = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    value.push('\'');
                } else {
                    let remainder: String = chars.collect();
                    return expect_only_comment(&remainder).map(|()| value);
                }
            } else {
                value.push(c);
            }
        }
        Err("single-quoted value is not closed".to_owned())
    } else {
        let without_comment = raw.find(" #").map_or(raw, |i| &raw[..i]);
        Ok(without_comment.trim().to_owned())
    }
}

fn expect_only_comment(after_quote: &str) -> Result<(), String> {
    let rest = after_quote.trim();
    if rest.is_empty() || rest.starts_with('#') {
        Ok(())
    } else {
        Err(format!("unexpected text after the quoted value: {rest:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_flat_keys_and_skips_nested_values() {
        let source = "---\nid: intro\nslug: '/start'\ntitle: \"Say \\\"hi\\\": now\"\nkeywords:\n  - a\n  - b\ndraft: false\ndescription: >\n  folded\n  text\n---\n# Body\n";
        let (front_matter, body) = split(source).unwrap();
        assert_eq!(front_matter.id.as_deref(), Some("intro"));
        assert_eq!(front_matter.slug.as_deref(), Some("/start"));
        assert_eq!(front_matter.title.as_deref(), Some("Say \"hi\": now"));
        assert_eq!(front_matter.description.as_deref(), Some("folded text"));
        assert!(!front_matter.draft);
        assert_eq!(body, "# Body\n");
    }

    #[test]
    fn no_front_matter_leaves_the_source_whole() {
        let (front_matter, body) = split("# Title\n\ntext").unwrap();
        assert_eq!(front_matter, FrontMatter::default());
        assert_eq!(body, "# Title\n\ntext");
    }

    #[test]
    fn rejects_malformed_blocks() {
        assert!(split("---\nid: x\n# never closed\n")
            .unwrap_err()
            .contains("never closed"));
        assert!(split("---\njust words\n---\n")
            .unwrap_err()
            .contains("line 2"));
        assert!(split("---\ntitle: \"open\n---\n")
            .unwrap_err()
            .contains("title"));
        assert!(split("---\ndraft: maybe\n---\n")
            .unwrap_err()
            .contains("draft"));
        assert!(split("---\nslug: 'a' b\n---\n")
            .unwrap_err()
            .contains("slug"));
    }
}
