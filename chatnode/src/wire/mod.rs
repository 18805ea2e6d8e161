//! The wire contracts of chatfleet, defined once and shared by the chat node and the operator.
//!
//! - [`frames`]: the JSON frames a WebSocket client and a chat node exchange.
//! - [`control`]: the fleet-wide commands nodes take from Redis (end sessions, drain, broadcast).
//! - [`keys`]: every Redis key and channel the fleet uses.
//! - [`load`]: the load report a node writes to Redis on every heartbeat.
//! - [`room_id`]: how a room is named (`namespace/name`).

pub mod control;
pub mod frames;
pub mod keys;
pub mod load;
pub mod room_id;

pub use room_id::RoomId;
