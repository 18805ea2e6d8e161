//! Where a room goes, decided from what the reconciler read: the room's spec and status, the
//! fleet's limits, its Ready pods and their seats. Pure functions, tested without Kubernetes
//! or Redis; `reconcile::room` does the reading and the writing around them.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use chatfleet_state::reports::NodeSnapshot;
use chatfleet_state::seats::Seats;

use super::placement::Strategy;
use super::workload::pod_url;
use crate::crd::{ChatRoomSpec, PlacementStrategy};
use crate::fleet_redis::RedisHealth;

/// Why a room cannot be placed now, and when to look again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The `Placed` condition's reason and the Event's: CamelCase, stable.
    pub reason: &'static str,
    /// For people.
    pub message: String,
    pub retry: Duration,
}

impl Waiting {
    pub fn fleet_not_found(fleet: &str) -> Self {
        Self {
            reason: "FleetNotFound",
            message: format!("fleet {fleet} does not exist"),
            retry: Duration::from_secs(30),
        }
    }

    /// No candidate had a live report (or there was no candidate at all).
    pub fn no_candidate(candidates: &[String]) -> Self {
        let message = if candidates.is_empty() {
            "no other node of the fleet is Ready"
        } else {
            "no Ready node has a fresh, non-draining load report"
        };
        Self {
            reason: "NoCandidate",
            message: message.to_owned(),
            retry: Duration::from_secs(5),
        }
    }
}

/// The room's member limit under its fleet's, or why the spec cannot be honoured.
pub fn max_members(spec: &ChatRoomSpec, fleet_limit: u32) -> Result<u32, Waiting> {
    let max_members = spec.max_members.unwrap_or(fleet_limit);
    if max_members > fleet_limit {
        return Err(Waiting {
            reason: "MaxMembersAboveFleetLimit",
            message: format!(
                "maxMembers {max_members} is above the fleet's limit of {fleet_limit}"
            ),
            retry: Duration::from_secs(60),
        });
    }
    if spec.expected_members > max_members {
        return Err(Waiting {
            reason: "ExpectedAboveMaxMembers",
            message: format!(
                "expectedMembers {} is above the room's limit of {max_members}",
                spec.expected_members
            ),
            retry: Duration::from_secs(60),
        });
    }
    Ok(max_members)
}

/// The seats a room reserves on its home node: its expected members, but at most one node's
/// seats. A room expecting more spans nodes: the members beyond its home node's seats are sent
/// on to nodes with seats as they arrive (the `redirect` frame), and its `maxMembers` holds
/// fleet-wide.
pub fn home_seats(expected: u32, seats_per_node: u32) -> u32 {
    expected.min(seats_per_node.max(1))
}

/// The members a placed room still expects that no seat is held for: beyond its home node's
/// reservation and beyond the `present` members it has fleet-wide (members go to other nodes
/// only once the home node is full). The fleet's free seats leave them out, so the autoscaler
/// grows for a room of 900 on nodes of 300 before its members arrive.
pub fn unheld_expected(expected: u32, seats_per_node: u32, present: u32) -> u32 {
    expected.saturating_sub(home_seats(expected, seats_per_node).max(present))
}

/// What the reconciler learned about a placed room's node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeEvidence {
    /// The pod it was placed on still exists and is not being deleted (see [`same_pod`]).
    pub pod_exists: bool,
    /// What the seats script found on it (its report fresh, draining or gone); None when
    /// Redis did not answer.
    pub seats: Option<Seats>,
    /// How the fleet's Redis is doing; `Recovering` also when every node's report vanished at
    /// once (Redis lost its data).
    pub redis: RedisHealth,
}

/// What a placed room's node looks like in its snapshot: the seats verdict [`judge`] takes,
/// and whether the room's reservation must be written (missing, or not the seats it expects).
/// A room whose reservation is right costs Redis nothing.
pub fn seats_on(snapshot: &NodeSnapshot, room: &str, expected: u32) -> (Seats, bool) {
    let Some(report) = &snapshot.report else {
        return (Seats::Gone, false);
    };
    let free = i64::from(report.free_seats());
    if report.draining {
        return (Seats::Draining { free }, false);
    }
    let write = snapshot.reserved.get(room) != Some(&expected);
    (Seats::Reserved { free }, write)
}

/// What to do with a placed room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Its node is alive: it stays.
    Keep,
    /// Its node is gone or draining: it moves (through Rescheduling, with `moved`).
    Move,
    /// Nothing can be told now (Redis is down, or just back): hold the placement and look
    /// again soon. A Redis outage must not move every room.
    Hold(&'static str),
}

