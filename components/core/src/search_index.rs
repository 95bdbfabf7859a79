//! The embedded, keyless search index: SQLite FTS5 ranked with BM25.
//!
//! The same statements serve the writer (`host ingest`, through rusqlite) and the reader (the
//! chat component, through Spin's sqlite interface), so this module holds SQL and the small
//! conversions around it, never a connection. Every statement is a single SQL statement, as
//! Spin's `execute` expects.

use crate::keywords;
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

/// Merges the full-text index into one segment. FTS5 writes a batch of chunks as several
/// segments (ten for the sample book), and a query opens and seeks every segment once per term,
/// so a ranked search over many segments costs several times one over a single segment. Run by
/// the writer after every change; an index that is already one segment is left as it is.
pub const OPTIMIZE: &str = "INSERT INTO chunks_fts (chunks_fts) VALUES ('optimize')";

/// Number of segments in the full-text index (one row, integer): one after [`OPTIMIZE`].
pub const COUNT_SEGMENTS: &str = "SELECT COUNT(DISTINCT segid) FROM chunks_fts_idx";

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

/// Ranked search for at most `limit` chunks. Parameter: ?1 an expression from
/// [`fts_match_expression`]. BM25 weighs title 4, heading 2, text 1: a query word in a title or
/// heading says more about a chunk than the same word in its body.
/// Columns, in order: seq, id, page_url, url, title, heading, text, bm25 (REAL, lower is
/// better); see [`SearchRow`].
///
/// The limit is written into the statement, not bound: SQLite offers a LIMIT to the virtual
/// table's planner, so a statement whose LIMIT is a parameter is prepared again every time
/// the parameter is bound: re-parsed and re-planned for every question. The few limits in use
/// (`top_k` × [`CANDIDATES_PER_PASSAGE`]) each stay prepared in a connection's cache.
pub fn search_statement(limit: u32) -> String {
    format!(
        "SELECT c.seq, c.id, c.page_url, c.url, c.title, c.heading, c.text,
        bm25(chunks_fts, 4.0, 2.0, 1.0) AS rank
    FROM chunks_fts
    JOIN chunks AS c ON c.seq = chunks_fts.rowid
    WHERE chunks_fts MATCH ?1
    ORDER BY rank
    LIMIT {limit}"
    )
}

/// Most query words a MATCH expression keeps; longer questions add noise, not recall.
pub const MAX_QUERY_TERMS: usize = 32;

/// The searchable words of free text ([`keywords::words`], split as the `unicode61` tokenizer
/// splits them), duplicates dropped, at most [`MAX_QUERY_TERMS`]. Not stemmed: FTS5 stems them
/// with the index's own tokenizer.
pub fn query_terms(query: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in keywords::words(query) {
        if !terms.contains(&word) {
            terms.push(word);
        }
        if terms.len() == MAX_QUERY_TERMS {
            break;
        }
    }
    terms
}

/// One term as an FTS5 string: quoted, so nothing a user types is read as FTS5 syntax.
fn quoted(term: &str) -> String {
    format!("\"{}\"", term.replace('"', "\"\""))
}

/// Turns free text into a safe FTS5 MATCH expression: the [`query_terms`], each quoted and
/// OR-ed so partial matches still rank. `None` when no searchable word is left.
pub fn fts_match_expression(query: &str) -> Option<String> {
    let terms = query_terms(query);
    if terms.is_empty() {
        return None;
    }
    let quoted: Vec<String> = terms.iter().map(|term| quoted(term)).collect();
    Some(quoted.join(" OR "))
}

/// How many BM25 candidates keyword retrieval looks at for each passage it keeps: passages
/// covering too little of the question are dropped and the next ones move up.
pub const CANDIDATES_PER_PASSAGE: u32 = 4;

/// The `index_meta` key of the index's [new-word rate](STORE_NEW_WORD_RATE).
pub const NEW_WORD_RATE_KEY: &str = "new_word_rate";

/// The index's vocabulary as FTS5 counts it (one row per stemmed term: `doc` chunks holding
/// it, `cnt` occurrences), for [`STORE_NEW_WORD_RATE`]. Temporary: the writer's connection
/// only.
pub const CREATE_VOCABULARY: &str =
    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.chunks_vocabulary USING fts5vocab(main, chunks_fts, 'row')";

