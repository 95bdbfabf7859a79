//! OpenAI-compatible chat completions: `POST {base}/chat/completions`, whole or streamed.
//!
//! Streams are Server-Sent Events whose `data:` lines carry `chat.completion.chunk` objects
//! and end with `data: [DONE]`; a stream that stops before `[DONE]` was cut off.

use std::fmt;

use http::{Method, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{bearer, decode, json_request, Service, UpstreamError};
use crate::config::Settings;
use crate::sse::{SseParser, Usage};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

/// One message of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: ChatRole, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// An OpenAI-compatible endpoint and model.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenAi {
    /// Without a trailing slash, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub api_key: String,
    pub model: String,
}

impl fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAi")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

/// A whole (non-streamed) answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub content: String,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
}

/// What one stream chunk carried; any part may be empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamChunk {
    /// New answer text ("" when the chunk had none).
    pub delta: String,
    pub finish_reason: Option<String>,
    /// Sent in the last chunk when `stream_options.include_usage` was asked for.
    pub usage: Option<Usage>,
}

#[derive(Deserialize)]
struct CompletionBody {
    choices: Vec<CompletionChoice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    message: CompletionMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct CompletionMessage {
    content: Option<String>,
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct ChunkBody {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    usage: Option<Usage>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    delta: Option<ChunkDelta>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChunkDelta {
    content: Option<String>,
    refusal: Option<String>,
}

impl OpenAi {
    /// `None` when no OpenAI key is configured.
    pub fn from_settings(settings: &Settings) -> Option<Self> {
        Some(Self {
            base_url: settings.openai_base_url.clone(),
            api_key: settings.openai_api_key.clone()?,
            model: settings.openai_model.clone(),
        })
    }

    /// `POST {base}/chat/completions`; streamed requests ask for usage in the last chunk.
    pub fn chat_request(
        &self,
        messages: &[ChatMessage],
        stream: bool,
        temperature: f32,
    ) -> Request<Vec<u8>> {
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "stream": stream,
            "temperature": temperature,
        });
        if stream {
            body["stream_options"] = json!({ "include_usage": true });
        }
        let mut request = json_request(
            Method::POST,
            &format!("{}/chat/completions", self.base_url),
            bearer(&self.api_key),
            Some(&body),
        );
        if stream {
            request.headers_mut().insert(
                http::header::ACCEPT,
                http::HeaderValue::from_static("text/event-stream"),
            );
        }
        request
    }

    /// The answer of a non-streamed completion; a refusal is returned as the answer text.
    pub fn parse_chat_response(response: &Response<Vec<u8>>) -> Result<Completion, UpstreamError> {
        let body: CompletionBody = decode(Service::OpenAi, response)?;
        let choice = body
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| UpstreamError::bad_response(Service::OpenAi, "no choices"))?;
        let content = choice
            .message
            .content
            .or(choice.message.refusal)
            .ok_or_else(|| UpstreamError::bad_response(Service::OpenAi, "no message content"))?;
        Ok(Completion {
            content,
            finish_reason: choice.finish_reason,
            usage: body.usage,
        })
    }
}

/// Checks the `Content-Type` of a streamed completion that answered with a success status.
/// A 200 of another type (a proxy's HTML page, a whole JSON completion from a server that
/// ignored `stream`) carries no tokens; telling so here, before anything is sent on, lets the
/// client get a plain error instead of a stream that breaks off. Not retryable: the same
/// server would answer the same way. A missing type is let through to the decoder, which
/// still fails a body that is not an event stream.
pub fn check_stream_content_type(content_type: Option<&str>) -> Result<(), UpstreamError> {
    let Some(content_type) = content_type else {
        return Ok(());
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "text/event-stream" {
        return Ok(());
    }
    let mut error =
        UpstreamError::bad_response(Service::OpenAi, "the stream is not an event stream");
    error.reason = Some(super::scrub(&format!("Content-Type: {content_type}")));
    Err(error)
}

/// Decodes a streamed completion incrementally.
#[derive(Debug, Default)]
pub struct ChatStream {
    parser: SseParser,
    done: bool,
    /// A chunk that could not be decoded after good ones in the same read: those are handed
    /// out first (the model did write them), the failure on the next call.
    failed: Option<UpstreamError>,
}

impl ChatStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `data: [DONE]` has arrived.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Consumes response body bytes, returning the chunks they complete. Anything after
    /// `[DONE]` is ignored.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<StreamChunk>, UpstreamError> {
        if let Some(error) = self.failed.take() {
            return Err(error);
        }
        let events = self.parser.feed(bytes);
        self.decode_events(events)
    }

    /// Ends the body; fails if the stream stopped before `[DONE]`.
    pub fn finish(&mut self) -> Result<Vec<StreamChunk>, UpstreamError> {
        if let Some(error) = self.failed.take() {
            return Err(error);
        }
        let tail = self.parser.finish();
        let chunks = self.decode_events(tail.into_iter().collect())?;
        if !self.done {
            return Err(UpstreamError::bad_response(
                Service::OpenAi,
                "the stream ended before [DONE]",
            ));
        }
        Ok(chunks)
    }

    fn decode_events(
        &mut self,
        events: Vec<crate::sse::SseEvent>,
    ) -> Result<Vec<StreamChunk>, UpstreamError> {
        let mut chunks = Vec::new();
        for event in events {
            if self.done {
                break;
            }
            let data = event.data.trim();
            if data == "[DONE]" {
                self.done = true;
                continue;
            }
            match parse_chunk(data) {
                Ok(chunk) => chunks.push(chunk),
                Err(error) if chunks.is_empty() => return Err(error),
                Err(error) => {
                    self.failed = Some(error);
                    break;
                }
            }
        }
        Ok(chunks)
    }
}

