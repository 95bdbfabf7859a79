//! `host ingest DOCS_DIR`: turns a Docusaurus docs folder into chunks in Qdrant (Cohere
//! embeddings) or in the embedded SQLite FTS5 index. Parsing and chunking are rag-core's; this
//! module walks the folder, compares with what the index holds, and writes only the difference.
//!
//! Incremental by content hash: unchanged chunks cost no embedding call and no write. Chunks
//! the docs no longer produce (a page changed or vanished) are kept unless `--prune` is given,
//! and are counted as `stale` in the summary, so a partial checkout never empties an index.

mod qdrant_index;
mod sqlite_index;

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rag_core::config::{RetrievalMode, Settings};
use rag_core::docs::{
    chunk_page, parse_page, Chunk, DocError, SiteConfig, DEFAULT_MAX_CHARS, DEFAULT_OVERLAP_CHARS,
};
use rag_core::retry::RetryPolicy;
use serde::Serialize;

use crate::config::{AppLocation, OutboundSettings};
use crate::manifest::App;
use crate::variables::AppVariables;

pub use sqlite_index::{count_chunks, index_path};

/// Where the chunks go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// Qdrant when Cohere and Qdrant are configured, else the embedded SQLite index.
    Auto,
    /// Cohere embeddings in Qdrant (COHERE_API_KEY and QDRANT_URL must be set).
    Qdrant,
    /// The embedded keyword index, DATA_DIR/default.db (no embeddings).
    Sqlite,
}

#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// The Docusaurus docs folder (`.md` and `.mdx` files).
    pub docs_dir: PathBuf,

    /// The site's scheme and host (Docusaurus `url`).
    #[arg(long, env = "SITE_URL", default_value = "http://localhost:3000")]
    pub site_url: String,

    /// Docusaurus `baseUrl`.
    #[arg(long, env = "DOCS_BASE_URL", default_value = "/")]
    pub base_url: String,

    /// The docs plugin's `routeBasePath`.
    #[arg(long, env = "DOCS_ROUTE_BASE_PATH", default_value = "docs")]
    pub route_base_path: String,

    /// Where the chunks go.
    #[arg(long, value_enum, default_value_t = Target::Auto)]
    pub target: Target,

    /// Report what would change; write nothing and embed nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Delete chunks the docs no longer produce (without it they are kept and counted as stale).
    #[arg(long)]
    pub prune: bool,

    /// Print the summary as one JSON line on stdout (for CI).
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub app: AppLocation,

    #[command(flatten)]
    pub outbound: OutboundSettings,
}

/// Everything one ingestion run needs besides the application settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub docs_dir: PathBuf,
    pub site: SiteConfig,
    pub target: Target,
    /// Holds the embedded index, `DATA_DIR/default.db`.
    pub data_dir: PathBuf,
    pub dry_run: bool,
    pub prune: bool,
    pub show_progress: bool,
    pub connect_timeout: Duration,
    /// Deadline of each upstream call.
    pub call_timeout: Duration,
    pub retry: RetryPolicy,
}

impl Options {
    pub fn new(docs_dir: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            docs_dir: docs_dir.into(),
            site: SiteConfig {
                site_url: "http://localhost:3000".to_owned(),
                ..SiteConfig::default()
            },
            target: Target::Auto,
            data_dir: data_dir.into(),
            dry_run: false,
            prune: false,
            show_progress: false,
            connect_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(120),
            retry: INGEST_RETRY,
        }
    }
}

/// Batch ingestion can afford to wait out a rate limit that a chat request could not.
pub const INGEST_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 8,
    base_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(30),
    total_budget: Duration::from_secs(180),
};

/// What a run did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub target: &'static str,
    pub dry_run: bool,
    pub pages: usize,
    pub chunks: usize,
    /// Chunks sent to the embedding model.
    pub embedded: usize,
    /// Chunks inserted or replaced.
    pub written: usize,
    pub unchanged: usize,
    pub deleted: usize,
    /// Chunks in the index the docs no longer produce, kept because `--prune` was not given.
    pub stale: usize,
    /// Files reported and left out.
    pub skipped: usize,
    pub elapsed_ms: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}ingest into {}: {} pages, {} chunks, {} embedded, {} written, {} unchanged, {} deleted, {} stale, {} skipped in {:.2}s",
            if self.dry_run { "dry run, nothing written: " } else { "" },
            self.target,
            self.pages,
            self.chunks,
            self.embedded,
            self.written,
            self.unchanged,
            self.deleted,
            self.stale,
            self.skipped,
            self.elapsed_ms as f64 / 1000.0
        )
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub summary: Summary,
    /// Files that could not be read or parsed, each naming its path.
    pub skipped: Vec<DocError>,
}

/// The pages and chunks of a docs folder.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    pub pages: usize,
    pub chunks: Vec<Chunk>,
    pub skipped: Vec<DocError>,
}

