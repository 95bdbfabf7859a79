use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(_request: Request) -> impl IntoResponse {
    Response::builder()
        .status(501)
        .header("content-type", "application/json")
        .body(r#"{"error":{"code":"not_implemented","message":"not implemented yet"}}"#)
        .build()
}
