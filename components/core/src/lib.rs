//! The chatbot's logic, independent of any host: it builds `http::Request` values and parses
//! `http::Response` values, and speaks SQL through the [`store::Database`] trait, but never
//! opens a socket or a file. Components are thin adapters over this crate; the runner's
//! `ingest` command uses it too.

pub mod chat;
pub mod citations;
pub mod config;
pub mod cors;
#[cfg(feature = "docs")]
pub mod docs;
pub mod embedded_index;
pub mod error;
pub mod extractive;
pub mod keywords;
pub mod pipeline;
pub mod prompt;
pub mod readiness;
pub mod relay;
pub mod retrieval;
pub mod retry;
pub mod search_index;
pub mod sse;
pub mod store;
pub mod upstream;
