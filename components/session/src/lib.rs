//! /session: create a session, read its history a page at a time, delete it, and rate answers.
//!
//! - `POST   /session` -> 201 `{session_id, created_at}`
//! - `GET    /session/{id}?limit=&before=` -> 200 `{session_id, created_at, messages, next_before}`
//! - `DELETE /session/{id}` -> 204
//! - `POST   /session/{id}/messages/{message_id}/feedback` `{rating, reason?, comment?}` -> 204
//!
//! Sessions live in PostgreSQL when `database_url` is set, else in the embedded SQLite database.
//!
//! A session id is a capability the server issues (here, or by `/chat` when asked without
//! one); the database stores only its digest. Any well-formed id that is not a live session,
//! whether never issued, mistyped or deleted, gets the same 404, and an id of the wrong shape
//! gets 400 naming `session_id` before any lookup, so no answer says anything about sessions
//! other than the one whose id was sent.

use adapters::db::Db;
use adapters::respond;
use rag_core::config::Settings;
use rag_core::error::ApiError;
use rag_core::store::{
    page_before, page_limit, validate_comment, validate_reason, validate_session_id, FieldError,
    Message, Rating, RatingOutcome, SessionPage, SessionStore, StoreError, UNKNOWN_SESSION,
};
use serde_json::{json, Map, Value};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;
use spin_sdk::variables;

#[http_component]
fn handle(request: Request) -> Response {
    adapters::log::set_request_id(
        request
            .header("x-request-id")
            .and_then(|value| value.as_str()),
    );
    adapters::cors::remember_origin(request.header("origin").and_then(|value| value.as_str()));
    let allow = allowed_methods(&path_below_route(&request));
    if *request.method() == Method::Options {
        return adapters::cors::preflight(allow);
    }
    serve(&request).unwrap_or_else(|error| respond::error_allowing(&error, allow))
}

/// The methods the resource at `path` (below `/session`) answers, for `Allow`.
fn allowed_methods(path: &str) -> &'static str {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [] => "POST, OPTIONS",
        [_] => "GET, DELETE, OPTIONS",
        [_, "messages", _, "feedback"] => "POST, OPTIONS",
        _ => "OPTIONS",
    }
}

/// What a request asks for, checked before any database work so bad input costs no round trip.
enum Action {
    Create,
    Read {
        session_id: String,
        limit: usize,
        before: Option<i64>,
    },
    Delete {
        session_id: String,
    },
    Rate {
        session_id: String,
        message_id: i64,
        feedback: FeedbackBody,
    },
}

struct FeedbackBody {
    rating: Rating,
    reason: Option<String>,
    comment: Option<String>,
}

fn serve(request: &Request) -> Result<Response, ApiError> {
    let action = parse(request)?;
    let db = open_database()?;
    // Every action checks the schema itself, on PostgreSQL inside its one statement.
    let store = SessionStore::new(&db);
    run(&store, action).map_err(|e| store_failure(&e))
}

fn store_failure(failure: &StoreError) -> ApiError {
    respond::store_failure("session", failure)
}

fn open_database() -> Result<Db, ApiError> {
    let settings = Settings::from_lookup(|name| variables::get(name).ok())
        .map_err(|e| ApiError::internal(format!("invalid configuration: {e}")))?;
    Db::open(settings.database_url.as_deref()).map_err(|e| store_failure(&e))
}

/// The path below `/session`, as the runner (and Spin) pass it in `spin-path-info`.
fn path_below_route(request: &Request) -> String {
    match request
        .header("spin-path-info")
        .and_then(|value| value.as_str())
    {
        Some(info) => info.to_owned(),
        None => request
            .path()
            .split_once("/session")
            .map_or_else(String::new, |(_, rest)| rest.to_owned()),
    }
}

fn parse(request: &Request) -> Result<Action, ApiError> {
    let path = path_below_route(request);
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let method = request.method();
    match segments.as_slice() {
        [] => match method {
            Method::Post => Ok(Action::Create),
            _ => Err(ApiError::method_not_allowed("POST")),
        },
        [session_id] => {
            let session_id = session_id_param(session_id)?;
            match method {
                Method::Get => {
                    let (limit, before) = page_params(request.query())?;
                    Ok(Action::Read {
                        session_id,
                        limit,
                        before,
                    })
                }
                Method::Delete => Ok(Action::Delete { session_id }),
                _ => Err(ApiError::method_not_allowed("GET or DELETE")),
            }
        }
        [session_id, "messages", message_id, "feedback"] => {
            if *method != Method::Post {
                return Err(ApiError::method_not_allowed("POST"));
            }
            Ok(Action::Rate {
                session_id: session_id_param(session_id)?,
                message_id: message_id_param(message_id)?,
                feedback: feedback_body(request.body())?,
            })
        }
        _ => Err(ApiError::not_found("no route matches this path")),
    }
}

