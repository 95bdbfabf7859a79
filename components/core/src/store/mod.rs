//! Session storage, the same on PostgreSQL and SQLite, spoken through the [`Database`] trait.
//!
//! The crate never opens a connection: a component wraps the connection its host hands it
//! (Spin's `pg4::Connection` or `sqlite3::Connection`) in a [`Database`] adapter, and tests wrap
//! `postgres::Client` or `rusqlite::Connection` the same way. Every statement is sent on that one
//! connection, one at a time, so `BEGIN` and `COMMIT` sent as separate statements frame a
//! transaction.
//!
//! Values cross the trait as [`SqlValue`]s: the schema keeps to TEXT and BIGINT columns so that
//! a host binding typed parameters (Spin's pg4 binds `i64` as BIGINT, `String` as TEXT) needs no
//! casts. Timestamps are RFC 3339 UTC text with milliseconds (`2026-11-23T15:04:05.123Z`),
//! produced by the database itself so both backends return the same shape.

mod migrations;
mod session_ids;
mod sessions;
#[cfg(feature = "sqlite")]
mod sqlite;
mod validation;

pub use migrations::{
    ensure_schema, migrate, migrate_to, schema_version, Migration, Rewrite, SchemaStatus,
    LATEST_SCHEMA_VERSION, MIGRATIONS,
};
pub use session_ids::{
    session_id_from_random, session_key, SESSION_ID_CHARS, SESSION_ID_RANDOM_BYTES,
};
pub use sessions::{
    Feedback, Message, MessageRecord, MessageStatus, RatingOutcome, Role, Session, SessionPage,
    SessionStore, Turn, UNKNOWN_SESSION,
};
pub use validation::{
    page_before, page_limit, valid_session_id, validate_comment, validate_reason,
    validate_session_id, FieldError, Rating, COMMENT_MAX_CHARS, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT,
    REASON_MAX_CHARS, SESSION_ID_MAX_CHARS,
};

use std::fmt;

/// A value bound to a statement parameter or read from a result column.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
}

impl SqlValue {
    fn kind(&self) -> &'static str {
        match self {
            SqlValue::Null => "null",
            SqlValue::Integer(_) => "integer",
            SqlValue::Real(_) => "real",
            SqlValue::Text(_) => "text",
        }
    }
}

impl From<i64> for SqlValue {
    fn from(value: i64) -> Self {
        SqlValue::Integer(value)
    }
}

impl From<&str> for SqlValue {
    fn from(value: &str) -> Self {
        SqlValue::Text(value.to_owned())
    }
}

impl From<String> for SqlValue {
    fn from(value: String) -> Self {
        SqlValue::Text(value)
    }
}

impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(value: Option<T>) -> Self {
        value.map_or(SqlValue::Null, Into::into)
    }
}

/// The result of a query: column names (as the database spells them) and rows of values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<SqlValue>>,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rows with access to their values by column name.
    pub fn iter(&self) -> impl Iterator<Item = Row<'_>> {
        self.rows.iter().map(|values| Row {
            columns: &self.columns,
            values,
        })
    }

    /// The first row, if any.
    pub fn first(&self) -> Option<Row<'_>> {
        self.iter().next()
    }
}

/// One row of [`Rows`], read by column name with typed getters.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    columns: &'a [String],
    values: &'a [SqlValue],
}

impl<'a> Row<'a> {
    /// The raw value of a column; a missing column is a [`StoreError::Query`].
    pub fn get(&self, column: &str) -> Result<&'a SqlValue, StoreError> {
        self.columns
            .iter()
            .position(|name| name.eq_ignore_ascii_case(column))
            .and_then(|index| self.values.get(index))
            .ok_or_else(|| StoreError::Query(format!("result has no column {column}")))
    }

    pub fn integer(&self, column: &str) -> Result<i64, StoreError> {
        self.opt_integer(column)?
            .ok_or_else(|| unexpected(column, "integer", &SqlValue::Null))
    }

    pub fn opt_integer(&self, column: &str) -> Result<Option<i64>, StoreError> {
        match self.get(column)? {
            SqlValue::Integer(value) => Ok(Some(*value)),
            SqlValue::Null => Ok(None),
            other => Err(unexpected(column, "integer", other)),
        }
    }

    pub fn text(&self, column: &str) -> Result<String, StoreError> {
        self.opt_text(column)?
            .ok_or_else(|| unexpected(column, "text", &SqlValue::Null))
    }

    pub fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        match self.get(column)? {
            SqlValue::Text(value) => Ok(Some(value.clone())),
            SqlValue::Null => Ok(None),
            other => Err(unexpected(column, "text", other)),
        }
    }
}

