//! A bounded load run of the runner binary, on loopback only, that stops by itself.
//!
//! Phase 1: `serve-doubles` (Cohere, Qdrant and OpenAI doubles at fixed latencies) with the
//! sample book ingested into its Qdrant by `host ingest`, and `host serve` with sessions in a
//! PostgreSQL database created for the run and dropped after it. Phase 2: `host serve` keyless
//! (embedded SQLite, no upstreams) in a fresh `DATA_DIR`.
//!
//! In each phase every virtual client holds one keep-alive connection, speaks from an
//! `X-Forwarded-For` address of its own (the runner trusts loopback as a proxy), and loops over
//! conversations: an optional `POST /session`, one to three chat turns (streamed or JSON) on
//! one session, `GET /session/{id}`, feedback on an answer, `DELETE` of some sessions, and
//! `/health`. Clients are paced below the per-client rate limit the runner is given, so none
//! of them may see a 429; one extra greedy client sends `/health` back to back and must.
//!
//! Then it checks and prints: requests by kind and status, latency p50/p99 per kind, transport
//! errors (must be 0), unexpected statuses (must be 0), every kept session's turns in
//! PostgreSQL against what the clients saw acknowledged, the runner's RSS (sampled every
//! second) against `--rss-limit-mb`, and in phase 2 the largest `default.db-wal` seen against
//! the bound the runner keeps. Any failed check exits non-zero.
//!
//! Bounds: each phase stops starting requests after its duration or `--max-requests`; a
//! request gives up after 30 s; a watchdog thread kills the children and exits if the whole
//! run takes five minutes more than its phases (startup, ingestion and teardown included).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde_json::{json, Value};

/// The runner keeps every embedded database's WAL below this (host/src/sqlite.rs: a
/// truncating checkpoint once the WAL passes 2 MiB); the writes that land while a checkpoint
/// runs may go past it, hence the margin.
const WAL_PROMISE_BYTES: u64 = 2 * 1024 * 1024;

/// The per-client rate limit the runner gets: paced clients stay below it, the greedy one
/// does not.
const RATE_LIMIT_PER_SECOND: u64 = 10;
const RATE_LIMIT_BURST: u64 = 50;

/// A request that takes longer than this counts as a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser, Debug, Clone)]
#[command(
    name = "load",
    about = "Bounded load run of the runner (PostgreSQL + doubles, then keyless SQLite)"
)]
struct Args {
    /// Virtual clients, each with one open connection.
    #[arg(long, default_value_t = 500)]
    connections: usize,
    /// Duration of the PostgreSQL phase, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Duration of the keyless SQLite phase, in seconds (0 skips it).
    #[arg(long, default_value_t = 20)]
    sqlite_seconds: u64,
    /// Virtual clients of the SQLite phase (default: --connections).
    #[arg(long)]
    sqlite_connections: Option<usize>,
    /// Requests per phase at most, whatever the time left.
    #[arg(long, default_value_t = 2_000_000)]
    max_requests: u64,
    /// Fail when the runner's resident memory (VmRSS, or its peak VmHWM) exceeds this, in MiB.
    /// Measured: 224 MiB peak at 500 connections for 60 s, 65 MiB at 100 for 10 s; the
    /// default leaves more than twice the larger.
    #[arg(long, default_value_t = 512)]
    rss_limit_mb: u64,
    /// Fail when `default.db-wal` exceeds this many MiB in the SQLite phase.
    #[arg(long, default_value_t = 6)]
    wal_limit_mb: u64,
    /// Most requests a virtual client starts per second.
    #[arg(long, default_value_t = 4.0)]
    client_rate: f64,
    /// PostgreSQL to create the run's database in (trust or password in the URL).
    #[arg(
        long,
        env = "LOAD_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    /// The runner binary.
    #[arg(long, default_value = "target/release/host")]
    host_bin: PathBuf,
    /// The doubles binary.
    #[arg(long, default_value = "target/release/serve-doubles")]
    doubles_bin: PathBuf,
    /// The project folder (spin.toml, book/docs).
    #[arg(long, default_value = ".")]
    workspace: PathBuf,
    /// The docs to index and ask about (default: the project's sample book), e.g.
    /// ../shared/corpora/docusaurus-docs/docs for a run at a real book's size.
    #[arg(long)]
    docs: Option<PathBuf>,
    /// Doubles: Cohere embed latency, ms.
    #[arg(long, default_value_t = 20)]
    embed_ms: u64,
    /// Doubles: Qdrant query latency, ms.
    #[arg(long, default_value_t = 10)]
    search_ms: u64,
    /// Doubles: Cohere rerank latency, ms.
    #[arg(long, default_value_t = 15)]
    rerank_ms: u64,
    /// Doubles: language model latency before its answer or stream headers, ms.
    #[arg(long, default_value_t = 30)]
    chat_ms: u64,
    /// Doubles: first streamed token after the headers, ms.
    #[arg(long, default_value_t = 50)]
    first_token_ms: u64,
    /// Doubles: each further streamed token, ms.
    #[arg(long, default_value_t = 5)]
    token_ms: u64,
}

