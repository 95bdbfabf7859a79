//! Load client of the `bench/` scripts: timings a shell load generator cannot take (time to
//! the first `sources` and `delta` events of a chat stream), the same call sequence sent to the
//! upstream doubles directly (the baseline the chat overhead is measured against), open
//! streams held while the runner's RSS is read, and process start to the first `/health` 200.
//!
//! Every subcommand prints one line per figure as `key value`, for the scripts to pick up.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use rag_core::config::Settings;
use rag_core::prompt::{build_messages, PromptInput};
use rag_core::sse::SseParser;
use rag_core::upstream::cohere::{Cohere, InputType};
use rag_core::upstream::openai::{ChatStream, OpenAi};
use rag_core::upstream::qdrant::{HybridHits, Qdrant};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// POST /chat `requests` times from `concurrency` clients; each chat starts a new session,
    /// or with `--in-session` continues one that a chat before the load started.
    Chat {
        #[arg(long)]
        url: String,
        #[arg(long)]
        in_session: bool,
        #[command(flatten)]
        load: Load,
    },
    /// Starts a session with one chat, then reads it back (`GET /session/{id}?limit=50`, what
    /// the widget does on every page load) `requests` times, one at a time.
    ReadBack(OneAtATime),
    /// Starts a session with one chat, then `requests` times, one at a time: starts a session
    /// (`POST /session`), rates the first chat's answer (`POST .../feedback`) and deletes the
    /// new session (`DELETE /session/{id}`), timing each.
    SessionActions(OneAtATime),
    /// The chat's upstream calls sent straight to the doubles, built by the same core code:
    /// embed, hybrid Qdrant query, chat completion (streamed or not).
    Direct {
        /// Base URL of the doubles (Cohere and Qdrant; OpenAI under /v1).
        #[arg(long)]
        doubles: String,
        #[command(flatten)]
        load: Load,
    },
    /// Opens streamed chats up to each count in `steps`, waits until every one has had its
    /// `sources` event, then prints the RSS of process `pid` (and of its children).
    Hold {
        #[arg(long)]
        url: String,
        #[arg(long)]
        pid: u32,
        #[arg(long, value_delimiter = ',', default_value = "0,100,1000")]
        steps: Vec<usize>,
        #[arg(long, default_value = "What does ZMP stand for?")]
        query: String,
        /// Pause after every 50 streams opened, in ms: streams arrive at 50 per pause, so at
        /// most as many chats are set up at once as arrive while one is set up.
        #[arg(long, default_value_t = 20)]
        pace_ms: u64,
    },
    /// Starts `command` `runs` times; each time measures the time from spawn to the first 200
    /// from `GET http://127.0.0.1:{port}/health`, then stops the process.
    ColdStart {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Give every run a new empty COMPILE_CACHE_DIR under this folder (cold compile).
        #[arg(long)]
        fresh_cache_under: Option<PathBuf>,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// A TCP relay to `to` that delivers every byte `delay_ms` after it arrived, each way: a
    /// link to a database that far away. Prints `listening ADDRESS`, then relays until killed.
    Relay {
        #[arg(long)]
        to: String,
        #[arg(long)]
        delay_ms: u64,
    },
}

/// Requests to `/session`, one at a time, beside a chat URL.
#[derive(clap::Args)]
struct OneAtATime {
    /// The chat URL; sessions are at the same address under `/session`.
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 20)]
    requests: usize,
    /// Requests sent first and not counted.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
}

#[derive(clap::Args, Clone)]
struct Load {
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    #[arg(long, default_value_t = 20)]
    requests: usize,
    /// Stream (SSE) instead of one JSON answer.
    #[arg(long)]
    stream: bool,
    #[arg(long, default_value = "What does ZMP stand for?")]
    query: String,
    /// Requests sent first and not counted.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
}

