//! Where a guest call runs, on the real runtime and the real test guest: a component that
//! opted into instance reuse (stateless) has its call polled by the request's own future, so
//! a client that leaves before the answer ends the call with it; every other component's call
//! runs in a task of its own and goes on to its end (a chat whose client left still stores
//! its turn).

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{start, start_with_manifest, wasm, workspace, Options, Server};

fn manifest() -> String {
    let manifest = format!(
        r#"spin_manifest_version = 2
[application]
name = "inline-call-test"
[[trigger.http]]
route = "/fresh/..."
component = "fresh"
[[trigger.http]]
route = "/reused/..."
component = "reused"
[component.fresh]
source = "{guest}"
[component.reused]
source = "{guest}"
[component.reused.tool.runner]
reuse_instances = 1000
"#,
        guest = wasm("test_guest").display(),
    );
    manifest
}

async fn server() -> (Server, tempfile::TempDir) {
    start_with_manifest(&manifest(), &[]).await
}

/// Sends `path` and gives up (closing the connection) after 200 ms.
async fn leave_early(server: &Server, path: &str) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let sent = client
        .get(format!("{}{path}", server.base_url))
        .send()
        .await;
    assert!(sent.is_err(), "{path} answered within 200 ms: {sent:?}");
}

/// Waits up to `within` for no request to hold a permit; returns how long that took.
async fn until_no_request_in_flight(server: &Server, within: Duration) -> Duration {
    let started = Instant::now();
    while server.runtime.in_flight() != 0 {
        assert!(
            started.elapsed() < within,
            "{} requests still in flight after {within:?}",
            server.runtime.in_flight()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

async fn get(server: &Server, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("{}{path}", server.base_url))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_ends_an_inline_call_and_frees_its_permit_and_instance() {
    let (server, _dir) = server().await;
    assert_eq!(get(&server, "/reused/count").await, (200, "1".into()));
    // The guest would sleep 5 s; the client leaves after 200 ms and the call is dropped with
    // the request, so the permit and the instance's pool slot come back at once.
    leave_early(&server, "/reused/slow?ms=5000").await;
    until_no_request_in_flight(&server, Duration::from_secs(1)).await;
    // The instance that was cut short is not kept; the one idle before it was taken by the
    // request that left, so nothing is idle and the next request starts a fresh instance.
    assert_eq!(server.runtime.idle_instances("reused"), 0);
    assert_eq!(get(&server, "/reused/count").await, (200, "1".into()));
    assert_eq!(get(&server, "/reused/ok").await, (200, "ok".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_does_not_cut_short_a_component_without_reuse() {
    let (server, _dir) = server().await;
    leave_early(&server, "/fresh/slow?ms=1500").await;
    // The call runs on in its own task, holding its permit, until the guest is done.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.runtime.in_flight(), 1);
    let waited = until_no_request_in_flight(&server, Duration::from_secs(5)).await;
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    assert_eq!(get(&server, "/fresh/ok").await, (200, "ok".into()));
}

/// A stateless component's call that is still running when it sends its head goes on in a task
/// of its own and streams the body to the end, then releases its instance and permit. No
/// stateless component of the app streams, so the chat component (keyless, over the sample
/// book) stands in for one, opted into reuse in this test's copy of spin.toml. (Whether its
/// instance is then kept is `give_back`'s call; the chat's is not.)
#[tokio::test(flavor = "multi_thread")]
async fn an_inline_call_that_streams_runs_on_after_the_head_and_ends_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let project = std::fs::read_to_string(workspace().join("spin.toml")).unwrap();
    let target = workspace().join("target");
    let manifest = project
        .replace(
            "source = \"target/",
            &format!("source = \"{}/", target.display()),
        )
        .replace(
            "[component.chat.tool.runner]\n",
            "[component.chat.tool.runner]\nreuse_instances = 1000\n",
        );
    assert!(manifest.contains("reuse_instances = 1000"));
    let path = dir.path().join("spin.toml");
    std::fs::write(&path, manifest).unwrap();
    let server = start(Options {
        manifest: Some(path),
        data_dir: Some(support::data_dir_with_book_index().await),
        ..Options::default()
    })
    .await;
    for _ in 0..2 {
        let response = reqwest::Client::new()
            .post(format!("{}/chat", server.base_url))
            .json(&json!({"query": "Which ROS 2 command lists topics?", "stream": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = response.text().await.unwrap();
        assert!(body.starts_with("event: sources"), "{body}");
        assert!(body.contains("event: delta"), "{body}");
        assert!(body.contains("event: done"), "{body}");
        until_no_request_in_flight(&server, Duration::from_secs(2)).await;
    }
}
