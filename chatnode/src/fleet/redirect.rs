//! Where a client goes when this node has no seat for it: another node of the fleet with free
//! seats, so a room outgrows its home node instead of refusing its members. The fleet's load
//! reports are read at most once a second, and each redirect takes a seat from the cached
//! count, so a burst of joins spreads over the nodes instead of all landing on one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chatfleet_state::FleetState;
use chatfleet_state::seats::{NodeSeats, Seats};
use chatfleet_wire::load::LoadReport;

/// How long the fleet's reports are trusted for redirects.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// A node that may take clients: its name, its base URL and its free seats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub node: String,
    pub advertise_url: String,
    pub free: u32,
}

#[derive(Default)]
pub struct Redirects {
    cached: Mutex<Option<(Instant, Vec<Target>)>>,
}

impl Redirects {
    /// The base URL of the node with the most free seats, other than `this_node`; None when
    /// no node has a seat.
    pub async fn target(&self, state: &FleetState, this_node: &str) -> Option<String> {
        let stale = {
            let cached = self.cached.lock().expect("redirect lock");
            cached
                .as_ref()
                .is_none_or(|(at, _)| at.elapsed() >= FRESH_FOR)
        };
        if stale {
            let reports = match state.reports.reports().await {
                Ok(reports) => reports,
                Err(error) => {
                    tracing::debug!(%error, "cannot read the fleet's reports for a redirect");
                    return None;
                }
            };
            let mut targets = targets(&reports, this_node);
            let nodes: Vec<String> = targets.iter().map(|t| t.node.clone()).collect();
            match state.seats.peek_nodes(&nodes).await {
                Ok(seats) => after_reservations(&mut targets, &seats),
                // The reports alone still say who has room.
                Err(error) => tracing::debug!(%error, "cannot read the targets' reservations"),
            }
            *self.cached.lock().expect("redirect lock") = Some((Instant::now(), targets));
        }
        let mut cached = self.cached.lock().expect("redirect lock");
        let (_, targets) = cached.as_mut()?;
        take_seat(targets)
    }
}

/// The nodes that may take clients: fresh, not draining, with a free seat, not this one.
pub fn targets(reports: &[LoadReport], this_node: &str) -> Vec<Target> {
    reports
        .iter()
        .filter(|r| r.node != this_node && !r.draining && r.free_seats() > 0)
        .map(|r| Target {
            node: r.node.clone(),
            advertise_url: r.advertise_url.clone(),
            free: r.free_seats(),
        })
        .collect()
}

/// Counts the seats the operator reserved on each target for rooms placed there (their members
/// are on their way), so redirected members do not take them: `seats` are the targets' seats,
/// in the same order. A node the script found gone or draining takes nobody.
pub fn after_reservations(targets: &mut Vec<Target>, seats: &[NodeSeats]) {
    for (target, seats) in targets.iter_mut().zip(seats) {
        target.free = match seats.seats {
            Seats::Free { free } => u32::try_from(free.max(0)).unwrap_or(0).min(target.free),
            _ => 0,
        };
    }
    targets.retain(|t| t.free > 0);
}

/// Takes a seat on the node with the most free seats (ties: by name); its URL.
pub fn take_seat(targets: &mut [Target]) -> Option<String> {
    let best = targets
        .iter_mut()
        .filter(|t| t.free > 0)
        .max_by(|a, b| a.free.cmp(&b.free).then_with(|| b.node.cmp(&a.node)))?;
    best.free -= 1;
    Some(best.advertise_url.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatfleet_wire::load::Limits;

    fn report(node: &str, users: u32, draining: bool) -> LoadReport {
        LoadReport {
            node: node.into(),
            advertise_url: format!("ws://{node}:8080"),
            users,
            rooms: 1,
            msg_rate: 0.0,
            limits: Limits {
                max_node_users: 3,
                max_room_members: 300,
            },
            draining,
            version: "0".into(),
            ts_ms: 1,
            boot: String::new(),
        }
    }

    #[test]
    fn redirects_spread_over_the_nodes_with_seats_and_skip_full_and_draining_ones() {
        let reports = [
            report("chat-0", 3, false),
            report("chat-1", 1, false),
            report("chat-2", 0, true),
            report("chat-3", 2, false),
        ];
        let mut targets = targets(&reports, "chat-0");
        let names: Vec<&str> = targets.iter().map(|t| t.node.as_str()).collect();
        assert_eq!(
            names,
            ["chat-1", "chat-3"],
            "not itself, not full, not draining"
        );
        let picks: Vec<String> = (0..4).filter_map(|_| take_seat(&mut targets)).collect();
        assert_eq!(
            picks,
            ["ws://chat-1:8080", "ws://chat-1:8080", "ws://chat-3:8080"],
            "the emptiest first, then the next; none once every seat is taken"
        );
    }

    #[test]
    fn seats_reserved_for_rooms_placed_on_a_target_are_not_given_away() {
        let reports = [report("chat-1", 0, false), report("chat-2", 0, false)];
        let mut targets = targets(&reports, "chat-0");
        let seats = |seats| NodeSeats {
            seats,
            msg_rate: 0.0,
        };
        // chat-1 holds 2 of its 3 free seats for a room placed there; chat-2 went away.
        after_reservations(
            &mut targets,
            &[seats(Seats::Free { free: 1 }), seats(Seats::Gone)],
        );
        assert_eq!(
            targets,
            [Target {
                node: "chat-1".into(),
                advertise_url: "ws://chat-1:8080".into(),
                free: 1
            }]
        );
    }
}
