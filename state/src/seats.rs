//! Seats on nodes, read and reserved by one atomic script (`scripts/seats.lua`).
//!
//! The operator reads the candidates' seats to decide and then reserves with a check in the
//! same script, so two reconciles, or two operator replicas, can never both take the last
//! seats of a node: the loser gets [`Seats::Full`] with the fresh count and decides again.

use chatfleet_wire::RoomId;
use chatfleet_wire::keys;
use redis::{AsyncCommands, ScriptInvocation};

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

    /// Free seats on each of `nodes`, not counting `room`'s own reservations, in the nodes'
    /// order: one round trip (one per slot on a cluster) whatever the number of nodes, so a
    /// placement over a large fleet waits for Redis once, not once per node.
    pub async fn peek_many(
        &self,
        nodes: &[String],
        room: &RoomId,
    ) -> Result<Vec<NodeSeats>, StateError> {
        self.peek_all(nodes, &room.to_string()).await
    }

    /// Free seats on each of `nodes`, counting every reservation, in one round trip (one per
    /// slot on a cluster): what a node redirecting members elsewhere may send there.
    pub async fn peek_nodes(&self, nodes: &[String]) -> Result<Vec<NodeSeats>, StateError> {
        self.peek_all(nodes, "").await
    }

    async fn peek_all(&self, nodes: &[String], room: &str) -> Result<Vec<NodeSeats>, StateError> {
        let replies: Vec<(String, i64, String)> = self
            .redis
            .query_each_by_slot(
                nodes,
                |node| keys::node_report(node),
                // The script is loaded in the same round trip, so a Redis that restarted
                // (or failed over) since the last call runs it all the same.
                |pipe| {
                    pipe.load_script(&scripts::SEATS).ignore();
                },
                |pipe, node| {
                    pipe.invoke_script(&invocation(node, "peek", room, 0));
                },
            )
            .await?;
        Ok(replies.into_iter().map(node_seats).collect())
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
        let reply: (String, i64, String) = invocation(node, mode, room, seats)
            .invoke_async(&mut self.redis.conn())
            .await?;
        Ok(node_seats(reply))
    }
}

/// The seats script on `node`'s keys, in `mode` (`peek`, `reserve` or `force`).
fn invocation(node: &str, mode: &str, room: &str, seats: u32) -> ScriptInvocation<'static> {
    let mut invocation = scripts::SEATS.prepare_invoke();
    invocation
        .key(keys::node_report(node))
        .key(keys::node_rooms(node))
        .key(keys::node_reserved(node))
        .arg(mode)
        .arg(room)
        .arg(seats);
    invocation
}

/// The seats script's answer: its outcome, the free seats and the node's message rate.
fn node_seats((outcome, free, rate): (String, i64, String)) -> NodeSeats {
    let seats = match outcome.as_str() {
        "gone" => Seats::Gone,
        "draining" => Seats::Draining { free },
        "ok" => Seats::Free { free },
        "reserved" => Seats::Reserved { free },
        _ => Seats::Full { free },
    };
    NodeSeats {
        seats,
        msg_rate: rate.parse().unwrap_or(0.0),
    }
}
