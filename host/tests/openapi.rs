//! openapi.json against what is served: every spin.toml route is documented, every documented
//! operation is answered by the running keyless server, and every real response (status,
//! content type, body, streamed events) is one the document describes.

mod support;

use std::collections::BTreeSet;

use host::manifest::App;
use host::routes::{RoutePattern, RouteTable};
use rag_core::sse::SseParser;
use reqwest::Method;
use serde_json::{json, Value};
use support::{start, workspace, Options, Server};

fn document() -> Value {
    let text = std::fs::read_to_string(workspace().join("openapi.json")).unwrap();
    serde_json::from_str(&text).expect("openapi.json is JSON")
}

/// A documented path with its `{parameters}` filled in, as a router sees a request.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "1"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "options"];

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                operations.insert((path.clone(), method.to_owned()));
            }
        }
    }
    operations
}

/// Follows a local `$ref` (`#/a/b`) to what it names.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let target = doc
                .pointer(reference.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("{reference} names nothing"));
            resolve(doc, target)
        }
        None => value,
    }
}

fn assert_valid(doc: &Value, schema: &Value, instance: &Value, what: &str) {
    let root = json!({"allOf": [schema], "components": doc["components"]});
    let validator = jsonschema::validator_for(&root).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what}: {instance} {errors:#?}");
}

#[test]
fn every_spin_route_is_documented_and_every_documented_path_is_routed() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
    let app = App::load(&workspace().join("spin.toml")).unwrap();
    let patterns: Vec<(RoutePattern, String)> = app
        .manifest
        .trigger
        .http
        .iter()
        .map(|t| (RoutePattern::parse(&t.route).unwrap(), t.component.clone()))
        .collect();
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    for (pattern, component) in &patterns {
        assert!(
            paths.iter().any(|p| p.as_str() == pattern.base()),
            "route {} ({component}) is not documented at {}",
            pattern.raw(),
            pattern.base()
        );
    }
    let table = RouteTable::new(patterns).unwrap();
    for path in paths {
        assert!(
            table.find(&concrete(path)).is_some(),
            "{path} is documented but no spin.toml route serves it"
        );
    }
}

#[test]
fn every_reference_resolves_and_every_schema_compiles() {
    let doc = document();
    fn walk(doc: &Value, value: &Value) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(_)) = map.get("$ref") {
                    resolve(doc, value);
                }
                map.values().for_each(|v| walk(doc, v));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(doc, v)),
            _ => {}
        }
    }
    walk(&doc, &doc);
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        let root = json!({"allOf": [schema], "components": doc["components"]});
        assert!(
            jsonschema::validator_for(&root).is_ok(),
            "schema {name} does not compile"
        );
    }
}

/// Sends requests to the running server and checks each answer against the document,
/// remembering which documented operations were exercised.
struct Checker {
    doc: Value,
    server: Server,
    client: reqwest::Client,
    exercised: BTreeSet<(String, String)>,
}

impl Checker {
    /// Sends `method path` (`template` is its documented form), checks the answer and
    /// returns its status and body (JSON, or the text of an event stream).
    async fn call(
        &mut self,
        method: Method,
        template: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.server.base_url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
        let allow = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        let what = format!("{method} {path} -> {status}");

        let method_key = method.as_str().to_ascii_lowercase();
        let operation = self.doc["paths"][template][&method_key].clone();
        if !operation.is_object() {
            // A method the path does not offer: 405 with the error body, naming what it offers.
            assert_eq!(status, 405, "{what}: {text}");
            assert_eq!(
                allow.as_deref(),
                Some(self.allow(template).as_str()),
                "{what}"
            );
            let value: Value = serde_json::from_str(&text).unwrap();
            let schema = json!({"$ref": "#/components/schemas/Error"});
            assert_valid(&self.doc, &schema, &value, &what);
            return (status, value);
        }
        if method == Method::OPTIONS {
            assert_eq!(
                allow.as_deref(),
                Some(self.allow(template).as_str()),
                "{what}"
            );
        }
        self.exercised.insert((template.to_owned(), method_key));
        let documented = operation["responses"]
            .get(status.to_string())
            .or_else(|| operation["responses"].get("default"))
            .unwrap_or_else(|| panic!("{what}: status not documented: {text}"))
            .clone();
        let documented = resolve(&self.doc, &documented).clone();
        let Some(content) = documented.get("content") else {
            assert!(text.is_empty(), "{what}: documented without a body: {text}");
            return (status, Value::Null);
        };
        let content_type =
            content_type.unwrap_or_else(|| panic!("{what}: a body without a content type"));
        let media = content
            .get(&content_type)
            .unwrap_or_else(|| panic!("{what}: {content_type} not documented"));
        if content_type == "text/event-stream" {
            self.check_events(media, &text, &what);
            return (status, Value::String(text));
        }
        if content_type != "application/json" {
            // Files (the widget's script and stylesheet, the demo page) are documented as text.
            assert_eq!(media["schema"]["type"], "string", "{what}");
            return (status, Value::String(text));
        }
        let value: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
        assert_valid(&self.doc, &media["schema"], &value, &what);
        (status, value)
    }

