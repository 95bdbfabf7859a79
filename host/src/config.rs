//! Runner settings. Host-only knobs (limits, deadlines, paths) never go into spin.toml, which
//! Spin validates strictly; they come from flags or environment variables, as Spin's own
//! runtime configuration does.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// The one parser of boolean settings, for flags and environment variables alike, in every
/// subcommand: `1`, `true`, `yes`, `on` and `0`, `false`, `no`, `off`, in any case.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!(
            "{other:?} is not a yes/no value (use 1, true, yes, on or 0, false, no, off)"
        )),
    }
}

/// Production mode, read the same way by `serve` and `check`.
#[derive(Debug, Clone, Args)]
pub struct ProductionMode {
    /// Refuse to run without the services a production deployment needs (PostgreSQL, Qdrant,
    /// Cohere, LLM) instead of falling back to the keyless mode.
    #[arg(
        long = "production",
        env = "APP_ENV_PRODUCTION",
        value_name = "YES|NO",
        value_parser = parse_bool,
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub enabled: bool,
}

/// Where the application is: every subcommand that reads spin.toml or the data folder.
#[derive(Debug, Clone, Args)]
pub struct AppLocation {
    /// The application manifest.
    #[arg(long, env = "SPIN_MANIFEST", default_value = "spin.toml")]
    pub manifest: PathBuf,

    /// Where embedded SQLite databases live (`default` -> DATA_DIR/default.db). Use /data on
    /// Hugging Face Spaces with persistent storage.
    #[arg(long, env = "DATA_DIR", default_value = ".data")]
    pub data_dir: PathBuf,
}

/// Outbound HTTP and PostgreSQL connections (serving and ingestion).
#[derive(Debug, Clone, Args)]
pub struct OutboundSettings {
    /// Connect timeout of outbound HTTP and PostgreSQL, in seconds.
    #[arg(long, env = "OUTBOUND_CONNECT_TIMEOUT_SECS", default_value_t = 10)]
    pub connect_timeout_secs: u64,

    /// Time to the first response byte of an outbound request, in seconds.
    #[arg(long, env = "OUTBOUND_TIMEOUT_SECS", default_value_t = 120)]
    pub outbound_timeout_secs: u64,
}

impl OutboundSettings {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    pub fn first_byte_timeout(&self) -> Duration {
        Duration::from_secs(self.outbound_timeout_secs)
    }
}

/// The wasmtime engine and its compile cache (`serve` and `precompile`): the limits shape the
/// compiled code, so both read them the same way.
#[derive(Debug, Clone, Args)]
pub struct EngineSettings {
    /// Where compiled components are cached between restarts (default: DATA_DIR/cache).
    #[arg(long, env = "COMPILE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Linear memory cap per request, in MiB.
    #[arg(long, env = "MEMORY_LIMIT_MB", default_value_t = 128)]
    pub memory_limit_mb: u64,

    /// Instances that may run at once; requests beyond it get 503.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 256)]
    pub max_concurrent_requests: u32,
}

impl EngineSettings {
    pub fn memory_limit_bytes(&self) -> usize {
        (self.memory_limit_mb as usize).saturating_mul(1024 * 1024)
    }

    pub fn cache_dir(&self, app: &AppLocation) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| app.data_dir.join("cache"))
    }
}

#[derive(Debug, Clone, Args)]
pub struct RuntimeSettings {
    #[command(flatten)]
    pub app: AppLocation,

    #[command(flatten)]
    pub engine: EngineSettings,

    /// Wall-clock budget of a request until its response starts, in seconds; a guest still
    /// computing then is interrupted.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 60)]
    pub request_timeout_secs: u64,

    /// Longest a streamed response may run, in seconds.
    #[arg(long, env = "STREAM_TIMEOUT_SECS", default_value_t = 300)]
    pub stream_timeout_secs: u64,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    #[command(flatten)]
    pub outbound: OutboundSettings,

