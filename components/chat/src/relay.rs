//! The runner's token relay (see `rag_core::relay`): a streamed answer handed over once its
//! row is stored, so that this instance ends instead of waiting out the model; and the call
//! back that stores how the answer ended.

use rag_core::config::Settings;
use rag_core::error::ApiError;
use rag_core::pipeline;
use rag_core::relay::{self, HandOver, ModelRequest, Outcome, Ready, Refusal, Settle, TOKEN_ENV};
use rag_core::sse;
use rag_core::store::MessageStatus;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};

use crate::reply::{self, EventStream};
use crate::session::Conversation;
use crate::{generate, Prepared};

/// The runner's token when it offers the relay; `None` under `spin up`.
pub fn offered() -> Option<String> {
    std::env::var(TOKEN_ENV)
        .ok()
        .filter(|token| !token.is_empty())
}

/// Hands the model's stream to the runner: the request first, so that it is sent while the
/// answer's row is stored, then the row's ids (or the error that stops the stream).
pub async fn hand_over(prepared: &Prepared, out: ResponseOutparam) {
    let request = generate::stream_request(&prepared.settings, &prepared.messages());
    let open = ModelRequest::from_request(&request, prepared.settings.upstream_timeout);
    let mut body = EventStream::open_relayed(out);
    if !body.send(HandOver::Open(open).to_line()).await {
        return;
    }
    let sources = prepared.sources();
    let sources_json = pipeline::sources_json(&sources);
    let conversation = &prepared.conversation;
    let line = match conversation.add_answer("", &sources_json, MessageStatus::Incomplete) {
        Ok(message_id) => {
            let session_id = conversation.session_id();
            HandOver::Ready(Ready {
                sources_event: String::from_utf8(sse::sources_event(&session_id, &sources))
                    .expect("events are UTF-8 JSON"),
                session_id,
                message_id,
                started_here: conversation.started_here(),
            })
        }
        Err(error) => HandOver::Refused(Refusal {
            status: error.status,
            body: String::from_utf8(error.to_json_body()).expect("errors are UTF-8 JSON"),
        }),
    };
    body.send(line.to_line()).await;
}

/// Stores how a relayed answer ended. Only the runner that offered the relay can call this: the
/// token it presents must be the one in this instance's environment.
pub async fn settle(request: IncomingRequest, presented: &str, out: ResponseOutparam) {
    let settled = async {
        let expected = offered().unwrap_or_default();
        if !relay::token_matches(presented, &expected) {
            return Err(ApiError::new(
                403,
                "forbidden",
                "this call is reserved for the runner",
            ));
        }
        let body = request
            .into_body()
            .await
            .map_err(|_| ApiError::invalid_request("the request body could not be read"))?;
        let settle: Settle = serde_json::from_slice(&body)
            .map_err(|error| ApiError::invalid_request(format!("not a settle call: {error}")))?;
        let settings = Settings::from_lookup(|name| spin_sdk::variables::get(name).ok())
            .map_err(|error| ApiError::new(500, "misconfigured", error.to_string()))?;
        let ready = &settle.ready;
        let conversation = Conversation::resume(&settings, &ready.session_id, ready.started_here);
        let status = match settle.outcome {
            Outcome::Discard => {
                conversation.discard_answer(ready.message_id);
                return Ok(());
            }
            Outcome::Complete => MessageStatus::Complete,
            Outcome::Incomplete => MessageStatus::Incomplete,
        };
        conversation.save_answer(ready.message_id, &settle.answer, status);
        Ok(())
    };
    match settled.await {
        Ok(()) => reply::empty(out, 204).await,
        Err(error) => reply::error(out, &error).await,
    }
}
