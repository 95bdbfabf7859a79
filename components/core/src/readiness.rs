//! `/health/ready`: which dependencies are configured, how to probe each cheaply, and what the
//! answers mean. The probes never carry a secret into the report.

use serde_json::{json, Map, Value};

use crate::config::{GenerationMode, RetrievalMode, Settings};

/// A dependency the readiness report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    Postgres,
    Qdrant,
    Cohere,
    Llm,
    /// The keyless search index (SQLite FTS5), checked as chat uses it.
    EmbeddedIndex,
    /// The embedded SQLite database holding sessions, when neither PostgreSQL nor the
    /// embedded index (which lives in it) is checked.
    EmbeddedDatabase,
}

impl Dependency {
    pub fn name(self) -> &'static str {
        match self {
            Dependency::Postgres => "postgres",
            Dependency::Qdrant => "qdrant",
            Dependency::Cohere => "cohere",
            Dependency::Llm => "llm",
            Dependency::EmbeddedIndex => "embedded_index",
            Dependency::EmbeddedDatabase => "embedded_database",
        }
    }
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub dependency: Dependency,
    pub up: bool,
    pub latency_ms: u64,
    /// Short, secret-free reason when down (e.g. "HTTP 401", "timeout").
    pub detail: Option<String>,
}

impl Dependency {
    /// The setting holding the credential this dependency checks, if it takes one.
    fn key_setting(self) -> Option<&'static str> {
        match self {
            Dependency::Qdrant => Some("QDRANT_API_KEY"),
            Dependency::Cohere => Some("COHERE_API_KEY"),
            Dependency::Llm => Some("OPENAI_API_KEY"),
            _ => None,
        }
    }
}

/// HTTP probes for the configured upstreams: requests that cost nothing (no tokens, no writes)
/// and need what chat needs. Qdrant's is `GET /collections/{name}` with the key: `/readyz`
/// answers without a key and says nothing of the collection.
pub fn http_probes(settings: &Settings) -> Vec<(Dependency, http::Request<Vec<u8>>)> {
    let mut probes = Vec::new();
    if let Some(url) = &settings.qdrant_url {
        let mut request = http::Request::get(format!(
            "{}/collections/{}",
            url.trim_end_matches('/'),
            settings.qdrant_collection
        ));
        if let Some(key) = &settings.qdrant_api_key {
            request = request.header("api-key", key);
        }
        if let Ok(request) = request.body(Vec::new()) {
            probes.push((Dependency::Qdrant, request));
        }
    }
    if let Some(key) = &settings.cohere_api_key {
        let url = format!(
            "{}/v1/models?page_size=1",
            settings.cohere_base_url.trim_end_matches('/')
        );
        if let Ok(request) = http::Request::get(url)
            .header("authorization", format!("Bearer {key}"))
            .body(Vec::new())
        {
            probes.push((Dependency::Cohere, request));
        }
    }
    if let Some(key) = &settings.openai_api_key {
        let url = format!("{}/models", settings.openai_base_url.trim_end_matches('/'));
        if let Ok(request) = http::Request::get(url)
            .header("authorization", format!("Bearer {key}"))
            .body(Vec::new())
        {
            probes.push((Dependency::Llm, request));
        }
    }
    probes
}

/// The databases chat needs under these settings: PostgreSQL when it holds the sessions, the
/// embedded index when retrieval is by keyword (whatever holds the sessions), and otherwise the
/// embedded database the sessions live in.
pub fn database_checks(settings: &Settings) -> Vec<Dependency> {
    let mut checks = Vec::new();
    if settings.database_url.is_some() {
        checks.push(Dependency::Postgres);
    }
    if settings.retrieval_mode() == RetrievalMode::Keyword {
        checks.push(Dependency::EmbeddedIndex);
    } else if settings.database_url.is_none() {
        checks.push(Dependency::EmbeddedDatabase);
    }
    checks
}

/// Judges a probe's HTTP status; the reason starts with which check failed (`auth:`,
/// `missing collection:`, or the status).
pub fn judge_status(
    dependency: Dependency,
    settings: &Settings,
    status: u16,
) -> Result<(), String> {
    match (status, dependency.key_setting()) {
        (200..=299, _) => Ok(()),
        (401 | 403, Some(setting)) => Err(format!(
            "auth: HTTP {status}: credentials refused; check {setting}"
        )),
        (404, _) if dependency == Dependency::Qdrant => Err(format!(
            "missing collection: {:?} does not exist; run `host ingest` (or check QDRANT_COLLECTION)",
            settings.qdrant_collection
        )),
        _ => Err(format!("HTTP {status}")),
    }
}

/// The reason for a probe that got no answer.
pub fn unreachable(why: &str) -> String {
    format!("unreachable: {why}")
}