/// Whether a placed room stays, moves, or waits. A node is gone when its pod is, or when Redis
/// answers, has answered for a while, and the node's report has expired anyway. A pod that is
/// not Ready while its node still reports is not a reason to move: nodes fail readiness when
/// they lose Redis.
pub fn judge(node: NodeEvidence) -> Verdict {
    if !node.pod_exists {
        return Verdict::Move;
    }
    match node.seats {
        None => Verdict::Hold("the fleet's Redis does not answer"),
        Some(Seats::Draining { .. }) => Verdict::Move,
        Some(Seats::Gone) => match node.redis {
            RedisHealth::Up => Verdict::Move,
            RedisHealth::Recovering | RedisHealth::Down => {
                Verdict::Hold("waiting for the nodes to report again after a Redis outage")
            }
        },
        Some(Seats::Reserved { .. } | Seats::Free { .. } | Seats::Full { .. }) => Verdict::Keep,
    }
}

/// Whether the pod named in a room's status is still the one it was placed on: `current` is
/// the UID of the pod of that name now (None when there is none). A StatefulSet makes a
/// deleted pod anew under the same name, at once; that is another process, which never held
/// the room. A room placed before UIDs were recorded takes the pod's word.
pub fn same_pod(recorded: Option<&str>, current: Option<&str>) -> bool {
    match (recorded, current) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(recorded), Some(current)) => recorded == current,
    }
}

/// The nodes a room may be placed on: the Ready ones, except the one it is leaving.
pub fn candidates(ready: &[String], moving_from: Option<&str>) -> Vec<String> {
    ready
        .iter()
        .filter(|pod| Some(pod.as_str()) != moving_from)
        .cloned()
        .collect()
}

pub fn strategy(strategy: PlacementStrategy) -> Strategy {
    match strategy {
        PlacementStrategy::LeastLoaded => Strategy::LeastLoaded,
        PlacementStrategy::Packed => Strategy::Packed,
    }
}

/// Where clients reach a node: the fleet's public template when set (`{pod}`, `{namespace}`,
/// `{fleet}`), else the address the node advertises, else its in-cluster address.
pub fn node_base_url(
    template: Option<&str>,
    fleet: &str,
    namespace: &str,
    pod: &str,
    advertised: Option<String>,
) -> String {
    let base = match template {
        Some(template) => template
            .replace("{pod}", pod)
            .replace("{namespace}", namespace)
            .replace("{fleet}", fleet),
        None => advertised.unwrap_or_else(|| pod_url(fleet, namespace, pod)),
    };
    base.trim_end_matches('/').to_owned()
}

/// What to do about a room that may have been empty for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyRoom {
    /// Look again after at most this long.
    Recheck(Duration),
    /// Empty past its `ttlSecondsAfterEmpty`: delete it (if no member is left anywhere).
    Expired { empty_for: u64 },
}

