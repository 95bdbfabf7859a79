//! The runner binary (`host serve`) as its own process on a free loopback port, serving the
//! project's manifest, with its log in a file (an unread pipe would fill up and stall it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Runner {
    pub child: Child,
    pub port: u16,
    /// `http://127.0.0.1:PORT` followed by `BASE_PATH` when `env` sets one.
    pub base: String,
    pub log: PathBuf,
}

impl Runner {
    /// Starts `host serve` on `data_dir` with application `variables` (by lower-case name) and
    /// per-client rate limits off, and waits until `/health` answers.
    pub async fn start(data_dir: &Path, variables: &[(&str, String)]) -> Runner {
        Self::start_with_env(data_dir, variables, &[]).await
    }

    /// As [`Runner::start`], with runner settings `env` on top (later entries win).
    pub async fn start_with_env(
        data_dir: &Path,
        variables: &[(&str, String)],
        env: &[(&str, &str)],
    ) -> Runner {
        Self::start_wrapped(&[], data_dir, variables, env).await
    }

    /// As [`Runner::start_with_env`], with `host serve` run by `wrapper` (a program and its
    /// arguments, which must end by executing the command appended to them), so that the
    /// runner's process id is the wrapper's.
    pub async fn start_wrapped(
        wrapper: &[&str],
        data_dir: &Path,
        variables: &[(&str, String)],
        env: &[(&str, &str)],
    ) -> Runner {
        let port = super::free_port();
        let log = data_dir.join(format!("runner-{port}.log"));
        let host = env!("CARGO_BIN_EXE_host");
        let mut command = match wrapper {
            [] => Command::new(host),
            [program, arguments @ ..] => {
                let mut command = Command::new(program);
                command.args(arguments).arg(host);
                command
            }
        };
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SPIN_MANIFEST", super::workspace().join("spin.toml"))
            .env("PORT", port.to_string())
            .env("BIND_ADDR", "127.0.0.1")
            .env("DATA_DIR", data_dir)
            .env(
                "COMPILE_CACHE_DIR",
                super::workspace().join("target/test-compile-cache"),
            )
            .env("MAX_CONCURRENT_REQUESTS", "256")
            .env("RATE_LIMIT_PER_MINUTE", "0")
            .env("CHAT_RATE_LIMIT_PER_MINUTE", "0")
            .env("SESSION_WRITE_RATE_LIMIT_PER_MINUTE", "0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (name, value) in env {
            command.env(name, value);
        }
        for (name, value) in variables {
            command.env(
                format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()),
                value,
            );
        }
        let base_path = env
            .iter()
            .rev()
            .find(|(name, _)| *name == "BASE_PATH")
            .map_or("", |(_, path)| path);
        let mut runner = Runner {
            child: command.spawn().unwrap(),
            port,
            base: format!("http://127.0.0.1:{port}{base_path}"),
            log,
        };
        runner.wait_ready().await;
        runner
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(response) = reqwest::get(self.url("/health")).await {
                if response.status() == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the runner exited with {status}: {}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the runner did not become ready: {}", self.log_text());
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM: the runner drains and exits on its own.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGKILL: no shutdown code runs, nothing is flushed or checkpointed.
    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "{status}"
        );
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