/// Child processes the watchdog kills if the run overruns.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn spawn(command: &mut Command) -> Child {
    let child = command
        .spawn()
        .unwrap_or_else(|e| fail_now(&format!("cannot start {command:?}: {e}")));
    CHILDREN.lock().unwrap().push(child.id());
    child
}

fn kill_children() {
    for pid in CHILDREN.lock().unwrap().drain(..) {
        let _ = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

fn fail_now(message: &str) -> ! {
    eprintln!("load: {message}");
    kill_children();
    std::process::exit(2);
}

/// Stops a child with SIGTERM, then SIGKILL after `grace`; its exit status when SIGTERM
/// sufficed.
fn stop(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    let mut exited = None;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    CHILDREN.lock().unwrap().retain(|pid| *pid != child.id());
    exited
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| fail_now(&format!("no free port: {e}")))
}

/// What kind of request, for counts and latencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    ChatStream,
    ChatJson,
    SessionCreate,
    SessionGet,
    Feedback,
    SessionDelete,
    Health,
    GreedyHealth,
}

impl Kind {
    fn expected(self, status: u16) -> bool {
        match self {
            Kind::ChatStream | Kind::ChatJson | Kind::SessionGet | Kind::Health => status == 200,
            Kind::SessionCreate => status == 201,
            Kind::Feedback | Kind::SessionDelete => status == 204,
            // The greedy client is the one the rate limit is for.
            Kind::GreedyHealth => status == 200 || status == 429,
        }
    }
}

/// A session as the clients left it.
#[derive(Debug, Clone)]
struct SessionRecord {
    id: String,
    /// Chat turns answered in full (JSON 200, or a stream's `done`).
    acknowledged_turns: u64,
    feedback: u64,
    deleted: bool,
}

#[derive(Default)]
struct Stats {
    statuses: BTreeMap<(Kind, u16), u64>,
    latencies: HashMap<Kind, Vec<u32>>,
    transport_errors: Vec<String>,
    unexpected: Vec<String>,
    /// Whether each 429 of the greedy client carried `Retry-After` and the `rate_limited` code.
    greedy_429_well_formed: u64,
    sessions: Vec<SessionRecord>,
}

struct Phase {
    base: String,
    deadline: Instant,
    started: AtomicU64,
    max_requests: u64,
    stats: Mutex<Stats>,
    stopped: AtomicBool,
    pace: Duration,
}

impl Phase {
    fn running(&self) -> bool {
        !self.stopped.load(Ordering::Relaxed)
            && Instant::now() < self.deadline
            && self.started.load(Ordering::Relaxed) < self.max_requests
    }

    /// Claims one request of the budget; `false` once the phase is over.
    fn claim(&self) -> bool {
        self.running() && self.started.fetch_add(1, Ordering::Relaxed) < self.max_requests
    }

    fn record(&self, kind: Kind, status: u16, elapsed: Duration, detail: impl FnOnce() -> String) {
        let mut stats = self.stats.lock().unwrap();
        *stats.statuses.entry((kind, status)).or_default() += 1;
        stats
            .latencies
            .entry(kind)
            .or_default()
            .push(elapsed.as_micros().min(u32::MAX as u128) as u32);
        if !kind.expected(status) && stats.unexpected.len() < 1000 {
            stats
                .unexpected
                .push(format!("{kind:?} {status}: {}", detail()));
        }
    }

    fn transport_error(&self, kind: Kind, error: impl std::fmt::Display) {
        let mut stats = self.stats.lock().unwrap();
        if stats.transport_errors.len() < 1000 {
            stats.transport_errors.push(format!("{kind:?}: {error}"));
        }
        *stats.statuses.entry((kind, 0)).or_default() += 1;
    }
}

/// xorshift64*: a reproducible mix per client without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
}

/// The folder both phases index: `--docs`, else the sample book.
fn docs_dir(args: &Args) -> PathBuf {
    args.docs
        .clone()
        .unwrap_or_else(|| args.workspace.join("book/docs"))
}

const QUESTIONS: &[&str] = &[
    "What does the zero moment point mean for a walking robot's balance?",
    "How do ROS 2 nodes talk to each other over topics?",
    "What does an inertial measurement unit measure?",
    "How does inverse kinematics find joint angles?",
    "Which sensors does a humanoid robot use to perceive its surroundings?",
    "What is a digital twin of a robot used for?",
];