/// One request's timings, from just before it was sent.
#[derive(Default, Clone, Copy)]
struct Sample {
    head: Duration,
    /// First `sources` event (stream), or the retrieval's end (direct).
    sources: Option<Duration>,
    first_delta: Option<Duration>,
    total: Duration,
    deltas: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Chat {
            url,
            in_session,
            load,
        } => {
            let client = client(load.concurrency)?;
            let session = match in_session {
                true => Some(start_session(&client, &url, &load.query).await?),
                false => None,
            };
            let run = move |query: String, stream: bool| {
                let client = client.clone();
                let url = url.clone();
                let session = session.clone();
                async move { chat_once(&client, &url, &query, session.as_deref(), stream).await }
            };
            report(&load, drive(&load, run).await?);
        }
        Command::ReadBack(run) => read_back(&run.url, run.requests, run.warmup).await?,
        Command::SessionActions(run) => session_actions(&run.url, run.requests, run.warmup).await?,
        Command::Direct { doubles, load } => {
            let client = client(load.concurrency)?;
            let doubles = Arc::new(doubles);
            let run = move |query: String, stream: bool| {
                let client = client.clone();
                let doubles = doubles.clone();
                async move { direct_once(&client, &doubles, &query, stream).await }
            };
            report(&load, drive(&load, run).await?);
        }
        Command::Hold {
            url,
            pid,
            steps,
            query,
            pace_ms,
        } => hold(&url, pid, &steps, &query, Duration::from_millis(pace_ms)).await?,
        Command::ColdStart {
            port,
            runs,
            fresh_cache_under,
            command,
        } => cold_start(port, runs, fresh_cache_under, &command).await?,
        Command::Relay { to, delay_ms } => relay(&to, Duration::from_millis(delay_ms)).await?,
    }
    Ok(())
}

fn client(concurrency: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency.max(1))
        .tcp_nodelay(true)
        .build()?)
}

/// Runs `load.warmup` then `load.requests` requests, `load.concurrency` at a time.
async fn drive<F, Fut>(load: &Load, run: F) -> Result<(Vec<Sample>, Duration)>
where
    F: Fn(String, bool) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Sample>> + Send,
{
    for _ in 0..load.warmup {
        run(load.query.clone(), load.stream).await?;
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..load.concurrency {
        let next = next.clone();
        let run = run.clone();
        let load = load.clone();
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < load.requests {
                samples.push(run(load.query.clone(), load.stream).await?);
            }
            anyhow::Ok(samples)
        }));
    }
    let mut samples = Vec::new();
    for worker in workers {
        samples.extend(worker.await??);
    }
    Ok((samples, started.elapsed()))
}

/// The JSON body of a successful answer to `request`.
async fn json_of(request: reqwest::RequestBuilder) -> Result<serde_json::Value> {
    Ok(request.send().await?.error_for_status()?.json().await?)
}

/// A JSON chat that starts a session; its answer.
async fn first_chat(client: &reqwest::Client, url: &str, query: &str) -> Result<serde_json::Value> {
    json_of(
        client
            .post(url)
            .json(&serde_json::json!({ "query": query })),
    )
    .await
}

/// The id of the session a first chat starts.
async fn start_session(client: &reqwest::Client, url: &str, query: &str) -> Result<String> {
    let answer = first_chat(client, url, query).await?;
    answer["session_id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("POST {url}: no session_id in {answer}"))
}

async fn chat_once(
    client: &reqwest::Client,
    url: &str,
    query: &str,
    session: Option<&str>,
    stream: bool,
) -> Result<Sample> {
    let mut body = serde_json::json!({ "query": query, "stream": stream });
    if let Some(session) = session {
        body["session_id"] = session.into();
    }
    let started = Instant::now();
    let response = client.post(url).json(&body).send().await?;
    let mut sample = Sample {
        head: started.elapsed(),
        ..Sample::default()
    };
    let status = response.status();
    if !status.is_success() {
        bail!("POST {url}: {status}: {}", response.text().await?);
    }
    if !stream {
        let answer: serde_json::Value = response.json().await?;
        sample.total = started.elapsed();
        if answer["answer"].as_str().is_none_or(str::is_empty) {
            bail!("POST {url}: no answer in {answer}");
        }
        return Ok(sample);
    }
    let mut parser = SseParser::new();
    let mut body = response.bytes_stream();
    let mut done = false;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        for event in parser.feed(&chunk) {
            match event.event.as_deref() {
                Some("sources") => sample.sources = Some(started.elapsed()),
                Some("delta") => {
                    sample.first_delta.get_or_insert(started.elapsed());
                    sample.deltas += 1;
                }
                Some("done") => done = true,
                Some("error") => bail!("POST {url}: error event {}", event.data),
                _ => {}
            }
        }
    }
    sample.total = started.elapsed();
    if !done || sample.sources.is_none() {
        bail!("POST {url}: the stream ended without sources or done");
    }
    Ok(sample)
}