/// Records the index's new-word rate in `index_meta` (after [`CREATE_VOCABULARY`]): the share
/// of the book's word occurrences that are of a word used only once, Good and Turing's estimate
/// of the chance that the book's next word would be one it has not used yet. A small book
/// has a high rate (its vocabulary is still open, so a reader's wording often misses it even
/// on topic); a large one a low rate. Run by the writer after every change of the chunks.
pub const STORE_NEW_WORD_RATE: &str = "INSERT INTO index_meta (key, value)
    SELECT 'new_word_rate', CAST(COALESCE(CAST(SUM(cnt = 1) AS REAL) / NULLIF(SUM(cnt), 0), 0) AS TEXT)
    FROM temp.chunks_vocabulary WHERE true
    ON CONFLICT (key) DO UPDATE SET value = excluded.value";

/// Document statistics of each query term against the candidates, in one statement.
/// Parameters: ?1 the candidates' `seq` values as a JSON array, then one FTS5 string per term
/// (?2, ?3, ...). Rows: `term` (-1 for the totals row, else the term's index), `docs` (chunks
/// in the index, or chunks holding the term) and `hits` (comma-separated `seq` of the
/// candidates holding the term, or NULL; in the totals row, the index's stored
/// [new-word rate](STORE_NEW_WORD_RATE), NULL for an index written before it was kept).
/// Matching goes through FTS5 itself, so a term is stemmed exactly as the index was
/// (`porter unicode61`).
pub fn term_statistics_statement(term_count: usize) -> String {
    let mut sql = String::from(
        "SELECT -1 AS term, (SELECT COUNT(*) FROM chunks) AS docs, \
         (SELECT value FROM index_meta WHERE key = 'new_word_rate') AS hits",
    );
    // One pass over each term's matches yields both figures: opening a term's FTS5 cursor
    // costs more than reading a short doclist, so a second MATCH just for the holders doubled
    // the statement's cost.
    for index in 0..term_count {
        let parameter = index + 2;
        sql.push_str(&format!(
            " UNION ALL SELECT {index}, COUNT(*), \
             group_concat(rowid) FILTER (WHERE rowid IN (SELECT value FROM json_each(?1))) \
             FROM chunks_fts WHERE chunks_fts MATCH ?{parameter}"
        ));
    }
    sql
}

/// Inverse document frequency of a term found in `docs` of `total` chunks (BM25's, kept
/// positive).
pub fn idf(docs: u64, total: u64) -> f64 {
    let docs = docs.min(total) as f64;
    let total = total as f64;
    ((total - docs + 0.5) / (docs + 0.5) + 1.0).ln()
}

/// How much more a word the book never uses weighs than its IDF says, in a book whose
/// vocabulary is complete: such a word is stronger evidence that the question is about
/// something else than any word the book uses even once. Calibrated on the labelled sets
/// (eval/README.md).
pub const UNKNOWN_WORD_FACTOR: f64 = 1.5;

/// The [new-word rate](STORE_NEW_WORD_RATE) at which a word the book never uses stops
/// weighing more than its IDF: when one word in ten of the book's text is a word it uses only
/// once, a reader's on-topic wording misses the book's vocabulary too often for a missing
/// word to say much. Between 0 and this rate the extra weight shrinks linearly.
pub const NEW_WORD_RATE_WITHOUT_BONUS: f64 = 0.1;

/// [`UNKNOWN_WORD_FACTOR`] for an index with this new-word rate: the full factor for a
/// complete vocabulary (rate 0), 1 from [`NEW_WORD_RATE_WITHOUT_BONUS`] on.
pub fn unknown_word_factor(new_word_rate: f64) -> f64 {
    let openness = (new_word_rate / NEW_WORD_RATE_WITHOUT_BONUS).clamp(0.0, 1.0);
    1.0 + (UNKNOWN_WORD_FACTOR - 1.0) * (1.0 - openness)
}

/// A question term's weight in [`coverage`]: the square root of its IDF, so one rare word
/// does not outweigh the rest of the question, times [`unknown_word_factor`] of the index's
/// new-word rate when no chunk holds it.
pub fn term_weight(docs: u64, total: u64, new_word_rate: f64) -> f64 {
    let weight = idf(docs, total).sqrt();
    if docs == 0 {
        weight * unknown_word_factor(new_word_rate)
    } else {
        weight
    }
}