/// One virtual client: one connection, one forwarded address, paced conversations.
async fn virtual_client(index: usize, phase: Arc<Phase>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("a plain HTTP client");
    let forwarded = format!(
        "10.{}.{}.{}",
        (index >> 16) & 0xff,
        (index >> 8) & 0xff,
        index & 0xff
    );
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1).wrapping_mul(0x1000_0000_01b3));
    let mut pace = tokio::time::interval(phase.pace);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Clients start spread over one pacing period, not all in the same millisecond.
    tokio::time::sleep(phase.pace.mul_f64((rng.next() % 1000) as f64 / 1000.0)).await;
    let c = Conn {
        client,
        forwarded,
        phase: phase.clone(),
    };
    while phase.running() {
        let mut record = SessionRecord {
            id: String::new(),
            acknowledged_turns: 0,
            feedback: 0,
            deleted: false,
        };
        if rng.one_in(4) {
            pace.tick().await;
            match c.create_session().await {
                Some(id) => record.id = id,
                None => continue,
            }
        }
        let turns = 1 + rng.next() % 3;
        let mut last_message = None;
        for _ in 0..turns {
            pace.tick().await;
            let streamed = rng.one_in(2);
            let question = QUESTIONS[(rng.next() % QUESTIONS.len() as u64) as usize];
            let session = (!record.id.is_empty()).then_some(record.id.as_str());
            let Some((session_id, message_id)) = c.chat(question, session, streamed).await else {
                break;
            };
            record.id = session_id;
            record.acknowledged_turns += 1;
            last_message = Some(message_id);
        }
        if record.id.is_empty() {
            continue;
        }
        pace.tick().await;
        c.read_session(&record).await;
        if let Some(message_id) = last_message.filter(|_| rng.one_in(2)) {
            pace.tick().await;
            if c.feedback(&record.id, message_id).await {
                record.feedback += 1;
            }
        }
        if rng.one_in(5) {
            pace.tick().await;
            record.deleted = c.delete_session(&record.id).await;
        }
        phase.stats.lock().unwrap().sessions.push(record);
        if rng.one_in(3) {
            pace.tick().await;
            c.health(Kind::Health).await;
        }
    }
}

struct Conn {
    client: reqwest::Client,
    forwarded: String,
    phase: Arc<Phase>,
}

impl Conn {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.phase.base))
            .header("x-forwarded-for", &self.forwarded)
    }

    /// Sends and reads the whole body; `None` (recorded) on a transport error.
    async fn send(
        &self,
        kind: Kind,
        builder: reqwest::RequestBuilder,
    ) -> Option<(u16, reqwest::header::HeaderMap, Vec<u8>)> {
        if !self.phase.claim() {
            return None;
        }
        let started = Instant::now();
        let response = match builder.send().await {
            Ok(response) => response,
            Err(error) => {
                self.phase.transport_error(kind, error);
                return None;
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = match response.bytes().await {
            Ok(body) => body.to_vec(),
            Err(error) => {
                self.phase.transport_error(kind, error);
                return None;
            }
        };
        self.phase.record(kind, status, started.elapsed(), || {
            String::from_utf8_lossy(&body).chars().take(300).collect()
        });
        Some((status, headers, body))
    }

    async fn create_session(&self) -> Option<String> {
        let (status, _, body) = self
            .send(
                Kind::SessionCreate,
                self.request(reqwest::Method::POST, "/session"),
            )
            .await?;
        let body: Value = serde_json::from_slice(&body).ok()?;
        (status == 201).then(|| body["session_id"].as_str().map(str::to_owned))?
    }

    /// A chat turn; `(session_id, message_id)` when it was answered in full.
    async fn chat(
        &self,
        question: &str,
        session: Option<&str>,
        streamed: bool,
    ) -> Option<(String, i64)> {
        let mut body = json!({"query": question, "stream": streamed});
        if let Some(session) = session {
            body["session_id"] = json!(session);
        }
        let kind = if streamed {
            Kind::ChatStream
        } else {
            Kind::ChatJson
        };
        let (status, _, bytes) = self
            .send(
                kind,
                self.request(reqwest::Method::POST, "/chat").json(&body),
            )
            .await?;
        if status != 200 {
            return None;
        }
        if !streamed {
            let answer: Value = serde_json::from_slice(&bytes).ok()?;
            return Some((
                answer["session_id"].as_str()?.to_owned(),
                answer["message_id"].as_i64()?,
            ));
        }
        let events = parse_sse(&bytes);
        let done = events.iter().find(|(name, _)| name == "done");
        match done {
            Some((_, data)) => Some((
                data["session_id"].as_str()?.to_owned(),
                data["message_id"].as_i64()?,
            )),
            None => {
                let mut stats = self.phase.stats.lock().unwrap();
                if stats.unexpected.len() < 1000 {
                    stats
                        .unexpected
                        .push(format!("ChatStream 200 without done: {:?}", events.last()));
                }
                None
            }
        }
    }

    /// Reads the session back and checks it holds the turns this client saw answered.
    async fn read_session(&self, record: &SessionRecord) {
        let Some((status, _, body)) = self
            .send(
                Kind::SessionGet,
                self.request(reqwest::Method::GET, &format!("/session/{}", record.id)),
            )
            .await
        else {
            return;
        };
        let Ok(session) = serde_json::from_slice::<Value>(&body) else {
            return;
        };
        let held = session["messages"].as_array().map_or(0, Vec::len) as u64;
        if status == 200 && held != 2 * record.acknowledged_turns {
            let mut stats = self.phase.stats.lock().unwrap();
            stats.unexpected.push(format!(
                "GET /session read {held} messages after {} answered turns",
                record.acknowledged_turns
            ));
        }
    }

    async fn feedback(&self, session: &str, message_id: i64) -> bool {
        let path = format!("/session/{session}/messages/{message_id}/feedback");
        let builder = self
            .request(reqwest::Method::POST, &path)
            .json(&json!({"rating": "up", "reason": "load run"}));
        matches!(self.send(Kind::Feedback, builder).await, Some((204, _, _)))
    }

    async fn delete_session(&self, session: &str) -> bool {
        let builder = self.request(reqwest::Method::DELETE, &format!("/session/{session}"));
        matches!(
            self.send(Kind::SessionDelete, builder).await,
            Some((204, _, _))
        )
    }

    async fn health(&self, kind: Kind) -> Option<u16> {
        let (status, headers, body) = self
            .send(kind, self.request(reqwest::Method::GET, "/health"))
            .await?;
        if status == 429 {
            let body: Value = serde_json::from_slice(&body).unwrap_or_default();
            if headers.contains_key("retry-after") && body["error"]["code"] == "rate_limited" {
                self.phase.stats.lock().unwrap().greedy_429_well_formed += 1;
            }
        }
        Some(status)
    }
}

/// `(event name, JSON data)` of every event in an SSE body.
fn parse_sse(body: &[u8]) -> Vec<(String, Value)> {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut name = "message".to_owned();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = value.trim().to_owned();
                } else if let Some(value) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            (name, serde_json::from_str(&data).unwrap_or(Value::Null))
        })
        .collect()
}

