//! The keyless runner on a disk that fills up: writes answer 503 `storage_full` (JSON, streamed
//! or not, new conversation or follow-up), reads and `/health` go on, nothing already stored is
//! lost or half-written, and once space is freed the same server saves again. A re-index that
//! fills the disk fails clearly and leaves the old index whole.
//!
//! The data folder is a small tmpfs mounted in a mount namespace of the runner's own
//! (`unshare --user --map-root-user --mount`, so no privileges are needed), and the test fills it
//! through `/proc/PID/root`. Skipped, saying why, where user namespaces are disabled, unless
//! `TEST_REQUIRE_NAMESPACES` is set (as CI does).

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use support::runner::Runner;

/// Mounts the tmpfs on `$DATA_DIR`, copies the book's index in and becomes the runner.
const MOUNT_AND_SERVE: &str = r#"mount -t tmpfs -o size=8m tmpfs "$DATA_DIR" && cp "$SEED_DB" "$DATA_DIR/default.db" && exec "$@""#;

fn namespaces_or_skip() -> bool {
    let works = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .status()
        .is_ok_and(|status| status.success());
    if !works {
        assert!(
            std::env::var_os("TEST_REQUIRE_NAMESPACES").is_none(),
            "`unshare --user --map-root-user --mount` is required but failed"
        );
        println!(
            "skipping: `unshare --user --map-root-user --mount` failed (user namespaces disabled?)"
        );
    }
    works
}

/// Fills the file system behind `dir` with one file until it refuses more (ENOSPC).
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        if let Err(err) = file.write_all(&block).and_then(|()| file.sync_data()) {
            assert_eq!(err.raw_os_error(), Some(28), "not ENOSPC: {err}");
            return path;
        }
    }
}

/// One reader's conversation, before, during and after the store is full.
struct Reader<'a> {
    client: reqwest::Client,
    runner: &'a Runner,
    session_id: String,
    /// The session's turns (role, content) when the store filled up.
    stored: Vec<(String, String)>,
}

const LATER_QUESTION: &str = "What is a humanoid robot?";