fn parse_chunk(data: &str) -> Result<StreamChunk, UpstreamError> {
    let body: ChunkBody = serde_json::from_str(data).map_err(|error| {
        UpstreamError::bad_response(Service::OpenAi, format!("unexpected stream chunk: {error}"))
    })?;
    if body.error.is_some() {
        return Err(UpstreamError::bad_response(
            Service::OpenAi,
            "the stream reported an error",
        ));
    }
    let mut chunk = StreamChunk {
        usage: body.usage,
        ..StreamChunk::default()
    };
    if let Some(choice) = body.choices.into_iter().next() {
        chunk.finish_reason = choice.finish_reason;
        if let Some(delta) = choice.delta {
            chunk.delta = delta.content.or(delta.refusal).unwrap_or_default();
        }
    }
    Ok(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn openai() -> OpenAi {
        OpenAi {
            base_url: "https://llm.example/v1".into(),
            api_key: "sk-test".into(),
            model: "gpt-4o-mini".into(),
        }
    }

    fn ok(value: Value) -> Response<Vec<u8>> {
        Response::new(serde_json::to_vec(&value).unwrap())
    }

    #[test]
    fn a_stream_must_be_an_event_stream() {
        for accepted in [
            None,
            Some("text/event-stream"),
            Some("text/event-stream; charset=utf-8"),
            Some("Text/Event-Stream"),
        ] {
            assert!(check_stream_content_type(accepted).is_ok(), "{accepted:?}");
        }
        for refused in ["text/html; charset=utf-8", "application/json", ""] {
            let error = check_stream_content_type(Some(refused)).unwrap_err();
            assert!(!error.is_retryable());
            let api = error.to_api_error();
            assert_eq!((api.status, api.code), (502, "upstream_bad_response"));
            assert!(!api.message.contains("html"), "{}", api.message);
        }
    }

    #[test]
    fn request_shape() {
        let messages = [
            ChatMessage::new(ChatRole::System, "rules"),
            ChatMessage::new(ChatRole::User, "q"),
        ];
        let request = openai().chat_request(&messages, false, 0.2);
        assert_eq!(request.uri(), "https://llm.example/v1/chat/completions");
        assert_eq!(request.headers()["authorization"], "Bearer sk-test");
        let body: Value = serde_json::from_slice(request.body()).unwrap();
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(
            body["messages"],
            json!([{"role": "system", "content": "rules"}, {"role": "user", "content": "q"}])
        );
        assert_eq!(body["stream"], false);
        assert!(body.get("stream_options").is_none());
        let streamed = openai().chat_request(&messages, true, 0.2);
        let body: Value = serde_json::from_slice(streamed.body()).unwrap();
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert_eq!(streamed.headers()["accept"], "text/event-stream");
    }

    #[test]
    fn parses_a_whole_completion() {
        let response = ok(
            json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi [1].", "refusal": null},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
        );
        let completion = OpenAi::parse_chat_response(&response).unwrap();
        assert_eq!(completion.content, "Hi [1].");
        assert_eq!(completion.finish_reason.as_deref(), Some("stop"));
        assert_eq!(completion.usage.unwrap().total_tokens, 5);
        assert!(OpenAi::parse_chat_response(&ok(json!({"choices": []}))).is_err());
        assert!(OpenAi::parse_chat_response(&ok(json!({"nope": 1}))).is_err());
    }

    #[test]
    fn decodes_a_stream_split_anywhere() {
        let stream = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
            ": keep-alive\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\n",
            "data: [DONE]\n\n",
        )
        .as_bytes();
        for split in [1, 7, 50, stream.len() - 3] {
            let mut decoder = ChatStream::new();
            let mut chunks = decoder.feed(&stream[..split]).unwrap();
            chunks.extend(decoder.feed(&stream[split..]).unwrap());
            chunks.extend(decoder.finish().unwrap());
            let text: String = chunks.iter().map(|c| c.delta.as_str()).collect();
            assert_eq!(text, "Hello");
            assert_eq!(
                chunks
                    .iter()
                    .find_map(|c| c.finish_reason.clone())
                    .as_deref(),
                Some("stop")
            );
            assert_eq!(chunks.iter().find_map(|c| c.usage).unwrap().total_tokens, 3);
            assert!(decoder.is_done());
        }
    }

    #[test]
    fn a_cut_stream_or_an_error_chunk_fails() {
        let mut decoder = ChatStream::new();
        decoder
            .feed(
                b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"},\"finish_reason\":null}]}\n\n",
            )
            .unwrap();
        assert!(decoder.finish().is_err());
        let mut decoder = ChatStream::new();
        assert!(decoder
            .feed(b"data: {\"error\":{\"message\":\"overloaded\"}}\n\n")
            .is_err());
        let mut decoder = ChatStream::new();
        assert!(decoder.feed(b"data: not json\n\n").is_err());
    }

    #[test]
    fn tokens_read_before_a_broken_chunk_are_kept() {
        let good = |text: &str| {
            format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n")
        };
        let read = format!(
            "{}{}data: {{\"choices\": [\n\n",
            good("Hello "),
            good("world")
        );
        let mut decoder = ChatStream::new();
        let chunks = decoder.feed(read.as_bytes()).unwrap();
        let text: String = chunks.iter().map(|c| c.delta.as_str()).collect();
        assert_eq!(text, "Hello world");
        let error = decoder.feed(good("more").as_bytes()).unwrap_err();
        assert!(error.detail.contains("unexpected stream chunk"), "{error}");
        let mut ended = ChatStream::new();
        ended.feed(read.as_bytes()).unwrap();
        assert!(ended
            .finish()
            .unwrap_err()
            .detail
            .contains("unexpected stream chunk"));
    }
}
