//! POST /chat: validate, load the session, retrieve, then refuse, extract or generate, answering
//! as one JSON body or as Server-Sent Events, and store both turns.

mod generate;
mod relay;
mod reply;
mod retrieve;
mod session;
mod upstream;

use std::collections::VecDeque;

use rag_core::chat::{AnswerMode, ChatRequest, ChatResponse, Source};
use rag_core::config::{GenerationMode, Settings};
use rag_core::error::ApiError;
use rag_core::extractive::{self, REFUSAL};
use rag_core::pipeline::{self, Plan};
use rag_core::prompt::{build_messages, PromptInput};
use rag_core::retrieval::Passage;
use rag_core::sse;
use rag_core::store::MessageStatus;
use rag_core::upstream::openai::{ChatMessage, StreamChunk};
use rag_core::upstream::UpstreamError;
use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};
use spin_sdk::http_component;

use generate::TokenStream;
use reply::EventStream;
use session::Conversation;

#[http_component]
async fn handle(request: IncomingRequest, out: ResponseOutparam) {
    adapters::log::set_request_id(header(&request, "x-request-id").as_deref());
    adapters::cors::remember_origin(header(&request, "origin").as_deref());
    if request.method() == Method::Options {
        return reply::preflight(out).await;
    }
    if let Some(token) = header(&request, rag_core::relay::TOKEN_HEADER) {
        return relay::settle(request, &token, out).await;
    }
    let prepared = match prepare(request).await {
        Ok(prepared) => prepared,
        Err(error) => return reply::error(out, &error).await,
    };
    if prepared.streaming && prepared.plan == Plan::Generate && relay::offered().is_some() {
        relay::hand_over(&prepared, out).await;
    } else if prepared.streaming {
        answer_streamed(prepared, out).await;
    } else {
        match answer_json(prepared).await {
            Ok(response) => reply::json(out, 200, response.to_json_body()).await,
            Err(error) => reply::error(out, &error).await,
        }
    }
}

/// Everything known before the answer is produced.
struct Prepared {
    request: ChatRequest,
    settings: Settings,
    streaming: bool,
    conversation: Conversation,
    /// The passages the answer may use, numbered from 1 in this order.
    passages: Vec<Passage>,
    plan: Plan,
}

impl Prepared {
    fn sources(&self) -> Vec<Source> {
        Source::list(&self.passages)
    }

    fn messages(&self) -> Vec<ChatMessage> {
        build_messages(&PromptInput {
            question: &self.request.query,
            passages: &self.passages,
            selected_text: self.request.selected_text.as_deref(),
            history: &self.conversation.history,
        })
    }

    fn mode(&self) -> AnswerMode {
        match self.plan {
            Plan::Refuse => AnswerMode::Refused,
            Plan::Extract(_) => AnswerMode::Extractive,
            Plan::Generate => AnswerMode::Generated,
        }
    }
}

fn header(request: &IncomingRequest, name: &str) -> Option<String> {
    let values = request.headers().get(name);
    let joined = values
        .iter()
        .map(|value| String::from_utf8_lossy(value).into_owned())
        .collect::<Vec<_>>()
        .join(", ");
    (!joined.is_empty()).then_some(joined)
}

async fn prepare(request: IncomingRequest) -> Result<Prepared, ApiError> {
    if request.method() != Method::Post {
        return Err(ApiError::method_not_allowed("POST"));
    }
    let accept = header(&request, "accept");
    let body = request
        .into_body()
        .await
        .map_err(|_| ApiError::invalid_request("the request body could not be read"))?;
    let chat = ChatRequest::from_json(&body)?;
    let streaming = pipeline::wants_stream(&chat, accept.as_deref());
    let settings = Settings::from_lookup(|name| spin_sdk::variables::get(name).ok())
        .map_err(|error| ApiError::new(500, "misconfigured", error.to_string()))?;

    let conversation = Conversation::open(&settings, &chat)?;
    let top_k = pipeline::effective_top_k(&chat, &settings);
    let mut passages =
        retrieve::retrieve(&settings, &pipeline::retrieval_query(&chat), top_k).await?;
    let generation = settings.generation_mode();
    if generation == GenerationMode::Extractive {
        passages.truncate(extractive::MAX_PASSAGES);
    }
    let plan = pipeline::plan(
        &chat.query,
        &passages,
        chat.selected_text.as_deref(),
        generation,
    );
    if plan == Plan::Refuse {
        passages.clear();
    }
    adapters::log::info(
        "chat",
        format_args!(
            "retrieval {:?} passages {} plan {}",
            settings.retrieval_mode(),
            passages.len(),
            match &plan {
                Plan::Refuse => "refuse",
                Plan::Extract(_) => "extract",
                Plan::Generate => "generate",
            }
        ),
    );
    Ok(Prepared {
        request: chat,
        settings,
        streaming,
        conversation,
        passages,
        plan,
    })
}