/// Reads every `.md`/`.mdx` file under `root` in file-name order, skipping partials and
/// drafts; files that cannot be read or parsed, and pages whose URL an earlier page already
/// took, are reported in `skipped`.
pub fn load_docs(root: &Path, site: &SiteConfig) -> Result<Corpus> {
    if !root.is_dir() {
        bail!("docs folder {} does not exist", root.display());
    }
    let mut corpus = Corpus::default();
    let mut owners: HashMap<String, String> = HashMap::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
    {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                let path = error.path().unwrap_or(root).to_path_buf();
                corpus.skipped.push(DocError {
                    path: relative(root, &path),
                    problem: format!("cannot be read ({error})"),
                });
                continue;
            }
        };
        let is_doc = matches!(
            entry.path().extension().and_then(|e| e.to_str()),
            Some("md" | "mdx")
        );
        if !entry.file_type().is_file() || !is_doc {
            continue;
        }
        let rel = relative(root, entry.path());
        let bytes = match std::fs::read(entry.path()) {
            Ok(bytes) => bytes,
            Err(error) => {
                corpus.skipped.push(DocError {
                    path: rel,
                    problem: format!("cannot be read ({error})"),
                });
                continue;
            }
        };
        let page = match parse_page(&rel, &bytes, site) {
            Ok(Some(page)) => page,
            Ok(None) => continue,
            Err(error) => {
                corpus.skipped.push(error);
                continue;
            }
        };
        if let Some(first) = owners.get(&page.url) {
            corpus.skipped.push(DocError {
                path: rel,
                problem: format!("has the same URL as {first} ({})", page.url),
            });
            continue;
        }
        owners.insert(page.url.clone(), rel);
        corpus.pages += 1;
        corpus
            .chunks
            .extend(chunk_page(&page, DEFAULT_MAX_CHARS, DEFAULT_OVERLAP_CHARS));
    }
    Ok(corpus)
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// The difference between the docs and an index.
struct Plan<'a> {
    /// New or changed chunks.
    write: Vec<&'a Chunk>,
    unchanged: usize,
    /// Ids in the index the docs no longer produce.
    vanished: Vec<String>,
}

/// `stored` maps chunk ids (lower case) to content hashes.
fn plan<'a>(chunks: &'a [Chunk], stored: &HashMap<String, String>) -> Plan<'a> {
    let mut write = Vec::new();
    let mut unchanged = 0;
    for chunk in chunks {
        match stored.get(&chunk.id.to_ascii_lowercase()) {
            Some(hash) if *hash == chunk.hash => unchanged += 1,
            _ => write.push(chunk),
        }
    }
    let current: HashSet<String> = chunks.iter().map(|c| c.id.to_ascii_lowercase()).collect();
    let mut vanished: Vec<String> = stored
        .keys()
        .filter(|id| !current.contains(*id))
        .cloned()
        .collect();
    vanished.sort();
    Plan {
        write,
        unchanged,
        vanished,
    }
}

/// Counts a target reports back.
#[derive(Debug, Default)]
struct Applied {
    embedded: usize,
    written: usize,
    unchanged: usize,
    deleted: usize,
    stale: usize,
}

fn progress_bar(show: bool, length: usize, message: &'static str) -> ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(length as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} chunks ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message);
    bar
}

/// Reads the docs and brings the chosen index in line with them.
pub async fn ingest(options: &Options, settings: &Settings) -> Result<Report> {
    let started = Instant::now();
    let use_qdrant = match options.target {
        Target::Auto => settings.retrieval_mode() == RetrievalMode::Vector,
        Target::Qdrant => true,
        Target::Sqlite => false,
    };
    let corpus = {
        let root = options.docs_dir.clone();
        let site = options.site.clone();
        tokio::task::spawn_blocking(move || load_docs(&root, &site)).await??
    };
    let (target, applied) = if use_qdrant {
        let applied = qdrant_index::sync(options, settings, &corpus.chunks).await?;
        ("qdrant", applied)
    } else {
        let options = options.clone();
        let chunks = corpus.chunks.clone();
        let applied =
            tokio::task::spawn_blocking(move || sqlite_index::sync(&options, &chunks)).await??;
        ("sqlite", applied)
    };
    Ok(report(target, options.dry_run, corpus, applied, started))
}

fn report(
    target: &'static str,
    dry_run: bool,
    corpus: Corpus,
    applied: Applied,
    started: Instant,
) -> Report {
    Report {
        summary: Summary {
            target,
            dry_run,
            pages: corpus.pages,
            chunks: corpus.chunks.len(),
            embedded: applied.embedded,
            written: applied.written,
            unchanged: applied.unchanged,
            deleted: applied.deleted,
            stale: applied.stale,
            skipped: corpus.skipped.len(),
            elapsed_ms: started.elapsed().as_millis() as u64,
        },
        skipped: corpus.skipped,
    }
}

