//! `host ingest`: docs folders into the embedded SQLite index and into Qdrant (through the
//! Cohere and Qdrant doubles, whose call counters show what was embedded and written).

use std::path::{Path, PathBuf};
use std::time::Duration;

use host::ingest::{ensure_keyless_index, ingest, load_docs, KeylessIndex, Options, Target};
use host::manifest::App;
use host::variables::AppVariables;
use rag_core::config::Settings;
use rag_core::docs::SiteConfig;
use rag_core::retrieval::Passage;
use rag_core::retry::RetryPolicy;
use rag_core::search_index;
use rusqlite::params;
use upstream_doubles::{Doubles, Endpoint, Fault, EMBED_BATCH_LIMIT, EMBED_DIMS};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn book() -> PathBuf {
    workspace().join("book/docs")
}

const KINEMATICS: &str = "03-perception-and-motion/02-kinematics.md";
const LOCOMOTION: &str = "03-perception-and-motion/03-locomotion-and-balance.md";

fn copy_dir(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap();
        let target = to.join(entry.path().strip_prefix(from).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A temporary copy of the sample book, so tests may change and delete pages.
fn book_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&book(), dir.path());
    dir
}

fn site() -> SiteConfig {
    SiteConfig {
        site_url: "https://example.github.io".to_owned(),
        base_url: "/physical-ai-book/".to_owned(),
        ..SiteConfig::default()
    }
}

fn options(docs: &Path, data: &Path, target: Target) -> Options {
    Options {
        site: site(),
        target,
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            total_budget: Duration::from_secs(20),
        },
        ..Options::new(docs, data)
    }
}

fn keyless() -> Settings {
    Settings::from_lookup(|_| None).unwrap()
}

fn vector_settings(doubles: &Doubles) -> Settings {
    let base = doubles.base_url();
    Settings::from_lookup(|name| match name {
        "cohere_api_key" => Some("test-key".to_owned()),
        "cohere_base_url" | "qdrant_url" => Some(base.clone()),
        "qdrant_collection" => Some("book".to_owned()),
        _ => None,
    })
    .unwrap()
}

fn db(data: &Path) -> rusqlite::Connection {
    host::sqlite::open_file(&data.join("default.db")).unwrap()
}

/// The full-text index's segment count.
fn segments(data: &Path) -> i64 {
    db(data)
        .query_row(search_index::COUNT_SEGMENTS, [], |row| row.get(0))
        .unwrap()
}

