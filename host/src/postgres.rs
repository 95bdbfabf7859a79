//! `spin:postgres/postgres@4.0.0` (what `spin_sdk::pg4` imports) on tokio-postgres: one bounded
//! deadpool per connection string, TLS through rustls whenever the server offers it (Neon
//! requires it: `sslmode=require`), a statement timeout on every pooled connection, and
//! parameterised statements only. Failures reach the component as errors; the host never
//! crashes on a database.

// `Error` is the WIT type the guest receives; boxing it here would only unbox it again.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use wasmtime::component::Resource;

use crate::bindings::spin::postgres::postgres::{
    self, Column, DbDataType, DbValue, Error, ParameterValue, RowSet,
};
use crate::outbound_http::AllowedHosts;
use crate::state::RequestState;

#[derive(Clone)]
pub struct Postgres {
    pools: Arc<Mutex<HashMap<String, Pool>>>,
    settings: PostgresSettings,
}

#[derive(Clone, Copy, Debug)]
pub struct PostgresSettings {
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
}

impl Postgres {
    pub fn new(settings: PostgresSettings) -> Self {
        Self {
            pools: Arc::default(),
            settings,
        }
    }

    fn pool(&self, address: &str) -> Result<Pool, Error> {
        let mut pools = self.pools.lock().expect("postgres pool map poisoned");
        if let Some(pool) = pools.get(address) {
            return Ok(pool.clone());
        }
        let mut config = tokio_postgres::Config::from_str(address)
            .map_err(|_| Error::ConnectionFailed("the connection string is not valid".into()))?;
        config.connect_timeout(self.settings.connect_timeout);
        let millis = self.settings.statement_timeout.as_millis();
        let manager = Manager::from_config(
            config,
            tls_connector(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(self.settings.pool_size)
            .wait_timeout(Some(self.settings.connect_timeout))
            .create_timeout(Some(self.settings.connect_timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .post_create(deadpool_postgres::Hook::async_fn(move |client, _| {
                Box::pin(async move {
                    client
                        .simple_query(&format!("SET statement_timeout = {millis}"))
                        .await
                        .map_err(|e| deadpool_postgres::HookError::message(e.to_string()))?;
                    Ok(())
                })
            }))
            .build()
            .map_err(|e| Error::Other(e.to_string()))?;
        pools.insert(address.to_string(), pool.clone());
        Ok(pool)
    }

    /// Host-side health probe (`/health/ready` asks the component, `host check` asks here).
    pub async fn ping(&self, address: &str) -> Result<(), String> {
        let pool = self.pool(address).map_err(|e| format!("{e:?}"))?;
        let client = pool.get().await.map_err(describe_pool_error)?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| describe_db_error(&e))?;
        Ok(())
    }
}

fn tls_connector() -> tokio_postgres_rustls::MakeRustlsConnect {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
        .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

/// Error texts never carry the connection string (it holds the password).
fn describe_pool_error(err: deadpool_postgres::PoolError) -> String {
    match err {
        deadpool_postgres::PoolError::Backend(e) => describe_db_error(&e),
        deadpool_postgres::PoolError::Timeout(_) => "timed out connecting to PostgreSQL".into(),
        other => format!("PostgreSQL pool error: {other}"),
    }
}

fn describe_db_error(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None if err.is_closed() => "the PostgreSQL connection was closed".into(),
        // Certificates are checked against the public web roots (Neon and other managed
        // services pass); a server with a private or self-signed certificate fails here.
        None if format!("{err:?}")
            .to_ascii_lowercase()
            .contains("certificate") =>
        {
            "the PostgreSQL server's TLS certificate is not trusted (checked against public roots; \
             use sslmode=disable only on a trusted network)"
                .into()
        }
        None => "cannot reach PostgreSQL".into(),
    }
}

/// The `connection` resource: a pooled client held for the component's lifetime, so that
/// statements of one transaction run on one session.
pub struct Connection {
    client: deadpool_postgres::Object,
}

/// SQL NULL for a parameter of any type.
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn to_param(value: ParameterValue) -> Result<Param, Error> {
    Ok(match value {
        ParameterValue::Boolean(v) => Box::new(v),
        ParameterValue::Int8(v) => Box::new(v),
        ParameterValue::Int16(v) => Box::new(v),
        ParameterValue::Int32(v) => Box::new(v),
        ParameterValue::Int64(v) => Box::new(v),
        ParameterValue::Floating32(v) => Box::new(v),
        ParameterValue::Floating64(v) => Box::new(v),
        ParameterValue::Str(v) => Box::new(v),
        ParameterValue::Binary(v) => Box::new(v),
        ParameterValue::DbNull => Box::new(Null),
        other => {
            return Err(Error::BadParameter(format!(
                "parameter type {} is not supported by this host",
                parameter_kind(&other)
            )))
        }
    })
}

fn parameter_kind(value: &ParameterValue) -> &'static str {
    match value {
        ParameterValue::Date(_) => "date",
        ParameterValue::Time(_) => "time",
        ParameterValue::Datetime(_) => "datetime",
        ParameterValue::Timestamp(_) => "timestamp",
        ParameterValue::Uuid(_) => "uuid",
        ParameterValue::Jsonb(_) => "jsonb",
        ParameterValue::Decimal(_) => "decimal",
        ParameterValue::Interval(_) => "interval",
        _ => "range or array",
    }
}

fn data_type(ty: &Type) -> DbDataType {
    match *ty {
        Type::BOOL => DbDataType::Boolean,
        Type::CHAR => DbDataType::Int8,
        Type::INT2 => DbDataType::Int16,
        Type::INT4 => DbDataType::Int32,
        Type::INT8 => DbDataType::Int64,
        Type::FLOAT4 => DbDataType::Floating32,
        Type::FLOAT8 => DbDataType::Floating64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => DbDataType::Str,
        Type::BYTEA => DbDataType::Binary,
        _ => DbDataType::Other(ty.name().to_string()),
    }
}

fn db_value(row: &tokio_postgres::Row, index: usize) -> Result<DbValue, Error> {
    fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
        row: &'a tokio_postgres::Row,
        index: usize,
    ) -> Result<Option<T>, Error> {
        row.try_get(index)
            .map_err(|e| Error::ValueConversionFailed(e.to_string()))
    }
    let ty = row.columns()[index].type_();
    let value = match *ty {
        Type::BOOL => get::<bool>(row, index)?.map(DbValue::Boolean),
        Type::CHAR => get::<i8>(row, index)?.map(DbValue::Int8),
        Type::INT2 => get::<i16>(row, index)?.map(DbValue::Int16),
        Type::INT4 => get::<i32>(row, index)?.map(DbValue::Int32),
        Type::INT8 => get::<i64>(row, index)?.map(DbValue::Int64),
        Type::FLOAT4 => get::<f32>(row, index)?.map(DbValue::Floating32),
        Type::FLOAT8 => get::<f64>(row, index)?.map(DbValue::Floating64),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            get::<String>(row, index)?.map(DbValue::Str)
        }
        Type::BYTEA => get::<Vec<u8>>(row, index)?.map(DbValue::Binary),
        _ => Some(DbValue::Unsupported(Vec::new())),
    };
    Ok(value.unwrap_or(DbValue::DbNull))
}

