//! chatnode: chatfleet's data plane. WebSocket chat rooms on one port, with a room API and a
//! chat page, reporting load to Redis so the operator can place rooms.
//!
//! A newcomer's map:
//! - [`wire`]: the contracts shared with the operator (frames, Redis keys, load report).
//! - [`server`] assembles a node; [`http`] routes requests; [`session`] runs one client.
//! - [`hub`] is the node (seats, rooms, drain); [`room`] is one room's task.
//! - [`admission`] holds the admission rules as pure functions.
//! - [`store`] keeps room logs in memory or Redis; [`live`] and [`heartbeat`] are the Redis
//!   background tasks.
//! - [`api`] is the room API router, over the [`directory`] of this node's rooms.

pub mod admin_api;
pub mod admission;
pub mod api;
pub mod auth;
pub mod config;
pub mod control;
pub mod directory;
pub mod error;
pub mod heartbeat;
pub mod history;
pub mod http;
pub mod hub;
pub mod live;
pub mod metrics;
pub mod node_admin;
pub mod openapi;
pub mod outbox;
pub mod rate;
pub mod room;
pub mod server;
pub mod session;
pub mod store;
pub mod user_sessions;
pub mod wire;

pub use config::Config;
pub use error::Error;
