//! Autoscaling: how many nodes a fleet should run, decided from its seats alone.
//!
//! The fleet keeps at least `bufferSeats` free seats: below that it grows at once, by as many
//! nodes as the shortfall needs. It shrinks one node at a time, and only when the fleet would
//! still have the buffer without its highest ordinal (the pod a StatefulSet removes first):
//! that node is drained first, so its rooms move with `moved`, and removed once it is empty or
//! its drain time ran out. A drain is called off when the fleet would fall short of the buffer
//! without the node after all (a surge while it drains), or when `minReplicas` grew to keep it.
//! A cool-down after every change keeps it from flapping, and nothing is decided while nodes
//! are missing (not reporting), since their seats would count as lost. A node drained by
//! someone else is present but its seats are not free: the fleet grows past it.

use std::time::Duration;

/// The buffer: a number of seats, or a percentage of the fleet's seats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buffer {
    Seats(u32),
    Percent(u32),
}

impl Buffer {
    /// Parses `bufferSeats`: `"30"` or `"10%"` (below 100%: a fleet never has every seat
    /// free for long).
    pub fn parse(text: &str) -> Option<Buffer> {
        match text.strip_suffix('%') {
            Some(percent) => percent
                .trim()
                .parse()
                .ok()
                .filter(|&p| p < 100)
                .map(Buffer::Percent),
            None => text.trim().parse().ok().map(Buffer::Seats),
        }
    }

    /// Nodes of `per_node` seats to add to a fleet of `capacity` seats, `free` of them free,
    /// so that it has the buffer again: a percentage grows with the nodes added.
    pub fn nodes_short(self, capacity: u64, free: i64, per_node: i64) -> u64 {
        let per_node = per_node.max(1);
        let short = match self {
            Buffer::Seats(seats) => i64::from(seats) - free,
            // free + n·per ≥ p·(capacity + n·per) / 100  ⇔  n ≥ (p·capacity − 100·free) / (per·(100 − p))
            Buffer::Percent(percent) => {
                let p = i64::from(percent.min(99));
                let need = p * capacity as i64 - 100 * free;
                return u64::try_from(need.max(0))
                    .unwrap_or(0)
                    .div_ceil(((100 - p) * per_node) as u64);
            }
        };
        u64::try_from(short.max(0))
            .unwrap_or(0)
            .div_ceil(per_node as u64)
    }

    /// The free seats wanted in a fleet of `capacity` seats.
    pub fn seats(self, capacity: u64) -> u64 {
        match self {
            Buffer::Seats(seats) => u64::from(seats),
            Buffer::Percent(percent) => (capacity * u64::from(percent)).div_ceil(100),
        }
    }
}

/// The fleet's autoscaling settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub min: u32,
    pub max: u32,
    pub buffer: Buffer,
    /// Quiet time after a change before the fleet shrinks again.
    pub cooldown: Duration,
    /// Longest wait for a drained node to empty before it is removed anyway.
    pub drain: Duration,
}

/// What the fleet looks like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSeats {
    /// `spec.replicas`.
    pub replicas: u32,
    /// Nodes that report, Ready or draining: one that does not is missing, and its seats would
    /// count as lost. A drained node (an administrator's drain, or this one) is present.
    pub present: u32,
    /// Seats per node (`limits.usersPerNode`).
    pub seats_per_node: u32,
    /// Free seats over the ready, non-draining nodes, after reservations.
    pub free: i64,
    /// The drain under way, if any: the node and how long ago it began.
    pub draining: Option<Draining>,
    /// Time since the fleet last changed size (None: never).
    pub since_last_change: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draining {
    pub node: String,
    pub for_: Duration,
    /// Whether the node still has users or rooms reserved on it.
    pub busy: bool,
}

/// The decision, with the reason shown in the fleet's condition and Events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do.
    Hold { why: String },
    /// Grow to `to` nodes.
    Grow { to: u32, why: String },
    /// Drain `node`, the highest ordinal, before removing it.
    Drain { node: String, why: String },
    /// The drained node is empty (or out of time): shrink to `to`.
    Shrink { to: u32, why: String },
    /// The fleet needs the draining node after all: call its drain off.
    Undrain { node: String, why: String },
}

