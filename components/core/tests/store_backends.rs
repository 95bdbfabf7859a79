//! One suite for session storage, run against a real SQLite file and a real PostgreSQL.
//!
//! PostgreSQL is reached at `TEST_POSTGRES_URL` (default: trust auth as `postgres` on
//! 127.0.0.1:5432, database `test`); each test works in a schema of its own, dropped afterwards.
//! When PostgreSQL cannot be reached its half is skipped with a printed reason, unless
//! `TEST_REQUIRE_POSTGRES` is set, which turns the skip into a failure.
//! The SQLite half uses the crate's own rusqlite adapter: run with `--features sqlite`.
#![cfg(feature = "sqlite")]

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::Duration;

use rag_core::store::{
    ensure_schema, migrate, migrate_to, schema_version, session_key, Database, Dialect,
    MessageRecord, MessageStatus, Rating, RatingOutcome, Role, Rows, SchemaStatus, SessionStore,
    SqlValue, StoreError, Turn, LATEST_SCHEMA_VERSION,
};

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

fn unique_suffix() -> String {
    format!(
        "{}_{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh, empty database that hands out connections to itself.
trait Backend: Sync {
    type Db: Database;
    fn connect(&self) -> Self::Db;
}

// ---------------------------------------------------------------------------------------------
// SQLite

struct SqliteBackend {
    path: PathBuf,
}

impl SqliteBackend {
    fn fresh() -> Self {
        let path = std::env::temp_dir().join(format!("rag_store_test_{}.db", unique_suffix()));
        let backend = Self { path };
        let db = backend.connect();
        let mode: String = db
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .expect("enable WAL");
        assert_eq!(mode, "wal");
        backend
    }
}

impl Backend for SqliteBackend {
    type Db = rusqlite::Connection;

    fn connect(&self) -> rusqlite::Connection {
        let connection = rusqlite::Connection::open(&self.path).expect("open SQLite file");
        connection
            .busy_timeout(Duration::from_secs(30))
            .expect("set busy timeout");
        connection
    }
}

impl Drop for SqliteBackend {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

struct PgDb(RefCell<postgres::Client>);

fn pg_error(error: postgres::Error) -> StoreError {
    match error.as_db_error() {
        Some(db_error) => StoreError::Query(format!(
            "{} (SQLSTATE {})",
            db_error.message(),
            db_error.code().code()
        )),
        None if error.is_closed() => StoreError::Unavailable(error.to_string()),
        None => StoreError::Query(error.to_string()),
    }
}

fn pg_params(params: &[SqlValue]) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
    params
        .iter()
        .map(|param| -> Box<dyn postgres::types::ToSql + Sync> {
            match param {
                // The schema's nullable columns are all TEXT.
                SqlValue::Null => Box::new(None::<String>),
                SqlValue::Integer(value) => Box::new(*value),
                SqlValue::Real(value) => Box::new(*value),
                SqlValue::Text(value) => Box::new(value.clone()),
            }
        })
        .collect()
}

fn pg_value(row: &postgres::Row, index: usize) -> Result<SqlValue, StoreError> {
    use postgres::types::Type;
    let column_type = row.columns()[index].type_().clone();
    let value = match column_type {
        Type::INT8 => row
            .try_get::<_, Option<i64>>(index)
            .map(|v| v.map(SqlValue::Integer)),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(index)
            .map(|v| v.map(|v| SqlValue::Integer(v.into()))),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(index)
            .map(|v| v.map(|v| SqlValue::Integer(v.into()))),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(index)
            .map(|v| v.map(SqlValue::Real)),
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => row
            .try_get::<_, Option<String>>(index)
            .map(|v| v.map(SqlValue::Text)),
        other => {
            return Err(StoreError::Query(format!(
                "unsupported column type {other}"
            )))
        }
    };
    value.map(|v| v.unwrap_or(SqlValue::Null)).map_err(pg_error)
}

impl Database for PgDb {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64, StoreError> {
        let params = pg_params(params);
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            params.iter().map(|param| param.as_ref()).collect();
        self.0.borrow_mut().execute(sql, &refs).map_err(pg_error)
    }

    fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Rows, StoreError> {
        let params = pg_params(params);
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            params.iter().map(|param| param.as_ref()).collect();
        let mut client = self.0.borrow_mut();
        let statement = client.prepare(sql).map_err(pg_error)?;
        let columns = statement
            .columns()
            .iter()
            .map(|column| column.name().to_owned())
            .collect();
        let rows = client
            .query(&statement, &refs)
            .map_err(pg_error)?
            .iter()
            .map(|row| (0..row.len()).map(|index| pg_value(row, index)).collect())
            .collect::<Result<_, _>>()?;
        Ok(Rows { columns, rows })
    }
}

struct PgBackend {
    url: String,
    schema: String,
}

fn pg_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| {
        "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=5".to_owned()
    })
}

impl PgBackend {
    /// A new schema to work in, or `None` (after saying why) when PostgreSQL is unreachable.
    fn fresh() -> Option<Self> {
        let url = pg_url();
        let mut admin = match postgres::Client::connect(&url, postgres::NoTls) {
            Ok(client) => client,
            Err(error) => {
                // The top-level message is only "error connecting to server"; the cause says why.
                let reason = match std::error::Error::source(&error) {
                    Some(cause) => format!("{error}: {cause}"),
                    None => error.to_string(),
                };
                if std::env::var_os("TEST_REQUIRE_POSTGRES").is_some() {
                    panic!("PostgreSQL is required but unreachable: {reason}");
                }
                println!("skipping PostgreSQL: {reason}");
                return None;
            }
        };
        let schema = format!("test_store_{}", unique_suffix());
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .expect("create test schema");
        Some(Self { url, schema })
    }
}

impl Backend for PgBackend {
    type Db = PgDb;

    fn connect(&self) -> PgDb {
        let mut client =
            postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to PostgreSQL");
        client
            .batch_execute(&format!("SET search_path TO {}", self.schema))
            .expect("set search_path");
        PgDb(RefCell::new(client))
    }
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&self.url, postgres::NoTls) {
            let _ = admin.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The suite

macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::SqliteBackend::fresh());
                }
            )*
        }

        mod on_postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(backend) = super::PgBackend::fresh() {
                        super::$name(&backend);
                    }
                }
            )*
        }
    };
}

backend_tests!(
    migrations_are_idempotent,
    concurrent_migrations_apply_once,
    create_get_delete,
    sessions_start_under_fresh_ids_only,
    ids_are_stored_only_as_digests,
    version_1_sessions_are_rekeyed_or_retired,
    missing_rows,
    append_order_and_pagination,
    an_exchange_is_stored_question_first_or_not_at_all,
    a_first_exchange_starts_its_session_or_leaves_none,
    a_first_exchange_never_joins_a_taken_session,
    a_first_exchange_checks_the_schema_itself,
    a_first_exchange_on_the_previous_version_migrates,
    the_previous_release_still_starts_sessions,
    a_question_continues_its_session_in_one_statement,
    a_question_on_a_database_never_migrated_is_not_found,
    a_conversation_is_read_back_in_one_statement,
    a_read_on_a_database_never_migrated_finds_nothing,
    session_actions_check_the_schema_themselves,
    a_rating_on_a_database_never_migrated_finds_no_session,
    a_delete_on_a_database_never_migrated_finds_no_session,
    a_session_starts_on_a_database_never_migrated,
    a_rating_tells_an_unknown_session_from_an_unknown_answer,
    only_an_unwritten_answer_is_discarded,
    update_answer_writes_a_streamed_answer_of_its_session_only,
    feedback_is_replaced,
    recent_turns_fit_the_budget,
    hostile_text_is_stored_verbatim,
    concurrent_appends_lose_nothing,
);