fn invalid(error: FieldError) -> ApiError {
    ApiError::invalid_field(error.field, error.message)
}

fn session_id_param(raw: &str) -> Result<String, ApiError> {
    validate_session_id(raw).map_err(invalid)?;
    Ok(raw.to_owned())
}

fn message_id_param(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::invalid_field("message_id", "must be a positive integer"))
}

fn page_params(query: &str) -> Result<(usize, Option<i64>), ApiError> {
    let mut limit = None;
    let mut before = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "limit" => limit = Some(value.into_owned()),
            "before" => before = Some(value.into_owned()),
            _ => {}
        }
    }
    Ok((
        page_limit(limit.as_deref()).map_err(invalid)?,
        page_before(before.as_deref()).map_err(invalid)?,
    ))
}

fn feedback_body(body: &[u8]) -> Result<FeedbackBody, ApiError> {
    let mut object: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => object,
        Ok(_) => {
            return Err(ApiError::invalid_request(
                "the body must be a JSON object with a rating",
            ))
        }
        Err(e) => {
            return Err(ApiError::invalid_request(format!(
                "the body is not valid JSON: {e}"
            )))
        }
    };
    let rating = match object.remove("rating") {
        Some(Value::String(rating)) => Rating::parse(&rating).map_err(invalid)?,
        _ => return Err(invalid(Rating::parse("").unwrap_err())),
    };
    let reason = optional_text(&mut object, "reason")?;
    validate_reason(reason.as_deref()).map_err(invalid)?;
    let comment = optional_text(&mut object, "comment")?;
    validate_comment(comment.as_deref()).map_err(invalid)?;
    // A misspelt field would otherwise be dropped without a word.
    if let Some(unknown) = object.keys().next() {
        return Err(ApiError::invalid_field(
            unknown,
            "is not a known field; use rating, reason and comment",
        ));
    }
    Ok(FeedbackBody {
        rating,
        reason,
        comment,
    })
}

fn optional_text(object: &mut Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match object.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(ApiError::invalid_field(field, "must be a string or null")),
    }
}

fn run(store: &SessionStore<'_, Db>, action: Action) -> Result<Response, StoreError> {
    match action {
        Action::Create => {
            let session = store.start_session(adapters::ids::new_session_id)?;
            Ok(respond::json(
                201,
                &json!({"session_id": session.id, "created_at": session.created_at}),
            ))
        }
        Action::Read {
            session_id,
            limit,
            before,
        } => match store.read_session(&session_id, limit, before)? {
            Some(page) => page_json(&page).map(|body| respond::json(200, &body)),
            None => Err(session_not_found()),
        },
        Action::Delete { session_id } => {
            if store.delete_session(&session_id)? {
                Ok(no_content())
            } else {
                Err(session_not_found())
            }
        }
        Action::Rate {
            session_id,
            message_id,
            feedback,
        } => {
            let outcome = store.rate_answer(
                &session_id,
                message_id,
                feedback.rating,
                feedback.reason.as_deref(),
                feedback.comment.as_deref(),
            )?;
            match outcome {
                RatingOutcome::Rated => Ok(no_content()),
                RatingOutcome::UnknownSession => Err(session_not_found()),
                // Only the holder of this session's id gets here.
                RatingOutcome::UnknownAnswer => Err(StoreError::NotFound(format!(
                    "this session has no answer with message id {message_id}"
                ))),
            }
        }
    }
}

fn session_not_found() -> StoreError {
    StoreError::NotFound(UNKNOWN_SESSION.into())
}

fn no_content() -> Response {
    adapters::cors::apply(Response::builder().status(204).body(Vec::new()).build())
}

fn page_json(page: &SessionPage) -> Result<Value, StoreError> {
    let messages = page
        .messages
        .iter()
        .map(message_json)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({
        "session_id": page.session.id,
        "created_at": page.session.created_at,
        "messages": messages,
        "next_before": page.next_before,
    }))
}

fn message_json(message: &Message) -> Result<Value, StoreError> {
    let sources = message.sources_json().map_err(|e| {
        StoreError::Query(format!(
            "message {} has unreadable sources: {e}",
            message.id
        ))
    })?;
    let feedback = message.feedback.as_ref().map(|feedback| {
        json!({
            "rating": feedback.rating,
            "reason": feedback.reason,
            "comment": feedback.comment,
            "rated_at": feedback.rated_at,
        })
    });
    Ok(json!({
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "sources": sources,
        "status": message.status,
        "created_at": message.created_at,
        "feedback": feedback,
    }))
}