async fn answer_json(prepared: Prepared) -> Result<ChatResponse, ApiError> {
    let sources = prepared.sources();
    let answer = match &prepared.plan {
        Plan::Refuse => REFUSAL.to_owned(),
        Plan::Extract(answer) => answer.clone(),
        Plan::Generate => {
            generate::complete(&prepared.settings, &prepared.messages())
                .await
                .map_err(generation_failed)?
                .content
        }
    };
    let message_id = prepared.conversation.add_answer(
        &answer,
        &pipeline::sources_json(&sources),
        MessageStatus::Complete,
    )?;
    Ok(ChatResponse {
        answer,
        sources,
        session_id: prepared.conversation.session_id(),
        message_id,
        mode: prepared.mode(),
    })
}

/// Opens the model's stream and stores the answer's row with `store_row`; returns the stream
/// and the row's id. A row stored for a model that could not be reached is taken back.
async fn open_model_stream(
    prepared: &Prepared,
    store_row: impl Fn() -> Result<i64, ApiError>,
) -> Result<(TokenStream, i64), ApiError> {
    let messages = prepared.messages();
    let open = generate::open_stream(&prepared.settings, &messages);
    if !prepared.conversation.writes_yield() {
        // The embedded database writes in place, which would hold the request back: write
        // once the model has answered, while it prepares its first token.
        let stream = open.await.map_err(generation_failed)?;
        return Ok((stream, store_row()?));
    }
    // A PostgreSQL statement yields to the host, and `join` polls the request first, which
    // sends it: the write's round trip overlaps the model's instead of following it.
    let (stream, stored) = futures::join!(open, async { store_row() });
    match (stream, stored) {
        (Ok(stream), Ok(id)) => Ok((stream, id)),
        (Ok(_), Err(error)) => Err(error),
        (Err(error), stored) => {
            if let Ok(id) = stored {
                prepared.conversation.discard_answer(id);
            }
            Err(generation_failed(error))
        }
    }
}

fn generation_failed(error: UpstreamError) -> ApiError {
    adapters::log::failure("chat", format_args!("generation failed: {error}"));
    ApiError::from(error)
}

/// Where streamed answer text comes from.
enum Tokens {
    /// A finished answer, sent in pieces.
    Ready(VecDeque<String>),
    Model(Box<TokenStream>),
}

impl Tokens {
    async fn next(&mut self) -> Result<Option<StreamChunk>, UpstreamError> {
        match self {
            Tokens::Ready(pieces) => Ok(pieces.pop_front().map(|delta| StreamChunk {
                delta,
                ..StreamChunk::default()
            })),
            Tokens::Model(stream) => stream.next().await,
        }
    }
}

/// SSE: `sources`, then `delta` events as text is produced, then `done` (or `error`). The
/// model is reached before the stream opens, so a model that is down still gets a JSON error
/// with its status; the answer row is written first (incomplete) and completed at the end, so a
/// client that goes away leaves what it was sent stored as incomplete.
async fn answer_streamed(prepared: Prepared, out: ResponseOutparam) {
    let sources = prepared.sources();
    let sources_json = pipeline::sources_json(&sources);
    let conversation = &prepared.conversation;
    let store_row = || conversation.add_answer("", &sources_json, MessageStatus::Incomplete);
    let ready = |pieces| store_row().map(|id| (Tokens::Ready(pieces), id));
    let opened = match &prepared.plan {
        Plan::Refuse => ready(VecDeque::from([REFUSAL.to_owned()])),
        Plan::Extract(answer) => ready(
            pipeline::stream_pieces(answer)
                .into_iter()
                .map(str::to_owned)
                .collect(),
        ),
        Plan::Generate => open_model_stream(&prepared, store_row)
            .await
            .map(|(stream, id)| (Tokens::Model(Box::new(stream)), id)),
    };
    let (mut tokens, message_id) = match opened {
        Ok(opened) => opened,
        Err(error) => return reply::error(out, &error).await,
    };

    let mut events = EventStream::open(out);
    let mut answer = String::new();
    let mut usage = None;
    let mut connected = events
        .send(sse::sources_event(&conversation.session_id(), &sources))
        .await;
    while connected {
        match tokens.next().await {
            Ok(Some(chunk)) => {
                usage = chunk.usage.or(usage);
                if !chunk.delta.is_empty() {
                    answer.push_str(&chunk.delta);
                    connected = events.send(sse::delta_event(&chunk.delta)).await;
                }
            }
            Ok(None) => {
                conversation.save_answer(message_id, &answer, MessageStatus::Complete);
                events
                    .send(sse::done_event(
                        &conversation.session_id(),
                        message_id,
                        usage,
                    ))
                    .await;
                return;
            }
            Err(error) => {
                adapters::log::failure("chat", format_args!("the answer stream failed: {error}"));
                conversation.save_answer(message_id, &answer, MessageStatus::Incomplete);
                events.send(sse::error_event(&ApiError::from(error))).await;
                return;
            }
        }
    }
    adapters::log::info(
        "chat",
        format_args!("the client left during message {message_id}; stored as incomplete"),
    );
    conversation.save_answer(message_id, &answer, MessageStatus::Incomplete);
}
