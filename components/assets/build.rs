//! Makes, at build time, what the assets component serves: the widget's files under names that
//! carry a hash of their content (so they can be cached for a year), and the sample book as
//! demo pages whose addresses and heading anchors are those ingestion gives the sources (so a
//! source link from an answer opens the right page at the right heading).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

use pulldown_cmark::{CodeBlockKind, Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use rag_core::docs::{self, Page, SiteConfig, Slugger};
use sha2::{Digest, Sha256, Sha384};

/// Where the book's pages are served: the demo's site has `baseUrl: '/demo/'`.
const DEMO_BASE: &str = "/demo/";
/// The chapter `GET /demo` shows.
const DEMO_CHAPTER: &str = "03-perception-and-motion/03-locomotion-and-balance.md";

struct FileAsset {
    source: PathBuf,
    stem: &'static str,
    ext: &'static str,
    content_type: &'static str,
    /// Also served under its unhashed name (short-cached), for sites that link it directly.
    stable: bool,
}

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.join("../..");
    let web = root.join("web");
    let book = root.join("book/docs");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed={}", web.display());
    println!("cargo:rerun-if-changed={}", book.display());

    let files = [
        FileAsset {
            source: web.join("widget/chat-widget.js"),
            stem: "chat-widget",
            ext: "js",
            content_type: "text/javascript; charset=utf-8",
            stable: true,
        },
        FileAsset {
            source: web.join("widget/chat-widget.css"),
            stem: "chat-widget",
            ext: "css",
            content_type: "text/css; charset=utf-8",
            stable: true,
        },
        FileAsset {
            source: web.join("demo/demo.js"),
            stem: "demo",
            ext: "js",
            content_type: "text/javascript; charset=utf-8",
            stable: false,
        },
        FileAsset {
            source: web.join("demo/demo.css"),
            stem: "demo",
            ext: "css",
            content_type: "text/css; charset=utf-8",
            stable: false,
        },
    ];

    let mut code = String::new();
    let mut hashed_names = BTreeMap::new();
    code.push_str("const FILES: &[Asset] = &[\n");
    for file in &files {
        let bytes =
            fs::read(&file.source).unwrap_or_else(|e| panic!("{}: {e}", file.source.display()));
        let digest = hex(&Sha256::digest(&bytes));
        let name = format!("{}.{}.{}", file.stem, &digest[..12], file.ext);
        let stable = format!("{}.{}", file.stem, file.ext);
        let integrity = format!("sha384-{}", base64(&Sha384::digest(&bytes)));
        writeln!(
            code,
            "    Asset {{ name: {name:?}, stable: {stable_name}, content_type: {ct:?}, \
             etag: {etag:?}, integrity: {integrity:?}, body: include_bytes!({path:?}) }},",
            stable_name = if file.stable {
                format!("Some({stable:?})")
            } else {
                "None".to_owned()
            },
            ct = file.content_type,
            etag = format!("\"{}\"", &digest[..32]),
            path = file.source.canonicalize().unwrap(),
        )
        .unwrap();
        hashed_names.insert(stable, name);
    }
    code.push_str("];\n\n");

    let template = fs::read_to_string(web.join("demo/page.html")).expect("web/demo/page.html");
    let pages = load_book(&book);
    code.push_str("const PAGES: &[DemoPage] = &[\n");
    for (index, page) in pages.iter().enumerate() {
        let html = page_html(&template, &pages, index, &hashed_names);
        let file = out.join(format!("page-{index}.html"));
        fs::write(&file, &html).unwrap();
        let path = page.page.url.clone();
        writeln!(
            code,
            "    DemoPage {{ path: {path:?}, chapter: {chapter}, etag: {etag:?}, html: include_str!({file:?}) }},",
            chapter = page.page.rel_path == DEMO_CHAPTER,
            etag = format!("\"{}\"", &hex(&Sha256::digest(html.as_bytes()))[..32]),
        )
        .unwrap();
    }
    code.push_str("];\n");
    assert!(
        pages.iter().any(|p| p.page.rel_path == DEMO_CHAPTER),
        "{DEMO_CHAPTER} is not in the book"
    );
    fs::write(out.join("generated.rs"), code).unwrap();
}

struct BookPage {
    page: Page,
    /// The body rendered to HTML, headings carrying their anchors.
    html: String,
}

