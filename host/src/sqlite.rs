//! `spin:sqlite/sqlite@3.0.0` on embedded SQLite files: a component may open the databases it
//! lists in `sqlite_databases`; each is the file `DATA_DIR/<name>.db`, in WAL mode with a busy
//! timeout so concurrent requests wait for each other instead of failing. Under `spin up`,
//! Spin's own default database plays the same part.
//!
//! The WAL file is kept bounded. SQLite's automatic checkpoint is passive: it copies only the
//! frames no open reader still needs and never restarts the log while any reader holds a
//! snapshot in it, so with overlapping reads (every busy server) the WAL grows without end.
//! Here a statement that finishes outside a transaction and finds the WAL past
//! [`WAL_CHECKPOINT_BYTES`], while no checkpoint is bounding it, starts one on the database's
//! own checkpoint connection (its request goes on without waiting):
//! `wal_checkpoint(TRUNCATE)` holds the write lock (so the log
//! stops growing), waits for the readers of older snapshots to finish (new readers then read
//! the database file and do not hold it up) and cuts the file to zero. A passive checkpoint
//! runs just before it, while writers go on, so the truncating one, which stops them, copies
//! only the frames written in between.
//!
//! Writers of one database queue in the runner. SQLite's busy handler polls for the write lock
//! with sleeps growing to 100 ms, so among hundreds of concurrent writers one can keep losing
//! the lock until its busy timeout (a load run of 500 keyless clients got 503
//! `database_unavailable` after 5 s this way); a statement that writes outside a transaction
//! (and the checkpoint after it) therefore first takes the database's in-process write gate,
//! where waiters sleep until woken, and meets SQLite's lock only when another process writes.
//! A writer on an async worker that finds the gate held tries again for up to [`GATE_SPIN`]
//! (yielding its core meanwhile) before it hands the statement to a blocking thread: in a trace
//! of keyless chat load about a quarter of the writes found the gate held by the other worker's
//! statement, which is released within tens of microseconds, and the thread hand-off cost more
//! CPU than the wait. A gate held longer (a writer waiting for another process, a checkpoint)
//! costs each writer at most that much CPU before it waits on a blocking thread. An async mutex was measured too: its hand-off to a parked task, whose
//! thread must first be scheduled, queued writers behind one another and cut requests/s by a
//! quarter.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::Resource;

use crate::bindings::spin::sqlite::sqlite::{self, Error, QueryResult, RowResult, Value};
use crate::state::RequestState;

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// WAL size past which a finished statement checkpoints and truncates the log. The truncating
/// checkpoint holds the write gate for the frames written during its passive one, two syncs and
/// the truncation, all of which grow with the log: under keyless load a larger bound stopped
/// writers for longer, and those stops set the p99 (BENCHMARKS.md, item 20).
pub const WAL_CHECKPOINT_BYTES: u64 = 2 * 1024 * 1024;

/// How long a checkpoint waits for the write lock and for readers of older snapshots.
const CHECKPOINT_BUSY_TIMEOUT: Duration = Duration::from_millis(200);

/// What SQLite leaves of a WAL file it restarts after its own checkpoints (`journal_size_limit`).
const JOURNAL_SIZE_LIMIT_BYTES: u64 = WAL_CHECKPOINT_BYTES;

/// Idle connections kept per database; more than the requests that use one database at once
/// on a small machine, few enough that idle connections cost little (each holds its page
/// cache and prepared statements).
const MAX_IDLE_CONNECTIONS: usize = 16;

/// Prepared statements each connection keeps; the components use a few dozen distinct ones.
const STATEMENT_CACHE_CAPACITY: usize = 64;

/// Connections that requests may hold at once per database, besides those opened by a request
/// that already holds one. A burst of requests would otherwise open one connection each
/// (300 chats arriving together opened 360, about 100 KiB of SQLite memory apiece, and as many
/// blocking threads waiting on the write gate), although writers take turns and two cores run
/// few readers at a time; past the bound a request waits for a connection to come back.
pub const MAX_LEASED_CONNECTIONS: usize = 32;

#[derive(Clone, Debug)]
pub struct Sqlite {
    data_dir: Arc<PathBuf>,
    databases: Arc<Mutex<HashMap<PathBuf, Arc<Database>>>>,
    max_leased: usize,
}

/// One database file as the runner shares it between requests: its write gate and the
/// connections no request is using.
///
/// Connections are reused because opening one is most of a short request's cost: SQLite parses
/// the schema and every statement is prepared afresh (a keyless chat opened three). A reused
/// connection must carry nothing of the request before it: a transaction left open is rolled
/// back, `last_insert_rowid` and `changes` read as on a new connection, and a connection whose
/// session state a statement changed (ATTACH, DETACH, temporary objects, a PRAGMA) is closed
/// instead of kept, which the authorizer notes while statements are prepared.
#[derive(Debug)]
struct Database {
    path: PathBuf,
    wal: PathBuf,
    /// Held while a statement writes outside a transaction; see the module documentation.
    write_gate: Mutex<()>,
    /// Set while one checkpoint bounds the WAL; see [`Lease::claim_checkpoint`].
    checkpoint_running: AtomicBool,
    /// The connection checkpoints run on, opened by the first; one checkpoint runs at a time.
    checkpointer: Mutex<Option<rusqlite::Connection>>,
    /// Statements that could not finish on an async worker and ran on a blocking thread.
    statements_on_blocking_threads: AtomicU64,
    idle: Mutex<Vec<Pooled>>,
    /// Turns for [`MAX_LEASED_CONNECTIONS`]; waiters are served in arrival order.
    leases: Arc<Semaphore>,
}

