//! The databases behind [`rag_core::store::Database`]: PostgreSQL through `spin:postgres@4.0.0`
//! when `database_url` is set, else Spin's embedded SQLite database `default`.

use rag_core::store::{Database, Dialect, Rows, SqlValue, StoreError};
use spin_sdk::{pg4, sqlite3};

pub enum Db {
    Postgres(pg4::Connection),
    Sqlite(sqlite3::Connection),
}

impl Db {
    /// Opens PostgreSQL when a URL is configured, else the embedded database.
    pub fn open(database_url: Option<&str>) -> Result<Self, StoreError> {
        match database_url {
            Some(url) => pg4::Connection::open(url)
                .map(Db::Postgres)
                .map_err(pg_error),
            None => sqlite3::Connection::open_default()
                .map(Db::Sqlite)
                .map_err(|e| StoreError::Unavailable(sqlite_message(&e))),
        }
    }

    /// The embedded database, whatever `database_url` says (the keyless FTS5 index lives there).
    pub fn embedded() -> Result<Self, StoreError> {
        Self::open(None)
    }
}

fn pg_error(err: pg4::PgError) -> StoreError {
    match err {
        pg4::PgError::ConnectionFailed(message) => StoreError::Unavailable(message),
        pg4::PgError::QueryFailed(pg4::QueryError::DbError(db)) => {
            StoreError::from_sqlstate(&db.code, &db.message)
        }
        pg4::PgError::QueryFailed(pg4::QueryError::Text(text)) => StoreError::Query(text),
        pg4::PgError::BadParameter(text) | pg4::PgError::ValueConversionFailed(text) => {
            StoreError::Query(text)
        }
        pg4::PgError::Other(text) => StoreError::Query(text),
    }
}

fn sqlite_message(err: &sqlite3::Error) -> String {
    match err {
        sqlite3::Error::Io(text) => text.clone(),
        other => format!("{other:?}"),
    }
}

fn sqlite_error(err: sqlite3::Error) -> StoreError {
    match err {
        sqlite3::Error::Io(text) if text.contains("locked") || text.contains("busy") => {
            StoreError::Unavailable(text)
        }
        sqlite3::Error::Io(text) => StoreError::Query(text),
        sqlite3::Error::DatabaseFull => StoreError::Full("database or disk is full".into()),
        other => StoreError::Unavailable(format!("{other:?}")),
    }
}

fn pg_param(value: &SqlValue) -> pg4::ParameterValue {
    match value {
        SqlValue::Null => pg4::ParameterValue::DbNull,
        SqlValue::Integer(i) => pg4::ParameterValue::Int64(*i),
        SqlValue::Real(f) => pg4::ParameterValue::Floating64(*f),
        SqlValue::Text(s) => pg4::ParameterValue::Str(s.clone()),
    }
}

fn pg_value(value: &pg4::DbValue) -> Result<SqlValue, StoreError> {
    Ok(match value {
        pg4::DbValue::DbNull => SqlValue::Null,
        pg4::DbValue::Boolean(b) => SqlValue::Integer(i64::from(*b)),
        pg4::DbValue::Int8(i) => SqlValue::Integer(i64::from(*i)),
        pg4::DbValue::Int16(i) => SqlValue::Integer(i64::from(*i)),
        pg4::DbValue::Int32(i) => SqlValue::Integer(i64::from(*i)),
        pg4::DbValue::Int64(i) => SqlValue::Integer(*i),
        pg4::DbValue::Floating32(f) => SqlValue::Real(f64::from(*f)),
        pg4::DbValue::Floating64(f) => SqlValue::Real(*f),
        pg4::DbValue::Str(s) => SqlValue::Text(s.clone()),
        _ => {
            return Err(StoreError::Query(
                "unsupported PostgreSQL column type".into(),
            ))
        }
    })
}

fn sqlite_param(value: &SqlValue) -> sqlite3::Value {
    match value {
        SqlValue::Null => sqlite3::Value::Null,
        SqlValue::Integer(i) => sqlite3::Value::Integer(*i),
        SqlValue::Real(f) => sqlite3::Value::Real(*f),
        SqlValue::Text(s) => sqlite3::Value::Text(s.clone()),
    }
}

fn sqlite_value(value: sqlite3::Value) -> Result<SqlValue, StoreError> {
    Ok(match value {
        sqlite3::Value::Null => SqlValue::Null,
        sqlite3::Value::Integer(i) => SqlValue::Integer(i),
        sqlite3::Value::Real(f) => SqlValue::Real(f),
        sqlite3::Value::Text(s) => SqlValue::Text(s),
        sqlite3::Value::Blob(_) => return Err(StoreError::Query("unexpected BLOB column".into())),
    })
}

impl Database for Db {
    fn dialect(&self) -> Dialect {
        match self {
            Db::Postgres(_) => Dialect::Postgres,
            Db::Sqlite(_) => Dialect::Sqlite,
        }
    }

    fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64, StoreError> {
        match self {
            Db::Postgres(conn) => {
                let params: Vec<_> = params.iter().map(pg_param).collect();
                conn.execute(sql, &params).map_err(pg_error)
            }
            Db::Sqlite(conn) => {
                let params: Vec<_> = params.iter().map(sqlite_param).collect();
                conn.execute(sql, &params).map_err(sqlite_error)?;
                Ok(conn.changes())
            }
        }
    }

    fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Rows, StoreError> {
        match self {
            Db::Postgres(conn) => {
                let params: Vec<_> = params.iter().map(pg_param).collect();
                let set = conn.query(sql, &params).map_err(pg_error)?;
                Ok(Rows {
                    columns: set.columns.iter().map(|c| c.name.clone()).collect(),
                    rows: set
                        .rows
                        .iter()
                        .map(|row| row.iter().map(pg_value).collect())
                        .collect::<Result<_, _>>()?,
                })
            }
            Db::Sqlite(conn) => {
                let params: Vec<_> = params.iter().map(sqlite_param).collect();
                let result = conn.execute(sql, &params).map_err(sqlite_error)?;
                // Moved, not copied: a search returns the text of every candidate passage.
                Ok(Rows {
                    columns: result.columns,
                    rows: result
                        .rows
                        .into_iter()
                        .map(|row| row.values.into_iter().map(sqlite_value).collect())
                        .collect::<Result<_, _>>()?,
                })
            }
        }
    }
}
