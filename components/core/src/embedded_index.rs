//! Whether the embedded search index can answer questions: the one check that keyword
//! retrieval in `/chat` and `/health/ready` share, so readiness never reports up while chat
//! would refuse.

use crate::error::ApiError;
use crate::store::{Database, StoreError};

/// What the embedded index holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexState {
    /// Its tables exist and hold at least one chunk.
    Ready,
    /// Never built: the tables `host ingest` creates are missing.
    Missing,
    /// Built from no documents: nothing can ever match.
    Empty,
}

impl IndexState {
    /// Why the index cannot answer, or `None` when it can.
    pub fn problem(self) -> Option<&'static str> {
        match self {
            IndexState::Ready => None,
            IndexState::Missing => Some(
                "the embedded search index has not been built: run `host ingest` first",
            ),
            IndexState::Empty => Some(
                "the embedded search index holds no documents: run `host ingest` on the docs folder",
            ),
        }
    }

    /// 503 `index_unavailable` saying why; `None` when the index is ready.
    pub fn unavailable(self) -> Option<ApiError> {
        self.problem()
            .map(|problem| ApiError::new(503, "index_unavailable", problem))
    }
}

/// Looks at the index's tables: two cheap queries, neither of which scans the chunks.
pub fn state(db: &(impl Database + ?Sized)) -> Result<IndexState, StoreError> {
    let tables = db.query(
        "SELECT count(*) AS tables FROM sqlite_master \
         WHERE type = 'table' AND name IN ('chunks', 'chunks_fts')",
        &[],
    )?;
    let present = tables
        .first()
        .map(|row| row.integer("tables"))
        .transpose()?;
    if present != Some(2) {
        return Ok(IndexState::Missing);
    }
    let filled = db.query("SELECT EXISTS (SELECT 1 FROM chunks) AS filled", &[])?;
    match filled
        .first()
        .map(|row| row.integer("filled"))
        .transpose()?
    {
        Some(1) => Ok(IndexState::Ready),
        _ => Ok(IndexState::Empty),
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use crate::search_index::{SCHEMA, UPSERT_CHUNK};

    #[test]
    fn missing_then_empty_then_ready() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        assert_eq!(state(&connection).unwrap(), IndexState::Missing);
        for statement in SCHEMA {
            connection.execute(statement, []).unwrap();
        }
        assert_eq!(state(&connection).unwrap(), IndexState::Empty);
        connection
            .execute(
                UPSERT_CHUNK,
                rusqlite::params!["a#1", "/a", "/a#1", "A", "", "text", "h"],
            )
            .unwrap();
        assert_eq!(state(&connection).unwrap(), IndexState::Ready);
        assert_eq!(IndexState::Ready.unavailable(), None);
        let error = IndexState::Empty.unavailable().unwrap();
        assert_eq!((error.status, error.code), (503, "index_unavailable"));
        assert!(IndexState::Missing.problem().unwrap().contains("ingest"));
    }
}