/// A connection with the flag its authorizer raises when a statement changes session state,
/// and the deadline its progress handler enforces on a statement run on an async worker.
struct Pooled {
    conn: rusqlite::Connection,
    session_changed: Arc<AtomicBool>,
    budget: Arc<StatementBudget>,
}

/// How long a statement may run on an async worker thread (see [`Lease::try_run_inline`]).
const INLINE_BUDGET: Duration = Duration::from_millis(2);

/// How long a writer on an async worker keeps trying for a held write gate (see the module
/// documentation).
const GATE_SPIN: Duration = Duration::from_micros(200);

/// SQLite's progress handler is called every this many virtual-machine instructions.
const PROGRESS_INTERVAL_OPS: std::ffi::c_int = 1000;

/// The deadline of the statement running inline, as nanoseconds after `origin`; 0 = none.
struct StatementBudget {
    origin: std::time::Instant,
    deadline_nanos: std::sync::atomic::AtomicU64,
}

impl StatementBudget {
    fn new() -> Self {
        Self {
            origin: std::time::Instant::now(),
            deadline_nanos: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn start(&self, budget: Duration) {
        let deadline = self.origin.elapsed() + budget;
        self.deadline_nanos
            .store(deadline.as_nanos() as u64, Ordering::Relaxed);
    }

    fn clear(&self) {
        self.deadline_nanos.store(0, Ordering::Relaxed);
    }

    fn exceeded(&self) -> bool {
        let deadline = self.deadline_nanos.load(Ordering::Relaxed);
        deadline != 0 && self.origin.elapsed().as_nanos() as u64 > deadline
    }
}

impl std::fmt::Debug for Pooled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooled").finish_non_exhaustive()
    }
}

/// Whether preparing a statement that does `action` changes state that outlives the request:
/// what a connection carries besides the database itself.
fn changes_session_state(action: &AuthAction<'_>) -> bool {
    match action {
        AuthAction::Attach { .. }
        | AuthAction::Detach { .. }
        | AuthAction::CreateTempIndex { .. }
        | AuthAction::CreateTempTable { .. }
        | AuthAction::CreateTempTrigger { .. }
        | AuthAction::CreateTempView { .. }
        | AuthAction::DropTempIndex { .. }
        | AuthAction::DropTempTable { .. }
        | AuthAction::DropTempTrigger { .. }
        | AuthAction::DropTempView { .. }
        | AuthAction::CreateVtable { .. }
        | AuthAction::DropVtable { .. }
        | AuthAction::Unknown { .. } => true,
        // Reads that leave no state behind: the runner's own WAL bound runs the first, and FTS5
        // prepares the second on its first query of a connection to notice other writers.
        // Counting FTS5's would close every connection that searched, so each keyless chat
        // opened a new one (schema parse, every statement prepared afresh).
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } => {
            let read_only = pragma_name.eq_ignore_ascii_case("wal_checkpoint")
                || (pragma_name.eq_ignore_ascii_case("data_version") && pragma_value.is_none());
            !read_only
        }
        _ => false,
    }
}

impl Database {
    fn new(path: PathBuf, max_leased: usize) -> Self {
        Self {
            wal: wal_path(&path),
            path,
            write_gate: Mutex::new(()),
            checkpoint_running: AtomicBool::new(false),
            checkpointer: Mutex::new(None),
            statements_on_blocking_threads: AtomicU64::new(0),
            idle: Mutex::new(Vec::new()),
            leases: Arc::new(Semaphore::new(max_leased)),
        }
    }

    fn write_gate(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write_gate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The write gate if it is free now or comes free within `patience`; the core is yielded
    /// between tries, so a holder waiting for it runs.
    fn try_write_gate_within(&self, patience: Duration) -> Option<std::sync::MutexGuard<'_, ()>> {
        let started = std::time::Instant::now();
        loop {
            match self.write_gate.try_lock() {
                Ok(turn) => return Some(turn),
                Err(std::sync::TryLockError::Poisoned(poisoned)) => {
                    return Some(poisoned.into_inner())
                }
                Err(std::sync::TryLockError::WouldBlock) if started.elapsed() < patience => {
                    std::thread::yield_now()
                }
                Err(std::sync::TryLockError::WouldBlock) => return None,
            }
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Pooled>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn open_pooled(&self) -> rusqlite::Result<Pooled> {
        let conn = open_file(&self.path)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        let session_changed = Arc::new(AtomicBool::new(false));
        let flag = session_changed.clone();
        conn.authorizer(Some(move |context: AuthContext<'_>| {
            if changes_session_state(&context.action) {
                flag.store(true, Ordering::Relaxed);
            }
            Authorization::Allow
        }));
        let budget = Arc::new(StatementBudget::new());
        let watched = budget.clone();
        conn.progress_handler(PROGRESS_INTERVAL_OPS, Some(move || watched.exceeded()));
        Ok(Pooled {
            conn,
            session_changed,
            budget,
        })
    }

    /// Takes back a connection a request is done with, if it is as a new one would be.
    fn give_back(&self, pooled: Pooled) {
        if pooled.session_changed.load(Ordering::Relaxed) {
            return;
        }
        if !pooled.conn.is_autocommit() {
            // A guest that trapped or forgot to COMMIT: its changes are not kept.
            let _ = pooled.conn.execute_batch("ROLLBACK");
            if !pooled.conn.is_autocommit() {
                return;
            }
        }
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE_CONNECTIONS {
            idle.push(pooled);
        }
    }
}

/// Turns off SQLite's memory statistics for the process. With them on, every allocation SQLite
/// makes takes one process-wide mutex, which the statements of concurrent requests then contend
/// for (futex wake-ups were the largest kernel cost in a keyless-chat profile). Only possible
/// before SQLite initialises, so it is done before the first connection opens; later calls do
/// nothing.
fn configure_sqlite_once() {
    static CONFIGURED: std::sync::Once = std::sync::Once::new();
    CONFIGURED.call_once(|| {
        // SAFETY: SQLITE_CONFIG_MEMSTATUS takes one int; sqlite3_config is only unsafe to call
        // while SQLite is in use, and it refuses (SQLITE_MISUSE) once SQLite has initialised.
        let code = unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS,
                0 as std::ffi::c_int,
            )
        };
        if code != rusqlite::ffi::SQLITE_OK {
            tracing::debug!(
                code,
                "SQLite memory statistics stay on (SQLite already in use)"
            );
        }
    });
}

