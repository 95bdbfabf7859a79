//! The runner: serves the components declared in spin.toml with wasmtime and axum.
//!
//! One module per host capability or concern, named for what it provides.

pub mod check;
pub mod client_address;
pub mod config;
pub mod connections;
pub mod engine;
pub mod errors;
pub mod eval;
pub mod ingest;
pub mod instance_reuse;
pub mod manifest;
pub mod metrics;
pub mod outbound_address;
pub mod outbound_http;
pub mod postgres;
pub mod rate_limit;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod sqlite;
pub mod state;
pub mod stdio;
pub mod stream_relay;
pub mod variables;
pub mod websocket;

/// Host-side bindings of the Spin interfaces in `wit/`.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ai-book-rag:host/spin-capabilities",
        imports: { default: async | trappable },
        with: {
            "spin:postgres/postgres.connection": crate::postgres::Connection,
            "spin:sqlite/sqlite.connection": crate::sqlite::Connection,
        },
    });
}

/// Logs to stderr, as JSON lines when `LOG_FORMAT=json`; `RUST_LOG` filters (default `info`).
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
