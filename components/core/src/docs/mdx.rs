//! MDX to readable text: a pulldown-cmark event walk that keeps prose, lists, tables and code,
//! and drops what only a renderer needs (ESM `import`/`export`, JSX and HTML tags, comments).

use pulldown_cmark::{CodeBlockKind, Event, HeadingLevel, Options, Parser, Tag, TagEnd};

/// A heading and the cleaned text up to the next heading. The text before the first heading
/// below the title is the page's introduction (`level == 0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSection {
    pub level: u8,
    /// The heading's plain text, as the anchor is computed from it.
    pub anchor_text: String,
    /// The heading as shown to readers (JSX tags neutralised).
    pub heading: String,
    /// `{#custom-id}` from the heading, if any.
    pub explicit_id: Option<String>,
    pub text: String,
}

/// The rendered page: its first `# ` heading (when it opens the page) and its sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedBody {
    pub title_heading: Option<RawSection>,
    pub sections: Vec<RawSection>,
}

fn options() -> Options {
    Options::ENABLE_TABLES
        | Options::ENABLE_HEADING_ATTRIBUTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
}

/// Renders an MDX body (front matter already removed) into sections.
pub fn render(body: &str) -> RenderedBody {
    let mut renderer = Renderer::new(false);
    renderer.run(body);
    renderer.finish()
}

/// Renders MDX that sits inside something else (an `mdx-code-block` fence, an HTML block):
/// headings become plain lines, everything lands in one text.
fn render_flat(source: &str, in_jsx_comment: &mut bool) -> String {
    let mut renderer = Renderer::new(true);
    renderer.in_jsx_comment = *in_jsx_comment;
    renderer.run(source);
    *in_jsx_comment = renderer.in_jsx_comment;
    renderer.flush_block();
    renderer.text.trim().to_owned()
}

struct Renderer {
    flat: bool,
    sections: Vec<RawSection>,
    title_heading: Option<RawSection>,
    current: Option<RawSection>,
    text: String,
    /// The block being built (paragraph, heading, table cell run, ...).
    block: String,
    pending_text: String,
    html_block: Option<String>,
    heading: Option<HeadingCapture>,
    code: Option<(CodeBlockKind<'static>, String)>,
    skip_paragraph_depth: usize,
    list_stack: Vec<Option<u64>>,
    in_jsx_comment: bool,
    seen_content: bool,
}

struct HeadingCapture {
    level: HeadingLevel,
    id: Option<String>,
    anchor_text: String,
}

impl Renderer {
    fn new(flat: bool) -> Self {
        Self {
            flat,
            sections: Vec::new(),
            title_heading: None,
            current: None,
            text: String::new(),
            block: String::new(),
            pending_text: String::new(),
            html_block: None,
            heading: None,
            code: None,
            skip_paragraph_depth: 0,
            list_stack: Vec::new(),
            in_jsx_comment: false,
            seen_content: false,
        }
    }

    fn run(&mut self, source: &str) {
        for (event, range) in Parser::new_ext(source, options()).into_offset_iter() {
            if self.skip_paragraph_depth > 0 {
                match event {
                    Event::Start(Tag::Paragraph) => self.skip_paragraph_depth += 1,
                    Event::End(TagEnd::Paragraph) => self.skip_paragraph_depth -= 1,
                    _ => {}
                }
                continue;
            }
            if let Some((_, code)) = &mut self.code {
                match event {
                    Event::Text(text) => code.push_str(&text),
                    Event::End(TagEnd::CodeBlock) => self.end_code_block(),
                    _ => {}
                }
                continue;
            }
            self.event(event, &source[range]);
        }
    }