impl Sqlite {
    pub fn new(data_dir: &Path) -> anyhow::Result<Self> {
        Self::with_lease_limit(data_dir, MAX_LEASED_CONNECTIONS)
    }

    /// As [`Sqlite::new`], with another bound on the connections leased at once per database.
    pub fn with_lease_limit(data_dir: &Path, max_leased: usize) -> anyhow::Result<Self> {
        configure_sqlite_once();
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create DATA_DIR {}", data_dir.display()))?;
        Ok(Self {
            data_dir: Arc::new(data_dir.to_path_buf()),
            databases: Arc::default(),
            max_leased: max_leased.max(1),
        })
    }

    fn database(&self, name: &str) -> Arc<Database> {
        let path = self.path_of(name);
        let mut databases = self
            .databases
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        databases
            .entry(path.clone())
            .or_insert_with(|| Arc::new(Database::new(path, self.max_leased)))
            .clone()
    }

    /// The file behind a database label.
    pub fn path_of(&self, database: &str) -> PathBuf {
        self.data_dir.join(format!("{database}.db"))
    }

    /// Opens a database as components see it (the ingester writes the embedded index this way).
    pub fn open(&self, database: &str) -> rusqlite::Result<rusqlite::Connection> {
        open_file(&self.path_of(database))
    }

    /// A connection to `database` for one request: an idle one if there is one, else a new one
    /// (opened on a blocking thread). It goes back when the last handle to the lease is dropped.
    ///
    /// `Turn::Wait` waits while [`MAX_LEASED_CONNECTIONS`] are leased. A request that already
    /// holds a connection passes `Turn::Holder` and never waits: were it to wait for a turn
    /// that only requests like it could give back, they would all wait on each other.
    pub async fn lease(&self, database: &str, turn: Turn) -> anyhow::Result<Lease> {
        let database = self.database(database);
        let permit = match turn {
            Turn::Wait => Some(
                database
                    .leases
                    .clone()
                    .acquire_owned()
                    .await
                    .context("the database's connection turns are closed")?,
            ),
            Turn::Holder => None,
        };
        let idle = database.idle().pop();
        let pooled = match idle {
            Some(pooled) => pooled,
            None => {
                let opening = database.clone();
                tokio::task::spawn_blocking(move || opening.open_pooled()).await??
            }
        };
        Ok(Lease::new(pooled, database, permit))
    }

    /// Connections kept idle for `database` (for tests and diagnostics).
    pub fn idle_connections(&self, database: &str) -> usize {
        self.database(database).idle().len()
    }

    /// Statements on `database` that ran on a blocking thread (for tests and diagnostics).
    pub fn statements_on_blocking_threads(&self, database: &str) -> u64 {
        self.database(database)
            .statements_on_blocking_threads
            .load(Ordering::Relaxed)
    }
}

/// Whether a request asking for a connection waits for a turn (see [`Sqlite::lease`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// The request holds no connection yet: it waits while the bound is reached.
    Wait,
    /// The request already holds a connection: it gets another at once.
    Holder,
}

/// A pooled connection while one request holds it.
pub struct Lease {
    pooled: Option<Pooled>,
    database: Arc<Database>,
    /// `total_changes` when the lease began: `changes` reads 0 until this request changes a row.
    total_changes_at_start: u64,
    /// Given back (after the connection) when the lease ends.
    _turn: Option<OwnedSemaphorePermit>,
}

impl Lease {
    fn new(pooled: Pooled, database: Arc<Database>, turn: Option<OwnedSemaphorePermit>) -> Self {
        // SAFETY: the handle is the live connection `pooled` owns, used on this thread only for
        // this call; setting the last rowid has no other effect.
        unsafe { rusqlite::ffi::sqlite3_set_last_insert_rowid(pooled.conn.handle(), 0) };
        Self {
            total_changes_at_start: pooled.conn.total_changes(),
            pooled: Some(pooled),
            database,
            _turn: turn,
        }
    }

    pub fn connection(&self) -> &rusqlite::Connection {
        &self.pooled().conn
    }

    /// Rows changed by the last statement, as `sqlite3_changes` on a new connection.
    pub fn changes(&self) -> u64 {
        let conn = self.connection();
        if conn.total_changes() == self.total_changes_at_start {
            0
        } else {
            conn.changes()
        }
    }

    fn pooled(&self) -> &Pooled {
        self.pooled
            .as_ref()
            .expect("a lease holds its connection until dropped")
    }

    /// What running `statement` now involves: whether it writes outside a transaction (and so
    /// needs the write gate) and whether it may run on an async worker at all.
    fn plan(&self, statement: &str) -> Result<Plan, Error> {
        let conn = &self.pooled().conn;
        let writes = !conn.prepare_cached(statement).map_err(io_error)?.readonly();
        let in_transaction = !conn.is_autocommit();
        Ok(Plan {
            needs_gate: writes && !in_transaction,
            inline: !in_transaction,
            // A COMMIT reads as read-only to SQLite, yet ends a transaction that wrote.
            may_grow_wal: writes || in_transaction,
        })
    }

