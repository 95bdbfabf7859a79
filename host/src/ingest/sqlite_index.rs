//! The embedded keyword index (`DATA_DIR/default.db`, the components' `default` database):
//! FTS5 rows written in one transaction, so readers see the old index or the new one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use rag_core::docs::Chunk;
use rag_core::search_index;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension as _};

use super::{plan, progress_bar, Applied, Options};
use crate::sqlite::Sqlite;

/// The file behind the components' `default` database.
pub fn index_path(data_dir: &Path) -> Result<PathBuf> {
    Ok(Sqlite::new(data_dir)?.path_of("default"))
}

/// Chunks in the embedded index; 0 when the file or the table does not exist yet.
pub fn count_chunks(data_dir: &Path) -> Result<u64> {
    let path = index_path(data_dir)?;
    let Some(connection) = open_read_only(&path)? else {
        return Ok(0);
    };
    if !has_chunks_table(&connection)? {
        return Ok(0);
    }
    let count: i64 = connection.query_row(search_index::COUNT_CHUNKS, [], |row| row.get(0))?;
    Ok(count.max(0) as u64)
}

fn open_read_only(path: &Path) -> Result<Option<Connection>> {
    if !path.exists() {
        return Ok(None);
    }
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", path.display()))?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(Some(connection))
}

fn has_chunks_table(connection: &Connection) -> Result<bool> {
    let found = connection
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chunks'",
            [],
            |_| Ok(()),
        )
        .optional()?;
    Ok(found.is_some())
}

fn stored_hashes(connection: &Connection) -> Result<HashMap<String, String>> {
    let mut statement = connection.prepare(search_index::LIST_CHUNK_HASHES)?;
    let rows = statement.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(2)?))
    })?;
    let mut stored = HashMap::new();
    for row in rows {
        let (id, hash) = row?;
        stored.insert(id.to_ascii_lowercase(), hash);
    }
    Ok(stored)
}

/// Writes new and changed chunks, and with `prune` deletes vanished ones, in one transaction.
pub(super) fn sync(options: &Options, chunks: &[Chunk]) -> Result<Applied> {
    let path = index_path(&options.data_dir)?;
    if options.dry_run {
        let stored = match open_read_only(&path)? {
            Some(connection) if has_chunks_table(&connection)? => stored_hashes(&connection)?,
            _ => HashMap::new(),
        };
        let plan = plan(chunks, &stored);
        return Ok(Applied {
            embedded: 0,
            written: plan.write.len(),
            unchanged: plan.unchanged,
            deleted: if options.prune {
                plan.vanished.len()
            } else {
                0
            },
            stale: if options.prune {
                0
            } else {
                plan.vanished.len()
            },
        });
    }

    let mut connection = crate::sqlite::open_file(&path)
        .with_context(|| format!("cannot open the embedded index {}", path.display()))?;
    let transaction = connection.transaction()?;
    for statement in search_index::SCHEMA {
        transaction.execute(statement, [])?;
    }
    let version: String =
        transaction.query_row(search_index::SELECT_SCHEMA_VERSION, [], |row| row.get(0))?;
    if version != search_index::SCHEMA_VERSION.to_string() {
        bail!(
            "{} holds search index schema {version}, this build writes {}",
            path.display(),
            search_index::SCHEMA_VERSION
        );
    }
    let stored = stored_hashes(&transaction)?;
    let plan = plan(chunks, &stored);
    let bar = progress_bar(options.show_progress, plan.write.len(), "indexing");
    let mut written = 0;
    {
        let mut upsert = transaction.prepare(search_index::UPSERT_CHUNK)?;
        for chunk in &plan.write {
            written += upsert.execute(params![
                chunk.id,
                chunk.page_url,
                chunk.url,
                chunk.title,
                chunk.heading,
                chunk.text,
                chunk.hash
            ])?;
            bar.inc(1);
        }
    }
    let mut deleted = 0;
    if options.prune {
        let mut delete = transaction.prepare(search_index::DELETE_CHUNK)?;
        for id in &plan.vanished {
            deleted += delete.execute(params![id])?;
        }
    }
    transaction.execute(search_index::OPTIMIZE, [])?;
    // Keyword relevance weighs words the book never uses by how open its vocabulary is.
    transaction.execute(search_index::CREATE_VOCABULARY, [])?;
    transaction.execute(search_index::STORE_NEW_WORD_RATE, [])?;
    transaction.commit()?;
    bar.finish_and_clear();
    Ok(Applied {
        embedded: 0,
        written,
        unchanged: plan.unchanged,
        deleted,
        stale: if options.prune {
            0
        } else {
            plan.vanished.len()
        },
    })
}
