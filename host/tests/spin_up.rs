//! `scripts/spin-up`, the way to serve spin.toml with the Spin CLI, run for real against a
//! recording stand-in for `spin` (the CLI itself is not installed where the tests run): the
//! sample book is indexed into the database runtime-config.toml gives Spin, every plain
//! variable name reaches Spin as `SPIN_VARIABLE_<NAME>`, and Spin versions with the PostgreSQL
//! hang are refused when `DATABASE_URL` is set.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

/// Held while this process writes an executable and while it starts one. A child forked by
/// another test thread inherits, until its own exec, every file this process has open for
/// writing; executing such a file then fails with "Text file busy" (ETXTBSY).
static EXECUTABLES: Mutex<()> = Mutex::new(());

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A copy of what the script reads, so that it writes its index into a scratch folder rather
/// than the checkout's own `.data`.
struct Checkout {
    root: tempfile::TempDir,
    bin: PathBuf,
    calls: PathBuf,
}

impl Checkout {
    fn new(spin_version: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let repo = workspace();
        let _writing = EXECUTABLES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        fs::create_dir(root.path().join("scripts")).unwrap();
        for file in ["spin.toml", "runtime-config.toml", "scripts/spin-up"] {
            fs::copy(repo.join(file), root.path().join(file)).unwrap();
        }
        let bin = root.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let calls = root.path().join("spin-calls");
        // Answers `--version` like the real CLI; otherwise records its arguments and the
        // SPIN_VARIABLE_ environment it was given.
        let fake = format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'spin {spin_version} (0123abc 2026-01-01)'; exit 0; fi\n\
             {{ echo \"args $*\"; env | grep '^SPIN_VARIABLE_' | sort; }} > '{}'\n",
            calls.display()
        );
        let spin = bin.join("spin");
        fs::write(&spin, fake).unwrap();
        fs::set_permissions(&spin, fs::Permissions::from_mode(0o755)).unwrap();
        Self { root, bin, calls }
    }

    fn run(&self, env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(self.root.path().join("scripts/spin-up"));
        command
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", self.bin.display()))
            .env("SKIP_BUILD", "1")
            .env("HOST_BIN", env!("CARGO_BIN_EXE_host"))
            .env("DOCS_DIR", workspace().join("book/docs"))
            .env("RUST_LOG", "warn");
        for (name, value) in env {
            command.env(name, value);
        }
        let child = {
            let _starting = EXECUTABLES
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        child.wait_with_output().unwrap()
    }

    /// The recorded call: its arguments and the variables it saw.
    fn call(&self) -> (String, HashMap<String, String>) {
        let text = fs::read_to_string(&self.calls).expect("spin up was not called");
        let mut lines = text.lines();
        let args = lines.next().unwrap().trim_start_matches("args ").to_owned();
        let variables = lines
            .filter_map(|line| line.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        (args, variables)
    }
}

fn manifest_variables() -> Vec<String> {
    let manifest: toml::Table = fs::read_to_string(workspace().join("spin.toml"))
        .unwrap()
        .parse()
        .unwrap();
    manifest["variables"]
        .as_table()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

/// A value of each variable that the runner's own validation (run by the ingest step) accepts
/// and that differs from spin.toml's default.
fn valid_value(name: &str) -> String {
    let manifest: toml::Table = fs::read_to_string(workspace().join("spin.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let default = manifest["variables"][name]
        .get("default")
        .and_then(toml::Value::as_str)
        .unwrap_or_default();
    let host = format!("{}.example", name.replace('_', "-"));
    if name.ends_with("_url") {
        format!("https://{host}")
    } else if name.ends_with("_host") {
        if default.contains(':') {
            format!("{host}:8443")
        } else {
            host
        }
    } else if default.parse::<f64>().is_ok() {
        // The same number written differently still proves the value was passed.
        format!("0{default}")
    } else {
        format!("value-of-{name}")
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn spin_up_serves_the_indexed_book_from_the_runtime_config_database() {
    let checkout = Checkout::new("4.0.2");
    let output = checkout.run(&[]);
    assert!(output.status.success(), "{}", stderr(&output));

    let (args, _) = checkout.call();
    assert_eq!(args, "up --runtime-config-file runtime-config.toml");

    let runtime_config: toml::Table = fs::read_to_string(workspace().join("runtime-config.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let database = &runtime_config["sqlite_database"]["default"];
    assert_eq!(database["type"].as_str(), Some("spin"));
    let path = database["path"].as_str().unwrap();
    // The runner keeps `default` as DATA_DIR/default.db (DATA_DIR defaults to .data), so both
    // hosts share one index.
    let data_dir = checkout.root.path().join(".data");
    let runner_file = host::sqlite::Sqlite::new(&data_dir)
        .unwrap()
        .path_of("default");
    assert_eq!(checkout.root.path().join(path), runner_file);
    let chunks: i64 = rusqlite::Connection::open(&runner_file)
        .unwrap()
        .query_row(rag_core::search_index::COUNT_CHUNKS, [], |row| row.get(0))
        .unwrap();
    assert!(chunks > 10, "the sample book gave only {chunks} chunks");
}

#[test]
fn every_plain_variable_name_reaches_spin_with_its_prefix() {
    let checkout = Checkout::new("4.0.2");
    let variables = manifest_variables();
    let values: Vec<(String, String)> = variables
        .iter()
        .filter(|name| name.as_str() != "database_url")
        .map(|name| (name.to_uppercase(), valid_value(name)))
        .collect();
    let mut env: Vec<(&str, &str)> = values
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    // A value given the Spin way wins over the plain name.
    env.push(("SPIN_VARIABLE_TOP_K", "7"));
    let output = checkout.run(&env);
    assert!(output.status.success(), "{}", stderr(&output));

    let (_, seen) = checkout.call();
    for (name, value) in &values {
        let expected = if name == "TOP_K" { "7" } else { value.as_str() };
        assert_eq!(
            seen.get(&format!("SPIN_VARIABLE_{name}"))
                .map(String::as_str),
            Some(expected),
            "{name}"
        );
    }
}

#[test]
fn postgres_on_a_spin_with_the_empty_result_hang_is_refused_with_the_reason() {
    let database = [("DATABASE_URL", "postgres://app@db.example/app")];

    let old = Checkout::new("4.0.2");
    let output = old.run(&database);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("spinframework/spin/issues/3671"));
    assert!(!old.calls.exists(), "spin up ran anyway");

    let allowed = old.run(&[database[0], ("SPIN_UP_ALLOW_POSTGRES", "1")]);
    assert!(allowed.status.success(), "{}", stderr(&allowed));

    let newer = Checkout::new("4.1.0");
    let output = newer.run(&database);
    assert!(output.status.success(), "{}", stderr(&output));
    let (_, seen) = newer.call();
    assert_eq!(
        seen.get("SPIN_VARIABLE_DATABASE_URL").map(String::as_str),
        Some(database[0].1)
    );
}

#[test]
fn without_the_spin_cli_it_says_what_to_install() {
    let checkout = Checkout::new("4.0.2");
    let output = checkout.run(&[("SPIN", "spin-not-installed")]);
    assert_eq!(output.status.code(), Some(127));
    assert!(
        stderr(&output).contains("scripts/run"),
        "{}",
        stderr(&output)
    );
}