    /// Runs a statement on the calling async worker if it can finish at once: outside a
    /// transaction, without waiting for SQLite's lock, within [`INLINE_BUDGET`], and, for a
    /// writer, with the write gate free within [`GATE_SPIN`]. Handing every statement to a
    /// blocking thread cost about 1 ms of CPU per keyless chat in thread wake-ups
    /// (bench/keyless-chat.sh), more than the statements themselves.
    ///
    /// `None` means it did nothing and must run with [`Lease::run_waiting`]: a statement stopped
    /// by `SQLITE_BUSY` or by the budget outside a transaction is rolled back as a whole, so it
    /// runs again from the start. Inside a transaction an interrupted write would roll back the
    /// whole transaction, so statements there always wait on a blocking thread.
    fn try_run_inline(
        &self,
        statement: &str,
        parameters: &[SqlValue],
        plan: Plan,
    ) -> Option<Result<QueryResult, Error>> {
        let Pooled { conn, budget, .. } = self.pooled();
        if !plan.inline {
            return None;
        }
        let _turn = if plan.needs_gate {
            Some(self.database.try_write_gate_within(GATE_SPIN)?)
        } else {
            None
        };
        if conn.busy_timeout(Duration::ZERO).is_err() {
            return None;
        }
        budget.start(INLINE_BUDGET);
        let result = run(conn, statement, parameters);
        budget.clear();
        let restored = conn.busy_timeout(BUSY_TIMEOUT);
        match result {
            Err(err) if gave_way(&err) => None,
            _ if restored.is_err() => None,
            result => Some(result.map_err(statement_error)),
        }
    }

    /// Runs a statement on a blocking thread, waiting for locks as long as the busy timeout
    /// allows. A statement that writes outside a transaction holds the write gate throughout;
    /// inside a transaction the connection may already hold SQLite's write lock, and waiting on
    /// the gate then could wait on itself.
    fn run_waiting(&self, statement: &str, parameters: &[SqlValue]) -> Result<QueryResult, Error> {
        self.database
            .statements_on_blocking_threads
            .fetch_add(1, Ordering::Relaxed);
        let _turn = self
            .plan(statement)?
            .needs_gate
            .then(|| self.database.write_gate());
        run(&self.pooled().conn, statement, parameters).map_err(statement_error)
    }

    fn wal_needs_bounding(&self) -> bool {
        self.pooled().conn.is_autocommit()
            && std::fs::metadata(&self.database.wal)
                .is_ok_and(|metadata| metadata.len() > WAL_CHECKPOINT_BYTES)
    }

    /// The turn to bound the WAL, when it has grown past the bound and no other statement of
    /// this process is bounding it already. The writes that finish while one checkpoint runs
    /// (its passive part takes milliseconds) used to start a checkpoint each: each took a
    /// blocking thread, queued on the write gate and found nothing left to do, while its request
    /// waited for it.
    fn claim_checkpoint(&self) -> Option<CheckpointTurn> {
        (self.wal_needs_bounding()
            && !self
                .database
                .checkpoint_running
                .swap(true, Ordering::Acquire))
        .then(|| CheckpointTurn(self.database.clone()))
    }
}

/// The turn to bound the WAL; the next may claim it once this is dropped.
struct CheckpointTurn(Arc<Database>);

impl CheckpointTurn {
    /// Bounds the WAL (see the module documentation) on the database's own checkpoint
    /// connection, so that the request whose write crossed the bound neither waits for it nor
    /// has its connection held. A passive checkpoint first copies the log into the database
    /// without the write gate, and both files are synced, while the process's writers go on
    /// appending; the truncating checkpoint then holds the gate, so that no writer waits in
    /// SQLite's busy handler, and is left only the frames written since. When the truncating
    /// checkpoint did all of it under the gate, every writer of the process waited out its copy
    /// and two syncs (the slowest keyless chats in bench/keyless-chat.sh).
    fn bound_wal(self) {
        let database = &self.0;
        let mut checkpointer = database
            .checkpointer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let conn = match &mut *checkpointer {
            Some(conn) => conn,
            unopened @ None => match open_file(&database.path) {
                Ok(conn) => unopened.insert(conn),
                Err(err) => {
                    tracing::warn!(wal = %database.wal.display(), "WAL checkpoint failed: {err}");
                    return;
                }
            },
        };
        if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(wal = %database.wal.display(), "passive checkpoint: {err}");
        }
        // SQLite syncs the database file only when a checkpoint reaches the end of the log,
        // which under steady writes only the truncating one does, so the pages the passive one
        // copied would be flushed while writers wait, and so would the frames appended
        // meanwhile. Flushed here, they leave the truncating checkpoint to sync only what the
        // last few milliseconds wrote.
        for file in [&database.path, &database.wal] {
            if let Err(err) = std::fs::File::open(file).and_then(|opened| opened.sync_data()) {
                tracing::debug!(file = %file.display(), "sync before the truncating checkpoint: {err}");
            }
        }
        let _turn = database.write_gate();
        if let Err(err) = bound_wal(conn, &database.wal) {
            tracing::warn!(wal = %database.wal.display(), "WAL checkpoint failed: {err}");
        }
    }
}

impl Drop for CheckpointTurn {
    fn drop(&mut self) {
        self.0.checkpoint_running.store(false, Ordering::Release);
    }
}

/// Whether a statement stopped without effect because it would have had to wait: for a lock
/// (`SQLITE_BUSY`) or past its inline budget (`SQLITE_INTERRUPT` from the progress handler).
fn gave_way(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::OperationInterrupted)
    )
}

/// See [`Lease::plan`].
#[derive(Clone, Copy, Debug)]
struct Plan {
    needs_gate: bool,
    inline: bool,
    may_grow_wal: bool,
}

