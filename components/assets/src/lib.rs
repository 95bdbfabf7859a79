//! The chat widget's files (`/assets/...`) and the demo book (`/demo`, `/demo/docs/...`), all
//! compiled in by build.rs. Hashed names never change content, so they are cached for a year;
//! everything else is revalidated with its ETag.

use adapters::respond;
use rag_core::error::ApiError;
use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;

struct Asset {
    /// `chat-widget.<hash>.js`: the name pages should use.
    name: &'static str,
    /// `chat-widget.js`: for a site that cannot know the hash; short-cached.
    stable: Option<&'static str>,
    content_type: &'static str,
    etag: &'static str,
    /// Subresource Integrity value (`sha384-...`) of `body`.
    integrity: &'static str,
    body: &'static [u8],
}

struct DemoPage {
    /// Below the base path, e.g. `/demo/docs/locomotion/balance`.
    path: &'static str,
    /// The page `GET /demo` shows.
    chapter: bool,
    etag: &'static str,
    html: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/generated.rs"));

const ALLOW: &str = "GET, OPTIONS";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The unhashed names change meaning on every release: caches keep them five minutes.
const SHORT: &str = "public, max-age=300";
/// Scripts and styles from this origin only, nothing inline; the widget talks to this origin
/// (`connect-src 'self'` covers its WebSocket too).
const DEMO_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

#[http_component]
fn handle(request: Request) -> impl IntoResponse {
    adapters::cors::remember_origin(request.header("origin").and_then(|value| value.as_str()));
    match request.method() {
        Method::Options => return adapters::cors::preflight(ALLOW),
        Method::Get | Method::Head => {}
        _ => return respond::error_allowing(&ApiError::method_not_allowed("GET"), ALLOW),
    }
    let header = |name: &str| {
        request
            .header(name)
            .and_then(|value| value.as_str())
            .unwrap_or("")
    };
    let route = header("spin-component-route");
    let rest = header("spin-path-info");
    let if_none_match = header("if-none-match");
    let base = base_path(header("spin-base-path"));
    if route == "/demo" || (route.is_empty() && request.path().starts_with("/demo")) {
        demo(rest, base, if_none_match)
    } else {
        assets(rest, base, if_none_match)
    }
}

/// The runner's `BASE_PATH` without its trailing `/` ("" at the root). It goes into the demo
/// pages' links, so anything but a plain path is ignored.
fn base_path(raw: &str) -> &str {
    let trimmed = raw.trim_end_matches('/');
    let plain = trimmed
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'));
    if plain && !trimmed.contains("..") {
        trimmed
    } else {
        ""
    }
}

fn assets(rest: &str, base: &str, if_none_match: &str) -> Response {
    let name = rest.trim_start_matches('/');
    if name.is_empty() {
        return manifest(base);
    }
    if let Some(asset) = FILES.iter().find(|a| a.name == name) {
        return asset_response(asset, IMMUTABLE, if_none_match);
    }
    if let Some(asset) = FILES.iter().find(|a| a.stable == Some(name)) {
        return asset_response(asset, SHORT, if_none_match);
    }
    respond::error(&ApiError::not_found(
        "no such asset (GET /assets lists them)",
    ))
}

/// What a site needs to embed the widget with a fixed version: the hashed URLs and their SRI
/// values.
fn manifest(base: &str) -> Response {
    let files: serde_json::Map<String, serde_json::Value> = FILES
        .iter()
        .filter_map(|asset| {
            let stable = asset.stable?;
            Some((
                stable.to_owned(),
                serde_json::json!({
                    "url": format!("{base}/assets/{}", asset.name),
                    "integrity": asset.integrity,
                    "content_type": asset.content_type,
                }),
            ))
        })
        .collect();
    let mut response = respond::json(200, &serde_json::json!({ "files": files }));
    response.set_header("cache-control", "no-cache");
    response.set_header("x-content-type-options", "nosniff");
    response
}

fn asset_response(asset: &Asset, cache: &str, if_none_match: &str) -> Response {
    let builder_status = if etag_matches(if_none_match, asset.etag) {
        304
    } else {
        200
    };
    let mut builder = Response::builder();
    builder
        .status(builder_status)
        .header("etag", asset.etag)
        .header("cache-control", cache)
        .header("x-content-type-options", "nosniff")
        // A site that isolates itself (COEP) may still load the widget from this origin.
        .header("cross-origin-resource-policy", "cross-origin");
    let response = if builder_status == 304 {
        builder.body(Vec::new()).build()
    } else {
        builder
            .header("content-type", asset.content_type)
            .body(asset.body.to_vec())
            .build()
    };
    adapters::cors::apply(response)
}

fn demo(rest: &str, base: &str, if_none_match: &str) -> Response {
    let rest = rest.trim_end_matches('/');
    let page = if rest.is_empty() {
        PAGES.iter().find(|p| p.chapter)
    } else {
        PAGES
            .iter()
            .find(|p| p.path.strip_prefix("/demo") == Some(rest))
    };
    let Some(page) = page else {
        return respond::error(&ApiError::not_found("no such page in the demo book"));
    };
    // The base path is filled in per request, so it is part of the entity tag.
    let etag = format!("{}-{}\"", page.etag.trim_end_matches('"'), base.len());
    let mut builder = Response::builder();
    builder
        .header("etag", etag.as_str())
        .header("cache-control", "no-cache")
        .header("x-content-type-options", "nosniff")
        .header("content-security-policy", DEMO_CSP)
        .header("referrer-policy", "strict-origin-when-cross-origin");
    let response = if etag_matches(if_none_match, &etag) {
        builder.status(304).body(Vec::new()).build()
    } else {
        builder
            .status(200)
            .header("content-type", "text/html; charset=utf-8")
            .body(page.html.replace("{{base}}", base))
            .build()
    };
    adapters::cors::apply(response)
}

/// `If-None-Match` against our strong tag: a list of tags (weak ones compared weakly, as
/// RFC 9110 says for GET) or `*`.
fn etag_matches(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}