fn query_error(err: tokio_postgres::Error) -> Error {
    if let Some(db) = err.as_db_error() {
        return Error::QueryFailed(postgres::QueryError::DbError(postgres::DbError {
            as_text: format!("{}: {}", db.code().code(), db.message()),
            severity: db.severity().to_string(),
            code: db.code().code().to_string(),
            message: db.message().to_string(),
            detail: db.detail().map(str::to_string),
            extras: Vec::new(),
        }));
    }
    if err.is_closed() {
        return Error::ConnectionFailed("the PostgreSQL connection was closed".into());
    }
    Error::QueryFailed(postgres::QueryError::Text(describe_db_error(&err)))
}

impl Connection {
    async fn prepare(&self, statement: &str) -> Result<tokio_postgres::Statement, Error> {
        self.client
            .prepare_cached(statement)
            .await
            .map_err(query_error)
    }

    async fn query(&self, statement: &str, params: Vec<ParameterValue>) -> Result<RowSet, Error> {
        let params = bind(params)?;
        let prepared = self.prepare(statement).await?;
        let rows = self
            .client
            .query(&prepared, &refs(&params))
            .await
            .map_err(query_error)?;
        let columns = prepared
            .columns()
            .iter()
            .map(|c| Column {
                name: c.name().to_string(),
                data_type: data_type(c.type_()),
            })
            .collect();
        let rows = rows
            .iter()
            .map(|row| (0..row.len()).map(|i| db_value(row, i)).collect())
            .collect::<Result<_, _>>()?;
        Ok(RowSet { columns, rows })
    }

    async fn execute(&self, statement: &str, params: Vec<ParameterValue>) -> Result<u64, Error> {
        let params = bind(params)?;
        let prepared = self.prepare(statement).await?;
        self.client
            .execute(&prepared, &refs(&params))
            .await
            .map_err(query_error)
    }
}

type Param = Box<dyn ToSql + Sync + Send>;

