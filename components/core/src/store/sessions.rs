//! Conversations: sessions, their messages, and readers' ratings of answers.

use serde::Serialize;

use super::migrations::{ensure_schema, LATEST_SCHEMA_VERSION};
use super::session_ids::session_key;
use super::validation::{reject_nul, MAX_PAGE_LIMIT};
use super::{in_transaction, Database, Dialect, Rating, Row, Rows, SqlValue, StoreError};

/// Why an operation on a session found nothing. The same words whatever the id, so an answer
/// tells nobody more than that the id they sent is not a session.
pub const UNKNOWN_SESSION: &str =
    "no session has this id; start one with POST /session, or POST /chat without a session_id";

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    fn from_column(value: &str) -> Result<Self, StoreError> {
        match value {
            "user" => Ok(Role::User),
            "assistant" => Ok(Role::Assistant),
            other => Err(StoreError::Query(format!("unknown message role {other:?}"))),
        }
    }
}

/// Whether a message is whole. A streamed answer is stored `Incomplete` while it is being
/// written (or when the stream broke off) and `Complete` once it has ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    Complete,
    Incomplete,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Complete => "complete",
            MessageStatus::Incomplete => "incomplete",
        }
    }

    fn from_column(value: &str) -> Result<Self, StoreError> {
        match value {
            "complete" => Ok(MessageStatus::Complete),
            "incomplete" => Ok(MessageStatus::Incomplete),
            other => Err(StoreError::Query(format!(
                "unknown message status {other:?}"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The id as its holder knows it; the database holds only its digest.
    pub id: String,
    /// RFC 3339 UTC with milliseconds, e.g. `2026-11-23T15:04:05.123Z`.
    pub created_at: String,
}

/// A stored message with its rating, if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: i64,
    pub role: Role,
    pub content: String,
    /// The cited sources as JSON text (an array), exactly as stored.
    pub sources: String,
    pub status: MessageStatus,
    pub created_at: String,
    pub feedback: Option<Feedback>,
}

impl Message {
    /// The stored sources parsed as JSON.
    pub fn sources_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.sources)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    pub rating: Rating,
    pub reason: Option<String>,
    pub comment: Option<String>,
    /// When the current rating was given; a new rating replaces the old one and this time.
    pub rated_at: String,
}

/// One page of a session's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPage {
    pub session: Session,
    /// Oldest first.
    pub messages: Vec<Message>,
    /// Pass as `before` to fetch the next older page; `None` when this page reaches the start.
    pub next_before: Option<i64>,
}

/// What the database assigned to a newly appended message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub id: i64,
    pub created_at: String,
}

/// What came of rating an answer ([`SessionStore::rate_answer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatingOutcome {
    Rated,
    /// No session has this id; nothing was stored.
    UnknownSession,
    /// The session exists but holds no answer with this message id; nothing was stored.
    UnknownAnswer,
}

/// A past message as conversation context for the next answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub role: Role,
    pub content: String,
}

/// Session operations over one database connection.
pub struct SessionStore<'a, D: Database + ?Sized> {
    db: &'a D,
}

const MESSAGE_COLUMNS: &str = "m.id AS id, m.role AS role, m.content AS content, \
     m.sources AS sources, m.status AS status, m.created_at AS created_at, \
     f.rating AS rating, f.reason AS reason, f.comment AS comment, f.rated_at AS rated_at";

/// The applied schema version as a CTE named `applied`, for the PostgreSQL statements that
/// check it themselves and report it in a `schema_version` column (see [`current_schema_row`]).
const APPLIED_VERSION: &str =
    "applied AS (SELECT coalesce(max(version), 0) AS version FROM schema_migrations)";

/// A page of a session's messages, newest first: `$1` the session's key, `$2` the id the page
/// ends before, `$3` how many rows.
const PAGE_OF_MESSAGES: &str = "messages m LEFT JOIN feedback f ON f.message_id = m.id \
     WHERE m.session_id = $1 AND m.id < $2 ORDER BY m.id DESC LIMIT $3";

impl<'a, D: Database + ?Sized> SessionStore<'a, D> {
    pub fn new(db: &'a D) -> Self {
        Self { db }
    }

    /// Runs `statement`, which checks the schema version itself and fails with a query error
    /// on a schema older than this code's; after any query error (behind, never migrated, or
    /// a failure migrating leaves as it was) brings the schema up to date and runs it once
    /// more, whose outcome is the answer. The statement must store nothing when it fails.
    fn with_current_schema<T>(
        &self,
        mut statement: impl FnMut() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match statement() {
            Err(StoreError::Query(_)) => {
                ensure_schema(self.db)?;
                statement()
            }
            outcome => outcome,
        }
    }