/// The whole report and its HTTP status: 200 when every configured dependency is up.
pub fn report(service: &str, version: &str, settings: &Settings, checks: &[Check]) -> (u16, Value) {
    let all_up = checks.iter().all(|c| c.up);
    let mut by_name = Map::new();
    for check in checks {
        let mut entry = Map::new();
        entry.insert("status".into(), json!(if check.up { "up" } else { "down" }));
        entry.insert("latency_ms".into(), json!(check.latency_ms));
        if let Some(detail) = &check.detail {
            entry.insert("detail".into(), json!(detail));
        }
        by_name.insert(check.dependency.name().into(), Value::Object(entry));
    }
    let retrieval = match settings.retrieval_mode() {
        RetrievalMode::Vector => "vector",
        RetrievalMode::Keyword => "keyword",
    };
    let generation = match settings.generation_mode() {
        GenerationMode::Llm => "generated",
        GenerationMode::Extractive => "extractive",
    };
    let sessions = if settings.database_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let keyless = retrieval == "keyword" && generation == "extractive" && sessions == "sqlite";
    let body = json!({
        "status": if all_up { "ready" } else { "unavailable" },
        "service": service,
        "version": version,
        "mode": {
            "retrieval": retrieval,
            "generation": generation,
            "sessions": sessions,
            "keyless": keyless,
        },
        "checks": by_name,
    });
    (if all_up { 200 } else { 503 }, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Settings {
        Settings::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
        .unwrap()
    }

    #[test]
    fn nothing_configured_is_keyless_with_no_http_probes() {
        let s = settings(&[]);
        assert!(http_probes(&s).is_empty());
        let (status, body) = report("svc", "1", &s, &[]);
        assert_eq!(status, 200);
        assert_eq!(body["mode"]["keyless"], true);
    }

    #[test]
    fn probes_cover_each_configured_upstream_and_reports_never_hold_keys() {
        let s = settings(&[
            ("qdrant_url", "https://q.example:6333/"),
            ("qdrant_api_key", "qk-secret"),
            ("cohere_api_key", "ck-secret"),
            ("openai_api_key", "ok-secret"),
        ]);
        let probes = http_probes(&s);
        let names: Vec<_> = probes.iter().map(|(d, _)| d.name()).collect();
        assert_eq!(names, ["qdrant", "cohere", "llm"]);
        assert_eq!(probes[0].1.uri(), "https://q.example:6333/collections/book");
        assert_eq!(probes[0].1.headers()["api-key"], "qk-secret");
        let checks = [
            Check {
                dependency: Dependency::Qdrant,
                up: true,
                latency_ms: 3,
                detail: None,
            },
            Check {
                dependency: Dependency::Llm,
                up: false,
                latency_ms: 9,
                detail: judge_status(Dependency::Llm, &s, 401).err(),
            },
        ];
        let (status, body) = report("svc", "1", &s, &checks);
        assert_eq!(status, 503);
        assert_eq!(body["checks"]["llm"]["status"], "down");
        assert!(!body.to_string().contains("secret"));
    }

    #[test]
    fn database_checks_follow_what_chat_uses() {
        use Dependency::*;
        assert_eq!(database_checks(&settings(&[])), [EmbeddedIndex]);
        assert_eq!(
            database_checks(&settings(&[("database_url", "postgres://db/x")])),
            [Postgres, EmbeddedIndex]
        );
        let vector = [
            ("qdrant_url", "https://q.example"),
            ("cohere_api_key", "ck"),
        ];
        assert_eq!(database_checks(&settings(&vector)), [EmbeddedDatabase]);
        let vector_pg = [vector[0], vector[1], ("database_url", "postgres://db/x")];
        assert_eq!(database_checks(&settings(&vector_pg)), [Postgres]);
    }

    #[test]
    fn statuses_are_judged_naming_the_failed_check() {
        let s = settings(&[("qdrant_collection", "docs")]);
        let judge = |dependency, status| judge_status(dependency, &s, status);
        assert!(judge(Dependency::Qdrant, 200).is_ok());
        let refused = judge(Dependency::Qdrant, 403).unwrap_err();
        assert!(
            refused.starts_with("auth:") && refused.contains("QDRANT_API_KEY"),
            "{refused}"
        );
        assert!(judge(Dependency::Cohere, 401)
            .unwrap_err()
            .contains("COHERE_API_KEY"));
        let missing = judge(Dependency::Qdrant, 404).unwrap_err();
        assert!(
            missing.starts_with("missing collection:") && missing.contains("\"docs\""),
            "{missing}"
        );
        assert_eq!(judge(Dependency::Llm, 404).unwrap_err(), "HTTP 404");
        assert_eq!(judge(Dependency::Qdrant, 503).unwrap_err(), "HTTP 503");
        assert_eq!(
            unreachable("connection failed"),
            "unreachable: connection failed"
        );
    }
}