/// Runs one guest statement: on the async worker when it can finish at once, else on a
/// blocking thread; then, after a write, starts bounding the WAL on a blocking thread when it
/// has grown too large, and returns without waiting for that.
async fn execute(
    lease: Arc<Mutex<Lease>>,
    statement: String,
    parameters: Vec<Value>,
) -> wasmtime::Result<Result<QueryResult, Error>> {
    fn lock(lease: &Mutex<Lease>) -> Result<std::sync::MutexGuard<'_, Lease>, Error> {
        lease.lock().map_err(|_| Error::InvalidConnection)
    }
    let parameters: Vec<SqlValue> = parameters.into_iter().map(to_sql).collect();
    let (plan, inline) = match lock(&lease).and_then(|held| {
        let plan = held.plan(&statement)?;
        Ok((plan, held.try_run_inline(&statement, &parameters, plan)))
    }) {
        Ok(tried) => tried,
        Err(err) => return Ok(Err(err)),
    };
    let result = match inline {
        Some(result) => result,
        None => {
            let lease = lease.clone();
            tokio::task::spawn_blocking(move || lock(&lease)?.run_waiting(&statement, &parameters))
                .await?
        }
    };
    let checkpoint = plan
        .may_grow_wal
        .then(|| lock(&lease).ok()?.claim_checkpoint())
        .flatten();
    if let Some(turn) = checkpoint {
        // Not awaited: the write is done. Awaited, the checkpoint was the wait of the keyless
        // chat in about a hundred that crosses the bound, and so the p99 of
        // bench/keyless-chat.sh (BENCHMARKS.md, item 23).
        tokio::task::spawn_blocking(move || turn.bound_wal());
    }
    Ok(result)
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(pooled) = self.pooled.take() {
            self.database.give_back(pooled);
        }
    }
}

