//! Prometheus metrics: requests by route and status, latency, instantiation time, in-flight.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once; later calls return the same handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed (a test harness); keep ours anyway.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

pub fn request_done(route: &str, status: StatusCode, started: Instant) {
    let labels = [
        ("route", route.to_string()),
        ("status", status.as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route.to_string())
        .record(started.elapsed().as_secs_f64());
}

pub fn instantiated(component: &str, took: Duration) {
    metrics::histogram!("wasm_instantiation_seconds", "component" => component.to_string())
        .record(took.as_secs_f64());
}

/// A request served by an instance kept from an earlier request (opt-in instance reuse), so
/// nothing was instantiated for it.
pub fn reused(component: &str) {
    metrics::counter!("wasm_instance_reuses_total", "component" => component.to_string())
        .increment(1);
}

pub fn in_flight(count: usize) {
    metrics::gauge!("http_requests_in_flight").set(count as f64);
}

pub fn websocket_opened() {
    metrics::gauge!("websocket_connections_open").increment(1.0);
}

pub fn websocket_closed() {
    metrics::gauge!("websocket_connections_open").decrement(1.0);
}

/// One ask over the WebSocket, by how it ended: `done`, `error`, `cancelled`, or `abandoned`
/// (the connection closed while it streamed).
pub fn websocket_ask(outcome: &'static str) {
    metrics::counter!("websocket_asks_total", "outcome" => outcome).increment(1);
}

/// Streamed answers the runner is relaying now (`crate::stream_relay`).
pub fn stream_relays_open(count: usize) {
    metrics::gauge!("stream_relays_open").set(count as f64);
}

/// How long storing a relayed answer's ending took (the call back into the component), by
/// outcome; a streamed answer's last event waits for it.
pub fn stream_relay_settled(outcome: &'static str, took: Duration) {
    metrics::histogram!("stream_relay_settle_seconds", "outcome" => outcome)
        .record(took.as_secs_f64());
}
