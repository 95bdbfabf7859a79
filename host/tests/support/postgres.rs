//! A schema of its own on the test PostgreSQL for each test, so tests running at once (and
//! earlier runs) never meet. A runner's URL selects it with `options=-csearch_path=<schema>`,
//! which the host's pool passes to PostgreSQL at connect time. `sslmode=disable`: a local
//! server's self-signed certificate would fail the host's TLS verification, which only trusts
//! public roots.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The test database; PostgreSQL's `trust` authentication in CI and on developer machines.
pub const PG_ADDRESS: &str = "127.0.0.1:5432";
pub const PG_DATABASE: &str = "test";

pub struct PgSchema {
    /// A connection of the test's own, outside the schema's search path.
    pub admin: tokio_postgres::Client,
    pub name: String,
}

impl PgSchema {
    pub async fn create() -> Result<Self, String> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let config = format!("postgres://postgres@{PG_ADDRESS}/{PG_DATABASE}");
        let connecting = tokio_postgres::connect(&config, tokio_postgres::NoTls);
        let (admin, connection) = tokio::time::timeout(Duration::from_secs(3), connecting)
            .await
            .map_err(|_| format!("no answer from {PG_ADDRESS} within 3 s"))?
            .map_err(|e| format!("cannot connect to {PG_ADDRESS}: {e}"))?;
        tokio::spawn(connection);
        let name = format!(
            "test_{}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        admin
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .map_err(|e| format!("cannot create a schema: {e}"))?;
        Ok(Self { admin, name })
    }

    /// A runner's `database_url` for this schema, through `address` (PostgreSQL itself, or a
    /// proxy), as `user[:password]`.
    pub fn url_as_via(&self, user: &str, address: &str) -> String {
        format!(
            "postgres://{user}@{address}/{PG_DATABASE}?sslmode=disable&options=-csearch_path%3D{}",
            self.name
        )
    }

    pub fn url_via(&self, address: &str) -> String {
        self.url_as_via("postgres", address)
    }

    pub fn url(&self) -> String {
        self.url_via(PG_ADDRESS)
    }

    pub async fn drop_schema(self) {
        self.admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await
            .unwrap();
    }
}

/// Connects to PostgreSQL for one test, or says why its PostgreSQL half is skipped; with
/// `TEST_REQUIRE_POSTGRES` set (as CI does) an unreachable PostgreSQL fails the test instead.
pub async fn postgres_or_skip() -> Option<PgSchema> {
    match PgSchema::create().await {
        Ok(schema) => Some(schema),
        Err(reason) => {
            assert!(
                std::env::var_os("TEST_REQUIRE_POSTGRES").is_none(),
                "PostgreSQL is required but unreachable: {reason}"
            );
            println!("skipping PostgreSQL: {reason}");
            None
        }
    }
}