fn load_book(book: &Path) -> Vec<BookPage> {
    let cfg = SiteConfig {
        site_url: String::new(),
        base_url: DEMO_BASE.to_owned(),
        ..SiteConfig::default()
    };
    let mut rel_paths = Vec::new();
    collect(book, book, &mut rel_paths);
    // The docs plugin lists a folder's index before its numbered pages.
    rel_paths.sort_by_key(|p| {
        let (dir, file) = p.rsplit_once('/').unwrap_or(("", p));
        (dir.to_owned(), !file.starts_with("index."), file.to_owned())
    });
    let mut pages = Vec::new();
    for rel in rel_paths {
        let bytes = fs::read(book.join(&rel)).unwrap();
        let Some(page) = docs::parse_page(&rel, &bytes, &cfg).unwrap() else {
            continue;
        };
        let source = String::from_utf8(bytes).unwrap();
        let body = strip_front_matter(&source);
        let (html, anchors) = render_markdown(body);
        let expected: Vec<&str> = page
            .sections
            .iter()
            .filter(|s| s.level > 0)
            .map(|s| s.anchor.as_str())
            .collect();
        assert_eq!(
            anchors, expected,
            "{rel}: the demo page's anchors differ from those the sources cite"
        );
        pages.push(BookPage { page, html });
    }
    pages
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(root, &path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("md" | "mdx")
        ) {
            let rel = path.strip_prefix(root).unwrap().to_str().unwrap();
            out.push(rel.replace('\\', "/"));
        }
    }
}

fn strip_front_matter(source: &str) -> &str {
    let Some(rest) = source.strip_prefix("---\n") else {
        return source;
    };
    match rest.find("\n---\n") {
        Some(end) => &rest[end + 5..],
        None => source,
    }
}

