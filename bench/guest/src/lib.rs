//! `GET /ok` -> 200 `ok`, the same answer as the test guest's `/ok`, without its Spin imports.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
async fn handle(_request: Request) -> impl IntoResponse {
    Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body("ok")
        .build()
}
