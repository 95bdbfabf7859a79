//! Opt-in instance reuse (`[component.<id>.tool.runner] reuse_instances = N`), on the real
//! runtime and the real built components: the test guest twice (once without the opt-in,
//! once with a limit of 3) and the real health component opted in. The guest counts, in a
//! static, the requests its instance has served and says so in `x-served`, so which instance
//! served a request is observable from outside.

mod support;

use std::time::{Duration, Instant};

use support::{start_with_manifest, wasm, Server};

/// Requests one instance of the reusing guest may serve.
const LIMIT: u32 = 3;

fn manifest() -> String {
    let guest = wasm("test_guest");
    let health = wasm("health");
    let manifest = format!(
        r#"spin_manifest_version = 2
[application]
name = "instance-reuse-test"
[variables]
allowed_origins = {{ default = "https://docs.example" }}
[[trigger.http]]
route = "/fresh/..."
component = "fresh"
[[trigger.http]]
route = "/reused/..."
component = "reused"
[[trigger.http]]
route = "/health/..."
component = "health"
[component.fresh]
source = "{guest}"
[component.reused]
source = "{guest}"
[component.reused.tool.runner]
reuse_instances = {LIMIT}
[component.health]
source = "{health}"
sqlite_databases = ["default"]
[component.health.variables]
allowed_origins = "{{{{ allowed_origins }}}}"
[component.health.tool.runner]
reuse_instances = 1000
"#,
        guest = guest.display(),
        health = health.display(),
    );
    manifest
}

async fn server(args: &[&str]) -> (Server, tempfile::TempDir) {
    start_with_manifest(&manifest(), args).await
}

/// The instance's count of requests served, from `x-served`, and the status.
async fn get(server: &Server, path: &str) -> (u16, u32) {
    let response = reqwest::get(format!("{}{path}", server.base_url))
        .await
        .unwrap();
    let served = response
        .headers()
        .get("x-served")
        .map(|v| v.to_str().unwrap().parse().unwrap())
        .unwrap_or(0);
    (response.status().as_u16(), served)
}

