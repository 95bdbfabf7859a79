//! `host eval QUESTIONS.jsonl`: asks a running service each labelled question through
//! `POST /chat`, exactly as a reader would, and measures retrieval and refusal.
//!
//! Without `--url` the runner is started in-process on an ephemeral loopback port with the
//! settings `serve` would use (spin.toml, the environment, `DATA_DIR`, and on a keyless first
//! run `DOCS_DIR` indexed into the embedded index), so what is measured is the real pipeline.
//!
//! The question file is JSON Lines, one object per line (blank lines and lines starting with
//! `//` are skipped):
//! `{"id": "...", "question": "...", "pages": ["/docs/page", ...]}` for a question the book
//! answers (any listed page counts), or `{"id": "...", "question": "...", "off_topic": true}`
//! for one it does not. A source matches a page when its URL, without `#anchor`, query and
//! trailing `/`, has a path equal to the listed path or ending with it (so a site published
//! under a `baseUrl` still matches `/docs/...`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt as _, Full};
use serde::{Deserialize, Serialize};

use crate::config::{settings_from_args, RuntimeSettings};
use crate::manifest::App;
use crate::outbound_http::OutboundClient;
use crate::runtime::Runtime;
use crate::variables::AppVariables;

#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// The labelled questions (JSON Lines; format in eval/README.md).
    pub questions: PathBuf,

    /// Base URL of a running service (e.g. http://localhost:7860, with any BASE_PATH); without
    /// it the runner is started in-process with the settings `serve` would use.
    #[arg(long)]
    pub url: Option<String>,

    /// Sources that count for recall@k; also sent as the request's `top_k`.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub k: u32,

    /// Print one JSON object (summary and per-question rows) instead of the table.
    #[arg(long)]
    pub json: bool,

    /// Fail (exit 1) when recall@k of the answerable questions is below this (0..=1).
    #[arg(long)]
    pub min_recall: Option<f64>,

    /// Fail (exit 1) when the share of off-topic questions refused is below this (0..=1).
    #[arg(long)]
    pub min_refusal: Option<f64>,

    #[command(flatten)]
    pub runtime: RuntimeSettings,
}

/// One labelled question.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    #[serde(default)]
    pub id: String,
    pub question: String,
    /// Page paths any of which answers the question; empty for an off-topic question.
    #[serde(default)]
    pub pages: Vec<String>,
    #[serde(default)]
    pub off_topic: bool,
}

/// Reads a question file; errors name the line.
pub fn parse_questions(text: &str) -> Result<Vec<Question>> {
    let mut questions = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        let mut question: Question =
            serde_json::from_str(line).with_context(|| format!("line {number}"))?;
        if question.question.trim().is_empty() {
            bail!("line {number}: `question` is empty");
        }
        match (question.off_topic, question.pages.is_empty()) {
            (true, false) => bail!("line {number}: an off-topic question lists no `pages`"),
            (false, true) => {
                bail!("line {number}: give the expected `pages`, or mark it `\"off_topic\": true`")
            }
            _ => {}
        }
        if let Some(page) = question.pages.iter().find(|p| !p.starts_with('/')) {
            bail!("line {number}: page {page:?} must be a URL path starting with `/`");
        }
        if question.id.is_empty() {
            question.id = format!("line-{number}");
        }
        questions.push(question);
    }
    if questions.is_empty() {
        bail!("no questions in the file");
    }
    Ok(questions)
}

/// The path of a page URL: no scheme and host, no `#anchor` or `?query`, no trailing `/`.
fn page_path(url: &str) -> &str {
    let without_fragment = url.split(['#', '?']).next().unwrap_or("");
    let path = match without_fragment.find("://") {
        Some(scheme_end) => {
            let rest = &without_fragment[scheme_end + 3..];
            rest.find('/').map_or("", |slash| &rest[slash..])
        }
        None => without_fragment,
    };
    path.trim_end_matches('/')
}

