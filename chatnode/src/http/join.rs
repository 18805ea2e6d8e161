//! The WebSocket join: check the request, authenticate before the upgrade (a bad token never
//! gets a WebSocket), upgrade, then hand the socket to a [`connection`](crate::node::connection).
//!
//! The upgrade is done here rather than by axum's extractor so the connection owns the raw
//! socket: it needs it to finish every close properly (see `node::closing`).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chatfleet_api::{ApiError, ErrorBody};
use chatfleet_wire::RoomId;
use chatfleet_wire::frames::{Member, Role};
use chatfleet_wire::token::AuthError;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use utoipa::IntoParams;

use super::AppState;
use crate::node::connection::{self, Admission, Upgraded};

/// The query of a join; `docs/protocol.md` describes the protocol after the upgrade.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct JoinQuery {
    /// The join token (or `Authorization: Bearer`).
    token: Option<String>,
    /// Resume after this message id.
    since: Option<u64>,
    /// The epoch of `since`, from the `welcome` it came after (at most 64 bytes).
    epoch: Option<String>,
    /// Dev auth only: the user id, display name and role.
    user: Option<String>,
    name: Option<String>,
    role: Option<Role>,
}

/// Longest `epoch` a client may present.
const MAX_EPOCH_BYTES: usize = 64;

/// The smallest WebSocket message limit, whatever --max-message-bytes says.
const MIN_WS_MESSAGE_LIMIT: usize = 64 * 1024;

/// Join a room over WebSocket. Authenticates before the upgrade: a bad token never gets a
/// WebSocket. After the upgrade the frames of `docs/protocol.md` flow.
#[utoipa::path(get, path = "/v1/rooms/{namespace}/{room}/ws", tag = "node",
    params(("namespace" = String, Path), ("room" = String, Path), JoinQuery),
    responses(
        (status = 101, description = "upgraded; the first frame is `welcome`, or an `error` and a close if the join is refused"),
        (status = 400, description = "`bad_room`, `bad_request` (the query), `bad_member` (dev auth), `not_websocket`", body = ErrorBody),
        (status = 401, description = "`token_missing`, `token_expired`, `token_invalid`", body = ErrorBody),
        (status = 403, description = "`token_wrong_room`", body = ErrorBody),
        (status = 426, description = "`websocket_version`: only version 13 is spoken", body = ErrorBody)))]
pub async fn join_room(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<JoinQuery>, QueryRejection>,
    mut request: Request,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return ApiError::from(rejection).into_response(),
    };
    let accept = match handshake_accept(request.headers()) {
        Ok(accept) => accept,
        Err(error) => return error.into_response(),
    };
    let Ok(Path((namespace, room))) = path else {
        return ApiError::new(StatusCode::BAD_REQUEST, "bad_room", "not a room path")
            .into_response();
    };
    let room = match RoomId::new(&namespace, &room) {
        Ok(room) => room,
        Err(error) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "bad_room", error.to_string())
                .into_response();
        }
    };
    let (member, incarnation) = match authenticate(&state, &room, &query, request.headers()) {
        Ok(who) => who,
        Err(Refused::Member(why)) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "bad_member", why).into_response();
        }
        Err(Refused::Auth(error)) => {
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
    if query
        .epoch
        .as_ref()
        .is_some_and(|e| e.len() > MAX_EPOCH_BYTES)
    {
        return ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "epoch is too long")
            .into_response();
    }
    let admission = Admission {
        room,
        member,
        since: query.since,
        epoch: query.epoch,
        incarnation,
    };
    let buffer = state.ws_buffer_bytes;
    // Frames up to this size get a `message_too_large` answer and the connection stays;
    // larger ones are cut off by the WebSocket layer (close 1009) before they take memory.
    let max_message = (state.connection.max_message_bytes * 4 + 4096).max(MIN_WS_MESSAGE_LIMIT);
    let config = WebSocketConfig::default()
        .read_buffer_size(buffer)
        .write_buffer_size(buffer)
        .max_write_buffer_size(state.connection.outbound_queue_bytes.max(buffer * 2))
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "the WebSocket upgrade failed");
                return;
            }
        };
        // The node's accept loop serves plain TCP streams; rooms write into them directly.
        let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => parts,
            Err(_) => {
                tracing::error!("an upgraded connection was not a TCP stream");
                return;
            }
        };
        // Copied out, so hyper's 8 KiB read buffer (of which `read_buf` is a slice) is freed
        // now rather than held for the whole session.
        let hyper::upgrade::Parts { io, read_buf, .. } = parts;
        let upgraded = Upgraded {
            stream: io.into_inner(),
            read_ahead: read_buf.to_vec(),
            config,
        };
        drop(read_buf);
        // A task of its own: this one (and what it held to upgrade) ends here, and an idle
        // session's task holds only the session.
        tokio::spawn(connection::run(
            upgraded,
            state.hub.clone(),
            state.connection.clone(),
            admission,
        ));
    });
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (header::SEC_WEBSOCKET_ACCEPT, accept),
        ],
    )
        .into_response()
}

/// Checks that the request asks for a WebSocket (RFC 6455, section 4.2.1) and returns the
/// `Sec-WebSocket-Accept` to answer with.
fn handshake_accept(headers: &HeaderMap) -> Result<HeaderValue, ApiError> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "not_websocket",
            "this route only takes a WebSocket upgrade (Connection: upgrade, Upgrade: websocket)",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_version",
            "only WebSocket version 13 is spoken (Sec-WebSocket-Version: 13)",
        ));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "not_websocket",
            "Sec-WebSocket-Key is missing",
        ));
    };
    HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "not_websocket", "bad key"))
}

/// Why a join is refused before the upgrade.
enum Refused {
    Auth(AuthError),
    /// Dev auth: the user id or name is out of bounds.
    Member(String),
}

fn authenticate(
    state: &AppState,
    room: &RoomId,
    query: &JoinQuery,
    headers: &HeaderMap,
) -> Result<(Member, Option<String>), Refused> {
    // The scheme is case-insensitive (RFC 7235).
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if let Some(token) = query.token.as_deref().or(bearer) {
        return state
            .hub
            .tokens()
            .verify(token, room)
            .map(|claims| (claims.member(), claims.inc))
            .map_err(Refused::Auth);
    }
    match (&query.user, state.insecure_dev_auth) {
        (Some(user), true) => {
            let member = Member {
                user: user.clone(),
                name: query.name.clone().unwrap_or_else(|| user.clone()),
                role: query.role.unwrap_or(Role::Customer),
            };
            member.check_bounds().map_err(Refused::Member)?;
            Ok((member, None))
        }
        _ => Err(Refused::Auth(AuthError::Missing)),
    }
}
