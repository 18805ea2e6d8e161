//! The node's HTTP surface on one port: the room WebSocket ([`join`]), the room and admin API
//! over this node ([`directory`], [`admin`]), the chat page ([`pages`]), the operational
//! endpoints ([`ops`]) and the OpenAPI document of all of it ([`openapi`]).

pub mod accept;
mod admin;
mod directory;
mod join;
mod openapi;
mod ops;
mod pages;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use chatfleet_api::ApiKeys;

pub use self::admin::NodeAdmin;
pub use self::directory::NodeDirectory;
pub use self::openapi::node_document;
use crate::node::Hub;
use crate::node::connection::ConnectionLimits;

/// What the WebSocket handler needs besides the hub.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub connection: ConnectionLimits,
    pub ws_buffer_bytes: usize,
    pub insecure_dev_auth: bool,
}

pub fn router(state: AppState, api_keys: ApiKeys) -> Router {
    let directory = Arc::new(NodeDirectory::new(state.hub.clone()));
    let admin = Arc::new(NodeAdmin::new(state.hub.clone()));
    let app = Router::new()
        .route("/", get(pages::chat_page))
        .route("/v1/rooms/{namespace}/{room}/ws", get(join::join_room))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/node", get(ops::node_info))
        .with_state(state)
        .merge(chatfleet_api::rooms::router(directory, api_keys.clone()))
        .merge(chatfleet_api::admin::router(admin, api_keys))
        .merge(chatfleet_api::openapi::router(node_document()));
    chatfleet_api::with_json_fallbacks(app)
}
