//! What operators and orchestrators poll: liveness, readiness, metrics, and the node's name.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;

/// Liveness: the process serves HTTP. Independent of Redis on purpose, so an outage does not
/// get every node restarted.
#[utoipa::path(get, path = "/healthz", tag = "node", responses((status = 200, description = "`ok`: the process serves HTTP")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: takes new joins (not draining, Redis reachable).
#[utoipa::path(get, path = "/readyz", tag = "node", responses(
    (status = 200, description = "`ready`: takes new joins"),
    (status = 503, description = "`draining`, or `redis unreachable`")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let hub = &state.hub;
    if hub.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else if hub.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "redis unreachable").into_response()
    }
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "node", responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.hub.metrics().encode(),
    )
        .into_response()
}

/// JSON for a quick look at the node, used by the chat page: `{"node", "dev_auth"}`.
#[utoipa::path(get, path = "/v1/node", tag = "node", responses((status = 200, description = "the node's name and whether dev auth is on")))]
pub async fn node_info(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "node": state.hub.node_name(),
        "dev_auth": state.insecure_dev_auth,
    }))
}