fn bind(params: Vec<ParameterValue>) -> Result<Vec<Param>, Error> {
    params.into_iter().map(to_param).collect()
}

fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

fn allowed(state: &RequestState, address: &str) -> bool {
    every_destination_allowed(address, &state.component.allowed_hosts)
}

/// Every address the connection may use must be allowed: tokio-postgres connects to the
/// `hostaddr` of an index when there is one (the `host` then only names the server for TLS),
/// else to its `host`, so both lists are checked, each with the port of its index. A string
/// that names neither, or a Unix socket, is refused.
fn every_destination_allowed(address: &str, allowed_hosts: &AllowedHosts) -> bool {
    let Ok(config) = tokio_postgres::Config::from_str(address) else {
        return false;
    };
    let hosts = config.get_hosts();
    let hostaddrs = config.get_hostaddrs();
    if hosts.is_empty() && hostaddrs.is_empty() {
        return false;
    }
    let ports = config.get_ports();
    let port_of = |index: usize| ports.get(index).or(ports.first()).copied();
    let hosts_allowed = hosts.iter().enumerate().all(|(index, host)| match host {
        tokio_postgres::config::Host::Tcp(name) => {
            allowed_hosts.allows("postgres", name, port_of(index))
        }
        #[cfg(unix)]
        tokio_postgres::config::Host::Unix(_) => false,
    });
    let addresses_allowed = hostaddrs
        .iter()
        .enumerate()
        .all(|(index, ip)| allowed_hosts.allows("postgres", &ip.to_string(), port_of(index)));
    hosts_allowed && addresses_allowed
}

impl postgres::Host for RequestState {}

impl postgres::HostConnection for RequestState {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        if !allowed(self, &address) {
            tracing::warn!(component = %self.component.id, "PostgreSQL connection refused: host not in allowed_outbound_hosts");
            return Ok(Err(Error::ConnectionFailed(
                "destination not allowed by allowed_outbound_hosts".into(),
            )));
        }
        let pool = match self.services.postgres.pool(&address) {
            Ok(pool) => pool,
            Err(e) => return Ok(Err(e)),
        };
        match pool.get().await {
            Ok(client) => Ok(Ok(self.table.push(Connection { client })?)),
            Err(err) => {
                let message = describe_pool_error(err);
                tracing::warn!(component = %self.component.id, "PostgreSQL unavailable: {message}");
                Ok(Err(Error::ConnectionFailed(message)))
            }
        }
    }

    async fn query(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<RowSet, Error>> {
        Ok(self.table.get(&connection)?.query(&statement, params).await)
    }

    async fn execute(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        Ok(self
            .table
            .get(&connection)?
            .execute(&statement, params)
            .await)
    }

    async fn drop(&mut self, connection: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(entries: &[&str]) -> AllowedHosts {
        let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        AllowedHosts::resolve(&entries, &crate::variables::AppVariables::default()).unwrap()
    }

    #[test]
    fn hostaddr_without_host_is_checked() {
        let allowed = only(&["postgres://db.example.com"]);
        assert!(every_destination_allowed(
            "postgres://u@db.example.com/app",
            &allowed
        ));
        assert!(!every_destination_allowed(
            "postgres:///app?user=u&hostaddr=169.254.169.254",
            &allowed
        ));
        assert!(!every_destination_allowed(
            "host=db.example.com hostaddr=10.0.0.5 user=u",
            &allowed
        ));
        assert!(every_destination_allowed(
            "hostaddr=10.0.0.5 user=u",
            &only(&["postgres://10.0.0.5"])
        ));
    }

    #[test]
    fn every_host_is_checked_with_its_own_port() {
        let allowed = only(&[
            "postgres://a.example.com:5432",
            "postgres://b.example.com:6543",
        ]);
        assert!(every_destination_allowed(
            "host=a.example.com,b.example.com port=5432,6543 user=u",
            &allowed
        ));
        assert!(!every_destination_allowed(
            "host=a.example.com,b.example.com port=5432,7000 user=u",
            &allowed
        ));
        assert!(!every_destination_allowed(
            "host=a.example.com,evil.example.com user=u",
            &allowed
        ));
    }

    #[test]
    fn strings_without_a_destination_or_with_a_socket_are_refused() {
        let anywhere = only(&["postgres://*:*"]);
        assert!(!every_destination_allowed("user=u dbname=app", &anywhere));
        assert!(!every_destination_allowed(
            "host=/var/run/postgresql user=u",
            &anywhere
        ));
        assert!(!every_destination_allowed(
            "not a connection string = =",
            &anywhere
        ));
    }
}