    fn event(&mut self, event: Event<'_>, source: &str) {
        if let Event::Text(text) = &event {
            self.pending_text.push_str(text);
            return;
        }
        self.flush_pending_text();
        match event {
            Event::Start(tag) => self.start(tag, source),
            Event::End(tag) => self.end(tag),
            Event::Text(_) => {}
            Event::Code(code) => {
                let shown = format!("`{}`", neutralize_code(&code));
                self.push_inline(&shown, &code);
            }
            Event::InlineMath(math) | Event::DisplayMath(math) => self.push_inline(&math, &math),
            Event::Html(html) if self.html_block.is_some() => {
                if let Some(block) = &mut self.html_block {
                    block.push_str(&html);
                }
            }
            Event::Html(html) | Event::InlineHtml(html) => {
                let readable = strip_markup(&html);
                if !readable.trim().is_empty() {
                    let mut in_comment = self.in_jsx_comment;
                    let rendered = render_flat(&readable, &mut in_comment);
                    self.in_jsx_comment = in_comment;
                    if !rendered.is_empty() {
                        self.push_inline(&rendered, &rendered);
                        if html.ends_with('\n') {
                            self.block.push('\n');
                        }
                    }
                }
            }
            Event::SoftBreak | Event::HardBreak => {
                if let Some(heading) = &mut self.heading {
                    heading.anchor_text.push(' ');
                    self.block.push(' ');
                } else {
                    self.block.push('\n');
                }
            }
            Event::TaskListMarker(done) => self.block.push_str(if done { "[x] " } else { "[ ] " }),
            Event::FootnoteReference(label) => self.block.push_str(&format!("[{label}]")),
            Event::Rule => self.flush_block(),
        }
    }

    /// Prose arrives in several text events; `{/* ... */}` comments are removed once a run of
    /// them is complete, so comment markers split across events are still found and code
    /// spans (which may show comment syntax) are left alone.
    fn flush_pending_text(&mut self) {
        if self.pending_text.is_empty() {
            return;
        }
        let text = std::mem::take(&mut self.pending_text);
        let text = remove_jsx_comments(&text, &mut self.in_jsx_comment);
        self.push_inline(&text, &text);
    }

    fn push_inline(&mut self, shown: &str, anchor_text: &str) {
        if let Some(heading) = &mut self.heading {
            heading.anchor_text.push_str(anchor_text);
        }
        self.block.push_str(shown);
    }

    fn start(&mut self, tag: Tag<'_>, source: &str) {
        match tag {
            Tag::Paragraph => {
                let opening = source.trim_start();
                if opening.starts_with("import ") || opening.starts_with("export ") {
                    self.skip_paragraph_depth = 1;
                }
            }
            Tag::Heading { level, id, .. } => {
                self.flush_block();
                self.heading = Some(HeadingCapture {
                    level,
                    id: id.map(|id| id.to_string()),
                    anchor_text: String::new(),
                });
            }
            Tag::CodeBlock(kind) => {
                self.flush_block();
                self.code = Some((kind.into_static(), String::new()));
            }
            Tag::List(first) => {
                if self.list_stack.is_empty() {
                    self.flush_block();
                }
                self.list_stack.push(first);
            }
            Tag::Item => {
                if !self.block.is_empty() && !self.block.ends_with('\n') {
                    self.block.push('\n');
                }
                let depth = self.list_stack.len().saturating_sub(1);
                self.block.push_str(&"  ".repeat(depth));
                match self.list_stack.last_mut() {
                    Some(Some(number)) => {
                        self.block.push_str(&format!("{number}. "));
                        *number += 1;
                    }
                    _ => self.block.push_str("- "),
                }
            }
            Tag::Table(_) | Tag::BlockQuote(_) | Tag::FootnoteDefinition(_) => self.flush_block(),
            Tag::TableCell if !self.block.is_empty() && !self.block.ends_with('\n') => {
                self.block.push_str(" | ");
            }
            // A tag may span several lines of an HTML block: strip them all at once.
            Tag::HtmlBlock => self.html_block = Some(String::new()),
            _ => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Paragraph => {
                if self.list_stack.is_empty() {
                    self.flush_block();
                } else if !self.block.ends_with('\n') {
                    self.block.push('\n');
                }
            }
            TagEnd::Heading(_) => self.end_heading(),
            TagEnd::List(_) => {
                self.list_stack.pop();
                if self.list_stack.is_empty() {
                    self.flush_block();
                }
            }
            TagEnd::TableHead | TagEnd::TableRow => self.block.push('\n'),
            TagEnd::HtmlBlock => {
                let html = self.html_block.take().unwrap_or_default();
                let mut in_comment = self.in_jsx_comment;
                let rendered = render_flat(&strip_markup(&html), &mut in_comment);
                self.in_jsx_comment = in_comment;
                if !rendered.is_empty() {
                    if !self.block.is_empty() && !self.block.ends_with('\n') {
                        self.block.push('\n');
                    }
                    self.block.push_str(&rendered);
                }
                if self.list_stack.is_empty() {
                    self.flush_block();
                } else {
                    self.block.push('\n');
                }
            }
            TagEnd::Table | TagEnd::BlockQuote(_) | TagEnd::FootnoteDefinition
                if self.list_stack.is_empty() =>
            {
                self.flush_block();
            }
            _ => {}
        }
    }

