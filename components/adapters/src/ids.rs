//! Identifiers the server chooses.

use rag_core::store::{session_id_from_random, SESSION_ID_RANDOM_BYTES};
use wasi::random::random::get_random_bytes;

/// A fresh unguessable session id (132 random bits from the host's secure random source, as
/// 22 URL-safe characters).
pub fn new_session_id() -> String {
    let random = get_random_bytes(SESSION_ID_RANDOM_BYTES as u64);
    session_id_from_random(
        random
            .try_into()
            .expect("the host returns as many random bytes as asked for"),
    )
}