fn double_settings(doubles: &str) -> Result<Settings> {
    let doubles = doubles.trim_end_matches('/').to_owned();
    Ok(Settings::from_lookup(|name| match name {
        "cohere_api_key" | "openai_api_key" => Some("bench".to_owned()),
        "cohere_base_url" | "qdrant_url" => Some(doubles.clone()),
        "openai_base_url" => Some(format!("{doubles}/v1")),
        _ => None,
    })?)
}

async fn send(
    client: &reqwest::Client,
    request: http::Request<Vec<u8>>,
) -> Result<reqwest::Response> {
    let (parts, body) = request.into_parts();
    let response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("{}: {}", parts.uri, response.status());
    }
    Ok(response)
}

async fn buffered(response: reqwest::Response) -> Result<http::Response<Vec<u8>>> {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await?.to_vec();
    let mut out = http::Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

async fn direct_once(
    client: &reqwest::Client,
    doubles: &str,
    query: &str,
    stream: bool,
) -> Result<Sample> {
    let settings = double_settings(doubles)?;
    let cohere = Cohere::from_settings(&settings).context("cohere settings")?;
    let qdrant = Qdrant::from_settings(&settings).context("qdrant settings")?;
    let openai = OpenAi::from_settings(&settings).context("openai settings")?;
    let top_k = settings.top_k;
    let started = Instant::now();

    let texts = [query];
    let embedded =
        buffered(send(client, cohere.embed_request(&texts, InputType::SearchQuery)).await?).await?;
    let vector = Cohere::parse_embed_response(&embedded, 1)?.remove(0);
    let sparse = rag_core::keywords::query_sparse_vector(query);
    let limit = rag_core::pipeline::vector_candidates(top_k, false);
    let found = buffered(
        send(
            client,
            qdrant.hybrid_query_request(&vector, &sparse, limit, settings.vector_min_similarity),
        )
        .await?,
    )
    .await?;
    let HybridHits::Hits(mut passages) = Qdrant::parse_hybrid_query_response(&found)? else {
        bail!("the Qdrant double's collection has no keyword vectors");
    };
    passages.truncate(top_k as usize);
    let mut sample = Sample {
        sources: Some(started.elapsed()),
        ..Sample::default()
    };
    let messages = build_messages(&PromptInput {
        question: query,
        passages: &passages,
        selected_text: None,
        history: &[],
    });
    let request = openai.chat_request(&messages, stream, rag_core::pipeline::ANSWER_TEMPERATURE);
    let response = send(client, request).await?;
    sample.head = started.elapsed();
    if !stream {
        let completion = OpenAi::parse_chat_response(&buffered(response).await?)?;
        sample.total = started.elapsed();
        if completion.content.is_empty() {
            bail!("empty completion from the double");
        }
        return Ok(sample);
    }
    let mut parser = ChatStream::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        for piece in parser.feed(&chunk?)? {
            if !piece.delta.is_empty() {
                sample.first_delta.get_or_insert(started.elapsed());
                sample.deltas += 1;
            }
        }
    }
    parser.finish()?;
    sample.total = started.elapsed();
    Ok(sample)
}

