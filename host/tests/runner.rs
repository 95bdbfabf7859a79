//! End to end: the real `host` binary, started on an ephemeral port with a test manifest that
//! serves the real health component and a misbehaving test guest.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, workspace};

fn wasm(name: &str) -> String {
    support::wasm(name).to_str().unwrap().to_owned()
}

/// A manifest with the health component and the test guest. The guest may call the runner
/// itself, named (`http://127.0.0.1:<port>`), any host on the runner's port by wildcard, and
/// PostgreSQL at `db.example.com` only.
fn write_manifest(dir: &Path, port: u16, extra_variables: &str) -> PathBuf {
    let manifest = format!(
        r#"spin_manifest_version = 2
[application]
name = "runner-test"
[variables]
service_name = {{ default = "runner-test" }}
database_url = {{ default = "" }}
openai_api_key = {{ default = "" }}
openai_base_url = {{ default = "https://api.openai.com/v1" }}
cohere_api_key = {{ default = "" }}
cohere_base_url = {{ default = "https://api.cohere.com" }}
qdrant_url = {{ default = "" }}
qdrant_api_key = {{ default = "" }}
qdrant_collection = {{ default = "book" }}
allowed_origins = {{ default = "" }}
self_origin = {{ default = "http://127.0.0.1:{port}" }}
{extra_variables}
[[trigger.http]]
route = "/health/..."
component = "health"
[[trigger.http]]
route = "/guest/..."
component = "guest"
[component.health]
source = "{health}"
sqlite_databases = ["default"]
[component.health.variables]
service_name = "{{{{ service_name }}}}"
database_url = "{{{{ database_url }}}}"
openai_api_key = "{{{{ openai_api_key }}}}"
openai_base_url = "{{{{ openai_base_url }}}}"
cohere_api_key = "{{{{ cohere_api_key }}}}"
cohere_base_url = "{{{{ cohere_base_url }}}}"
qdrant_url = "{{{{ qdrant_url }}}}"
qdrant_api_key = "{{{{ qdrant_api_key }}}}"
qdrant_collection = "{{{{ qdrant_collection }}}}"
allowed_origins = "{{{{ allowed_origins }}}}"
[component.guest]
source = "{guest}"
allowed_outbound_hosts = ["{{{{ self_origin }}}}", "http://*:{port}", "postgres://db.example.com"]
"#,
        health = wasm("health"),
        guest = wasm("test_guest"),
    );
    let path = dir.join("spin.toml");
    std::fs::write(&path, manifest).unwrap();
    path
}

struct Runner {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Runner {
    fn start(env: &[(&str, &str)]) -> Runner {
        Self::start_with(env, "")
    }

