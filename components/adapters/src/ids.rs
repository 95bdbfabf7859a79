//! Identifiers the server chooses.

use wasi::random::random::get_random_bytes;

const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Characters in a new session id: 22 of 64 symbols carry 132 random bits, more than a UUID.
pub const SESSION_ID_CHARS: usize = 22;

/// A fresh unguessable session id of URL-safe characters, valid under
/// [`rag_core::store::valid_session_id`]. Each random byte picks one symbol by its low six
/// bits; 256 is a multiple of 64, so every symbol is equally likely.
pub fn new_session_id() -> String {
    get_random_bytes(SESSION_ID_CHARS as u64)
        .into_iter()
        .map(|byte| char::from(URL_SAFE[usize::from(byte & 63)]))
        .collect()
}