/// A connection with the schema in place.
fn ready<B: Backend>(backend: &B) -> B::Db {
    let db = backend.connect();
    ensure_schema(&db).expect("ensure schema");
    db
}

fn count(db: &impl Database, sql: &str, params: &[SqlValue]) -> i64 {
    let rows = db.query(sql, params).expect("count query");
    rows.first().unwrap().integer("n").unwrap()
}

/// Removes this release's version from the record while its tables stay: only a check of the
/// recorded version can tell the schema is behind.
fn record_schema_as_behind(db: &impl Database) {
    db.execute(
        &db.dialect()
            .render_test("DELETE FROM schema_migrations WHERE version = $1"),
        &[LATEST_SCHEMA_VERSION.into()],
    )
    .unwrap();
}

/// `2026-11-23T15:04:05.123Z`
fn assert_timestamp(value: &str) {
    let bytes = value.as_bytes();
    let shape_ok = bytes.len() == 24
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            10 => *b == b'T',
            13 | 16 => *b == b':',
            19 => *b == b'.',
            23 => *b == b'Z',
            _ => b.is_ascii_digit(),
        });
    assert!(
        shape_ok,
        "not an RFC 3339 UTC millisecond timestamp: {value:?}"
    );
}

fn migrations_are_idempotent<B: Backend>(backend: &B) {
    let db = backend.connect();
    assert!(
        schema_version(&db).is_err(),
        "a fresh database has no migrations table"
    );
    let all: Vec<i64> = rag_core::store::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(ensure_schema(&db).unwrap(), SchemaStatus::Migrated(all));
    assert_eq!(ensure_schema(&db).unwrap(), SchemaStatus::Current);
    assert_eq!(migrate(&db).unwrap(), Vec::<i64>::new());
    assert_eq!(schema_version(&db).unwrap(), Some(LATEST_SCHEMA_VERSION));
    let rows = count(&db, "SELECT count(*) AS n FROM schema_migrations", &[]);
    assert_eq!(rows, rag_core::store::MIGRATIONS.len() as i64);
    let applied_at = db
        .query("SELECT applied_at FROM schema_migrations", &[])
        .unwrap();
    assert_timestamp(&applied_at.first().unwrap().text("applied_at").unwrap());
    // The schema works after the second run, and a failed statement left no open transaction.
    let store = SessionStore::new(&db);
    store.create_session("after-migrations").unwrap();
    assert!(store
        .get_session("after-migrations", 10, None)
        .unwrap()
        .is_some());
}

