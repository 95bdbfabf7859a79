//! The thin layer between `rag-core` and Spin's guest APIs, shared by every component:
//! sending the `http::Request`s core builds, timers, the databases behind
//! [`rag_core::store::Database`], log lines, CORS, and turning core's errors into responses.

pub mod cors;
pub mod db;
pub mod ids;
pub mod log;
pub mod outbound;
pub mod respond;
pub mod timer;