    /// Fixed answers instead of DNS for outbound HTTP, `name:address,...` (like curl's
    /// `--resolve`); for tests and for pinning an upstream. The public-address rule still
    /// applies to them.
    #[arg(long, env = "OUTBOUND_RESOLVE", default_value = "")]
    pub outbound_resolve: String,

    /// PostgreSQL statement timeout, in seconds.
    #[arg(long, env = "PG_STATEMENT_TIMEOUT_SECS", default_value_t = 15)]
    pub pg_statement_timeout_secs: u64,

    /// Pooled PostgreSQL connections per database.
    #[arg(long, env = "PG_POOL_SIZE", default_value_t = 16)]
    pub pg_pool_size: usize,

    /// Relay the model's tokens of a streamed answer in the runner, for components that opt in
    /// (`tool.runner.relay_streams`); off, they stream by themselves as under `spin up`.
    #[arg(
        long = "stream-relay",
        env = "STREAM_RELAY",
        value_name = "YES|NO",
        value_parser = parse_bool,
        num_args = 0..=1,
        default_value = "true",
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub stream_relay: bool,
}

impl RuntimeSettings {
    pub fn memory_limit_bytes(&self) -> usize {
        self.engine.memory_limit_bytes()
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn stream_timeout(&self) -> Duration {
        Duration::from_secs(self.stream_timeout_secs)
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.engine.cache_dir(&self.app)
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServerSettings {
    /// Port to listen on (Hugging Face Spaces expects 7860).
    #[arg(long, env = "PORT", default_value_t = 7860)]
    pub port: u16,

    /// Address to bind.
    #[arg(long, env = "BIND_ADDR", default_value = "0.0.0.0")]
    pub bind: String,

    /// Serve everything under this path prefix (e.g. `/api` behind a reverse proxy).
    #[arg(long, env = "BASE_PATH", default_value = "")]
    pub base_path: String,

    /// Requests per minute allowed from one client address, counting every request; 0 turns
    /// every per-client limit off (this one and the chat and session-write budgets).
    #[arg(long, env = "RATE_LIMIT_PER_MINUTE", default_value_t = 120)]
    pub rate_limit_per_minute: u32,

    /// Requests a client may send at once before the per-minute rate applies.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 30)]
    pub rate_limit_burst: u32,

    /// `POST /chat` per minute from one client, on top of the general limit; 0 = no own budget.
    #[arg(long, env = "CHAT_RATE_LIMIT_PER_MINUTE", default_value_t = 20)]
    pub chat_rate_limit_per_minute: u32,

    /// Chats a client may send at once before the per-minute chat rate applies.
    #[arg(long, env = "CHAT_RATE_LIMIT_BURST", default_value_t = 10)]
    pub chat_rate_limit_burst: u32,

    /// Session writes (POST, PUT, PATCH, DELETE under /session) per minute from one client,
    /// on top of the general limit; 0 = no own budget.
    #[arg(
        long,
        env = "SESSION_WRITE_RATE_LIMIT_PER_MINUTE",
        default_value_t = 30
    )]
    pub session_write_rate_limit_per_minute: u32,

    /// Session writes a client may send at once before the per-minute rate applies.
    #[arg(long, env = "SESSION_WRITE_RATE_LIMIT_BURST", default_value_t = 10)]
    pub session_write_rate_limit_burst: u32,

    /// Proxies whose X-Forwarded-For is believed: comma-separated addresses or CIDRs (e.g.
    /// `10.0.0.0/8,127.0.0.1`), or a number of proxy hops in front of the runner (e.g. `1`).
    /// Empty: the client is the peer address and X-Forwarded-For is ignored.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,

    /// Bearer token that unlocks `/metrics` on the main port; empty = not served there.
    #[arg(
        long,
        env = "METRICS_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    pub metrics_token: String,

    /// A separate listener for `/metrics` only, e.g. `127.0.0.1:9090`; a non-loopback address
    /// needs METRICS_TOKEN too.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Seconds a connection may take to send a request's line and headers (counted from when
    /// the server starts waiting for them, so a keep-alive connection idle this long is closed
    /// too); a slower client is cut off instead of holding the socket (slowloris).
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_read_timeout_secs: u64,

    /// How long in-flight requests may finish after SIGTERM, in seconds.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// Threads that serve HTTP, each with its own single-threaded async runtime and its own
    /// listener on the port (SO_REUSEPORT), so that a connection stays on one thread: `auto` =
    /// one per core; `0` or `1` = one multi-threaded runtime for every connection.
    #[arg(
        long,
        env = "SERVER_WORKERS",
        default_value = "auto",
        value_parser = parse_server_workers
    )]
    pub server_workers: ServerWorkers,

    #[command(flatten)]
    pub websocket: WebSocketSettings,
}

