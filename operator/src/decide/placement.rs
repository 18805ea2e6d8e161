//! Placement: which node a room goes to, decided from the nodes' load alone.
//!
//! A node fits a room when its free seats (its user limit, minus its users, minus seats
//! reserved for rooms placed on it but not yet filled) cover the room's expected members.
//! Among fitting nodes the strategy chooses; when none fits, the room overflows onto the node
//! with the lowest message rate, as the original requirements ask. Every tie is broken by the
//! node name, so the same inputs always give the same answer.

use std::cmp::Ordering;

/// What placement knows about one candidate node (Ready in Kubernetes, with a fresh,
/// non-draining load report).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeLoad {
    pub name: String,
    /// The node's user limit minus its users minus seats reserved on it; may be negative.
    pub free_seats: i64,
    /// Messages per second, averaged over the last minute.
    pub msg_rate: f64,
}

/// How to choose among nodes that fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// The node with the most free seats: spreads load.
    #[default]
    LeastLoaded,
    /// The fitting node with the fewest free seats: fills nodes before using empty ones.
    Packed,
}

/// The decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// The node has room for the expected members.
    Fits { node: String },
    /// No node has room; this one has the lowest message rate.
    Overflow { node: String },
    /// There is no candidate at all.
    NoCandidate,
}

/// Chooses a node for a room expecting `expected` members.
pub fn place(nodes: &[NodeLoad], expected: u32, strategy: Strategy) -> Placement {
    let expected = i64::from(expected);
    let fitting = nodes.iter().filter(|n| n.free_seats >= expected);
    let best = match strategy {
        Strategy::LeastLoaded => fitting.min_by(|a, b| {
            b.free_seats
                .cmp(&a.free_seats)
                .then_with(|| by_rate(a, b))
                .then_with(|| a.name.cmp(&b.name))
        }),
        Strategy::Packed => fitting.min_by(|a, b| {
            a.free_seats
                .cmp(&b.free_seats)
                .then_with(|| a.name.cmp(&b.name))
        }),
    };
    if let Some(node) = best {
        return Placement::Fits {
            node: node.name.clone(),
        };
    }
    match nodes.iter().min_by(|a, b| {
        by_rate(a, b)
            .then_with(|| b.free_seats.cmp(&a.free_seats))
            .then_with(|| a.name.cmp(&b.name))
    }) {
        Some(node) => Placement::Overflow {
            node: node.name.clone(),
        },
        None => Placement::NoCandidate,
    }
}

fn by_rate(a: &NodeLoad, b: &NodeLoad) -> Ordering {
    a.msg_rate.total_cmp(&b.msg_rate)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::Strategy as Pick;
    use super::{NodeLoad, Placement, place};

    fn node(name: &str, free_seats: i64, msg_rate: f64) -> NodeLoad {
        NodeLoad {
            name: name.into(),
            free_seats,
            msg_rate,
        }
    }

    fn fits(name: &str) -> Placement {
        Placement::Fits { node: name.into() }
    }

    #[test]
    fn least_loaded_spreads_and_packed_fills() {
        let nodes = [node("a", 10, 1.0), node("b", 250, 5.0), node("c", 4, 0.0)];
        assert_eq!(place(&nodes, 3, Pick::LeastLoaded), fits("b"));
        assert_eq!(place(&nodes, 3, Pick::Packed), fits("c"));
        assert_eq!(place(&nodes, 5, Pick::Packed), fits("a"));
    }

    #[test]
    fn when_nothing_fits_the_quietest_node_takes_the_overflow() {
        let nodes = [node("a", 1, 9.0), node("b", 0, 0.5), node("c", -3, 2.0)];
        assert_eq!(
            place(&nodes, 2, Pick::LeastLoaded),
            Placement::Overflow { node: "b".into() }
        );
        assert_eq!(place(&[], 2, Pick::LeastLoaded), Placement::NoCandidate);
    }

    fn arb_nodes() -> impl Strategy<Value = Vec<NodeLoad>> {
        prop::collection::vec((-50i64..300, 0u32..100), 0..30).prop_map(|loads| {
            loads
                .into_iter()
                .enumerate()
                .map(|(i, (free, rate))| node(&format!("chat-{i}"), free, f64::from(rate) / 4.0))
                .collect()
        })
    }

    fn arb_strategy() -> impl Strategy<Value = Pick> {
        prop_oneof![Just(Pick::LeastLoaded), Just(Pick::Packed)]
    }

    proptest! {
        /// While any node fits, the chosen node fits: no node goes over its limit.
        #[test]
        fn never_oversubscribes_while_a_node_fits(nodes in arb_nodes(), expected in 1u32..300, strategy in arb_strategy()) {
            let any_fits = nodes.iter().any(|n| n.free_seats >= i64::from(expected));
            match place(&nodes, expected, strategy) {
                Placement::Fits { node } => {
                    let chosen = nodes.iter().find(|n| n.name == node).unwrap();
                    prop_assert!(chosen.free_seats >= i64::from(expected));
                }
                Placement::Overflow { .. } => prop_assert!(!any_fits),
                Placement::NoCandidate => prop_assert!(nodes.is_empty()),
            }
        }

        /// The fallback picks a node with the lowest message rate.
        #[test]
        fn overflow_goes_to_the_lowest_message_rate(nodes in arb_nodes(), expected in 1u32..300, strategy in arb_strategy()) {
            if let Placement::Overflow { node } = place(&nodes, expected, strategy) {
                let chosen = nodes.iter().find(|n| n.name == node).unwrap();
                prop_assert!(nodes.iter().all(|n| n.msg_rate >= chosen.msg_rate));
            }
        }

        /// The answer does not depend on the order the nodes were listed in.
        #[test]
        fn ties_break_deterministically(nodes in arb_nodes(), expected in 1u32..300, strategy in arb_strategy(), seed in any::<u64>()) {
            let mut shuffled = nodes.clone();
            // A seeded rotation and reversal: a different order of the same nodes.
            if !shuffled.is_empty() {
                let k = (seed as usize) % shuffled.len();
                shuffled.rotate_left(k);
                if seed % 2 == 0 { shuffled.reverse(); }
            }
            prop_assert_eq!(place(&nodes, expected, strategy), place(&shuffled, expected, strategy));
        }
    }
}
