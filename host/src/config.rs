//! Runner settings. Host-only knobs (limits, deadlines, paths) never go into spin.toml, which
//! Spin validates strictly; they come from flags or environment variables, as Spin's own
//! runtime configuration does.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct RuntimeSettings {
    /// The application manifest.
    #[arg(long, env = "SPIN_MANIFEST", default_value = "spin.toml")]
    pub manifest: PathBuf,

    /// Where embedded SQLite databases live (`default` -> DATA_DIR/default.db). Use /data on
    /// Hugging Face Spaces with persistent storage.
    #[arg(long, env = "DATA_DIR", default_value = ".data")]
    pub data_dir: PathBuf,

    /// Where compiled components are cached between restarts (default: DATA_DIR/cache).
    #[arg(long, env = "COMPILE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Linear memory cap per request, in MiB.
    #[arg(long, env = "MEMORY_LIMIT_MB", default_value_t = 128)]
    pub memory_limit_mb: u64,

    /// Wall-clock budget for a request until its response starts, and the CPU deadline of the
    /// guest (epoch interruption), in seconds.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 60)]
    pub request_timeout_secs: u64,

    /// Longest a streamed response may run, in seconds.
    #[arg(long, env = "STREAM_TIMEOUT_SECS", default_value_t = 300)]
    pub stream_timeout_secs: u64,

    /// Instances that may run at once; requests beyond it get 503.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 256)]
    pub max_concurrent_requests: u32,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Connect timeout of outbound HTTP and PostgreSQL, in seconds.
    #[arg(long, env = "OUTBOUND_CONNECT_TIMEOUT_SECS", default_value_t = 10)]
    pub connect_timeout_secs: u64,

    /// Time to the first response byte of an outbound request, in seconds.
    #[arg(long, env = "OUTBOUND_TIMEOUT_SECS", default_value_t = 120)]
    pub outbound_timeout_secs: u64,

    /// PostgreSQL statement timeout, in seconds.
    #[arg(long, env = "PG_STATEMENT_TIMEOUT_SECS", default_value_t = 15)]
    pub pg_statement_timeout_secs: u64,

    /// Pooled PostgreSQL connections per database.
    #[arg(long, env = "PG_POOL_SIZE", default_value_t = 16)]
    pub pg_pool_size: usize,
}

impl RuntimeSettings {
    pub fn memory_limit_bytes(&self) -> usize {
        (self.memory_limit_mb as usize).saturating_mul(1024 * 1024)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn stream_timeout(&self) -> Duration {
        Duration::from_secs(self.stream_timeout_secs)
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("cache"))
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

    /// Origins allowed by CORS, comma-separated; `*` allows any and must be set explicitly.
    #[arg(long, env = "ALLOWED_ORIGINS", default_value = "")]
    pub allowed_origins: String,

    /// Serve everything under this path prefix (e.g. `/api` behind a reverse proxy).
    #[arg(long, env = "BASE_PATH", default_value = "")]
    pub base_path: String,

    /// Requests per minute allowed from one client address (X-Forwarded-For behind a proxy,
    /// else the peer); 0 turns rate limiting off.
    #[arg(long, env = "RATE_LIMIT_PER_MINUTE", default_value_t = 120)]
    pub rate_limit_per_minute: u32,

    /// Requests a client may send at once before the per-minute rate applies.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 30)]
    pub rate_limit_burst: u32,

    /// How long in-flight requests may finish after SIGTERM, in seconds.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
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

    pub fn origins(&self) -> Vec<String> {
        self.allowed_origins
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect()
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