    fn end_heading(&mut self) {
        let Some(capture) = self.heading.take() else {
            return;
        };
        let shown = collapse_spaces(&std::mem::take(&mut self.block));
        let anchor_text = collapse_spaces(&capture.anchor_text);
        let level = heading_level(capture.level);
        if self.flat {
            self.block = shown;
            self.flush_block();
            return;
        }
        let section = RawSection {
            level,
            anchor_text,
            heading: shown,
            explicit_id: capture.id,
            text: String::new(),
        };
        if level == 1
            && self.title_heading.is_none()
            && !self.seen_content
            && self.sections.is_empty()
        {
            self.title_heading = Some(section);
            return;
        }
        self.finish_section();
        self.current = Some(section);
    }

    fn end_code_block(&mut self) {
        let Some((kind, code)) = self.code.take() else {
            return;
        };
        let language = match &kind {
            CodeBlockKind::Fenced(info) => info.split_whitespace().next().unwrap_or("").to_owned(),
            CodeBlockKind::Indented => String::new(),
        };
        // MDX has no indented code blocks, and `mdx-code-block` fences are MDX to render:
        // both hold content, not code.
        if matches!(kind, CodeBlockKind::Indented) || language == "mdx-code-block" {
            let mut in_comment = self.in_jsx_comment;
            let rendered = render_flat(&code, &mut in_comment);
            self.in_jsx_comment = in_comment;
            self.block = rendered;
            self.flush_block_raw();
            return;
        }
        let code = neutralize_code(code.trim_end_matches('\n'));
        let code = code.trim_start_matches('\n');
        if code.trim().is_empty() {
            return;
        }
        self.block = format!("```{language}\n{code}\n```");
        self.flush_block_raw();
    }

    /// Ends the current block: comments and admonition fences are resolved, then the block is
    /// appended to the section text.
    fn flush_block(&mut self) {
        self.flush_pending_text();
        let block = std::mem::take(&mut self.block);
        let block = rewrite_admonition_lines(&block);
        self.block = block;
        self.flush_block_raw();
    }

    fn flush_block_raw(&mut self) {
        let block = std::mem::take(&mut self.block);
        let block = block.trim_matches('\n');
        if block.trim().is_empty() {
            return;
        }
        self.seen_content = true;
        if !self.text.is_empty() {
            self.text.push_str("\n\n");
        }
        self.text.push_str(block.trim_end());
    }

    fn finish_section(&mut self) {
        self.flush_block();
        let text = std::mem::take(&mut self.text);
        let section = self.current.take().unwrap_or(RawSection {
            level: 0,
            anchor_text: String::new(),
            heading: String::new(),
            explicit_id: None,
            text: String::new(),
        });
        if section.level == 0 && text.is_empty() && self.sections.is_empty() {
            return;
        }
        self.sections.push(RawSection { text, ..section });
    }