    /// `Allow` as the document has it: the path's methods, in a fixed order.
    fn allow(&self, template: &str) -> String {
        let item = &self.doc["paths"][template];
        METHODS
            .iter()
            .filter(|method| item.get(**method).is_some())
            .map(|method| method.to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Each event must match the stream's schema, and its `data` the `contentSchema` of the
    /// branch its name selects.
    fn check_events(&self, media: &Value, text: &str, what: &str) {
        let schema = resolve(&self.doc, &media["schema"]);
        let mut parser = SseParser::new();
        let mut events = parser.feed(text.as_bytes());
        events.extend(parser.finish());
        assert!(!events.is_empty(), "{what}: no events");
        for event in &events {
            let name = event.event.as_deref().unwrap_or("message");
            let what = format!("{what} event {name}");
            let framed = json!({"event": name, "data": event.data});
            assert_valid(&self.doc, schema, &framed, &what);
            let branch = schema["oneOf"]
                .as_array()
                .unwrap()
                .iter()
                .find(|branch| branch["properties"]["event"]["const"] == name)
                .unwrap_or_else(|| panic!("{what}: not documented"));
            let data: Value = serde_json::from_str(&event.data).unwrap();
            let content = &branch["properties"]["data"]["contentSchema"];
            assert_valid(&self.doc, content, &data, &what);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn real_responses_match_the_document() {
    let data_dir = support::data_dir_with_book_index().await;
    let server = start(Options {
        data_dir: Some(data_dir),
        variables: &[("allowed_origins", "https://reader.example")],
        // The per-client budget would answer 429 (documented) to this one busy client.
        args: &["--rate-limit-per-minute", "0"],
        ..Options::default()
    })
    .await;
    let mut c = Checker {
        doc: document(),
        server,
        client: reqwest::Client::new(),
        exercised: BTreeSet::new(),
    };
    let (get, post, delete, options) = (Method::GET, Method::POST, Method::DELETE, Method::OPTIONS);

    assert_eq!(
        c.call(get.clone(), "/health", "/health", None, &[]).await.0,
        200
    );
    c.call(post.clone(), "/health", "/health", None, &[]).await;
    c.call(get.clone(), "/health/ready", "/health/ready", None, &[])
        .await;
    let (status, served) = c
        .call(get.clone(), "/openapi.json", "/openapi.json", None, &[])
        .await;
    assert_eq!(status, 200);
    assert_eq!(served, document(), "the served document is the file");
    assert_eq!(
        c.call(delete.clone(), "/openapi.json", "/openapi.json", None, &[])
            .await
            .0,
        405
    );

    let (status, manifest) = c.call(get.clone(), "/assets", "/assets", None, &[]).await;
    assert_eq!(status, 200);
    let script = manifest["files"]["chat-widget.js"]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let file = "/assets/{file}";
    let (status, body) = c.call(get.clone(), file, &script, None, &[]).await;
    assert_eq!(status, 200);
    assert!(body.as_str().unwrap().contains("data-api-url"));
    let etag = c
        .client
        .get(format!("{}{script}", c.server.base_url))
        .send()
        .await
        .unwrap()
        .headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    let revalidate = [("if-none-match", etag.as_str())];
    assert_eq!(
        c.call(get.clone(), file, &script, None, &revalidate)
            .await
            .0,
        304
    );
    let missing = "/assets/chat-widget.0000.js";
    assert_eq!(c.call(get.clone(), file, missing, None, &[]).await.0, 404);
    let (status, page) = c.call(get.clone(), "/demo", "/demo", None, &[]).await;
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap().contains("Zero Moment Point"));
    assert_eq!(
        c.call(post.clone(), "/demo", "/demo", None, &[]).await.0,
        405
    );

    let question = json!({"query": "What is the zero moment point?"});
    let (status, answer) = c
        .call(post.clone(), "/chat", "/chat", Some(question.clone()), &[])
        .await;
    assert_eq!(status, 200, "{answer}");
    let session_id = answer["session_id"].as_str().unwrap().to_owned();
    let message_id = answer["message_id"].as_i64().unwrap();
    let mut streamed = question.clone();
    streamed["session_id"] = json!(session_id);
    streamed["stream"] = json!(true);
    let (status, events) = c
        .call(post.clone(), "/chat", "/chat", Some(streamed), &[])
        .await;
    assert_eq!(status, 200);
    assert!(events.as_str().unwrap().contains("event: done"), "{events}");
    let (status, _) = c
        .call(
            post.clone(),
            "/chat",
            "/chat",
            Some(question.clone()),
            &[("accept", "text/event-stream")],
        )
        .await;
    assert_eq!(status, 200);
    for (bad, field) in [
        (json!({"query": ""}), "query"),
        (json!({"query": "q", "top_k": 99}), "top_k"),
        (
            json!({"query": "q", "session_id": "not valid!"}),
            "session_id",
        ),
    ] {
        let (status, error) = c.call(post.clone(), "/chat", "/chat", Some(bad), &[]).await;
        assert_eq!(
            (status, error["error"]["field"].as_str()),
            (400, Some(field))
        );
    }
    let unknown = json!({"query": "q", "session_id": "AAAAAAAAAAAAAAAAAAAAAA"});
    assert_eq!(
        c.call(post.clone(), "/chat", "/chat", Some(unknown), &[])
            .await
            .0,
        404
    );
    c.call(get.clone(), "/chat", "/chat", None, &[]).await;

    let (status, created) = c
        .call(post.clone(), "/session", "/session", None, &[])
        .await;
    assert_eq!(status, 201);
    let empty_session = created["session_id"].as_str().unwrap().to_owned();
    let item = "/session/{session_id}";
    let history = format!("/session/{session_id}");
    let (status, page) = c
        .call(get.clone(), item, &format!("{history}?limit=1"), None, &[])
        .await;
    assert_eq!(status, 200);
    let before = page["next_before"].as_i64().unwrap();
    c.call(
        get.clone(),
        item,
        &format!("{history}?before={before}"),
        None,
        &[],
    )
    .await;
    c.call(
        get.clone(),
        item,
        &format!("/session/{empty_session}"),
        None,
        &[],
    )
    .await;
    assert_eq!(
        c.call(get.clone(), item, &format!("{history}?limit=0"), None, &[])
            .await
            .0,
        400
    );
    let feedback = "/session/{session_id}/messages/{message_id}/feedback";
    let rate = format!("{history}/messages/{message_id}/feedback");
    let rating = json!({"rating": "up", "reason": "clear", "comment": null});
    assert_eq!(
        c.call(post.clone(), feedback, &rate, Some(rating), &[])
            .await
            .0,
        204
    );
    let (status, page) = c.call(get.clone(), item, &history, None, &[]).await;
    assert_eq!(status, 200);
    assert!(page["messages"].to_string().contains("rated_at"), "{page}");
    let bad_rating = json!({"rating": "sideways"});
    assert_eq!(
        c.call(post.clone(), feedback, &rate, Some(bad_rating), &[])
            .await
            .0,
        400
    );
    let no_answer = format!("{history}/messages/999999/feedback");
    let rating = json!({"rating": "down"});
    assert_eq!(
        c.call(post.clone(), feedback, &no_answer, Some(rating), &[])
            .await
            .0,
        404
    );
    assert_eq!(
        c.call(delete.clone(), item, &history, None, &[]).await.0,
        204
    );
    assert_eq!(
        c.call(delete.clone(), item, &history, None, &[]).await.0,
        404
    );
    c.call(Method::PUT, item, &history, None, &[]).await;

    let origin = [
        ("origin", "https://reader.example"),
        ("access-control-request-method", "POST"),
    ];
    let paths: Vec<String> = c.doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    for template in paths {
        let (status, _) = c
            .call(
                options.clone(),
                &template,
                &concrete(&template),
                None,
                &origin,
            )
            .await;
        assert_eq!(status, 204, "OPTIONS {template}");
    }

    let missing: Vec<_> = operations(&c.doc)
        .difference(&c.exercised)
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "documented but never exercised: {missing:?}"
    );
}
