//! The conversation a question belongs to: its earlier turns, and the turns this request adds.

use std::cell::{Cell, RefCell};

use adapters::db::Db;
use adapters::respond;
use rag_core::chat::ChatRequest;
use rag_core::config::Settings;
use rag_core::error::ApiError;
use rag_core::store::{MessageStatus, Role, SessionStore, StoreError, Turn};

/// The session one question belongs to. In a session the request names, the user's turn is
/// stored at once. A request that names none stores nothing until its answer is ready: then
/// the new session with the question and the answer, in one write statement that also checks
/// the schema's version. So nothing stands between a first question and its retrieval, a first
/// question costs one write transaction (on PostgreSQL one round trip) and no version read, and
/// a chat that fails before answering leaves nothing behind (see
/// [`SessionStore::start_session_with_exchange`]).
///
/// Each write takes a database connection only for itself: a streamed answer can take minutes,
/// and a PostgreSQL connection held that long would leave later chats waiting on an empty pool.
pub struct Conversation {
    database_url: Option<String>,
    /// Empty until a request that names no session stores its first exchange.
    session_id: RefCell<String>,
    /// Earlier complete turns within the history budget, oldest first (this question excluded).
    pub history: Vec<Turn>,
    /// The question of a request that names no session, until it is stored with its answer.
    unsaved_question: RefCell<Option<String>>,
    /// Whether this request started the session (with its first question and answer).
    started_here: Cell<bool>,
}

/// How a storage failure reaches the client: the stable code; the detail goes to the log.
pub fn store_failure(error: StoreError) -> ApiError {
    respond::store_failure("chat", &error)
}

impl Conversation {
    /// Continues the session the request names: reads its recent turns, then stores the
    /// question (on PostgreSQL in one statement with the schema check), so in a session the
    /// reader holds the question is kept even when answering it fails. An id the server never
    /// issued (or one deleted since) is 404 `not_found`: sessions are never created under an
    /// id a client chose. A request that names no session gets one
    /// under a new server-issued id when its answer is stored ([`Conversation::add_answer`]).
    pub fn open(settings: &Settings, request: &ChatRequest) -> Result<Self, ApiError> {
        // Opened even for a first question, which writes only at the end: a database that
        // is down is told before the retrieval and the model are paid for. On PostgreSQL
        // this takes a pooled connection, no round trip.
        let db = Db::open(settings.database_url.as_deref()).map_err(store_failure)?;
        let conversation = |session_id: String, history, unsaved_question| Self {
            database_url: settings.database_url.clone(),
            session_id: RefCell::new(session_id),
            history,
            unsaved_question: RefCell::new(unsaved_question),
            started_here: Cell::new(false),
        };
        let Some(session_id) = &request.session_id else {
            // A session started now has no turns to read, and its one write checks the
            // schema itself.
            return Ok(conversation(
                String::new(),
                Vec::new(),
                Some(request.query.clone()),
            ));
        };
        // Storing the question is also the existence check: it inserts nothing, and fails
        // with NotFound, when no session has this id.
        let (history, _question) = SessionStore::new(&db)
            .continue_session(session_id, &request.query, settings.history_budget_chars)
            .map_err(store_failure)?;
        Ok(conversation(session_id.clone(), history, None))
    }

    /// The conversation of an answer stored earlier, to finish or take back that answer (see
    /// `crate::relay::settle`). It has no history and no unsaved question.
    pub fn resume(settings: &Settings, session_id: &str, started_here: bool) -> Self {
        Self {
            database_url: settings.database_url.clone(),
            session_id: RefCell::new(session_id.to_owned()),
            history: Vec::new(),
            unsaved_question: RefCell::new(None),
            started_here: Cell::new(started_here),
        }
    }

    /// Whether this request started the session, with its first question and answer.
    pub fn started_here(&self) -> bool {
        self.started_here.get()
    }

    /// The session's id; empty before a request that names none has stored its answer.
    pub fn session_id(&self) -> String {
        self.session_id.borrow().clone()
    }

    /// Whether a write lets the host get on with other work while it waits: true on
    /// PostgreSQL, across the network; false on the embedded SQLite, which writes in place.
    pub fn writes_yield(&self) -> bool {
        self.database_url.is_some()
    }

    fn connect(&self) -> Result<Db, StoreError> {
        Db::open(self.database_url.as_deref())
    }

    /// Stores an answer, first starting the session with the question when the request named
    /// none; returns the answer's message id.
    pub fn add_answer(
        &self,
        answer: &str,
        sources_json: &str,
        status: MessageStatus,
    ) -> Result<i64, ApiError> {
        let db = self.connect().map_err(store_failure)?;
        let sessions = SessionStore::new(&db);
        let Some(question) = self.unsaved_question.take() else {
            return sessions
                .append_message(
                    &self.session_id(),
                    Role::Assistant,
                    answer,
                    sources_json,
                    status,
                )
                .map(|record| record.id)
                .map_err(store_failure);
        };
        let (session, record) = sessions
            .start_session_with_exchange(
                adapters::ids::new_session_id,
                &question,
                answer,
                sources_json,
                status,
            )
            .map_err(store_failure)?;
        *self.session_id.borrow_mut() = session.id;
        self.started_here.set(true);
        Ok(record.id)
    }

    /// Takes back an answer stored ahead of its text ([`Conversation::add_answer`] with
    /// `Incomplete`) when no text will come: the model could not be reached. A session this
    /// request started goes with it, since its id was never given out; in a session the reader
    /// holds, the question stays. Failures are logged: the client gets the model's error anyway.
    pub fn discard_answer(&self, message_id: i64) {
        let session_id = self.session_id();
        let discarded = self.connect().and_then(|db| {
            let sessions = SessionStore::new(&db);
            match self.started_here.get() {
                true => sessions.delete_session(&session_id),
                false => sessions.discard_answer(&session_id, message_id),
            }
        });
        if let Err(error) = discarded {
            adapters::log::failure(
                "chat",
                format!("could not discard message {message_id}: {error}"),
            );
        }
    }

    /// Rewrites a streamed answer as it stands; failures are logged, since the client already
    /// has the text and nothing better can be done.
    pub fn save_answer(&self, message_id: i64, answer: &str, status: MessageStatus) {
        let session_id = self.session_id();
        if let Err(error) = self.connect().and_then(|db| {
            SessionStore::new(&db).update_answer(&session_id, message_id, answer, status)
        }) {
            adapters::log::failure(
                "chat",
                format!("could not save message {message_id}: {error}"),
            );
        }
    }
}
