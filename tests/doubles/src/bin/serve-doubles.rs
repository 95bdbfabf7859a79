//! The upstream doubles (Cohere v2, Qdrant, OpenAI chat completions) as a process of their
//! own, at fixed latencies, for load runs and benchmarks. Prints `listening http://ADDR` once
//! bound and serves until killed (SIGINT or SIGTERM).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use upstream_doubles::{Doubles, Endpoint};

/// Serves the Cohere, Qdrant and OpenAI doubles on one loopback port.
///
/// Point the runner at them with COHERE_BASE_URL=URL, QDRANT_URL=URL and
/// OPENAI_BASE_URL=URL/v1 (any non-empty keys). Qdrant starts empty: fill it with
/// `host ingest` (COHERE_API_KEY and QDRANT_URL set to the doubles). Latencies are waited
/// before each answer; a streamed chat answer then paces its tokens with --first-token-ms and
/// --token-ms.
#[derive(Parser, Debug)]
#[command(name = "serve-doubles", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port. Loopback only.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Latency of Cohere POST /v2/embed, in milliseconds.
    #[arg(long, default_value_t = 0)]
    embed_ms: u64,
    /// Latency of Qdrant's points query (POST /collections/{name}/points/query), in ms.
    #[arg(long, default_value_t = 0)]
    search_ms: u64,
    /// Latency of Cohere POST /v2/rerank, in milliseconds.
    #[arg(long, default_value_t = 0)]
    rerank_ms: u64,
    /// Latency of POST /v1/chat/completions before its answer (JSON) or its response
    /// headers (stream), in milliseconds.
    #[arg(long, default_value_t = 0)]
    chat_ms: u64,
    /// Streamed chat: first content token this many ms after the headers.
    #[arg(long, default_value_t = 0)]
    first_token_ms: u64,
    /// Streamed chat: each further content token this many ms after the one before.
    #[arg(long, default_value_t = 0)]
    token_ms: u64,
    /// Chat answers of this many words (one streamed token each) instead of the answer derived
    /// from the prompt; 0 keeps the derived one.
    #[arg(long, default_value_t = 0)]
    answer_words: usize,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        eprintln!(
            "serve-doubles: refusing to listen on {}: loopback addresses only",
            args.listen
        );
        std::process::exit(2);
    }
    let doubles = match Doubles::start_on(args.listen).await {
        Ok(doubles) => doubles,
        Err(error) => {
            eprintln!("serve-doubles: cannot listen on {}: {error}", args.listen);
            std::process::exit(1);
        }
    };
    let ms = Duration::from_millis;
    for (endpoint, latency) in [
        (Endpoint::CohereEmbed, args.embed_ms),
        (Endpoint::QdrantQuery, args.search_ms),
        (Endpoint::CohereRerank, args.rerank_ms),
        (Endpoint::OpenAiChat, args.chat_ms),
    ] {
        if latency > 0 {
            doubles.set_latency(endpoint, ms(latency));
        }
    }
    if args.first_token_ms > 0 || args.token_ms > 0 {
        doubles.set_stream_pacing(ms(args.first_token_ms), ms(args.token_ms));
    }
    if args.answer_words > 0 {
        doubles.set_chat_answer_of_words(args.answer_words);
    }
    println!("listening {}", doubles.base_url());
    wait_for_signal().await;
    drop(doubles);
}

async fn wait_for_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
