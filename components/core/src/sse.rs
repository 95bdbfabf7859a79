//! Server-Sent Events: an incremental parser for upstream streams (the LLM's), and the writer
//! of our own `/chat` stream events.
//!
//! The parser follows the WHATWG event-stream rules that matter for API streams: lines end in
//! `\n`, `\r\n` or `\r`; `data:` lines of one event are joined with `\n`; lines starting with
//! `:` are comments; a blank line ends the event. Bytes may arrive split anywhere, even inside
//! a UTF-8 character, so input is buffered as bytes until a line is complete.

use serde::Serialize;

/// One parsed event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` name; `None` means the default, "message".
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The `id:` field, if any.
    pub id: Option<String>,
}

/// Feed it chunks as they arrive; it returns the events they complete.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    /// A `\r` ended the previous chunk; a `\n` starting the next one belongs to it.
    pending_cr: bool,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes `chunk`, returning every event completed by it.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut bytes = chunk;
        if self.pending_cr {
            self.pending_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            let byte = bytes[i];
            if byte == b'\n' || byte == b'\r' {
                self.buffer.extend_from_slice(&bytes[start..i]);
                let line = std::mem::take(&mut self.buffer);
                if let Some(event) = self.process_line(&line) {
                    events.push(event);
                }
                if byte == b'\r' {
                    if i + 1 == bytes.len() {
                        self.pending_cr = true;
                    } else if bytes[i + 1] == b'\n' {
                        i += 1;
                    }
                }
                start = i + 1;
            }
            i += 1;
        }
        self.buffer.extend_from_slice(&bytes[start..]);
        events
    }

    /// Ends the stream: an event still missing its blank line is returned (servers such as
    /// OpenAI's end with one, but a cut connection may not).
    pub fn finish(&mut self) -> Option<SseEvent> {
        let line = std::mem::take(&mut self.buffer);
        if !line.is_empty() {
            if let Some(event) = self.process_line(&line) {
                return Some(event);
            }
        }
        self.dispatch()
    }

    fn process_line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            return None;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.find(':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.current.event = Some(value.to_owned()),
            "id" => self.current.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = std::mem::take(&mut self.current);
        let had_data = std::mem::replace(&mut self.has_data, false);
        // Per the spec an event without data is not dispatched.
        had_data.then_some(event)
    }
}

/// Formats one event as `event: name\ndata: json\n\n`.
pub fn write_event(name: &str, data: &impl Serialize) -> Vec<u8> {
    // Compact JSON never contains a raw newline, so one `data:` line always suffices.
    let json = serde_json::to_string(data).expect("event data always serialises");
    format!("event: {name}\ndata: {json}\n\n").into_bytes()
}

/// Payload of the `delta` event: a piece of the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeltaEvent<'a> {
    pub text: &'a str,
}

/// Token counts reported by the language model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// Payload of the `done` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoneEvent<'a> {
    pub message_id: i64,
    /// The session the answer was stored in; a new one when the request named none.
    pub session_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// Payload of the `sources` event. Serialised from the structs, not through
/// `serde_json::Value`, which would widen the f32 scores to f64 digits.
#[derive(Debug, Clone, Serialize)]
pub struct SourcesEvent<'a> {
    pub sources: &'a [crate::chat::Source],
    /// The session the answer belongs to, known before the first word of it.
    pub session_id: &'a str,
}

/// `event: sources` with `{"sources": [..], "session_id": ..}`, sent first.
pub fn sources_event(session_id: &str, sources: &[crate::chat::Source]) -> Vec<u8> {
    write_event(
        "sources",
        &SourcesEvent {
            sources,
            session_id,
        },
    )
}

/// `event: delta` with `{"text": ..}`.
pub fn delta_event(text: &str) -> Vec<u8> {
    write_event("delta", &DeltaEvent { text })
}

/// `event: done` with `{"message_id": .., "session_id": .., "usage"?: ..}`, sent last on
/// success.
pub fn done_event(session_id: &str, message_id: i64, usage: Option<Usage>) -> Vec<u8> {
    write_event(
        "done",
        &DoneEvent {
            message_id,
            session_id,
            usage,
        },
    )
}

/// `event: error` with `{"code": .., "message": ..}`, sent last on failure.
pub fn error_event(error: &crate::error::ApiError) -> Vec<u8> {
    write_event(
        "error",
        &serde_json::json!({ "code": error.code, "message": error.message }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn parses_lf_and_crlf_streams() {
        let mut parser = SseParser::new();
        let events = parser.feed(b"data: one\n\ndata: two\r\n\r\nevent: x\rdata: three\r\r");
        assert_eq!(data(&events), ["one", "two", "three"]);
        assert_eq!(events[2].event.as_deref(), Some("x"));
    }

    #[test]
    fn events_split_across_chunks_at_every_byte() {
        let stream =
            "event: delta\r\ndata: {\"text\":\"é\"}\r\n: keep-alive\r\n\r\ndata: [DONE]\r\n\r\n"
                .as_bytes();
        for split in 0..stream.len() {
            let mut parser = SseParser::new();
            let mut events = parser.feed(&stream[..split]);
            events.extend(parser.feed(&stream[split..]));
            assert_eq!(
                data(&events),
                ["{\"text\":\"é\"}", "[DONE]"],
                "split at {split}"
            );
            assert_eq!(events[0].event.as_deref(), Some("delta"));
        }
        let mut parser = SseParser::new();
        let events: Vec<_> = stream.iter().flat_map(|b| parser.feed(&[*b])).collect();
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn multi_line_data_comments_and_fields() {
        let mut parser = SseParser::new();
        let events = parser.feed(b": comment\nid: 7\ndata: a\ndata:b\ndata\n\n\n");
        assert_eq!(events.len(), 1, "blank lines without data dispatch nothing");
        assert_eq!(events[0].data, "a\nb\n");
        assert_eq!(events[0].id.as_deref(), Some("7"));
    }

    #[test]
    fn finish_flushes_an_unterminated_event() {
        let mut parser = SseParser::new();
        assert!(parser.feed(b"data: tail").is_empty());
        assert_eq!(parser.finish().unwrap().data, "tail");
        assert_eq!(parser.finish(), None);
    }

    #[test]
    fn writer_round_trips_through_parser() {
        let mut bytes = delta_event("line one\nline \"two\"");
        bytes.extend(done_event("s-1", 42, None));
        bytes.extend(error_event(&crate::error::ApiError::upstream_timeout(
            "OpenAI",
        )));
        let events = SseParser::new().feed(&bytes);
        let names: Vec<_> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
        assert_eq!(names, ["delta", "done", "error"]);
        let delta: serde_json::Value = serde_json::from_str(&events[0].data).unwrap();
        assert_eq!(delta["text"], "line one\nline \"two\"");
        assert_eq!(events[1].data, r#"{"message_id":42,"session_id":"s-1"}"#);
        let error: serde_json::Value = serde_json::from_str(&events[2].data).unwrap();
        assert_eq!(error["code"], "upstream_timeout");
        let usage = Usage {
            prompt_tokens: 1,
            completion_tokens: 2,
            total_tokens: 3,
        };
        let done = String::from_utf8(done_event("s-1", 1, Some(usage))).unwrap();
        assert!(
            done.contains(r#""usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}"#)
        );
    }
}