/// MDX's ESM lines and lines that are only a JSX tag (`<Tabs>`, `</TabItem>`) are for the
/// site's renderer; outside code fences they are dropped and the Markdown between them kept.
fn strip_mdx(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut fence: Option<&str> = None;
    for line in body.lines() {
        let trimmed = line.trim_start();
        if let Some(marker) = fence {
            if trimmed.starts_with(marker) {
                fence = None;
            }
        } else if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fence = Some(&trimmed[..3]);
        } else if trimmed.starts_with("import ")
            || trimmed.starts_with("export ")
            || is_jsx_tag_line(trimmed)
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn is_jsx_tag_line(line: &str) -> bool {
    let line = line.trim_end();
    let inner = line.strip_prefix("</").or_else(|| line.strip_prefix('<'));
    matches!(inner, Some(rest) if rest.starts_with(|c: char| c.is_ascii_uppercase()))
        && line.ends_with('>')
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The body as HTML and the anchors of its headings below the title, in order. Docusaurus
/// admonitions (`:::tip Title` ... `:::`) become boxes; the Markdown inside is rendered as usual.
fn render_markdown(body: &str) -> (String, Vec<String>) {
    let source = strip_mdx(body);
    let mut slugger = Slugger::default();
    let mut anchors = Vec::new();
    let mut html = String::new();
    let mut segment = String::new();
    let mut admonition: Option<(String, String)> = None;
    let mut fence: Option<String> = None;
    for line in source.lines() {
        let trimmed = line.trim();
        if let Some(marker) = &fence {
            if trimmed.starts_with(marker.as_str()) {
                fence = None;
            }
        } else if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fence = Some(trimmed[..3].to_owned());
        } else if let Some(rest) = trimmed.strip_prefix(":::") {
            let rest = rest.trim();
            if rest.is_empty() {
                if let Some((kind, title)) = admonition.take() {
                    let inner = render_segment(&segment, &mut slugger, &mut anchors);
                    segment.clear();
                    writeln!(
                        html,
                        "<div class=\"admonition admonition-{kind}\"><p class=\"admonition-heading\">{title}</p>{inner}</div>",
                        kind = escape(&kind),
                        title = escape(&title)
                    )
                    .unwrap();
                    continue;
                }
            } else if admonition.is_none() {
                html.push_str(&render_segment(&segment, &mut slugger, &mut anchors));
                segment.clear();
                let (kind, title) = match rest.split_once([' ', '[']) {
                    Some((kind, title)) => (kind, title.trim_end_matches(']').trim().to_owned()),
                    None => (rest, String::new()),
                };
                let title = if title.is_empty() {
                    humanize(kind)
                } else {
                    title
                };
                admonition = Some((kind.to_owned(), title));
                continue;
            }
        }
        segment.push_str(line);
        segment.push('\n');
    }
    html.push_str(&render_segment(&segment, &mut slugger, &mut anchors));
    (html, anchors)
}

fn render_segment(source: &str, slugger: &mut Slugger, anchors: &mut Vec<String>) -> String {
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_HEADING_ATTRIBUTES | Options::ENABLE_STRIKETHROUGH;
    let mut html = String::new();
    // A heading is written when it ends, once its text (and so its anchor) is known.
    let mut heading: Option<(HeadingLevel, Option<String>, String, String)> = None;
    let mut in_table_head = false;
    for event in Parser::new_ext(source, options) {
        let out = match heading.as_mut() {
            Some((_, _, _, inner)) => inner,
            None => &mut html,
        };
        match event {
            Event::Start(Tag::Heading { level, id, .. }) => {
                heading = Some((
                    level,
                    id.map(|i| i.to_string()),
                    String::new(),
                    String::new(),
                ));
            }
            Event::End(TagEnd::Heading(_)) => {
                let (level, id, text, inner) = heading.take().unwrap();
                let anchor = id.unwrap_or_else(|| slugger.slug(&text));
                let n = level as usize;
                if level == HeadingLevel::H1 {
                    writeln!(html, "<header><h1>{inner}</h1></header>").unwrap();
                } else {
                    anchors.push(anchor.clone());
                    writeln!(
                        html,
                        "<h{n} class=\"anchor\" id=\"{a}\">{inner}<a href=\"#{a}\" class=\"hash-link\" \
                         aria-label=\"Direct link to {t}\" title=\"Direct link to {t}\">#</a></h{n}>",
                        a = escape(&anchor),
                        t = escape(&text),
                    )
                    .unwrap();
                }
            }
            Event::Text(text) => {
                if let Some((_, _, plain, _)) = heading.as_mut() {
                    plain.push_str(&text);
                }
                let out = match heading.as_mut() {
                    Some((_, _, _, inner)) => inner,
                    None => &mut html,
                };
                out.push_str(&escape(&text));
            }
            Event::Code(code) => {
                if let Some((_, _, plain, _)) = heading.as_mut() {
                    plain.push_str(&code);
                }
                let out = match heading.as_mut() {
                    Some((_, _, _, inner)) => inner,
                    None => &mut html,
                };
                write!(out, "<code>{}</code>", escape(&code)).unwrap();
            }
            Event::Html(raw) | Event::InlineHtml(raw) => out.push_str(&escape(&raw)),
            Event::SoftBreak => out.push('\n'),
            Event::HardBreak => out.push_str("<br>\n"),
            Event::Rule => out.push_str("<hr>\n"),
            Event::Start(tag) => {
                let open = match tag {
                    Tag::Paragraph => "<p>".to_owned(),
                    Tag::BlockQuote(_) => "<blockquote>".to_owned(),
                    Tag::CodeBlock(kind) => match kind {
                        CodeBlockKind::Fenced(lang) if !lang.is_empty() => {
                            let lang = lang.split_whitespace().next().unwrap_or("");
                            format!(
                                "<div class=\"code-block\"><pre><code class=\"language-{}\">",
                                escape(lang)
                            )
                        }
                        _ => "<div class=\"code-block\"><pre><code>".to_owned(),
                    },
                    Tag::List(Some(1)) => "<ol>".to_owned(),
                    Tag::List(Some(start)) => format!("<ol start=\"{start}\">"),
                    Tag::List(None) => "<ul>".to_owned(),
                    Tag::Item => "<li>".to_owned(),
                    Tag::Table(_) => "<div class=\"table-wrap\"><table>".to_owned(),
                    Tag::TableHead => {
                        in_table_head = true;
                        "<thead><tr>".to_owned()
                    }
                    Tag::TableRow => "<tr>".to_owned(),
                    Tag::TableCell if in_table_head => "<th>".to_owned(),
                    Tag::TableCell => "<td>".to_owned(),
                    Tag::Emphasis => "<em>".to_owned(),
                    Tag::Strong => "<strong>".to_owned(),
                    Tag::Strikethrough => "<del>".to_owned(),
                    Tag::Link { dest_url, .. } => {
                        let external = dest_url.starts_with("http");
                        format!(
                            "<a href=\"{}\"{}>",
                            escape(&dest_url),
                            if external {
                                " rel=\"noopener noreferrer\""
                            } else {
                                ""
                            }
                        )
                    }
                    _ => String::new(),
                };
                out.push_str(&open);
            }
            Event::End(tag) => {
                let close = match tag {
                    TagEnd::Paragraph => "</p>\n",
                    TagEnd::BlockQuote(_) => "</blockquote>\n",
                    TagEnd::CodeBlock => "</code></pre></div>\n",
                    TagEnd::List(true) => "</ol>\n",
                    TagEnd::List(false) => "</ul>\n",
                    TagEnd::Item => "</li>\n",
                    TagEnd::Table => "</tbody></table></div>\n",
                    TagEnd::TableHead => {
                        in_table_head = false;
                        "</tr></thead><tbody>\n"
                    }
                    TagEnd::TableRow => "</tr>\n",
                    TagEnd::TableCell if in_table_head => "</th>",
                    TagEnd::TableCell => "</td>",
                    TagEnd::Emphasis => "</em>",
                    TagEnd::Strong => "</strong>",
                    TagEnd::Strikethrough => "</del>",
                    TagEnd::Link => "</a>",
                    _ => "",
                };
                out.push_str(close);
            }
            _ => {}
        }
    }
    html
}

fn humanize(dir: &str) -> String {
    let name = docs::strip_number_prefix(dir)
        .split(['-', '_'])
        .map(|word| {
            // `ros2` reads as the name it is.
            if word.chars().any(|c| c.is_ascii_digit()) {
                word.to_uppercase()
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => name,
    }
}

/// One page in the Docusaurus-like layout. `{{base}}` is left for the component to fill in per
/// request (the runner's `BASE_PATH`).
fn page_html(
    template: &str,
    pages: &[BookPage],
    index: usize,
    assets: &BTreeMap<String, String>,
) -> String {
    let current = &pages[index];
    let mut sidebar = String::from("<ul class=\"menu__list\">\n");
    let mut open_dir: Option<String> = None;
    for page in pages {
        let dir = page
            .page
            .rel_path
            .rsplit_once('/')
            .map(|(d, _)| d.to_owned());
        if dir != open_dir {
            if open_dir.is_some() {
                sidebar.push_str("</ul></li>\n");
            }
            if let Some(dir) = &dir {
                let index_page = pages
                    .iter()
                    .find(|p| p.page.rel_path == format!("{dir}/index.md"));
                let label = match index_page {
                    // The category's own page: its label links there, as in Docusaurus.
                    Some(p) => {
                        let active = std::ptr::eq(p, current);
                        format!(
                            "<a class=\"menu__category-label menu__link{}\" href=\"{{{{base}}}}{}\"{}>{}</a>",
                            if active { " menu__link--active" } else { "" },
                            escape(&p.page.url),
                            if active { " aria-current=\"page\"" } else { "" },
                            escape(&p.page.title)
                        )
                    }
                    None => format!(
                        "<span class=\"menu__category-label\">{}</span>",
                        escape(&humanize(dir))
                    ),
                };
                writeln!(
                    sidebar,
                    "<li class=\"menu__category\">{label}<ul class=\"menu__list\">"
                )
                .unwrap();
            }
            open_dir = dir;
        }
        if page.page.rel_path.ends_with("/index.md") {
            continue;
        }
        let label = page.page.sidebar_label.as_ref().unwrap_or(&page.page.title);
        let active = std::ptr::eq(page, current);
        writeln!(
            sidebar,
            "<li><a class=\"menu__link{}\" href=\"{{{{base}}}}{}\"{}>{}</a></li>",
            if active { " menu__link--active" } else { "" },
            escape(&page.page.url),
            if active { " aria-current=\"page\"" } else { "" },
            escape(label)
        )
        .unwrap();
    }
    if open_dir.is_some() {
        sidebar.push_str("</ul></li>\n");
    }
    sidebar.push_str("</ul>");

    let mut toc = String::new();
    for section in current.page.sections.iter().filter(|s| s.level == 2) {
        writeln!(
            toc,
            "<li><a href=\"#{}\" class=\"table-of-contents__link\">{}</a></li>",
            escape(&section.anchor),
            escape(&section.heading)
        )
        .unwrap();
    }

    let neighbour = |i: Option<usize>, class: &str, label: &str| {
        match i.and_then(|i| pages.get(i))
    {
        Some(p) => format!(
            "<a class=\"pagination-nav__link pagination-nav__link--{class}\" href=\"{{{{base}}}}{}\">\
             <div class=\"pagination-nav__sublabel\">{label}</div>\
             <div class=\"pagination-nav__label\">{}</div></a>",
            escape(&p.page.url),
            escape(&p.page.title)
        ),
        None => String::new(),
    }
    };
    let pagination = format!(
        "{}{}",
        neighbour(index.checked_sub(1), "prev", "Previous"),
        neighbour(Some(index + 1), "next", "Next")
    );

    let mut html = template.to_owned();
    for (key, value) in [
        ("{{title}}", escape(&current.page.title)),
        (
            "{{description}}",
            escape(current.page.description.as_deref().unwrap_or("")),
        ),
        ("{{canonical}}", escape(&current.page.url)),
        ("{{sidebar}}", sidebar),
        ("{{toc}}", toc),
        ("{{content}}", current.html.clone()),
        ("{{pagination}}", pagination),
        ("{{widget_js}}", assets["chat-widget.js"].clone()),
        ("{{widget_css}}", assets["chat-widget.css"].clone()),
        ("{{demo_js}}", assets["demo.js"].clone()),
        ("{{demo_css}}", assets["demo.css"].clone()),
    ] {
        html = html.replace(key, &value);
    }
    html
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