/// One client that asks for `/health` back to back from four connections under one address:
/// it spends its rate-limit budget and must then get 429 with `Retry-After`.
async fn greedy_client(phase: Arc<Phase>) {
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let phase = phase.clone();
            tokio::spawn(async move {
                let c = Conn {
                    client: reqwest::Client::builder()
                        .timeout(REQUEST_TIMEOUT)
                        .build()
                        .expect("a plain HTTP client"),
                    forwarded: "192.0.2.1".to_owned(),
                    phase: phase.clone(),
                };
                while phase.running() {
                    if c.health(Kind::GreedyHealth).await == Some(429) {
                        // Spend the limit, not the machine: the refused part is not measured.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
}

/// Established TCP connections whose local end is `port` on loopback (the runner's side of
/// each client connection), from `/proc/net/tcp`.
fn established_to(port: u16) -> u64 {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return 0;
    };
    let local_suffix = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            // sl, local_address, rem_address, st, ...
            let fields: Vec<&str> = line.split_whitespace().take(4).collect();
            fields.len() == 4 && fields[1].ends_with(&local_suffix) && fields[3] == "01"
        })
        .count() as u64
}

/// The runner's memory as it samples it: (VmRSS kB, VmHWM kB).
fn memory_kb(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

/// Runs the mix against `base` for `seconds`; returns the stats.
async fn run_mix(base: &str, args: &Args, seconds: u64, connections: usize) -> (Stats, Duration) {
    let phase = Arc::new(Phase {
        base: base.to_owned(),
        deadline: Instant::now() + Duration::from_secs(seconds),
        started: AtomicU64::new(0),
        max_requests: args.max_requests,
        stats: Mutex::new(Stats::default()),
        stopped: AtomicBool::new(false),
        pace: Duration::from_secs_f64(1.0 / args.client_rate),
    });
    let started = Instant::now();
    let mut tasks: Vec<_> = (0..connections)
        .map(|i| tokio::spawn(virtual_client(i, phase.clone())))
        .collect();
    tasks.push(tokio::spawn(greedy_client(phase.clone())));
    // In-flight requests end within their own timeout after the deadline.
    let hard_stop = Duration::from_secs(seconds) + REQUEST_TIMEOUT + Duration::from_secs(5);
    for task in tasks {
        let left = hard_stop.saturating_sub(started.elapsed());
        if tokio::time::timeout(left, task).await.is_err() {
            phase.stopped.store(true, Ordering::Relaxed);
            phase
                .stats
                .lock()
                .unwrap()
                .transport_errors
                .push("a client was still busy past the deadline".to_owned());
        }
    }
    let elapsed = started.elapsed();
    let stats = std::mem::take(&mut *phase.stats.lock().unwrap());
    (stats, elapsed)
}

/// Prints the phase's table and returns the failed checks.
fn report(name: &str, stats: &Stats, elapsed: Duration) -> Vec<String> {
    let mut failures = Vec::new();
    let total: u64 = stats.statuses.values().sum();
    println!(
        "\n== {name}: {total} requests in {:.1} s ({:.0}/s)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "{:<14} {:>8}  {:<28} {:>10} {:>10}",
        "kind", "requests", "statuses", "p50 ms", "p99 ms"
    );
    let mut kinds: Vec<Kind> = stats.statuses.keys().map(|(k, _)| *k).collect();
    kinds.dedup();
    for kind in kinds {
        let by_status: Vec<String> = stats
            .statuses
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, status), n)| {
                if *status == 0 {
                    format!("transport:{n}")
                } else {
                    format!("{status}:{n}")
                }
            })
            .collect();
        let count: u64 = stats
            .statuses
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|(_, n)| n)
            .sum();
        let mut latencies = stats.latencies.get(&kind).cloned().unwrap_or_default();
        latencies.sort_unstable();
        println!(
            "{:<14} {:>8}  {:<28} {:>10.1} {:>10.1}",
            format!("{kind:?}"),
            count,
            by_status.join(" "),
            percentile(&latencies, 50.0),
            percentile(&latencies, 99.0)
        );
    }
    println!("transport errors: {}", stats.transport_errors.len());
    for error in stats.transport_errors.iter().take(10) {
        println!("  {error}");
    }
    if !stats.transport_errors.is_empty() {
        failures.push(format!(
            "{name}: {} transport errors",
            stats.transport_errors.len()
        ));
    }
    println!("unexpected statuses: {}", stats.unexpected.len());
    for unexpected in stats.unexpected.iter().take(10) {
        println!("  {unexpected}");
    }
    if !stats.unexpected.is_empty() {
        failures.push(format!(
            "{name}: {} unexpected answers",
            stats.unexpected.len()
        ));
    }
    let greedy_429 = stats
        .statuses
        .get(&(Kind::GreedyHealth, 429))
        .copied()
        .unwrap_or(0);
    let paced_429: u64 = stats
        .statuses
        .iter()
        .filter(|((k, s), _)| *k != Kind::GreedyHealth && *s == 429)
        .map(|(_, n)| n)
        .sum();
    println!(
        "429: {paced_429} to paced clients (expected 0), {greedy_429} to the greedy client ({} with Retry-After and rate_limited)",
        stats.greedy_429_well_formed
    );
    // The limiter must also not be lax: the greedy address gets at most its burst plus the
    // per-second refill over the phase (with one second of slack for timing).
    let greedy_200 = stats
        .statuses
        .get(&(Kind::GreedyHealth, 200))
        .copied()
        .unwrap_or(0);
    let allowed = RATE_LIMIT_BURST + RATE_LIMIT_PER_SECOND * (elapsed.as_secs() + 1);
    println!("greedy client: {greedy_200} answered, at most {allowed} allowed by the limit");
    if greedy_200 > allowed {
        failures.push(format!(
            "{name}: the greedy client got {greedy_200} answers, the limit allows {allowed}"
        ));
    }
    if greedy_429 == 0 || stats.greedy_429_well_formed != greedy_429 {
        failures.push(format!(
            "{name}: the greedy client got {greedy_429} 429s, {} well-formed",
            stats.greedy_429_well_formed
        ));
    }
    let chats: u64 = stats.sessions.iter().map(|s| s.acknowledged_turns).sum();
    println!(
        "sessions: {} ({} deleted), {chats} answered turns, {} ratings",
        stats.sessions.len(),
        stats.sessions.iter().filter(|s| s.deleted).count(),
        stats.sessions.iter().map(|s| s.feedback).sum::<u64>()
    );
    if chats == 0 {
        failures.push(format!("{name}: no chat was answered"));
    }
    failures
}

