//! The admin and session routes: a user's sessions across the fleet, the fleet's nodes and
//! their load, draining a node, broadcasts, and webhook dead letters. One router over a [`FleetAdmin`], served by a
//! node (from its Redis, or from itself standalone) and by the operator. `docs/room-api.md`
//! documents the routes.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::Html;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use chatfleet_state::webhooks::{DEAD_LETTERS_KEPT, DeadLetter};
use chatfleet_wire::RoomId;
use chatfleet_wire::load::{LoadReport, RoomLoad, RoomMember};

use crate::extract::ApiPath;
use crate::keys::{ApiKeys, Scope, require_scope};
use crate::{ApiError, ErrorBody};

/// Longest broadcast body.
const MAX_BROADCAST_BYTES: usize = 4096;

/// One live session of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    pub id: String,
    /// The node holding it (the first part of its id).
    pub node: String,
    /// When its slot expires unless its node refreshes it (ms since the epoch); 0 standalone.
    pub expires_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionsView {
    pub user: String,
    pub count: usize,
    pub sessions: Vec<SessionView>,
}

impl SessionsView {
    pub fn new(user: &str, sessions: impl IntoIterator<Item = (String, u64)>) -> Self {
        let sessions: Vec<SessionView> = sessions
            .into_iter()
            .map(|(id, expires_ms)| SessionView {
                node: id.split('/').next().unwrap_or_default().to_owned(),
                id,
                expires_ms,
            })
            .collect();
        Self {
            user: user.to_owned(),
            count: sessions.len(),
            sessions,
        }
    }
}

/// A room's load on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RoomLoadView {
    pub room: RoomId,
    pub members: u32,
    pub msg_rate: f64,
    /// Who is connected on this node, one entry per user (as of the node's last heartbeat in
    /// a fleet).
    #[serde(default)]
    pub people: Vec<RoomMember>,
}

/// One node and the rooms on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    pub node: String,
    pub advertise_url: String,
    pub users: u32,
    pub max_users: u32,
    pub free_seats: u32,
    pub msg_rate: f64,
    pub draining: bool,
    pub version: String,
    pub rooms: Vec<RoomLoadView>,
}

