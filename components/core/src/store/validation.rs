//! Checks on what clients send to the session endpoints; each failure names the field and
//! the limit it broke.

use std::fmt;

use serde::Serialize;

pub const SESSION_ID_MAX_CHARS: usize = 128;
pub const REASON_MAX_CHARS: usize = 200;
pub const COMMENT_MAX_CHARS: usize = 1000;
pub const DEFAULT_PAGE_LIMIT: usize = 50;
pub const MAX_PAGE_LIMIT: usize = 200;

/// A rejected input value: which field, and what it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// 1..=128 characters of `[A-Za-z0-9_-]`: safe in URLs, logs and file names alike.
pub fn valid_session_id(id: &str) -> bool {
    (1..=SESSION_ID_MAX_CHARS).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub fn validate_session_id(id: &str) -> Result<(), FieldError> {
    if valid_session_id(id) {
        Ok(())
    } else {
        Err(FieldError::new(
            "session_id",
            format!("must be 1 to {SESSION_ID_MAX_CHARS} characters of A-Z, a-z, 0-9, '_' or '-'"),
        ))
    }
}

/// A reader's verdict on an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rating {
    Up,
    Down,
}

impl Rating {
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        match value {
            "up" => Ok(Rating::Up),
            "down" => Ok(Rating::Down),
            _ => Err(FieldError::new("rating", r#"must be "up" or "down""#)),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rating::Up => "up",
            Rating::Down => "down",
        }
    }
}

/// Optional short reason for a rating (e.g. "wrong citation"), at most 200 characters.
pub fn validate_reason(reason: Option<&str>) -> Result<(), FieldError> {
    validate_text("reason", reason, REASON_MAX_CHARS)
}

/// Optional free-text comment on a rating, at most 1000 characters.
pub fn validate_comment(comment: Option<&str>) -> Result<(), FieldError> {
    validate_text("comment", comment, COMMENT_MAX_CHARS)
}

/// Limits count characters (Unicode scalar values), not bytes. NUL is refused because
/// PostgreSQL cannot store it in TEXT, and SQLite would, so accepting it would make the two
/// backends disagree.
fn validate_text(
    field: &'static str,
    value: Option<&str>,
    max_chars: usize,
) -> Result<(), FieldError> {
    let Some(value) = value else { return Ok(()) };
    if value.chars().count() > max_chars {
        return Err(FieldError::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    reject_nul(field, value)
}

pub(crate) fn reject_nul(field: &'static str, value: &str) -> Result<(), FieldError> {
    if value.contains('\0') {
        Err(FieldError::new(field, "must not contain NUL characters"))
    } else {
        Ok(())
    }
}

/// The `limit` query parameter of a history page: 1..=200, 50 when absent.
pub fn page_limit(raw: Option<&str>) -> Result<usize, FieldError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_PAGE_LIMIT);
    };
    raw.parse::<usize>()
        .ok()
        .filter(|limit| (1..=MAX_PAGE_LIMIT).contains(limit))
        .ok_or_else(|| {
            FieldError::new(
                "limit",
                format!("must be an integer from 1 to {MAX_PAGE_LIMIT}"),
            )
        })
}

/// The `before` query parameter of a history page: a positive message id, or absent for the
/// newest page.
pub fn page_before(raw: Option<&str>) -> Result<Option<i64>, FieldError> {
    let Some(raw) = raw else { return Ok(None) };
    raw.parse::<i64>()
        .ok()
        .filter(|before| *before > 0)
        .map(Some)
        .ok_or_else(|| FieldError::new("before", "must be a positive integer message id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids() {
        assert!(valid_session_id("demo"));
        assert!(valid_session_id("a-B_9"));
        assert!(valid_session_id(&"x".repeat(128)));
        assert!(!valid_session_id(&"x".repeat(129)));
        assert!(!valid_session_id(""));
        assert!(!valid_session_id("a b"));
        assert!(!valid_session_id("a/b"));
        assert!(!valid_session_id("é"));
        let error = validate_session_id("a;b").unwrap_err();
        assert_eq!(error.field, "session_id");
        assert!(error.message.contains("128"), "{error}");
    }

    #[test]
    fn ratings() {
        assert_eq!(Rating::parse("up").unwrap(), Rating::Up);
        assert_eq!(Rating::parse("down").unwrap().as_str(), "down");
        assert_eq!(Rating::parse("UP").unwrap_err().field, "rating");
        assert!(Rating::parse("").is_err());
    }

    #[test]
    fn reason_and_comment_limits_count_characters() {
        assert!(validate_reason(None).is_ok());
        assert!(validate_reason(Some(&"é".repeat(200))).is_ok());
        let error = validate_reason(Some(&"é".repeat(201))).unwrap_err();
        assert_eq!(error.field, "reason");
        assert!(error.message.contains("200"), "{error}");
        assert!(validate_comment(Some(&"🙂".repeat(1000))).is_ok());
        let error = validate_comment(Some(&"a".repeat(1001))).unwrap_err();
        assert_eq!(error.field, "comment");
        assert!(error.message.contains("1000"), "{error}");
        assert_eq!(validate_comment(Some("a\0b")).unwrap_err().field, "comment");
    }

    #[test]
    fn page_parameters() {
        assert_eq!(page_limit(None).unwrap(), 50);
        assert_eq!(page_limit(Some("1")).unwrap(), 1);
        assert_eq!(page_limit(Some("200")).unwrap(), 200);
        for bad in ["0", "201", "-1", "ten", ""] {
            let error = page_limit(Some(bad)).unwrap_err();
            assert_eq!(error.field, "limit");
            assert!(error.message.contains("200"), "{error}");
        }
        assert_eq!(page_before(None).unwrap(), None);
        assert_eq!(page_before(Some("42")).unwrap(), Some(42));
        for bad in ["0", "-3", "x", "1.5"] {
            assert_eq!(page_before(Some(bad)).unwrap_err().field, "before");
        }
    }
}
