//! Misbehaves on request, so the runner's fault handling can be tested on a real component:
//! `/ok`, `/log`, `/trap`, `/loop`, `/alloc`, `/slow?ms=N`, `/outbound?url=U`, `/echo-headers`,
//! `/pg?address=A` (A percent-encoded: opens PostgreSQL and runs `SELECT 1`).
//! For instance reuse: `/count` (how many requests this instance has served, itself included;
//! every answer also carries it in `x-served`), `/keep` (keeps a host resource past the
//! request) and `/grow?mb=N` (keeps N MiB).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

/// Every answer says, in `x-served`, how many requests this instance has served.
fn text(status: u16, body: impl Into<String>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .header("x-served", SERVED.load(Ordering::Relaxed).to_string())
        .body(body.into())
        .build()
}

fn query_param<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.query().split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then_some(value)
    })
}

fn percent_decode(encoded: &str) -> String {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Requests this instance has served: 1 on every request unless the runner reuses instances.
static SERVED: AtomicU32 = AtomicU32::new(0);
/// What `/keep` and `/grow` keep beyond their request.
static KEPT_FIELDS: Mutex<Vec<spin_sdk::http::Fields>> = Mutex::new(Vec::new());
static KEPT_BYTES: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[http_component]
async fn handle(request: Request) -> impl IntoResponse {
    let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
    let path = request
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    match path.as_str() {
        "ok" => text(200, "ok"),
        "count" => text(200, served.to_string()),
        "keep" => {
            KEPT_FIELDS
                .lock()
                .unwrap()
                .push(spin_sdk::http::Fields::new());
            text(200, served.to_string())
        }
        "grow" => {
            let mb: usize = query_param(&request, "mb")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            KEPT_BYTES.lock().unwrap().push(vec![1u8; mb << 20]);
            text(200, served.to_string())
        }
        "log" => {
            println!("a line on stdout");
            eprintln!("a line on stderr");
            text(200, "logged")
        }
        "trap" => panic!("the test guest was asked to trap"),
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 16 * 1024 * 1024]);
                std::hint::black_box(&hoard);
            }
        }
        "hoard-resources" => {
            let count: usize = query_param(&request, "count")
                .and_then(|v| v.parse().ok())
                .unwrap_or(usize::MAX);
            let hoard: Vec<_> = (0..count).map(|_| spin_sdk::http::Fields::new()).collect();
            text(200, hoard.len().to_string())
        }
        "slow" => {
            let ms = query_param(&request, "ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            adapters::timer::sleep(Duration::from_millis(ms)).await;
            text(200, "done")
        }
        "outbound" => {
            let Some(url) = query_param(&request, "url") else {
                return text(400, "url missing");
            };
            let outgoing = http::Request::get(url)
                .body(Vec::new())
                .expect("valid request");
            match adapters::outbound::send(outgoing, Duration::from_secs(5)).await {
                Ok(response) => text(
                    200,
                    format!("upstream answered {}", response.status().as_u16()),
                ),
                Err(failure) => text(502, format!("{failure:?}")),
            }
        }
        "pg" => {
            let Some(address) = query_param(&request, "address").map(percent_decode) else {
                return text(400, "address missing");
            };
            let opened = spin_sdk::pg4::Connection::open(&address);
            match opened.and_then(|db| db.query("SELECT 1", &[])) {
                Ok(_) => text(200, "connected"),
                Err(err) => text(502, format!("{err:?}")),
            }
        }
        "echo-headers" => {
            let mut lines: Vec<String> = request
                .headers()
                .filter(|(name, _)| name.starts_with("spin-"))
                .map(|(name, value)| format!("{name}: {}", value.as_str().unwrap_or("")))
                .collect();
            lines.sort();
            text(200, lines.join("\n"))
        }
        _ => text(404, "unknown test route"),
    }
}