/// Whether a source URL is one of the expected pages.
pub fn matches_page(source_url: &str, expected: &str) -> bool {
    let path = page_path(source_url);
    let expected = expected.trim_end_matches('/');
    path == expected || (path.ends_with(expected) && !expected.is_empty())
}

/// What `/chat` answered, as far as the measures need it.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatAnswer {
    pub answer: String,
    #[serde(default)]
    pub sources: Vec<AnswerSource>,
    pub mode: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AnswerSource {
    pub n: usize,
    pub url: String,
    pub score: f32,
}

/// One question's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub id: String,
    pub question: String,
    pub off_topic: bool,
    /// `generated`, `extractive` or `refused`.
    pub mode: String,
    pub refused: bool,
    /// 1-based position of the first source on an expected page, within the first k.
    pub rank: Option<usize>,
    /// Answered, but no `[n]` in the text points at a listed source.
    pub uncited: bool,
    pub top_score: Option<f32>,
    pub sources: Vec<RowSource>,
}

/// A source as listed in the answer, and whether it is on an expected page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowSource {
    pub url: String,
    pub score: f32,
    pub expected: bool,
}

/// Scores one answer against its label.
pub fn judge(question: &Question, answer: &ChatAnswer, k: usize) -> Row {
    let refused = answer.mode == "refused";
    let rank = answer
        .sources
        .iter()
        .take(k)
        .position(|source| question.pages.iter().any(|p| matches_page(&source.url, p)))
        .map(|index| index + 1);
    let cites_a_source = answer
        .sources
        .iter()
        .any(|source| answer.answer.contains(&format!("[{}]", source.n)));
    Row {
        id: question.id.clone(),
        question: question.question.clone(),
        off_topic: question.off_topic,
        mode: answer.mode.clone(),
        refused,
        rank: if refused { None } else { rank },
        uncited: !refused && !cites_a_source,
        top_score: answer.sources.iter().map(|s| s.score).reduce(f32::max),
        sources: answer
            .sources
            .iter()
            .map(|source| RowSource {
                url: source.url.clone(),
                score: source.score,
                expected: question.pages.iter().any(|p| matches_page(&source.url, p)),
            })
            .collect(),
    }
}

/// The figures over all rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub k: usize,
    pub answerable: usize,
    pub found: usize,
    /// Answerable questions with an expected page among the first k sources.
    pub recall_at_k: f64,
    /// Mean reciprocal rank of the first expected page (0 when absent).
    pub mrr: f64,
    /// Answerable questions that were refused.
    pub answerable_refused: usize,
    pub off_topic: usize,
    pub off_topic_refused: usize,
    /// Share of off-topic questions refused (1 when there are none).
    pub refusal_rate: f64,
    /// Answers (not refusals) citing none of their sources.
    pub uncited: usize,
}

pub fn summarise(rows: &[Row], k: usize) -> Summary {
    let answerable: Vec<&Row> = rows.iter().filter(|r| !r.off_topic).collect();
    let off_topic: Vec<&Row> = rows.iter().filter(|r| r.off_topic).collect();
    let found = answerable.iter().filter(|r| r.rank.is_some()).count();
    let reciprocal = answerable
        .iter()
        .filter_map(|r| r.rank)
        .fold(0.0, |sum, rank| sum + 1.0 / rank as f64);
    let ratio = |part: usize, whole: usize, empty: f64| {
        if whole == 0 {
            empty
        } else {
            part as f64 / whole as f64
        }
    };
    let off_topic_refused = off_topic.iter().filter(|r| r.refused).count();
    Summary {
        k,
        answerable: answerable.len(),
        found,
        recall_at_k: ratio(found, answerable.len(), 1.0),
        mrr: if answerable.is_empty() {
            1.0
        } else {
            reciprocal / answerable.len() as f64
        },
        answerable_refused: answerable.iter().filter(|r| r.refused).count(),
        off_topic: off_topic.len(),
        off_topic_refused,
        refusal_rate: ratio(off_topic_refused, off_topic.len(), 1.0),
        uncited: rows.iter().filter(|r| r.uncited).count(),
    }
}