    fn finish(mut self) -> RenderedBody {
        self.finish_section();
        RenderedBody {
            title_heading: self.title_heading,
            sections: self.sections,
        }
    }
}

fn heading_level(level: HeadingLevel) -> u8 {
    match level {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}

fn collapse_spaces(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Removes `{/* ... */}` comments; `in_comment` carries an unclosed one across blocks.
fn remove_jsx_comments(text: &str, in_comment: &mut bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        if *in_comment {
            match rest.find("*/}") {
                Some(end) => {
                    rest = &rest[end + 3..];
                    *in_comment = false;
                }
                None => return out,
            }
        } else {
            match rest.find("{/*") {
                Some(start) => {
                    out.push_str(&rest[..start]);
                    rest = &rest[start + 3..];
                    *in_comment = true;
                }
                None => {
                    out.push_str(rest);
                    return out;
                }
            }
        }
    }
}

/// `:::tip Title` / `:::tip[Title]` open an admonition and `:::` closes one; readers keep the
/// kind and title as a line of text.
fn rewrite_admonition_lines(block: &str) -> String {
    let mut lines = Vec::new();
    for line in block.lines() {
        let trimmed = line.trim();
        let Some(rest) = trimmed.strip_prefix(":::") else {
            lines.push(line.to_owned());
            continue;
        };
        let rest = rest.trim_start_matches(':');
        let kind_end = rest
            .find(|c: char| !c.is_alphanumeric() && c != '-' && c != '_')
            .unwrap_or(rest.len());
        let (kind, title) = rest.split_at(kind_end);
        if kind.is_empty() {
            continue;
        }
        let title = title.trim();
        let title = title
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(title)
            .trim();
        let mut label: String = kind[..1].to_uppercase();
        label.push_str(&kind[1..]);
        lines.push(if title.is_empty() {
            format!("{label}:")
        } else {
            format!("{label}: {title}")
        });
    }
    lines.join("\n")
}

/// A JSX/HTML tag starting at `position` (which holds `<`): its end (after `>`), name, whether
/// it closes, and the text between the name and `>`.
struct TagSpan<'a> {
    end: usize,
    /// False when the text ended before the tag's `>`.
    terminated: bool,
    name: &'a str,
    closing: bool,
    attributes: &'a str,
}

fn parse_tag(text: &str, position: usize) -> Option<TagSpan<'_>> {
    let bytes = text.as_bytes();
    let mut index = position + 1;
    let closing = bytes.get(index) == Some(&b'/');
    if closing {
        index += 1;
    }
    let name_start = index;
    if !bytes.get(index)?.is_ascii_alphabetic() {
        // `<>` and `</>` are JSX fragments.
        if bytes.get(index) == Some(&b'>') {
            return Some(TagSpan {
                end: index + 1,
                terminated: true,
                name: "",
                closing,
                attributes: "",
            });
        }
        return None;
    }
    while index < bytes.len()
        && (bytes[index].is_ascii_alphanumeric() || matches!(bytes[index], b'.' | b'-' | b'_'))
    {
        index += 1;
    }
    let name = &text[name_start..index];
    match bytes.get(index) {
        Some(b'>' | b'/') => {}
        Some(c) if c.is_ascii_whitespace() => {}
        None => {}
        _ => return None,
    }
    let attributes_start = index;
    let mut brace_depth = 0usize;
    let mut quote: Option<u8> = None;
    while index < bytes.len() {
        let c = bytes[index];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                b'"' | b'\'' | b'`' => quote = Some(c),
                b'{' => brace_depth += 1,
                b'}' => brace_depth = brace_depth.saturating_sub(1),
                b'>' if brace_depth == 0 => {
                    let attributes = text[attributes_start..index].trim().trim_end_matches('/');
                    return Some(TagSpan {
                        end: index + 1,
                        terminated: true,
                        name,
                        closing,
                        attributes: attributes.trim(),
                    });
                }
                _ => {}
            },
        }
        index += 1;
    }
    // An unterminated tag (its `>` is in a later event) still ends at the end of this text.
    Some(TagSpan {
        end: bytes.len(),
        terminated: false,
        name,
        closing,
        attributes: text[attributes_start..].trim(),
    })
}