/// The pod name of a fleet's highest ordinal.
pub fn top_node(fleet: &str, replicas: u32) -> String {
    format!("{fleet}-{}", replicas.saturating_sub(1))
}

/// The ordinal of a fleet's pod (`chat-3` → 3); None for a name not of the fleet.
pub fn ordinal(fleet: &str, node: &str) -> Option<u32> {
    node.strip_prefix(fleet)?.strip_prefix('-')?.parse().ok()
}

/// Decides the fleet's size.
pub fn decide(fleet: &str, seats: &FleetSeats, bounds: &Bounds) -> Decision {
    let FleetSeats {
        replicas,
        present,
        seats_per_node,
        free,
        ..
    } = *seats;
    let per_node = i64::from(seats_per_node.max(1));
    if replicas < bounds.min {
        return Decision::Grow {
            to: bounds.min,
            why: format!("below minReplicas {}", bounds.min),
        };
    }
    if let Some(draining) = &seats.draining {
        if replicas.saturating_sub(1) < bounds.min {
            // minReplicas was raised to the fleet's size meanwhile: it keeps the node.
            return Decision::Undrain {
                node: draining.node.clone(),
                why: format!("minReplicas {} keeps {}", bounds.min, draining.node),
            };
        }
        // `free` counts no seat of the draining node: the fleet as it will be without it.
        let wanted_without = bounds
            .buffer
            .seats(u64::from(replicas.saturating_sub(1)) * per_node as u64)
            as i64;
        if replicas <= bounds.max && free < wanted_without {
            return Decision::Undrain {
                node: draining.node.clone(),
                why: format!(
                    "{free} free seats without {}, {wanted_without} wanted",
                    draining.node
                ),
            };
        }
        if !draining.busy || draining.for_ >= bounds.drain {
            let how = if draining.busy {
                "its drain time ran out"
            } else {
                "it is empty"
            };
            return Decision::Shrink {
                to: replicas.saturating_sub(1).max(bounds.min),
                why: format!("{} drained: {how}", draining.node),
            };
        }
        return Decision::Hold {
            why: format!("waiting for {} to drain", draining.node),
        };
    }
    if replicas > bounds.max {
        let node = top_node(fleet, replicas);
        return Decision::Drain {
            node,
            why: format!("above maxReplicas {}", bounds.max),
        };
    }
    if present < replicas {
        return Decision::Hold {
            why: "waiting for every node to report".into(),
        };
    }
    let capacity = u64::from(replicas) * per_node as u64;
    let wanted = bounds.buffer.seats(capacity) as i64;
    if free < wanted {
        let add = bounds.buffer.nodes_short(capacity, free, per_node);
        let add = u32::try_from(add).unwrap_or(u32::MAX);
        let to = replicas.saturating_add(add).min(bounds.max);
        if to > replicas {
            return Decision::Grow {
                to,
                why: format!("{free} free seats, {wanted} wanted"),
            };
        }
        return Decision::Hold {
            why: format!("short of the buffer, but at maxReplicas {}", bounds.max),
        };
    }
    let fewer = replicas.saturating_sub(1);
    let wanted_fewer = bounds.buffer.seats(u64::from(fewer) * per_node as u64) as i64;
    let cooling = seats
        .since_last_change
        .is_some_and(|since| since < bounds.cooldown);
    if fewer >= bounds.min && free - per_node >= wanted_fewer {
        if cooling {
            return Decision::Hold {
                why: "cooling down after the last change".into(),
            };
        }
        let node = top_node(fleet, replicas);
        let why = format!(
            "{free} free seats: {} remain without {node}",
            free - per_node
        );
        return Decision::Drain { node, why };
    }
    // Held reasons name no seat counts: they change every second and would rewrite the status.
    Decision::Hold {
        why: "the buffer holds".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> Bounds {
        Bounds {
            min: 1,
            max: 4,
            buffer: Buffer::Seats(3),
            cooldown: Duration::from_secs(60),
            drain: Duration::from_secs(20),
        }
    }

    fn fleet(replicas: u32, free: i64) -> FleetSeats {
        FleetSeats {
            replicas,
            present: replicas,
            seats_per_node: 4,
            free,
            draining: None,
            since_last_change: None,
        }
    }

    #[test]
    fn a_pods_ordinal_comes_from_its_name() {
        assert_eq!(ordinal("chat", "chat-3"), Some(3));
        assert_eq!(ordinal("chat", "chat-x"), None);
        assert_eq!(ordinal("chat", "chatty-1"), None);
        assert_eq!(top_node("chat", 4), "chat-3");
    }

    #[test]
    fn the_buffer_is_seats_or_a_share_of_the_fleet() {
        assert_eq!(Buffer::parse("30"), Some(Buffer::Seats(30)));
        assert_eq!(Buffer::parse("10%"), Some(Buffer::Percent(10)));
        assert_eq!(Buffer::parse("ten"), None);
        assert_eq!(Buffer::Percent(10).seats(300), 30);
        assert_eq!(Buffer::Percent(10).seats(301), 31, "rounded up");
        assert_eq!(Buffer::parse("100%"), None, "never met");
        assert_eq!(Buffer::parse("99%"), Some(Buffer::Percent(99)));
    }

    #[test]
    fn a_percentage_buffer_counts_the_nodes_it_adds() {
        // 4 nodes of 10, 2 free, 50% wanted: 20 of 40. One node more gives 12 of 50 (25
        // wanted); it takes 4 more: 42 free of 80, 40 wanted. Counting from today's
        // capacity alone would add 2.
        let fifty = Buffer::Percent(50);
        assert_eq!(fifty.nodes_short(40, 2, 10), 4);
        let after = 2 + 4 * 10;
        assert!(after >= fifty.seats(80) as i64);
        assert!(2 + 3 * 10 < fifty.seats(70) as i64, "three would not do");
        assert_eq!(fifty.nodes_short(40, 20, 10), 0);
        assert_eq!(Buffer::Seats(9).nodes_short(4, 0, 4), 3);
        let mut b = bounds();
        b.buffer = fifty;
        b.max = 20;
        let mut seats = fleet(4, 2);
        seats.seats_per_node = 10;
        assert!(matches!(
            decide("chat", &seats, &b),
            Decision::Grow { to: 8, .. }
        ));
    }

    #[test]
    fn a_short_fleet_grows_by_what_the_shortfall_needs_up_to_max() {
        assert!(matches!(
            decide("chat", &fleet(1, 2), &bounds()),
            Decision::Grow { to: 2, .. }
        ));
        // 9 seats short on nodes of 4: three more nodes.
        let mut b = bounds();
        b.buffer = Buffer::Seats(9);
        b.max = 10;
        assert!(matches!(
            decide("chat", &fleet(1, 0), &b),
            Decision::Grow { to: 4, .. }
        ));
        // At max it holds, and says why.
        let at_max = decide("chat", &fleet(4, 0), &bounds());
        assert!(matches!(&at_max, Decision::Hold { why } if why.contains("maxReplicas")));
        // Growing ignores the cool-down: seats are needed now.
        let mut cooling = fleet(2, 1);
        cooling.since_last_change = Some(Duration::from_secs(1));
        assert!(matches!(
            decide("chat", &cooling, &bounds()),
            Decision::Grow { to: 3, .. }
        ));
    }

    #[test]
    fn a_fleet_below_min_grows_even_while_nodes_are_missing() {
        let mut seats = fleet(0, 0);
        seats.present = 0;
        let mut b = bounds();
        b.min = 2;
        assert!(matches!(
            decide("chat", &seats, &b),
            Decision::Grow { to: 2, .. }
        ));
    }

    #[test]
    fn nothing_is_decided_while_nodes_are_missing() {
        let mut seats = fleet(3, 0);
        seats.present = 2;
        assert!(matches!(
            decide("chat", &seats, &bounds()),
            Decision::Hold { .. }
        ));
    }

    #[test]
    fn a_node_drained_by_someone_else_does_not_stop_growth() {
        // chat-1 was drained from the admin page: it reports (present), but its seats are not
        // free, so the fleet is short and grows past it.
        let seats = fleet(3, 1);
        assert!(matches!(
            decide("chat", &seats, &bounds()),
            Decision::Grow { to: 4, .. }
        ));
    }

    #[test]
    fn min_replicas_raised_during_a_drain_calls_it_off() {
        let mut seats = fleet(3, 9);
        seats.draining = Some(Draining {
            node: "chat-2".into(),
            for_: Duration::from_secs(5),
            busy: false,
        });
        let mut b = bounds();
        b.min = 3;
        assert_eq!(
            decide("chat", &seats, &b),
            Decision::Undrain {
                node: "chat-2".into(),
                why: "minReplicas 3 keeps chat-2".into()
            }
        );
    }

    #[test]
    fn an_idle_fleet_drains_its_top_ordinal_after_the_cool_down() {
        // 3 nodes, 9 free: without one node 5 remain, more than 3.
        let seats = fleet(3, 9);
        assert_eq!(
            decide("chat", &seats, &bounds()),
            Decision::Drain {
                node: "chat-2".into(),
                why: "9 free seats: 5 remain without chat-2".into()
            }
        );
        let mut cooling = seats.clone();
        cooling.since_last_change = Some(Duration::from_secs(10));
        assert!(matches!(
            decide("chat", &cooling, &bounds()),
            Decision::Hold { .. }
        ));
        // 6 free: without a node only 2 would remain, under the buffer: it stays.
        assert!(matches!(
            decide("chat", &fleet(3, 6), &bounds()),
            Decision::Hold { .. }
        ));
        // Never below min.
        assert!(matches!(
            decide("chat", &fleet(1, 4), &bounds()),
            Decision::Hold { .. }
        ));
    }

    #[test]
    fn a_drained_node_goes_once_empty_or_out_of_time() {
        let mut seats = fleet(3, 9);
        seats.draining = Some(Draining {
            node: "chat-2".into(),
            for_: Duration::from_secs(5),
            busy: true,
        });
        assert!(matches!(
            decide("chat", &seats, &bounds()),
            Decision::Hold { .. }
        ));
        seats.draining.as_mut().unwrap().busy = false;
        assert!(matches!(
            decide("chat", &seats, &bounds()),
            Decision::Shrink { to: 2, .. }
        ));
        seats.draining = Some(Draining {
            node: "chat-2".into(),
            for_: Duration::from_secs(20),
            busy: true,
        });
        assert!(matches!(
            decide("chat", &seats, &bounds()),
            Decision::Shrink { to: 2, .. }
        ));
    }

    #[test]
    fn a_surge_while_a_node_drains_calls_the_drain_off() {
        // 3 nodes of 4, buffer 3: chat-2 drains. Its seats do not count: 1 free on the others.
        let mut seats = fleet(3, 1);
        seats.draining = Some(Draining {
            node: "chat-2".into(),
            for_: Duration::from_secs(5),
            busy: true,
        });
        assert_eq!(
            decide("chat", &seats, &bounds()),
            Decision::Undrain {
                node: "chat-2".into(),
                why: "1 free seats without chat-2, 3 wanted".into()
            }
        );
        // Enough without it: the drain goes on.
        seats.free = 3;
        assert!(matches!(
            decide("chat", &seats, &bounds()),
            Decision::Hold { .. }
        ));
        // A drain down to maxReplicas is never called off.
        let mut above = fleet(5, 0);
        above.draining = Some(Draining {
            node: "chat-4".into(),
            for_: Duration::from_secs(5),
            busy: true,
        });
        assert!(matches!(
            decide("chat", &above, &bounds()),
            Decision::Hold { .. }
        ));
    }

    #[test]
    fn a_fleet_above_max_drains_without_waiting_for_the_cool_down() {
        let mut seats = fleet(5, 0);
        seats.since_last_change = Some(Duration::from_secs(1));
        assert!(matches!(
            decide("chat", &seats, &bounds()),
            Decision::Drain { node, .. } if node == "chat-4"
        ));
    }
}