    fn start_with(env: &[(&str, &str)], extra_variables: &str) -> Runner {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let manifest = write_manifest(dir.path(), port, extra_variables);
        let mut command = Command::new(env!("CARGO_BIN_EXE_host"));
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SPIN_MANIFEST", &manifest)
            .env("PORT", port.to_string())
            .env("BIND_ADDR", "127.0.0.1")
            .env("DATA_DIR", dir.path().join("data"))
            .env(
                "COMPILE_CACHE_DIR",
                workspace().join("target/test-compile-cache"),
            )
            .env("MAX_CONCURRENT_REQUESTS", "16")
            .env("RATE_LIMIT_PER_MINUTE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().unwrap();
        let runner = Runner {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let base_path = env
            .iter()
            .find(|(k, _)| *k == "BASE_PATH")
            .map_or("", |(_, v)| v.trim_end_matches('/'));
        runner.wait_ready(base_path);
        runner
    }

    fn wait_ready(&self, base_path: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(response) = reqwest::blocking_get(&format!("{}{base_path}/health", self.base))
            {
                if response == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the runner did not become ready");
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn terminate(&mut self) -> (i32, String) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        let mut log = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            stderr.read_to_string(&mut log).unwrap();
        }
        (status.code().unwrap_or(-1), log)
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal blocking GET for readiness polling (no async runtime needed).
mod reqwest {
    pub use ::reqwest::*;

    pub fn blocking_get(url: &str) -> std::io::Result<u16> {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").unwrap();
        let (authority, path) = rest
            .split_once('/')
            .map(|(a, p)| (a, format!("/{p}")))
            .unwrap();
        let mut stream = std::net::TcpStream::connect(authority)?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
        )?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        let text = String::from_utf8_lossy(&head);
        Ok(text[9..12].parse().unwrap_or(0))
    }
}

async fn json(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn health_not_found_and_metrics() {
    let runner = Runner::start(&[("METRICS_TOKEN", "scrape-secret")]);
    let (status, body) = json(reqwest::get(runner.url("/health")).await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");

    let (status, body) = json(reqwest::get(runner.url("/no/such/route")).await.unwrap()).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");

    let metrics = reqwest::Client::new()
        .get(runner.url("/metrics"))
        .bearer_auth("scrape-secret")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"http_requests_total{route="/health/...",status="200"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"http_requests_total{route="unmatched",status="404"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("wasm_instantiation_seconds"), "{metrics}");
    assert!(metrics.contains("http_requests_in_flight"), "{metrics}");
}

/// CORS is the components' (the `allowed_origins` variable, read from plain
/// `ALLOWED_ORIGINS`): a preflight is answered 204 by the component, and every answer, errors
/// and the runner's own included, carries the headers for a listed origin only.
#[tokio::test(flavor = "multi_thread")]
async fn cors_allows_listed_origins_only() {
    let runner = Runner::start(&[(
        "ALLOWED_ORIGINS",
        "https://book.example, https://other.example",
    )]);
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, runner.url("/health/ready"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type")
            .send()
    };
    let allowed = preflight("https://book.example").await.unwrap();
    assert_eq!(allowed.status(), 204);
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://book.example"
    );
    assert_eq!(
        headers["access-control-allow-methods"],
        rag_core::cors::ALLOW_METHODS
    );
    assert!(headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("content-type"));
    assert_eq!(headers["access-control-max-age"], "600");
    assert_eq!(headers["vary"], "origin");
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    // Answers and errors of the component, and the runner's own 404, carry the headers.
    for path in ["/health", "/health/nothing", "/no-such-route"] {
        let response = client
            .get(runner.url(path))
            .header("Origin", "https://other.example")
            .send()
            .await
            .unwrap();
        let headers = response.headers();
        assert_eq!(
            headers
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap()),
            Some("https://other.example"),
            "{path}: {headers:?}"
        );
        assert_eq!(
            headers["access-control-expose-headers"],
            "x-request-id, retry-after"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_is_a_500_and_the_next_request_is_fine() {
    let runner = Runner::start(&[]);
    let (status, body) = json(reqwest::get(runner.url("/guest/trap")).await.unwrap()).await;
    assert_eq!(status, 500);
    assert_eq!(body["error"]["code"], "component_failed");
    let ok = reqwest::get(runner.url("/guest/ok")).await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_loop_is_a_504_within_the_deadline() {
    let runner = Runner::start(&[("REQUEST_TIMEOUT_SECS", "2")]);
    let started = Instant::now();
    let (status, body) = json(reqwest::get(runner.url("/guest/loop")).await.unwrap()).await;
    let took = started.elapsed();
    assert_eq!(status, 504);
    assert_eq!(body["error"]["code"], "deadline_exceeded");
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert_eq!(
        reqwest::get(runner.url("/guest/ok"))
            .await
            .unwrap()
            .status(),
        200
    );
}

/// The guest at `path` fails its request with 500 `component_failed`, and the next is served.
async fn fails_its_request_only(runner: &Runner, path: &str) {
    let (status, body) = json(reqwest::get(runner.url(path)).await.unwrap()).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "component_failed");
    assert_eq!(
        reqwest::get(runner.url("/guest/ok"))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_past_the_cap_fails_the_request_only() {
    let runner = Runner::start(&[("MEMORY_LIMIT_MB", "48")]);
    fails_its_request_only(&runner, "/guest/alloc").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resources_past_the_cap_fail_the_request_only() {
    let runner = Runner::start(&[]);
    let cap = host::state::MAX_GUEST_RESOURCES;
    // Well below the cap (the request itself holds a few): served.
    let below = reqwest::get(runner.url(&format!("/guest/hoard-resources?count={}", cap / 2)))
        .await
        .unwrap();
    assert_eq!(below.status(), 200);
    assert_eq!(below.text().await.unwrap(), (cap / 2).to_string());
    // As many as the cap, on top of the request's own: one too many. wasmtime's own default
    // (a million) would have served this.
    fails_its_request_only(&runner, &format!("/guest/hoard-resources?count={cap}")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_requests_follow_the_allow_list() {
    let mut runner = Runner::start(&[]);
    // Allowed: the runner itself (its origin is the guest's only allowed host).
    let target = runner.url("/health");
    let allowed = reqwest::get(runner.url(&format!("/guest/outbound?url={target}")))
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.text().await.unwrap(), "upstream answered 200");

    let refused = reqwest::get(runner.url("/guest/outbound?url=http://example.com/"))
        .await
        .unwrap();
    assert_eq!(refused.status(), 502);
    assert_eq!(refused.text().await.unwrap(), "Refused");

    let (_, log) = runner.terminate();
    assert!(log.contains("outbound request refused"), "{log}");
    assert!(log.contains("http://example.com"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_zero() {
    let mut runner = Runner::start(&[("SHUTDOWN_GRACE_SECS", "10")]);
    let slow = tokio::spawn(reqwest::get(runner.url("/guest/slow?ms=1500")));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (code, log) = tokio::task::spawn_blocking(move || runner.terminate())
        .await
        .unwrap();
    let response = slow.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "done");
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("draining"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_bodies_are_refused_with_413_json() {
    let runner = Runner::start(&[("MAX_BODY_BYTES", "1024")]);
    let response = reqwest::Client::new()
        .post(runner.url("/guest/ok"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    let (status, body) = json(response).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert!(body["error"]["message"].as_str().unwrap().contains("1024"));
}

#[tokio::test(flavor = "multi_thread")]
async fn spin_headers_are_set_as_spin_sets_them() {
    let runner = Runner::start(&[]);
    let text = reqwest::get(runner.url("/guest/a/echo-headers?x=1"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "spin-path-info: /a/echo-headers",
        "spin-matched-route: /guest/...",
        "spin-raw-component-route: /guest/...",
        "spin-component-route: /guest",
        "spin-base-path: /",
        &format!("spin-full-url: {}/guest/a/echo-headers?x=1", runner.base),
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(text.contains("spin-client-addr: 127.0.0.1:"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn base_path_prefixes_every_route() {
    let runner = Runner::start(&[("BASE_PATH", "/api/"), ("METRICS_TOKEN", "scrape-secret")]);
    assert_eq!(
        reqwest::get(runner.url("/api/health"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(runner.url("/api/guest/ok"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::Client::new()
            .get(runner.url("/api/metrics"))
            .bearer_auth("scrape-secret")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(runner.url("/guest/ok"))
            .await
            .unwrap()
            .status(),
        404
    );
    let headers = reqwest::get(runner.url("/api/guest/echo-headers"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(headers.contains("spin-base-path: /api"), "{headers}");
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_beyond_the_concurrency_limit_get_503_json() {
    let runner = Runner::start(&[("MAX_CONCURRENT_REQUESTS", "2")]);
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(reqwest::get(runner.url("/guest/slow?ms=1500"))))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = json(reqwest::get(runner.url("/guest/ok")).await.unwrap()).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "server_busy");
    for request in slow {
        assert_eq!(request.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(
        reqwest::get(runner.url("/guest/ok"))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn missing_required_variables_fail_start_up_with_one_message() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        free_port(),
        "first_secret = { required = true, secret = true }\nsecond_secret = { required = true }",
    );
    let output = Command::new(env!("CARGO_BIN_EXE_host"))
        .arg("serve")
        .env("SPIN_MANIFEST", &manifest)
        .env("DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("FIRST_SECRET, SECOND_SECRET"), "{stderr}");
}

#[test]
fn check_names_settings_but_never_prints_values() {
    let output = Command::new(env!("CARGO_BIN_EXE_host"))
        .arg("check")
        .current_dir(workspace())
        .env("OPENAI_API_KEY", "sk-must-not-appear")
        .env(
            "SPIN_VARIABLE_DATABASE_URL",
            "postgres://user:hunter2@db.example/x",
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("openai_api_key (secret): set from OPENAI_API_KEY"),
        "{stdout}"
    );
    assert!(
        stdout.contains("database_url (secret): set from SPIN_VARIABLE_DATABASE_URL"),
        "{stdout}"
    );
    assert!(stdout.contains("answers = generated"), "{stdout}");
    assert!(
        !stdout.contains("sk-must-not-appear") && !stdout.contains("hunter2"),
        "{stdout}"
    );

    let production = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["check", "--production"])
        .current_dir(workspace())
        .env_remove("QDRANT_URL")
        .output()
        .unwrap();
    assert!(!production.status.success());
    assert!(String::from_utf8_lossy(&production.stderr).contains("QDRANT_URL"));

    let serve = Command::new(env!("CARGO_BIN_EXE_host"))
        .arg("serve")
        .current_dir(workspace())
        .env("APP_ENV_PRODUCTION", "true")
        .env("DATA_DIR", tempfile::tempdir().unwrap().path())
        .env_remove("QDRANT_URL")
        .output()
        .unwrap();
    assert!(
        !serve.status.success(),
        "production serve must not fall back to keyless mode"
    );
    assert!(String::from_utf8_lossy(&serve.stderr).contains("production mode needs"));
}

#[test]
fn a_restart_loads_compiled_components_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let precompile = Command::new(env!("CARGO_BIN_EXE_host"))
        .arg("precompile")
        .current_dir(workspace())
        .env("COMPILE_CACHE_DIR", cache.path())
        .output()
        .unwrap();
    assert!(
        precompile.status.success(),
        "{}",
        String::from_utf8_lossy(&precompile.stderr)
    );
    let entries = std::fs::read_dir(cache.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "cwasm")
        })
        .count();
    let components = host::manifest::App::load(&workspace().join("spin.toml"))
        .unwrap()
        .manifest
        .component
        .len();
    assert_eq!(
        entries, components,
        "one compiled artefact per component in spin.toml"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_output_goes_to_the_log_tagged_with_the_component_as_json() {
    let mut runner = Runner::start(&[("LOG_FORMAT", "json")]);
    assert_eq!(
        reqwest::get(runner.url("/guest/log"))
            .await
            .unwrap()
            .status(),
        200
    );
    let (_, log) = runner.terminate();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    for (stream, text) in [
        ("stdout", "a line on stdout"),
        ("stderr", "a line on stderr"),
    ] {
        assert!(
            events.iter().any(|e| e["component"] == "guest"
                && e["stream"] == stream
                && e["message"] == text),
            "no {stream} event in {log}"
        );
    }
}

#[test]
fn the_project_manifest_is_valid_and_names_built_components() {
    let app = host::manifest::App::load(&workspace().join("spin.toml")).unwrap();
    let manifest = &app.manifest;
    assert_eq!(manifest.spin_manifest_version, 2);
    let routes: Vec<_> = manifest
        .trigger
        .http
        .iter()
        .map(|t| (t.route.as_str(), t.component.as_str()))
        .collect();
    assert_eq!(
        routes,
        [
            ("/health/...", "health"),
            ("/chat", "chat"),
            ("/session/...", "session"),
            ("/openapi.json", "openapi"),
            ("/assets/...", "assets"),
            ("/demo/...", "assets")
        ]
    );
    for (id, component) in &manifest.component {
        let build = component
            .build
            .as_ref()
            .expect("every component says how to build it");
        assert!(
            build.command.contains(&format!("-p {id}")),
            "{id}: {}",
            build.command
        );
        assert_eq!(
            component.source,
            format!("target/wasm32-wasip2/release/{id}.wasm")
        );
        for (name, template) in &component.variables {
            assert_eq!(
                template,
                &format!("{{{{ {name} }}}}"),
                "{id}.{name} maps to its namesake"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_over_the_rate_limit_get_429_json_with_retry_after() {
    // The test client stands in for a proxy at 127.0.0.1 that names each client.
    let runner = Runner::start(&[
        ("RATE_LIMIT_PER_MINUTE", "6"),
        ("RATE_LIMIT_BURST", "3"),
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
    ]);
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..6 {
        let response = client
            .get(runner.url("/guest/ok"))
            .header("x-forwarded-for", "203.0.113.7")
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            limited = Some(response);
        }
    }
    // The readiness poll used up one token of 127.0.0.1, not of this client.
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    let limited = limited.expect("the fourth request onwards is limited");
    assert!(limited.headers().get("retry-after").is_some());
    let (_, body) = json(limited).await;
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another client is not affected.
    let other = client
        .get(runner.url("/guest/ok"))
        .header("x-forwarded-for", "198.51.100.9")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
}

/// A guest that computes without ever awaiting yields at every epoch tick: with more such
/// guests than the runner has tokio workers, `/health` still answers promptly, and each
/// spinning guest is still stopped at its own deadline. Were the workers held, `/health` would
/// wait for the guests' 6 s deadline and hit the client's 2 s timeout; the bound sits well
/// below that and well above what a busy two-core machine adds (one CI run saw a p99 of 107 ms).
#[tokio::test(flavor = "multi_thread")]
async fn spinning_guests_do_not_stall_other_requests() {
    let runner = Runner::start(&[("REQUEST_TIMEOUT_SECS", "6")]);
    // The runner's multi-threaded runtime has one worker per core.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let spinning: Vec<_> = (0..=workers)
        .map(|_| tokio::spawn(reqwest::get(runner.url("/guest/loop"))))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut latencies = Vec::new();
    for _ in 0..100 {
        let started = Instant::now();
        let answered = client.get(runner.url("/health")).send().await;
        latencies.push(started.elapsed());
        if let Ok(response) = answered {
            assert_eq!(response.status(), 200);
        }
    }
    latencies.sort();
    let p99 = latencies[98];
    eprintln!(
        "/health with {} spinning guests on {workers} workers: p50 {:?}, p99 {p99:?}, max {:?}",
        workers + 1,
        latencies[49],
        latencies[99]
    );
    assert!(
        p99 < Duration::from_millis(500),
        "/health p99 {p99:?} with {} spinning guests on {workers} workers; slowest {:?}",
        workers + 1,
        latencies.last().unwrap()
    );

    for request in spinning {
        let (status, body) = json(request.await.unwrap().unwrap()).await;
        assert_eq!(status, 504);
        assert_eq!(body["error"]["code"], "deadline_exceeded");
    }
}

async fn statuses(requests: impl IntoIterator<Item = reqwest::RequestBuilder>) -> Vec<u16> {
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.send().await.unwrap().status().as_u16());
    }
    statuses
}

/// A client that writes a new X-Forwarded-For on every request is still one client when the
/// runner trusts no proxy.
#[tokio::test(flavor = "multi_thread")]
async fn forwarded_for_from_an_untrusted_peer_does_not_dodge_the_limit() {
    let runner = Runner::start(&[("RATE_LIMIT_PER_MINUTE", "120"), ("RATE_LIMIT_BURST", "30")]);
    let client = reqwest::Client::new();
    let statuses = statuses((0..40).map(|i| {
        client
            .get(runner.url("/health"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
    }))
    .await;
    let first_refusal = statuses.iter().position(|s| *s == 429);
    // The readiness poll spent one request of 127.0.0.1's burst of 30; while the 40 requests
    // run, the rate of 2 a second may give back a request or two.
    assert!(
        first_refusal.is_some_and(|at| (29..=32).contains(&at)),
        "{statuses:?}"
    );
}

/// Behind a trusted proxy, each forwarded client has its own budget, and the chat budget is
/// separate from probes: a reader who spent it can still reach /health.
#[tokio::test(flavor = "multi_thread")]
async fn trusted_proxies_give_each_client_its_budget_and_chat_its_own() {
    let runner = Runner::start(&[
        ("RATE_LIMIT_PER_MINUTE", "120"),
        ("RATE_LIMIT_BURST", "30"),
        ("CHAT_RATE_LIMIT_PER_MINUTE", "2"),
        ("CHAT_RATE_LIMIT_BURST", "2"),
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
    ]);
    let client = reqwest::Client::new();
    // 40 clients, one request each: none is limited.
    let statuses_by_client = statuses((0..40).map(|i| {
        client
            .get(runner.url("/health"))
            .header("x-forwarded-for", format!("203.0.113.99, 198.51.100.{i}"))
    }))
    .await;
    assert!(
        statuses_by_client.iter().all(|s| *s == 200),
        "{statuses_by_client:?}"
    );

    let reader = "198.51.100.200";
    // No chat route is served here, so the budget shows as 404 until it is spent.
    let chats = statuses((0..3).map(|_| {
        client
            .post(runner.url("/chat"))
            .header("x-forwarded-for", reader)
            .body("{}")
    }))
    .await;
    assert_eq!(chats, [404, 404, 429]);
    let refused = client
        .post(runner.url("/chat"))
        .header("x-forwarded-for", reader)
        .send()
        .await
        .unwrap();
    assert!(refused.headers().get("retry-after").is_some());
    let (status, body) = json(refused).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(body["error"]["message"].as_str().unwrap().contains("chat"));

    let probes = statuses((0..5).map(|_| {
        client
            .get(runner.url("/health"))
            .header("x-forwarded-for", reader)
    }))
    .await;
    assert_eq!(probes, [200; 5], "the chat budget does not limit /health");
    // Another reader still has a chat budget.
    let other = statuses([client
        .post(runner.url("/chat"))
        .header("x-forwarded-for", "198.51.100.201")])
    .await;
    assert_eq!(other, [404]);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_hostaddr_cannot_bypass_the_allow_list() {
    let runner = Runner::start(&[]);
    // The guest may open postgres://db.example.com only; each address below would reach the
    // local server (127.0.0.1:5432) if it were let through.
    for address in [
        "hostaddr=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable",
        "host=db.example.com hostaddr=127.0.0.1 user=postgres dbname=test sslmode=disable",
        "postgres://postgres@db.example.com,127.0.0.1/test?sslmode=disable",
    ] {
        let encoded = address
            .replace('%', "%25")
            .replace(' ', "%20")
            .replace('=', "%3D")
            .replace('&', "%26")
            .replace('?', "%3F");
        let response = reqwest::get(runner.url(&format!("/guest/pg?address={encoded}")))
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 502, "{address}: {text}");
        assert!(text.contains("not allowed"), "{address}: {text}");
    }
}

/// Wildcard entries reach only public addresses; a name that resolves to the metadata service
/// or to loopback is refused before any connection, and the log names only the origin.
#[tokio::test(flavor = "multi_thread")]
async fn outbound_names_resolving_inward_are_refused_unless_named() {
    let mut runner = Runner::start(&[(
        "OUTBOUND_RESOLVE",
        "metadata.example.com:169.254.169.254,inward.example.com:127.0.0.1",
    )]);
    let port = runner.base.rsplit(':').next().unwrap().to_string();
    for url in [
        format!("http://metadata.example.com:{port}/latest/meta-data?token=secret-query"),
        format!("http://inward.example.com:{port}/health"),
        format!("http://localhost:{port}/health"),
        format!("http://169.254.169.254:{port}/latest"),
    ] {
        let response = reqwest::get(runner.url(&format!("/guest/outbound?url={url}")))
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!((status.as_u16(), text.as_str()), (502, "Refused"), "{url}");
    }
    // The loopback origin the manifest names outright stays reachable.
    let named = reqwest::get(runner.url(&format!(
        "/guest/outbound?url=http://127.0.0.1:{port}/health"
    )))
    .await
    .unwrap();
    assert_eq!(named.text().await.unwrap(), "upstream answered 200");

    let (_, log) = runner.terminate();
    assert!(log.contains("non-public"), "{log}");
    assert!(
        log.contains(&format!("http://metadata.example.com:{port}")),
        "{log}"
    );
    assert!(
        !log.contains("secret-query") && !log.contains("meta-data"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_need_the_token_on_the_main_port() {
    let runner = Runner::start(&[("METRICS_TOKEN", "scrape-secret")]);
    let client = reqwest::Client::new();
    let anonymous = client.get(runner.url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let wrong = client
        .get(runner.url("/metrics"))
        .bearer_auth("scrape-secreT")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = client
        .get(runner.url("/metrics"))
        .bearer_auth("scrape-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert!(right.text().await.unwrap().contains("http_requests_total"));
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_without_a_token_are_served_only_on_the_loopback_listener() {
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let runner = Runner::start(&[("METRICS_ADDR", metrics_addr.as_str())]);
    let main_port = reqwest::get(runner.url("/metrics")).await.unwrap();
    assert_eq!(main_port.status(), 404);
    let separate = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(separate.status(), 200);
    assert!(separate
        .text()
        .await
        .unwrap()
        .contains(r#"route="unmatched",status="404""#));

    let plain = Runner::start(&[]);
    assert_eq!(
        reqwest::get(plain.url("/metrics")).await.unwrap().status(),
        404,
        "without METRICS_TOKEN or METRICS_ADDR there are no metrics"
    );
}

#[test]
fn a_public_metrics_listener_without_a_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_host"))
        .arg("serve")
        .env_clear()
        .env("SPIN_MANIFEST", write_manifest(dir.path(), free_port(), ""))
        .env("DATA_DIR", dir.path().join("data"))
        .env(
            "COMPILE_CACHE_DIR",
            workspace().join("target/test-compile-cache"),
        )
        .env("BIND_ADDR", "127.0.0.1")
        .env("PORT", free_port().to_string())
        .env("METRICS_ADDR", format!("0.0.0.0:{}", free_port()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            serve.kill().unwrap();
            serve.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    serve
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the runner must refuse to start: {stderr}"
    );
    assert!(stderr.contains("METRICS_TOKEN"), "{stderr}");
}

#[test]
fn boolean_settings_read_the_same_in_every_subcommand() {
    for value in ["1", "yes", "TRUE", "on"] {
        let check = Command::new(env!("CARGO_BIN_EXE_host"))
            .arg("check")
            .current_dir(workspace())
            .env("APP_ENV_PRODUCTION", value)
            .env_remove("QDRANT_URL")
            .env_remove("SPIN_VARIABLE_QDRANT_URL")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert!(!check.status.success(), "{value}: {stderr}");
        assert!(
            stderr.contains("production mode needs"),
            "APP_ENV_PRODUCTION={value} means production: {stderr}"
        );
    }
    for value in ["0", "no", "false"] {
        let check = Command::new(env!("CARGO_BIN_EXE_host"))
            .arg("check")
            .current_dir(workspace())
            .env("APP_ENV_PRODUCTION", value)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "APP_ENV_PRODUCTION={value}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let typo = Command::new(env!("CARGO_BIN_EXE_host"))
        .arg("serve")
        .current_dir(workspace())
        .env("APP_ENV_PRODUCTION", "maybe")
        .output()
        .unwrap();
    assert!(!typo.status.success());
    assert!(String::from_utf8_lossy(&typo.stderr).contains("not a yes/no value"));
}

#[test]
fn ingest_help_lists_only_what_ingest_reads() {
    let help = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["ingest", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{text}");
    for used in [
        "--manifest",
        "--data-dir",
        "--dry-run",
        "--outbound-timeout-secs",
    ] {
        assert!(text.contains(used), "ingest reads {used}:\n{text}");
    }
    for unused in [
        "--port",
        "--memory-limit-mb",
        "--request-timeout-secs",
        "--max-concurrent-requests",
        "--rate-limit-per-minute",
        "--pg-pool-size",
        "--production",
    ] {
        assert!(
            !text.contains(unused),
            "ingest does not read {unused}:\n{text}"
        );
    }
}