/// PostgreSQL's admin connection, or why there is none.
async fn connect_admin(admin_url: &str) -> Result<tokio_postgres::Client, String> {
    let connecting = tokio_postgres::connect(admin_url, tokio_postgres::NoTls);
    let (admin, connection) = tokio::time::timeout(Duration::from_secs(5), connecting)
        .await
        .map_err(|_| format!("no answer from {} within 5 s", redact(admin_url)))?
        .map_err(|e| format!("cannot connect to {}: {e}", redact(admin_url)))?;
    tokio::spawn(connection);
    Ok(admin)
}

/// The run's own PostgreSQL database; dropped by [`drop_database`].
async fn create_database(
    admin: tokio_postgres::Client,
    admin_url: &str,
) -> (tokio_postgres::Client, String, String) {
    let name = format!(
        "load_{}_{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
    );
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| fail_now(&format!("cannot create database {name}: {e}")));
    // The same server and credentials, another database; no TLS on loopback.
    let (prefix, _) = admin_url
        .rsplit_once('/')
        .unwrap_or_else(|| fail_now("the PostgreSQL URL has no database part"));
    let url = format!("{prefix}/{name}?sslmode=disable");
    (admin, name, url)
}

async fn drop_database(admin: &tokio_postgres::Client, name: &str) {
    if let Err(error) = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
    {
        eprintln!("load: could not drop database {name}: {error}");
    }
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Counts each session's rows in PostgreSQL and compares them with what the clients saw.
async fn check_postgres(db_url: &str, stats: &Stats) -> Vec<String> {
    let mut failures = Vec::new();
    let (db, connection) = match tokio_postgres::connect(db_url, tokio_postgres::NoTls).await {
        Ok(pair) => pair,
        Err(error) => return vec![format!("cannot read the run's database: {error}")],
    };
    tokio::spawn(connection);
    let ids: Vec<String> = stats.sessions.iter().map(|s| s.id.clone()).collect();
    // Sessions are stored under the SHA-256 digest of their id.
    let rows = db
        .query(
            "SELECT s.id, \
                (SELECT count(*) FROM sessions WHERE id = d.digest), \
                (SELECT count(*) FROM messages WHERE session_id = d.digest AND role = 'user' AND status = 'complete'), \
                (SELECT count(*) FROM messages WHERE session_id = d.digest AND role = 'assistant' AND status = 'complete'), \
                (SELECT count(*) FROM messages WHERE session_id = d.digest), \
                (SELECT count(*) FROM feedback f JOIN messages m ON m.id = f.message_id WHERE m.session_id = d.digest) \
             FROM unnest($1::text[]) AS s(id), \
                LATERAL (SELECT encode(sha256(convert_to(s.id, 'UTF8')), 'hex') AS digest) d",
            &[&ids],
        )
        .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => return vec![format!("cannot count the stored turns: {error}")],
    };
    let by_id: HashMap<String, [i64; 5]> = rows
        .iter()
        .map(|row| {
            (
                row.get::<_, String>(0),
                [row.get(1), row.get(2), row.get(3), row.get(4), row.get(5)],
            )
        })
        .collect();
    let mut mismatched = Vec::new();
    let (mut kept, mut turns_expected, mut rows_found) = (0u64, 0u64, 0i64);
    for session in &stats.sessions {
        let [sessions, users, answers, all, ratings] = by_id[&session.id];
        let turns = session.acknowledged_turns as i64;
        let ok = if session.deleted {
            sessions == 0 && all == 0
        } else {
            kept += 1;
            turns_expected += 2 * session.acknowledged_turns;
            rows_found += all;
            sessions == 1
                && users == turns
                && answers == turns
                && all == 2 * turns
                && ratings == session.feedback as i64
        };
        if !ok {
            mismatched.push(format!(
                "session {}…: deleted {}, {turns} answered turns, {} ratings seen; stored: {sessions} session rows, {users} questions, {answers} complete answers, {all} messages, {ratings} ratings",
                &session.id[..6.min(session.id.len())],
                session.deleted,
                session.feedback
            ));
        }
    }
    let total_sessions: i64 = db
        .query_one("SELECT count(*) FROM sessions", &[])
        .await
        .map(|row| row.get(0))
        .unwrap_or(-1);
    println!(
        "postgres: {kept} kept sessions, {turns_expected} messages expected (2 per answered turn), {rows_found} found; {} sessions stored in all; {} sessions differ",
        total_sessions,
        mismatched.len()
    );
    for line in mismatched.iter().take(10) {
        println!("  {line}");
    }
    if !mismatched.is_empty() {
        failures.push(format!(
            "{} sessions differ from what the clients saw",
            mismatched.len()
        ));
    }
    if total_sessions != kept as i64 {
        failures.push(format!(
            "{total_sessions} sessions stored, the clients kept {kept}"
        ));
    }
    failures
}

