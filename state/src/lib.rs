//! The fleet's shared state in Redis, as every chatfleet component reads and writes it.
//!
//! One [`Redis`] connection per fleet Redis; each concern is a small, cheap-to-clone view over
//! it, so a component takes only what it uses:
//!
//! - [`rooms::RoomStore`]: a room's settings, tombstone, live channel and TTL, and reads of
//!   its message log; [`rooms::MessageLog`] appends to that log (nodes only).
//! - [`members`]: what a room knows of its members beyond presence: read positions, mutes
//!   and removals.
//! - [`transcripts`]: what a room's transcript recorded, kept for a retention after the
//!   room closes.
//! - [`sessions::SessionSlots`]: the fleet-wide sessions-per-user limit.
//! - [`room_seats::RoomSeats`]: the fleet-wide members-per-room limit, for rooms that span
//!   nodes.
//! - [`reports::LoadReports`]: the load each node reports on its heartbeat.
//! - [`control::ControlChannel`]: commands for every node (end sessions, drain, broadcast).
//! - [`seats::SeatStore`]: the operator's seat reservations on nodes.
//! - [`webhooks::WebhookQueue`]: a fleet's durable queue of webhook deliveries.
//!
//! Each multi-key change is one Lua script (under `scripts/`, its contract in its header) or
//! one transaction, and every key comes from `chatfleet_wire::keys`.

pub mod cluster;
mod connection;
pub mod control;
mod error;
pub mod members;
pub mod reports;
pub mod room_seats;
pub mod rooms;
mod scripts;
pub mod seats;
pub mod sentinel;
pub mod sessions;
mod slots;
pub mod subscription;
pub mod transcripts;
pub mod webhooks;

pub use connection::{Conn, ConnectionSettings, Redis, RedisTls, with_password};
pub use error::StateError;

use std::time::Duration;

/// Every view of one fleet's Redis, over one connection.
#[derive(Clone)]
pub struct FleetState {
    pub redis: Redis,
    pub rooms: rooms::RoomStore,
    pub sessions: sessions::SessionSlots,
    pub room_seats: room_seats::RoomSeats,
    pub reports: reports::LoadReports,
    pub control: control::ControlChannel,
    pub seats: seats::SeatStore,
}

impl FleetState {
    /// Views over `redis`; room state not refreshed by a node expires after `room_ttl`.
    pub fn new(redis: Redis, room_ttl: Duration) -> Self {
        Self {
            rooms: rooms::RoomStore::new(redis.clone(), room_ttl),
            sessions: sessions::SessionSlots::new(redis.clone()),
            room_seats: room_seats::RoomSeats::new(redis.clone()),
            reports: reports::LoadReports::new(redis.clone()),
            control: control::ControlChannel::new(redis.clone()),
            seats: seats::SeatStore::new(redis.clone()),
            redis,
        }
    }

    /// The same views, keeping transcripts as `settings` say (the default otherwise).
    pub fn with_transcripts(mut self, settings: transcripts::TranscriptSettings) -> Self {
        self.rooms = self.rooms.with_transcripts(settings);
        self
    }
}