/// A string-literal attribute such as `label="Apple"`.
fn string_attribute<'a>(attributes: &'a str, key: &str) -> Option<&'a str> {
    let mut search = attributes;
    while let Some(found) = search.find(key) {
        let before_ok = found == 0
            || search[..found]
                .chars()
                .next_back()
                .is_some_and(char::is_whitespace);
        let after = search[found + key.len()..].trim_start();
        if before_ok {
            if let Some(value) = after.strip_prefix('=') {
                let value = value.trim_start();
                let quote = value.chars().next()?;
                if quote == '"' || quote == '\'' {
                    let inner = &value[1..];
                    return inner.find(quote).map(|end| &inner[..end]);
                }
            }
        }
        search = &search[found + key.len()..];
    }
    None
}

/// Drops HTML/JSX tags and HTML comments from markup, keeping the text between tags and the
/// labels and titles that tabs and details show to readers.
pub fn strip_markup(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut position = 0;
    while position < html.len() {
        let rest = &html[position..];
        let Some(offset) = rest.find('<') else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..offset]);
        position += offset;
        if html[position..].starts_with("<!--") {
            position = html[position..]
                .find("-->")
                .map_or(html.len(), |end| position + end + 3);
            continue;
        }
        match parse_tag(html, position) {
            Some(tag) => {
                if !tag.closing {
                    let label = string_attribute(tag.attributes, "label")
                        .or_else(|| string_attribute(tag.attributes, "title"));
                    if let Some(label) = label.filter(|l| !l.trim().is_empty()) {
                        out.push_str(label.trim());
                        out.push('\n');
                    }
                }
                position = tag.end;
            }
            None => {
                out.push('<');
                position += 1;
            }
        }
    }
    out
}

/// Code stays code, but without what an MDX renderer would execute: ES module `import` lines
/// are dropped, `export` keywords removed, and JSX component tags reduced to their name and
/// props (`<TabItem value="a">` -> `TabItem value="a"`, closing tags removed).
pub fn neutralize_code(code: &str) -> String {
    let mut lines = Vec::new();
    let mut in_import = false;
    for line in code.split('\n') {
        let trimmed = line.trim_start();
        if in_import {
            if trimmed.contains("from ") || trimmed.ends_with(';') {
                in_import = false;
            }
            continue;
        }
        if trimmed.starts_with("import ") || trimmed.starts_with("import{") {
            let complete = trimmed.contains(" from ")
                || trimmed.ends_with(';')
                || trimmed.starts_with("import '")
                || trimmed.starts_with("import \"");
            in_import = !complete;
            continue;
        }
        let indent = &line[..line.len() - trimmed.len()];
        let statement = trimmed
            .strip_prefix("export default ")
            .or_else(|| trimmed.strip_prefix("export "));
        lines.push(match statement {
            Some(statement) => format!("{indent}{statement}"),
            None => line.to_owned(),
        });
    }
    neutralize_component_tags(&lines.join("\n"))
}

