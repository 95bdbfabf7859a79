//! Handing a streamed answer's token relay to the runner.
//!
//! A streamed answer spends nearly all its life waiting for the model's next token, and under
//! WASI 0.2 the instance that writes a response body lives as long as the body does. A runner
//! that offers the relay lets the chat component end its instance once the answer's row is
//! stored: the component answers with the [`RELAY_HEADER`] and a body of two JSON lines,
//! [`HandOver::Open`] (the model request, sent at once) then [`HandOver::Ready`] (what the
//! stream's events need) or [`HandOver::Refused`] (the stream's JSON error). The runner sends
//! the request, writes the events with this crate's encoders, and calls the component again
//! with a [`Settle`] (authenticated by [`TOKEN_HEADER`]) to store how the answer ended. This is
//! the `X-Accel-Redirect` pattern: the application decides, the server moves the bytes.
//!
//! Only a runner that sets [`TOKEN_ENV`] in the component's environment offers it, so under
//! `spin up` the component streams by itself.

use serde::{Deserialize, Serialize};

/// The response header by which a component hands its stream over; its value names the
/// upstream's wire format.
pub const RELAY_HEADER: &str = "x-stream-relay";
/// The only wire format relayed: an OpenAI-compatible streamed chat completion.
pub const OPENAI_CHAT: &str = "openai-chat";
/// The header carrying the runner's token on a [`Settle`] call. The runner removes it from
/// every request a client sends.
pub const TOKEN_HEADER: &str = "x-stream-relay-token";
/// The environment variable through which the runner offers the relay, holding its token.
pub const TOKEN_ENV: &str = "STREAM_RELAY_TOKEN";

/// One line of the handed-over body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandOver {
    Open(ModelRequest),
    Ready(Ready),
    Refused(Refusal),
}

/// Headers `wasi:http` does not let a guest set on an outgoing request.
const FORBIDDEN_HEADERS: &[&str] = &[
    "connection",
    "host",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The model request, as built by [`crate::upstream::openai::OpenAi::chat_request`]. It carries
/// the API key: neither side logs it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The longest wait for the response head, and then between two reads of its body.
    pub timeout_ms: u64,
}

impl std::fmt::Debug for ModelRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRequest")
            .field("url", &"<redacted>")
            .field("headers", &self.headers.len())
            .finish_non_exhaustive()
    }
}

impl ModelRequest {
    /// `request` (a POST with a UTF-8 body) in relay form.
    pub fn from_request(request: &http::Request<Vec<u8>>, timeout: std::time::Duration) -> Self {
        Self {
            url: request.uri().to_string(),
            headers: request
                .headers()
                .iter()
                .filter_map(|(name, value)| {
                    Some((name.to_string(), value.to_str().ok()?.to_owned()))
                })
                .collect(),
            body: String::from_utf8_lossy(request.body()).into_owned(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Back to a request, or why it is not one. Headers a guest may not set on an outgoing
    /// request under `wasi:http` (the connection's own, and `host`) are left out here too.
    pub fn to_request(&self) -> Result<http::Request<Vec<u8>>, http::Error> {
        let mut builder = http::Request::post(&self.url);
        for (name, value) in &self.headers {
            if FORBIDDEN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                continue;
            }
            builder = builder.header(name, value);
        }
        builder.body(self.body.clone().into_bytes())
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms)
    }
}

/// The answer's row is stored: what the events and the [`Settle`] call need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// The `sources` event, already encoded.
    pub sources_event: String,
    pub session_id: String,
    pub message_id: i64,
    /// Whether this request started the session (see [`Outcome::Discard`]).
    pub started_here: bool,
}

/// The stream cannot start: the JSON error to answer with instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub status: u16,
    pub body: String,
}

/// How a relayed answer ended, sent back to the component to store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settle {
    pub ready: Ready,
    pub answer: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The model finished: the answer is complete.
    Complete,
    /// The model failed or the client left midway: what was sent is kept as incomplete.
    Incomplete,
    /// The model could not be reached: the row is taken back (with the session, when this
    /// request started it).
    Discard,
}

impl HandOver {
    /// One line of the body, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("a hand-over always serialises");
        line.push(b'\n');
        line
    }

    pub fn from_line(line: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(line)
    }
}

/// Compares a presented token with the expected one in time independent of where they differ.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    let (a, b) = (presented.as_bytes(), expected.as_bytes());
    if a.len() != b.len() || b.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_request_survives_the_hand_over_and_hides_its_key_from_debug() {
        let request = http::Request::post("https://llm.example/v1/chat/completions")
            .header("authorization", "Bearer sk-secret")
            .header("content-type", "application/json")
            .body(br#"{"stream":true}"#.to_vec())
            .unwrap();
        let relayed = ModelRequest::from_request(&request, std::time::Duration::from_secs(30));
        let line = HandOver::Open(relayed.clone()).to_line();
        assert_eq!(line.last(), Some(&b'\n'));
        let HandOver::Open(back) = HandOver::from_line(&line).unwrap() else {
            panic!("not an open line");
        };
        let rebuilt = back.to_request().unwrap();
        assert_eq!(rebuilt.uri(), request.uri());
        assert_eq!(rebuilt.headers(), request.headers());
        assert_eq!(rebuilt.body(), request.body());
        assert_eq!(back.timeout(), std::time::Duration::from_secs(30));
        let mut smuggled = back.clone();
        smuggled
            .headers
            .push(("Host".into(), "internal.example".into()));
        smuggled
            .headers
            .push(("transfer-encoding".into(), "chunked".into()));
        let rebuilt = smuggled.to_request().unwrap();
        assert!(rebuilt.headers().get("host").is_none());
        assert!(rebuilt.headers().get("transfer-encoding").is_none());
        assert_eq!(rebuilt.headers().len(), request.headers().len());
        let shown = format!("{back:?}");
        assert!(!shown.contains("sk-secret") && !shown.contains("llm.example"));
    }

    #[test]
    fn ready_refused_and_settle_lines_round_trip() {
        let ready = Ready {
            sources_event: "event: sources\ndata: {}\n\n".into(),
            session_id: "s1".into(),
            message_id: 7,
            started_here: true,
        };
        for line in [
            HandOver::Ready(ready.clone()),
            HandOver::Refused(Refusal {
                status: 503,
                body: r#"{"error":{}}"#.into(),
            }),
        ] {
            assert_eq!(HandOver::from_line(&line.to_line()).unwrap(), line);
        }
        let settle = Settle {
            ready,
            answer: "text".into(),
            outcome: Outcome::Discard,
        };
        let json = serde_json::to_string(&settle).unwrap();
        assert!(json.contains(r#""outcome":"discard""#));
        assert_eq!(serde_json::from_str::<Settle>(&json).unwrap(), settle);
    }

    #[test]
    fn tokens_match_only_whole_and_never_when_empty() {
        assert!(token_matches("abc123", "abc123"));
        assert!(!token_matches("abc124", "abc123"));
        assert!(!token_matches("abc12", "abc123"));
        assert!(!token_matches("", ""));
    }
}
