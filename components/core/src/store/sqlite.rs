//! [`Database`] over a rusqlite connection: the runner's side of the embedded database (the
//! ingester, tests), the same SQL the components send through Spin's SQLite interface.

use super::{Database, Dialect, Rows, SqlValue, StoreError};

fn sqlite_error(error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::CannotOpen) => {
            StoreError::Unavailable(error.to_string())
        }
        _ => StoreError::Query(error.to_string()),
    }
}

fn sqlite_params(params: &[SqlValue]) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value;
    params
        .iter()
        .map(|param| match param {
            SqlValue::Null => Value::Null,
            SqlValue::Integer(value) => Value::Integer(*value),
            SqlValue::Real(value) => Value::Real(*value),
            SqlValue::Text(value) => Value::Text(value.clone()),
        })
        .collect()
}

impl Database for rusqlite::Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64, StoreError> {
        let mut statement = self.prepare(sql).map_err(sqlite_error)?;
        let changed = statement
            .execute(rusqlite::params_from_iter(sqlite_params(params)))
            .map_err(sqlite_error)?;
        Ok(changed as u64)
    }

    fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Rows, StoreError> {
        use rusqlite::types::ValueRef;
        let mut statement = self.prepare(sql).map_err(sqlite_error)?;
        let columns: Vec<String> = statement
            .column_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let mut cursor = statement
            .query(rusqlite::params_from_iter(sqlite_params(params)))
            .map_err(sqlite_error)?;
        let mut rows = Vec::new();
        while let Some(row) = cursor.next().map_err(sqlite_error)? {
            let mut values = Vec::with_capacity(columns.len());
            for index in 0..columns.len() {
                values.push(match row.get_ref(index).map_err(sqlite_error)? {
                    ValueRef::Null => SqlValue::Null,
                    ValueRef::Integer(value) => SqlValue::Integer(value),
                    ValueRef::Real(value) => SqlValue::Real(value),
                    ValueRef::Text(bytes) => SqlValue::Text(
                        String::from_utf8(bytes.to_vec())
                            .map_err(|error| StoreError::Query(error.to_string()))?,
                    ),
                    ValueRef::Blob(_) => {
                        return Err(StoreError::Query("unexpected BLOB column".into()))
                    }
                });
            }
            rows.push(values);
        }
        Ok(Rows { columns, rows })
    }
}
