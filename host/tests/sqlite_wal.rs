//! The embedded database's WAL stays bounded while writers never stop and some reader always
//! holds a snapshot open, the load under which SQLite's own passive checkpoints never restart
//! the log. Real SQLite files, opened as the runner opens them for components.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use host::sqlite::{bound_wal, open_file, wal_path, WAL_CHECKPOINT_BYTES};

const WRITERS: usize = 4;
const CHATS_PER_WRITER: usize = 400;
const READERS: usize = 2;

struct Run {
    max_wal_bytes: u64,
    final_wal_bytes: u64,
    messages: i64,
}

/// Opens the database as the runner does; without the policy, with SQLite's own checkpoint
/// settings (a passive checkpoint every 1000 pages, no size limit), as the runner had them.
fn open(database: &Path, bounded: bool) -> rusqlite::Connection {
    let conn = open_file(database).unwrap();
    if !bounded {
        conn.pragma_update(None, "wal_autocheckpoint", 1000)
            .unwrap();
        conn.pragma_update(None, "journal_size_limit", -1).unwrap();
    }
    conn
}

fn wal_bytes(wal: &Path) -> u64 {
    std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

/// One statement as the runner runs a component's: executed, then (when `bounded`) the WAL
/// policy the runner applies after every statement.
fn execute(
    conn: &rusqlite::Connection,
    wal: &Path,
    bounded: bool,
    sql: &str,
    params: impl rusqlite::Params,
) {
    conn.execute(sql, params).unwrap();
    if bounded {
        bound_wal(conn, wal).unwrap();
    }
}

/// What one chat writes: a session and its user turn in one transaction, the assistant's
/// answer stored as it completes, then a rating.
fn write_chat(conn: &rusqlite::Connection, wal: &Path, bounded: bool, session: &str, n: usize) {
    let question = format!("How do I configure retrieval for chapter {n}? ").repeat(4);
    let answer = format!("Chapter {n} explains the retriever settings in detail. ").repeat(30);
    execute(conn, wal, bounded, "BEGIN IMMEDIATE", []);
    execute(
        conn,
        wal,
        bounded,
        "INSERT INTO sessions (id) VALUES (?1) ON CONFLICT (id) DO NOTHING",
        [session],
    );
    execute(
        conn,
        wal,
        bounded,
        "INSERT INTO messages (session_id, role, content, status) VALUES (?1, 'user', ?2, 'complete')",
        [session, question.as_str()],
    );
    execute(
        conn,
        wal,
        bounded,
        "INSERT INTO messages (session_id, role, content, status) VALUES (?1, 'assistant', '', 'incomplete')",
        [session],
    );
    let assistant = conn.last_insert_rowid();
    execute(conn, wal, bounded, "COMMIT", []);
    execute(
        conn,
        wal,
        bounded,
        "UPDATE messages SET content = ?2, sources = ?3, status = 'complete' WHERE id = ?1",
        rusqlite::params![
            assistant,
            answer,
            r#"[{"url":"https://example.org/book/retrieval"}]"#
        ],
    );
    execute(
        conn,
        wal,
        bounded,
        "INSERT INTO feedback (message_id, rating, comment) VALUES (?1, 'up', ?2) \
         ON CONFLICT (message_id) DO UPDATE SET rating = excluded.rating",
        rusqlite::params![assistant, "helpful"],
    );
}

/// Writers store chats while readers hand a read transaction to each other, so that at every
/// moment at least one snapshot is open: a reader commits only after the other has begun.
fn sustained_writes(bounded: bool) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("default.db");
    let wal = wal_path(&database);
    // Kept open to the end: closing the last connection checkpoints and deletes the WAL, which
    // would hide its size at the end of the run.
    let conn = open(&database, bounded);
    // The session store's tables, from the components' own migrations.
    rag_core::store::ensure_schema(&conn).unwrap();

    let max_wal_bytes = Arc::new(AtomicU64::new(0));
    let writing = Arc::new(AtomicBool::new(true));
    let reads_begun = Arc::new(AtomicU64::new(0));
    let sample = {
        let (wal, max) = (wal.clone(), max_wal_bytes.clone());
        move || {
            max.fetch_max(wal_bytes(&wal), Ordering::Relaxed);
        }
    };

    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (database, writing, reads_begun) =
                (database.clone(), writing.clone(), reads_begun.clone());
            let sample = sample.clone();
            std::thread::spawn(move || {
                let conn = open(&database, bounded);
                while writing.load(Ordering::Relaxed) {
                    // Readers leave the WAL policy to the writers: a reader checkpointing here
                    // would wait for the other reader, which waits for this one to begin again.
                    conn.execute_batch("BEGIN").unwrap();
                    let _: i64 = conn
                        .query_row("SELECT count(*) FROM messages", [], |row| row.get(0))
                        .unwrap();
                    let mine = reads_begun.fetch_add(1, Ordering::SeqCst) + 1;
                    while reads_begun.load(Ordering::SeqCst) <= mine
                        && writing.load(Ordering::Relaxed)
                    {
                        std::thread::yield_now();
                    }
                    conn.execute_batch("COMMIT").unwrap();
                    sample();
                }
            })
        })
        .collect();

    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (database, wal) = (database.clone(), wal.clone());
            let sample = sample.clone();
            std::thread::spawn(move || {
                let conn = open(&database, bounded);
                for n in 0..CHATS_PER_WRITER {
                    write_chat(&conn, &wal, bounded, &format!("w{writer}-{n}"), n);
                    sample();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    writing.store(false, Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap();
    }
    sample();
    let final_wal_bytes = wal_bytes(&wal);

    let messages = conn
        .query_row(
            "SELECT count(*) FROM messages WHERE status = 'complete'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    Run {
        max_wal_bytes: max_wal_bytes.load(Ordering::Relaxed),
        final_wal_bytes,
        messages,
    }
}

const MIB: f64 = 1024.0 * 1024.0;

#[test]
fn wal_stays_bounded_under_sustained_writes_and_overlapping_readers() {
    let run = sustained_writes(true);
    eprintln!(
        "bounded WAL: max {:.1} MiB, at the end {:.1} MiB, {} messages",
        run.max_wal_bytes as f64 / MIB,
        run.final_wal_bytes as f64 / MIB,
        run.messages
    );
    assert_eq!(run.messages, (2 * WRITERS * CHATS_PER_WRITER) as i64);
    // Past the threshold every writer checkpoints before its next statement, so the log can
    // overshoot by at most the few commits already under way.
    assert!(
        run.max_wal_bytes <= 2 * WAL_CHECKPOINT_BYTES,
        "the WAL reached {} bytes; bound {}",
        run.max_wal_bytes,
        2 * WAL_CHECKPOINT_BYTES
    );
    assert!(
        run.final_wal_bytes <= WAL_CHECKPOINT_BYTES,
        "the WAL ended at {} bytes; bound {}",
        run.final_wal_bytes,
        WAL_CHECKPOINT_BYTES
    );
}

/// The same load without the policy: SQLite's passive checkpoints alone let the log grow, which
/// is what makes the test above able to fail.
#[test]
fn overlapping_readers_starve_sqlites_own_checkpoints() {
    let run = sustained_writes(false);
    eprintln!(
        "SQLite's own checkpoints only: max {:.1} MiB, at the end {:.1} MiB",
        run.max_wal_bytes as f64 / MIB,
        run.final_wal_bytes as f64 / MIB
    );
    assert!(
        run.max_wal_bytes > 2 * WAL_CHECKPOINT_BYTES,
        "the WAL stayed at {} bytes without the policy; the load no longer starves checkpoints",
        run.max_wal_bytes
    );
}
