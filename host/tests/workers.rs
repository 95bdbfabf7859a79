//! `SERVER_WORKERS`: the real `host` binary serving with several single-threaded workers, each
//! accepting on its own listener of one port (SO_REUSEPORT).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::runner::Runner;
use support::{free_port, workspace};

/// The health component and the test guest (`/guest/slow?ms=N` answers after N ms).
fn write_manifest(dir: &Path) -> PathBuf {
    let manifest = format!(
        r#"spin_manifest_version = 2
[application]
name = "workers-test"
[[trigger.http]]
route = "/health/..."
component = "health"
[[trigger.http]]
route = "/guest/..."
component = "guest"
[component.health]
source = "{health}"
[component.guest]
source = "{guest}"
"#,
        health = support::wasm("health").display(),
        guest = support::wasm("test_guest").display(),
    );
    let path = dir.join("spin.toml");
    std::fs::write(&path, manifest).unwrap();
    path
}

fn command(dir: &Path, port: u16, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_host"));
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SPIN_MANIFEST", write_manifest(dir))
        .env("PORT", port.to_string())
        .env("BIND_ADDR", "127.0.0.1")
        .env("DATA_DIR", dir.join("data"))
        .env(
            "COMPILE_CACHE_DIR",
            workspace().join("target/test-compile-cache"),
        )
        .env("RATE_LIMIT_PER_MINUTE", "0");
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// `host serve` (support's runner) on the manifest above with `env` on top.
async fn start(dir: &Path, env: &[(&str, &str)]) -> Runner {
    let manifest = write_manifest(dir);
    let mut env = env.to_vec();
    env.push(("SPIN_MANIFEST", manifest.to_str().unwrap()));
    Runner::start_with_env(dir, &[], &env).await
}

/// The time each `http-worker-*` thread of `runner` has run, in nanoseconds (the first field
/// of its `schedstat`), by thread name. An idle worker, with no connection and so no timer,
/// sleeps in `epoll_wait` and does not run; one that serves a request does. Its voluntary
/// context switches were counted before, but a worker that finds another connection ready
/// every time it looks never blocks, so it could serve a burst without counting any.
fn worker_run_time(runner: &Runner) -> Vec<(String, u64)> {
    let tasks = format!("/proc/{}/task", runner.child.id());
    let mut workers = Vec::new();
    for task in std::fs::read_dir(tasks).unwrap() {
        let task = task.unwrap().path();
        let Ok(name) = std::fs::read_to_string(task.join("comm")) else {
            continue;
        };
        let name = name.trim().to_owned();
        if !name.starts_with("http-worker-") {
            continue;
        }
        let schedstat = std::fs::read_to_string(task.join("schedstat")).unwrap();
        let run_nanos = schedstat
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        workers.push((name, run_nanos));
    }
    workers.sort();
    workers
}

/// SIGTERM, then the exit code and the log once the runner has stopped.
fn terminate(runner: &mut Runner) -> (i32, String) {
    runner.terminate();
    let status = runner.child.wait().unwrap();
    (status.code().unwrap_or(-1), runner.log_text())
}

/// One HTTP/1.0 GET (so the body is neither chunked nor kept alive) on a connection of its
/// own: status and body.
fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {answer:?}")))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    Ok((status, body))
}

/// Worker names whose run time grew between `before` and `after`.
fn ran(before: &[(String, u64)], after: &[(String, u64)]) -> Vec<String> {
    after
        .iter()
        .filter(|(name, count)| {
            before
                .iter()
                .find(|(other, _)| other == name)
                .is_some_and(|(_, earlier)| count > earlier)
        })
        .map(|(name, _)| name.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_accept_on_one_port_and_both_serve() {
    let dir = tempfile::tempdir().unwrap();
    let runner = start(dir.path(), &[("SERVER_WORKERS", "2")]).await;
    let before = worker_run_time(&runner);
    assert_eq!(
        before
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>(),
        ["http-worker-0", "http-worker-1"],
        "{}",
        runner.log_text()
    );
    // The kernel picks a listener per connection by its address hash: with 64 connections the
    // odds that one listener gets them all are 2^-63.
    let port = runner.port;
    let answers: Vec<_> = (0..64)
        .map(|_| std::thread::spawn(move || get(port, "/health")))
        .collect();
    for answer in answers {
        let (status, body) = answer.join().unwrap().unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"status\""), "{body}");
    }
    let after = worker_run_time(&runner);
    assert_eq!(ran(&before, &after).len(), 2, "{before:?} -> {after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_worker_or_zero_serves_from_one_multi_threaded_runtime() {
    for workers in ["0", "1"] {
        let dir = tempfile::tempdir().unwrap();
        let runner = start(dir.path(), &[("SERVER_WORKERS", workers)]).await;
        assert!(
            worker_run_time(&runner).is_empty(),
            "SERVER_WORKERS={workers}"
        );
        assert_eq!(get(runner.port, "/health").unwrap().0, 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_slow_requests_on_every_worker() {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = start(
        dir.path(),
        &[("SERVER_WORKERS", "2"), ("SHUTDOWN_GRACE_SECS", "10")],
    )
    .await;
    let before = worker_run_time(&runner);
    let port = runner.port;
    // 16 connections: the odds that they all land on one worker are 2^-15.
    let slow: Vec<_> = (0..16)
        .map(|_| std::thread::spawn(move || get(port, "/guest/slow?ms=2000")))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let after = worker_run_time(&runner);
    assert_eq!(
        ran(&before, &after).len(),
        2,
        "each worker holds some: {before:?} -> {after:?}"
    );
    let (code, log) = terminate(&mut runner);
    for answer in slow {
        let (status, body) = answer.join().unwrap().unwrap();
        assert_eq!((status, body.as_str()), (200, "done"), "{log}");
    }
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("draining"), "{log}");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_grace_period_the_workers_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = start(
        dir.path(),
        &[("SERVER_WORKERS", "2"), ("SHUTDOWN_GRACE_SECS", "1")],
    )
    .await;
    let port = runner.port;
    let slow: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || get(port, "/guest/slow?ms=30000")))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let (code, log) = terminate(&mut runner);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "exited after {:?}: {log}",
        started.elapsed()
    );
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("grace period over"), "{log}");
    for answer in slow {
        assert!(answer.join().unwrap().is_err(), "{log}");
    }
}

/// Runs a runner that is expected to refuse to start: its stderr once it exited with an
/// error. One that is still running after 30 s (it started serving) fails the test.
fn refused(mut command: Command) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let mut child = command
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the runner started serving: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{log}");
    log
}

#[tokio::test(flavor = "multi_thread")]
async fn a_port_another_runner_listens_on_is_refused() {
    let first_dir = tempfile::tempdir().unwrap();
    let first = start(first_dir.path(), &[("SERVER_WORKERS", "2")]).await;
    let dir = tempfile::tempdir().unwrap();
    let log = refused(command(dir.path(), first.port, &[("SERVER_WORKERS", "2")]));
    assert!(log.contains("cannot listen on"), "{log}");
}

#[test]
fn server_workers_out_of_bounds_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["257", "-1", "many"] {
        let log = refused(command(dir.path(), free_port(), &[("SERVER_WORKERS", bad)]));
        assert!(log.contains("SERVER_WORKERS"), "{log}");
        assert!(log.contains("up to 256"), "{log}");
    }
}