/// Waits until `component` has `n` idle instances: an instance goes back to the idle set
/// just after its response ended, which a client may see first.
async fn until_idle(server: &Server, component: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.runtime.idle_instances(component) != n {
        assert!(
            Instant::now() < deadline,
            "{component}: {} idle instances, expected {n}",
            server.runtime.idle_instances(component)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Sends `path` to the reusing guest once the single instance is idle again, so that the
/// request is the one to take it.
async fn get_reused(server: &Server, path: &str) -> (u16, u32) {
    until_idle(server, "reused", 1).await;
    get(server, path).await
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_opt_in_every_request_gets_a_fresh_instance() {
    let (server, _dir) = server(&[]).await;
    for _ in 0..5 {
        assert_eq!(get(&server, "/fresh/count").await, (200, 1));
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(server.runtime.idle_instances("fresh"), 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_opted_in_instance_serves_up_to_its_limit_then_a_fresh_one_takes_over() {
    let (server, _dir) = server(&[]).await;
    assert_eq!(get(&server, "/reused/count").await, (200, 1));
    let mut seen = vec![1];
    for _ in 0..(2 * LIMIT - 1) {
        // After its last request the instance is dropped, so nothing is idle then.
        if seen.last() == Some(&LIMIT) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(server.runtime.idle_instances("reused"), 0);
            seen.push(get(&server, "/reused/count").await.1);
        } else {
            seen.push(get_reused(&server, "/reused/count").await.1);
        }
    }
    assert_eq!(seen, [1, 2, 3, 1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_in_a_reused_instance_discards_it() {
    let (server, _dir) = server(&[]).await;
    assert_eq!(get(&server, "/reused/count").await, (200, 1));
    assert_eq!(get_reused(&server, "/reused/trap").await.0, 500);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(server.runtime.idle_instances("reused"), 0);
    // The next request gets a fresh instance, which answers correctly.
    assert_eq!(get(&server, "/reused/count").await, (200, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deadline_in_a_reused_instance_discards_it() {
    let (server, _dir) = server(&["--request-timeout-secs", "1"]).await;
    assert_eq!(get(&server, "/reused/count").await, (200, 1));
    // Computes without end: interrupted at the epoch deadline.
    assert_eq!(get_reused(&server, "/reused/loop").await.0, 504);
    assert_eq!(get(&server, "/reused/count").await, (200, 1));
    // Waits past the request deadline: the runner gives up on it.
    assert_eq!(get_reused(&server, "/reused/slow?ms=3000").await.0, 504);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server.runtime.idle_instances("reused"), 0);
    assert_eq!(get(&server, "/reused/count").await, (200, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_that_keeps_a_resource_or_grows_its_memory_is_not_reused() {
    let (server, _dir) = server(&[]).await;
    // Keeps a host resource (a `fields`) past its request: the resource table is not empty.
    assert_eq!(get(&server, "/reused/keep").await, (200, 1));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(server.runtime.idle_instances("reused"), 0);
    assert_eq!(get(&server, "/reused/count").await, (200, 1));
    // A little growth is fine: the instance serves on to its limit.
    assert_eq!(get_reused(&server, "/reused/grow?mb=1").await, (200, 2));
    assert_eq!(get_reused(&server, "/reused/count").await, (200, 3));
    assert_eq!(get(&server, "/reused/count").await, (200, 1));
    // More than the bound (`instance_reuse::MAX_MEMORY_GROWTH`, 4 MiB) is not.
    assert_eq!(get_reused(&server, "/reused/grow?mb=8").await, (200, 2));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(server.runtime.idle_instances("reused"), 0);
    assert_eq!(get(&server, "/reused/count").await, (200, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_each_get_their_own_instance() {
    let (server, _dir) = server(&[]).await;
    assert_eq!(get(&server, "/reused/count").await, (200, 1));
    until_idle(&server, "reused", 1).await;
    let client = reqwest::Client::new();
    let requests = (0..8).map(|_| {
        let client = client.clone();
        let url = format!("{}/reused/slow?ms=300", server.base_url);
        async move {
            let response = client.get(url).send().await.unwrap();
            let served: u32 = response.headers()["x-served"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            (response.status().as_u16(), served)
        }
    });
    let mut served = futures::future::join_all(requests).await;
    served.sort();
    // One request took the idle instance (its second request); the seven others ran at the
    // same time in instances of their own. Two requests in one instance would count 3.
    let mut expected = vec![(200u16, 1u32); 7];
    expected.push((200, 2));
    assert_eq!(served, expected);
    // Afterwards the idle set holds no more than its capacity.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let idle = server.runtime.idle_instances("reused");
    assert!((1..=8).contains(&idle), "{idle}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_health_component_answers_each_request_for_itself_under_reuse() {
    let (server, _dir) = server(&[]).await;
    let client = reqwest::Client::new();
    let health = |origin: Option<&'static str>| {
        let mut request = client.get(format!("{}/health", server.base_url));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        async move {
            let response = request.send().await.unwrap();
            let allowed = response
                .headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: serde_json::Value = response.json().await.unwrap();
            (body, allowed)
        }
    };
    let (body, allowed) = health(Some("https://docs.example")).await;
    assert_eq!(body["status"], "ok");
    assert_eq!(allowed.as_deref(), Some("https://docs.example"));
    // The same instance next: the first request's origin must not be allowed on these.
    for origin in [None, Some("https://elsewhere.example"), None] {
        until_idle(&server, "health", 1).await;
        let (body, allowed) = health(origin).await;
        assert_eq!(body["status"], "ok");
        assert_eq!(allowed, None, "origin {origin:?}");
    }
    until_idle(&server, "health", 1).await;
    let (_, allowed) = health(Some("https://docs.example")).await;
    assert_eq!(allowed.as_deref(), Some("https://docs.example"));
}