fn percentile(values: &mut [Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort();
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn report(load: &Load, (samples, elapsed): (Vec<Sample>, Duration)) {
    println!("requests {}", samples.len());
    println!(
        "req_per_s {:.1}",
        samples.len() as f64 / elapsed.as_secs_f64()
    );
    let mut series: Vec<(&str, Vec<Duration>)> = vec![
        ("total", samples.iter().map(|s| s.total).collect()),
        ("head", samples.iter().map(|s| s.head).collect()),
    ];
    if load.stream {
        series.push((
            "sources",
            samples.iter().filter_map(|s| s.sources).collect(),
        ));
        series.push((
            "first_delta",
            samples.iter().filter_map(|s| s.first_delta).collect(),
        ));
        let deltas: usize = samples.iter().map(|s| s.deltas).sum();
        println!(
            "deltas_per_chat {:.1}",
            deltas as f64 / samples.len().max(1) as f64
        );
    }
    for (name, mut values) in series {
        println!("{name}_p50_ms {}", ms(percentile(&mut values, 50.0)));
        println!("{name}_p99_ms {}", ms(percentile(&mut values, 99.0)));
    }
}

/// `…/session` beside `…/chat`.
fn sessions_url(chat_url: &str) -> Result<String> {
    let base = chat_url
        .strip_suffix("/chat")
        .with_context(|| format!("{chat_url} does not end in /chat"))?;
    Ok(format!("{base}/session"))
}

async fn read_back(chat_url: &str, requests: usize, warmup: usize) -> Result<()> {
    let client = client(1)?;
    let session = start_session(&client, chat_url, "What does ZMP stand for?").await?;
    let url = format!("{}/{session}?limit=50", sessions_url(chat_url)?);
    let mut totals = Vec::with_capacity(requests);
    for n in 0..warmup + requests {
        let started = Instant::now();
        let page = json_of(client.get(&url)).await?;
        if page["messages"].as_array().is_none_or(Vec::is_empty) {
            bail!("GET {url}: no messages in {page}");
        }
        if n >= warmup {
            totals.push(started.elapsed());
        }
    }
    println!("requests {}", totals.len());
    println!("total_p50_ms {}", ms(percentile(&mut totals, 50.0)));
    println!("total_p99_ms {}", ms(percentile(&mut totals, 99.0)));
    Ok(())
}

async fn session_actions(chat_url: &str, requests: usize, warmup: usize) -> Result<()> {
    let client = client(1)?;
    let sessions = sessions_url(chat_url)?;
    let chat = first_chat(&client, chat_url, "What does ZMP stand for?").await?;
    let (Some(rated), Some(answer)) = (chat["session_id"].as_str(), chat["message_id"].as_i64())
    else {
        bail!("POST {chat_url}: no session_id or message_id in {chat}");
    };
    let feedback = format!("{sessions}/{rated}/messages/{answer}/feedback");
    let mut timings: [Vec<Duration>; 3] = Default::default();
    for n in 0..warmup + requests {
        let started = Instant::now();
        let created = json_of(client.post(&sessions)).await?;
        let create = started.elapsed();
        let id = created["session_id"]
            .as_str()
            .with_context(|| format!("POST {sessions}: no session_id in {created}"))?;

        let started = Instant::now();
        let rating = if n % 2 == 0 { "up" } else { "down" };
        client
            .post(&feedback)
            .json(&serde_json::json!({ "rating": rating }))
            .send()
            .await?
            .error_for_status()?;
        let rate = started.elapsed();

        let started = Instant::now();
        client
            .delete(format!("{sessions}/{id}"))
            .send()
            .await?
            .error_for_status()?;
        let delete = started.elapsed();
        if n >= warmup {
            for (series, took) in timings.iter_mut().zip([create, rate, delete]) {
                series.push(took);
            }
        }
    }
    println!("requests {requests}");
    for (name, mut values) in ["create", "rate", "delete"].into_iter().zip(timings) {
        println!("{name}_p50_ms {}", ms(percentile(&mut values, 50.0)));
        println!("{name}_p99_ms {}", ms(percentile(&mut values, 99.0)));
    }
    Ok(())
}

async fn relay(to: &str, delay: Duration) -> Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    loop {
        let (inbound, _) = listener.accept().await?;
        let to = to.to_owned();
        tokio::spawn(async move {
            let Ok(outbound) = tokio::net::TcpStream::connect(&to).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            tokio::join!(
                delayed_copy(in_read, out_write, delay),
                delayed_copy(out_read, in_write, delay)
            );
        });
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read; chunks read meanwhile
/// keep their own deadlines, so the link's latency is added once, not once per chunk.
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let reader = async move {
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(read @ 1..) = from.read(&mut buffer).await {
            let due = tokio::time::Instant::now() + delay;
            if sender.send((due, buffer[..read].to_vec())).is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = receiver.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// Resident set of `pid` plus its descendants, in KiB.
fn rss_kib(pid: u32) -> u64 {
    proc_kib(pid, "status", "VmRSS:")
}

/// The process's thread count (`Threads:` in `/proc/PID/status`).
fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A `kB` field of `/proc/PID/<file>`, summed over the process and its children.
fn proc_kib(pid: u32, file: &str, field: &str) -> u64 {
    let own = std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    let children: u64 = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .map(|child| proc_kib(child, file, field))
        .sum();
    own + children
}

async fn hold(url: &str, pid: u32, steps: &[usize], query: &str, pace: Duration) -> Result<()> {
    let max = steps.iter().copied().max().unwrap_or(0);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let mut open = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<Result<()>>();
    let mut steps = steps.to_vec();
    steps.sort();
    let mut counted = 0;
    for step in steps {
        while open.len() < step.min(max) {
            let client = client.clone();
            let url = url.to_owned();
            let body = serde_json::json!({ "query": query, "stream": true });
            let ready = ready_tx.clone();
            open.push(tokio::spawn(async move {
                let response = match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => r,
                    Ok(r) => {
                        let _ = ready.send(Err(anyhow::anyhow!("status {}", r.status())));
                        return;
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e.into()));
                        return;
                    }
                };
                let mut parser = SseParser::new();
                let mut body = response.bytes_stream();
                let mut told = false;
                while let Some(Ok(chunk)) = body.next().await {
                    for event in parser.feed(&chunk) {
                        if event.event.as_deref() == Some("sources") && !told {
                            told = true;
                            let _ = ready.send(Ok(()));
                        }
                    }
                }
                if !told {
                    let _ = ready.send(Err(anyhow::anyhow!("stream ended before sources")));
                }
            }));
            // Paced, so the runner's accept queue and the doubles do not overflow.
            if open.len() % 50 == 0 {
                tokio::time::sleep(pace).await;
            }
        }
        let mut ready = 0;
        let waiting = open.len() - counted;
        counted = open.len();
        for _ in 0..waiting {
            match tokio::time::timeout(Duration::from_secs(120), ready_rx.recv()).await {
                Ok(Some(Ok(()))) => ready += 1,
                Ok(Some(Err(e))) => bail!("a held stream failed: {e:#}"),
                _ => bail!("timed out waiting for {} streams", waiting - ready),
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let still = open.iter().filter(|t| !t.is_finished()).count();
        if still < open.len() {
            bail!("{} streams ended early", open.len() - still);
        }
        // RSS counts a file page once per mapping: every instance maps its component's data
        // image, so the same page-cache pages count once per open stream. PSS shares them out.
        println!(
            "streams {} rss_kib {} file_kib {} pss_kib {} threads {}",
            open.len(),
            rss_kib(pid),
            proc_kib(pid, "status", "RssFile:"),
            proc_kib(pid, "smaps_rollup", "Pss:"),
            threads(pid)
        );
    }
    for task in open {
        task.abort();
    }
    Ok(())
}

async fn cold_start(
    port: u16,
    runs: usize,
    fresh_cache_under: Option<PathBuf>,
    command: &[String],
) -> Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(1))
        .build()?;
    let url = format!("http://127.0.0.1:{port}/health");
    let mut times = Vec::new();
    for run in 0..runs {
        let mut cmd = tokio::process::Command::new(&command[0]);
        cmd.args(&command[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Some(root) = &fresh_cache_under {
            let dir = root.join(format!("run{run}"));
            let _ = std::fs::remove_dir_all(&dir);
            cmd.env("COMPILE_CACHE_DIR", &dir);
        }
        let started = Instant::now();
        let mut child = cmd.spawn().context("spawn")?;
        loop {
            if let Ok(response) = client.get(&url).send().await {
                if response.status().is_success() {
                    break;
                }
            }
            if let Some(status) = child.try_wait()? {
                bail!("the process exited with {status} before answering");
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("no 200 from {url} within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push(started.elapsed());
        println!(
            "run {run} start_to_health_ms {}",
            ms(*times.last().unwrap())
        );
        if let Some(id) = child.id() {
            // SIGTERM, so the runner drains and exits as it does in production.
            let _ = std::process::Command::new("kill")
                .arg(id.to_string())
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        let _ = child.kill().await;
    }
    let mut sorted = times.clone();
    sorted.sort();
    println!("start_to_health_min_ms {}", ms(sorted[0]));
    println!("start_to_health_median_ms {}", ms(sorted[sorted.len() / 2]));
    println!("start_to_health_max_ms {}", ms(sorted[sorted.len() - 1]));
    Ok(())
}
