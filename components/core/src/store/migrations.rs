//! Versioned schema migrations, one list for both dialects.
//!
//! Components call [`ensure_schema`] on every request that reads or changes stored sessions:
//! when the schema is current that costs a single query. A first question, which only writes,
//! skips it: its one write statement carries the version check (version 4). When the schema is
//! behind, [`migrate`] applies what is missing inside one transaction that first serialises
//! every replica starting at once: PostgreSQL holds a transaction-scoped advisory lock, SQLite
//! takes its write lock with `BEGIN IMMEDIATE`. Each applied version is recorded in
//! `schema_migrations(version, applied_at)`.
//!
//! Schema (version 1):
//! - `sessions(id TEXT PRIMARY KEY, created_at TEXT)`.
//! - `messages(id, session_id -> sessions ON DELETE CASCADE, role 'user'|'assistant', content,
//!   sources TEXT holding a JSON array, status 'complete'|'incomplete', created_at)`; `id` is a
//!   BIGINT identity on PostgreSQL and an `INTEGER PRIMARY KEY AUTOINCREMENT` on SQLite, so ids
//!   are never reused and grow with insertion order.
//! - `feedback(message_id PRIMARY KEY -> messages ON DELETE CASCADE, rating 'up'|'down', reason,
//!   comment, rated_at)`: a table rather than columns on `messages`, so a message without a
//!   rating carries no empty columns and a new rating replaces the old one by primary key.
//!
//! Version 2 keeps the tables and changes what the keys hold: `sessions.id` and
//! `messages.session_id` are the SHA-256 digest of the session id (see
//! [`session_key`](super::session_key)), never the id itself. Stored sessions are rewritten
//! under their digest, so readers holding an id the server issued keep their history; a session
//! whose id a client chose (any other shape, e.g. "demo") was readable by anyone who guessed
//! it, is no one's capability, and is deleted with its messages and ratings.

use super::session_ids::{has_issued_shape, session_key};
use super::sessions::delete_stored_session;
use super::{in_transaction, Database, Dialect, SqlValue, StoreError};

/// One schema change, written once per dialect.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub description: &'static str,
    pub postgres: &'static [&'static str],
    pub sqlite: &'static [&'static str],
    /// What the PostgreSQL statements do in SQL but SQLite cannot (it has no SHA-256), done
    /// in Rust on SQLite after its statements, inside the same transaction.
    pub sqlite_rewrite: Option<Rewrite>,
}

/// Row rewrites done in Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    /// Re-keys every session under the digest of its id; deletes client-chosen ones.
    SessionIdsToDigests,
}

impl Migration {
    fn statements(&self, dialect: Dialect) -> &'static [&'static str] {
        match dialect {
            Dialect::Postgres => self.postgres,
            Dialect::Sqlite => self.sqlite,
        }
    }
}

