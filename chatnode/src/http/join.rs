//! The WebSocket join: authenticate before the upgrade (a bad token never gets a WebSocket),
//! then hand the socket to a [`connection`](crate::node::connection).

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chatfleet_api::{ApiError, ErrorBody};
use chatfleet_wire::RoomId;
use chatfleet_wire::frames::{Member, Role};
use chatfleet_wire::token::AuthError;
use serde::Deserialize;
use utoipa::IntoParams;

use super::AppState;
use crate::node::connection::{self, Admission};

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
pub async fn join_room(
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
    let max_message = (state.connection.max_message_bytes * 4 + 4096).max(MIN_WS_MESSAGE_LIMIT);
    upgrade
        .read_buffer_size(buffer)
        .write_buffer_size(buffer)
        .max_write_buffer_size(state.connection.outbound_queue_bytes.max(buffer * 2))
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| {
            connection::run(
                socket,
                state.hub.clone(),
                state.connection.clone(),
                admission,
            )
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
