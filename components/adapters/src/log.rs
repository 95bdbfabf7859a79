//! Log lines a component writes, each tagged with the id the runner gave the request
//! (`x-request-id`), so an operator can join a client's error to its cause. Failures go to
//! stderr, which the runner logs as warnings; routine lines go to stdout, logged as info.
//! Lines never carry session ids or secrets.

use std::sync::Mutex;

use rag_core::error::request_id_for_log;

/// This request's id. Replaced at the start of every request: an instance may serve several
/// requests one after another when its component opts into instance reuse.
static REQUEST_ID: Mutex<Option<String>> = Mutex::new(None);

/// Remembers the request's `x-request-id` header for every later line; call first.
pub fn set_request_id(header: Option<&str>) {
    *REQUEST_ID.lock().unwrap_or_else(|e| e.into_inner()) = Some(request_id_for_log(header));
}

fn request_id() -> String {
    REQUEST_ID
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_else(|| "-".to_owned())
}

/// Something failed: stderr.
pub fn failure(component: &str, message: impl std::fmt::Display) {
    eprintln!("{component}: request {}: {message}", request_id());
}

/// Routine progress: stdout.
pub fn info(component: &str, message: impl std::fmt::Display) {
    println!("{component}: request {}: {message}", request_id());
}