/// Every migration, in version order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "sessions, messages and feedback",
        postgres: &[
            r#"CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL
                DEFAULT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
        )"#,
            r#"CREATE TABLE messages (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
            content TEXT NOT NULL,
            sources TEXT NOT NULL DEFAULT '[]',
            status TEXT NOT NULL CHECK (status IN ('complete', 'incomplete')),
            created_at TEXT NOT NULL
                DEFAULT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
        )"#,
            "CREATE INDEX messages_session_id_id ON messages (session_id, id)",
            r#"CREATE TABLE feedback (
            message_id BIGINT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
            rating TEXT NOT NULL CHECK (rating IN ('up', 'down')),
            reason TEXT,
            comment TEXT,
            rated_at TEXT NOT NULL
                DEFAULT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
        )"#,
        ],
        sqlite: &[
            "CREATE TABLE sessions (
            id TEXT PRIMARY KEY NOT NULL,
            created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        )",
            "CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
            content TEXT NOT NULL,
            sources TEXT NOT NULL DEFAULT '[]',
            status TEXT NOT NULL CHECK (status IN ('complete', 'incomplete')),
            created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        )",
            "CREATE INDEX messages_session_id_id ON messages (session_id, id)",
            "CREATE TABLE feedback (
            message_id INTEGER PRIMARY KEY NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
            rating TEXT NOT NULL CHECK (rating IN ('up', 'down')),
            reason TEXT,
            comment TEXT,
            rated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        )",
        ],
        sqlite_rewrite: None,
    },
    Migration {
        version: 2,
        description: "sessions keyed by the SHA-256 digest of their id",
        // Set-based, so a large table costs four statements, not round trips per session:
        // client-chosen ids go first (their messages and ratings by ON DELETE CASCADE), each
        // remaining session is copied under its digest, messages follow, and the old rows
        // (22 or 32 characters; digests have 64) are deleted. Same shapes as
        // `has_issued_shape`.
        postgres: &[
            "DELETE FROM sessions WHERE id !~ '^([A-Za-z0-9_-]{22}|[0-9a-f]{32})$'",
            "INSERT INTO sessions (id, created_at) \
             SELECT encode(sha256(convert_to(id, 'UTF8')), 'hex'), created_at FROM sessions",
            "UPDATE messages SET session_id = encode(sha256(convert_to(session_id, 'UTF8')), 'hex')",
            "DELETE FROM sessions WHERE length(id) <> 64",
        ],
        sqlite: &[],
        sqlite_rewrite: Some(Rewrite::SessionIdsToDigests),
    },
    Migration {
        version: 3,
        description: "a new session with its first exchange in one SQLite statement",
        // PostgreSQL does the same with a data-modifying WITH; SQLite has none, and a trigger
        // on a view is its way to write two tables in one statement (one write transaction
        // instead of two; see `SessionStore::start_session_with_exchange`). The view has no
        // rows: it exists to be inserted into. A taken id fails the whole statement with the
        // message `sessions.rs` recognises (`SQLITE_ID_TAKEN`).
        postgres: &[],
        sqlite: &[
            "CREATE VIEW session_starts (session_id, question, answer, sources, status) AS \
             SELECT NULL, NULL, NULL, NULL, NULL WHERE 0",
            "CREATE TRIGGER session_starts_insert INSTEAD OF INSERT ON session_starts BEGIN \
                 SELECT RAISE(ABORT, 'session id taken') \
                     WHERE EXISTS (SELECT 1 FROM sessions WHERE id = NEW.session_id); \
                 INSERT INTO sessions (id) VALUES (NEW.session_id); \
                 INSERT INTO messages (session_id, role, content, sources, status) \
                     VALUES (NEW.session_id, 'user', NEW.question, '[]', 'complete'); \
                 INSERT INTO messages (session_id, role, content, sources, status) \
                     VALUES (NEW.session_id, 'assistant', NEW.answer, NEW.sources, NEW.status); \
             END",
        ],
        sqlite_rewrite: None,
    },
    Migration {
        version: 4,
        description: "a first exchange checks the schema version itself",
        // The writer names the version it was built for, and the trigger refuses an older
        // database, so a first question needs no version read before it: on a refusal (or a
        // database with no view yet) the writer migrates and writes again (see
        // `SessionStore::start_session_with_exchange`). PostgreSQL's statement reads the
        // version in the same statement.
        postgres: &[],
        sqlite: &[
            "DROP TRIGGER session_starts_insert",
            "DROP VIEW session_starts",
            "CREATE VIEW session_starts \
             (session_id, question, answer, sources, status, schema_version) AS \
             SELECT NULL, NULL, NULL, NULL, NULL, NULL WHERE 0",
            "CREATE TRIGGER session_starts_insert INSTEAD OF INSERT ON session_starts BEGIN \
                 SELECT RAISE(ABORT, 'schema behind') \
                     WHERE coalesce((SELECT max(version) FROM schema_migrations), 0) \
                         < NEW.schema_version; \
                 SELECT RAISE(ABORT, 'session id taken') \
                     WHERE EXISTS (SELECT 1 FROM sessions WHERE id = NEW.session_id); \
                 INSERT INTO sessions (id) VALUES (NEW.session_id); \
                 INSERT INTO messages (session_id, role, content, sources, status) \
                     VALUES (NEW.session_id, 'user', NEW.question, '[]', 'complete'); \
                 INSERT INTO messages (session_id, role, content, sources, status) \
                     VALUES (NEW.session_id, 'assistant', NEW.answer, NEW.sources, NEW.status); \
             END",
        ],
        sqlite_rewrite: None,
    },
];

/// The version the code expects: the last entry of [`MIGRATIONS`].
pub const LATEST_SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Any constant shared by every replica; the bytes spell "ragsessn".
const MIGRATION_LOCK_KEY: i64 = 0x7261_6773_6573_736e;

/// What [`ensure_schema`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaStatus {
    /// The schema was already at (or past) [`LATEST_SCHEMA_VERSION`]; nothing was locked.
    Current,
    /// These versions were applied now, in order (empty if another replica got there first).
    Migrated(Vec<i64>),
}

/// The highest applied version, or `None` on a database never migrated.
///
/// A missing `schema_migrations` table shows up as a query error, which this cannot tell apart
/// from other statement failures without parsing messages; use it where "never migrated" and
/// "broken" need no distinction, as [`ensure_schema`] does.
pub fn schema_version(db: &(impl Database + ?Sized)) -> Result<Option<i64>, StoreError> {
    let rows = db.query("SELECT max(version) AS version FROM schema_migrations", &[])?;
    match rows.first() {
        Some(row) => row.opt_integer("version"),
        None => Ok(None),
    }
}