/// Samples a value every `period` until `stop` is set; returns every sample.
fn sampler<T: Send + 'static>(
    period: Duration,
    stop: Arc<AtomicBool>,
    sample: impl Fn() -> Option<T> + Send + 'static,
) -> std::thread::JoinHandle<Vec<T>> {
    std::thread::spawn(move || {
        let mut samples = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Some(value) = sample() {
                samples.push(value);
            }
            std::thread::sleep(period);
        }
        if let Some(value) = sample() {
            samples.push(value);
        }
        samples
    })
}

fn runner_command(args: &Args, data_dir: &Path, port: u16, connections: usize) -> Command {
    let mut command = Command::new(&args.host_bin);
    let log = std::fs::File::create(data_dir.join("runner.log"))
        .unwrap_or_else(|e| fail_now(&format!("cannot write the runner log: {e}")));
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SPIN_MANIFEST", args.workspace.join("spin.toml"))
        .env("DOCS_DIR", docs_dir(args))
        .env("PORT", port.to_string())
        .env("BIND_ADDR", "127.0.0.1")
        .env("DATA_DIR", data_dir)
        .env(
            "COMPILE_CACHE_DIR",
            // Shared with the tests: keyed by wasmtime version and wasm hash.
            args.workspace.join("target/test-compile-cache"),
        )
        // Every virtual client may have a request in flight: no 503 server_busy.
        .env(
            "MAX_CONCURRENT_REQUESTS",
            (connections + 64).max(256).to_string(),
        )
        // The load tool is the proxy in front; each virtual client has its own address.
        .env("TRUSTED_PROXIES", "127.0.0.1")
        // 10 requests/s per client after a burst of 50: paced clients (at most --client-rate,
        // below 10/s) never run out, the greedy client does within its first second.
        .env(
            "RATE_LIMIT_PER_MINUTE",
            (RATE_LIMIT_PER_SECOND * 60).to_string(),
        )
        .env("RATE_LIMIT_BURST", RATE_LIMIT_BURST.to_string())
        .env("CHAT_RATE_LIMIT_PER_MINUTE", "0")
        .env("SESSION_WRITE_RATE_LIMIT_PER_MINUTE", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log);
    // Whether streamed answers are relayed by the runner, when the load's caller chose.
    if let Ok(relay) = std::env::var("STREAM_RELAY") {
        command.env("STREAM_RELAY", relay);
    }
    command
}