/// The thresholds a summary falls short of, as sentences.
pub fn shortfalls(
    summary: &Summary,
    min_recall: Option<f64>,
    min_refusal: Option<f64>,
) -> Vec<String> {
    let mut failures = Vec::new();
    if let Some(min) = min_recall.filter(|min| summary.recall_at_k < *min) {
        failures.push(format!(
            "recall@{} is {:.3}, below --min-recall {min}",
            summary.k, summary.recall_at_k
        ));
    }
    if let Some(min) = min_refusal.filter(|min| summary.refusal_rate < *min) {
        failures.push(format!(
            "{}/{} off-topic questions refused ({:.3}), below --min-refusal {min}",
            summary.off_topic_refused, summary.off_topic, summary.refusal_rate
        ));
    }
    failures
}

fn table(rows: &[Row], summary: &Summary) -> String {
    let mut out = String::new();
    for row in rows {
        let verdict = match (row.off_topic, row.refused, row.rank) {
            (true, true, _) => "ok refused".to_owned(),
            (true, false, _) => "ANSWERED".to_owned(),
            (false, true, _) => "REFUSED".to_owned(),
            (false, false, Some(rank)) => format!("ok @{rank}"),
            (false, false, None) => "MISSED".to_owned(),
        };
        let score = row.top_score.map_or("-".to_owned(), |s| format!("{s:.3}"));
        let first = row.sources.first().map_or("", |s| s.url.as_str());
        out.push_str(&format!(
            "{verdict:<11} {score:>6}  {:<22} {}{}\n",
            row.id,
            first,
            if row.uncited { "  (uncited)" } else { "" }
        ));
    }
    out.push_str(&format!(
        "\nrecall@{k}: {:.3} ({}/{})  MRR: {:.3}  answerable refused: {}\noff-topic refused: {}/{} ({:.3})  uncited answers: {}\n",
        summary.recall_at_k,
        summary.found,
        summary.answerable,
        summary.mrr,
        summary.answerable_refused,
        summary.off_topic_refused,
        summary.off_topic,
        summary.refusal_rate,
        summary.uncited,
        k = summary.k,
    ));
    out
}

/// Most attempts per question when the service answers 429 or 503.
const MAX_ATTEMPTS: u32 = 6;

struct ChatClient {
    client: OutboundClient,
    chat_url: String,
    timeout: Duration,
}

impl ChatClient {
    /// Asks one question; no `session_id`, so each question starts a new conversation.
    async fn ask(&self, question: &str, k: u32) -> Result<ChatAnswer> {
        let body = serde_json::to_vec(&serde_json::json!({ "query": question, "top_k": k }))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = http::Request::post(&self.chat_url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(http::header::ACCEPT, "application/json")
                .body(
                    Full::new(Bytes::from(body.clone()))
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                )?;
            let response = self
                .client
                .send(request, self.timeout)
                .await
                .map_err(|error| anyhow::anyhow!("POST {}: {error:?}", self.chat_url))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let bytes = tokio::time::timeout(self.timeout, response.into_body().collect())
                .await
                .context("reading the answer timed out")?
                .map_err(|error| anyhow::anyhow!("reading the answer: {error:?}"))?
                .to_bytes();
            if status.is_success() {
                return serde_json::from_slice(&bytes).with_context(|| {
                    format!(
                        "the answer is not /chat JSON: {}",
                        String::from_utf8_lossy(&bytes)
                    )
                });
            }
            let busy = status == http::StatusCode::TOO_MANY_REQUESTS
                || status == http::StatusCode::SERVICE_UNAVAILABLE;
            if !busy || attempt >= MAX_ATTEMPTS {
                bail!(
                    "POST {} answered {status}: {}",
                    self.chat_url,
                    String::from_utf8_lossy(&bytes)
                );
            }
            let wait = retry_after.unwrap_or(u64::from(attempt)).min(60);
            tokio::time::sleep(Duration::from_secs(wait)).await;
        }
    }
}

