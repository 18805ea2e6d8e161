//! The room API: one axum router over a [`RoomDirectory`], so the standalone node serves it
//! from its own rooms and the operator serves the same routes from Kubernetes.
//!
//! Every route needs `X-API-Key` (room scope). `docs/room-api.md` documents the routes.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chatfleet_wire::RoomId;
use chatfleet_wire::frames::{Moderation, Role};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::extract::ApiPath;
use crate::history::{HistoryQuery, HistoryView};
use crate::keys::{ApiKeys, Scope, require_scope};
use crate::moderation::{self, ReasonQuery, reason_or};
use crate::transcript::{self, TranscriptReader};
use crate::{ApiError, ErrorBody};

/// A request to open a room.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    /// Defaults to `default`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Generated when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// At most the node's (or fleet's) limit; defaults to it.
    #[serde(default)]
    pub max_members: Option<u32>,
    /// The fleet that hosts the room (operator only; it has a default).
    #[serde(default)]
    pub fleet: Option<String>,
    /// Members expected, for placement (operator only); defaults to the participants, at least 2.
    #[serde(default)]
    pub expected_members: Option<u32>,
    /// What the room is for; at most 1,024 bytes.
    #[serde(default)]
    pub purpose: Option<String>,
    /// People to mint a join token for at once: the customer, the agents.
    #[serde(default)]
    pub participants: Vec<TokenRequest>,
    /// Labels to find the room by later (`GET /v1/rooms?label=key=value`), e.g. a ticket id.
    #[serde(default)]
    pub labels: Labels,
    /// From the `Idempotency-Key` header (at most 255 bytes): the same key always names the
    /// same room.
    #[serde(skip)]
    #[schema(ignore)]
    pub idempotency_key: Option<String>,
}

impl CreateRoom {
    /// The room's name: the one given, else one derived from the idempotency key (so a retry
    /// finds the room the first call made), else a fresh one.
    pub fn room_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        match &self.idempotency_key {
            Some(key) => {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(key.as_bytes());
                let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
                format!("room-{hex}")
            }
            None => format!("room-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        }
    }
}

/// A room as the API shows it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
pub struct RoomView {
    pub id: RoomId,
    pub namespace: String,
    pub name: String,
    /// Members connected now.
    pub members: u32,
    pub max_members: u32,
    /// The node hosting the room.
    pub node: String,
    /// WebSocket URL to join (add `?token=`).
    pub endpoint: String,
    /// The fleet hosting the room (behind the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<String>,
    /// Which room of that name this is (behind the operator, the ChatRoom's UID): a name used
    /// again after a close is another room. Tokens, webhook events and the transcript carry
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<String>,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

/// A room's labels.
pub type Labels = BTreeMap<String, String>;

/// Most labels on one room.
const MAX_LABELS: usize = 16;

/// `?fleet=&label=key=value` of `GET /v1/rooms`: both must match when both are given.
#[derive(Debug, Clone, Default, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RoomFilter {
    /// Only rooms of this fleet (a standalone node belongs to none).
    pub fleet: Option<String>,
    /// Only rooms opened with this label, as `key=value`.
    pub label: Option<String>,
}

impl RoomFilter {
    /// Whether a room of `fleet` with `labels` passes.
    pub fn matches(&self, fleet: Option<&str>, labels: &Labels) -> bool {
        let fleet_ok = self.fleet.as_deref().is_none_or(|f| Some(f) == fleet);
        let label_ok = self.label.as_deref().is_none_or(|label| {
            label
                .split_once('=')
                .is_some_and(|(k, v)| labels.get(k).is_some_and(|have| have == v))
        });
        fleet_ok && label_ok
    }

