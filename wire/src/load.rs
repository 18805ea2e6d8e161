//! The load report: what a node tells the fleet about itself on every heartbeat. The operator
//! places rooms by it, so it must be honest and fresh.

use serde::{Deserialize, Serialize};

use crate::frames::Role;

/// A node's hard admission limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// WebSocket sessions this node accepts at once.
    pub max_node_users: u32,
    /// Members one room accepts at once.
    pub max_room_members: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_node_users: 300,
            max_room_members: 300,
        }
    }
}

/// Stored as JSON under [`node_report`](super::keys::node_report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// The node's name: its pod name in Kubernetes.
    pub node: String,
    /// Base WebSocket URL clients use to reach this node, e.g. `ws://chat-0.chat:8080`.
    pub advertise_url: String,
    /// Open WebSocket sessions.
    pub users: u32,
    /// Rooms with at least one member on this node.
    pub rooms: u32,
    /// Messages accepted per second, averaged over the last minute.
    pub msg_rate: f64,
    pub limits: Limits,
    /// True once the node began shutting down: place nothing new on it.
    pub draining: bool,
    /// The chatnode version.
    pub version: String,
    /// When the report was written, in ms since the Unix epoch.
    pub ts_ms: u64,
    /// The process's boot id (see [`Holder`](crate::session_id::Holder)): the sessions of a
    /// process whose node reports another boot, or no longer reports, are gone. Empty from
    /// nodes older than it.
    #[serde(default)]
    pub boot: String,
}

impl LoadReport {
    /// Seats left under the node's user limit.
    pub fn free_seats(&self) -> u32 {
        self.limits.max_node_users.saturating_sub(self.users)
    }

    /// Seats left under the node's user limit beside `held` still reserved for rooms placed
    /// on it (negative when the reservations outgrow it).
    pub fn free_seats_beside(&self, held: i64) -> i64 {
        i64::from(self.limits.max_node_users) - i64::from(self.users) - held
    }
}

/// One room as its node sees it, stored under [`node_rooms`](super::keys::node_rooms).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct RoomLoad {
    /// Members connected to this node.
    pub members: u32,
    /// Messages per second in the room, averaged over the last minute.
    pub msg_rate: f64,
}

/// Someone connected to a room on a node: the rosters nodes keep under
/// [`node_members`](super::keys::node_members), for the admin page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoomMember {
    pub user: String,
    pub name: String,
    pub role: Role,
    /// The member's sessions in the room on this node.
    pub sessions: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let report = LoadReport {
            node: "chat-0".into(),
            advertise_url: "ws://chat-0.chat:8080".into(),
            users: 310,
            rooms: 4,
            msg_rate: 1.5,
            limits: Limits::default(),
            draining: false,
            version: "0.1.0".into(),
            ts_ms: 1,
            boot: String::new(),
        };
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<LoadReport>(&json).unwrap(), report);
        assert_eq!(report.free_seats(), 0);
    }
}
