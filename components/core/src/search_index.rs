//! The embedded, keyless search index: SQLite FTS5 ranked with BM25.
//!
//! The same statements serve the writer (`host ingest`, through rusqlite) and the reader (the
//! chat component, through Spin's sqlite interface), so this module holds SQL and the small
//! conversions around it, never a connection. Every statement is a single SQL statement, as
//! Spin's `execute` expects.

use crate::retrieval::Passage;
use crate::store::{Database, Row, SqlValue, StoreError};

/// Bumped when the statements below change shape; stored in `index_meta`.
pub const SCHEMA_VERSION: u32 = 1;

/// Idempotent schema statements, in order. `chunks.seq` is the FTS rowid: an explicit
/// INTEGER PRIMARY KEY, because an implicit rowid may be renumbered by VACUUM and the
/// external-content FTS table would then point at the wrong rows.
pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS index_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "INSERT OR IGNORE INTO index_meta (key, value) VALUES ('schema_version', '1')",
    "CREATE TABLE IF NOT EXISTS chunks (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        page_url TEXT NOT NULL,
        url TEXT NOT NULL,
        title TEXT NOT NULL,
        heading TEXT NOT NULL,
        text TEXT NOT NULL,
        hash TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS chunks_page_url ON chunks (page_url)",
    "CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5 (
        title, heading, text,
        content = 'chunks', content_rowid = 'seq',
        tokenize = 'porter unicode61'
    )",
    "CREATE TRIGGER IF NOT EXISTS chunks_after_insert AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts (rowid, title, heading, text)
        VALUES (new.seq, new.title, new.heading, new.text);
    END",
    "CREATE TRIGGER IF NOT EXISTS chunks_after_delete AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts (chunks_fts, rowid, title, heading, text)
        VALUES ('delete', old.seq, old.title, old.heading, old.text);
    END",
    "CREATE TRIGGER IF NOT EXISTS chunks_after_update AFTER UPDATE ON chunks BEGIN
        INSERT INTO chunks_fts (chunks_fts, rowid, title, heading, text)
        VALUES ('delete', old.seq, old.title, old.heading, old.text);
        INSERT INTO chunks_fts (rowid, title, heading, text)
        VALUES (new.seq, new.title, new.heading, new.text);
    END",
];

/// `SELECT value`: the schema version the index was created with (one row, text).
pub const SELECT_SCHEMA_VERSION: &str = "SELECT value FROM index_meta WHERE key = 'schema_version'";

/// Insert or replace one chunk. Parameters: ?1 id, ?2 page_url, ?3 url, ?4 title,
/// ?5 heading, ?6 text, ?7 hash. The triggers keep the FTS table in step.
pub const UPSERT_CHUNK: &str = "INSERT INTO chunks (id, page_url, url, title, heading, text, hash)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
    ON CONFLICT (id) DO UPDATE SET
        page_url = excluded.page_url, url = excluded.url, title = excluded.title,
        heading = excluded.heading, text = excluded.text, hash = excluded.hash
    WHERE chunks.hash IS NOT excluded.hash
        OR chunks.url IS NOT excluded.url
        OR chunks.page_url IS NOT excluded.page_url";

/// Delete one chunk. Parameter: ?1 id.
pub const DELETE_CHUNK: &str = "DELETE FROM chunks WHERE id = ?1";

/// Every chunk's `(id, page_url, hash)`, so the writer can skip unchanged chunks and delete
/// vanished ones.
pub const LIST_CHUNK_HASHES: &str = "SELECT id, page_url, hash FROM chunks ORDER BY id";

/// Number of chunks (one row, integer): readiness and "is the index empty" checks.
pub const COUNT_CHUNKS: &str = "SELECT COUNT(*) FROM chunks";

/// Ranked search. Parameters: ?1 an expression from [`fts_match_expression`], ?2 the limit.
/// BM25 weighs title 4, heading 2, text 1: a query word in a title or heading says more about
/// a chunk than the same word in its body.
/// Columns, in order: id, page_url, url, title, heading, text, bm25 (REAL, lower is better);
/// see [`SearchRow`].
pub const SEARCH: &str = "SELECT c.id, c.page_url, c.url, c.title, c.heading, c.text,
        bm25(chunks_fts, 4.0, 2.0, 1.0) AS rank
    FROM chunks_fts
    JOIN chunks AS c ON c.seq = chunks_fts.rowid
    WHERE chunks_fts MATCH ?1
    ORDER BY rank
    LIMIT ?2";

/// Most query words a MATCH expression keeps; longer questions add noise, not recall.
pub const MAX_QUERY_TERMS: usize = 32;

/// Words too common to say anything about which chunk answers a question.
const STOP_WORDS: &[&str] = &[
    "a", "about", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "could", "did",
    "do", "does", "for", "from", "had", "has", "have", "how", "i", "if", "in", "into", "is", "it",
    "its", "me", "my", "of", "on", "or", "our", "should", "so", "than", "that", "the", "their",
    "them", "then", "there", "these", "they", "this", "those", "to", "was", "we", "were", "what",
    "when", "where", "which", "who", "whom", "why", "will", "with", "would", "you", "your",
];