fn concurrent_migrations_apply_once<B: Backend>(backend: &B) {
    const REPLICAS: usize = 4;
    let start = Barrier::new(REPLICAS);
    let applied: Vec<Vec<i64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..REPLICAS)
            .map(|_| {
                scope.spawn(|| {
                    let db = backend.connect();
                    start.wait();
                    match ensure_schema(&db).expect("ensure schema from a replica") {
                        SchemaStatus::Current => Vec::new(),
                        SchemaStatus::Migrated(versions) => versions,
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<i64> = applied.into_iter().flatten().collect();
    all.sort_unstable();
    let expected: Vec<i64> = rag_core::store::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(all, expected, "each version applied by exactly one replica");
    let db = backend.connect();
    let rows = count(&db, "SELECT count(*) AS n FROM schema_migrations", &[]);
    assert_eq!(rows, expected.len() as i64);
}

fn create_get_delete<B: Backend>(backend: &B) {
    let db = ready(backend);
    let store = SessionStore::new(&db);
    let session = store.create_session("s-1").unwrap();
    assert_eq!(session.id, "s-1");
    assert_timestamp(&session.created_at);
    assert!(matches!(
        store.create_session("s-1"),
        Err(StoreError::Conflict(_))
    ));

    let page = store.get_session("s-1", 50, None).unwrap().unwrap();
    assert_eq!(page.session, session);
    assert!(page.messages.is_empty());
    assert_eq!(page.next_before, None);

    let question = store
        .append_message(
            "s-1",
            Role::User,
            "What is ROS 2?",
            "[]",
            MessageStatus::Complete,
        )
        .unwrap();
    let answer = store
        .append_message(
            "s-1",
            Role::Assistant,
            "A robotics middleware.",
            r#"[{"url":"https://book/ros2"}]"#,
            MessageStatus::Complete,
        )
        .unwrap();
    assert_timestamp(&question.created_at);
    assert!(answer.id > question.id);
    assert!(store
        .set_feedback("s-1", answer.id, Rating::Up, None, None)
        .unwrap());
    // Another session's rows must survive the delete.
    store.create_session("s-2").unwrap();
    store
        .append_message("s-2", Role::User, "kept", "[]", MessageStatus::Complete)
        .unwrap();

    assert!(store.delete_session("s-1").unwrap());
    assert_eq!(store.get_session("s-1", 50, None).unwrap(), None);
    assert!(!store.delete_session("s-1").unwrap());
    let id = SqlValue::from(session_key("s-1"));
    let orphans = count(
        &db,
        &db.dialect()
            .render_test("SELECT count(*) AS n FROM messages WHERE session_id = $1"),
        std::slice::from_ref(&id),
    );
    assert_eq!(orphans, 0, "messages deleted with their session");
    let ratings = count(
        &db,
        &db.dialect()
            .render_test("SELECT count(*) AS n FROM feedback WHERE message_id = $1"),
        &[SqlValue::Integer(answer.id)],
    );
    assert_eq!(ratings, 0, "feedback deleted with its message");
    let kept = store.get_session("s-2", 50, None).unwrap().unwrap();
    assert_eq!(kept.messages.len(), 1);
    // The id can be used again once deleted.
    store.create_session("s-1").unwrap();
}

/// Statements the tests write themselves use the same placeholder spelling as the store.
trait RenderTest {
    fn render_test(self, sql: &str) -> String;
}

impl RenderTest for Dialect {
    fn render_test(self, sql: &str) -> String {
        match self {
            Dialect::Postgres => sql.to_owned(),
            Dialect::Sqlite => sql.replace('$', "?"),
        }
    }
}

fn sessions_start_under_fresh_ids_only<B: Backend>(backend: &B) {
    let db = ready(backend);
    let store = SessionStore::new(&db);
    let mut issued = 0;
    let first = store
        .start_session(|| {
            issued += 1;
            "first-session-id".to_owned()
        })
        .unwrap();
    assert_eq!((first.id.as_str(), issued), ("first-session-id", 1));
    assert_timestamp(&first.created_at);

    // A taken id is drawn again, a bounded number of times; the session is never shared.
    let mut draws = vec!["second-session-id", "first-session-id"];
    let second = store
        .start_session(|| draws.pop().unwrap().to_owned())
        .unwrap();
    assert_eq!(second.id, "second-session-id");
    let mut attempts = 0;
    let stuck = store.start_session(|| {
        attempts += 1;
        "first-session-id".to_owned()
    });
    assert!(matches!(stuck, Err(StoreError::Conflict(_))), "{stuck:?}");
    assert_eq!(attempts, 3);
    let Err(StoreError::Conflict(message)) = stuck else {
        unreachable!()
    };
    assert!(!message.contains("first-session-id"), "{message}");

    // Nothing creates a session as a side effect: appending to an unknown one changes nothing.
    let unknown = store.append_message("demo", Role::User, "hi", "[]", MessageStatus::Complete);
    match unknown {
        Err(StoreError::NotFound(message)) => assert!(!message.contains("demo"), "{message}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(store.get_session("demo", 50, None).unwrap(), None);
    assert_eq!(count(&db, "SELECT count(*) AS n FROM sessions", &[]), 2);
    assert_eq!(count(&db, "SELECT count(*) AS n FROM messages", &[]), 0);
}

/// The database never holds an id, only its SHA-256 digest: someone who reads the tables (a
/// backup, a replica, an operator) cannot take over a conversation.
fn ids_are_stored_only_as_digests<B: Backend>(backend: &B) {
    let db = ready(backend);
    let store = SessionStore::new(&db);
    let id = "Zq3-vT_8kLmN0pQrStUvWx";
    store.create_session(id).unwrap();
    let answer = store
        .append_message(
            id,
            Role::Assistant,
            "an answer",
            "[]",
            MessageStatus::Complete,
        )
        .unwrap();
    assert!(store
        .set_feedback(id, answer.id, Rating::Up, None, None)
        .unwrap());
    let key = session_key(id);
    assert_eq!(key.len(), 64);
    let stored = db.query("SELECT id FROM sessions", &[]).unwrap();
    assert_eq!(stored.first().unwrap().text("id").unwrap(), key);
    let stored = db.query("SELECT session_id FROM messages", &[]).unwrap();
    assert_eq!(stored.first().unwrap().text("session_id").unwrap(), key);
    // Reading, rating, context and deleting all find it by the id its holder knows.
    let page = store.get_session(id, 50, None).unwrap().unwrap();
    assert_eq!(page.session.id, id);
    assert_eq!(
        page.messages[0].feedback.as_ref().unwrap().rating,
        Rating::Up
    );
    assert_eq!(store.recent_turns(id, 100).unwrap().len(), 1);
    // The digest itself is not an id: presenting it finds nothing.
    assert_eq!(store.get_session(&key, 50, None).unwrap(), None);
    assert!(!store.delete_session(&key).unwrap());
    assert!(store.delete_session(id).unwrap());
}

/// A database as the previous release left it (version 1, ids stored as sent) is migrated:
/// sessions under ids the server issued keep their history, ratings and creation time under
/// the same id; sessions under ids a client chose are deleted with everything in them.
fn version_1_sessions_are_rekeyed_or_retired<B: Backend>(backend: &B) {
    let db = backend.connect();
    assert_eq!(migrate_to(&db, 1).unwrap(), vec![1]);
    let issued_by_session_endpoint = "AbC-_0123456789abcdefg";
    let issued_by_chat = "0123456789abcdef0123456789abcdef";
    let chosen = ["demo", "reader-7", "my-own-long-session-name-for-testing"];
    let render = |sql: &str| db.dialect().render_test(sql);
    let insert_session = |id: &str, created_at: &str| {
        db.execute(
            &render("INSERT INTO sessions (id, created_at) VALUES ($1, $2)"),
            &[id.into(), created_at.into()],
        )
        .unwrap();
    };
    let insert_message = |id: &str, role: &str, content: &str| -> i64 {
        db.query(
            &render(
                "INSERT INTO messages (session_id, role, content, sources, status) \
                 VALUES ($1, $2, $3, '[]', 'complete') RETURNING id",
            ),
            &[id.into(), role.into(), content.into()],
        )
        .unwrap()
        .first()
        .unwrap()
        .integer("id")
        .unwrap()
    };
    let mut kept_answers = Vec::new();
    for id in [issued_by_session_endpoint, issued_by_chat] {
        insert_session(id, "2026-01-02T03:04:05.678Z");
        insert_message(id, "user", &format!("question in {id}"));
        let answer = insert_message(id, "assistant", &format!("answer in {id}"));
        db.execute(
            &render("INSERT INTO feedback (message_id, rating, rated_at) VALUES ($1, 'up', $2)"),
            &[answer.into(), "2026-01-02T03:04:06.000Z".into()],
        )
        .unwrap();
        kept_answers.push(answer);
    }
    for id in chosen {
        insert_session(id, "2026-01-02T03:04:05.678Z");
        let answer = insert_message(id, "assistant", "public to anyone who guessed");
        db.execute(
            &render("INSERT INTO feedback (message_id, rating, rated_at) VALUES ($1, 'down', $2)"),
            &[answer.into(), "2026-01-02T03:04:06.000Z".into()],
        )
        .unwrap();
    }

    assert_eq!(
        ensure_schema(&db).unwrap(),
        SchemaStatus::Migrated((2..=LATEST_SCHEMA_VERSION).collect())
    );
    let store = SessionStore::new(&db);
    for (id, answer) in [issued_by_session_endpoint, issued_by_chat]
        .into_iter()
        .zip(kept_answers)
    {
        let page = store.get_session(id, 50, None).unwrap().unwrap();
        assert_eq!(page.session.created_at, "2026-01-02T03:04:05.678Z");
        let contents: Vec<&str> = page.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(
            contents,
            [format!("question in {id}"), format!("answer in {id}")]
        );
        assert_eq!(page.messages[1].id, answer);
        assert_eq!(
            page.messages[1].feedback.as_ref().unwrap().rating,
            Rating::Up
        );
        // And the session goes on as any other.
        store
            .append_message(
                id,
                Role::User,
                "after the upgrade",
                "[]",
                MessageStatus::Complete,
            )
            .unwrap();
    }
    for id in chosen {
        assert_eq!(store.get_session(id, 50, None).unwrap(), None, "{id}");
    }
    assert_eq!(count(&db, "SELECT count(*) AS n FROM sessions", &[]), 2);
    assert_eq!(count(&db, "SELECT count(*) AS n FROM messages", &[]), 6);
    assert_eq!(count(&db, "SELECT count(*) AS n FROM feedback", &[]), 2);
    let raw_ids = count(
        &db,
        &render(
            "SELECT count(*) AS n FROM sessions WHERE id IN ($1, $2) \
             OR id NOT IN (SELECT session_id FROM messages)",
        ),
        &[issued_by_session_endpoint.into(), issued_by_chat.into()],
    );
    assert_eq!(
        raw_ids, 0,
        "no id left in the clear, no session without its messages"
    );
    assert_eq!(ensure_schema(&db).unwrap(), SchemaStatus::Current);
}

fn missing_rows<B: Backend>(backend: &B) {
    let db = ready(backend);
    let store = SessionStore::new(&db);
    assert_eq!(store.get_session("nope", 50, None).unwrap(), None);
    assert!(!store.delete_session("nope").unwrap());
    assert!(matches!(
        store.append_message("nope", Role::User, "hi", "[]", MessageStatus::Complete),
        Err(StoreError::NotFound(_))
    ));
    assert!(!store
        .update_answer("nope", 9_999_999, "x", MessageStatus::Complete)
        .unwrap());
    assert!(store.recent_turns("nope", 10_000).unwrap().is_empty());

    let (question, answer) = sessions_a_and_b(&store);
    assert!(!store
        .set_feedback("nope", answer.id, Rating::Up, None, None)
        .unwrap());
    assert!(
        !store
            .set_feedback("b", answer.id, Rating::Up, None, None)
            .unwrap(),
        "a message of another session"
    );
    assert!(
        !store
            .set_feedback("a", question.id, Rating::Up, None, None)
            .unwrap(),
        "user messages cannot be rated"
    );
    assert!(!store
        .set_feedback("a", 9_999_999, Rating::Down, None, None)
        .unwrap());
    assert!(store
        .set_feedback("a", answer.id, Rating::Up, None, None)
        .unwrap());
}

/// Sessions "a", holding a question and its answer (returned), and "b", empty.
fn sessions_a_and_b<D: Database>(store: &SessionStore<'_, D>) -> (MessageRecord, MessageRecord) {
    store.create_session("a").unwrap();
    store.create_session("b").unwrap();
    let question = store
        .append_message("a", Role::User, "q", "[]", MessageStatus::Complete)
        .unwrap();
    let answer = store
        .append_message("a", Role::Assistant, "r", "[]", MessageStatus::Complete)
        .unwrap();
    (question, answer)
}

fn an_exchange_is_stored_question_first_or_not_at_all<B: Backend>(backend: &B) {
    let db = ready(backend);
    let store = SessionStore::new(&db);
    store.create_session("exchanged").unwrap();
    let earlier = store
        .append_message(
            "exchanged",
            Role::User,
            "before",
            "[]",
            MessageStatus::Complete,
        )
        .unwrap();
    let answer = store
        .append_exchange(
            "exchanged",
            "what is ZMP?",
            "the zero moment point [1]",
            r#"[{"n":1}]"#,
            MessageStatus::Incomplete,
        )
        .unwrap();
    assert_timestamp(&answer.created_at);
    let page = store.get_session("exchanged", 10, None).unwrap().unwrap();
    let stored: Vec<_> = page
        .messages
        .iter()
        .map(|m| (m.role, m.content.as_str(), m.sources.as_str(), m.status))
        .collect();
    assert_eq!(
        stored,
        [
            (Role::User, "before", "[]", MessageStatus::Complete),
            (Role::User, "what is ZMP?", "[]", MessageStatus::Complete),
            (
                Role::Assistant,
                "the zero moment point [1]",
                r#"[{"n":1}]"#,
                MessageStatus::Incomplete
            ),
        ]
    );
    assert!(earlier.id < page.messages[1].id && page.messages[1].id < answer.id);
    assert_eq!(page.messages[2].id, answer.id);

    let unknown = store.append_exchange("nobody", "q", "a", "[]", MessageStatus::Complete);
    assert!(
        matches!(unknown, Err(StoreError::NotFound(_))),
        "{unknown:?}"
    );
    let total = count(&db, "SELECT COUNT(*) AS n FROM messages", &[]);
    assert_eq!(total, 3, "nothing stored for an unknown session");
    assert!(store
        .append_exchange("exchanged", "q\0", "a", "[]", MessageStatus::Complete)
        .is_err());
    assert_eq!(count(&db, "SELECT COUNT(*) AS n FROM messages", &[]), 3);
}

fn a_first_exchange_starts_its_session_or_leaves_none<B: Backend>(backend: &B) {
    let db = ready(backend);
    let store = SessionStore::new(&db);
    let sessions = || count(&db, "SELECT COUNT(*) AS n FROM sessions", &[]);
    let mut ids = ["first-exchange".to_owned(), "failed-exchange".to_owned()].into_iter();
    let (session, answer) = store
        .start_session_with_exchange(
            || ids.next().unwrap(),
            "what is ZMP?",
            "the zero moment point",
            "[]",
            MessageStatus::Complete,
        )
        .unwrap();
    assert_eq!(session.id, "first-exchange");
    let page = store.get_session(&session.id, 10, None).unwrap().unwrap();
    let roles: Vec<_> = page.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::User, Role::Assistant]);
    assert_eq!(page.messages[1].id, answer.id);
    assert_eq!(sessions(), 1);

    // The session is created, then the exchange is refused: the session goes again.
    let refused = store.start_session_with_exchange(
        || ids.next().unwrap(),
        "a question with a \0",
        "an answer",
        "[]",
        MessageStatus::Complete,
    );
    assert!(refused.is_err());
    assert_eq!(sessions(), 1, "no session without its exchange is left");
    assert!(store
        .get_session("failed-exchange", 10, None)
        .unwrap()
        .is_none());
}

/// A first exchange whose freshly drawn id belongs to a stored session (which 132 random bits
/// never draw, but a broken random source might) goes under the next draw: the stored session
/// gains nothing, and after three taken draws nothing is stored at all.
fn a_first_exchange_never_joins_a_taken_session<B: Backend>(backend: &B) {
    let db = ready(backend);
    let store = SessionStore::new(&db);
    store.create_session("taken").unwrap();
    let messages_of = |id: &str| {
        count(
            &db,
            "SELECT COUNT(*) AS n FROM messages WHERE session_id = $1",
            &[session_key(id).into()],
        )
    };
    let mut draws = ["taken".to_owned(), "fresh".to_owned()].into_iter();
    let (session, answer) = store
        .start_session_with_exchange(
            || draws.next().unwrap(),
            "q",
            "a partial answer",
            "[{\"title\":\"t\"}]",
            MessageStatus::Incomplete,
        )
        .unwrap();
    assert_eq!(session.id, "fresh");
    assert_timestamp(&session.created_at);
    assert_timestamp(&answer.created_at);
    assert_eq!(messages_of("taken"), 0);
    let page = store.get_session("fresh", 10, None).unwrap().unwrap();
    assert_eq!(page.messages.len(), 2);
    assert_eq!(page.messages[1].id, answer.id);
    assert_eq!(page.messages[1].status, MessageStatus::Incomplete);
    assert_eq!(page.messages[1].sources, "[{\"title\":\"t\"}]");
    assert_eq!(page.messages[0].status, MessageStatus::Complete);

    let refused = store.start_session_with_exchange(
        || "taken".to_owned(),
        "q",
        "a",
        "[]",
        MessageStatus::Complete,
    );
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert_eq!(messages_of("taken"), 0);
    assert_eq!(count(&db, "SELECT COUNT(*) AS n FROM sessions", &[]), 2);
}

/// A connection that keeps the statements sent through it.
struct Recording<D> {
    db: D,
    sent: RefCell<Vec<String>>,
}

impl<D: Database> Recording<D> {
    fn new(db: D) -> Self {
        Self {
            db,
            sent: RefCell::default(),
        }
    }

    fn take(&self) -> Vec<String> {
        self.sent.take()
    }
}

impl<D: Database> Database for Recording<D> {
    fn dialect(&self) -> Dialect {
        self.db.dialect()
    }

    fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64, StoreError> {
        self.sent.borrow_mut().push(sql.to_owned());
        self.db.execute(sql, params)
    }

    fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Rows, StoreError> {
        self.sent.borrow_mut().push(sql.to_owned());
        self.db.query(sql, params)
    }
}

/// A first exchange is sent with no version read before it (one statement on PostgreSQL; on
/// SQLite the write and the read of what it wrote), yet never lands on a schema older than the
/// code's: on a database never migrated, one left at the previous version, and one whose
/// record says it is behind although its tables look current, the write is refused, the
/// schema brought up to date, and the write sent again.
fn a_first_exchange_checks_the_schema_itself<B: Backend>(backend: &B) {
    let db = Recording::new(backend.connect());
    let store = SessionStore::new(&db);
    let mut ids = (1..).map(|n| format!("self-checked-{n}"));
    let mut start = |question: &str| {
        store
            .start_session_with_exchange(
                || ids.next().unwrap(),
                question,
                "an answer",
                "[]",
                MessageStatus::Complete,
            )
            .unwrap()
    };
    let applied = || {
        let rows = db
            .db
            .query(
                "SELECT version FROM schema_migrations ORDER BY version",
                &[],
            )
            .unwrap();
        rows.iter()
            .map(|row| row.integer("version").unwrap())
            .collect::<Vec<_>>()
    };
    let all: Vec<i64> = rag_core::store::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    let first_statements = match db.dialect() {
        Dialect::Postgres => 1,
        Dialect::Sqlite => 2,
    };

    // Never migrated: the first question migrates, and is stored.
    let (session, _) = start("on an empty database");
    assert_eq!(applied(), all);
    assert!(db.take().len() > first_statements);
    let page = store.get_session(&session.id, 10, None).unwrap().unwrap();
    assert_eq!(page.messages[0].content, "on an empty database");

    // Current: the write alone, no version read.
    db.take();
    start("on a current database");
    let sent = db.take();
    assert_eq!(sent.len(), first_statements, "{sent:#?}");
    assert!(
        !sent
            .iter()
            .any(|sql| sql.contains("FROM schema_migrations") && !sql.contains("session")),
        "a separate version read was sent: {sent:#?}"
    );

    // Recorded as behind while the tables look current: only the check inside the write
    // can tell, and the version comes back because the migration ran again.
    record_schema_as_behind(&db.db);
    let before = count(&db.db, "SELECT COUNT(*) AS n FROM sessions", &[]);
    start("on a database recorded as behind");
    assert_eq!(applied(), all, "the refused write migrated");
    assert_eq!(
        count(&db.db, "SELECT COUNT(*) AS n FROM sessions", &[]),
        before + 1,
        "stored once, after the migration"
    );
}

/// A question in a held session: the turns it reads are `recent_turns`' (without the question),
/// the question is stored after them, an unknown id stores nothing, and on PostgreSQL it is
/// one statement that still finds a schema recorded as behind.
fn a_question_continues_its_session_in_one_statement<B: Backend>(backend: &B) {
    let db = Recording::new(ready(backend));
    let store = SessionStore::new(&db);
    store.create_session("held").unwrap();
    for (role, content, status) in [
        (Role::User, "what is a humanoid?", MessageStatus::Complete),
        (
            Role::Assistant,
            "a robot shaped like us",
            MessageStatus::Complete,
        ),
        (Role::User, "and ZMP?", MessageStatus::Complete),
        (Role::Assistant, "cut off", MessageStatus::Incomplete),
    ] {
        store
            .append_message("held", role, content, "[]", status)
            .unwrap();
    }
    let budget = "a robot shaped like us".len() + "and ZMP?".len();
    let expected = store.recent_turns("held", budget).unwrap();
    assert_eq!(expected.len(), 2, "{expected:?}");

    db.take();
    let (turns, question) = store
        .continue_session("held", "and balance?", budget)
        .unwrap();
    let sent = db.take();
    assert_eq!(turns, expected);
    assert_timestamp(&question.created_at);
    let page = store.get_session("held", 10, None).unwrap().unwrap();
    let last = page.messages.last().unwrap();
    assert_eq!(
        (last.id, last.role, last.content.as_str()),
        (question.id, Role::User, "and balance?")
    );
    assert_eq!(page.messages.len(), 5);
    let statements = match db.dialect() {
        Dialect::Postgres => 1,
        // The version read, the turns, the question.
        Dialect::Sqlite => 3,
    };
    assert_eq!(sent.len(), statements, "{sent:#?}");

    let unknown = store.continue_session("never-issued", "q", budget);
    assert!(
        matches!(unknown, Err(StoreError::NotFound(_))),
        "{unknown:?}"
    );
    assert_eq!(count(&db.db, "SELECT COUNT(*) AS n FROM messages", &[]), 5);

    // Recorded as behind: refused inside the statement, migrated, sent again, stored once.
    record_schema_as_behind(&db.db);
    let (turns, _) = store
        .continue_session("held", "after the rollback", budget)
        .unwrap();
    assert_eq!(schema_version(&db.db).unwrap(), Some(LATEST_SCHEMA_VERSION));
    assert_eq!(turns.last().unwrap().content, "and balance?");
    assert_eq!(count(&db.db, "SELECT COUNT(*) AS n FROM messages", &[]), 6);
}

/// Never migrated: the question's statement migrates, then finds no such session.
fn a_question_on_a_database_never_migrated_is_not_found<B: Backend>(backend: &B) {
    let db = backend.connect();
    let outcome = SessionStore::new(&db).continue_session("held", "q", 100);
    assert!(
        matches!(outcome, Err(StoreError::NotFound(_))),
        "{outcome:?}"
    );
    assert_eq!(schema_version(&db).unwrap(), Some(LATEST_SCHEMA_VERSION));
}

/// A conversation read back (the widget does on every page load) is what `get_session` reads,
/// page by page, with and without messages and ratings, in one statement on PostgreSQL; it
/// needs no `ensure_schema` first, and still finds a schema recorded as behind.
fn a_conversation_is_read_back_in_one_statement<B: Backend>(backend: &B) {
    let db = Recording::new(ready(backend));
    let store = SessionStore::new(&db);
    store.create_session("read-back").unwrap();
    store.create_session("empty").unwrap();
    let mut last_answer = 0;
    for n in 1..=5 {
        let role = if n % 2 == 1 {
            Role::User
        } else {
            Role::Assistant
        };
        let record = store
            .append_message(
                "read-back",
                role,
                &format!("turn {n}"),
                "[]",
                MessageStatus::Complete,
            )
            .unwrap();
        if role == Role::Assistant {
            last_answer = record.id;
        }
    }
    assert!(store
        .set_feedback("read-back", last_answer, Rating::Up, Some("clear"), None)
        .unwrap());

    let pages = [
        ("read-back", 50, None),
        ("read-back", 2, None),
        ("read-back", 2, Some(last_answer)),
        ("read-back", 1, Some(1)),
        ("empty", 10, None),
        ("never-issued", 10, None),
    ];
    for (id, limit, before) in pages {
        let expected = store.get_session(id, limit, before).unwrap();
        db.take();
        let read = store.read_session(id, limit, before).unwrap();
        let sent = db.take();
        assert_eq!(read, expected, "{id} {limit} {before:?}");
        let statements = match (db.dialect(), &expected) {
            (Dialect::Postgres, _) => 1,
            // The version read, the session, and its page when it exists.
            (Dialect::Sqlite, Some(_)) => 3,
            (Dialect::Sqlite, None) => 2,
        };
        assert_eq!(sent.len(), statements, "{id}: {sent:#?}");
    }
    let full = store.read_session("read-back", 50, None).unwrap().unwrap();
    assert_eq!(full.messages.len(), 5);
    assert_eq!(full.messages[0].content, "turn 1");
    assert_eq!(
        full.messages
            .iter()
            .find(|m| m.id == last_answer)
            .unwrap()
            .feedback
            .as_ref()
            .unwrap()
            .rating,
        Rating::Up
    );
    let paged = store.read_session("read-back", 2, None).unwrap().unwrap();
    assert_eq!(paged.messages.len(), 2);
    assert_eq!(paged.next_before, Some(paged.messages[0].id));

    // Recorded as behind: refused inside the statement, migrated, read again.
    record_schema_as_behind(&db.db);
    let again = store.read_session("read-back", 50, None).unwrap().unwrap();
    assert_eq!(schema_version(&db.db).unwrap(), Some(LATEST_SCHEMA_VERSION));
    assert_eq!(again, full);
}

/// Never migrated: reading migrates, then finds no such session.
fn a_read_on_a_database_never_migrated_finds_nothing<B: Backend>(backend: &B) {
    let db = backend.connect();
    assert_eq!(
        SessionStore::new(&db)
            .read_session("held", 10, None)
            .unwrap(),
        None
    );
    assert_eq!(schema_version(&db).unwrap(), Some(LATEST_SCHEMA_VERSION));
}

/// `POST /session`, a rating and `DELETE` need no `ensure_schema` first: on a current
/// PostgreSQL each is one statement, and each still finds a schema recorded as behind, which it
/// migrates before acting once.
fn session_actions_check_the_schema_themselves<B: Backend>(backend: &B) {
    let db = Recording::new(ready(backend));
    let store = SessionStore::new(&db);
    let mut ids = (1..).map(|n| format!("checked-{n}"));
    let held = store.start_session(|| ids.next().unwrap()).unwrap();
    let answer = store
        .append_exchange(&held.id, "q", "a", "[]", MessageStatus::Complete)
        .unwrap();
    let sessions = || count(&db.db, "SELECT COUNT(*) AS n FROM sessions", &[]);
    let rating = || {
        let rows = db
            .db
            .query(
                &db.dialect()
                    .render_test("SELECT rating FROM feedback WHERE message_id = $1"),
                &[answer.id.into()],
            )
            .unwrap();
        rows.first().map(|row| row.text("rating").unwrap())
    };
    // SQLite: the version read, then the action (a delete is three statements in a
    // transaction; a rating that finds nothing looks for the session too).
    let expected = |postgres: usize, sqlite: usize| match db.dialect() {
        Dialect::Postgres => postgres,
        Dialect::Sqlite => sqlite,
    };

    db.take();
    let started = store.start_session(|| ids.next().unwrap()).unwrap();
    assert_timestamp(&started.created_at);
    assert_eq!(db.take().len(), expected(1, 2));
    assert_eq!(sessions(), 2);

    let outcome = store
        .rate_answer(&held.id, answer.id, Rating::Down, Some("wrong"), None)
        .unwrap();
    assert_eq!(outcome, RatingOutcome::Rated);
    assert_eq!(db.take().len(), expected(1, 2));
    assert_eq!(rating().as_deref(), Some("down"));

    let outcome = store
        .rate_answer(&started.id, answer.id, Rating::Up, None, None)
        .unwrap();
    assert_eq!(outcome, RatingOutcome::UnknownAnswer);
    assert_eq!(db.take().len(), expected(1, 3));
    assert_eq!(
        rating().as_deref(),
        Some("down"),
        "another session's answer"
    );

    assert!(store.delete_session(&started.id).unwrap());
    let sent = db.take();
    assert_eq!(sent.len(), expected(1, 6), "{sent:#?}");
    assert!(!store.delete_session(&started.id).unwrap());
    db.take();
    assert_eq!(sessions(), 1);

    // Recorded as behind: each is refused inside its statement, migrates, and acts once.
    record_schema_as_behind(&db.db);
    store.start_session(|| ids.next().unwrap()).unwrap();
    assert_eq!(schema_version(&db.db).unwrap(), Some(LATEST_SCHEMA_VERSION));
    assert_eq!(sessions(), 2, "one session started, not two");

    record_schema_as_behind(&db.db);
    let outcome = store
        .rate_answer(&held.id, answer.id, Rating::Up, None, Some("better now"))
        .unwrap();
    assert_eq!(outcome, RatingOutcome::Rated);
    assert_eq!(schema_version(&db.db).unwrap(), Some(LATEST_SCHEMA_VERSION));
    assert_eq!(rating().as_deref(), Some("up"));

    record_schema_as_behind(&db.db);
    assert!(store.delete_session(&held.id).unwrap());
    assert_eq!(schema_version(&db.db).unwrap(), Some(LATEST_SCHEMA_VERSION));
    assert_eq!(sessions(), 1);
    assert_eq!(rating(), None, "the rating went with its session");
}

/// Never migrated: a rating migrates, then finds no such session.
fn a_rating_on_a_database_never_migrated_finds_no_session<B: Backend>(backend: &B) {
    let db = backend.connect();
    let outcome = SessionStore::new(&db)
        .rate_answer("never-issued", 1, Rating::Up, None, None)
        .unwrap();
    assert_eq!(outcome, RatingOutcome::UnknownSession);
    assert_eq!(schema_version(&db).unwrap(), Some(LATEST_SCHEMA_VERSION));
}

/// Never migrated: a delete migrates, then finds no such session.
fn a_delete_on_a_database_never_migrated_finds_no_session<B: Backend>(backend: &B) {
    let db = backend.connect();
    assert!(!SessionStore::new(&db)
        .delete_session("never-issued")
        .unwrap());
    assert_eq!(schema_version(&db).unwrap(), Some(LATEST_SCHEMA_VERSION));
}

/// Never migrated: starting a session migrates, then stores it.
fn a_session_starts_on_a_database_never_migrated<B: Backend>(backend: &B) {
    let db = backend.connect();
    let store = SessionStore::new(&db);
    let session = store.start_session(|| "first-ever".to_owned()).unwrap();
    assert_eq!(schema_version(&db).unwrap(), Some(LATEST_SCHEMA_VERSION));
    let stored = store.get_session(&session.id, 1, None).unwrap();
    assert_eq!(stored.map(|page| page.session), Some(session));
}

/// A rating says which of the three it came to, and stores nothing unless it rated: an
/// unknown session and an answer that is not the session's (another session's, a question, no
/// such message) are told apart only for the holder of a real session's id.
fn a_rating_tells_an_unknown_session_from_an_unknown_answer<B: Backend>(backend: &B) {
    let db = ready(backend);
    let store = SessionStore::new(&db);
    let (question, answer) = sessions_a_and_b(&store);
    let rate = |session: &str, message: i64| {
        store
            .rate_answer(session, message, Rating::Up, Some("clear"), Some("thanks"))
            .unwrap()
    };
    assert_eq!(rate("nope", answer.id), RatingOutcome::UnknownSession);
    assert_eq!(rate("b", answer.id), RatingOutcome::UnknownAnswer);
    assert_eq!(rate("a", question.id), RatingOutcome::UnknownAnswer);
    assert_eq!(rate("a", 9_999_999), RatingOutcome::UnknownAnswer);
    assert_eq!(count(&db, "SELECT COUNT(*) AS n FROM feedback", &[]), 0);
    assert_eq!(rate("a", answer.id), RatingOutcome::Rated);
    let page = store.get_session("a", 10, None).unwrap().unwrap();
    let feedback = page.messages[1].feedback.clone().unwrap();
    assert_eq!(
        (
            feedback.rating,
            feedback.reason.as_deref(),
            feedback.comment.as_deref()
        ),
        (Rating::Up, Some("clear"), Some("thanks"))
    );
    assert!(matches!(
        store.rate_answer("a", answer.id, Rating::Up, Some("nul\0"), None),
        Err(StoreError::Invalid(_))
    ));
}

/// `discard_answer` takes back only an incomplete answer of the session it names, with its
/// rating; the question before it, complete answers and other sessions' answers stay.
fn only_an_unwritten_answer_is_discarded<B: Backend>(backend: &B) {
    let db = ready(backend);
    let store = SessionStore::new(&db);
    store.create_session("held").unwrap();
    store.create_session("other").unwrap();
    let answered = store
        .append_exchange("held", "q1", "a1", "[]", MessageStatus::Complete)
        .unwrap();
    let pending = store
        .append_exchange("held", "q2", "", "[]", MessageStatus::Incomplete)
        .unwrap();
    assert!(store
        .set_feedback("held", pending.id, Rating::Down, None, None)
        .unwrap());

    assert!(!store.discard_answer("other", pending.id).unwrap());
    assert!(!store.discard_answer("held", answered.id).unwrap());
    assert!(
        !store.discard_answer("held", answered.id - 1).unwrap(),
        "a question"
    );
    assert!(store.discard_answer("held", pending.id).unwrap());
    assert!(!store.discard_answer("held", pending.id).unwrap());

    let page = store.get_session("held", 10, None).unwrap().unwrap();
    let kept: Vec<_> = page
        .messages
        .iter()
        .map(|m| (m.role, m.content.as_str()))
        .collect();
    assert_eq!(
        kept,
        [
            (Role::User, "q1"),
            (Role::Assistant, "a1"),
            (Role::User, "q2")
        ]
    );
    assert_eq!(count(&db, "SELECT COUNT(*) AS n FROM feedback", &[]), 0);
}

/// After this release migrates a database, the release before it still starts sessions there
/// (a rollback): its statement names the view's columns and leaves out the version, which the
/// check then lets through. PostgreSQL's tables did not change, so only SQLite's view matters.
fn the_previous_release_still_starts_sessions<B: Backend>(backend: &B) {
    let db = ready(backend);
    if db.dialect() == Dialect::Postgres {
        return;
    }
    let previous_release =
        "INSERT INTO session_starts (session_id, question, answer, sources, status) \
         VALUES (?1, ?2, ?3, ?4, ?5)";
    let key = session_key("rolled-back");
    db.execute(
        previous_release,
        &[
            key.as_str().into(),
            "q".into(),
            "a".into(),
            "[]".into(),
            "complete".into(),
        ],
    )
    .unwrap();
    let messages = count(
        &db,
        "SELECT COUNT(*) AS n FROM messages WHERE session_id = ?1",
        &[key.into()],
    );
    assert_eq!(messages, 2);
}

/// A database an older release left at the previous version gets the latest before the first
/// question's write lands.
fn a_first_exchange_on_the_previous_version_migrates<B: Backend>(backend: &B) {
    let db = backend.connect();
    migrate_to(&db, LATEST_SCHEMA_VERSION - 1).unwrap();
    let store = SessionStore::new(&db);
    let (session, answer) = store
        .start_session_with_exchange(
            || "from-an-older-release".to_owned(),
            "q",
            "a",
            "[]",
            MessageStatus::Complete,
        )
        .unwrap();
    assert_eq!(schema_version(&db).unwrap(), Some(LATEST_SCHEMA_VERSION));
    let page = store.get_session(&session.id, 10, None).unwrap().unwrap();
    assert_eq!(page.messages.len(), 2);
    assert_eq!(page.messages[1].id, answer.id);
}

fn append_order_and_pagination<B: Backend>(backend: &B) {
    let db = ready(backend);
    let store = SessionStore::new(&db);
    store.create_session("paged").unwrap();
    let mut ids = Vec::new();
    for n in 1..=7 {
        let role = if n % 2 == 1 {
            Role::User
        } else {
            Role::Assistant
        };
        let record = store
            .append_message(
                "paged",
                role,
                &format!("m{n}"),
                "[]",
                MessageStatus::Complete,
            )
            .unwrap();
        ids.push(record.id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");

    let contents = |page: &rag_core::store::SessionPage| -> Vec<String> {
        page.messages.iter().map(|m| m.content.clone()).collect()
    };
    let newest = store.get_session("paged", 3, None).unwrap().unwrap();
    assert_eq!(contents(&newest), ["m5", "m6", "m7"]);
    assert_eq!(newest.next_before, Some(ids[4]));
    assert_eq!(newest.messages[0].role, Role::User);
    assert_eq!(newest.messages[1].role, Role::Assistant);

    let middle = store
        .get_session("paged", 3, newest.next_before)
        .unwrap()
        .unwrap();
    assert_eq!(contents(&middle), ["m2", "m3", "m4"]);
    assert_eq!(middle.next_before, Some(ids[1]));

    let oldest = store
        .get_session("paged", 3, middle.next_before)
        .unwrap()
        .unwrap();
    assert_eq!(contents(&oldest), ["m1"]);
    assert_eq!(oldest.next_before, None);

    let exact = store.get_session("paged", 7, None).unwrap().unwrap();
    assert_eq!(exact.messages.len(), 7);
    assert_eq!(
        exact.next_before, None,
        "no older page when the page ends at the start"
    );

    let clamped_low = store.get_session("paged", 0, None).unwrap().unwrap();
    assert_eq!(contents(&clamped_low), ["m7"]);
    let clamped_high = store
        .get_session("paged", usize::MAX, None)
        .unwrap()
        .unwrap();
    assert_eq!(clamped_high.messages.len(), 7);

    let before_first = store
        .get_session("paged", 50, Some(ids[0]))
        .unwrap()
        .unwrap();
    assert!(before_first.messages.is_empty());
    assert_eq!(before_first.next_before, None);
}

fn update_answer_writes_a_streamed_answer_of_its_session_only<B: Backend>(backend: &B) {
    let db = ready(backend);
    let store = SessionStore::new(&db);
    store.create_session("stream").unwrap();
    store.create_session("other").unwrap();
    let question = store
        .append_message(
            "stream",
            Role::User,
            "Lidar?",
            "[]",
            MessageStatus::Complete,
        )
        .unwrap();
    let sources = r#"[{"title":"Sensors","url":"https://book/sensors#lidar","score":0.91}]"#;
    let record = store
        .append_message(
            "stream",
            Role::Assistant,
            "",
            sources,
            MessageStatus::Incomplete,
        )
        .unwrap();
    assert!(store
        .update_answer("stream", record.id, "Partial", MessageStatus::Incomplete)
        .unwrap());
    let partial = store.get_session("stream", 50, None).unwrap().unwrap();
    assert_eq!(partial.messages[1].content, "Partial");
    assert_eq!(partial.messages[1].status, MessageStatus::Incomplete);

    assert!(store
        .update_answer(
            "stream",
            record.id,
            "Partial answer, finished.",
            MessageStatus::Complete
        )
        .unwrap());
    // Another session's id, or a question, is never written this way.
    assert!(!store
        .update_answer("other", record.id, "forged", MessageStatus::Complete)
        .unwrap());
    assert!(!store
        .update_answer("stream", question.id, "forged", MessageStatus::Complete)
        .unwrap());
    let done = store.get_session("stream", 50, None).unwrap().unwrap();
    assert_eq!(done.messages[0].content, "Lidar?");
    let message = &done.messages[1];
    assert_eq!(message.id, record.id);
    assert_eq!(message.content, "Partial answer, finished.");
    assert_eq!(message.sources, sources, "the sources stored with it stay");
    assert_eq!(message.sources_json().unwrap()[0]["score"], 0.91);
    assert_eq!(message.status, MessageStatus::Complete);
    assert_eq!(message.created_at, record.created_at);
}

fn feedback_is_replaced<B: Backend>(backend: &B) {
    let db = ready(backend);
    let store = SessionStore::new(&db);
    store.create_session("rated").unwrap();
    let answer = store
        .append_message(
            "rated",
            Role::Assistant,
            "answer",
            "[]",
            MessageStatus::Complete,
        )
        .unwrap();
    let unrated = store.get_session("rated", 50, None).unwrap().unwrap();
    assert_eq!(unrated.messages[0].feedback, None);

    assert!(store
        .set_feedback(
            "rated",
            answer.id,
            Rating::Down,
            Some("wrong citation"),
            Some("Page 3 says otherwise.")
        )
        .unwrap());
    let first = store
        .get_session("rated", 50, None)
        .unwrap()
        .unwrap()
        .messages[0]
        .feedback
        .clone()
        .unwrap();
    assert_eq!(first.rating, Rating::Down);
    assert_eq!(first.reason.as_deref(), Some("wrong citation"));
    assert_eq!(first.comment.as_deref(), Some("Page 3 says otherwise."));
    assert_timestamp(&first.rated_at);

    assert!(store
        .set_feedback("rated", answer.id, Rating::Up, None, None)
        .unwrap());
    let second = store
        .get_session("rated", 50, None)
        .unwrap()
        .unwrap()
        .messages[0]
        .feedback
        .clone()
        .unwrap();
    assert_eq!(second.rating, Rating::Up);
    assert_eq!(
        second.reason, None,
        "the new rating replaces the old one whole"
    );
    assert_eq!(second.comment, None);
    assert!(second.rated_at >= first.rated_at);
    let rows = count(&db, "SELECT count(*) AS n FROM feedback", &[]);
    assert_eq!(rows, 1);
}

fn recent_turns_fit_the_budget<B: Backend>(backend: &B) {
    let db = ready(backend);
    let store = SessionStore::new(&db);
    store.create_session("ctx").unwrap();
    let other = "other session";
    store.create_session(other).unwrap();
    store
        .append_message(other, Role::User, "not mine", "[]", MessageStatus::Complete)
        .unwrap();
    for (role, content, status) in [
        (Role::User, "aaaa", MessageStatus::Complete),
        (Role::Assistant, "bbbbbb", MessageStatus::Complete),
        (Role::User, "🙂é", MessageStatus::Complete),
        (
            Role::Assistant,
            "cut off mid-sent",
            MessageStatus::Incomplete,
        ),
    ] {
        store
            .append_message("ctx", role, content, "[]", status)
            .unwrap();
    }
    let turn = |role, content: &str| Turn {
        role,
        content: content.to_owned(),
    };
    assert_eq!(store.recent_turns("ctx", 0).unwrap(), []);
    assert_eq!(store.recent_turns("ctx", 1).unwrap(), []);
    // Characters, not bytes: "🙂é" is 2 characters and 6 bytes.
    assert_eq!(
        store.recent_turns("ctx", 2).unwrap(),
        [turn(Role::User, "🙂é")]
    );
    assert_eq!(
        store.recent_turns("ctx", 7).unwrap(),
        [turn(Role::User, "🙂é")]
    );
    assert_eq!(
        store.recent_turns("ctx", 8).unwrap(),
        [turn(Role::Assistant, "bbbbbb"), turn(Role::User, "🙂é")]
    );
    assert_eq!(
        store.recent_turns("ctx", 11).unwrap(),
        [turn(Role::Assistant, "bbbbbb"), turn(Role::User, "🙂é")],
        "stops at the first turn that does not fit"
    );
    assert_eq!(
        store.recent_turns("ctx", usize::MAX).unwrap(),
        [
            turn(Role::User, "aaaa"),
            turn(Role::Assistant, "bbbbbb"),
            turn(Role::User, "🙂é"),
        ]
    );
}

fn hostile_text_is_stored_verbatim<B: Backend>(backend: &B) {
    let db = ready(backend);
    let store = SessionStore::new(&db);
    let hostile_id = "x'); DROP TABLE sessions; --";
    store.create_session(hostile_id).unwrap();
    let texts = [
        "'; DROP TABLE messages; --",
        "Robert'); DELETE FROM feedback WHERE ('1'='1",
        "$1 ?1 ?2 {now} %s %d \\ \\\\ \" ` ; -- /* */",
        "emoji 🤖🦾👩🏽‍🔬 flags 🇯🇵 and ZWJ",
        "مرحبا بالعالم — עברית \u{202E}reversed\u{202C} mixed",
        "controls \u{1}\u{7}\u{8}\t\r\n\u{1b}[31mred\u{1b}[0m \u{7f} \u{FEFF}bom \u{200B}zw",
        "combining e\u{301} and 한국어 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        "",
    ];
    let mut ids = Vec::new();
    for text in texts {
        let sources =
            serde_json::json!([{ "title": text, "url": "https://book/x?q='--" }]).to_string();
        let record = store
            .append_message(
                hostile_id,
                Role::Assistant,
                text,
                &sources,
                MessageStatus::Complete,
            )
            .unwrap();
        assert!(store
            .set_feedback(hostile_id, record.id, Rating::Down, Some(text), Some(text))
            .unwrap());
        ids.push((record.id, text, sources));
    }
    let page = store.get_session(hostile_id, 200, None).unwrap().unwrap();
    assert_eq!(page.session.id, hostile_id);
    assert_eq!(page.messages.len(), texts.len());
    for (message, (id, text, sources)) in page.messages.iter().zip(&ids) {
        assert_eq!(message.id, *id);
        assert_eq!(message.content, *text);
        assert_eq!(&message.sources, sources);
        let feedback = message.feedback.as_ref().unwrap();
        assert_eq!(feedback.reason.as_deref(), Some(*text));
        assert_eq!(feedback.comment.as_deref(), Some(*text));
    }
    let turns = store.recent_turns(hostile_id, usize::MAX).unwrap();
    let contents: Vec<&str> = turns.iter().map(|t| t.content.as_str()).collect();
    assert_eq!(contents, texts);
    // Every table is still there and intact.
    assert_eq!(count(&db, "SELECT count(*) AS n FROM sessions", &[]), 1);
    assert_eq!(
        count(&db, "SELECT count(*) AS n FROM messages", &[]),
        texts.len() as i64
    );
    assert_eq!(
        count(&db, "SELECT count(*) AS n FROM feedback", &[]),
        texts.len() as i64
    );

    // NUL is refused the same way on both backends, before reaching the database.
    let nul = store.append_message(
        hostile_id,
        Role::User,
        "a\0b",
        "[]",
        MessageStatus::Complete,
    );
    match nul {
        Err(StoreError::Invalid(error)) => assert_eq!(error.field, "content"),
        other => panic!("expected a field error, got {other:?}"),
    }
    assert!(store.delete_session(hostile_id).unwrap());
}

fn concurrent_appends_lose_nothing<B: Backend>(backend: &B) {
    const THREADS: usize = 8;
    const APPENDS: usize = 100;
    {
        let db = ready(backend);
        SessionStore::new(&db).create_session("busy").unwrap();
    }
    let start = Barrier::new(THREADS);
    let observed: Vec<Vec<(i64, String)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|thread| {
                let start = &start;
                scope.spawn(move || {
                    let db = backend.connect();
                    let store = SessionStore::new(&db);
                    start.wait();
                    (thread..APPENDS)
                        .step_by(THREADS)
                        .map(|n| {
                            let content = format!("thread {thread} message {n}");
                            let record = store
                                .append_message(
                                    "busy",
                                    Role::User,
                                    &content,
                                    "[]",
                                    MessageStatus::Complete,
                                )
                                .expect("concurrent append");
                            (record.id, content)
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for appends in &observed {
        assert!(
            appends.windows(2).all(|w| w[0].0 < w[1].0),
            "ids grow in the order each thread appended: {appends:?}"
        );
    }
    let mut expected: Vec<(i64, String)> = observed.into_iter().flatten().collect();
    expected.sort();
    assert_eq!(expected.len(), APPENDS);
    let unique_ids: BTreeSet<i64> = expected.iter().map(|(id, _)| *id).collect();
    assert_eq!(unique_ids.len(), APPENDS, "no id handed out twice");

    let db = backend.connect();
    let page = SessionStore::new(&db)
        .get_session("busy", 200, None)
        .unwrap()
        .unwrap();
    let stored: Vec<(i64, String)> = page
        .messages
        .into_iter()
        .map(|m| (m.id, m.content))
        .collect();
    assert_eq!(stored, expected, "every append stored, in id order");
}