    fn dialect(&self) -> Dialect {
        self.db.dialect()
    }

    fn query(&self, template: &str, params: &[SqlValue]) -> Result<super::Rows, StoreError> {
        self.db.query(&self.dialect().render(template), params)
    }

    fn execute(&self, template: &str, params: &[SqlValue]) -> Result<u64, StoreError> {
        self.db.execute(&self.dialect().render(template), params)
    }

    /// Creates a session under a freshly issued id (see
    /// [`session_id_from_random`](super::session_id_from_random)); a taken id is a
    /// [`StoreError::Conflict`]. The database keeps only the id's digest.
    pub fn create_session(&self, id: &str) -> Result<Session, StoreError> {
        reject_nul("session_id", id)?;
        let rows = self.query(
            "INSERT INTO sessions (id) VALUES ($1) ON CONFLICT (id) DO NOTHING \
             RETURNING created_at",
            &[session_key(id).into()],
        )?;
        match rows.first() {
            Some(row) => Ok(Session {
                id: id.to_owned(),
                created_at: row.text("created_at")?,
            }),
            None => Err(id_taken()),
        }
    }

    /// Starts a session under an id from `issue_id` (see [`under_fresh_id`]). It needs no
    /// [`ensure_schema`] first: on PostgreSQL the insert checks the version itself, so a new
    /// session costs one round trip, and a schema found behind is migrated and the insert sent
    /// once more; SQLite checks the schema, then inserts.
    pub fn start_session(
        &self,
        mut issue_id: impl FnMut() -> String,
    ) -> Result<Session, StoreError> {
        if self.dialect() == Dialect::Sqlite {
            ensure_schema(self.db)?;
            return under_fresh_id(issue_id, |id| self.create_session(id));
        }
        self.with_current_schema(|| under_fresh_id(&mut issue_id, |id| self.create_on_postgres(id)))
    }

    fn create_on_postgres(&self, id: &str) -> Result<Session, StoreError> {
        // One row, holding the applied version; `created_at` is NULL when nothing was inserted
        // (schema behind, or the id taken).
        let rows = self.query(
            &format!(
                "WITH {APPLIED_VERSION}, new_session AS ( \
                     INSERT INTO sessions (id) \
                     SELECT CAST($1 AS TEXT) FROM applied WHERE version >= $2 \
                     ON CONFLICT (id) DO NOTHING \
                     RETURNING created_at \
                 ) \
                 SELECT a.version AS schema_version, s.created_at AS created_at \
                 FROM applied a LEFT JOIN new_session s ON true"
            ),
            &[session_key(id).into(), LATEST_SCHEMA_VERSION.into()],
        )?;
        match current_schema_row(&rows)?.opt_text("created_at")? {
            Some(created_at) => Ok(Session {
                id: id.to_owned(),
                created_at,
            }),
            None => Err(id_taken()),
        }
    }

    /// A page of the session's history, or `None` if there is no such session: at most `limit`
    /// messages (clamped to 1..=200) with ids below `before` (all when `None`), oldest first.
    pub fn get_session(
        &self,
        id: &str,
        limit: usize,
        before: Option<i64>,
    ) -> Result<Option<SessionPage>, StoreError> {
        reject_nul("session_id", id)?;
        let key = session_key(id);
        let sessions = self.query(
            "SELECT created_at FROM sessions WHERE id = $1",
            &[key.as_str().into()],
        )?;
        let Some(row) = sessions.first() else {
            return Ok(None);
        };
        let session = Session {
            id: id.to_owned(),
            created_at: row.text("created_at")?,
        };
        let limit = limit.clamp(1, MAX_PAGE_LIMIT);
        // One extra row tells whether an older page exists without a second query.
        let fetch = i64::try_from(limit + 1).expect("page limit fits in i64");
        let rows = self.query(
            &format!("SELECT {MESSAGE_COLUMNS} FROM {PAGE_OF_MESSAGES}"),
            &[key.into(), before.unwrap_or(i64::MAX).into(), fetch.into()],
        )?;
        Ok(Some(page_from_rows(session, rows.iter(), limit)?))
    }

