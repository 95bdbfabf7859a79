//! Docusaurus docs as ingestion sees them: one already-read file becomes a [`Page`] (public
//! URL, title, cleaned sections), and a page becomes bounded [`Chunk`]s with stable ids.
//! Sans-IO: the caller walks the folder and reads the files.

mod chunk;
mod front_matter;
mod mdx;
mod url;

use std::fmt;

pub use chunk::{chunk_page, Chunk, DEFAULT_MAX_CHARS, DEFAULT_OVERLAP_CHARS};
pub use front_matter::FrontMatter;
pub use mdx::{neutralize_code, strip_markup};
pub use url::{doc_slug, page_url, slugify, strip_number_prefix, SiteConfig, Slugger};

/// A doc page, cleaned and addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Path relative to the docs folder, `/`-separated (as given to [`parse_page`]).
    pub rel_path: String,
    /// Slug below `routeBasePath`, starting with `/`.
    pub slug: String,
    /// Public URL, without anchor.
    pub url: String,
    pub title: String,
    pub description: Option<String>,
    pub sidebar_label: Option<String>,
    /// The introduction (if any) and then one section per heading, in order.
    pub sections: Vec<Section>,
}

/// Text under one heading, up to the next heading of any level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// 0 for the introduction before the first heading, else the heading level (2 for `##`).
    pub level: u8,
    /// Heading text, "" for the introduction.
    pub heading: String,
    /// Anchor as Docusaurus renders it, "" for the introduction.
    pub anchor: String,
    /// Headings from the outermost enclosing one down to this one.
    pub heading_path: Vec<String>,
    pub text: String,
}

/// Why a file could not become a page; the message names the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocError {
    pub path: String,
    pub problem: String,
}

impl fmt::Display for DocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

impl std::error::Error for DocError {}

/// Whether the docs plugin would skip this path: partials and anything under a `_` folder.
pub fn is_partial(rel_path: &str) -> bool {
    rel_path.split('/').any(|segment| segment.starts_with('_'))
}

