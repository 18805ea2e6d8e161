//! Seats on nodes, read and reserved by one atomic script (`scripts/seats.lua`).
//!
//! The operator reads the candidates' seats to decide and then reserves with a check in the
//! same script, so two reconciles, or two operator replicas, can never both take the last
//! seats of a node: the loser gets [`Seats::Full`] with the fresh count and decides again.

use chatfleet_wire::RoomId;
use chatfleet_wire::keys;
use redis::AsyncCommands;

use crate::{Redis, StateError, scripts};

/// What the script found on a node, with the node's message rate when it has a report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeSeats {
    pub seats: Seats,
    pub msg_rate: f64,
}

/// The seat outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seats {
    /// No fresh load report: the node is dead or not started.
    Gone,
    /// The node is shutting down; place nothing on it.
    Draining { free: i64 },
    /// Peeked: this many seats are free.
    Free { free: i64 },
    /// Reserved; `free` seats were free before.
    Reserved { free: i64 },
    /// Not reserved: only `free` seats are left.
    Full { free: i64 },
}

/// Seat reservations. Cheap to clone.
#[derive(Clone)]
pub struct SeatStore {
    redis: Redis,
}

impl SeatStore {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    /// Free seats on `node`, not counting `room`'s own reservation there.
    pub async fn peek(&self, node: &str, room: &RoomId) -> Result<NodeSeats, StateError> {
        self.run(node, "peek", &room.to_string(), 0).await
    }

    /// Free seats on `node`, counting every reservation.
    pub async fn peek_node(&self, node: &str) -> Result<NodeSeats, StateError> {
        self.run(node, "peek", "", 0).await
    }

    /// Reserves `seats` for `room` on `node` if they are free.
    pub async fn reserve(
        &self,
        node: &str,
        room: &RoomId,
        seats: u32,
    ) -> Result<NodeSeats, StateError> {
        self.run(node, "reserve", &room.to_string(), seats).await
    }

    /// Reserves whatever is free: the overflow fallback, and a room staying where it is.
    pub async fn force(
        &self,
        node: &str,
        room: &RoomId,
        seats: u32,
    ) -> Result<NodeSeats, StateError> {
        self.run(node, "force", &room.to_string(), seats).await
    }

    /// Gives `room`'s seats on `node` back.
    pub async fn release(&self, node: &str, room: &RoomId) -> Result<(), StateError> {
        let _: () = self
            .redis
            .conn()
            .hdel(keys::node_reserved(node), room.to_string())
            .await?;
        Ok(())
    }

    async fn run(
        &self,
        node: &str,
        mode: &str,
        room: &str,
        seats: u32,
    ) -> Result<NodeSeats, StateError> {
        let (outcome, free, rate): (String, i64, String) = scripts::SEATS
            .key(keys::node_report(node))
            .key(keys::node_rooms(node))
            .key(keys::node_reserved(node))
            .arg(mode)
            .arg(room)
            .arg(seats)
            .invoke_async(&mut self.redis.conn())
            .await?;
        let seats = match outcome.as_str() {
            "gone" => Seats::Gone,
            "draining" => Seats::Draining { free },
            "ok" => Seats::Free { free },
            "reserved" => Seats::Reserved { free },
            _ => Seats::Full { free },
        };
        Ok(NodeSeats {
            seats,
            msg_rate: rate.parse().unwrap_or(0.0),
        })
    }
}