pub fn open_file(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    // Whatever opens SQLite first in the process (serve's keyless indexing does, before the
    // runtime loads) must find it configured.
    configure_sqlite_once();
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

/// The `connection` resource: one leased SQLite connection for the component's lifetime.
pub struct Connection {
    lease: Arc<Mutex<Lease>>,
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

/// A failed statement as the guest sees it: a full disk (`SQLITE_FULL`) is the interface's own
/// `database-full`, so that components can tell it from a broken statement (and answer
/// `storage_full` rather than `database_error`); anything else is `io` with SQLite's message.
fn statement_error(err: rusqlite::Error) -> Error {
    if err.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        tracing::error!("SQLite: {err}; writes fail until space is freed");
        return Error::DatabaseFull;
    }
    io_error(err)
}

type SqlValue = rusqlite::types::Value;

fn to_sql(value: Value) -> SqlValue {
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

fn run(
    conn: &rusqlite::Connection,
    statement: &str,
    parameters: &[SqlValue],
) -> rusqlite::Result<QueryResult> {
    let mut stmt = conn.prepare_cached(statement)?;
    let columns: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
    let mut rows = stmt.query(rusqlite::params_from_iter(parameters))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let values = (0..columns.len())
            .map(|i| row.get_ref(i).map(from_sql))
            .collect::<Result<Vec<_>, _>>()?;
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
        let turn = if self.sqlite_connections_held > 0 {
            Turn::Holder
        } else {
            Turn::Wait
        };
        match self.services.sqlite.lease(&database, turn).await {
            Ok(lease) => {
                let resource = self.table.push(Connection {
                    lease: Arc::new(Mutex::new(lease)),
                })?;
                self.sqlite_connections_held += 1;
                Ok(Ok(resource))
            }
            Err(err) => {
                tracing::warn!(component = %self.component.id, database, "cannot open SQLite database: {err:#}");
                Ok(Err(io_error(format!("{err:#}"))))
            }
        }
    }

    async fn execute(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        parameters: Vec<Value>,
    ) -> wasmtime::Result<Result<QueryResult, Error>> {
        let lease = self.table.get(&connection)?.lease.clone();
        execute(lease, statement, parameters).await
    }

    async fn last_insert_rowid(
        &mut self,
        connection: Resource<Connection>,
    ) -> wasmtime::Result<i64> {
        let lease = self.table.get(&connection)?.lease.clone();
        let rowid = lease
            .lock()
            .map(|l| l.connection().last_insert_rowid())
            .unwrap_or(0);
        Ok(rowid)
    }

    async fn changes(&mut self, connection: Resource<Connection>) -> wasmtime::Result<u64> {
        let lease = self.table.get(&connection)?.lease.clone();
        let changes = lease.lock().map(|l| l.changes()).unwrap_or(0);
        Ok(changes)
    }

    async fn drop(&mut self, connection: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        self.sqlite_connections_held = self.sqlite_connections_held.saturating_sub(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a statement directly, as no guest can: for setting up and inspecting.
    fn rows(lease: &Lease, statement: &str) -> Result<Vec<Vec<Value>>, Error> {
        let result = run(lease.connection(), statement, &[]).map_err(io_error)?;
        Ok(result.rows.into_iter().map(|row| row.values).collect())
    }

    fn integer(lease: &Lease, statement: &str) -> i64 {
        match rows(lease, statement).unwrap().as_slice() {
            [row] => match row.as_slice() {
                [Value::Integer(i)] => *i,
                _ => panic!("{statement}: not one integer"),
            },
            _ => panic!("{statement}: not one row"),
        }
    }

    fn sqlite() -> (tempfile::TempDir, Sqlite) {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Sqlite::new(dir.path()).unwrap();
        (dir, sqlite)
    }

    async fn with_table(sqlite: &Sqlite) {
        let lease = sqlite.lease("default", Turn::Wait).await.unwrap();
        rows(
            &lease,
            "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)",
        )
        .unwrap();
    }

    /// Writes to `notes` directly (no checkpoint follows) until the WAL is past its bound.
    fn fill_wal_past_the_bound(lease: &Lease) {
        let body = "x".repeat(64 * 1024);
        while !lease.wal_needs_bounding() {
            run(
                lease.connection(),
                "INSERT INTO notes (body) VALUES (?1)",
                &[SqlValue::Text(body.clone())],
            )
            .unwrap();
        }
    }

    #[tokio::test]
    async fn one_statement_at_a_time_bounds_the_wal() {
        let (_dir, sqlite) = sqlite();
        with_table(&sqlite).await;
        let first = sqlite.lease("default", Turn::Wait).await.unwrap();
        let second = sqlite.lease("default", Turn::Wait).await.unwrap();
        assert!(first.claim_checkpoint().is_none(), "the WAL is small");
        fill_wal_past_the_bound(&first);
        let turn = first.claim_checkpoint().expect("past the bound");
        assert!(
            second.claim_checkpoint().is_none(),
            "a second checkpoint while the first runs"
        );
        drop(turn);
        let turn = second.claim_checkpoint().expect("the first one is over");
        turn.bound_wal();
        assert!(!second.wal_needs_bounding());
        assert!(first.claim_checkpoint().is_none(), "the WAL was truncated");
    }

    /// Waits until no checkpoint of `database` runs; false after `patience`.
    async fn checkpoint_done(database: &Database, patience: Duration) -> bool {
        let started = std::time::Instant::now();
        while database.checkpoint_running.load(Ordering::Acquire) {
            if started.elapsed() > patience {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    #[tokio::test]
    async fn the_write_that_crosses_the_bound_does_not_wait_for_the_checkpoint() {
        let (dir, sqlite) = sqlite();
        with_table(&sqlite).await;
        let database = sqlite.database("default");
        // A reader of an old snapshot: the truncating checkpoint waits for it up to its busy
        // timeout, so a checkpoint started below runs for at least that long.
        let reader = open_file(&dir.path().join("default.db")).unwrap();
        reader
            .execute_batch("BEGIN; SELECT count(*) FROM notes;")
            .unwrap();
        let lease = sqlite.lease("default", Turn::Wait).await.unwrap();
        fill_wal_past_the_bound(&lease);
        let lease = Arc::new(Mutex::new(lease));

        guest_statement(&lease, "INSERT INTO notes (body) VALUES ('past the bound')").await;
        assert!(
            database.checkpoint_running.load(Ordering::Acquire),
            "the write waited for its checkpoint"
        );
        // The request's connection is not the checkpoint's: its next statement runs meanwhile.
        let counted = guest_statement(&lease, "SELECT count(*) FROM notes").await;
        assert!(matches!(counted.rows[0].values[..], [Value::Integer(n)] if n > 1));
        assert!(
            database.checkpoint_running.load(Ordering::Acquire),
            "the next statement waited for the checkpoint"
        );

        // Once the reader is gone the WAL is cut back, by that checkpoint or, if it gave up
        // waiting, by the one the next write starts.
        reader.execute_batch("COMMIT").unwrap();
        drop(reader);
        let mut truncated = false;
        for _ in 0..20 {
            assert!(checkpoint_done(&database, Duration::from_secs(10)).await);
            if !lease.lock().unwrap().wal_needs_bounding() {
                truncated = true;
                break;
            }
            guest_statement(&lease, "INSERT INTO notes (body) VALUES ('again')").await;
        }
        assert!(truncated, "the WAL stayed past the bound");
    }

    #[tokio::test]
    async fn a_full_database_is_the_interfaces_database_full_and_reads_go_on() {
        let (_dir, sqlite) = sqlite();
        with_table(&sqlite).await;
        let lease = sqlite.lease("default", Turn::Wait).await.unwrap();
        // SQLite's page limit fails a write exactly as a full disk does (`SQLITE_FULL`).
        let pages = integer(&lease, "PRAGMA page_count");
        rows(&lease, &format!("PRAGMA max_page_count = {}", pages + 2)).unwrap();
        let insert = "INSERT INTO notes (body) VALUES (randomblob(3000))";
        let lease = Arc::new(Mutex::new(lease));
        let mut full = None;
        for _ in 0..10 {
            match execute(lease.clone(), insert.to_string(), Vec::new())
                .await
                .unwrap()
            {
                Ok(_) => continue,
                Err(err) => {
                    full = Some(err);
                    break;
                }
            }
        }
        assert!(
            matches!(full, Some(Error::DatabaseFull)),
            "on the async worker: {full:?}"
        );
        // The same on a blocking thread, where a statement goes when it must wait.
        let waited = lease.lock().unwrap().run_waiting(insert, &[]);
        assert!(
            matches!(waited, Err(Error::DatabaseFull)),
            "on a blocking thread: {waited:?}"
        );
        let counted = guest_statement(&lease, "SELECT count(*) FROM notes").await;
        assert!(matches!(counted.rows[0].values[..], [Value::Integer(n)] if n >= 1));
        // Any other failure stays `io` with SQLite's message.
        let broken = execute(
            lease.clone(),
            "INSERT INTO nowhere VALUES (1)".into(),
            Vec::new(),
        )
        .await
        .unwrap();
        assert!(
            matches!(&broken, Err(Error::Io(message)) if message.contains("no such table")),
            "{broken:?}"
        );
    }

    /// Another thread takes the write gate and holds it until `until` returns; returns once
    /// the gate is taken.
    fn hold_write_gate(
        database: &Arc<Database>,
        until: impl FnOnce() + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        let taken = Arc::new(std::sync::Barrier::new(2));
        let holder = std::thread::spawn({
            let (database, taken) = (database.clone(), taken.clone());
            move || {
                let _turn = database.write_gate();
                taken.wait();
                until();
            }
        });
        taken.wait();
        holder
    }

    /// [`Lease::try_run_inline`] as [`execute`] calls it.
    fn inline(
        lease: &Lease,
        statement: &str,
        parameters: &[SqlValue],
    ) -> Option<Result<QueryResult, Error>> {
        let plan = lease.plan(statement).unwrap();
        lease.try_run_inline(statement, parameters, plan)
    }

    async fn guest_statement(lease: &Arc<Mutex<Lease>>, statement: &str) -> QueryResult {
        execute(lease.clone(), statement.to_string(), Vec::new())
            .await
            .unwrap()
            .unwrap()
    }

    /// Counts to `n` in SQL: about a million virtual-machine instructions per 100,000.
    const COUNT_TO: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1) SELECT max(x) FROM c";

    #[tokio::test]
    async fn a_statement_past_the_inline_budget_gives_way_and_finishes_on_a_blocking_thread() {
        let (_dir, sqlite) = sqlite();
        let lease = sqlite.lease("default", Turn::Wait).await.unwrap();
        // Run to its end it would answer 20,000,000; stopped by the budget it gives way.
        let long = [SqlValue::Integer(20_000_000)];
        assert!(inline(&lease, COUNT_TO, &long).is_none());
        let quick = [SqlValue::Integer(10)];
        let answered = inline(&lease, COUNT_TO, &quick).unwrap().unwrap();
        assert!(matches!(answered.rows[0].values[..], [Value::Integer(10)]));
        let lease = Arc::new(Mutex::new(lease));
        let counted = execute(
            lease.clone(),
            COUNT_TO.to_string(),
            vec![Value::Integer(2_000_000)],
        )
        .await
        .unwrap()
        .unwrap();
        assert!(matches!(
            counted.rows[0].values[..],
            [Value::Integer(2_000_000)]
        ));
        assert_eq!(sqlite.statements_on_blocking_threads("default"), 1);
    }

    #[tokio::test]
    async fn a_write_finding_the_gate_held_retries_then_waits_on_a_blocking_thread() {
        let (_dir, sqlite) = sqlite();
        with_table(&sqlite).await;
        let lease = sqlite.lease("default", Turn::Wait).await.unwrap();
        let insert = "INSERT INTO notes (body) VALUES ('waited')";
        let database = sqlite.database("default");

        // Released by its holder soon: taken.
        let holder = hold_write_gate(&database, || std::thread::sleep(Duration::from_millis(5)));
        assert!(database.write_gate.try_lock().is_err());
        assert!(database
            .try_write_gate_within(Duration::from_secs(5))
            .is_some());
        holder.join().unwrap();

        // Held past the patience of a statement on an async worker (by another thread, until
        // told): it waits on a blocking thread instead, and runs once the gate is free.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let holder = hold_write_gate(&database, move || {
            let _ = released.recv();
        });
        assert!(inline(&lease, insert, &[]).is_none());
        assert_eq!(integer(&lease, "SELECT count(*) FROM notes"), 0);
        let lease = Arc::new(Mutex::new(lease));
        let writer = tokio::spawn({
            let lease = lease.clone();
            async move { guest_statement(&lease, insert).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!writer.is_finished(), "the write went ahead of the gate");
        release.send(()).unwrap();
        holder.join().unwrap();
        writer.await.unwrap();
        assert_eq!(
            integer(&lease.lock().unwrap(), "SELECT count(*) FROM notes"),
            1
        );
        assert_eq!(sqlite.statements_on_blocking_threads("default"), 1);
    }

    #[tokio::test]
    async fn writes_that_would_wait_for_sqlite_run_on_a_blocking_thread_and_wait() {
        let (dir, sqlite) = sqlite();
        with_table(&sqlite).await;
        let lease = sqlite.lease("default", Turn::Wait).await.unwrap();
        let insert = "INSERT INTO notes (body) VALUES ('waited')";

        // Another process holds SQLite's write lock for a while.
        let other = open_file(&dir.path().join("default.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        assert!(inline(&lease, insert, &[]).is_none());
        let lease = Arc::new(Mutex::new(lease));
        let committer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            other.execute_batch("COMMIT").unwrap();
        });
        guest_statement(&lease, insert).await;
        committer.join().unwrap();

        // Inside a transaction nothing runs inline: an interrupted write would undo it all.
        guest_statement(&lease, "BEGIN").await;
        assert!(inline(&lease.lock().unwrap(), insert, &[]).is_none());
        guest_statement(&lease, insert).await;
        guest_statement(&lease, "COMMIT").await;
        let count = guest_statement(&lease, "SELECT count(*) FROM notes").await;
        assert!(matches!(count.rows[0].values[..], [Value::Integer(2)]));
        // The write that waited for the other process, BEGIN's insert and COMMIT.
        assert_eq!(sqlite.statements_on_blocking_threads("default"), 3);
    }

    #[tokio::test]
    async fn a_finished_request_leaves_its_connection_for_the_next() {
        let (_dir, sqlite) = sqlite();
        with_table(&sqlite).await;
        assert_eq!(sqlite.idle_connections("default"), 1);
        let first = sqlite.lease("default", Turn::Wait).await.unwrap();
        let handle = unsafe { first.connection().handle() } as usize;
        assert_eq!(sqlite.idle_connections("default"), 0);
        drop(first);
        let second = sqlite.lease("default", Turn::Wait).await.unwrap();
        assert_eq!(unsafe { second.connection().handle() } as usize, handle);
    }

    #[tokio::test]
    async fn a_transaction_left_open_is_rolled_back_before_reuse() {
        let (_dir, sqlite) = sqlite();
        with_table(&sqlite).await;
        let lease = sqlite.lease("default", Turn::Wait).await.unwrap();
        rows(&lease, "BEGIN").unwrap();
        rows(&lease, "INSERT INTO notes (body) VALUES ('not committed')").unwrap();
        drop(lease);
        assert_eq!(sqlite.idle_connections("default"), 1);
        let next = sqlite.lease("default", Turn::Wait).await.unwrap();
        assert!(next.connection().is_autocommit());
        assert_eq!(integer(&next, "SELECT count(*) FROM notes"), 0);
    }

    #[tokio::test]
    async fn a_connection_whose_session_state_changed_is_closed_not_reused() {
        let (dir, sqlite) = sqlite();
        with_table(&sqlite).await;
        let other = dir.path().join("other.db").display().to_string();
        for changes_state in [
            "CREATE TEMP TABLE scratch (secret TEXT)".to_string(),
            format!("ATTACH DATABASE '{other}' AS other"),
            "PRAGMA foreign_keys = OFF".to_string(),
            "PRAGMA query_only = ON".to_string(),
        ] {
            let lease = sqlite.lease("default", Turn::Wait).await.unwrap();
            rows(&lease, &changes_state).unwrap();
            drop(lease);
            assert_eq!(
                sqlite.idle_connections("default"),
                0,
                "kept after {changes_state}"
            );
            let fresh = sqlite.lease("default", Turn::Wait).await.unwrap();
            assert!(rows(&fresh, "SELECT * FROM temp.scratch").is_err());
            assert_eq!(
                integer(&fresh, "SELECT count(*) FROM pragma_database_list"),
                1,
                "after {changes_state}"
            );
            assert_eq!(integer(&fresh, "PRAGMA foreign_keys"), 1);
            rows(&fresh, "INSERT INTO notes (body) VALUES ('writable')").unwrap();
            drop(fresh);
            // Reading a pragma through the guest path also counts, so empty the pool again.
            sqlite.database("default").idle().clear();
        }
    }

    #[tokio::test]
    async fn a_connection_that_searched_full_text_is_reused() {
        let (dir, sqlite) = sqlite();
        let writer = open_file(&dir.path().join("default.db")).unwrap();
        writer
            .execute_batch(
                "CREATE VIRTUAL TABLE docs USING fts5 (body);
                 INSERT INTO docs (body) VALUES ('the zero moment point');",
            )
            .unwrap();
        let lease = sqlite.lease("default", Turn::Wait).await.unwrap();
        let handle = unsafe { lease.connection().handle() } as usize;
        let found = rows(&lease, "SELECT rowid FROM docs WHERE docs MATCH 'moment'").unwrap();
        assert_eq!(found.len(), 1);
        drop(lease);
        assert_eq!(sqlite.idle_connections("default"), 1);
        let next = sqlite.lease("default", Turn::Wait).await.unwrap();
        assert_eq!(unsafe { next.connection().handle() } as usize, handle);
        // Another connection's write still shows: FTS5 checks the data version per query.
        writer
            .execute("INSERT INTO docs (body) VALUES ('a moment later')", [])
            .unwrap();
        let found = rows(&next, "SELECT rowid FROM docs WHERE docs MATCH 'moment'").unwrap();
        assert_eq!(found.len(), 2);
    }

    #[tokio::test]
    async fn the_last_rowid_and_changes_of_an_earlier_request_do_not_show() {
        let (_dir, sqlite) = sqlite();
        with_table(&sqlite).await;
        let lease = sqlite.lease("default", Turn::Wait).await.unwrap();
        rows(
            &lease,
            "INSERT INTO notes (body) VALUES ('someone else''s')",
        )
        .unwrap();
        assert_eq!(lease.connection().last_insert_rowid(), 1);
        assert_eq!(lease.changes(), 1);
        drop(lease);
        let next = sqlite.lease("default", Turn::Wait).await.unwrap();
        assert_eq!(next.connection().last_insert_rowid(), 0);
        assert_eq!(next.changes(), 0);
        rows(&next, "UPDATE notes SET body = 'mine' WHERE id = 1").unwrap();
        assert_eq!(next.changes(), 1);
        assert_eq!(next.connection().last_insert_rowid(), 0);
    }

    #[tokio::test]
    async fn idle_connections_are_bounded() {
        let (_dir, sqlite) = sqlite();
        with_table(&sqlite).await;
        let mut leases = Vec::new();
        for _ in 0..MAX_IDLE_CONNECTIONS + 5 {
            leases.push(sqlite.lease("default", Turn::Wait).await.unwrap());
        }
        drop(leases);
        assert_eq!(sqlite.idle_connections("default"), MAX_IDLE_CONNECTIONS);
    }

    #[tokio::test]
    async fn past_the_bound_a_request_waits_for_a_connection_unless_it_holds_one() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Sqlite::with_lease_limit(dir.path(), 2).unwrap();
        let first = sqlite.lease("default", Turn::Wait).await.unwrap();
        let _second = sqlite.lease("default", Turn::Wait).await.unwrap();
        let waiting = tokio::spawn({
            let sqlite = sqlite.clone();
            async move { sqlite.lease("default", Turn::Wait).await.map(drop) }
        });
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "a third request got a connection past the bound of 2"
        );
        // A request that holds one gets another at once, or requests holding one each and
        // wanting a second would wait on each other for ever.
        let holder = tokio::time::timeout(
            Duration::from_secs(5),
            sqlite.lease("default", Turn::Holder),
        )
        .await
        .expect("a request holding a connection waited for another");
        holder.unwrap();
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a connection given back did not reach the request waiting for it")
            .unwrap()
            .unwrap();
    }
}