impl<'a> Reader<'a> {
    async fn chat(&self, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.runner.url("/chat"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn turns(&self) -> Vec<(String, String)> {
        let url = self.runner.url(&format!("/session/{}", self.session_id));
        let response = self.client.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let session: Value = response.json().await.unwrap();
        let text = |m: &Value, key: &str| m[key].as_str().unwrap().to_owned();
        session["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (text(m, "role"), text(m, "content")))
            .collect()
    }

    /// Starts a conversation of `questions` answered and stored while there is room.
    async fn converse(runner: &'a Runner, questions: &[&str]) -> Reader<'a> {
        let mut reader = Reader {
            client: reqwest::Client::new(),
            runner,
            session_id: String::new(),
            stored: Vec::new(),
        };
        for question in questions {
            let mut body = json!({"query": question});
            if !reader.session_id.is_empty() {
                body["session_id"] = json!(reader.session_id);
            }
            let (status, answer) = reader.chat(body).await;
            assert_eq!(status, 200, "{answer}");
            reader.session_id = answer["session_id"].as_str().unwrap().to_owned();
        }
        reader.stored = reader.turns().await;
        assert_eq!(
            reader.stored.len(),
            2 * questions.len(),
            "{:?}",
            reader.stored
        );
        reader
    }

    /// With the store full: every kind of chat is refused as `storage_full`, without database
    /// text; reads and `/health` go on; the refused turns left nothing behind.
    async fn assert_writes_refused(&self) {
        let new = json!({"query": LATER_QUESTION});
        let streamed = json!({"query": LATER_QUESTION, "stream": true});
        let follow_up = json!({"query": LATER_QUESTION, "session_id": self.session_id});
        for (body, what) in [
            (new, "a new conversation"),
            (streamed, "a new streamed conversation"),
            (follow_up, "a follow-up"),
        ] {
            let (status, body) = self.chat(body).await;
            assert_eq!(status, 503, "{what}: {body}");
            assert_eq!(body["error"]["code"], "storage_full", "{what}: {body}");
            let message = body["error"]["message"].as_str().unwrap();
            for leak in ["/", "disk is full", "SQLite", "53100", "default.db"] {
                assert!(!message.contains(leak), "{what}: {message}");
            }
        }
        assert_eq!(self.turns().await, self.stored);
        let health = self.client.get(self.runner.url("/health")).send().await;
        assert_eq!(health.unwrap().status(), 200);
    }

    /// Once there is room again: the follow-up is answered and stored after the turns kept.
    async fn assert_saves_again(&self) {
        let follow_up = json!({"query": LATER_QUESTION, "session_id": self.session_id});
        let (status, body) = self.chat(follow_up).await;
        assert_eq!(status, 200, "after space was freed: {body}");
        let after = self.turns().await;
        assert_eq!(after.len(), self.stored.len() + 2, "{after:?}");
        assert_eq!(after[..self.stored.len()], self.stored[..]);
        let asked = &after[self.stored.len()];
        assert_eq!(
            (asked.0.as_str(), asked.1.as_str()),
            ("user", LATER_QUESTION)
        );
    }
}

#[tokio::test]
async fn a_full_disk_refuses_writes_clearly_keeps_what_was_stored_and_recovers() {
    if !namespaces_or_skip() {
        return;
    }
    let seed = support::data_dir_with_book_index().await;
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let seed_db = seed.path().join("default.db");
    let wrapper = [
        "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "sh",
        "-c",
        MOUNT_AND_SERVE,
        "sh",
    ];
    // The log lives outside the tmpfs, which would hide it from this process.
    let runner = Runner::start_wrapped(
        &wrapper,
        logs.path(),
        &[],
        &[
            ("DATA_DIR", data.path().to_str().unwrap()),
            ("SEED_DB", seed_db.to_str().unwrap()),
        ],
    )
    .await;
    let disk = PathBuf::from(format!("/proc/{}/root", runner.child.id()))
        .join(data.path().strip_prefix("/").unwrap());
    assert!(
        disk.join("default.db").exists(),
        "the runner's data folder is not visible"
    );

    let reader = Reader::converse(
        &runner,
        &[
            "What does ZMP stand for?",
            "How do ROS 2 nodes talk to each other?",
        ],
    )
    .await;
    let filler = fill(&disk);
    reader.assert_writes_refused().await;
    std::fs::remove_file(filler).unwrap();
    reader.assert_saves_again().await;

    let log = runner.log_text();
    assert!(
        log.contains("database or disk is full"),
        "the operator is not told: {log}"
    );
}

/// PostgreSQL says `disk_full` (SQLSTATE 53100) when its disk fills and, on Neon, when a project
/// reaches its storage limit. A real PostgreSQL raises it here from a trigger, through the wire
/// protocol and the runner's `spin:postgres` host, as it would for a full disk.
#[tokio::test]
async fn postgres_disk_full_answers_storage_full_and_reads_go_on() {
    let Some(pg) = support::postgres::postgres_or_skip().await else {
        return;
    };
    let data = support::data_dir_with_book_index().await;
    let runner = Runner::start(data.path(), &[("database_url", pg.url())]).await;
    let reader = Reader::converse(&runner, &["What does ZMP stand for?"]).await;

    let schema = &pg.name;
    pg.admin
        .batch_execute(&format!(
            "CREATE FUNCTION {schema}.disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 RAISE EXCEPTION 'could not extend file: No space left on device' \
                     USING ERRCODE = 'disk_full'; \
             END $$; \
             CREATE TRIGGER disk_full BEFORE INSERT ON {schema}.messages \
                 FOR EACH ROW EXECUTE FUNCTION {schema}.disk_full();"
        ))
        .await
        .unwrap();
    reader.assert_writes_refused().await;
    pg.admin
        .batch_execute(&format!("DROP TRIGGER disk_full ON {schema}.messages"))
        .await
        .unwrap();
    reader.assert_saves_again().await;

    let log = runner.log_text();
    assert!(log.contains("53100"), "the operator is not told: {log}");
    drop(runner);
    pg.drop_schema().await;
}

/// Re-indexing into a data folder whose disk fills up midway fails with a clear message and
/// leaves the index it was replacing whole: the server would go on answering from it.
#[test]
fn an_ingest_that_fills_the_disk_fails_clearly_and_keeps_the_old_index() {
    if !namespaces_or_skip() {
        return;
    }
    let seed = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(support::data_dir_with_book_index());
    let seed_db = seed.path().join("default.db");
    let chunks = |db: &Path| -> i64 {
        let conn = rusqlite::Connection::open(db).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        conn.query_row("SELECT count(*) FROM chunks", [], |row| row.get(0))
            .unwrap()
    };
    let before = chunks(&seed_db);

    // More text than the 1 MiB disk holds beside the index.
    let docs = tempfile::tempdir().unwrap();
    for page in 0..40 {
        let body: String = (0..300)
            .map(|n| format!("Sentence {n} of page {page} is about balance and gait. "))
            .collect();
        std::fs::write(
            docs.path().join(format!("page-{page}.md")),
            format!("# Page {page}\n\n{body}\n"),
        )
        .unwrap();
    }
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let script = r#"mount -t tmpfs -o size=1m tmpfs "$DATA_DIR" && cp "$SEED_DB" "$DATA_DIR/default.db" || exit 99
"$HOST" ingest --target sqlite --manifest "$MANIFEST" "$DOCS"; status=$?
cp "$DATA_DIR"/default.db* "$OUT"/ && exit $status"#;
    let output = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", script])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", data.path())
        .env("SEED_DB", &seed_db)
        .env("HOST", env!("CARGO_BIN_EXE_host"))
        .env("MANIFEST", support::workspace().join("spin.toml"))
        .env("DOCS", docs.path())
        .env("OUT", out.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("database or disk is full"), "{stderr}");
    assert_eq!(chunks(&out.path().join("default.db")), before);
}
