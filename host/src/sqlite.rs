//! `spin:sqlite/sqlite@3.0.0` on embedded SQLite files: a component may open the databases it
//! lists in `sqlite_databases`; each is the file `DATA_DIR/<name>.db`, in WAL mode with a busy
//! timeout so concurrent requests wait for each other instead of failing. Under `spin up`,
//! Spin's own default database plays the same part.
//!
//! The WAL file is kept bounded. SQLite's automatic checkpoint is passive: it copies only the
//! frames no open reader still needs and never restarts the log while any reader holds a
//! snapshot in it, so with overlapping reads (every busy server) the WAL grows without end.
//! Here the connection that finishes a statement outside a transaction and finds the WAL past
//! [`WAL_CHECKPOINT_BYTES`] runs `wal_checkpoint(TRUNCATE)`: it holds the write lock (so the log
//! stops growing), waits for the readers of older snapshots to finish (new readers then read
//! the database file and do not hold it up) and cuts the file to zero.
//!
//! Writers of one database queue in the runner. SQLite's busy handler polls for the write lock
//! with sleeps growing to 100 ms, so among hundreds of concurrent writers one can keep losing
//! the lock until its busy timeout (a load run of 500 keyless clients got 503
//! `database_unavailable` after 5 s this way); a statement that writes outside a transaction
//! (and the checkpoint after it) therefore first takes the database's in-process write gate,
//! where waiters sleep until woken, and meets SQLite's lock only when another process writes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::component::Resource;

use crate::bindings::spin::sqlite::sqlite::{self, Error, QueryResult, RowResult, Value};
use crate::state::RequestState;

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// WAL size past which a finished statement checkpoints and truncates the log.
pub const WAL_CHECKPOINT_BYTES: u64 = 8 * 1024 * 1024;

/// How long a checkpoint waits for the write lock and for readers of older snapshots.
const CHECKPOINT_BUSY_TIMEOUT: Duration = Duration::from_millis(200);

/// What SQLite leaves of a WAL file it restarts after its own checkpoints (`journal_size_limit`).
const JOURNAL_SIZE_LIMIT_BYTES: u64 = WAL_CHECKPOINT_BYTES;

#[derive(Clone, Debug)]
pub struct Sqlite {
    data_dir: Arc<PathBuf>,
    /// One write gate per database file, shared by every connection to it.
    write_gates: Arc<Mutex<HashMap<PathBuf, WriteGate>>>,
}

/// Held while a statement writes outside a transaction; see the module documentation.
type WriteGate = Arc<Mutex<()>>;

impl Sqlite {
    pub fn new(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create DATA_DIR {}", data_dir.display()))?;
        Ok(Self {
            data_dir: Arc::new(data_dir.to_path_buf()),
            write_gates: Arc::default(),
        })
    }

    fn write_gate(&self, path: &Path) -> WriteGate {
        let mut gates = self
            .write_gates
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        gates.entry(path.to_path_buf()).or_default().clone()
    }

    /// The file behind a database label.
    pub fn path_of(&self, database: &str) -> PathBuf {
        self.data_dir.join(format!("{database}.db"))
    }

    /// Opens a database as components see it (the ingester writes the embedded index this way).
    pub fn open(&self, database: &str) -> rusqlite::Result<rusqlite::Connection> {
        open_file(&self.path_of(database))
    }
}

pub fn open_file(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT_BYTES as i64)?;
    // Passive checkpoints cannot restart the log under overlapping readers, and while one runs
    // it holds the checkpoint lock, so the truncating checkpoint of `bound_wal` gives up at once.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(conn)
}

/// The WAL file next to a database file.
pub fn wal_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Checkpoints and truncates the WAL when it has grown past [`WAL_CHECKPOINT_BYTES`]; called
/// after every statement. Inside a transaction a checkpoint cannot run, so it waits for the
/// statement that ends it.
pub fn bound_wal(conn: &rusqlite::Connection, wal: &Path) -> rusqlite::Result<()> {
    if !conn.is_autocommit() {
        return Ok(());
    }
    let Ok(metadata) = std::fs::metadata(wal) else {
        return Ok(());
    };
    if metadata.len() <= WAL_CHECKPOINT_BYTES {
        return Ok(());
    }
    // A short wait: a checkpoint that cannot finish soon gives way (its row says busy) and the
    // next statement tries again, instead of holding the write lock for the full busy timeout.
    conn.busy_timeout(CHECKPOINT_BUSY_TIMEOUT)?;
    let checkpoint = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    conn.busy_timeout(BUSY_TIMEOUT)?;
    checkpoint
}

