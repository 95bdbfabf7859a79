//! Session ids are bearer capabilities: whoever holds one reads, continues, rates and deletes
//! that conversation. So the server alone issues them, from enough randomness that guessing
//! one is hopeless, and the database never holds them: a session is stored under the SHA-256
//! digest of its id.
//!
//! Storing the digest is also what makes lookups safe to time. A B-tree lookup compares the key
//! byte by byte and finishes sooner the earlier it differs, so the time it takes could tell an
//! attacker how much of a guess matches a stored key. Compared keys here are digests: learning
//! a prefix of a digest says nothing about any id that hashes to it, so no constant-time
//! comparison is needed and the database index keeps working as an index.

use sha2::{Digest, Sha256};

/// Characters in an id the server issues: 22 symbols of 64 carry 132 random bits.
pub const SESSION_ID_CHARS: usize = 22;

/// Random bytes [`session_id_from_random`] needs.
pub const SESSION_ID_RANDOM_BYTES: usize = SESSION_ID_CHARS;

const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A new session id from fresh random bytes: each byte picks one URL-safe symbol by its low six
/// bits (256 is a multiple of 64, so every symbol is equally likely). The result is valid under
/// [`valid_session_id`](super::valid_session_id).
pub fn session_id_from_random(random: [u8; SESSION_ID_RANDOM_BYTES]) -> String {
    random
        .iter()
        .map(|byte| char::from(URL_SAFE[usize::from(byte & 63)]))
        .collect()
}

/// The key a session is stored under: the SHA-256 digest of its id, as 64 lower-case hex digits.
pub fn session_key(session_id: &str) -> String {
    Sha256::digest(session_id.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Whether a stored id (from before ids were hashed) has a shape this server issued: 22 URL-safe
/// symbols (the session endpoint) or 32 lower-case hex digits (chat). Any other id was chosen
/// by a client, so anyone could have guessed it.
pub(crate) fn has_issued_shape(id: &str) -> bool {
    let url_safe = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    (id.len() == SESSION_ID_CHARS && id.bytes().all(url_safe))
        || (id.len() == 32 && id.bytes().all(lower_hex))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::valid_session_id;

    #[test]
    fn ids_use_every_url_safe_symbol_and_are_valid() {
        let mut random = [0_u8; SESSION_ID_RANDOM_BYTES];
        for (i, byte) in random.iter_mut().enumerate() {
            *byte = (i * 3) as u8;
        }
        let id = session_id_from_random(random);
        assert_eq!(id.len(), SESSION_ID_CHARS);
        assert!(valid_session_id(&id), "{id}");
        assert!(has_issued_shape(&id));
        assert_eq!(session_id_from_random([0; 22]), "A".repeat(22));
        assert_eq!(session_id_from_random([255; 22]), "_".repeat(22));
        // The low six bits choose: 64 and 0 give the same symbol.
        assert_eq!(session_id_from_random([64; 22]), "A".repeat(22));
    }

    #[test]
    fn keys_are_sha256_hex() {
        assert_eq!(
            session_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(session_key("abd"), session_key("abc"));
        assert_eq!(session_key("x").len(), 64);
    }

    #[test]
    fn issued_shapes() {
        assert!(has_issued_shape("AbC-_0123456789abcdefg"));
        assert!(has_issued_shape("0123456789abcdef0123456789abcdef"));
        for chosen in [
            "demo",
            "reader-7",
            "0123456789ABCDEF0123456789ABCDEF",
            "AbC-_0123456789abcdefgh",
            "AbC-_0123456789abcdef.",
        ] {
            assert!(!has_issued_shape(chosen), "{chosen}");
        }
    }
}
