//! Moderation through the room API: mute a member for a while, lift a mute, remove a member.
//! Each action reaches every node hosting the room, is shown to its members as a
//! `moderation` frame, and holds for members who join later (see `chatfleet_state::members`).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use chatfleet_wire::RoomId;
use chatfleet_wire::clock::unix_millis;
use chatfleet_wire::frames::{Moderation, ModerationAction, bounds};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::extract::ApiPath;
use crate::rooms::{RoomDirectory, room_id};
use crate::{ApiError, ErrorBody};

/// Longest mute: a week. A room that needs longer wants the member removed.
pub const MAX_MUTE_SECONDS: u64 = 7 * 24 * 3600;
/// Longest reason, in bytes: it travels in a frame to every member.
pub const MAX_REASON_BYTES: usize = 512;

/// How long to mute a member, and why.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MuteRequest {
    /// 1 to 604,800 (a week).
    pub seconds: u64,
    /// Shown to the room's members; at most 512 bytes.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Why, shown to the room's members.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReasonQuery {
    /// At most 512 bytes.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The reason given, checked, or `default`.
pub fn reason_or(reason: Option<String>, default: &str) -> Result<String, ApiError> {
    match reason {
        Some(reason) if reason.len() > MAX_REASON_BYTES => Err(ApiError::invalid(format!(
            "the reason is longer than {MAX_REASON_BYTES} bytes"
        ))),
        Some(reason) if !reason.trim().is_empty() => Ok(reason),
        _ => Ok(default.to_owned()),
    }
}

fn target(namespace: &str, room: &str, user: &str) -> Result<RoomId, ApiError> {
    if user.is_empty() || user.len() > bounds::USER_ID_BYTES {
        return Err(ApiError::invalid(format!(
            "the user id must be 1 to {} bytes",
            bounds::USER_ID_BYTES
        )));
    }
    room_id(namespace, room)
}

/// Unmute or remove, as the path and the query ask; the reason defaults to `default`.
async fn act_on_query<D: RoomDirectory>(
    directory: &D,
    (namespace, room, user): (String, String, String),
    query: Result<Query<ReasonQuery>, QueryRejection>,
    action: ModerationAction,
    default: &str,
) -> Result<Json<Moderation>, ApiError> {
    let Query(query) = query?;
    let room = target(&namespace, &room, &user)?;
    let reason = reason_or(query.reason, default)?;
    act(directory, room, user, action, reason, None).await
}

async fn act<D: RoomDirectory>(
    directory: &D,
    room: RoomId,
    user: String,
    action: ModerationAction,
    reason: String,
    until: Option<u64>,
) -> Result<Json<Moderation>, ApiError> {
    let moderation = Moderation {
        room: room.clone(),
        user,
        action,
        reason,
        until,
        ts: unix_millis(),
    };
    directory.moderate(&room, moderation.clone()).await?;
    Ok(Json(moderation))
}

/// Mute a member: its sends are refused with `muted` until the mute ends, on every node,
/// also after it reconnects. A new mute replaces the old one.
#[utoipa::path(post, path = "/v1/rooms/{namespace}/{room}/members/{user}/mute", tag = "moderation",
    security(("api_key" = [])),
    params(("namespace" = String, Path), ("room" = String, Path), ("user" = String, Path)),
    request_body = MuteRequest,
    responses((status = 200, description = "muted; every member got this as a `moderation` frame", body = Moderation),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "`room_closed`", body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn mute<D: RoomDirectory>(
    State(directory): State<Arc<D>>,
    ApiPath((namespace, room, user)): ApiPath<(String, String, String)>,
    body: Result<Json<MuteRequest>, JsonRejection>,
) -> Result<Json<Moderation>, ApiError> {
    let Json(request) = body?;
    let room = target(&namespace, &room, &user)?;
    if !(1..=MAX_MUTE_SECONDS).contains(&request.seconds) {
        return Err(ApiError::invalid(format!(
            "seconds must be between 1 and {MAX_MUTE_SECONDS}"
        )));
    }
    let reason = reason_or(request.reason, "muted by a moderator")?;
    let until = unix_millis() + request.seconds * 1000;
    act(
        &*directory,
        room,
        user,
        ModerationAction::Muted,
        reason,
        Some(until),
    )
    .await
}

/// Lift a member's mute.
#[utoipa::path(delete, path = "/v1/rooms/{namespace}/{room}/members/{user}/mute", tag = "moderation",
    security(("api_key" = [])),
    params(("namespace" = String, Path), ("room" = String, Path), ("user" = String, Path), ReasonQuery),
    responses((status = 200, description = "unmuted", body = Moderation),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "`room_closed`", body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn unmute<D: RoomDirectory>(
    State(directory): State<Arc<D>>,
    ApiPath(path): ApiPath<(String, String, String)>,
    query: Result<Query<ReasonQuery>, QueryRejection>,
) -> Result<Json<Moderation>, ApiError> {
    let action = ModerationAction::Unmuted;
    act_on_query(&*directory, path, query, action, "the mute was lifted").await
}

/// Remove a member: each of its sessions in the room gets an `error` frame `removed` with
/// the reason and is closed (1008), and it may not join the room again. The others see a
/// `moderation` frame and a `presence` left.
#[utoipa::path(delete, path = "/v1/rooms/{namespace}/{room}/members/{user}", tag = "moderation",
    security(("api_key" = [])),
    params(("namespace" = String, Path), ("room" = String, Path), ("user" = String, Path), ReasonQuery),
    responses((status = 200, description = "removed", body = Moderation),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "`room_closed`", body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn remove<D: RoomDirectory>(
    State(directory): State<Arc<D>>,
    ApiPath(path): ApiPath<(String, String, String)>,
    query: Result<Query<ReasonQuery>, QueryRejection>,
) -> Result<Json<Moderation>, ApiError> {
    let action = ModerationAction::Removed;
    act_on_query(&*directory, path, query, action, "removed by a moderator").await
}