async fn wait_healthy(base: &str, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Ok(response) = reqwest::get(format!("{base}/health")).await {
            if response.status() == 200 {
                return;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            fail_now(&format!("the runner exited with {status}:\n{log}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fail_now("the runner did not answer /health within 120 s");
}

/// Phase 1: PostgreSQL and the doubles.
async fn postgres_phase(args: &Args, admin: tokio_postgres::Client) -> Vec<String> {
    let mut failures = Vec::new();
    let data_dir = temp_dir("pg");
    let (admin, db_name, db_url) = create_database(admin, &args.postgres_url).await;
    println!("postgres: database {db_name} created for the run");

    let mut doubles = spawn(
        Command::new(&args.doubles_bin)
            .args([
                "--embed-ms",
                &args.embed_ms.to_string(),
                "--search-ms",
                &args.search_ms.to_string(),
                "--rerank-ms",
                &args.rerank_ms.to_string(),
                "--chat-ms",
                &args.chat_ms.to_string(),
                "--first-token-ms",
                &args.first_token_ms.to_string(),
                "--token-ms",
                &args.token_ms.to_string(),
            ])
            .stdout(Stdio::piped()),
    );
    let mut line = String::new();
    BufReader::new(doubles.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .unwrap_or_else(|e| fail_now(&format!("serve-doubles: {e}")));
    let doubles_url = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| fail_now(&format!("serve-doubles printed {line:?}")))
        .to_owned();
    println!(
        "doubles: {doubles_url} (embed {} ms, search {} ms, rerank {} ms, model {} ms, first token {} ms, then {} ms per token)",
        args.embed_ms, args.search_ms, args.rerank_ms, args.chat_ms, args.first_token_ms, args.token_ms
    );

    let upstreams = [
        ("COHERE_API_KEY", "load-cohere-key".to_owned()),
        ("COHERE_BASE_URL", doubles_url.clone()),
        ("COHERE_RERANK_MODEL", "rerank-v3.5".to_owned()),
        // The rerank double scores by word overlap, which is low for long passages.
        ("RERANK_MIN_RELEVANCE", "0.01".to_owned()),
        ("QDRANT_URL", doubles_url.clone()),
        ("QDRANT_COLLECTION", "book".to_owned()),
        ("OPENAI_API_KEY", "load-openai-key".to_owned()),
        ("OPENAI_BASE_URL", format!("{doubles_url}/v1")),
    ];
    let ingested = Command::new(&args.host_bin)
        .args(["ingest", "--target", "qdrant", "--json"])
        .arg(docs_dir(args))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SPIN_MANIFEST", args.workspace.join("spin.toml"))
        .env("DATA_DIR", &data_dir)
        .envs(upstreams.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| fail_now(&format!("host ingest: {e}")));
    if !ingested.status.success() {
        fail_now(&format!(
            "host ingest failed: {}",
            String::from_utf8_lossy(&ingested.stderr)
        ));
    }
    println!(
        "ingest: {}",
        String::from_utf8_lossy(&ingested.stdout).trim()
    );

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut runner = spawn(
        runner_command(args, &data_dir, port, args.connections)
            .env("DATABASE_URL", &db_url)
            .envs(upstreams.iter().map(|(k, v)| (*k, v.as_str()))),
    );
    wait_healthy(&base, &mut runner, &data_dir.join("runner.log")).await;
    let pid = runner.id();
    let (rss_at_start, _) = memory_kb(pid).unwrap_or_default();

    let sampling = Arc::new(AtomicBool::new(false));
    let memory = sampler(Duration::from_secs(1), sampling.clone(), move || {
        memory_kb(pid).map(|(rss, hwm)| (rss, hwm, established_to(port)))
    });
    println!(
        "load: {} clients for {} s against {base} (PostgreSQL sessions)",
        args.connections, args.seconds
    );
    let (stats, elapsed) = run_mix(&base, args, args.seconds, args.connections).await;
    sampling.store(true, Ordering::Relaxed);
    let samples = memory.join().unwrap_or_default();
    failures.extend(report("postgres phase", &stats, elapsed));
    failures.extend(check_postgres(&db_url, &stats).await);

    let max_rss = samples.iter().map(|(rss, _, _)| *rss).max().unwrap_or(0);
    let (end_rss, hwm, _) = samples.last().copied().unwrap_or_default();
    let connections = samples.iter().map(|(_, _, open)| *open).max().unwrap_or(0);
    println!("open connections to the runner: at most {connections} (sampled 1/s)");
    let every_10_s: Vec<String> = samples
        .iter()
        .step_by(10)
        .map(|(rss, _, _)| format!("{}", rss / 1024))
        .collect();
    println!("runner VmRSS every 10 s, MiB: {}", every_10_s.join(" "));
    println!(
        "runner memory: VmRSS {} MiB at start, max {} MiB, {} MiB at the end; VmHWM {} MiB ({} samples, 1/s); limit {} MiB",
        rss_at_start / 1024,
        max_rss / 1024,
        end_rss / 1024,
        hwm / 1024,
        samples.len(),
        args.rss_limit_mb
    );
    if hwm.max(max_rss) / 1024 > args.rss_limit_mb {
        failures.push(format!(
            "runner memory {} MiB above the {} MiB limit",
            hwm.max(max_rss) / 1024,
            args.rss_limit_mb
        ));
    }
    stop_and_check(&mut runner, &data_dir, &mut failures);
    stop(&mut doubles, Duration::from_secs(2));
    drop_database(&admin, &db_name).await;
    keep_on_failure(&data_dir, &failures);
    failures
}

/// SIGTERM; the runner must leave with success within its grace time.
fn stop_and_check(runner: &mut Child, data_dir: &Path, failures: &mut Vec<String>) {
    match stop(runner, Duration::from_secs(35)) {
        Some(status) if status.success() => {}
        other => failures.push(format!(
            "the runner did not stop cleanly on SIGTERM: {other:?}"
        )),
    }
    let log = std::fs::read_to_string(data_dir.join("runner.log")).unwrap_or_default();
    let panics = log.lines().filter(|l| l.contains("panicked")).count();
    if panics > 0 {
        failures.push(format!("the runner log holds {panics} panics"));
    }
}

/// Phase 2: keyless, embedded SQLite.
async fn sqlite_phase(args: &Args) -> Vec<String> {
    let mut failures = Vec::new();
    let data_dir = temp_dir("sqlite");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let connections = args.sqlite_connections.unwrap_or(args.connections);
    let mut runner = spawn(&mut runner_command(args, &data_dir, port, connections));
    wait_healthy(&base, &mut runner, &data_dir.join("runner.log")).await;

    let wal = data_dir.join("default.db-wal");
    let stop_flag = Arc::new(AtomicBool::new(false));
    let wal_sizes = sampler(Duration::from_millis(50), stop_flag.clone(), move || {
        Some(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0))
    });
    println!(
        "\nload: {connections} clients for {} s against {base} (keyless, SQLite in DATA_DIR)",
        args.sqlite_seconds
    );
    let (stats, elapsed) = run_mix(&base, args, args.sqlite_seconds, connections).await;
    stop_flag.store(true, Ordering::Relaxed);
    let sizes = wal_sizes.join().unwrap_or_default();
    failures.extend(report("sqlite phase", &stats, elapsed));
    let max_wal = sizes.iter().copied().max().unwrap_or(0);
    let limit = args.wal_limit_mb * 1024 * 1024;
    println!(
        "sqlite: default.db-wal max {:.2} MiB over {} samples (every 50 ms); the runner checkpoints past {} MiB; limit {} MiB",
        max_wal as f64 / 1048576.0,
        sizes.len(),
        WAL_PROMISE_BYTES / 1048576,
        args.wal_limit_mb
    );
    if max_wal > limit {
        failures.push(format!(
            "default.db-wal reached {max_wal} bytes, above {limit}"
        ));
    }
    stop_and_check(&mut runner, &data_dir, &mut failures);
    keep_on_failure(&data_dir, &failures);
    failures
}

/// Removes a phase's folder, unless a check failed: then its runner log is kept for reading.
fn keep_on_failure(data_dir: &Path, failures: &[String]) {
    if failures.is_empty() {
        let _ = std::fs::remove_dir_all(data_dir);
    } else {
        println!("runner log kept: {}", data_dir.join("runner.log").display());
    }
}

fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("load-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| fail_now(&format!("cannot create {}: {e}", dir.display())));
    dir
}

fn main() {
    let args = Args::parse();
    if args.connections == 0 || args.client_rate <= 0.0 || args.client_rate >= 10.0 {
        fail_now("--connections must be positive and --client-rate between 0 and 10 (the per-client limit is 10/s)");
    }
    let budget = Duration::from_secs(args.seconds + args.sqlite_seconds)
        + 2 * REQUEST_TIMEOUT
        + Duration::from_secs(240);
    std::thread::spawn(move || {
        std::thread::sleep(budget);
        fail_now(&format!(
            "watchdog: the run overran {} s; children killed",
            budget.as_secs()
        ));
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let started = Instant::now();
    let failures = runtime.block_on(async {
        // As the tests: without PostgreSQL its phase is skipped, saying so, unless
        // TEST_REQUIRE_POSTGRES is set (CI), where that is a failure.
        let mut failures = match connect_admin(&args.postgres_url).await {
            Ok(admin) => postgres_phase(&args, admin).await,
            Err(reason) if std::env::var_os("TEST_REQUIRE_POSTGRES").is_none() => {
                println!("load: skipping the PostgreSQL phase: {reason}");
                Vec::new()
            }
            Err(reason) => vec![format!("PostgreSQL is required: {reason}")],
        };
        if args.sqlite_seconds > 0 {
            failures.extend(sqlite_phase(&args).await);
        }
        failures
    });
    kill_children();
    println!("\nrun took {:.1} s", started.elapsed().as_secs_f64());
    if failures.is_empty() {
        println!("load: all checks passed");
    } else {
        println!("load: {} checks FAILED:", failures.len());
        for failure in &failures {
            println!("  {failure}");
        }
        std::process::exit(1);
    }
}