/// The share of the question's weight that a passage matches, in 0..=1: `weights` are the
/// [`term_weight`]s of the question's terms and `matched` says which of them the passage holds. One rare
/// shared word among several unmatched ones scores low; a passage holding every distinctive
/// word of the question scores near 1 even when common words are missing.
pub fn coverage(weights: &[f64], matched: &[bool]) -> f32 {
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    let found: f64 = weights
        .iter()
        .zip(matched)
        .filter(|(_, matched)| **matched)
        .map(|(weight, _)| weight)
        .sum();
    (found / total).clamp(0.0, 1.0) as f32
}

/// One row of [`search_statement`], in column order.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRow {
    /// The FTS rowid.
    pub seq: i64,
    pub id: String,
    pub page_url: String,
    pub url: String,
    pub title: String,
    pub heading: String,
    pub text: String,
    /// The raw `bm25()` value.
    pub bm25: f64,
}

impl SearchRow {
    /// Reads a row of [`search_statement`] as the [`Database`] trait returns it.
    pub fn from_row(row: Row<'_>) -> Result<Self, StoreError> {
        let bm25 = match row.get("rank")? {
            SqlValue::Real(value) => *value,
            SqlValue::Integer(value) => *value as f64,
            _ => return Err(StoreError::Query("rank is not a number".into())),
        };
        let seq = match row.get("seq")? {
            SqlValue::Integer(value) => *value,
            _ => return Err(StoreError::Query("seq is not an integer".into())),
        };
        Ok(SearchRow {
            seq,
            id: row.text("id")?,
            page_url: row.text("page_url")?,
            url: row.text("url")?,
            title: row.text("title")?,
            heading: row.text("heading")?,
            text: row.text("text")?,
            bm25,
        })
    }

    /// The passage this row stands for, with `score` as its relevance.
    pub fn into_passage(self, score: f32) -> Passage {
        Passage {
            score,
            url: self.url,
            page_url: self.page_url,
            title: self.title,
            heading: self.heading,
            text: self.text,
        }
    }
}

/// What [`term_statistics_statement`] found: the [`term_weight`] of each query term and, per
/// candidate `seq`, which terms it holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TermStatistics {
    pub weights: Vec<f64>,
    pub holders: Vec<Vec<i64>>,
}

impl TermStatistics {
    /// Reads the rows of [`term_statistics_statement`] for `term_count` terms.
    pub fn from_rows<'a>(
        rows: impl IntoIterator<Item = Row<'a>>,
        term_count: usize,
    ) -> Result<Self, StoreError> {
        let integer = |value: &SqlValue| match value {
            SqlValue::Integer(value) => Ok(*value),
            _ => Err(StoreError::Query("term statistics: not an integer".into())),
        };
        let mut total = 0u64;
        // An index written before the rate was kept scores as a complete vocabulary did.
        let mut new_word_rate = 0.0;
        let mut docs = vec![0u64; term_count];
        let mut holders = vec![Vec::new(); term_count];
        for row in rows {
            let term = integer(row.get("term")?)?;
            let count = integer(row.get("docs")?)?.max(0) as u64;
            if term < 0 {
                total = count;
                new_word_rate = match row.get("hits")? {
                    SqlValue::Text(rate) => rate.trim().parse::<f64>().unwrap_or(0.0),
                    SqlValue::Real(rate) => *rate,
                    _ => 0.0,
                };
                if !new_word_rate.is_finite() {
                    new_word_rate = 0.0;
                }
                continue;
            }
            let index = usize::try_from(term)
                .ok()
                .filter(|index| *index < term_count)
                .ok_or_else(|| StoreError::Query("term statistics: unknown term".into()))?;
            docs[index] = count;
            if let SqlValue::Text(list) = row.get("hits")? {
                holders[index] = list
                    .split(',')
                    .filter_map(|seq| seq.trim().parse().ok())
                    .collect();
            }
        }
        Ok(Self {
            weights: docs
                .iter()
                .map(|docs| term_weight(*docs, total, new_word_rate))
                .collect(),
            holders,
        })
    }

    /// The coverage of the candidate `seq`.
    pub fn coverage_of(&self, seq: i64) -> f32 {
        let matched: Vec<bool> = self.holders.iter().map(|h| h.contains(&seq)).collect();
        coverage(&self.weights, &matched)
    }
}