impl NodeView {
    /// A node's view; `rosters` says who is in each room (rooms without one list nobody).
    pub fn new(
        report: LoadReport,
        rooms: Vec<(RoomId, RoomLoad)>,
        mut rosters: BTreeMap<RoomId, Vec<RoomMember>>,
    ) -> Self {
        Self {
            free_seats: report.free_seats(),
            node: report.node,
            advertise_url: report.advertise_url,
            users: report.users,
            max_users: report.limits.max_node_users,
            msg_rate: report.msg_rate,
            draining: report.draining,
            version: report.version,
            rooms: rooms
                .into_iter()
                .map(|(room, load)| RoomLoadView {
                    people: rosters.remove(&room).unwrap_or_default(),
                    room,
                    members: load.members,
                    msg_rate: load.msg_rate,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FleetView {
    pub nodes: Vec<NodeView>,
}

/// A system notice for every room, or for one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BroadcastRequest {
    pub body: String,
    #[serde(default)]
    pub room: Option<RoomId>,
}

/// A webhook delivery that failed every attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterView {
    pub event_id: String,
    /// The receiver it was for.
    pub url: String,
    /// The event, as it would have been delivered.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
    pub attempts: u32,
    /// What the last attempt got: a status code or a connection error.
    pub error: String,
    /// When it was given up (ms since the epoch).
    pub ts: u64,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(letter: DeadLetter) -> Self {
        let event_id = letter
            .job
            .id
            .split_once(' ')
            .map_or(letter.job.id.as_str(), |(id, _)| id)
            .to_owned();
        Self {
            event_id,
            url: letter.job.url,
            event: serde_json::from_str(&letter.job.event).unwrap_or_default(),
            attempts: letter.job.attempts,
            error: letter.error,
            ts: letter.ts,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeadLettersView {
    /// Newest first.
    pub dead_letters: Vec<DeadLetterView>,
}

/// `?limit=` of the dead letters.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// How many, newest first (1 to 1000; 100 by default).
    pub limit: Option<usize>,
}

/// Where the fleet's sessions and nodes are read and commanded.
pub trait FleetAdmin: Send + Sync + 'static {
    fn user_sessions(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<SessionsView, ApiError>> + Send;
    /// Ends one session of `user`, or all of them.
    fn end_sessions(
        &self,
        user: &str,
        session: Option<&str>,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    fn fleet(&self) -> impl Future<Output = Result<FleetView, ApiError>> + Send;
    fn drain(&self, node: &str) -> impl Future<Output = Result<(), ApiError>> + Send;
    fn broadcast(
        &self,
        request: BroadcastRequest,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// The newest `limit` webhook dead letters, newest first.
    fn dead_letters(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, ApiError>> + Send;
}

/// `/v1/users/...` (room scope) and `/v1/admin/...` (admin scope).
pub fn router<A: FleetAdmin>(admin: Arc<A>, keys: ApiKeys) -> Router {
    let users = Router::new()
        .route(
            "/v1/users/{user}/sessions",
            get(list_sessions::<A>).delete(end_all::<A>),
        )
        .route("/v1/users/{user}/sessions/{id}", delete(end_one::<A>))
        .with_state(admin.clone())
        .layer(middleware::from_fn_with_state(
            (keys.clone(), Scope::Room),
            require_scope,
        ));
    let admin_routes = Router::new()
        .route("/v1/admin/fleet", get(fleet::<A>))
        .route("/v1/admin/nodes/{node}/drain", post(drain::<A>))
        .route("/v1/admin/broadcast", post(broadcast::<A>))
        .route("/v1/admin/webhooks/dead-letters", get(dead_letters::<A>))
        .with_state(admin)
        .layer(middleware::from_fn_with_state(
            (keys, Scope::Admin),
            require_scope,
        ));
    users.merge(admin_routes).route("/admin", get(admin_page))
}

const ADMIN_PAGE: &str = include_str!("../web/admin.html");

/// The admin page: the fleet's nodes and rooms with their load, updating live; drain, close,
/// broadcast, end sessions. It asks for the admin key and calls the routes with it.
#[utoipa::path(get, path = "/admin", tag = "pages", responses((status = 200, description = "HTML", content_type = "text/html")))]
pub(crate) async fn admin_page() -> Html<&'static str> {
    Html(ADMIN_PAGE)
}

/// A user's live sessions across the fleet.
#[utoipa::path(get, path = "/v1/users/{user}/sessions", tag = "sessions", security(("api_key" = [])),
    params(("user" = String, Path)),
    responses((status = 200, body = SessionsView), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn list_sessions<A: FleetAdmin>(
    State(admin): State<Arc<A>>,
    ApiPath(user): ApiPath<String>,
) -> Result<Json<SessionsView>, ApiError> {
    Ok(Json(admin.user_sessions(&user).await?))
}

/// End all of a user's sessions: their slots are free at once, and their nodes close the
/// connections with `session_ended`.
#[utoipa::path(delete, path = "/v1/users/{user}/sessions", tag = "sessions", security(("api_key" = [])),
    params(("user" = String, Path)),
    responses((status = 202, description = "ending"), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn end_all<A: FleetAdmin>(
    State(admin): State<Arc<A>>,
    ApiPath(user): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    admin.end_sessions(&user, None).await?;
    Ok(StatusCode::ACCEPTED)
}

/// End one session of a user.
#[utoipa::path(delete, path = "/v1/users/{user}/sessions/{id}", tag = "sessions", security(("api_key" = [])),
    params(("user" = String, Path), ("id" = String, Path, description = "a session id, URL-encoded (it holds `/`)")),
    responses((status = 202, description = "ending"), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn end_one<A: FleetAdmin>(
    State(admin): State<Arc<A>>,
    ApiPath((user, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let known = admin.user_sessions(&user).await?;
    if !known.sessions.iter().any(|s| s.id == id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{user} has no session {id}"),
        ));
    }
    admin.end_sessions(&user, Some(&id)).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Every node with its load and the rooms on it (admin scope).
#[utoipa::path(get, path = "/v1/admin/fleet", tag = "admin", security(("api_key" = [])),
    responses((status = 200, body = FleetView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn fleet<A: FleetAdmin>(
    State(admin): State<Arc<A>>,
) -> Result<Json<FleetView>, ApiError> {
    Ok(Json(admin.fleet().await?))
}

/// Drain a node: it takes no new members and reports draining, so the operator moves its rooms
/// and their members get `moved` (admin scope).
#[utoipa::path(post, path = "/v1/admin/nodes/{node}/drain", tag = "admin", security(("api_key" = [])),
    params(("node" = String, Path)),
    responses((status = 202, description = "draining"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn drain<A: FleetAdmin>(
    State(admin): State<Arc<A>>,
    ApiPath(node): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let fleet = admin.fleet().await?;
    if !fleet.nodes.iter().any(|n| n.node == node) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no live node {node}"),
        ));
    }
    admin.drain(&node).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Send a `system` notice to every room of the fleet, or to one (admin scope).
#[utoipa::path(post, path = "/v1/admin/broadcast", tag = "admin", security(("api_key" = [])),
    request_body = BroadcastRequest,
    responses((status = 202, description = "sent"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn broadcast<A: FleetAdmin>(
    State(admin): State<Arc<A>>,
    body: Result<Json<BroadcastRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(request) = body?;
    if request.body.trim().is_empty() || request.body.len() > MAX_BROADCAST_BYTES {
        return Err(ApiError::invalid(format!(
            "body must be 1 to {MAX_BROADCAST_BYTES} bytes"
        )));
    }
    admin.broadcast(request).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Webhook deliveries that failed every attempt, newest first (admin scope). The fleet keeps
/// the last 1,000.
#[utoipa::path(get, path = "/v1/admin/webhooks/dead-letters", tag = "admin", security(("api_key" = [])),
    params(DeadLetterQuery),
    responses((status = 200, body = DeadLettersView), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn dead_letters<A: FleetAdmin>(
    State(admin): State<Arc<A>>,
    query: Result<Query<DeadLetterQuery>, QueryRejection>,
) -> Result<Json<DeadLettersView>, ApiError> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=DEAD_LETTERS_KEPT).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {DEAD_LETTERS_KEPT}"
        )));
    }
    let letters = admin.dead_letters(limit).await?;
    Ok(Json(DeadLettersView {
        dead_letters: letters.into_iter().map(DeadLetterView::from).collect(),
    }))
}