/// `GET /chat/ws`: keep-alive and per-connection limits.
#[derive(Debug, Clone, Args)]
pub struct WebSocketSettings {
    /// Seconds between the server's pings; a connection whose pong has not come by the next
    /// ping is closed. 0: no pings.
    #[arg(long, env = "WS_PING_INTERVAL_SECS", default_value_t = 20)]
    pub ws_ping_interval_secs: u64,

    /// Seconds a connection may stay without a message from the client while no answer is in
    /// flight; then it is closed (1001). Pongs do not count. 0: no idle timeout.
    #[arg(long, env = "WS_IDLE_TIMEOUT_SECS", default_value_t = 300)]
    pub ws_idle_timeout_secs: u64,

    /// Largest client message, in bytes: a larger one gets a `message_too_large` frame, one
    /// over 16 times this closes the connection (1009).
    #[arg(long, env = "WS_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub ws_max_message_bytes: usize,

    /// Messages one connection may send per minute (asks, cancels, pings, bad frames alike);
    /// beyond it they get `too_many_messages`, and a client that keeps sending is closed
    /// (1008). 0: no limit.
    #[arg(long, env = "WS_MAX_MESSAGES_PER_MINUTE", default_value_t = 60)]
    pub ws_max_messages_per_minute: u32,
}

/// `SERVER_WORKERS`: how many threads serve HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerWorkers {
    /// One per core the process may run on.
    Auto,
    Count(usize),
}

/// More serving threads than this buys nothing on any machine this runs on and only costs a
/// runtime, a listener and a thread each; a larger figure is most likely a typo.
pub const MAX_SERVER_WORKERS: usize = 256;

fn parse_server_workers(value: &str) -> Result<ServerWorkers, String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("auto") {
        return Ok(ServerWorkers::Auto);
    }
    match value.parse::<usize>() {
        Ok(count) if count <= MAX_SERVER_WORKERS => Ok(ServerWorkers::Count(count)),
        _ => Err(format!(
            "{value:?} is not a number of server workers: use `auto` (one per core), 0 or 1 (one \
             multi-threaded runtime) or up to {MAX_SERVER_WORKERS} threads"
        )),
    }
}

impl ServerWorkers {
    /// Serving threads to start; 1 means one multi-threaded runtime, as `0` does.
    pub fn resolve(self) -> usize {
        match self {
            ServerWorkers::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()),
            ServerWorkers::Count(count) => count.max(1),
        }
    }
}

impl ServerSettings {
    /// `BASE_PATH` normalised to `/prefix` (no trailing slash), or "" for none.
    pub fn base_path(&self) -> String {
        let trimmed = self.base_path.trim().trim_end_matches('/');
        if trimmed.is_empty() {
            String::new()
        } else if trimmed.starts_with('/') {
            trimmed.to_string()
        } else {
            format!("/{trimmed}")
        }
    }
}

/// Settings from command-line style arguments (defaults and environment for the rest); for
/// embedding the runner, e.g. in tests.
pub fn settings_from_args(args: &[&str]) -> (RuntimeSettings, ServerSettings) {
    #[derive(clap::Parser)]
    struct Both {
        #[command(flatten)]
        runtime: RuntimeSettings,
        #[command(flatten)]
        server: ServerSettings,
    }
    let both =
        <Both as clap::Parser>::parse_from(std::iter::once("host").chain(args.iter().copied()));
    (both.runtime, both.server)
}
