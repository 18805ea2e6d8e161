//! chatfleet's HTTP API, served alike by a standalone chat node and by the operator: axum
//! routers over two traits, so each server plugs in where its rooms and its fleet live.
//!
//! - [`rooms`]: the room API over a [`RoomDirectory`](rooms::RoomDirectory): open, list,
//!   show and close rooms, mint join tokens ([`tokens`]), read history ([`history`]),
//!   moderate members ([`moderation`]), read transcripts ([`transcript`]).
//! - [`admin`]: users' sessions and the fleet over a [`FleetAdmin`](admin::FleetAdmin);
//!   [`redis_admin`] is that trait over a fleet's Redis.
//! - [`keys`]: API keys and their scopes; [`error`]: the one error type and its JSON.
//! - [`openapi`]: the OpenAPI document generated from the handlers, and its page.
//!
//! No WebSocket and no node internals live here: those are the chat node's.

pub mod admin;
pub mod error;
pub mod extract;
pub mod history;
pub mod keys;
pub mod moderation;
pub mod openapi;
pub mod redis_admin;
pub mod rooms;
pub mod tokens;
pub mod transcript;

pub use error::{ApiError, ErrorBody, with_json_fallbacks};
pub use keys::ApiKeys;
