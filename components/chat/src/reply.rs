//! Responses written through the `ResponseOutparam`: whole JSON bodies, and Server-Sent
//! Events written as they are produced.

use std::pin::Pin;

use futures::{Sink, SinkExt};
use rag_core::error::ApiError;
use rag_core::relay;
use spin_sdk::http::{Fields, OutgoingResponse, ResponseOutparam};
use wasi::io::streams::StreamError;

/// A response with `headers` and this request's CORS headers.
fn response(status: u16, headers: &[(&str, &str)]) -> OutgoingResponse {
    let cors = adapters::cors::headers(false);
    let entries: Vec<(String, Vec<u8>)> = headers
        .iter()
        .copied()
        .chain(cors.iter().map(|(name, value)| (*name, value.as_str())))
        .map(|(name, value)| (name.to_owned(), value.as_bytes().to_vec()))
        .collect();
    let fields = Fields::from_list(&entries).expect("static header names and values are valid");
    let response = OutgoingResponse::new(fields);
    response
        .set_status_code(status)
        .expect("a status code from 100 to 599");
    response
}

/// A whole JSON body.
pub async fn json(out: ResponseOutparam, status: u16, body: Vec<u8>) {
    let response = response(status, &[("content-type", "application/json")]);
    if let Err(error) = out.set_with_body(response, body).await {
        adapters::log::failure(
            "chat",
            format_args!("could not write the response: {error:?}"),
        );
    }
}

/// A status without a body.
pub async fn empty(out: ResponseOutparam, status: u16) {
    let _ = out.set_with_body(response(status, &[]), Vec::new()).await;
}

/// The methods `/chat` answers.
const ALLOW: &str = "POST, OPTIONS";

/// `{"error":{...}}` with the error's status (and `Allow` for a wrong method).
pub async fn error(out: ResponseOutparam, error: &ApiError) {
    if error.status == 405 {
        let response = response(
            405,
            &[("content-type", "application/json"), ("allow", ALLOW)],
        );
        let _ = out.set_with_body(response, error.to_json_body()).await;
        return;
    }
    json(out, error.status, error.to_json_body()).await;
}

/// The answer to `OPTIONS` (a CORS preflight).
pub async fn preflight(out: ResponseOutparam) {
    let answer = adapters::cors::preflight(ALLOW);
    let entries: Vec<(String, Vec<u8>)> = answer
        .headers()
        .map(|(name, value)| (name.to_owned(), value.as_bytes().to_vec()))
        .collect();
    let fields = Fields::from_list(&entries).expect("header names and values are valid");
    let response = OutgoingResponse::new(fields);
    response
        .set_status_code(*answer.status())
        .expect("a status code from 100 to 599");
    let _ = out.set_with_body(response, Vec::new()).await;
}

type BodySink = Pin<Box<dyn Sink<Vec<u8>, Error = StreamError>>>;

const STREAM_HEADERS: [(&str, &str); 3] = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    // Reverse proxies (nginx and those modelled on it) otherwise buffer the stream.
    ("x-accel-buffering", "no"),
];

/// An open `text/event-stream` response. Each event is flushed to the client as it is sent.
pub struct EventStream {
    body: Option<BodySink>,
}

impl EventStream {
    /// Sends the 200 status and headers; the body follows event by event.
    pub fn open(out: ResponseOutparam) -> Self {
        Self::with_headers(out, &STREAM_HEADERS)
    }

    /// The same head, marked for the runner's relay; the body is the hand-over's lines
    /// (`rag_core::relay`), which the runner reads and does not pass on.
    pub fn open_relayed(out: ResponseOutparam) -> Self {
        let [a, b, c] = STREAM_HEADERS;
        Self::with_headers(out, &[a, b, c, (relay::RELAY_HEADER, relay::OPENAI_CHAT)])
    }

    fn with_headers(out: ResponseOutparam, headers: &[(&str, &str)]) -> Self {
        let response = response(200, headers);
        let body: BodySink = Box::pin(response.take_body());
        out.set(response);
        Self { body: Some(body) }
    }

    /// Writes one encoded event; `false` once the client has gone away.
    pub async fn send(&mut self, event: Vec<u8>) -> bool {
        let Some(body) = self.body.as_mut() else {
            return false;
        };
        if body.send(event).await.is_err() {
            self.body = None;
            return false;
        }
        true
    }
}