/// Turns free text into a safe FTS5 MATCH expression: words split as the `unicode61`
/// tokenizer splits them, lower-cased, stop-words and duplicates dropped, each word quoted
/// (so nothing a user types is read as FTS5 syntax) and OR-ed so partial matches still rank.
/// `None` when no searchable word is left.
pub fn fts_match_expression(query: &str) -> Option<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in query.split(|c: char| !c.is_alphanumeric()) {
        let word = word.to_lowercase();
        let single_letter = word.chars().count() == 1 && !word.chars().all(|c| c.is_numeric());
        if word.is_empty() || single_letter || STOP_WORDS.contains(&word.as_str()) {
            continue;
        }
        if !terms.contains(&word) {
            terms.push(word);
        }
        if terms.len() == MAX_QUERY_TERMS {
            break;
        }
    }
    if terms.is_empty() {
        return None;
    }
    let quoted: Vec<String> = terms
        .iter()
        .map(|term| format!("\"{}\"", term.replace('"', "\"\"")))
        .collect();
    Some(quoted.join(" OR "))
}

/// Maps FTS5 `bm25()` (negative, lower is better) to 0..=1 (higher is better) with
/// `x / (1 + x)`, `x = -raw`, so the embedded index and Qdrant share one score threshold.
pub fn score_from_bm25(raw: f64) -> f32 {
    let x = -raw;
    if !x.is_finite() || x <= 0.0 {
        return if x == f64::INFINITY { 1.0 } else { 0.0 };
    }
    (x / (1.0 + x)) as f32
}

/// One row of [`SEARCH`], in column order.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRow {
    pub id: String,
    pub page_url: String,
    pub url: String,
    pub title: String,
    pub heading: String,
    pub text: String,
    /// The raw `bm25()` value.
    pub bm25: f64,
}

/// The passage a search row stands for, scored on the shared 0..=1 scale.
pub fn row_to_passage(row: SearchRow) -> Passage {
    Passage {
        score: score_from_bm25(row.bm25),
        url: row.url,
        page_url: row.page_url,
        title: row.title,
        heading: row.heading,
        text: row.text,
    }
}

impl SearchRow {
    /// Reads a row of [`SEARCH`] as the [`Database`] trait returns it.
    pub fn from_row(row: Row<'_>) -> Result<Self, StoreError> {
        let bm25 = match row.get("rank")? {
            SqlValue::Real(value) => *value,
            SqlValue::Integer(value) => *value as f64,
            _ => return Err(StoreError::Query("rank is not a number".into())),
        };
        Ok(SearchRow {
            id: row.text("id")?,
            page_url: row.text("page_url")?,
            url: row.text("url")?,
            title: row.text("title")?,
            heading: row.text("heading")?,
            text: row.text("text")?,
            bm25,
        })
    }
}

/// Keyword search of the embedded index: at most `limit` passages, best first. A question made
/// only of stop words matches nothing rather than everything.
pub fn search(
    db: &(impl Database + ?Sized),
    query: &str,
    limit: u32,
) -> Result<Vec<Passage>, StoreError> {
    let Some(expression) = fts_match_expression(query) else {
        return Ok(Vec::new());
    };
    let rows = db.query(SEARCH, &[expression.into(), i64::from(limit).into()])?;
    rows.iter()
        .map(|row| SearchRow::from_row(row).map(row_to_passage))
        .collect()
}