/// Brings the schema up to date, cheaply when it already is: one query on the fast path, the
/// locked [`migrate`] otherwise. An unreachable database fails at once rather than trying twice.
pub fn ensure_schema(db: &(impl Database + ?Sized)) -> Result<SchemaStatus, StoreError> {
    match schema_version(db) {
        Ok(Some(version)) if version >= LATEST_SCHEMA_VERSION => Ok(SchemaStatus::Current),
        Err(error @ StoreError::Unavailable(_)) => Err(error),
        // Never migrated (no table yet), behind, or a failure migrate() will report clearly.
        _ => migrate(db).map(SchemaStatus::Migrated),
    }
}

/// Applies every pending migration in one transaction, serialised against concurrent callers,
/// and returns the versions it applied. Safe to call any number of times.
pub fn migrate(db: &(impl Database + ?Sized)) -> Result<Vec<i64>, StoreError> {
    migrate_to(db, LATEST_SCHEMA_VERSION)
}

/// [`migrate`], stopping after version `target`: lets tests build a database as an older
/// release left it.
pub fn migrate_to(db: &(impl Database + ?Sized), target: i64) -> Result<Vec<i64>, StoreError> {
    let dialect = db.dialect();
    in_transaction(db, |db| {
        if dialect == Dialect::Postgres {
            // Released by COMMIT or ROLLBACK; a replica that waited here then finds the
            // versions already recorded and applies nothing.
            db.execute(
                &format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"),
                &[],
            )?;
        }
        db.execute(
            &dialect.render(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version BIGINT PRIMARY KEY NOT NULL,
                    applied_at TEXT NOT NULL
                )",
            ),
            &[],
        )?;
        let applied = db.query("SELECT version FROM schema_migrations", &[])?;
        let applied = applied
            .iter()
            .map(|row| row.integer("version"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut newly_applied = Vec::new();
        let pending = MIGRATIONS
            .iter()
            .filter(|m| m.version <= target && !applied.contains(&m.version));
        for migration in pending {
            for statement in migration.statements(dialect) {
                db.execute(statement, &[]).map_err(|error| match error {
                    StoreError::Query(message) => StoreError::Query(format!(
                        "migration {} ({}): {message}",
                        migration.version, migration.description
                    )),
                    other => other,
                })?;
            }
            if dialect == Dialect::Sqlite {
                match migration.sqlite_rewrite {
                    Some(Rewrite::SessionIdsToDigests) => session_ids_to_digests(db)?,
                    None => {}
                }
            }
            db.execute(
                &dialect.render(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, {now})",
                ),
                &[SqlValue::Integer(migration.version)],
            )?;
            newly_applied.push(migration.version);
        }
        Ok(newly_applied)
    })
}

/// Migration 2 on SQLite, session by session (a local file: 10,000 sessions take about 0.3 s).
/// Each is copied under its digest, its messages moved over, and the old row deleted, so every
/// message points at an existing session throughout, whether or not the connection enforces
/// foreign keys.
fn session_ids_to_digests<D: Database + ?Sized>(db: &D) -> Result<(), StoreError> {
    let dialect = db.dialect();
    let stored = db.query("SELECT id FROM sessions", &[])?;
    for row in stored.iter() {
        let id = row.text("id")?;
        if !has_issued_shape(&id) {
            delete_stored_session(db, &id)?;
            continue;
        }
        let params = [SqlValue::from(id.as_str()), session_key(&id).into()];
        db.execute(
            &dialect.render(
                "INSERT INTO sessions (id, created_at) SELECT $2, created_at FROM sessions \
                 WHERE id = $1",
            ),
            &params,
        )?;
        db.execute(
            &dialect.render("UPDATE messages SET session_id = $2 WHERE session_id = $1"),
            &params,
        )?;
        db.execute(
            &dialect.render("DELETE FROM sessions WHERE id = $1"),
            &params[..1],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_increasing_and_each_changes_something() {
        let mut previous = 0;
        for migration in MIGRATIONS {
            assert!(migration.version > previous);
            let sqlite_changes = !migration.sqlite.is_empty() || migration.sqlite_rewrite.is_some();
            assert!(
                sqlite_changes || !migration.postgres.is_empty(),
                "version {} changes nothing",
                migration.version
            );
            previous = migration.version;
        }
        assert_eq!(LATEST_SCHEMA_VERSION, previous);
        // The tables themselves exist on both.
        assert_eq!(MIGRATIONS[0].postgres.len(), MIGRATIONS[0].sqlite.len());
    }
}