/// Reads one doc file. `Ok(None)` for partials and drafts, which are not published.
pub fn parse_page(
    rel_path: &str,
    bytes: &[u8],
    cfg: &SiteConfig,
) -> Result<Option<Page>, DocError> {
    let rel_path = rel_path.replace('\\', "/");
    let rel_path = rel_path.trim_start_matches("./").to_owned();
    let error = |problem: String| DocError {
        path: rel_path.clone(),
        problem,
    };
    if is_partial(&rel_path) {
        return Ok(None);
    }
    let source = std::str::from_utf8(bytes).map_err(|e| error(format!("not valid UTF-8 ({e})")))?;
    let (front_matter, body) = front_matter::split(source).map_err(error)?;
    if front_matter.draft {
        return Ok(None);
    }
    let slug = doc_slug(
        &rel_path,
        front_matter.id.as_deref(),
        front_matter.slug.as_deref(),
    );
    let url = page_url(&slug, cfg);
    let rendered = mdx::render(body);

    let mut slugger = Slugger::default();
    let title_heading = rendered.title_heading.as_ref().map(|h1| {
        if h1.explicit_id.is_none() {
            slugger.slug(&h1.anchor_text);
        }
        h1.heading.clone()
    });
    let title = front_matter
        .title
        .clone()
        .or(title_heading)
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| {
            let file_name = rel_path.rsplit('/').next().unwrap_or(&rel_path);
            let stem = file_name.rsplit_once('.').map_or(file_name, |(s, _)| s);
            strip_number_prefix(stem).to_owned()
        });

    let mut sections = Vec::with_capacity(rendered.sections.len());
    let mut open_headings: Vec<(u8, String)> = Vec::new();
    for raw in rendered.sections {
        let anchor = match (&raw.explicit_id, raw.level) {
            (_, 0) => String::new(),
            (Some(id), _) => id.clone(),
            (None, _) => slugger.slug(&raw.anchor_text),
        };
        let heading_path = if raw.level == 0 {
            Vec::new()
        } else {
            open_headings.retain(|(level, _)| *level < raw.level);
            open_headings.push((raw.level, raw.heading.clone()));
            open_headings.iter().map(|(_, h)| h.clone()).collect()
        };
        sections.push(Section {
            level: raw.level,
            heading: raw.heading,
            anchor,
            heading_path,
            text: raw.text,
        });
    }

    Ok(Some(Page {
        rel_path,
        slug,
        url,
        title,
        description: front_matter.description,
        sidebar_label: front_matter.sidebar_label,
        sections,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SiteConfig {
        SiteConfig {
            site_url: "https://example.github.io".to_owned(),
            base_url: "/physical-ai-book/".to_owned(),
            ..SiteConfig::default()
        }
    }

    #[test]
    fn page_urls_titles_and_anchors() {
        let table: &[(&str, &str, &str, &str)] = &[
            (
                "guides/docs/docs-create-doc.mdx",
                "---\nid: create-doc\nslug: /create-doc\n---\n# Create a doc\n",
                "/physical-ai-book/docs/create-doc",
                "Create a doc",
            ),
            (
                "01-foundations/02-what-is.md",
                "# What is it\n",
                "/physical-ai-book/docs/foundations/what-is",
                "What is it",
            ),
            (
                "01-foundations/index.md",
                "---\ntitle: Foundations\n---\n# Ignored H1\n",
                "/physical-ai-book/docs/foundations",
                "Foundations",
            ),
            (
                "02-ros2/README.md",
                "text only\n",
                "/physical-ai-book/docs/ros2",
                "README",
            ),
            (
                "02-ros2/1_nodes.mdx",
                "---\nslug: topics-and-nodes\n---\n# Nodes\n",
                "/physical-ai-book/docs/ros2/topics-and-nodes",
                "Nodes",
            ),
            (
                "02-ros2/1_nodes.mdx",
                "---\nid: node-basics\n---\n# Nodes\n",
                "/physical-ai-book/docs/ros2/node-basics",
                "Nodes",
            ),
            (
                "index.md",
                "# Welcome\n",
                "/physical-ai-book/docs",
                "Welcome",
            ),
        ];
        for (path, source, expected_path, expected_title) in table {
            let page = parse_page(path, source.as_bytes(), &cfg())
                .unwrap()
                .unwrap();
            assert_eq!(
                page.url,
                format!("https://example.github.io{expected_path}"),
                "{path}"
            );
            assert_eq!(page.title, *expected_title, "{path}");
        }
    }

    #[test]
    fn sections_get_docusaurus_anchors_and_paths() {
        let source = "# Kinematics\n\nIntro.\n\n## Forward kinematics\n\nA.\n\n### Example\n\nB.\n\n## Inverse kinematics {#ik}\n\nC.\n\n### Example\n\nD.\n\n## Kinematics\n\nE.\n";
        let page = parse_page("k.md", source.as_bytes(), &cfg())
            .unwrap()
            .unwrap();
        let summary: Vec<(&str, Vec<&str>)> = page
            .sections
            .iter()
            .map(|s| {
                (
                    s.anchor.as_str(),
                    s.heading_path.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("", vec![]),
                ("forward-kinematics", vec!["Forward kinematics"]),
                ("example", vec!["Forward kinematics", "Example"]),
                ("ik", vec!["Inverse kinematics"]),
                ("example-1", vec!["Inverse kinematics", "Example"]),
                // The page's H1 already took `kinematics`.
                ("kinematics-1", vec!["Kinematics"]),
            ]
        );
    }

    #[test]
    fn partials_drafts_and_bad_files() {
        let cfg = cfg();
        assert_eq!(parse_page("_partial.mdx", b"# P\n", &cfg), Ok(None));
        assert_eq!(parse_page("a/_shared/x.md", b"# P\n", &cfg), Ok(None));
        assert_eq!(
            parse_page("draft.md", b"---\ndraft: true\n---\n# D\n", &cfg),
            Ok(None)
        );
        let invalid = parse_page("bad.md", &[0x66, 0xff, 0xfe], &cfg).unwrap_err();
        assert!(
            invalid.to_string().starts_with("bad.md: not valid UTF-8"),
            "{invalid}"
        );
        let unclosed = parse_page("open.md", b"---\ntitle: x\n# T\n", &cfg).unwrap_err();
        assert_eq!(unclosed.path, "open.md");
        assert!(unclosed.problem.contains("never closed"));
    }
}