fn unexpected(column: &str, wanted: &str, found: &SqlValue) -> StoreError {
    StoreError::Query(format!(
        "column {column}: expected {wanted}, found {}",
        found.kind()
    ))
}

/// Which SQL the database speaks; statements are written once per dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// The current time as RFC 3339 UTC text with milliseconds, computed by the database.
    /// `clock_timestamp()` rather than `now()`, which stays fixed for a whole transaction.
    pub(crate) fn now_utc(self) -> &'static str {
        match self {
            Dialect::Postgres => {
                r#"to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"#
            }
            Dialect::Sqlite => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        }
    }

    /// The statement that opens a transaction. SQLite takes the write lock at once: a deferred
    /// transaction that later writes can fail with SQLITE_BUSY without waiting.
    pub(crate) fn begin(self) -> &'static str {
        match self {
            Dialect::Postgres => "BEGIN",
            Dialect::Sqlite => "BEGIN IMMEDIATE",
        }
    }

    /// Renders a statement written with `$1`-style parameters and a `{now}` timestamp for this
    /// dialect. SQLite reads `$1` as a *named* parameter numbered by first appearance, so it
    /// gets `?1`, which is positional.
    pub(crate) fn render(self, template: &str) -> String {
        let with_now = template.replace("{now}", self.now_utc());
        match self {
            Dialect::Postgres => with_now,
            Dialect::Sqlite => {
                let mut rendered = String::with_capacity(with_now.len());
                let mut chars = with_now.chars().peekable();
                while let Some(c) = chars.next() {
                    if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
                        rendered.push('?');
                    } else {
                        rendered.push(c);
                    }
                }
                rendered
            }
        }
    }
}

/// PostgreSQL's SQLSTATE for a full disk (`disk_full`), which hosted PostgreSQL (Neon, say) also
/// raises when a project reaches its storage limit.
const SQLSTATE_DISK_FULL: &str = "53100";

/// Why a storage operation failed. Messages never carry connection strings or passwords:
/// adapters report what failed, not where they connected.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreError {
    /// The database could not be reached or refused the connection (503 `database_unavailable`).
    Unavailable(String),
    /// A statement failed (500 `database_error`).
    Query(String),
    /// The database's disk (or, on a hosted PostgreSQL, its storage quota) is full, so nothing
    /// can be written until the operator frees space; reads still work (503 `storage_full`).
    Full(String),
    /// The row already exists, e.g. creating a session under a taken id (409 `conflict`).
    /// Messages of this variant and of `NotFound` are written for clients and never hold ids.
    Conflict(String),
    /// The row an operation needs does not exist, e.g. appending to a deleted session (404).
    NotFound(String),
    /// A value the database cannot store, e.g. text with a NUL character (400).
    Invalid(FieldError),
}

impl StoreError {
    /// A PostgreSQL statement that failed with SQLSTATE `code`: a full disk is [`StoreError::Full`],
    /// anything else [`StoreError::Query`]; both keep the code and message for the log.
    pub fn from_sqlstate(code: &str, message: &str) -> Self {
        let logged = format!("{code}: {message}");
        if code == SQLSTATE_DISK_FULL {
            StoreError::Full(logged)
        } else {
            StoreError::Query(logged)
        }
    }

    /// The HTTP status this failure maps to.
    pub fn status(&self) -> u16 {
        match self {
            StoreError::Unavailable(_) => 503,
            StoreError::Query(_) => 500,
            StoreError::Full(_) => 503,
            StoreError::Conflict(_) => 409,
            StoreError::NotFound(_) => 404,
            StoreError::Invalid(_) => 400,
        }
    }

