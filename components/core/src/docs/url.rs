//! Page URLs and heading anchors, derived the way Docusaurus derives them (docs plugin slugs,
//! number prefixes, category indexes, `baseUrl`, `trailingSlash`; github-slugger anchors).

use std::collections::HashMap;

/// Where the docs are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    /// Scheme and host, e.g. `https://example.github.io` (a trailing `/` is ignored).
    pub site_url: String,
    /// Docusaurus `baseUrl`, e.g. `/physical-ai-book/`.
    pub base_url: String,
    /// The docs plugin's `routeBasePath`; `""` or `/` serves docs at the site root.
    pub route_base_path: String,
    /// Docusaurus `trailingSlash`: `true` appends `/` to page paths, `false` removes it.
    pub trailing_slash: bool,
}

impl Default for SiteConfig {
    fn default() -> Self {
        Self {
            site_url: String::new(),
            base_url: "/".to_owned(),
            route_base_path: "docs".to_owned(),
            trailing_slash: false,
        }
    }
}

/// Removes a Docusaurus number prefix (`01-intro` -> `intro`, `1_x` -> `x`, `2. y` -> `y`),
/// leaving date-like names (`2021-05-01-post`) and names that are only a number untouched.
pub fn strip_number_prefix(name: &str) -> &str {
    if is_date_like(name) {
        return name;
    }
    let digits_end = name
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit())
        .map_or(name.len(), |(i, _)| i);
    if digits_end == 0 {
        return name;
    }
    let after_digits = name[digits_end..].trim_start();
    let after_separators = after_digits.trim_start_matches(['-', '_', '.']);
    if after_separators.len() == after_digits.len() {
        return name;
    }
    let suffix = after_separators.trim_start();
    match suffix.chars().next() {
        Some(c) if !matches!(c, '-' | '_' | '.') && !c.is_whitespace() => suffix,
        _ => name,
    }
}

fn is_date_like(name: &str) -> bool {
    // Docusaurus: /^\d{2,4}[-_.]\d{1,2}[-_.]\d{1,2}/
    let bytes = name.as_bytes();
    let mut position = 0;
    for (min, max) in [(2, 4), (1, 2), (1, 2)] {
        if position > 0 {
            if !matches!(bytes.get(position), Some(b'-' | b'_' | b'.')) {
                return false;
            }
            position += 1;
        }
        let start = position;
        while position < bytes.len() && bytes[position].is_ascii_digit() && position - start < max {
            position += 1;
        }
        if position - start < min {
            return false;
        }
    }
    true
}

/// The doc's slug (the path below `routeBasePath`, starting with `/`), from its path relative
/// to the docs folder and its front matter `id` and `slug`.
pub fn doc_slug(
    rel_path: &str,
    front_matter_id: Option<&str>,
    front_matter_slug: Option<&str>,
) -> String {
    let (dir, file_name) = rel_path.rsplit_once('/').unwrap_or(("", rel_path));
    let stem = file_name
        .rsplit_once('.')
        .map_or(file_name, |(stem, _)| stem);
    if let Some(slug) = front_matter_slug.filter(|s| s.starts_with('/')) {
        return slug.to_owned();
    }
    let dir_slug = if dir.is_empty() {
        "/".to_owned()
    } else {
        let stripped: Vec<&str> = dir.split('/').map(strip_number_prefix).collect();
        format!("/{}/", stripped.join("/"))
    };
    let last_dir = dir.rsplit('/').next().unwrap_or("");
    let is_category_index = ["index", "readme"].contains(&stem.to_lowercase().as_str())
        || (!last_dir.is_empty() && stem.eq_ignore_ascii_case(last_dir));
    if front_matter_slug.is_none() && is_category_index {
        return dir_slug;
    }
    let base = front_matter_slug
        .or(front_matter_id)
        .unwrap_or_else(|| strip_number_prefix(stem));
    resolve_pathname(base, &dir_slug)
}