    /// [`get_session`](Self::get_session) with no [`ensure_schema`] needed first: on
    /// PostgreSQL the version, the session and the page are one statement (one round trip
    /// instead of three), and a schema found behind is migrated and the statement sent once
    /// more; SQLite checks the schema, then reads.
    pub fn read_session(
        &self,
        id: &str,
        limit: usize,
        before: Option<i64>,
    ) -> Result<Option<SessionPage>, StoreError> {
        reject_nul("session_id", id)?;
        if self.dialect() == Dialect::Sqlite {
            ensure_schema(self.db)?;
            return self.get_session(id, limit, before);
        }
        self.with_current_schema(|| self.read_on_postgres(id, limit, before))
    }

    fn read_on_postgres(
        &self,
        id: &str,
        limit: usize,
        before: Option<i64>,
    ) -> Result<Option<SessionPage>, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE_LIMIT);
        let fetch = i64::try_from(limit + 1).expect("page limit fits in i64");
        // One row per message of the page (or one with none), each carrying the version and
        // the session's creation time (NULL when there is no such session).
        let rows = self.query(
            &format!(
                "WITH {APPLIED_VERSION}, session AS ( \
                     SELECT created_at FROM sessions WHERE id = $1 \
                 ), page AS ( \
                     SELECT {MESSAGE_COLUMNS} FROM {PAGE_OF_MESSAGES} \
                 ) \
                 SELECT a.version AS schema_version, s.created_at AS session_created_at, p.* \
                 FROM applied a \
                 LEFT JOIN session s ON true \
                 LEFT JOIN page p ON s.created_at IS NOT NULL \
                 ORDER BY p.id DESC"
            ),
            &[
                session_key(id).into(),
                before.unwrap_or(i64::MAX).into(),
                fetch.into(),
            ],
        )?;
        let first = current_schema_row(&rows)?;
        let Some(created_at) = first.opt_text("session_created_at")? else {
            return Ok(None);
        };
        let session = Session {
            id: id.to_owned(),
            created_at,
        };
        // With no message, the one row's message columns are NULL.
        let messages = rows
            .iter()
            .filter(|row| matches!(row.opt_integer("id"), Ok(Some(_))));
        Ok(Some(page_from_rows(session, messages, limit)?))
    }

    /// Deletes the session with its messages and ratings; returns whether it existed. It needs
    /// no [`ensure_schema`] first: on PostgreSQL the delete checks the version itself (one round
    /// trip), and a schema found behind is migrated and the delete sent once more.
    pub fn delete_session(&self, id: &str) -> Result<bool, StoreError> {
        reject_nul("session_id", id)?;
        let key = session_key(id);
        match self.dialect() {
            // The messages and ratings go with the session: ON DELETE CASCADE.
            Dialect::Postgres => self.with_current_schema(|| {
                let rows = self.query(
                    &format!(
                        "WITH {APPLIED_VERSION}, deleted AS ( \
                             DELETE FROM sessions WHERE id = $1 \
                             AND (SELECT version FROM applied) >= $2 \
                             RETURNING id \
                         ) \
                         SELECT a.version AS schema_version, \
                             (SELECT count(*) FROM deleted) AS deleted \
                         FROM applied a"
                    ),
                    &[key.as_str().into(), LATEST_SCHEMA_VERSION.into()],
                )?;
                Ok(current_schema_row(&rows)?.integer("deleted")? > 0)
            }),
            // SQLite enforces foreign keys (and so ON DELETE CASCADE) only on connections that
            // enabled them, which a host may not do: delete the children explicitly.
            Dialect::Sqlite => {
                ensure_schema(self.db)?;
                in_transaction(self.db, |db| delete_stored_session(db, &key))
            }
        }
    }

    /// Appends a message to an existing session ([`StoreError::NotFound`] otherwise).
    /// `sources_json` is stored verbatim; callers pass a JSON array (`"[]"` for none).
    pub fn append_message(
        &self,
        session_id: &str,
        role: Role,
        content: &str,
        sources_json: &str,
        status: MessageStatus,
    ) -> Result<MessageRecord, StoreError> {
        reject_nul("session_id", session_id)?;
        reject_nul("content", content)?;
        reject_nul("sources", sources_json)?;
        // Selecting the session row makes a missing session insert nothing instead of
        // depending on foreign-key enforcement, which SQLite connections may not have on.
        let rows = self.query(
            "INSERT INTO messages (session_id, role, content, sources, status) \
             SELECT id, CAST($2 AS TEXT), CAST($3 AS TEXT), CAST($4 AS TEXT), CAST($5 AS TEXT) \
             FROM sessions WHERE id = $1 \
             RETURNING id, created_at",
            &[
                session_key(session_id).into(),
                role.as_str().into(),
                content.into(),
                sources_json.into(),
                status.as_str().into(),
            ],
        )?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::NotFound(UNKNOWN_SESSION.into()))?;
        Ok(MessageRecord {
            id: row.integer("id")?,
            created_at: row.text("created_at")?,
        })
    }

    /// Appends a question and its answer to an existing session in one statement (one write
    /// transaction instead of two), the question first; returns the answer's record.
    /// [`StoreError::NotFound`], storing nothing, when there is no such session.
    pub fn append_exchange(
        &self,
        session_id: &str,
        question: &str,
        answer: &str,
        sources_json: &str,
        status: MessageStatus,
    ) -> Result<MessageRecord, StoreError> {
        reject_nul("session_id", session_id)?;
        reject_nul("content", question)?;
        reject_nul("content", answer)?;
        reject_nul("sources", sources_json)?;
        // Rows are inserted in the ORDER BY's order, so the question gets the lower id on both
        // backends; RETURNING lists them in no promised order, hence the role column.
        let rows = self.query(
            "INSERT INTO messages (session_id, role, content, sources, status) \
             SELECT s.id, t.role, t.content, t.sources, t.status FROM sessions s, ( \
                 SELECT 1 AS turn, CAST($2 AS TEXT) AS role, CAST($3 AS TEXT) AS content, \
                     CAST('[]' AS TEXT) AS sources, CAST($4 AS TEXT) AS status \
                 UNION ALL \
                 SELECT 2, CAST($5 AS TEXT), CAST($6 AS TEXT), CAST($7 AS TEXT), CAST($8 AS TEXT) \
             ) t WHERE s.id = $1 ORDER BY t.turn \
             RETURNING id, role, created_at",
            &[
                session_key(session_id).into(),
                Role::User.as_str().into(),
                question.into(),
                MessageStatus::Complete.as_str().into(),
                Role::Assistant.as_str().into(),
                answer.into(),
                sources_json.into(),
                status.as_str().into(),
            ],
        )?;
        let answer_row = rows
            .iter()
            .find(|row| {
                row.text("role")
                    .is_ok_and(|role| role == Role::Assistant.as_str())
            })
            .ok_or_else(|| StoreError::NotFound(UNKNOWN_SESSION.into()))?;
        Ok(MessageRecord {
            id: answer_row.integer("id")?,
            created_at: answer_row.text("created_at")?,
        })
    }

    /// Starts a session (as [`start_session`](Self::start_session)) holding its first
    /// question and answer (as [`append_exchange`](Self::append_exchange)), in one write
    /// statement: a first question costs one write transaction, not two (on PostgreSQL one
    /// round trip). Nothing is stored when it fails.
    ///
    /// It needs no [`ensure_schema`] first: the statement itself refuses a database whose
    /// schema is older than this code's (or has none yet), and then the schema is brought up to
    /// date and the statement sent once more. So a first question on a current database costs
    /// that one statement and no version read.
    pub fn start_session_with_exchange(
        &self,
        mut issue_id: impl FnMut() -> String,
        question: &str,
        answer: &str,
        sources_json: &str,
        status: MessageStatus,
    ) -> Result<(Session, MessageRecord), StoreError> {
        reject_nul("content", question)?;
        reject_nul("content", answer)?;
        reject_nul("sources", sources_json)?;
        self.with_current_schema(|| {
            under_fresh_id(&mut issue_id, |id| {
                self.insert_session_with_exchange(id, question, answer, sources_json, status)
            })
        })
    }

    fn insert_session_with_exchange(
        &self,
        id: &str,
        question: &str,
        answer: &str,
        sources_json: &str,
        status: MessageStatus,
    ) -> Result<(Session, MessageRecord), StoreError> {
        let key = session_key(id);
        let rows = match self.dialect() {
            // Rows are inserted in the ORDER BY's order, so the question gets the lower id. The
            // one row returned always holds the applied version; the session's columns are
            // NULL when nothing was inserted (schema behind, or the id taken).
            Dialect::Postgres => {
                let rows = self.query(
                    &format!(
                        "WITH {APPLIED_VERSION}, new_session AS ( \
                         INSERT INTO sessions (id) \
                         SELECT CAST($1 AS TEXT) FROM applied WHERE version >= $6 \
                         ON CONFLICT (id) DO NOTHING \
                         RETURNING id, created_at \
                     ), new_messages AS ( \
                         INSERT INTO messages (session_id, role, content, sources, status) \
                         SELECT s.id, t.role, t.content, t.sources, t.status FROM new_session s, ( \
                             SELECT 1 AS turn, 'user' AS role, CAST($2 AS TEXT) AS content, \
                                 '[]' AS sources, 'complete' AS status \
                             UNION ALL \
                             SELECT 2, 'assistant', CAST($3 AS TEXT), CAST($4 AS TEXT), CAST($5 AS TEXT) \
                         ) t ORDER BY t.turn \
                         RETURNING id, role, created_at \
                     ) \
                     SELECT a.version AS schema_version, s.created_at AS session_created_at, \
                         m.id, m.created_at \
                     FROM applied a \
                     LEFT JOIN new_session s ON true \
                     LEFT JOIN new_messages m ON m.role = 'assistant'"
                    ),
                    &[
                        key.into(),
                        question.into(),
                        answer.into(),
                        sources_json.into(),
                        status.as_str().into(),
                        LATEST_SCHEMA_VERSION.into(),
                    ],
                )?;
                current_schema_row(&rows)?;
                rows
            }
            // SQLite cannot return rows from an insert into a view; the read after it is
            // cheaper than a second write transaction.
            Dialect::Sqlite => {
                let inserted = self.execute(
                    "INSERT INTO session_starts \
                     (session_id, question, answer, sources, status, schema_version) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        key.as_str().into(),
                        question.into(),
                        answer.into(),
                        sources_json.into(),
                        status.as_str().into(),
                        LATEST_SCHEMA_VERSION.into(),
                    ],
                );
                match inserted {
                    Err(StoreError::Query(message)) if message.contains(SQLITE_ID_TAKEN) => {
                        return Err(id_taken())
                    }
                    other => other?,
                };
                self.query(
                    "SELECT s.created_at AS session_created_at, m.id, m.created_at \
                     FROM sessions s JOIN messages m ON m.session_id = s.id \
                     WHERE s.id = $1 AND m.role = 'assistant'",
                    &[key.into()],
                )?
            }
        };
        let row = rows.first().ok_or_else(id_taken)?;
        let Some(session_created_at) = row.opt_text("session_created_at")? else {
            return Err(id_taken());
        };
        Ok((
            Session {
                id: id.to_owned(),
                created_at: session_created_at,
            },
            MessageRecord {
                id: row.integer("id")?,
                created_at: row.text("created_at")?,
            },
        ))
    }

    /// Writes an answer's text and status as its stream ended (a streamed answer is stored
    /// ahead of its text, with its sources, which stay as they are). Only an answer of
    /// `session_id` is touched; returns whether there was one.
    pub fn update_answer(
        &self,
        session_id: &str,
        message_id: i64,
        content: &str,
        status: MessageStatus,
    ) -> Result<bool, StoreError> {
        reject_nul("session_id", session_id)?;
        reject_nul("content", content)?;
        let updated = self.execute(
            "UPDATE messages SET content = $3, status = $4 \
             WHERE id = $2 AND session_id = $1 AND role = 'assistant'",
            &[
                session_key(session_id).into(),
                message_id.into(),
                content.into(),
                status.as_str().into(),
            ],
        )?;
        Ok(updated > 0)
    }

    /// Removes an answer stored ahead of its text (incomplete, from this session) that will
    /// never be written, with any rating; returns whether there was one. Complete answers and
    /// questions are never removed this way.
    pub fn discard_answer(&self, session_id: &str, message_id: i64) -> Result<bool, StoreError> {
        reject_nul("session_id", session_id)?;
        let params = [session_key(session_id).into(), message_id.into()];
        let discard = "DELETE FROM messages WHERE id = $2 AND session_id = $1 \
             AND role = 'assistant' AND status = 'incomplete'";
        match self.dialect() {
            // Its rating goes with it: ON DELETE CASCADE.
            Dialect::Postgres => Ok(self.execute(discard, &params)? > 0),
            // SQLite connections may not enforce foreign keys: the rating first.
            Dialect::Sqlite => in_transaction(self.db, |db| {
                let render = |sql: &str| db.dialect().render(sql);
                db.execute(
                    &render(
                        "DELETE FROM feedback WHERE message_id IN (SELECT id FROM messages \
                         WHERE id = $2 AND session_id = $1 AND status = 'incomplete')",
                    ),
                    &params,
                )?;
                Ok(db.execute(&render(discard), &params)? > 0)
            }),
        }
    }

    /// Rates an assistant message of the session; a later rating replaces the earlier one.
    /// Returns `false` when the session has no assistant message with that id (user messages
    /// cannot be rated). Validate `reason` and `comment` first with
    /// [`validate_reason`](super::validate_reason) and [`validate_comment`](super::validate_comment).
    pub fn set_feedback(
        &self,
        session_id: &str,
        message_id: i64,
        rating: Rating,
        reason: Option<&str>,
        comment: Option<&str>,
    ) -> Result<bool, StoreError> {
        reject_nul_in_rating(session_id, reason, comment)?;
        let params = rating_params(session_id, message_id, rating, reason, comment);
        Ok(self.execute(&rating_upsert(""), &params)? > 0)
    }

    /// Rates an answer as [`set_feedback`](Self::set_feedback) does, and when there is no such
    /// answer tells whether the session exists. It needs no [`ensure_schema`] first: on
    /// PostgreSQL the rating, the version check and the session's existence are one statement
    /// (one round trip instead of two, or three for an unknown answer), and a schema found
    /// behind is migrated and the statement sent once more; SQLite checks the schema, rates,
    /// and looks for the session only when nothing was rated.
    pub fn rate_answer(
        &self,
        session_id: &str,
        message_id: i64,
        rating: Rating,
        reason: Option<&str>,
        comment: Option<&str>,
    ) -> Result<RatingOutcome, StoreError> {
        if self.dialect() == Dialect::Sqlite {
            ensure_schema(self.db)?;
            if self.set_feedback(session_id, message_id, rating, reason, comment)? {
                return Ok(RatingOutcome::Rated);
            }
            let sessions = self.query(
                "SELECT count(*) AS sessions FROM sessions WHERE id = $1",
                &[session_key(session_id).into()],
            )?;
            let session_exists = match sessions.first() {
                Some(row) => row.integer("sessions")? > 0,
                None => false,
            };
            return Ok(rating_outcome(false, session_exists));
        }
        reject_nul_in_rating(session_id, reason, comment)?;
        let mut params = rating_params(session_id, message_id, rating, reason, comment);
        params.push(LATEST_SCHEMA_VERSION.into());
        self.with_current_schema(|| {
            let rows = self.query(
                &format!(
                    "WITH {APPLIED_VERSION}, rated AS ({}) \
                     SELECT a.version AS schema_version, \
                         (SELECT count(*) FROM rated) AS rated, \
                         (SELECT count(*) FROM sessions WHERE id = $1) AS sessions \
                     FROM applied a",
                    rating_upsert("AND (SELECT version FROM applied) >= $6")
                        + " RETURNING message_id"
                ),
                &params,
            )?;
            let row = current_schema_row(&rows)?;
            Ok(rating_outcome(
                row.integer("rated")? > 0,
                row.integer("sessions")? > 0,
            ))
        })
    }

    /// The newest turns whose contents together fit in `budget_chars` characters, oldest first,
    /// stopping at the first turn that does not fit so the context has no gaps. Incomplete
    /// messages (an answer whose stream broke off) are left out: a truncated answer in the
    /// prompt invites the model to continue it instead of answering the new question.
    pub fn recent_turns(
        &self,
        session_id: &str,
        budget_chars: usize,
    ) -> Result<Vec<Turn>, StoreError> {
        reject_nul("session_id", session_id)?;
        let budget = i64::try_from(budget_chars).unwrap_or(i64::MAX);
        // length() counts characters on both backends, as budget_chars does.
        let rows = self.query(
            "SELECT role, content FROM ( \
                 SELECT id, role, content, \
                     SUM(length(content)) OVER (ORDER BY id DESC) AS running_chars \
                 FROM messages WHERE session_id = $1 AND status = 'complete' \
             ) newest WHERE running_chars <= $2 ORDER BY id",
            &[session_key(session_id).into(), budget.into()],
        )?;
        rows.iter()
            .map(|row| {
                Ok(Turn {
                    role: Role::from_column(&row.text("role")?)?,
                    content: row.text("content")?,
                })
            })
            .collect()
    }

    /// A question in a session the reader holds: brings the schema up to date, reads the
    /// session's [`recent_turns`](Self::recent_turns) (without this question), then stores the
    /// question; returns the turns and the question's record. [`StoreError::NotFound`], storing
    /// nothing, when no session has this id.
    ///
    /// On PostgreSQL all three are one statement, so a question in a session costs one round
    /// trip before retrieval instead of three: the version is read inside it, the question is
    /// inserted only when the schema is current, and the turns are read from the snapshot the
    /// statement started with, which does not hold the question. A schema found behind is
    /// migrated and the statement sent once more.
    pub fn continue_session(
        &self,
        session_id: &str,
        question: &str,
        budget_chars: usize,
    ) -> Result<(Vec<Turn>, MessageRecord), StoreError> {
        reject_nul("session_id", session_id)?;
        reject_nul("content", question)?;
        if self.dialect() == Dialect::Sqlite {
            ensure_schema(self.db)?;
            let turns = self.recent_turns(session_id, budget_chars)?;
            let record = self.append_message(
                session_id,
                Role::User,
                question,
                "[]",
                MessageStatus::Complete,
            )?;
            return Ok((turns, record));
        }
        self.with_current_schema(|| self.continue_on_postgres(session_id, question, budget_chars))
    }

    fn continue_on_postgres(
        &self,
        session_id: &str,
        question: &str,
        budget_chars: usize,
    ) -> Result<(Vec<Turn>, MessageRecord), StoreError> {
        let budget = i64::try_from(budget_chars).unwrap_or(i64::MAX);
        // One row per turn (or one with no turn), each carrying the version and the question's
        // id and time; the turns as `recent_turns` selects them.
        let rows = self.query(
            &format!(
                "WITH {APPLIED_VERSION}, question AS ( \
                 INSERT INTO messages (session_id, role, content, sources, status) \
                 SELECT s.id, 'user', CAST($3 AS TEXT), '[]', 'complete' \
                 FROM sessions s, applied a WHERE s.id = $1 AND a.version >= $4 \
                 RETURNING id, created_at \
             ), turns AS ( \
                 SELECT id, role, content FROM ( \
                     SELECT id, role, content, \
                         SUM(length(content)) OVER (ORDER BY id DESC) AS running_chars \
                     FROM messages WHERE session_id = $1 AND status = 'complete' \
                 ) newest WHERE running_chars <= $2 \
             ) \
             SELECT a.version AS schema_version, q.id AS question_id, \
                 q.created_at AS question_created_at, t.role, t.content \
             FROM applied a \
             LEFT JOIN question q ON true \
             LEFT JOIN turns t ON true \
             ORDER BY t.id"
            ),
            &[
                session_key(session_id).into(),
                budget.into(),
                question.into(),
                LATEST_SCHEMA_VERSION.into(),
            ],
        )?;
        let first = current_schema_row(&rows)?;
        let Some(question_id) = first.opt_integer("question_id")? else {
            return Err(StoreError::NotFound(UNKNOWN_SESSION.into()));
        };
        let record = MessageRecord {
            id: question_id,
            created_at: first.text("question_created_at")?,
        };
        let turns = rows
            .iter()
            .filter_map(|row| match row.opt_text("role") {
                Ok(None) => None,
                Ok(Some(role)) => Some(Role::from_column(&role).and_then(|role| {
                    Ok(Turn {
                        role,
                        content: row.text("content")?,
                    })
                })),
                Err(error) => Some(Err(error)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((turns, record))
    }
}

/// What the trigger of schema version 3 raises when the drawn session id is taken.
const SQLITE_ID_TAKEN: &str = "session id taken";

/// The first row of a PostgreSQL statement that reports the applied version in a
/// `schema_version` column (every row carries it), or the refusal when that version is older
/// than this code's.
fn current_schema_row(rows: &Rows) -> Result<Row<'_>, StoreError> {
    match rows.first() {
        Some(row) if row.integer("schema_version")? >= LATEST_SCHEMA_VERSION => Ok(row),
        _ => Err(StoreError::Query(
            "the schema is behind this release".into(),
        )),
    }
}

/// The rating of answer `$2` of session `$1` as `$3`, with reason `$4` and comment `$5`,
/// replacing an earlier one; `guard` adds to the match.
fn rating_upsert(guard: &str) -> String {
    // The WHERE clause is also what lets SQLite parse ON CONFLICT after INSERT ... SELECT.
    format!(
        "INSERT INTO feedback (message_id, rating, reason, comment) \
         SELECT id, CAST($3 AS TEXT), CAST($4 AS TEXT), CAST($5 AS TEXT) FROM messages \
         WHERE id = $2 AND session_id = $1 AND role = 'assistant' {guard} \
         ON CONFLICT (message_id) DO UPDATE SET rating = excluded.rating, \
         reason = excluded.reason, comment = excluded.comment, rated_at = {{now}}"
    )
}

/// The parameters of [`rating_upsert`], in order.
fn rating_params(
    session_id: &str,
    message_id: i64,
    rating: Rating,
    reason: Option<&str>,
    comment: Option<&str>,
) -> Vec<SqlValue> {
    vec![
        session_key(session_id).into(),
        message_id.into(),
        rating.as_str().into(),
        reason.into(),
        comment.into(),
    ]
}

fn reject_nul_in_rating(
    session_id: &str,
    reason: Option<&str>,
    comment: Option<&str>,
) -> Result<(), StoreError> {
    reject_nul("session_id", session_id)?;
    if let Some(reason) = reason {
        reject_nul("reason", reason)?;
    }
    if let Some(comment) = comment {
        reject_nul("comment", comment)?;
    }
    Ok(())
}

fn rating_outcome(rated: bool, session_exists: bool) -> RatingOutcome {
    match (rated, session_exists) {
        (true, _) => RatingOutcome::Rated,
        (false, true) => RatingOutcome::UnknownAnswer,
        (false, false) => RatingOutcome::UnknownSession,
    }
}

fn id_taken() -> StoreError {
    StoreError::Conflict("the new session id is taken".into())
}

/// Runs `create` under an id from `issue_id`, drawing again should one be taken
/// ([`StoreError::Conflict`]): with 132 random bits that never happens, and the bound keeps a
/// broken random source from looping forever.
fn under_fresh_id<T>(
    mut issue_id: impl FnMut() -> String,
    mut create: impl FnMut(&str) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    const ATTEMPTS: usize = 3;
    let mut attempt = 1;
    loop {
        let id = issue_id();
        reject_nul("session_id", &id)?;
        match create(&id) {
            Err(StoreError::Conflict(_)) if attempt < ATTEMPTS => attempt += 1,
            outcome => return outcome,
        }
    }
}

/// Deletes a session stored under `key` with its messages and ratings, children first, so it
/// works whether or not the connection enforces foreign keys; returns whether it existed. Run
/// it inside a transaction.
pub(crate) fn delete_stored_session<D: Database + ?Sized>(
    db: &D,
    key: &str,
) -> Result<bool, StoreError> {
    let render = |sql: &str| db.dialect().render(sql);
    let key = [SqlValue::from(key)];
    db.execute(
        &render(
            "DELETE FROM feedback WHERE message_id IN \
             (SELECT id FROM messages WHERE session_id = $1)",
        ),
        &key,
    )?;
    db.execute(&render("DELETE FROM messages WHERE session_id = $1"), &key)?;
    let deleted = db.execute(&render("DELETE FROM sessions WHERE id = $1"), &key)?;
    Ok(deleted > 0)
}

/// A page from up to `limit + 1` message rows, newest first: the extra row only says that an
/// older page exists.
fn page_from_rows<'r>(
    session: Session,
    rows: impl Iterator<Item = Row<'r>>,
    limit: usize,
) -> Result<SessionPage, StoreError> {
    let mut rows = rows.peekable();
    let mut messages = Vec::with_capacity(limit);
    while messages.len() < limit {
        match rows.next() {
            Some(row) => messages.push(message_from_row(row)?),
            None => break,
        }
    }
    messages.reverse();
    let next_before = match rows.peek() {
        Some(_) => messages.first().map(|oldest| oldest.id),
        None => None,
    };
    Ok(SessionPage {
        session,
        messages,
        next_before,
    })
}

fn message_from_row(row: Row<'_>) -> Result<Message, StoreError> {
    let feedback = match row.opt_text("rating")? {
        Some(rating) => Some(Feedback {
            rating: Rating::parse(&rating)
                .map_err(|_| StoreError::Query(format!("unknown rating {rating:?}")))?,
            reason: row.opt_text("reason")?,
            comment: row.opt_text("comment")?,
            rated_at: row.text("rated_at")?,
        }),
        None => None,
    };
    Ok(Message {
        id: row.integer("id")?,
        role: Role::from_column(&row.text("role")?)?,
        content: row.text("content")?,
        sources: row.text("sources")?,
        status: MessageStatus::from_column(&row.text("status")?)?,
        created_at: row.text("created_at")?,
        feedback,
    })
}
