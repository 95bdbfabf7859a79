//! Log lines a component writes, each tagged with the id the runner gave the request
//! (`x-request-id`), so an operator can join a client's error to its cause. Failures go to
//! stderr, which the runner logs as warnings; routine lines go to stdout, logged as info.
//! Lines never carry session ids or secrets.

use std::sync::OnceLock;

use rag_core::error::request_id_for_log;

/// Each request gets a fresh component instance, so this holds that one request's id.
static REQUEST_ID: OnceLock<String> = OnceLock::new();

/// Remembers the request's `x-request-id` header for every later line; call once, first.
pub fn set_request_id(header: Option<&str>) {
    let _ = REQUEST_ID.set(request_id_for_log(header));
}

fn request_id() -> &'static str {
    REQUEST_ID.get().map_or("-", String::as_str)
}

/// Something failed: stderr.
pub fn failure(component: &str, message: impl std::fmt::Display) {
    eprintln!("{component}: request {}: {message}", request_id());
}

/// Routine progress: stdout.
pub fn info(component: &str, message: impl std::fmt::Display) {
    println!("{component}: request {}: {message}", request_id());
}