fn page_urls_of(data: &Path) -> Vec<(String, String, String)> {
    let connection = db(data);
    let mut statement = connection
        .prepare("SELECT page_url, url, text FROM chunks ORDER BY seq")
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn search_top(data: &Path, question: &str) -> Passage {
    search_index::search(&db(data), question, 1)
        .unwrap()
        .remove(0)
}

/// The new-word rate the writer stored in `index_meta`.
fn new_word_rate(data: &Path) -> f64 {
    db(data)
        .query_row(
            "SELECT value FROM index_meta WHERE key = ?1",
            params![search_index::NEW_WORD_RATE_KEY],
            |row| row.get::<_, String>(0),
        )
        .unwrap()
        .parse()
        .unwrap()
}

fn page_url(rel: &str) -> String {
    let page = rag_core::docs::parse_page(rel, &std::fs::read(book().join(rel)).unwrap(), &site())
        .unwrap()
        .unwrap();
    page.url
}

fn append(path: &Path, text: &str) {
    let mut source = std::fs::read_to_string(path).unwrap();
    source.push_str(text);
    std::fs::write(path, source).unwrap();
}

/// Chunk ids that are new or whose hash changed between two loads of a folder.
fn changed_chunks(before: &host::ingest::Corpus, after: &host::ingest::Corpus) -> Vec<String> {
    let old: std::collections::HashMap<&str, &str> = before
        .chunks
        .iter()
        .map(|c| (c.id.as_str(), c.hash.as_str()))
        .collect();
    after
        .chunks
        .iter()
        .filter(|c| old.get(c.id.as_str()) != Some(&c.hash.as_str()))
        .map(|c| c.page_url.clone())
        .collect()
}

#[tokio::test]
async fn sqlite_index_of_the_book_is_incremental_and_prunes() {
    let docs = book_copy();
    let data = tempfile::tempdir().unwrap();
    let opts = options(docs.path(), data.path(), Target::Sqlite);

    let first = ingest(&opts, &keyless()).await.unwrap();
    let s = &first.summary;
    assert_eq!(s.target, "sqlite");
    assert!(first.skipped.is_empty(), "{:?}", first.skipped);
    assert!((8..=12).contains(&s.pages), "{s}");
    assert!(s.chunks > s.pages, "{s}");
    assert_eq!(
        (s.written, s.unchanged, s.embedded),
        (s.chunks, 0, 0),
        "{s}"
    );
    assert_eq!(page_urls_of(data.path()).len(), s.chunks);
    assert_eq!(segments(data.path()), 1, "a query seeks every segment");
    let zmp = search_top(data.path(), "What does ZMP stand for?");
    assert_eq!(zmp.page_url, page_url(LOCOMOTION));
    assert!(zmp.text.contains("ZMP"), "{}", zmp.text);
    // A ten-page book still meets new words often: about one occurrence in ten.
    let rate = new_word_rate(data.path());
    assert!((0.05..0.2).contains(&rate), "{rate}");

    let second = ingest(&opts, &keyless()).await.unwrap().summary;
    assert_eq!(
        (second.written, second.unchanged, second.deleted),
        (0, s.chunks, 0),
        "{second}"
    );

    // One changed page: only its new or changed chunks are written.
    let before = load_docs(docs.path(), &site()).unwrap();
    append(
        &docs.path().join(KINEMATICS),
        "\n## Singularities\n\nAt a singular configuration the Jacobian loses rank and the arm cannot move in some direction.\n",
    );
    let after = load_docs(docs.path(), &site()).unwrap();
    let changed = changed_chunks(&before, &after);
    assert!(!changed.is_empty());
    assert!(
        changed.iter().all(|url| *url == page_url(KINEMATICS)),
        "{changed:?}"
    );
    let third = ingest(&opts, &keyless()).await.unwrap().summary;
    assert_eq!(third.written, changed.len(), "{third}");
    assert_eq!(segments(data.path()), 1, "the new chunks are merged in");
    assert_eq!(third.unchanged, third.chunks - changed.len(), "{third}");
    let singular = search_top(data.path(), "singular configuration Jacobian rank");
    assert_eq!(singular.page_url, page_url(KINEMATICS));

    // A deleted page: kept (and counted stale) without --prune, deleted with it.
    let locomotion_url = page_url(LOCOMOTION);
    let locomotion_chunks = page_urls_of(data.path())
        .iter()
        .filter(|(page, _, _)| *page == locomotion_url)
        .count();
    assert!(locomotion_chunks > 0);
    std::fs::remove_file(docs.path().join(LOCOMOTION)).unwrap();
    let kept = ingest(&opts, &keyless()).await.unwrap().summary;
    assert_eq!(
        (kept.written, kept.deleted, kept.stale),
        (0, 0, locomotion_chunks),
        "{kept}"
    );
    let pruned = ingest(
        &Options {
            prune: true,
            ..opts.clone()
        },
        &keyless(),
    )
    .await
    .unwrap()
    .summary;
    assert_eq!(
        (pruned.written, pruned.deleted, pruned.stale),
        (0, locomotion_chunks, 0),
        "{pruned}"
    );
    assert!(page_urls_of(data.path())
        .iter()
        .all(|(page, _, _)| *page != locomotion_url));
    assert_ne!(
        new_word_rate(data.path()),
        rate,
        "the rate follows the chunks"
    );
    let expression = search_index::fts_match_expression("ZMP").unwrap();
    let hits: i64 = db(data.path())
        .query_row(
            "SELECT COUNT(*) FROM chunks_fts WHERE chunks_fts MATCH ?1",
            params![expression],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(hits, 0, "the FTS table still finds the deleted page");
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let docs = book_copy();
    let data = tempfile::tempdir().unwrap();
    let opts = options(docs.path(), data.path(), Target::Sqlite);
    let dry = Options {
        dry_run: true,
        ..opts.clone()
    };

    let would = ingest(&dry, &keyless()).await.unwrap().summary;
    assert!(would.dry_run);
    assert_eq!(would.written, would.chunks, "{would}");
    assert!(
        !data.path().join("default.db").exists(),
        "a dry run created the index"
    );

    let real = ingest(&opts, &keyless()).await.unwrap().summary;
    append(
        &docs.path().join(KINEMATICS),
        "\nA new closing remark about kinematics.\n",
    );
    std::fs::remove_file(docs.path().join(LOCOMOTION)).unwrap();
    let would = ingest(&Options { prune: true, ..dry }, &keyless())
        .await
        .unwrap()
        .summary;
    assert!(would.written > 0 && would.deleted > 0, "{would}");
    assert_eq!(
        page_urls_of(data.path()).len(),
        real.chunks,
        "a dry run changed the index"
    );
    let after = ingest(&opts, &keyless()).await.unwrap().summary;
    assert_eq!(
        after.written, would.written,
        "the dry run predicted the writes"
    );
}

/// The book plus one long generated page, so the embeddings need more than one batch.
fn book_with_long_page() -> tempfile::TempDir {
    let docs = book_copy();
    let mut long = String::from("---\ntitle: Glossary\n---\n\n");
    for i in 0..120 {
        long.push_str(&format!(
            "## Term {i}\n\nTerm {i} names an idea in humanoid robotics number {i}.\n\n"
        ));
    }
    std::fs::create_dir_all(docs.path().join("99-appendix")).unwrap();
    std::fs::write(docs.path().join("99-appendix/glossary.md"), long).unwrap();
    docs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_made_before_hybrid_retrieval_keeps_its_single_vector() {
    let doubles = Doubles::start().await;
    let legacy = serde_json::json!({"vectors": {"size": EMBED_DIMS, "distance": "Cosine"}});
    let created = reqwest::Client::new()
        .put(format!("{}/collections/book", doubles.base_url()))
        .json(&legacy)
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    let docs = book_with_long_page();
    let data = tempfile::tempdir().unwrap();
    let summary = ingest(
        &options(docs.path(), data.path(), Target::Qdrant),
        &vector_settings(&doubles),
    )
    .await
    .unwrap()
    .summary;
    assert_eq!(summary.written, summary.chunks, "{summary}");
    assert_eq!(doubles.point_count("book"), summary.chunks);
    assert_eq!(
        doubles.calls(Endpoint::QdrantCreateCollection),
        1,
        "not recreated"
    );
    assert_eq!(doubles.calls(Endpoint::QdrantCollectionInfo), 1);
    let upserted = doubles.last_request(Endpoint::QdrantUpsert).unwrap();
    assert!(
        upserted["points"][0]["vector"].is_array(),
        "one unnamed vector, as the collection expects"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_target_embeds_only_what_changed() {
    let doubles = Doubles::start().await;
    let settings = vector_settings(&doubles);
    let docs = book_with_long_page();
    let data = tempfile::tempdir().unwrap();
    let opts = options(docs.path(), data.path(), Target::Auto);
    let calls = |endpoint| doubles.calls(endpoint);

    // A rate limit on the first embed call is waited out.
    doubles.push_fault(Endpoint::CohereEmbed, Fault::rate_limited(0));
    let first = ingest(&opts, &settings).await.unwrap();
    let s = first.summary.clone();
    assert_eq!(
        s.target, "qdrant",
        "auto picks Qdrant when it is configured"
    );
    assert!(s.chunks > EMBED_BATCH_LIMIT, "{s}");
    let batches = s.chunks.div_ceil(EMBED_BATCH_LIMIT);
    assert_eq!((s.embedded, s.written), (s.chunks, s.chunks), "{s}");
    assert_eq!(
        calls(Endpoint::CohereEmbed),
        batches + 1,
        "one retry after the 429"
    );
    assert_eq!(calls(Endpoint::QdrantUpsert), batches);
    assert_eq!(doubles.point_count("book"), s.chunks);
    assert_eq!(calls(Endpoint::QdrantCreateCollection), 1);
    let created = doubles
        .last_request(Endpoint::QdrantCreateCollection)
        .unwrap();
    assert_eq!(created["vectors"]["dense"]["size"], EMBED_DIMS);
    assert_eq!(created["vectors"]["dense"]["distance"], "Cosine");
    assert_eq!(created["sparse_vectors"]["sparse"]["modifier"], "idf");
    // Each point carries its keywords beside the embedding, from the text that was embedded.
    let upserted = doubles.last_request(Endpoint::QdrantUpsert).unwrap();
    let point = &upserted["points"][0];
    assert_eq!(
        point["vector"]["dense"].as_array().unwrap().len(),
        EMBED_DIMS
    );
    let payload = &point["payload"];
    let embedded_text = if payload["heading"] == "" {
        format!(
            "{}\n\n{}",
            payload["title"].as_str().unwrap(),
            payload["text"].as_str().unwrap()
        )
    } else {
        format!(
            "{} — {}\n\n{}",
            payload["title"].as_str().unwrap(),
            payload["heading"].as_str().unwrap(),
            payload["text"].as_str().unwrap()
        )
    };
    let keywords = rag_core::keywords::sparse_vector(&embedded_text);
    assert!(!keywords.is_empty());
    assert_eq!(
        point["vector"]["sparse"],
        serde_json::json!({"indices": keywords.indices, "values": keywords.values})
    );
    let mut indexed = doubles.indexed_fields("book");
    indexed.sort();
    assert_eq!(indexed, ["page_url", "url"]);
    let embed = doubles.last_request(Endpoint::CohereEmbed).unwrap();
    assert_eq!(embed["input_type"], "search_document");

    // Unchanged docs: no embedding, no write.
    let (embeds, upserts) = (calls(Endpoint::CohereEmbed), calls(Endpoint::QdrantUpsert));
    let second = ingest(&opts, &settings).await.unwrap().summary;
    assert_eq!(
        (second.embedded, second.unchanged),
        (0, s.chunks),
        "{second}"
    );
    assert_eq!(calls(Endpoint::CohereEmbed), embeds);
    assert_eq!(calls(Endpoint::QdrantUpsert), upserts);
    assert_eq!(calls(Endpoint::QdrantCreateCollection), 1);

    // One changed page: a dry run embeds nothing; the real run embeds only that page's chunks.
    let before = load_docs(docs.path(), &site()).unwrap();
    append(
        &docs.path().join(KINEMATICS),
        "\nWorkspace limits bound where the hand can reach.\n",
    );
    let changed = changed_chunks(&before, &load_docs(docs.path(), &site()).unwrap());
    assert!(!changed.is_empty() && changed.iter().all(|u| *u == page_url(KINEMATICS)));
    let dry = ingest(
        &Options {
            dry_run: true,
            ..opts.clone()
        },
        &settings,
    )
    .await
    .unwrap()
    .summary;
    assert_eq!(dry.embedded, changed.len(), "{dry}");
    assert_eq!(calls(Endpoint::CohereEmbed), embeds);
    assert_eq!(calls(Endpoint::QdrantUpsert), upserts);
    let third = ingest(&opts, &settings).await.unwrap().summary;
    assert_eq!(third.embedded, changed.len(), "{third}");
    assert_eq!(
        calls(Endpoint::CohereEmbed),
        embeds + 2,
        "the vector size check, then the changed chunks"
    );
    assert_eq!(calls(Endpoint::QdrantUpsert), upserts + 1);
    let sent = doubles.last_request(Endpoint::CohereEmbed).unwrap();
    assert_eq!(sent["texts"].as_array().unwrap().len(), changed.len());

    // A vanished page is deleted with --prune.
    let locomotion = before
        .chunks
        .iter()
        .filter(|c| c.page_url == page_url(LOCOMOTION))
        .count();
    std::fs::remove_file(docs.path().join(LOCOMOTION)).unwrap();
    let points = doubles.point_count("book");
    let pruned = ingest(
        &Options {
            prune: true,
            ..opts.clone()
        },
        &settings,
    )
    .await
    .unwrap()
    .summary;
    assert_eq!(
        (pruned.embedded, pruned.deleted),
        (0, locomotion),
        "{pruned}"
    );
    assert_eq!(doubles.point_count("book"), points - locomotion);
    assert_eq!(calls(Endpoint::CohereEmbed), embeds + 2);
}

/// A collection made for another embedding size is refused before any chunk is embedded, with
/// what to run; nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_of_another_vector_size_is_refused_before_embedding() {
    let doubles = Doubles::start().await;
    let other_size = serde_json::json!({
        "vectors": {"dense": {"size": 1536, "distance": "Cosine"}},
        "sparse_vectors": {"sparse": {"modifier": "idf"}},
    });
    let created = reqwest::Client::new()
        .put(format!("{}/collections/book", doubles.base_url()))
        .json(&other_size)
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    let docs = book_copy();
    let data = tempfile::tempdir().unwrap();
    let error = ingest(
        &options(docs.path(), data.path(), Target::Qdrant),
        &vector_settings(&doubles),
    )
    .await
    .unwrap_err();
    let error = format!("{error:#}");
    for expected in [
        "1536-dimension",
        &format!("{EMBED_DIMS}-dimension"),
        "curl -X DELETE",
        "QDRANT_COLLECTION",
        "host ingest",
    ] {
        assert!(error.contains(expected), "{expected:?} missing: {error}");
    }
    assert_eq!(doubles.calls(Endpoint::CohereEmbed), 1, "one short probe");
    let probe = doubles.last_request(Endpoint::CohereEmbed).unwrap();
    assert_eq!(probe["texts"].as_array().unwrap().len(), 1);
    assert_eq!(doubles.calls(Endpoint::QdrantUpsert), 0);
    assert_eq!(doubles.point_count("book"), 0);
}

/// What Qdrant says about a failure reaches the command-line error, bounded and without the
/// key; a refused key names the setting to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_errors_carry_qdrants_reason_without_the_key() {
    let doubles = Doubles::start().await;
    doubles.require_qdrant_api_key("the-right-qdrant-key");
    let docs = book_copy();
    let data = tempfile::tempdir().unwrap();
    let opts = options(docs.path(), data.path(), Target::Qdrant);
    let base = doubles.base_url();
    let settings = |key: &'static str| {
        let base = base.clone();
        Settings::from_lookup(move |name| match name {
            "cohere_api_key" => Some("test-key".to_owned()),
            "cohere_base_url" | "qdrant_url" => Some(base.clone()),
            "qdrant_api_key" => Some(key.to_owned()),
            _ => None,
        })
        .unwrap()
    };
    let error = format!(
        "{:#}",
        ingest(&opts, &settings("a-wrong-qdrant-key"))
            .await
            .unwrap_err()
    );
    assert!(error.contains("Invalid API key or JWT"), "{error}");
    assert!(error.contains("check QDRANT_API_KEY"), "{error}");
    assert!(!error.contains("a-wrong-qdrant-key"), "{error}");
    assert_eq!(doubles.calls(Endpoint::CohereEmbed), 0);

    // Qdrant refuses the upsert: its reason, not just the status, is in the error.
    doubles.push_fault(
        Endpoint::QdrantUpsert,
        Fault::Status {
            status: 400,
            retry_after: None,
        },
    );
    let error = format!(
        "{:#}",
        ingest(&opts, &settings("the-right-qdrant-key"))
            .await
            .unwrap_err()
    );
    assert!(
        error.contains("HTTP 400: fault injected by the test"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_target_gives_up_on_a_refused_key_and_needs_configuration() {
    let doubles = Doubles::start().await;
    let docs = book_copy();
    let data = tempfile::tempdir().unwrap();
    let opts = options(docs.path(), data.path(), Target::Qdrant);
    let error = ingest(&opts, &keyless()).await.unwrap_err().to_string();
    assert!(
        error.contains("COHERE_API_KEY") && error.contains("QDRANT_URL"),
        "{error}"
    );

    doubles.push_fault(
        Endpoint::CohereEmbed,
        Fault::Status {
            status: 401,
            retry_after: None,
        },
    );
    let error = ingest(&opts, &vector_settings(&doubles)).await.unwrap_err();
    assert!(format!("{error:#}").contains("401"), "{error:#}");
    assert_eq!(
        doubles.calls(Endpoint::CohereEmbed),
        1,
        "a refused key is not retried"
    );
    assert!(!format!("{error:#}").contains("test-key"));
}

fn malformed_docs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, bytes: &[u8]| {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    write(
        "intro.md",
        b"# Intro\n\nHumanoid robots walk on two legs.\n",
    );
    write("guide/binary.md", &[b'#', b' ', 0xff, 0xfe, b'\n']);
    write("guide/open.mdx", b"---\ntitle: Open\n\n# Never closed\n");
    write(
        "guide/sensors.mdx",
        b"---\ntitle: Sensors\n---\n\nimport Tabs from '@theme/Tabs';\n\nCameras and IMUs.\n",
    );
    write("guide/_partial.mdx", b"# Partial\n");
    dir
}

#[tokio::test]
async fn malformed_files_are_reported_by_path_and_the_rest_indexed() {
    let docs = malformed_docs();
    let data = tempfile::tempdir().unwrap();
    let report = ingest(
        &options(docs.path(), data.path(), Target::Sqlite),
        &keyless(),
    )
    .await
    .unwrap();
    let skipped: Vec<&str> = report.skipped.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(skipped, ["guide/binary.md", "guide/open.mdx"]);
    assert!(
        report.skipped[0].problem.contains("UTF-8"),
        "{:?}",
        report.skipped
    );
    assert_eq!((report.summary.pages, report.summary.skipped), (2, 2));
    assert_eq!(page_urls_of(data.path()).len(), report.summary.chunks);
    assert!(page_urls_of(data.path())
        .iter()
        .all(|(_, _, text)| !text.contains("import ")));
}

#[test]
fn command_line_ingest_prints_a_json_summary_and_fails_on_skipped_files() {
    let run = |docs: &Path, data: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_host"))
            .env_clear()
            .arg("ingest")
            .arg(docs)
            .args([
                "--target",
                "sqlite",
                "--json",
                "--site-url",
                "https://book.example",
            ])
            .arg("--manifest")
            .arg(workspace().join("spin.toml"))
            .arg("--data-dir")
            .arg(data)
            .output()
            .unwrap()
    };
    let data = tempfile::tempdir().unwrap();
    let good = tempfile::tempdir().unwrap();
    std::fs::write(
        good.path().join("index.md"),
        "# Home\n\nWelcome to the book.\n\n## Next\n\nRead on.\n",
    )
    .unwrap();
    let output = run(good.path(), data.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["target"], "sqlite");
    assert_eq!(summary["pages"], 1);
    assert_eq!(summary["chunks"], 2);
    assert_eq!(summary["written"], 2);
    assert!(summary["elapsed_ms"].is_u64());
    assert_eq!(page_urls_of(data.path())[0].0, "https://book.example/docs");

    let bad = malformed_docs();
    let output = run(bad.path(), data.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("guide/binary.md") && stderr.contains("guide/open.mdx"),
        "{stderr}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim()).unwrap();
    assert_eq!(summary["skipped"], 2);
}

/// `<Name` or `</Name` not after an identifier (`Promise<Plugin>` is a type, not a tag).
fn jsx_tag(text: &str) -> bool {
    let bytes = text.as_bytes();
    (0..bytes.len()).any(|i| {
        let after_identifier =
            i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || matches!(bytes[i - 1], b'_' | b'.'));
        let opens = bytes.get(i + 1).is_some_and(u8::is_ascii_uppercase) && !after_identifier;
        bytes[i] == b'<'
            && (opens
                || (bytes.get(i + 1) == Some(&b'/')
                    && bytes.get(i + 2).is_some_and(u8::is_ascii_uppercase)))
    })
}

#[tokio::test]
async fn real_world_docusaurus_corpus_into_sqlite() {
    let corpus = workspace().join("../shared/corpora/docusaurus-docs/docs");
    if !corpus.is_dir() {
        assert!(
            std::env::var_os("TEST_REQUIRE_SHARED").is_none(),
            "TEST_REQUIRE_SHARED is set but the corpus is not at {}",
            corpus.display()
        );
        println!(
            "skipping: the Docusaurus corpus is not at {}",
            corpus.display()
        );
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let opts = Options {
        site: SiteConfig {
            site_url: "https://docusaurus.io".to_owned(),
            ..SiteConfig::default()
        },
        ..options(&corpus, data.path(), Target::Sqlite)
    };
    let report = ingest(&opts, &keyless()).await.unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.summary.pages, 90);
    let rows = page_urls_of(data.path());
    assert_eq!(rows.len(), report.summary.chunks);
    for (page, url, text) in &rows {
        assert!(url.starts_with(page.as_str()), "{url} outside {page}");
        assert!(page.starts_with("https://docusaurus.io/docs"), "{page}");
        for line in text.lines() {
            let line = line.trim_start();
            assert!(
                !line.starts_with("import ") && !line.starts_with("export "),
                "{line:?} in {url}"
            );
        }
        assert!(!jsx_tag(text), "JSX tag in {url}");
    }
    let pages: std::collections::HashSet<&str> = rows.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(pages.len(), 90);
    assert_eq!(segments(data.path()), 1);
    let again = ingest(&opts, &keyless()).await.unwrap().summary;
    assert_eq!((again.written, again.unchanged), (0, report.summary.chunks));
    println!("{}", report.summary);
}

#[test]
fn keyless_first_run_indexes_the_book_once() {
    let app = App::load(&workspace().join("spin.toml")).unwrap();
    let keyless_vars = AppVariables::resolve(&app.manifest, |_| None).unwrap();
    let data = tempfile::tempdir().unwrap();
    let env = |name: &str| (name == "SITE_URL").then(|| "https://example.github.io".to_owned());

    // No DOCS_DIR: the book beside spin.toml.
    let first = ensure_keyless_index(&app, &keyless_vars, data.path(), env);
    let KeylessIndex::Indexed(report) = first else {
        panic!("{first:?}");
    };
    assert!(
        report.summary.written > 0 && report.skipped.is_empty(),
        "{}",
        report.summary
    );
    let count = host::ingest::count_chunks(data.path()).unwrap();
    assert_eq!(count as usize, report.summary.chunks);
    assert!(search_top(data.path(), "ZMP")
        .url
        .starts_with("https://example.github.io/docs/"));

    let second = ensure_keyless_index(&app, &keyless_vars, data.path(), env);
    assert!(
        matches!(second, KeylessIndex::AlreadyIndexed(n) if n == count),
        "{second:?}"
    );

    let vector_vars = AppVariables::resolve(&app.manifest, |name| match name {
        "COHERE_API_KEY" => Some("k".to_owned()),
        "QDRANT_URL" => Some("http://127.0.0.1:1".to_owned()),
        _ => None,
    })
    .unwrap();
    let empty = tempfile::tempdir().unwrap();
    let skipped = ensure_keyless_index(&app, &vector_vars, empty.path(), env);
    assert!(matches!(skipped, KeylessIndex::NotKeyless), "{skipped:?}");

    // A DOCS_DIR that does not exist is logged, not fatal.
    let missing = ensure_keyless_index(&app, &keyless_vars, empty.path(), |name| {
        (name == "DOCS_DIR").then(|| "/nonexistent/docs".to_owned())
    });
    let KeylessIndex::Failed(error) = missing else {
        panic!("{missing:?}");
    };
    assert!(error.contains("/nonexistent/docs"), "{error}");
}