fn neutralize_component_tags(code: &str) -> String {
    let line = code;
    let mut out = String::with_capacity(line.len());
    let mut position = 0;
    while let Some(offset) = line[position..].find('<') {
        let start = position + offset;
        out.push_str(&line[position..start]);
        // `Array<String>` is a generic type, not a tag.
        let after_identifier = line[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.');
        let bytes = line.as_bytes();
        let name_index = if bytes.get(start + 1) == Some(&b'/') {
            start + 2
        } else {
            start + 1
        };
        let is_component = bytes.get(name_index).is_some_and(u8::is_ascii_uppercase);
        let closing = name_index == start + 2;
        match parse_tag(line, start).filter(|_| is_component && (closing || !after_identifier)) {
            // `a <B` with no `>` after it is not a tag to swallow: only its `<` goes.
            Some(tag) if !tag.terminated => {
                out.push_str(tag.name);
                position = name_index + tag.name.len();
            }
            Some(tag) => {
                if !tag.closing {
                    out.push_str(tag.name);
                    if !tag.attributes.is_empty() {
                        out.push(' ');
                        out.push_str(&neutralize_component_tags(tag.attributes));
                    }
                }
                position = tag.end;
            }
            None => {
                out.push('<');
                position = start + 1;
            }
        }
    }
    out.push_str(&line[position..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_text(body: &RenderedBody) -> String {
        body.sections
            .iter()
            .map(|s| format!("[{}] {}\n{}", s.level, s.heading, s.text))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn drops_esm_and_jsx_but_keeps_readable_text() {
        let source = r#"import Tabs from '@theme/Tabs';
import TabItem from '@theme/TabItem';
export const meta = {a: 1};

# Install

Intro with the `<Tabs>` component.

<Tabs groupId="pm">
  <TabItem value="npm" label="npm">

```bash
npm install
```

  </TabItem>
  <TabItem value="yarn" label="Yarn">Use yarn add.</TabItem>
</Tabs>

<details>
<summary>More info</summary>

Hidden **detail** text.

</details>

<!-- an html comment -->
{/* an mdx comment */}
Visible text.
"#;
        let body = render(source);
        assert_eq!(body.title_heading.as_ref().unwrap().heading, "Install");
        let text = all_text(&body);
        for kept in [
            "Intro with the `Tabs` component.",
            "npm install",
            "Use yarn add.",
            "Yarn",
            "More info",
            "Hidden detail text.",
            "Visible text.",
        ] {
            assert!(text.contains(kept), "missing {kept:?} in {text}");
        }
        for dropped in [
            "import ", "export ", "<Tabs", "</Tab", "<details", "comment", "groupId",
        ] {
            assert!(!text.contains(dropped), "found {dropped:?} in {text}");
        }
    }

    #[test]
    fn admonitions_keep_title_and_body() {
        let body = render(":::warning Mind the gap\n\nStand clear.\n\n:::\n\n:::tip[Shortcut]\nUse `ros2 topic list`.\n:::\n");
        let text = all_text(&body);
        assert!(text.contains("Warning: Mind the gap"), "{text}");
        assert!(text.contains("Stand clear."));
        assert!(
            text.contains("Tip: Shortcut\nUse `ros2 topic list`."),
            "{text}"
        );
        assert!(!text.contains(":::"));
    }

    #[test]
    fn headings_split_sections_with_explicit_ids() {
        let body =
            render("# Title\n\nIntro.\n\n## First {#custom}\n\nOne.\n\n### Sub `code`\n\nTwo.\n");
        let sections = &body.sections;
        assert_eq!(sections.len(), 3);
        assert_eq!(
            (sections[0].level, sections[0].text.as_str()),
            (0, "Intro.")
        );
        assert_eq!(sections[1].heading, "First");
        assert_eq!(sections[1].explicit_id.as_deref(), Some("custom"));
        assert_eq!(sections[2].anchor_text, "Sub code");
        assert_eq!(sections[2].heading, "Sub `code`");
    }

    #[test]
    fn code_blocks_are_kept_without_module_syntax_or_component_tags() {
        let source = "```jsx\nimport Tabs from '@theme/Tabs';\nimport {\n  a,\n} from 'b';\n\nexport default function Demo() {\n  const x: Array<String> = [];\n  return <Tabs values={[{label: 'A'}]}><TabItem value=\"a\">Apple</TabItem></Tabs>;\n}\n```\n";
        let text = all_text(&render(source));
        assert!(text.contains("```jsx\nfunction Demo() {"), "{text}");
        assert!(text.contains("Array<String>"));
        assert!(
            text.contains("return Tabs values={[{label: 'A'}]}TabItem value=\"a\"Apple;"),
            "{text}"
        );
        assert!(!text.contains("import"));
    }

    #[test]
    fn mdx_code_block_fences_are_rendered_as_content() {
        let source = "```mdx-code-block\nimport Demo from './demo';\n\n<BrowserWindow>\n\nShown **text**.\n\n</BrowserWindow>\n```\n";
        let text = all_text(&render(source));
        assert_eq!(text.trim(), "[0] \nShown text.");
    }

    #[test]
    fn lists_and_tables_read_as_lines() {
        let text = all_text(&render(
            "1. one\n2. two\n   - nested\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
        ));
        assert!(text.contains("1. one\n2. two\n  - nested"), "{text}");
        assert!(text.contains("a | b\n1 | 2"), "{text}");
    }
}
