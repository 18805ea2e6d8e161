//! chatnode: chatfleet's data plane. WebSocket chat rooms on one port, with the room API and a
//! chat page, reporting load to Redis so the operator can place rooms.
//!
//! A newcomer's map (the contracts it shares live in `chatfleet_wire`, the shared state in
//! `chatfleet_state`, the room and admin API in `chatfleet_api`):
//! - [`server`] assembles a node ([`server::run`], or [`server::serve`] on a given listener).
//! - [`http`]: the routes: the WebSocket join, the API over this node, pages, health, metrics.
//! - [`node`]: the node itself: admission rules, seats and drain (the hub), the room registry,
//!   one task per room, one per client connection, outboxes, the per-user session limit.
//! - [`fleet`]: the Redis background tasks: heartbeat, live channels, control commands.
//! - [`store`]: where room logs live: in memory standalone, in the fleet's Redis otherwise.
//! - [`webhooks`]: the node's events, queued and delivered signed to the fleet's receivers.

pub mod config;
pub mod error;
pub mod fleet;
pub mod http;
pub mod metrics;
pub mod node;
pub mod server;
pub mod store;
pub mod webhooks;

pub use config::Config;
pub use error::Error;
pub use server::{run, serve};