/// The `connection` resource: one SQLite connection for the component's lifetime.
pub struct Connection {
    conn: Arc<Mutex<rusqlite::Connection>>,
    wal: Arc<PathBuf>,
    gate: WriteGate,
}

fn valid_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn io_error(err: impl std::fmt::Display) -> Error {
    Error::Io(err.to_string())
}

fn to_sql(value: Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match value {
        Value::Integer(i) => V::Integer(i),
        Value::Real(f) => V::Real(f),
        Value::Text(s) => V::Text(s),
        Value::Blob(b) => V::Blob(b),
        Value::Null => V::Null,
    }
}

fn from_sql(value: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef as V;
    match value {
        V::Null => Value::Null,
        V::Integer(i) => Value::Integer(i),
        V::Real(f) => Value::Real(f),
        V::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        V::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// Runs one statement, then bounds the WAL. A statement that writes outside a transaction
/// holds `gate` throughout; inside a transaction the connection may already hold SQLite's
/// write lock, and waiting on the gate then could wait on itself.
fn run_gated(
    conn: &rusqlite::Connection,
    wal: &Path,
    gate: &Mutex<()>,
    statement: &str,
    parameters: Vec<Value>,
) -> Result<QueryResult, Error> {
    let writes = conn
        .prepare_cached(statement)
        .map(|stmt| !stmt.readonly())
        .unwrap_or(false);
    let _turn = (writes && conn.is_autocommit())
        .then(|| gate.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    let result = run(conn, statement, parameters);
    if let Err(err) = bound_wal(conn, wal) {
        tracing::warn!(wal = %wal.display(), "WAL checkpoint failed: {err}");
    }
    result
}

fn run(
    conn: &rusqlite::Connection,
    statement: &str,
    parameters: Vec<Value>,
) -> Result<QueryResult, Error> {
    let mut stmt = conn.prepare_cached(statement).map_err(io_error)?;
    let columns: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
    let params = rusqlite::params_from_iter(parameters.into_iter().map(to_sql));
    let mut rows = stmt.query(params).map_err(io_error)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(io_error)? {
        let values = (0..columns.len())
            .map(|i| row.get_ref(i).map(from_sql))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io_error)?;
        out.push(RowResult { values });
    }
    Ok(QueryResult { columns, rows: out })
}

impl sqlite::Host for RequestState {}

impl sqlite::HostConnection for RequestState {
    async fn open(
        &mut self,
        database: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        if !valid_label(&database) {
            return Ok(Err(Error::NoSuchDatabase));
        }
        if !self.component.sqlite_databases.contains(&database) {
            return Ok(Err(Error::AccessDenied));
        }
        let path = self.services.sqlite.path_of(&database);
        let wal = Arc::new(wal_path(&path));
        let gate = self.services.sqlite.write_gate(&path);
        let opened = tokio::task::spawn_blocking(move || open_file(&path)).await?;
        match opened {
            Ok(conn) => {
                let resource = self.table.push(Connection {
                    conn: Arc::new(Mutex::new(conn)),
                    wal,
                    gate,
                })?;
                Ok(Ok(resource))
            }
            Err(err) => {
                tracing::warn!(component = %self.component.id, database, "cannot open SQLite database: {err}");
                Ok(Err(io_error(err)))
            }
        }
    }

    async fn execute(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        parameters: Vec<Value>,
    ) -> wasmtime::Result<Result<QueryResult, Error>> {
        let opened = self.table.get(&connection)?;
        let (conn, wal, gate) = (opened.conn.clone(), opened.wal.clone(), opened.gate.clone());
        let result = tokio::task::spawn_blocking(move || {
            let conn = conn.lock().map_err(|_| Error::InvalidConnection)?;
            run_gated(&conn, &wal, &gate, &statement, parameters)
        })
        .await?;
        Ok(result)
    }

    async fn last_insert_rowid(
        &mut self,
        connection: Resource<Connection>,
    ) -> wasmtime::Result<i64> {
        let conn = self.table.get(&connection)?.conn.clone();
        let rowid = conn.lock().map(|c| c.last_insert_rowid()).unwrap_or(0);
        Ok(rowid)
    }

    async fn changes(&mut self, connection: Resource<Connection>) -> wasmtime::Result<u64> {
        let conn = self.table.get(&connection)?.conn.clone();
        let changes = conn.lock().map(|c| c.changes()).unwrap_or(0);
        Ok(changes)
    }

    async fn drop(&mut self, connection: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}