/// Keyword search of the embedded index: at most `limit` passages in BM25 order (best
/// first), each scored by its [`coverage`] of the question, which decides relevance: BM25
/// ranks well but its values mean nothing on their own, while coverage says how much of the
/// question a passage speaks to. A question made only of stop words matches nothing rather
/// than everything.
pub fn search(
    db: &(impl Database + ?Sized),
    query: &str,
    limit: u32,
) -> Result<Vec<Passage>, StoreError> {
    let terms = query_terms(query);
    let Some(expression) = fts_match_expression(query) else {
        return Ok(Vec::new());
    };
    let rows = db.query(&search_statement(limit), &[expression.into()])?;
    let rows: Vec<SearchRow> = rows
        .iter()
        .map(SearchRow::from_row)
        .collect::<Result<_, _>>()?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let seqs: Vec<i64> = rows.iter().map(|row| row.seq).collect();
    let mut parameters: Vec<SqlValue> = vec![serde_json::to_string(&seqs)
        .expect("integers serialise")
        .into()];
    parameters.extend(terms.iter().map(|term| SqlValue::from(quoted(term))));
    let statistics = db.query(&term_statistics_statement(terms.len()), &parameters)?;
    let statistics = TermStatistics::from_rows(statistics.iter(), terms.len())?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let score = statistics.coverage_of(row.seq);
            row.into_passage(score)
        })
        .collect())
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
            "\"stand\" is not in the book: {}",
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
    fn idf_weighs_rare_and_unknown_words_most() {
        assert!(idf(0, 100) > idf(1, 100));
        assert!(idf(1, 100) > idf(50, 100));
        assert!(
            idf(100, 100) > 0.0,
            "a word on every chunk still weighs a little"
        );
        assert!(idf(500, 100).is_finite(), "counts are clamped to the total");
        assert!((term_weight(10, 100, 0.0) - idf(10, 100).sqrt()).abs() < 1e-12);
        assert!(
            (term_weight(0, 100, 0.0) - idf(0, 100).sqrt() * UNKNOWN_WORD_FACTOR).abs() < 1e-12,
            "a word the book never uses weighs more"
        );
        assert_eq!(coverage(&[], &[]), 0.0);
        assert_eq!(coverage(&[1.0, 3.0], &[true, true]), 1.0);
        assert_eq!(coverage(&[1.0, 3.0], &[false, true]), 0.75);
        assert_eq!(coverage(&[1.0, 3.0], &[false, false]), 0.0);
    }

    #[test]
    fn one_shared_rare_word_does_not_make_a_question_covered() {
        let connection = seeded();
        // "robot" is in the book, the other words are not: the best match covers little.
        let off_topic = search(
            &connection,
            "What is the boiling point of water for a robot on Everest?",
            3,
        );
        assert!(!off_topic.is_empty());
        assert!(off_topic[0].score < 0.3, "{}", off_topic[0].score);
        // Every distinctive word of the question is in one chunk: it covers all of it.
        let covered = search(
            &connection,
            "How do accelerometers and gyroscopes estimate orientation?",
            3,
        );
        assert_eq!(covered[0].heading, "IMU");
        assert!(covered[0].score > 0.95, "{}", covered[0].score);
        // Stemming is FTS5's own: "estimates" and "estimate" are one term.
        let stemmed = search(&connection, "accelerometers gyroscopes estimates", 3);
        assert!(stemmed[0].score > 0.95, "{}", stemmed[0].score);
    }

    #[test]
    fn passages_keep_bm25_order_with_their_coverage() {
        let connection = seeded();
        let hits = search(&connection, "inverse kinematics joint angles robot", 4);
        assert_eq!(hits[0].heading, "Inverse kinematics");
        assert!(hits.len() >= 2 && hits[1].score < hits[0].score, "{hits:?}");
    }

    fn stored_new_word_rate(connection: &Connection) -> f64 {
        connection.execute(CREATE_VOCABULARY, []).unwrap();
        connection.execute(STORE_NEW_WORD_RATE, []).unwrap();
        connection
            .query_row(
                "SELECT value FROM index_meta WHERE key = ?1",
                [NEW_WORD_RATE_KEY],
                |row| row.get::<_, String>(0),
            )
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn new_word_rate_is_the_share_of_occurrences_of_once_used_words() {
        let connection = Connection::open_in_memory().unwrap();
        create(&connection);
        // Title, heading and text all count: gamma ×2, alpha ×1, beta ×2.
        upsert(&connection, "1", "Gamma", "Gamma", "alpha beta beta");
        assert!((stored_new_word_rate(&connection) - 1.0 / 5.0).abs() < 1e-12);
        // Rewritten after a change: gamma ×4, alpha ×2, beta ×2, delta ×1.
        upsert(&connection, "2", "Gamma", "Gamma", "alpha delta");
        assert!((stored_new_word_rate(&connection) - 1.0 / 9.0).abs() < 1e-12);
    }

    #[test]
    fn unknown_words_weigh_less_while_the_vocabulary_is_still_open() {
        assert_eq!(unknown_word_factor(0.0), UNKNOWN_WORD_FACTOR);
        let halfway = unknown_word_factor(NEW_WORD_RATE_WITHOUT_BONUS / 2.0);
        assert!((halfway - (1.0 + UNKNOWN_WORD_FACTOR) / 2.0).abs() < 1e-12);
        assert_eq!(unknown_word_factor(NEW_WORD_RATE_WITHOUT_BONUS), 1.0);
        assert_eq!(unknown_word_factor(0.9), 1.0);

        // "stand" is not in the book. Without a stored rate it weighs the full factor more.
        let connection = seeded();
        let question = "What does ZMP stand for?";
        let closed = search(&connection, question, 1)[0].score;
        let full = idf(1, 4).sqrt() / (idf(1, 4).sqrt() + idf(0, 4).sqrt() * UNKNOWN_WORD_FACTOR);
        assert!((f64::from(closed) - full).abs() < 1e-6, "{closed}");
        // Four short chunks use most words once: the vocabulary is open, the extra weight goes.
        let rate = stored_new_word_rate(&connection);
        assert!(rate > NEW_WORD_RATE_WITHOUT_BONUS, "{rate}");
        let open = search(&connection, question, 1)[0].score;
        let plain = idf(1, 4).sqrt() / (idf(1, 4).sqrt() + idf(0, 4).sqrt());
        assert!((f64::from(open) - plain).abs() < 1e-6, "{open}");
        assert!(open > closed);
    }

    #[test]
    fn search_statements_are_not_prepared_again_for_each_question() {
        // SQLite prepares a statement again whenever a parameter its plan depends on is bound
        // anew; a bound LIMIT was one, so every question re-parsed and re-planned the search.
        let connection = seeded();
        let mut ranked = connection.prepare(&search_statement(8)).unwrap();
        for expression in ["\"zmp\"", "\"robot\" OR \"walks\"", "\"topics\""] {
            let found = ranked.query_map([expression], |_| Ok(())).unwrap().count();
            assert!(found > 0, "{expression}");
        }
        assert_eq!(ranked.get_status(rusqlite::StatementStatus::RePrepare), 0);
        let mut statistics = connection.prepare(&term_statistics_statement(1)).unwrap();
        for (candidates, term) in [("[1]", "\"zmp\""), ("[2, 3]", "\"topics\"")] {
            let rows = statistics
                .query_map([candidates, term], |_| Ok(()))
                .unwrap()
                .count();
            assert_eq!(rows, 2);
        }
        assert_eq!(
            statistics.get_status(rusqlite::StatementStatus::RePrepare),
            0
        );
    }

    #[test]
    fn term_statistics_count_documents_and_candidate_holders() {
        let connection = seeded();
        let statement = term_statistics_statement(2);
        let rows = connection
            .query(
                &statement,
                &[
                    "[1, 3]".into(),
                    quoted("robot").into(),
                    quoted("orientation").into(),
                ],
            )
            .unwrap();
        let statistics = TermStatistics::from_rows(rows.iter(), 2).unwrap();
        assert_eq!(statistics.holders, vec![vec![1], vec![3]]);
        assert!(
            (statistics.weights[0] - term_weight(1, 4, 0.0)).abs() < 1e-9,
            "{statistics:?}"
        );
        assert!((statistics.weights[1] - term_weight(1, 4, 0.0)).abs() < 1e-9);
        assert_eq!(statistics.coverage_of(2), 0.0);
    }
}