/// Resolves a relative path against a directory path that ends with `/` (as `resolve-pathname`).
fn resolve_pathname(relative: &str, directory: &str) -> String {
    let mut segments: Vec<&str> = directory.split('/').filter(|s| !s.is_empty()).collect();
    let relative_segments: Vec<&str> = relative.split('/').collect();
    let ends_as_directory = matches!(relative_segments.last(), Some(&"" | &"." | &".."));
    for segment in relative_segments {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut path = format!("/{}", segments.join("/"));
    if ends_as_directory && path != "/" {
        path.push('/');
    }
    path
}

fn trim_slashes(value: &str) -> &str {
    value.trim_matches('/')
}

/// The public URL of a doc whose slug is `slug`: site URL, `baseUrl`, `routeBasePath`, slug,
/// with the trailing slash applied as Docusaurus's `applyTrailingSlash` does.
pub fn page_url(slug: &str, cfg: &SiteConfig) -> String {
    let base = trim_slashes(&cfg.base_url);
    let base_path = if base.is_empty() {
        "/".to_owned()
    } else {
        format!("/{base}/")
    };
    let mut path = base_path.clone();
    for part in [trim_slashes(&cfg.route_base_path), trim_slashes(slug)] {
        if !part.is_empty() {
            if !path.ends_with('/') {
                path.push('/');
            }
            path.push_str(part);
        }
    }
    // The site's home (`/` or the baseUrl itself) keeps its slash either way.
    if path != base_path {
        if cfg.trailing_slash && !path.ends_with('/') {
            path.push('/');
        } else if !cfg.trailing_slash {
            while path.ends_with('/') && path.len() > 1 {
                path.pop();
            }
        }
    }
    format!("{}{path}", cfg.site_url.trim_end_matches('/'))
}

/// github-slugger: unique anchors for one page, in heading order.
#[derive(Debug, Default)]
pub struct Slugger {
    occurrences: HashMap<String, usize>,
}

impl Slugger {
    /// The anchor for the next heading with this text; repeats get `-1`, `-2`, ...
    pub fn slug(&mut self, heading_text: &str) -> String {
        let original = slugify(heading_text);
        let mut result = original.clone();
        while self.occurrences.contains_key(&result) {
            let count = self.occurrences.entry(original.clone()).or_insert(0);
            *count += 1;
            result = format!("{original}-{count}");
        }
        self.occurrences.insert(result.clone(), 0);
        result
    }
}

/// github-slugger's `slug()` without the uniqueness: lower-case, drop punctuation and symbols
/// (but not `-` and `_`), each space becomes `-`.
pub fn slugify(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(base_url: &str, route: &str, trailing_slash: bool) -> SiteConfig {
        SiteConfig {
            site_url: "https://example.github.io/".to_owned(),
            base_url: base_url.to_owned(),
            route_base_path: route.to_owned(),
            trailing_slash,
        }
    }

    #[test]
    fn number_prefixes() {
        for (name, expected) in [
            ("01-intro", "intro"),
            ("1_x", "x"),
            ("2. Setup", "Setup"),
            ("003 - Spaced", "Spaced"),
            ("10--double", "double"),
            ("intro", "intro"),
            ("2021-05-01-post", "2021-05-01-post"),
            ("42", "42"),
            ("1-", "1-"),
            ("1-_x", "x"),
            ("v2-api", "v2-api"),
        ] {
            assert_eq!(strip_number_prefix(name), expected, "{name}");
        }
    }

    #[test]
    fn slugs_follow_the_docs_plugin() {
        let table: &[(&str, Option<&str>, Option<&str>, &str)] = &[
            (
                "guides/docs/docs-create-doc.mdx",
                Some("create-doc"),
                Some("/create-doc"),
                "/create-doc",
            ),
            ("intro.md", None, None, "/intro"),
            (
                "01-foundations/02-what-is-physical-ai.md",
                None,
                None,
                "/foundations/what-is-physical-ai",
            ),
            ("01-foundations/index.md", None, None, "/foundations/"),
            ("guides/README.md", None, None, "/guides/"),
            ("guides/Guides.mdx", None, None, "/guides/"),
            ("01-guides/01-guides.md", None, None, "/guides/"),
            ("index.md", None, None, "/"),
            (
                "guides/markdown.md",
                Some("md-features"),
                None,
                "/guides/md-features",
            ),
            (
                "guides/markdown.md",
                None,
                Some("features"),
                "/guides/features",
            ),
            ("guides/deep/page.md", None, Some("../up"), "/guides/up"),
            (
                "guides/deep/page.md",
                None,
                Some("./here/"),
                "/guides/deep/here/",
            ),
            ("guides/index.md", Some("custom"), None, "/guides/"),
            ("guides/index.md", None, Some("home"), "/guides/home"),
            (
                "api/plugins/plugin-content-docs.mdx",
                None,
                Some("/api/plugins/@docusaurus/plugin-content-docs"),
                "/api/plugins/@docusaurus/plugin-content-docs",
            ),
        ];
        for (path, id, slug, expected) in table {
            assert_eq!(
                doc_slug(path, *id, *slug),
                *expected,
                "{path} id={id:?} slug={slug:?}"
            );
        }
    }

    #[test]
    fn page_urls_apply_base_url_route_and_trailing_slash() {
        let table = [
            (
                "/create-doc",
                cfg("/", "docs", false),
                "https://example.github.io/docs/create-doc",
            ),
            (
                "/guides/",
                cfg("/", "docs", false),
                "https://example.github.io/docs/guides",
            ),
            (
                "/guides/",
                cfg("/", "docs", true),
                "https://example.github.io/docs/guides/",
            ),
            (
                "/intro",
                cfg("/", "docs", true),
                "https://example.github.io/docs/intro/",
            ),
            (
                "/",
                cfg("/", "docs", false),
                "https://example.github.io/docs",
            ),
            (
                "/intro",
                cfg("/physical-ai-book/", "docs", false),
                "https://example.github.io/physical-ai-book/docs/intro",
            ),
            (
                "/intro",
                cfg("physical-ai-book", "/docs/", false),
                "https://example.github.io/physical-ai-book/docs/intro",
            ),
            (
                "/intro",
                cfg("/book/", "/", false),
                "https://example.github.io/book/intro",
            ),
            (
                "/",
                cfg("/book/", "", false),
                "https://example.github.io/book/",
            ),
            ("/", cfg("/", "/", false), "https://example.github.io/"),
        ];
        for (slug, cfg, expected) in table {
            assert_eq!(page_url(slug, &cfg), expected, "{slug} {cfg:?}");
        }
    }

    #[test]
    fn anchors_follow_github_slugger() {
        let mut slugger = Slugger::default();
        let table = [
            ("Hello World", "hello-world"),
            ("Hello World", "hello-world-1"),
            ("Hello World", "hello-world-2"),
            ("hello-world-1", "hello-world-1-1"),
            ("What's `<Tabs>`?", "whats-tabs"),
            ("Ünïcödé Straße", "ünïcödé-straße"),
            ("snake_case & kebab-case", "snake_case--kebab-case"),
            ("ROS 2: nodes, topics", "ros-2-nodes-topics"),
            ("Emoji 🚀 rocket", "emoji--rocket"),
            (
                "@docusaurus/plugin-content-docs",
                "docusaurusplugin-content-docs",
            ),
        ];
        for (text, expected) in table {
            assert_eq!(slugger.slug(text), expected, "{text}");
        }
    }
}
