//! Choosing a node for a room and reserving its seats, as one step per fleet.
//!
//! The reservation script checks capacity atomically, but not whether the node is still the
//! best choice: two rooms placed at once could both read the same loads and pick the same node
//! while another stood emptier. Placements in one fleet therefore run one at a time (only the
//! Lease holder places, so one process is enough to serialize them), and concurrent placements
//! spread exactly as sequential ones do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chatfleet_state::seats::{SeatStore, Seats};
use chatfleet_wire::RoomId;

use crate::decide::placement::{self, NodeLoad, Placement, Strategy};
use crate::error::{Error, Result};

/// Attempts at reserving before giving up for this reconcile (a node may fill or vanish
/// between the read and the reservation).
const RESERVE_ATTEMPTS: usize = 5;

/// Where a room was placed, its seats reserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    /// The node had room for the expected members.
    Fits(String),
    /// No node had room: the quietest took it.
    Overflow(String),
}

/// One placement at a time per fleet.
#[derive(Default)]
pub struct Placer {
    fleets: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Placer {
    /// Reads the candidates' seats, places with `strategy`, and reserves `expected` seats for
    /// `room`, while no other placement in `fleet` runs. `None` when no candidate has a live,
    /// non-draining report.
    pub async fn place(
        &self,
        fleet: &str,
        seats: &SeatStore,
        room: &RoomId,
        candidates: &[String],
        expected: u32,
        strategy: Strategy,
    ) -> Result<Option<Reserved>> {
        let lock = self
            .fleets
            .lock()
            .expect("placer lock")
            .entry(fleet.to_owned())
            .or_default()
            .clone();
        let _one_at_a_time = lock.lock().await;
        // Every candidate's seats in one round trip: the lock is held for two, not one per node.
        let found = seats.peek_many(candidates, room).await?;
        let mut nodes: Vec<NodeLoad> = candidates
            .iter()
            .zip(found)
            .filter_map(|(pod, found)| match found.seats {
                Seats::Free { free } => Some(NodeLoad {
                    name: pod.clone(),
                    free_seats: free,
                    msg_rate: found.msg_rate,
                }),
                _ => None,
            })
            .collect();
        for _ in 0..RESERVE_ATTEMPTS {
            let (node, overflow) = match placement::place(&nodes, expected, strategy) {
                Placement::Fits { node } => (node, false),
                Placement::Overflow { node } => (node, true),
                Placement::NoCandidate => return Ok(None),
            };
            let outcome = if overflow {
                seats.force(&node, room, expected).await?
            } else {
                seats.reserve(&node, room, expected).await?
            };
            match outcome.seats {
                Seats::Reserved { .. } if overflow => return Ok(Some(Reserved::Overflow(node))),
                Seats::Reserved { .. } => return Ok(Some(Reserved::Fits(node))),
                Seats::Full { free } => {
                    if let Some(n) = nodes.iter_mut().find(|n| n.name == node) {
                        n.free_seats = free;
                    }
                }
                Seats::Gone | Seats::Draining { .. } | Seats::Free { .. } => {
                    nodes.retain(|n| n.name != node);
                }
            }
        }
        Err(Error::Contended(format!(
            "no reservation for {room} after {RESERVE_ATTEMPTS} attempts"
        )))
    }
}