    fn check(&self) -> Result<(), ApiError> {
        match &self.label {
            Some(label) if !label.contains('=') => Err(ApiError::invalid(format!(
                "label must be key=value, got {label:?}"
            ))),
            _ => Ok(()),
        }
    }
}

fn check_labels(labels: &Labels) -> Result<(), ApiError> {
    let bad = |s: &str| s.len() > 63 || s.contains('=') || s.chars().any(char::is_control);
    if labels.len() > MAX_LABELS || labels.iter().any(|(k, v)| k.is_empty() || bad(k) || bad(v)) {
        return Err(ApiError::invalid(format!(
            "at most {MAX_LABELS} labels; keys 1 to 63 characters, values at most 63, no '='"
        )));
    }
    Ok(())
}

/// Longest `purpose`.
const MAX_PURPOSE_BYTES: usize = 1024;
/// Longest `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

fn check_bounds(request: &CreateRoom) -> Result<(), ApiError> {
    if request
        .purpose
        .as_ref()
        .is_some_and(|p| p.len() > MAX_PURPOSE_BYTES)
    {
        return Err(ApiError::invalid(format!(
            "purpose is limited to {MAX_PURPOSE_BYTES} bytes"
        )));
    }
    if request
        .idempotency_key
        .as_ref()
        .is_some_and(|k| k.len() > MAX_IDEMPOTENCY_KEY_BYTES)
    {
        return Err(ApiError::invalid(format!(
            "Idempotency-Key is limited to {MAX_IDEMPOTENCY_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The answer to opening a room.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
pub struct CreatedRoom {
    #[serde(flatten)]
    pub room: RoomView,
    /// False when the room already existed (the call is idempotent).
    pub created: bool,
    /// A join token for each participant named in the request.
    #[serde(default)]
    pub tokens: Vec<TokenView>,
}

/// A request for a join token.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The user id, 1 to 128 bytes.
    pub user: String,
    /// Display name, 1 to 128 bytes; defaults to the user id.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "default_role")]
    pub role: Role,
    /// Token lifetime; default one hour, at most a week.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

fn default_role() -> Role {
    Role::Customer
}

/// A minted join token.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
pub struct TokenView {
    pub room: RoomId,
    pub user: String,
    pub token: String,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
    /// WebSocket URL with the token.
    pub ws_url: String,
    /// The chat page, logged in with the token.
    pub chat_url: String,
}

/// Most participants one create call mints tokens for.
const MAX_PARTICIPANTS: usize = 50;
/// Where rooms come from: the node itself, or Kubernetes.
pub trait RoomDirectory: Send + Sync + 'static {
    fn create_room(
        &self,
        request: CreateRoom,
    ) -> impl Future<Output = Result<CreatedRoom, ApiError>> + Send;
    fn list_rooms(
        &self,
        filter: &RoomFilter,
    ) -> impl Future<Output = Result<Vec<RoomView>, ApiError>> + Send;
    fn get_room(&self, room: &RoomId) -> impl Future<Output = Result<RoomView, ApiError>> + Send;
    /// Closes the room; its members see `reason` in their `closed` frame.
    fn close_room(
        &self,
        room: &RoomId,
        reason: &str,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Records a moderator's action and has every node hosting the room apply it (see
    /// [`crate::moderation`]); `not_found` for an unknown room.
    fn moderate(
        &self,
        room: &RoomId,
        moderation: Moderation,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    fn mint_token(
        &self,
        room: &RoomId,
        request: TokenRequest,
    ) -> impl Future<Output = Result<TokenView, ApiError>> + Send;
    /// One page of the room's retained history (see [`crate::history`]).
    fn history(
        &self,
        room: &RoomId,
        query: HistoryQuery,
    ) -> impl Future<Output = Result<HistoryView, ApiError>> + Send;
    /// The transcript of one incarnation of the room (None: the one the name stands for now,
    /// open or closed last; see [`crate::transcript`]), also after the room closed, to be
    /// read a page at a time; `not_found` when there is none.
    fn transcript(
        &self,
        room: &RoomId,
        incarnation: Option<&str>,
    ) -> impl Future<Output = Result<TranscriptReader, ApiError>> + Send;
}

/// The room API's routes, every one behind `X-API-Key`.
pub fn router<D: RoomDirectory>(directory: Arc<D>, keys: ApiKeys) -> Router {
    Router::new()
        .route("/v1/rooms", post(create::<D>).get(list::<D>))
        .route(
            "/v1/rooms/{namespace}/{room}",
            get(show::<D>).delete(remove::<D>),
        )
        .route("/v1/rooms/{namespace}/{room}/tokens", post(token::<D>))
        .route("/v1/rooms/{namespace}/{room}/history", get(history::<D>))
        .route(
            "/v1/rooms/{namespace}/{room}/transcript",
            get(transcript::transcript::<D>),
        )
        .route(
            "/v1/rooms/{namespace}/{room}/members/{user}",
            delete(moderation::remove::<D>),
        )
        .route(
            "/v1/rooms/{namespace}/{room}/members/{user}/mute",
            post(moderation::mute::<D>).delete(moderation::unmute::<D>),
        )
        .with_state(directory)
        .layer(middleware::from_fn_with_state(
            (keys, Scope::Room),
            require_scope,
        ))
}

pub(crate) fn room_id(namespace: &str, room: &str) -> Result<RoomId, ApiError> {
    RoomId::new(namespace, room).map_err(|e| ApiError::invalid(e.to_string()))
}

/// Open a room, with a join token for each participant.
///
/// Idempotent: with `Idempotency-Key` (and no `name`) the key names the room, so a retry after
/// a timeout finds the room the first call opened (200, `created: false`).
#[utoipa::path(post, path = "/v1/rooms", tag = "rooms", security(("api_key" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "names the room on retries")),
    request_body = CreateRoom,
    responses(
        (status = 201, description = "opened", body = CreatedRoom),
        (status = 200, description = "it already existed", body = CreatedRoom),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, description = "`unavailable`, or behind the operator `not_placed` in time", body = ErrorBody),
    ))]
pub(crate) async fn create<D: RoomDirectory>(
    State(directory): State<Arc<D>>,
    headers: HeaderMap,
    body: Result<Json<CreateRoom>, JsonRejection>,
) -> Result<(StatusCode, Json<CreatedRoom>), ApiError> {
    let Json(mut request) = body?;
    request.idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|key| !key.is_empty())
        .map(str::to_owned);
    check_labels(&request.labels)?;
    check_bounds(&request)?;
    if request.participants.len() > MAX_PARTICIPANTS {
        return Err(ApiError::invalid(format!(
            "at most {MAX_PARTICIPANTS} participants per request"
        )));
    }
    let participants = std::mem::take(&mut request.participants);
    let mut created = directory.create_room(request).await?;
    for participant in participants {
        let token = directory.mint_token(&created.room.id, participant).await?;
        created.tokens.push(token);
    }
    let status = if created.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(created)))
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct RoomList {
    pub rooms: Vec<RoomView>,
}

/// Every room with its member count, optionally only a fleet's or a label's.
#[utoipa::path(get, path = "/v1/rooms", tag = "rooms", security(("api_key" = [])),
    params(RoomFilter),
    responses((status = 200, body = RoomList), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn list<D: RoomDirectory>(
    State(directory): State<Arc<D>>,
    filter: Result<Query<RoomFilter>, QueryRejection>,
) -> Result<Json<RoomList>, ApiError> {
    let Query(filter) = filter?;
    filter.check()?;
    Ok(Json(RoomList {
        rooms: directory.list_rooms(&filter).await?,
    }))
}

/// One room.
#[utoipa::path(get, path = "/v1/rooms/{namespace}/{room}", tag = "rooms", security(("api_key" = [])),
    params(("namespace" = String, Path), ("room" = String, Path)),
    responses((status = 200, body = RoomView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn show<D: RoomDirectory>(
    State(directory): State<Arc<D>>,
    ApiPath((namespace, room)): ApiPath<(String, String)>,
) -> Result<Json<RoomView>, ApiError> {
    Ok(Json(
        directory.get_room(&room_id(&namespace, &room)?).await?,
    ))
}

/// Close a room: its members get `closed` (with the reason), its history is dropped, old
/// tokens cannot reopen it.
#[utoipa::path(delete, path = "/v1/rooms/{namespace}/{room}", tag = "rooms", security(("api_key" = [])),
    params(("namespace" = String, Path), ("room" = String, Path), ReasonQuery),
    responses((status = 204, description = "closed"), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn remove<D: RoomDirectory>(
    State(directory): State<Arc<D>>,
    ApiPath((namespace, room)): ApiPath<(String, String)>,
    query: Result<Query<ReasonQuery>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let Query(query) = query?;
    let reason = reason_or(query.reason, "closed through the room API")?;
    directory
        .close_room(&room_id(&namespace, &room)?, &reason)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Mint a join token (invite another agent).
#[utoipa::path(post, path = "/v1/rooms/{namespace}/{room}/tokens", tag = "rooms", security(("api_key" = [])),
    params(("namespace" = String, Path), ("room" = String, Path)),
    request_body = TokenRequest,
    responses((status = 201, body = TokenView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "`room_closed`, or `not_placed` yet", body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(crate) async fn token<D: RoomDirectory>(
    State(directory): State<Arc<D>>,
    ApiPath((namespace, room)): ApiPath<(String, String)>,
    body: Result<Json<TokenRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<TokenView>), ApiError> {
    let Json(request) = body?;
    let token = directory
        .mint_token(&room_id(&namespace, &room)?, request)
        .await?;
    Ok((StatusCode::CREATED, Json(token)))
}

/// One page of a room's retained history, oldest first.
#[utoipa::path(get, path = "/v1/rooms/{namespace}/{room}/history", tag = "rooms", security(("api_key" = [])),
    params(("namespace" = String, Path), ("room" = String, Path), HistoryQuery),
    responses((status = 200, body = HistoryView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn history<D: RoomDirectory>(
    State(directory): State<Arc<D>>,
    ApiPath((namespace, room)): ApiPath<(String, String)>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<HistoryView>, ApiError> {
    let Query(query) = query?;
    Ok(Json(
        directory
            .history(&room_id(&namespace, &room)?, query)
            .await?,
    ))
}
