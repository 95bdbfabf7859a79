//! Cross-origin requests: which origins a browser may call the API from, and the headers every
//! answer carries for them. The components apply it (through `adapters::cors`), so `spin up`
//! and the runner behave alike; the allow-list is the `allowed_origins` variable.

/// Methods the API serves, as a preflight answers them.
pub const ALLOW_METHODS: &str = "GET, POST, DELETE, OPTIONS";
/// Request headers a browser may send.
pub const ALLOW_HEADERS: &str = "content-type, accept, authorization, x-request-id";
/// Response headers a page may read besides the simple ones: the request id to quote in a
/// report, and how long a rate-limited page should wait.
pub const EXPOSE_HEADERS: &str = "x-request-id, retry-after";
/// How long a browser may reuse a preflight answer.
pub const MAX_AGE_SECS: u32 = 600;

/// The `allowed_origins` setting: comma-separated origins, or `*` for any (only when written
/// out: empty allows none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    None,
    Any,
    List(Vec<String>),
}

impl AllowedOrigins {
    pub fn parse(setting: &str) -> Self {
        let origins: Vec<String> = setting
            .split(',')
            .map(|origin| origin.trim().trim_end_matches('/'))
            .filter(|origin| !origin.is_empty())
            .map(str::to_owned)
            .collect();
        if origins.iter().any(|origin| origin == "*") {
            AllowedOrigins::Any
        } else if origins.is_empty() {
            AllowedOrigins::None
        } else {
            AllowedOrigins::List(origins)
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if allowed.
    fn allow(&self, origin: &str) -> Option<String> {
        match self {
            AllowedOrigins::None => None,
            AllowedOrigins::Any => Some("*".to_owned()),
            AllowedOrigins::List(list) => list
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin))
                .then(|| origin.to_owned()),
        }
    }
}

/// The CORS headers of an answer to a request carrying `origin` (its `Origin` header);
/// `preflight` for the answer to `OPTIONS`. A list makes every answer depend on `Origin`, so
/// caches are told (`Vary: Origin`) even when this origin is refused.
pub fn headers(
    allowed: &AllowedOrigins,
    origin: Option<&str>,
    preflight: bool,
) -> Vec<(&'static str, String)> {
    let mut headers = Vec::new();
    if let AllowedOrigins::List(_) = allowed {
        headers.push(("vary", "origin".to_owned()));
    }
    let Some(allow) = origin.and_then(|origin| allowed.allow(origin)) else {
        return headers;
    };
    headers.push(("access-control-allow-origin", allow));
    if preflight {
        headers.push(("access-control-allow-methods", ALLOW_METHODS.to_owned()));
        headers.push(("access-control-allow-headers", ALLOW_HEADERS.to_owned()));
        headers.push(("access-control-max-age", MAX_AGE_SECS.to_string()));
    } else {
        headers.push(("access-control-expose-headers", EXPOSE_HEADERS.to_owned()));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(headers: &[(&'static str, String)]) -> Vec<&'static str> {
        headers.iter().map(|(name, _)| *name).collect()
    }

    fn value<'a>(headers: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_setting_is_a_list_and_star_only_when_written() {
        assert_eq!(AllowedOrigins::parse(""), AllowedOrigins::None);
        assert_eq!(AllowedOrigins::parse(" , "), AllowedOrigins::None);
        assert_eq!(
            AllowedOrigins::parse("https://a.example, *"),
            AllowedOrigins::Any
        );
        assert_eq!(
            AllowedOrigins::parse("https://a.example/, http://localhost:3000"),
            AllowedOrigins::List(vec![
                "https://a.example".into(),
                "http://localhost:3000".into()
            ])
        );
    }

    #[test]
    fn listed_origins_are_echoed_and_others_get_nothing_but_vary() {
        let allowed = AllowedOrigins::parse("https://book.example");
        let preflight = headers(&allowed, Some("https://book.example"), true);
        assert_eq!(
            value(&preflight, "access-control-allow-origin"),
            Some("https://book.example")
        );
        assert_eq!(
            value(&preflight, "access-control-allow-methods"),
            Some(ALLOW_METHODS)
        );
        assert_eq!(value(&preflight, "access-control-max-age"), Some("600"));
        assert_eq!(value(&preflight, "vary"), Some("origin"));
        let answer = headers(&allowed, Some("https://book.example"), false);
        assert_eq!(
            value(&answer, "access-control-expose-headers"),
            Some("x-request-id, retry-after")
        );
        assert!(value(&answer, "access-control-allow-methods").is_none());
        for refused in [Some("https://evil.example"), Some("null"), None] {
            assert_eq!(names(&headers(&allowed, refused, true)), ["vary"]);
        }
    }

    #[test]
    fn any_origin_only_when_set_and_none_by_default() {
        let any = headers(&AllowedOrigins::Any, Some("https://x.example"), false);
        assert_eq!(value(&any, "access-control-allow-origin"), Some("*"));
        assert!(value(&any, "vary").is_none());
        assert!(headers(&AllowedOrigins::None, Some("https://x.example"), true).is_empty());
    }
}