    /// The stable error code this failure maps to.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "database_unavailable",
            StoreError::Query(_) => "database_error",
            StoreError::Full(_) => "storage_full",
            StoreError::Conflict(_) => "conflict",
            StoreError::NotFound(_) => "not_found",
            StoreError::Invalid(_) => "invalid_request",
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(message) => write!(f, "database unavailable: {message}"),
            StoreError::Query(message) => write!(f, "database error: {message}"),
            StoreError::Full(message) => write!(f, "database storage full: {message}"),
            StoreError::Conflict(message) => write!(f, "conflict: {message}"),
            StoreError::NotFound(message) => write!(f, "not found: {message}"),
            StoreError::Invalid(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<FieldError> for StoreError {
    fn from(error: FieldError) -> Self {
        StoreError::Invalid(error)
    }
}

/// A connection to PostgreSQL or SQLite. Implementations send each statement on the same
/// connection, in order, and bind `params` positionally (`$1`/`?1` is `params[0]`).
pub trait Database {
    fn dialect(&self) -> Dialect;

    /// Runs a statement and returns the number of rows it changed.
    fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64, StoreError>;

    /// Runs a statement and returns its rows.
    fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Rows, StoreError>;
}

impl<D: Database + ?Sized> Database for &D {
    fn dialect(&self) -> Dialect {
        (**self).dialect()
    }

    fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64, StoreError> {
        (**self).execute(sql, params)
    }

    fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Rows, StoreError> {
        (**self).query(sql, params)
    }
}

/// Runs `work` inside a transaction opened with the dialect's `BEGIN`, committing on success
/// and rolling back on failure so the connection is never left inside an aborted transaction.
pub(crate) fn in_transaction<D, T>(
    db: &D,
    work: impl FnOnce(&D) -> Result<T, StoreError>,
) -> Result<T, StoreError>
where
    D: Database + ?Sized,
{
    db.execute(db.dialect().begin(), &[])?;
    match work(db) {
        Ok(value) => {
            db.execute("COMMIT", &[])?;
            Ok(value)
        }
        Err(error) => {
            // The original failure matters more than a failed rollback; a broken connection
            // is discarded by the host anyway.
            let _ = db.execute("ROLLBACK", &[]);
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_postgres_disk_is_storage_full_and_other_sqlstates_stay_database_errors() {
        let full = StoreError::from_sqlstate("53100", "could not extend file");
        assert_eq!(
            full,
            StoreError::Full("53100: could not extend file".into())
        );
        assert_eq!((full.status(), full.code()), (503, "storage_full"));
        for other in ["23505", "53200", "53300", "42P01"] {
            let failure = StoreError::from_sqlstate(other, "x");
            assert_eq!(
                (failure.status(), failure.code()),
                (500, "database_error"),
                "{other}"
            );
        }
    }

    #[test]
    fn sqlite_gets_positional_parameters() {
        assert_eq!(
            Dialect::Sqlite.render("SELECT $2, $10 WHERE a = $1 AND b = '$'"),
            "SELECT ?2, ?10 WHERE a = ?1 AND b = '$'"
        );
        assert_eq!(Dialect::Postgres.render("SELECT $1"), "SELECT $1");
    }

    #[test]
    fn now_is_rendered_per_dialect() {
        assert!(Dialect::Sqlite.render("{now}").starts_with("strftime("));
        assert!(Dialect::Postgres.render("{now}").starts_with("to_char("));
    }

    #[test]
    fn rows_are_read_by_name_and_type() {
        let rows = Rows {
            columns: vec!["id".into(), "name".into()],
            rows: vec![vec![SqlValue::Integer(7), SqlValue::Null]],
        };
        let row = rows.first().unwrap();
        assert_eq!(row.integer("ID").unwrap(), 7);
        assert_eq!(row.opt_text("name").unwrap(), None);
        assert!(matches!(row.text("name"), Err(StoreError::Query(_))));
        assert!(matches!(row.text("id"), Err(StoreError::Query(_))));
        assert!(matches!(row.get("missing"), Err(StoreError::Query(_))));
    }
}