// The tests search through the crate's rusqlite adapter (`--features sqlite`).
#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use rusqlite::{params, Connection};

    fn create(connection: &Connection) {
        for statement in SCHEMA {
            connection.execute(statement, []).unwrap();
        }
    }

    fn upsert(connection: &Connection, id: &str, title: &str, heading: &str, text: &str) -> usize {
        let page_url = format!(
            "https://book.example/docs/{}",
            title.to_lowercase().replace(' ', "-")
        );
        let url = format!("{page_url}#{}", heading.to_lowercase().replace(' ', "-"));
        let hash = format!("{:x}", text.len() * 31 + title.len());
        connection
            .execute(
                UPSERT_CHUNK,
                params![id, page_url, url, title, heading, text, hash],
            )
            .unwrap()
    }

    fn search(connection: &Connection, query: &str, limit: u32) -> Vec<Passage> {
        super::search(connection, query, limit).unwrap()
    }

    fn seeded() -> Connection {
        let connection = Connection::open_in_memory().unwrap();
        create(&connection);
        upsert(&connection, "1", "Locomotion", "Zero moment point", "The zero moment point (ZMP) is where the net ground reaction moment vanishes; keeping it inside the support polygon keeps a walking robot balanced.");
        upsert(&connection, "2", "ROS 2 basics", "Topics", "Run ros2 topic list to list the active topics, and ros2 topic echo to print the messages published on one.");
        upsert(&connection, "3", "Sensors", "IMU", "An inertial measurement unit combines accelerometers and gyroscopes to estimate orientation.");
        upsert(&connection, "4", "Kinematics", "Inverse kinematics", "Inverse kinematics finds the joint angles that place the end effector at a desired pose.");
        connection
    }

    #[test]
    fn relevant_chunk_ranks_first_with_a_normalised_score() {
        let connection = seeded();
        let hits = search(&connection, "What does ZMP stand for?", 3);
        assert_eq!(hits[0].heading, "Zero moment point");
        assert!(
            hits[0].score > 0.0 && hits[0].score < 1.0,
            "{}",
            hits[0].score
        );

        let hits = search(&connection, "Which ROS 2 command lists topics?", 3);
        assert_eq!(hits[0].title, "ROS 2 basics");
        assert_eq!(hits[0].url, "https://book.example/docs/ros-2-basics#topics");
        // Porter stemming: "walks" finds "walking".
        assert_eq!(search(&connection, "robot walks", 1)[0].title, "Locomotion");
        assert!(search(&connection, "photosynthesis", 5).is_empty());
    }

    #[test]
    fn hostile_queries_are_quoted_not_interpreted() {
        let connection = seeded();
        for query in [
            "\"foo\" OR bar* NEAR(",
            "title: ) AND ( NOT -ros2 ^ {heading text}: \"",
            "*",
            "NEAR(a b, 3) OR \"",
            "col:zmp'; DROP TABLE chunks; --",
            "ünïcödé “quotes” 漢字",
        ] {
            // Must not error; results may be empty.
            let _ = search(&connection, query, 5);
        }
        assert_eq!(
            fts_match_expression("\"foo\" OR bar* NEAR("),
            Some("\"foo\" OR \"bar\" OR \"near\"".to_owned())
        );
        assert_eq!(fts_match_expression("what is the?"), None);
        assert_eq!(fts_match_expression("  ** ( ) \" "), None);
        assert_eq!(
            fts_match_expression("ROS 2 ros 2"),
            Some("\"ros\" OR \"2\"".to_owned())
        );
        let count: i64 = connection
            .query_row(COUNT_CHUNKS, [], |row| row.get(0))
            .unwrap();
        assert_eq!(count, 4);
    }

    #[test]
    fn schema_is_idempotent_and_versioned() {
        let connection = seeded();
        create(&connection);
        create(&connection);
        let version: String = connection
            .query_row(SELECT_SCHEMA_VERSION, [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION.to_string());
        let count: i64 = connection
            .query_row(COUNT_CHUNKS, [], |row| row.get(0))
            .unwrap();
        assert_eq!(count, 4);
        assert_eq!(search(&connection, "zmp", 5).len(), 1);
    }

    #[test]
    fn updates_and_deletes_keep_the_full_text_index_in_step() {
        let connection = seeded();
        assert_eq!(upsert(&connection, "3", "Sensors", "IMU", "An inertial measurement unit combines accelerometers and gyroscopes to estimate orientation."), 0, "unchanged chunk is not rewritten");
        upsert(
            &connection,
            "3",
            "Sensors",
            "LiDAR",
            "A LiDAR measures distance with laser pulses.",
        );
        assert!(search(&connection, "gyroscopes", 5).is_empty());
        assert_eq!(search(&connection, "laser", 5)[0].heading, "LiDAR");

        let listed: Vec<(String, String, String)> = connection
            .prepare(LIST_CHUNK_HASHES)
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(listed.len(), 4);
        assert_eq!(listed[2].0, "3");
        assert_eq!(listed[2].1, "https://book.example/docs/sensors");

        connection.execute(DELETE_CHUNK, params!["1"]).unwrap();
        assert!(search(&connection, "zmp", 5).is_empty());
        // The FTS table agrees with its content table.
        connection
            .execute(
                "INSERT INTO chunks_fts (chunks_fts, rank) VALUES ('integrity-check', 1)",
                [],
            )
            .unwrap();
    }

    #[test]
    fn bm25_maps_to_unit_interval() {
        assert_eq!(score_from_bm25(0.0), 0.0);
        assert_eq!(score_from_bm25(1.0), 0.0);
        assert!((score_from_bm25(-1.0) - 0.5).abs() < 1e-6);
        assert!(score_from_bm25(-9.0) > score_from_bm25(-3.0));
        assert!(score_from_bm25(-1e12) <= 1.0);
        assert_eq!(score_from_bm25(f64::NAN), 0.0);
        let passage = row_to_passage(SearchRow {
            id: "x".into(),
            page_url: "p".into(),
            url: "p#a".into(),
            title: "t".into(),
            heading: "h".into(),
            text: "body".into(),
            bm25: -3.0,
        });
        assert_eq!((passage.url.as_str(), passage.score), ("p#a", 0.75));
    }
}
