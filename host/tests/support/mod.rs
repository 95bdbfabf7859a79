//! Runs the real runner in-process on an ephemeral port, over the real built `.wasm` files.
#![allow(dead_code)]

pub mod logs;
pub mod postgres;
pub mod runner;
pub mod slow_model;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use host::config::settings_from_args;
use host::manifest::App;
use host::runtime::Runtime;
use host::variables::AppVariables;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A built component; the README's test command builds them before the tests run.
pub fn wasm(name: &str) -> PathBuf {
    let path = workspace().join(format!("target/wasm32-wasip2/release/{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the components first (scripts/build-components)",
        path.display()
    );
    path
}

pub struct Server {
    pub base_url: String,
    pub data_dir: tempfile::TempDir,
    pub runtime: Arc<Runtime>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Stops serving and hands back the data folder, to start another runner on the same data.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.task.abort();
        let _ = (&mut self.task).await;
        std::mem::replace(&mut self.data_dir, tempfile::tempdir().unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Default)]
pub struct Options<'a> {
    /// spin.toml to load (default: the project's own).
    pub manifest: Option<PathBuf>,
    /// Application variables by lower-case name; nothing else is read from the environment.
    pub variables: &'a [(&'a str, &'a str)],
    /// Extra runner flags, e.g. `["--request-timeout-secs", "2"]`.
    pub args: &'a [&'a str],
    /// Reuse a data folder (to test restarts).
    pub data_dir: Option<tempfile::TempDir>,
}

/// Starts the runner on a manifest written from `manifest` into a folder of its own, which is
/// handed back with the server (it must outlive it).
#[allow(dead_code)]
pub async fn start_with_manifest(manifest: &str, args: &[&str]) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spin.toml");
    std::fs::write(&path, manifest).unwrap();
    let server = start(Options {
        manifest: Some(path),
        args,
        ..Options::default()
    })
    .await;
    (server, dir)
}

pub async fn start(options: Options<'_>) -> Server {
    let manifest = options
        .manifest
        .unwrap_or_else(|| workspace().join("spin.toml"));
    let data_dir = options
        .data_dir
        .unwrap_or_else(|| tempfile::tempdir().unwrap());
    let app = App::load(&manifest).unwrap();
    for component in app.manifest.component.values() {
        let name = Path::new(&component.source)
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        wasm(&name);
    }
    let vars: HashMap<String, String> = options
        .variables
        .iter()
        .map(|(k, v)| (k.to_ascii_uppercase(), v.to_string()))
        .collect();
    let variables = AppVariables::resolve(&app.manifest, |key| vars.get(key).cloned()).unwrap();
    let data = data_dir.path().to_str().unwrap().to_string();
    let cache = workspace().join("target/test-compile-cache");
    let mut args = vec![
        "--manifest",
        manifest.to_str().unwrap(),
        "--data-dir",
        &data,
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    if !options.args.contains(&"--max-concurrent-requests") {
        args.extend_from_slice(&["--max-concurrent-requests", "64"]);
    }
    // One test client sends every request; the chat and session-write budgets are tested
    // through the runner binary (tests/runner.rs).
    for budget in [
        "--chat-rate-limit-per-minute",
        "--session-write-rate-limit-per-minute",
    ] {
        if !options.args.contains(&budget) {
            args.extend_from_slice(&[budget, "0"]);
        }
    }
    args.extend_from_slice(options.args);
    let (runtime_settings, server_settings) = settings_from_args(&args);
    let runtime = Arc::new(
        tokio::task::spawn_blocking(move || Runtime::load(runtime_settings, variables, app))
            .await
            .unwrap()
            .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let serving = runtime.clone();
    let task = tokio::spawn(async move {
        host::server::serve_on(listener, serving, &server_settings)
            .await
            .unwrap();
    });
    Server {
        base_url,
        data_dir,
        runtime,
        task,
    }
}

const BOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../book/docs");

/// A data folder whose embedded index holds the sample book, written by the real ingester as
/// it is published under a `baseUrl` (`https://example.github.io/physical-ai-book/`).
pub async fn data_dir_with_book_index() -> tempfile::TempDir {
    let data_dir = tempfile::tempdir().unwrap();
    let mut options = host::ingest::Options::new(BOOK, data_dir.path());
    options.target = host::ingest::Target::Sqlite;
    options.site = rag_core::docs::SiteConfig {
        site_url: "https://example.github.io".to_owned(),
        base_url: "/physical-ai-book/".to_owned(),
        ..rag_core::docs::SiteConfig::default()
    };
    let settings = rag_core::config::Settings::from_lookup(|_| None).unwrap();
    let report = host::ingest::ingest(&options, &settings).await.unwrap();
    assert!(
        report.summary.chunks > 0,
        "sample book missing under {BOOK}"
    );
    data_dir
}

/// A loopback port nothing listens on right now, for a runner started as its own process.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