/// Asks every question against `base_url` and judges the answers, in file order.
pub async fn evaluate(base_url: &str, questions: &[Question], k: u32) -> Result<Vec<Row>> {
    let client = ChatClient {
        client: OutboundClient::new(Duration::from_secs(10), Duration::from_secs(120))?,
        chat_url: format!("{}/chat", base_url.trim_end_matches('/')),
        timeout: Duration::from_secs(120),
    };
    let mut rows = Vec::with_capacity(questions.len());
    for question in questions {
        let answer = client
            .ask(&question.question, k)
            .await
            .with_context(|| format!("question {}", question.id))?;
        rows.push(judge(question, &answer, k as usize));
    }
    Ok(rows)
}

/// A runner serving on 127.0.0.1 with an ephemeral port, as `serve` would be set up, without
/// the per-client rate limit (every question comes from one address).
struct LocalService {
    base_url: String,
    task: tokio::task::JoinHandle<()>,
}

impl LocalService {
    async fn start(runtime_settings: RuntimeSettings) -> Result<Self> {
        let app = App::load(&runtime_settings.app.manifest)?;
        let variables = AppVariables::from_process_env(&app.manifest)?;
        let data_dir = runtime_settings.app.data_dir.clone();
        let (app, variables) = tokio::task::spawn_blocking(move || {
            crate::ingest::ensure_keyless_index(&app, &variables, &data_dir, |name| {
                std::env::var(name).ok()
            });
            (app, variables)
        })
        .await?;
        let runtime = Arc::new(
            tokio::task::spawn_blocking(move || Runtime::load(runtime_settings, variables, app))
                .await??,
        );
        let (_, server_settings) = settings_from_args(&["--rate-limit-per-minute", "0"]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            if let Err(error) = crate::server::serve_on(listener, runtime, &server_settings).await {
                tracing::error!("the evaluation server stopped: {error:#}");
            }
        });
        Ok(Self { base_url, task })
    }
}

impl Drop for LocalService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn read_questions(path: &Path) -> Result<Vec<Question>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_questions(&text).with_context(|| format!("in {}", path.display()))
}

