//! Snapshots of a fleet's nodes, shared by every room placed on them.
//!
//! Each placed room is checked every few seconds (`Settings::room_resync`): is its node alive
//! and not draining, does it hold the room's reservation, how many members are there. Asked of
//! Redis per room, that work grows with rooms (at 5,000 rooms it saturated the shared Redis);
//! asked of a snapshot of the node, Redis does a few reads per node whatever the number of
//! rooms, and a check of a room whose reservation is right makes no call at all. Two ages:
//! the node's report (alive? draining?) is read again once it is [`REPORT_MAX_AGE`] old, so a
//! dead node is seen at once; its room loads and reservations, which only change the status's
//! figures and repair a lost reservation, once they are [`ROOMS_MAX_AGE`] old. Whoever finds a
//! snapshot stale reads it; the others wait for that read rather than making their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatfleet_state::StateError;
use chatfleet_state::reports::{LoadReports, NodeSnapshot};

/// How old a node's report may be when a room's check reads it: a node that died is seen gone
/// at most this much later than its report expired.
pub const REPORT_MAX_AGE: Duration = Duration::from_secs(1);
/// How old a node's room loads and reservations may be: one room resync.
pub const ROOMS_MAX_AGE: Duration = Duration::from_secs(5);

/// A node's snapshot and when its two parts were read.
struct Held {
    snapshot: Arc<NodeSnapshot>,
    report_read: Instant,
    rooms_read: Instant,
}

/// One slot per node; the async lock makes concurrent askers share one read.
type Slot = Arc<tokio::sync::Mutex<Option<Held>>>;

#[derive(Default)]
pub struct NodeViews {
    nodes: Mutex<HashMap<String, Slot>>,
}

impl NodeViews {
    /// `node`'s snapshot, read from Redis only as far as the one held is too old.
    pub async fn get(
        &self,
        reports: &LoadReports,
        node: &str,
    ) -> Result<Arc<NodeSnapshot>, StateError> {
        let slot = self
            .nodes
            .lock()
            .expect("node views lock")
            .entry(node.to_owned())
            .or_default()
            .clone();
        let mut held = slot.lock().await;
        match held.as_mut() {
            Some(h) if h.rooms_read.elapsed() < ROOMS_MAX_AGE => {
                if h.report_read.elapsed() >= REPORT_MAX_AGE {
                    let report = reports.report(node).await?;
                    Arc::make_mut(&mut h.snapshot).report = report;
                    h.report_read = Instant::now();
                }
                Ok(h.snapshot.clone())
            }
            _ => {
                let snapshot = Arc::new(reports.snapshot(node).await?);
                let now = Instant::now();
                *held = Some(Held {
                    snapshot: snapshot.clone(),
                    report_read: now,
                    rooms_read: now,
                });
                Ok(snapshot)
            }
        }
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
            && let Some(held) = slot.lock().await.as_mut()
        {
            Arc::make_mut(&mut held.snapshot)
                .reserved
                .insert(room.to_owned(), seats);
        }
    }
}
