//! The wire contracts of chatfleet, defined once and shared by every crate: plain data and
//! its encoding, no I/O and no async runtime.
//!
//! - [`frames`]: the JSON frames a WebSocket client and a chat node exchange.
//! - [`token`]: the join token a client presents (minted by the room API, verified by nodes).
//! - [`control`]: the fleet-wide commands nodes take from Redis (end sessions, drain, broadcast).
//! - [`keys`]: every Redis key and channel the fleet uses.
//! - [`load`]: the load report a node writes to Redis on every heartbeat.
//! - [`transcript`]: a room's record of messages, joins, leaves and its close.
//! - [`webhook`]: the events a fleet sends its webhook receivers, and their signature.
//! - [`room_id`]: how a room is named (`namespace/name`).
//! - [`urls`]: a room's WebSocket URL and a node's chat page; [`clock`]: wall-clock stamps.
//!
//! With the `openapi` feature the types that appear in the HTTP API describe their schema.

pub mod clock;
pub mod control;
pub mod frames;
pub mod keys;
pub mod load;
pub mod room_id;
pub mod session_id;
pub mod token;
pub mod transcript;
pub mod urls;
pub mod webhook;

pub use room_id::RoomId;