/// Whether an empty room outlived its TTL; `resync` is the usual recheck.
pub fn empty_room(
    ttl_seconds: Option<u32>,
    empty_since: Option<&str>,
    now: Timestamp,
    resync: Duration,
) -> EmptyRoom {
    let (Some(ttl), Some(since)) = (ttl_seconds, empty_since) else {
        return EmptyRoom::Recheck(resync);
    };
    let since: Timestamp = since.parse().unwrap_or(now);
    let empty_for = now.duration_since(since).as_secs().max(0) as u64;
    if empty_for >= u64::from(ttl) {
        EmptyRoom::Expired { empty_for }
    } else {
        EmptyRoom::Recheck(resync.min(Duration::from_secs(u64::from(ttl) - empty_for)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(expected: u32, max: Option<u32>) -> ChatRoomSpec {
        ChatRoomSpec {
            fleet: "chat".into(),
            expected_members: expected,
            max_members: max,
            purpose: None,
            ttl_seconds_after_empty: None,
        }
    }

    #[test]
    fn a_room_bigger_than_a_node_expects_seats_beyond_its_home() {
        // 900 expected on nodes of 300: 300 held on the home node, 600 expected elsewhere.
        assert_eq!(unheld_expected(900, 300, 0), 600);
        // 450 have come: 300 at home and 150 elsewhere, where they hold seats; 450 to come.
        assert_eq!(unheld_expected(900, 300, 450), 450);
        assert_eq!(unheld_expected(900, 300, 950), 0);
        // A room that fits its node holds all it expects there.
        assert_eq!(unheld_expected(40, 300, 0), 0);
    }

    #[test]
    fn limits_follow_the_fleet_unless_the_spec_asks_for_more() {
        assert_eq!(max_members(&spec(3, None), 300), Ok(300));
        assert_eq!(max_members(&spec(3, Some(10)), 300), Ok(10));
        let above = max_members(&spec(3, Some(301)), 300).unwrap_err();
        assert_eq!(above.reason, "MaxMembersAboveFleetLimit");
        let expected = max_members(&spec(11, Some(10)), 300).unwrap_err();
        assert_eq!(expected.reason, "ExpectedAboveMaxMembers");
        assert_eq!(expected.retry, Duration::from_secs(60));
    }

    #[test]
    fn candidates_leave_out_the_node_a_room_leaves() {
        let ready = vec!["chat-0".to_owned(), "chat-1".to_owned()];
        assert_eq!(candidates(&ready, Some("chat-0")), ["chat-1"]);
        assert_eq!(candidates(&ready, None), ready);
    }

    #[test]
    fn a_pod_made_anew_under_the_same_name_is_not_the_rooms_node() {
        assert!(same_pod(Some("uid-1"), Some("uid-1")));
        assert!(!same_pod(Some("uid-1"), Some("uid-2")), "recreated");
        assert!(!same_pod(Some("uid-1"), None), "deleted");
        assert!(
            same_pod(None, Some("uid-2")),
            "placed before UIDs were kept"
        );
        assert!(!same_pod(None, None));
    }

    #[test]
    fn a_room_moves_only_when_its_node_is_known_to_be_gone() {
        let node = |pod_exists, seats, redis| NodeEvidence {
            pod_exists,
            seats,
            redis,
        };
        let alive = Some(Seats::Reserved { free: 3 });
        let up = RedisHealth::Up;
        assert_eq!(judge(node(true, alive, up)), Verdict::Keep);
        assert_eq!(
            judge(node(false, None, up)),
            Verdict::Move,
            "its pod is gone"
        );
        let draining = Some(Seats::Draining { free: 0 });
        assert_eq!(judge(node(true, draining, up)), Verdict::Move);
        assert_eq!(judge(node(true, Some(Seats::Gone), up)), Verdict::Move);
        // Redis's fault, not the node's: hold.
        assert!(matches!(
            judge(node(true, None, RedisHealth::Down)),
            Verdict::Hold(_)
        ));
        for redis in [RedisHealth::Recovering, RedisHealth::Down] {
            assert!(matches!(
                judge(node(true, Some(Seats::Gone), redis)),
                Verdict::Hold(_)
            ));
        }
        // A node whose pod fails readiness but still reports stays.
        assert_eq!(
            judge(node(true, alive, RedisHealth::Recovering)),
            Verdict::Keep
        );
    }

    #[test]
    fn says_why_nothing_could_be_chosen() {
        assert_eq!(
            Waiting::no_candidate(&[]).message,
            "no other node of the fleet is Ready"
        );
        assert_eq!(
            Waiting::no_candidate(&["chat-0".into()]).message,
            "no Ready node has a fresh, non-draining load report"
        );
    }

    #[test]
    fn endpoints_prefer_the_template_then_the_advertised_address() {
        assert_eq!(
            node_base_url(
                Some("wss://{pod}.{fleet}.{namespace}.example/"),
                "chat",
                "ns",
                "chat-0",
                Some("ws://ignored".into()),
            ),
            "wss://chat-0.chat.ns.example"
        );
        assert_eq!(
            node_base_url(
                None,
                "chat",
                "ns",
                "chat-0",
                Some("ws://10.0.0.1:8080".into())
            ),
            "ws://10.0.0.1:8080"
        );
        assert_eq!(
            node_base_url(None, "chat", "ns", "chat-0", None),
            "ws://chat-0.chat.ns.svc:8080"
        );
    }

    #[test]
    fn an_empty_room_expires_after_its_ttl() {
        let now: Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let resync = Duration::from_secs(5);
        assert_eq!(
            empty_room(None, Some("2026-01-01T00:00:00Z"), now, resync),
            EmptyRoom::Recheck(resync)
        );
        assert_eq!(
            empty_room(Some(60), None, now, resync),
            EmptyRoom::Recheck(resync)
        );
        assert_eq!(
            empty_room(Some(600), Some("2026-01-01T00:00:00Z"), now, resync),
            EmptyRoom::Expired { empty_for: 600 }
        );
        assert_eq!(
            empty_room(Some(602), Some("2026-01-01T00:00:00Z"), now, resync),
            EmptyRoom::Recheck(Duration::from_secs(2))
        );
    }

    #[test]
    fn a_room_bigger_than_a_node_reserves_one_nodes_seats_and_spans_the_rest() {
        assert_eq!(super::home_seats(10, 300), 10);
        assert_eq!(super::home_seats(900, 300), 300);
        assert_eq!(super::home_seats(5, 0), 1);
    }
}
