//! Snapshots of a fleet's nodes, shared by every room placed on them.
//!
//! Each placed room is checked every few seconds (`Settings::room_resync`): is its node alive
//! and not draining, does it hold the room's reservation, how many members are there. Asked of
//! Redis per room, that work grows with rooms (at 5,000 rooms it saturated the shared Redis);
//! asked of a snapshot of the node, read at most once per [`MAX_AGE`] however many rooms ask,
//! Redis does one pipelined read per node per interval, and a resync of a room whose
//! reservation is right makes no call at all. Whoever finds a snapshot stale reads it again;
//! the others wait for that read rather than making their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatfleet_state::StateError;
use chatfleet_state::reports::{LoadReports, NodeSnapshot};

/// How old a node's snapshot may be when a room's check reads it: a node that died is seen
/// gone at most this much later than its report expired.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// One slot per node; the async lock makes concurrent askers share one read.
type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Arc<NodeSnapshot>)>>>;

#[derive(Default)]
pub struct NodeViews {
    nodes: Mutex<HashMap<String, Slot>>,
}

impl NodeViews {
    /// `node`'s snapshot, read from Redis only when the one held is older than `max_age`.
    pub async fn get(
        &self,
        reports: &LoadReports,
        node: &str,
        max_age: Duration,
    ) -> Result<Arc<NodeSnapshot>, StateError> {
        let slot = self
            .nodes
            .lock()
            .expect("node views lock")
            .entry(node.to_owned())
            .or_default()
            .clone();
        let mut held = slot.lock().await;
        if let Some((read_at, snapshot)) = held.as_ref()
            && read_at.elapsed() < max_age
        {
            return Ok(snapshot.clone());
        }
        let snapshot = Arc::new(reports.snapshot(node).await?);
        *held = Some((Instant::now(), snapshot.clone()));
        Ok(snapshot)
    }

    /// Records a reservation just written, so the next checks see it without a read.
    pub async fn reserved(&self, node: &str, room: &str, seats: u32) {
        let slot = self
            .nodes
            .lock()
            .expect("node views lock")
            .get(node)
            .cloned();
        if let Some(slot) = slot
            && let Some((_, snapshot)) = slot.lock().await.as_mut()
        {
            Arc::make_mut(snapshot)
                .reserved
                .insert(room.to_owned(), seats);
        }
    }
}
