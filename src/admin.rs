//! The admin port: `/metrics` (Prometheus text), `/healthz` (live; never depends on the IdP),
//! `/readyz` (every issuer has a usable key set and shutdown has not begun) and `/version`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use http::header::CONTENT_TYPE;

use crate::decision::Decider;
use crate::live::Live;
use crate::telemetry;

/// Process-wide state the admin endpoints report.
#[derive(Debug)]
pub struct Health {
    draining: tokio::sync::watch::Sender<bool>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            draining: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl Health {
    /// Marks the process as shutting down: readiness turns false at once.
    pub fn start_draining(&self) {
        self.draining.send_replace(true);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// A receiver that turns true when shutdown begins, for health reporters that push.
    pub fn draining(&self) -> tokio::sync::watch::Receiver<bool> {
        self.draining.subscribe()
    }
}

#[derive(Debug, Clone)]
struct AdminState {
    live: Arc<Live>,
    health: Arc<Health>,
}

/// The router of the admin port.
pub fn router(live: Arc<Live>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/version", get(version))
        .with_state(AdminState { live, health })
}

/// Whether the service is ready, with one line per issuer saying why or why not.
pub fn readiness(decider: &Decider, health: &Health) -> (bool, String) {
    let mut ready = !health.is_draining();
    let mut text = String::new();
    if health.is_draining() {
        text.push_str("shutting down\n");
    }
    for (issuer, h) in decider.key_health() {
        ready &= h.usable;
        let state = if h.usable { "ok" } else { "no usable key set" };
        let age = h
            .age
            .map_or_else(|| "-".to_owned(), |a| format!("{}s", a.as_secs()));
        text.push_str(&format!("{issuer}: {state} (keys {}, age {age})\n", h.keys));
    }
    (ready, text)
}

async fn readyz(State(s): State<AdminState>) -> Response {
    let (ready, text) = readiness(&s.live.get(), &s.health);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, text).into_response()
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let decider = s.live.get();
    let (ready, _) = readiness(&decider, &s.health);
    telemetry::record_health(ready, decider.key_health());
    if let Some((entries, bytes)) = decider.verified_cache_size() {
        telemetry::record_verified_cache_size(entries, bytes);
    }
    let mut body = telemetry::metrics_handle().render();
    body.push_str(&telemetry::render_decision_durations());
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn version() -> Response {
    axum::Json(serde_json::json!({
        "version": telemetry::VERSION,
        "commit": telemetry::GIT_COMMIT,
    }))
    .into_response()
}
