//! Parses and chunks every file of the Docusaurus documentation corpus (the docs of the
//! Docusaurus site itself, kept outside the repository in ../shared) and checks the invariants
//! ingestion relies on.
#![cfg(all(feature = "docs", feature = "sqlite"))]

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use rag_core::docs::{
    chunk_page, parse_page, Page, SiteConfig, DEFAULT_MAX_CHARS, DEFAULT_OVERLAP_CHARS,
};

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/corpora/docusaurus-docs/docs"
);

fn doc_files(dir: &Path, root: &Path, out: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("corpus folder is readable")
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            doc_files(&path, root, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("md" | "mdx")
        ) {
            let rel = path
                .strip_prefix(root)
                .expect("inside the corpus")
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, path));
        }
    }
}

/// `<Name` or `</Name`, where `<` does not follow an identifier: `Promise<Plugin>` is a
/// TypeScript type argument, not a tag.
fn jsx_tag(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    (0..bytes.len()).find_map(|i| {
        let after_identifier =
            i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || matches!(bytes[i - 1], b'_' | b'.'));
        let opens = bytes.get(i + 1).is_some_and(u8::is_ascii_uppercase) && !after_identifier;
        let is_tag = bytes[i] == b'<'
            && (opens
                || (bytes.get(i + 1) == Some(&b'/')
                    && bytes.get(i + 2).is_some_and(u8::is_ascii_uppercase)));
        is_tag.then(|| {
            let end = text[i..]
                .char_indices()
                .nth(40)
                .map_or(text.len(), |(j, _)| i + j);
            &text[i..end]
        })
    })
}

#[test]
fn every_corpus_page_parses_and_chunks_cleanly() {
    let root = Path::new(CORPUS);
    if !root.is_dir() {
        assert!(
            std::env::var_os("TEST_REQUIRE_SHARED").is_none(),
            "TEST_REQUIRE_SHARED is set but the corpus is not at {CORPUS}"
        );
        println!("skipping: ../shared corpus not found at {CORPUS}");
        return;
    }
    let cfg = SiteConfig {
        site_url: "https://docusaurus.io".to_owned(),
        ..SiteConfig::default()
    };
    let mut files = Vec::new();
    doc_files(root, root, &mut files);
    assert_eq!(files.len(), 92, "the corpus holds 92 files");

    let mut pages: BTreeMap<String, Page> = BTreeMap::new();
    let mut skipped = Vec::new();
    for (rel, path) in &files {
        let bytes = std::fs::read(path).expect("corpus file is readable");
        match parse_page(rel, &bytes, &cfg) {
            Ok(Some(page)) => {
                pages.insert(rel.clone(), page);
            }
            Ok(None) => skipped.push(rel.clone()),
            Err(error) => panic!("{error}"),
        }
    }
    skipped.sort();
    assert_eq!(
        skipped,
        [
            "api/plugins/_partial-tags-file-api-ref-section.mdx",
            "guides/markdown-features/_markdown-partial-example.mdx",
        ]
    );
    assert_eq!(pages.len(), 90);

    let page_urls: HashSet<&str> = pages.values().map(|p| p.url.as_str()).collect();
    assert_eq!(page_urls.len(), 90, "every page has its own URL");

    for (rel, expected) in [
        (
            "guides/docs/docs-create-doc.mdx",
            "https://docusaurus.io/docs/create-doc",
        ),
        (
            "api/plugins/plugin-content-docs.mdx",
            "https://docusaurus.io/docs/api/plugins/@docusaurus/plugin-content-docs",
        ),
        ("introduction.mdx", "https://docusaurus.io/docs"),
        ("cli.mdx", "https://docusaurus.io/docs/cli"),
        (
            "guides/markdown-features/markdown-features-tabs.mdx",
            "https://docusaurus.io/docs/markdown-features/tabs",
        ),
    ] {
        assert_eq!(pages[rel].url, expected, "{rel}");
    }
    assert_eq!(
        pages["guides/docs/docs-create-doc.mdx"].title,
        "Create a doc"
    );
    assert_eq!(
        pages["guides/markdown-features/markdown-features-tabs.mdx"].title,
        "Tabs"
    );
    assert!(pages.values().all(|p| !p.title.trim().is_empty()));
    // Explicit `{#id}` anchors win over generated ones.
    let cli = &pages["cli.mdx"];
    assert!(
        cli.sections
            .iter()
            .any(|s| s.anchor == "docusaurus-start-sitedir"),
        "{:?}",
        cli.sections.iter().map(|s| &s.anchor).collect::<Vec<_>>()
    );

    let mut ids = HashSet::new();
    let mut chunk_count = 0;
    let mut noise = Vec::new();
    for (rel, page) in &pages {
        let chunks = chunk_page(page, DEFAULT_MAX_CHARS, DEFAULT_OVERLAP_CHARS);
        assert!(!chunks.is_empty(), "{rel} has no chunks");
        for chunk in chunks {
            chunk_count += 1;
            assert!(
                ids.insert(chunk.id.clone()),
                "{rel}: duplicate chunk id {}",
                chunk.id
            );
            assert!(
                chunk.url.starts_with(&page.url),
                "{rel}: {} outside {}",
                chunk.url,
                page.url
            );
            assert_eq!(chunk.page_url, page.url);
            let size = chunk.text.chars().count();
            assert!(
                size <= DEFAULT_MAX_CHARS,
                "{rel}: chunk of {size} chars at {}",
                chunk.url
            );
            assert!(
                !chunk.text.trim().is_empty(),
                "{rel}: empty chunk at {}",
                chunk.url
            );
            let mut in_code = false;
            for line in chunk.text.lines() {
                let line = line.trim_start();
                if line.starts_with("import ") || line.starts_with("export ") {
                    noise.push(format!("ESM line {line:?} in {}", chunk.url));
                }
                if line.starts_with("```") {
                    in_code = !in_code;
                }
                // Code examples and `code spans` may show comment and admonition syntax; prose
                // may not.
                let prose: String = line.split('`').step_by(2).collect();
                if !in_code
                    && (prose.starts_with(":::") || prose.contains("{/*") || prose.contains("<!--"))
                {
                    noise.push(format!("markup {line:?} in {}", chunk.url));
                }
            }
            if let Some(tag) = jsx_tag(&chunk.text) {
                noise.push(format!("JSX tag {tag:?} in {}", chunk.url));
            }
        }
    }
    assert!(
        noise.is_empty(),
        "{} noisy chunks:\n{}",
        noise.len(),
        noise.join("\n")
    );
    assert!(chunk_count > 90 * 3, "only {chunk_count} chunks");
    println!("{} pages, {chunk_count} chunks", pages.len());
}

const BOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../book/docs");

/// The sample book goes through the same parsing, chunking and embedded index as ingestion
/// would, and the questions a reader might ask find the page that answers them.
#[test]
fn sample_book_is_indexed_and_answers_reader_questions() {
    use rag_core::search_index;
    use rusqlite::{params, Connection};

    let root = Path::new(BOOK);
    let cfg = SiteConfig {
        site_url: "https://example.github.io".to_owned(),
        base_url: "/physical-ai-book/".to_owned(),
        ..SiteConfig::default()
    };
    let mut files = Vec::new();
    doc_files(root, root, &mut files);
    let pages: Vec<Page> = files
        .iter()
        .map(|(rel, path)| {
            let bytes = std::fs::read(path).expect("book page is readable");
            parse_page(rel, &bytes, &cfg)
                .unwrap_or_else(|e| panic!("{e}"))
                .expect("no book page is a draft or partial")
        })
        .collect();
    assert!((8..=12).contains(&pages.len()), "{} pages", pages.len());
    let urls: HashSet<&str> = pages.iter().map(|p| p.url.as_str()).collect();
    for expected in [
        "https://example.github.io/physical-ai-book/docs",
        "https://example.github.io/physical-ai-book/docs/foundations",
        "https://example.github.io/physical-ai-book/docs/foundations/what-is-physical-ai",
        "https://example.github.io/physical-ai-book/docs/ros2/basics",
        "https://example.github.io/physical-ai-book/docs/ros2/urdf",
        "https://example.github.io/physical-ai-book/docs/locomotion/balance",
    ] {
        assert!(urls.contains(expected), "{expected} not in {urls:?}");
    }

    let connection = Connection::open_in_memory().unwrap();
    for statement in search_index::SCHEMA {
        connection.execute(statement, []).unwrap();
    }
    for page in &pages {
        for chunk in chunk_page(page, DEFAULT_MAX_CHARS, DEFAULT_OVERLAP_CHARS) {
            assert!(jsx_tag(&chunk.text).is_none(), "JSX in {}", chunk.url);
            assert!(
                chunk
                    .text
                    .lines()
                    .all(|l| !l.trim_start().starts_with("import ")),
                "ESM in {}",
                chunk.url
            );
            connection
                .execute(
                    search_index::UPSERT_CHUNK,
                    params![
                        chunk.id,
                        chunk.page_url,
                        chunk.url,
                        chunk.title,
                        chunk.heading,
                        chunk.text,
                        chunk.hash
                    ],
                )
                .unwrap();
        }
    }

    let top_url = |question: &str| -> String {
        search_index::search(&connection, question, 1).unwrap()[0]
            .url
            .clone()
    };
    let base = "https://example.github.io/physical-ai-book/docs";
    for (question, expected) in [
        (
            "What does ZMP stand for?",
            "/locomotion/balance#the-zero-moment-point",
        ),
        (
            "Which ROS 2 command lists topics?",
            "/ros2/basics#inspecting-a-running-system",
        ),
        ("What are the joint types in URDF?", "/ros2/urdf#joints"),
        (
            "How does an IMU estimate orientation and drift?",
            "/perception-and-motion/sensors#inertial-measurement-unit-imu",
        ),
        (
            "What is domain randomisation?",
            "/simulation-and-learning/simulation#crossing-the-gap",
        ),
        (
            "How many robot episodes was OpenVLA trained on?",
            "/simulation-and-learning/vision-language-action#from-vlm-to-vla",
        ),
    ] {
        assert_eq!(top_url(question), format!("{base}{expected}"), "{question}");
    }
}
