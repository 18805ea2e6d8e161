//! The node's HTTP surface on one port: the room WebSocket, the room API, the chat page and
//! the operational endpoints.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::admin_api;
use crate::api::{self, ApiError, ApiKeys, ErrorBody};
use crate::auth::AuthError;
use crate::directory::NodeDirectory;
use crate::hub::Hub;
use crate::node_admin::NodeAdmin;
use crate::openapi;
use crate::session::{self, Admission, SessionLimits};
use crate::wire::RoomId;
use crate::wire::frames::{Member, Role};

/// What the WebSocket handler needs besides the hub.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub session: SessionLimits,
    pub ws_buffer_bytes: usize,
    pub insecure_dev_auth: bool,
}

pub fn router(state: AppState, api_keys: ApiKeys) -> Router {
    let directory = Arc::new(NodeDirectory::new(state.hub.clone()));
    let admin = Arc::new(NodeAdmin::new(state.hub.clone()));
    let app = Router::new()
        .route("/", get(chat_page))
        .route("/v1/rooms/{namespace}/{room}/ws", get(join_room))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/node", get(node_info))
        .with_state(state)
        .merge(api::router(directory, api_keys.clone()))
        .merge(admin_api::router(admin, api_keys))
        .merge(openapi::router(openapi::node_document()));
    api::with_json_fallbacks(app)
}

const CHAT_PAGE: &str = include_str!("../web/index.html");

/// The chat page: join with a token link (or a name under dev auth), talk, see who is there.
#[utoipa::path(get, path = "/", tag = "node", responses((status = 200, description = "HTML", content_type = "text/html")))]
pub(crate) async fn chat_page() -> Html<&'static str> {
    Html(CHAT_PAGE)
}

/// Liveness: the process serves HTTP. Independent of Redis on purpose, so an outage does not
/// get every node restarted.
#[utoipa::path(get, path = "/healthz", tag = "node", responses((status = 200, description = "`ok`: the process serves HTTP")))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: takes new joins (not draining, Redis reachable).
#[utoipa::path(get, path = "/readyz", tag = "node", responses(
    (status = 200, description = "`ready`: takes new joins"),
    (status = 503, description = "`draining`, or `redis unreachable`")))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
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
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.hub.metrics().encode(),
    )
        .into_response()
}

/// The query of a join; `docs/protocol.md` describes the protocol after the upgrade.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct JoinQuery {
    /// The join token (or `Authorization: Bearer`).
    token: Option<String>,
    /// Resume after this message id.
    since: Option<u64>,
    /// Dev auth only: the user id, display name and role.
    user: Option<String>,
    name: Option<String>,
    role: Option<Role>,
}

/// The smallest WebSocket message limit, whatever --max-message-bytes says.
const MIN_WS_MESSAGE_LIMIT: usize = 64 * 1024;

/// Join a room over WebSocket. Authenticates before the upgrade: a bad token never gets a
/// WebSocket. After the upgrade the frames of `docs/protocol.md` flow.
#[utoipa::path(get, path = "/v1/rooms/{namespace}/{room}/ws", tag = "node",
    params(("namespace" = String, Path), ("room" = String, Path), JoinQuery),
    responses(
        (status = 101, description = "upgraded; the first frame is `welcome`, or an `error` and a close if the join is refused"),
        (status = 400, description = "`bad_room`", body = ErrorBody),
        (status = 401, description = "`token_missing`, `token_expired`, `token_invalid`", body = ErrorBody),
        (status = 403, description = "`token_wrong_room`", body = ErrorBody)))]
pub(crate) async fn join_room(
    State(state): State<AppState>,
    Path((namespace, room)): Path<(String, String)>,
    Query(query): Query<JoinQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let room = match RoomId::new(&namespace, &room) {
        Ok(room) => room,
        Err(error) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "bad_room", error.to_string())
                .into_response();
        }
    };
    let member = match authenticate(&state, &room, &query, &headers) {
        Ok(member) => member,
        Err(error) => {
            let status = match error {
                AuthError::WrongRoom { .. } => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            let code = match error {
                AuthError::Missing => "token_missing",
                AuthError::Expired => "token_expired",
                AuthError::Invalid(_) => "token_invalid",
                AuthError::WrongRoom { .. } => "token_wrong_room",
            };
            return ApiError::new(status, code, error.to_string()).into_response();
        }
    };
    let admission = Admission {
        room,
        member,
        since: query.since,
    };
    let buffer = state.ws_buffer_bytes;
    // Frames up to this size get a `message_too_large` answer and the connection stays;
    // larger ones are cut off by the WebSocket layer (close 1009) before they take memory.
    let max_message = (state.session.max_message_bytes * 4 + 4096).max(MIN_WS_MESSAGE_LIMIT);
    upgrade
        .read_buffer_size(buffer)
        .write_buffer_size(buffer)
        .max_write_buffer_size(state.session.outbound_queue_bytes.max(buffer * 2))
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| {
            session::run(socket, state.hub.clone(), state.session.clone(), admission)
        })
}

fn authenticate(
    state: &AppState,
    room: &RoomId,
    query: &JoinQuery,
    headers: &HeaderMap,
) -> Result<Member, AuthError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(token) = query.token.as_deref().or(bearer) {
        return state
            .hub
            .tokens()
            .verify(token, room)
            .map(|claims| claims.member());
    }
    match (&query.user, state.insecure_dev_auth) {
        (Some(user), true) if !user.is_empty() && user.len() <= 128 => Ok(Member {
            user: user.clone(),
            name: query.name.clone().unwrap_or_else(|| user.clone()),
            role: query.role.unwrap_or(Role::Customer),
        }),
        _ => Err(AuthError::Missing),
    }
}

/// JSON for a quick look at the node, used by the chat page: `{"node", "dev_auth"}`.
#[utoipa::path(get, path = "/v1/node", tag = "node", responses((status = 200, description = "the node's name and whether dev auth is on")))]
pub async fn node_info(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "node": state.hub.node_name(),
        "dev_auth": state.insecure_dev_auth,
    }))
}