/// The `ingest` command: settings from spin.toml and the environment, as `serve` reads them.
pub async fn run(args: IngestArgs) -> Result<ExitCode> {
    let app = App::load(&args.app.manifest)?;
    let variables = AppVariables::from_process_env(&app.manifest)?;
    let settings = settings_of(&variables)?;
    let options = Options {
        docs_dir: args.docs_dir.clone(),
        site: SiteConfig {
            site_url: args.site_url.clone(),
            base_url: args.base_url.clone(),
            route_base_path: args.route_base_path.clone(),
            ..SiteConfig::default()
        },
        target: args.target,
        data_dir: args.app.data_dir.clone(),
        dry_run: args.dry_run,
        prune: args.prune,
        show_progress: true,
        connect_timeout: args.outbound.connect_timeout(),
        call_timeout: args.outbound.first_byte_timeout(),
        retry: INGEST_RETRY,
    };
    let report = ingest(&options, &settings).await?;
    for error in &report.skipped {
        eprintln!("skipped {error}");
    }
    if args.json {
        println!("{}", serde_json::to_string(&report.summary)?);
    } else {
        println!("{}", report.summary);
    }
    Ok(if report.skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "error: {} file(s) were skipped; fix them and run again",
            report.skipped.len()
        );
        ExitCode::FAILURE
    })
}

fn settings_of(variables: &AppVariables) -> Result<Settings> {
    Settings::from_lookup(|name| variables.get(name).map(|r| r.value.clone()))
        .map_err(|error| anyhow::anyhow!("{error}"))
}

/// What `serve` did about the embedded index before serving.
#[derive(Debug)]
pub enum KeylessIndex {
    /// Vector retrieval is configured; the embedded index is not used.
    NotKeyless,
    /// The embedded index already holds this many chunks.
    AlreadyIndexed(u64),
    /// No docs folder was given and the default one does not exist.
    NoDocs,
    Indexed(Report),
    /// Indexing failed; serving goes on with an empty index.
    Failed(String),
}

/// On a keyless first run (keyword retrieval, empty or missing embedded index), indexes the
/// docs folder `DOCS_DIR` (default: `book/docs` beside the manifest) into SQLite so a new user
/// can chat at once. Logs one line; never fails. `env` reads `DOCS_DIR`, `SITE_URL`,
/// `DOCS_BASE_URL` and `DOCS_ROUTE_BASE_PATH`.
pub fn ensure_keyless_index(
    app: &App,
    variables: &AppVariables,
    data_dir: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> KeylessIndex {
    let outcome = keyless_index(app, variables, data_dir, &env);
    match &outcome {
        KeylessIndex::NotKeyless | KeylessIndex::AlreadyIndexed(_) => {}
        KeylessIndex::NoDocs => tracing::info!(
            "the embedded search index is empty and no docs folder was found (set DOCS_DIR, or run `host ingest`)"
        ),
        KeylessIndex::Indexed(report) => {
            tracing::info!("indexed the docs for keyword search: {}", report.summary);
            for error in &report.skipped {
                tracing::warn!("skipped {error}");
            }
        }
        KeylessIndex::Failed(error) => {
            tracing::warn!("could not index the docs for keyword search: {error}")
        }
    }
    outcome
}

fn keyless_index(
    app: &App,
    variables: &AppVariables,
    data_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> KeylessIndex {
    let settings = match settings_of(variables) {
        Ok(settings) => settings,
        Err(error) => return KeylessIndex::Failed(format!("{error:#}")),
    };
    if settings.retrieval_mode() != RetrievalMode::Keyword {
        return KeylessIndex::NotKeyless;
    }
    match count_chunks(data_dir) {
        Ok(count) if count > 0 => return KeylessIndex::AlreadyIndexed(count),
        Ok(_) => {}
        Err(error) => return KeylessIndex::Failed(format!("{error:#}")),
    }
    let configured = env("DOCS_DIR").filter(|d| !d.trim().is_empty());
    let docs_dir = match configured {
        Some(dir) => PathBuf::from(dir),
        None => {
            let default = app.dir.join("book/docs");
            if !default.is_dir() {
                return KeylessIndex::NoDocs;
            }
            default
        }
    };
    let or_default = |name: &str, default: &str| {
        env(name)
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    let options = Options {
        site: SiteConfig {
            site_url: or_default("SITE_URL", "http://localhost:3000"),
            base_url: or_default("DOCS_BASE_URL", "/"),
            route_base_path: or_default("DOCS_ROUTE_BASE_PATH", "docs"),
            ..SiteConfig::default()
        },
        target: Target::Sqlite,
        ..Options::new(docs_dir, data_dir)
    };
    let started = Instant::now();
    let result = load_docs(&options.docs_dir, &options.site)
        .and_then(|corpus| Ok((sqlite_index::sync(&options, &corpus.chunks)?, corpus)))
        .with_context(|| format!("indexing {}", options.docs_dir.display()));
    match result {
        Ok((applied, corpus)) => {
            KeylessIndex::Indexed(report("sqlite", false, corpus, applied, started))
        }
        Err(error) => KeylessIndex::Failed(format!("{error:#}")),
    }
}