/// The `eval` command.
pub async fn run(args: EvalArgs) -> Result<ExitCode> {
    for (flag, value) in [
        ("--min-recall", args.min_recall),
        ("--min-refusal", args.min_refusal),
    ] {
        if value.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
            bail!("{flag} must be in 0..=1");
        }
    }
    let questions = read_questions(&args.questions)?;
    let started = Instant::now();
    let local;
    let base_url = match &args.url {
        Some(url) => url.clone(),
        None => {
            local = LocalService::start(args.runtime.clone()).await?;
            local.base_url.clone()
        }
    };
    let rows = evaluate(&base_url, &questions, args.k).await?;
    let summary = summarise(&rows, args.k as usize);
    let failures = shortfalls(&summary, args.min_recall, args.min_refusal);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "questions": args.questions.display().to_string(),
                "summary": summary,
                "rows": rows,
                "passed": failures.is_empty(),
                "elapsed_ms": started.elapsed().as_millis() as u64,
            })
        );
    } else {
        print!("{}", table(&rows, &summary));
    }
    for failure in &failures {
        eprintln!("error: {failure}");
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(mode: &str, text: &str, urls: &[&str]) -> ChatAnswer {
        ChatAnswer {
            answer: text.into(),
            mode: mode.into(),
            sources: urls
                .iter()
                .enumerate()
                .map(|(i, url)| AnswerSource {
                    n: i + 1,
                    url: (*url).into(),
                    score: 0.5 - i as f32 * 0.1,
                })
                .collect(),
        }
    }

    fn question(pages: &[&str]) -> Question {
        Question {
            id: "q".into(),
            question: "how?".into(),
            pages: pages.iter().map(|p| (*p).into()).collect(),
            off_topic: pages.is_empty(),
        }
    }

    #[test]
    fn questions_parse_and_bad_lines_are_named() {
        let parsed = parse_questions(
            "{\"id\": \"a\", \"question\": \"q1\", \"pages\": [\"/docs/x\"]}\n\n// note\n{\"question\": \"q2\", \"off_topic\": true}\n",
        )
        .unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].id, "line-4");
        assert!(parsed[1].off_topic);
        for (text, needle) in [
            ("{\"question\": \"q\"}", "line 1: give the expected `pages`"),
            (
                "{\"question\": \"q\", \"pages\": [\"/a\"], \"off_topic\": true}",
                "lists no `pages`",
            ),
            ("{\"question\": \" \", \"off_topic\": true}", "is empty"),
            (
                "{\"question\": \"q\", \"pages\": [\"docs/a\"]}",
                "starting with `/`",
            ),
            ("{\"question\": \"q\", \"page\": [\"/a\"]}", "line 1"),
            ("", "no questions"),
        ] {
            let error = format!("{:#}", parse_questions(text).unwrap_err());
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn pages_match_by_path_under_any_base_url() {
        assert!(matches_page(
            "http://localhost:3000/docs/deployment#deploy",
            "/docs/deployment"
        ));
        assert!(matches_page(
            "https://me.github.io/book/docs/deployment/",
            "/docs/deployment"
        ));
        assert!(matches_page("http://localhost:3000/docs", "/docs"));
        assert!(matches_page("http://localhost:3000/docs/#intro", "/docs/"));
        assert!(!matches_page(
            "http://localhost:3000/docs/deployment",
            "/docs"
        ));
        assert!(!matches_page(
            "http://localhost:3000/docs/cli",
            "/docs/deployment"
        ));
        assert!(matches_page(
            "http://h/docs/api/plugins/@docusaurus/plugin-pwa?x=1#options",
            "/docs/api/plugins/@docusaurus/plugin-pwa"
        ));
    }

    #[test]
    fn answers_are_judged_by_rank_refusal_and_citation() {
        let q = question(&["/docs/b", "/docs/c"]);
        let row = judge(
            &q,
            &answer(
                "extractive",
                "x [1] y [2]",
                &["http://h/docs/a", "http://h/docs/c#z"],
            ),
            5,
        );
        assert_eq!(
            (row.rank, row.refused, row.uncited),
            (Some(2), false, false)
        );
        assert_eq!(row.top_score, Some(0.5));
        let beyond_k = judge(
            &q,
            &answer("generated", "[1]", &["http://h/docs/a", "http://h/docs/b"]),
            1,
        );
        assert_eq!(beyond_k.rank, None);
        let uncited = judge(
            &q,
            &answer("generated", "no marks [3]", &["http://h/docs/b"]),
            5,
        );
        assert!(uncited.uncited);
        let refused = judge(
            &question(&[]),
            &answer("refused", "I could not find this", &[]),
            5,
        );
        assert!(refused.refused && !refused.uncited && refused.rank.is_none());
    }

    #[test]
    fn summary_counts_recall_mrr_and_refusals() {
        let rank = |rank: Option<usize>, refused: bool, off_topic: bool| Row {
            id: String::new(),
            question: String::new(),
            off_topic,
            mode: if refused { "refused" } else { "extractive" }.into(),
            refused,
            rank,
            uncited: false,
            top_score: None,
            sources: vec![],
        };
        let rows = [
            rank(Some(1), false, false),
            rank(Some(2), false, false),
            rank(None, false, false),
            rank(None, true, false),
            rank(None, true, true),
            rank(None, false, true),
        ];
        let summary = summarise(&rows, 5);
        assert_eq!((summary.answerable, summary.found), (4, 2));
        assert!((summary.recall_at_k - 0.5).abs() < 1e-9);
        assert!((summary.mrr - 1.5 / 4.0).abs() < 1e-9);
        assert_eq!(summary.answerable_refused, 1);
        assert_eq!((summary.off_topic, summary.off_topic_refused), (2, 1));
        assert!((summary.refusal_rate - 0.5).abs() < 1e-9);
        assert!(shortfalls(&summary, Some(0.5), Some(0.5)).is_empty());
        let failures = shortfalls(&summary, Some(0.85), Some(0.9));
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[1].contains("1/2 off-topic"), "{failures:?}");
    }
}
