//! The statuses the reconcilers write, built by pure functions of the old status and what was
//! decided, and the conditions both resources share. A condition's transition time moves only
//! when its status does, so rewriting a status never moves time forward.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{ChatRoomStatus, RoomPhase};
use crate::decide::room::Waiting;
use chatfleet_wire::load::RoomLoad;

/// Condition types and reasons: stable names clients and `kubectl wait` rely on.
pub mod condition {
    /// A room: it has a node (also while overflowing).
    pub const PLACED: &str = "Placed";
    /// A room: every node was full, so it went to the quietest.
    pub const OVERFLOW: &str = "Overflow";
    /// A fleet: every replica is Ready and reporting.
    pub const READY: &str = "Ready";
    /// A fleet: the autoscaler is on; its reason says what it did last.
    pub const AUTOSCALING: &str = "Autoscaling";

    pub const NODE_HAD_ROOM: &str = "NodeHadRoom";
    pub const OVERFLOWED: &str = "Overflow";
    pub const FLEET_FULL: &str = "FleetFull";
    pub const RESCHEDULING: &str = "Rescheduling";
    pub const CLOSED: &str = "Closed";
    pub const NO_CANDIDATE: &str = "NoCandidate";
    pub const ALL_NODES_REPORTING: &str = "AllNodesReporting";
    pub const NODES_MISSING: &str = "NodesMissing";
    pub const REDIS_UNAVAILABLE: &str = "RedisUnavailable";
}

/// Sets the condition `type_`, keeping its transition time when its status is unchanged.
pub fn upsert(
    conditions: &mut Vec<Condition>,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if value { "True" } else { "False" }.to_owned();
    let old = conditions.iter().position(|c| c.type_ == type_);
    let since = match old {
        Some(i) if conditions[i].status == status => conditions[i].last_transition_time.clone(),
        _ => Time(now),
    };
    let condition = Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time: since,
    };
    match old {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// The `Placed` and `Overflow` conditions follow the room's phase.
pub fn set_room_conditions(status: &mut ChatRoomStatus, generation: Option<i64>, now: Timestamp) {
    let placed = matches!(status.phase, RoomPhase::Placed | RoomPhase::Overflow);
    let overflow = status.phase == RoomPhase::Overflow;
    let reason = status.reason.clone().unwrap_or_default();
    let placed_reason = match status.phase {
        RoomPhase::Placed => condition::NODE_HAD_ROOM,
        RoomPhase::Overflow => condition::OVERFLOWED,
        RoomPhase::Rescheduling => condition::RESCHEDULING,
        RoomPhase::Closed => condition::CLOSED,
        RoomPhase::Pending => condition::NO_CANDIDATE,
    };
    let conditions = &mut status.conditions;
    upsert(
        conditions,
        condition::PLACED,
        placed,
        placed_reason,
        &reason,
        generation,
        now,
    );
    let overflow_reason = if overflow {
        condition::FLEET_FULL
    } else {
        condition::NODE_HAD_ROOM
    };
    upsert(
        conditions,
        condition::OVERFLOW,
        overflow,
        overflow_reason,
        &reason,
        generation,
        now,
    );
}

/// A room that cannot be placed now: no node, no endpoint, and the reason in `Placed`.
pub fn pending(
    old: &ChatRoomStatus,
    waiting: &Waiting,
    generation: Option<i64>,
    now: Timestamp,
) -> ChatRoomStatus {
    let mut status = ChatRoomStatus {
        phase: RoomPhase::Pending,
        node: None,
        pod_uid: None,
        endpoint: None,
        reason: Some(waiting.message.clone()),
        observed_generation: generation,
        ..old.clone()
    };
    set_room_conditions(&mut status, generation, now);
    if let Some(placed) = status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == condition::PLACED)
    {
        placed.reason = waiting.reason.to_owned();
    }
    status
}

/// A room whose node is gone or draining, about to be placed elsewhere.
pub fn rescheduling(
    old: &ChatRoomStatus,
    from: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> ChatRoomStatus {
    let mut status = ChatRoomStatus {
        phase: RoomPhase::Rescheduling,
        reason: Some(format!("node {from} is gone or draining")),
        ..old.clone()
    };
    set_room_conditions(&mut status, generation, now);
    status
}

/// How a placement that is news (a move, an overflow) is announced: the Event's reason and
/// note. A routine first placement has none: its `Placed` condition records it, and an Event
/// per room would double the API server's writes per placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub reason: &'static str,
    pub note: String,
}

/// A room just placed on `node` (newly, after a move, or overflowing), and how to announce it.
pub fn placed(
    old: &ChatRoomStatus,
    placement: &Placed<'_>,
    generation: Option<i64>,
    now: Timestamp,
) -> (ChatRoomStatus, Option<Announcement>) {
    let node = placement.node;
    let (reason, announcement) = match (placement.phase, placement.moving_from) {
        // A move is news whatever phase it lands in: members were sent elsewhere.
        (RoomPhase::Overflow, Some(from)) => (
            format!(
                "moved from {from}; every node is full, placed on the node with the lowest message rate"
            ),
            Some(Announcement {
                reason: "Rescheduled",
                note: format!(
                    "moved from {from} to {node}; every node of {} is full, {node} is the quietest",
                    placement.fleet
                ),
            }),
        ),
        (RoomPhase::Overflow, None) => (
            "every node is full; placed on the node with the lowest message rate".to_owned(),
            Some(Announcement {
                reason: "Overflow",
                note: format!(
                    "every node of {} is full; placed on {node}, the quietest",
                    placement.fleet
                ),
            }),
        ),
        (_, Some(from)) => (
            format!("moved from {from}"),
            Some(Announcement {
                reason: "Rescheduled",
                note: format!("moved from {from} to {node}"),
            }),
        ),
        _ => ("the node had free seats".to_owned(), None),
    };
    let mut status = ChatRoomStatus {
        phase: placement.phase,
        node: Some(node.to_owned()),
        pod_uid: placement.pod_uid.map(str::to_owned),
        endpoint: Some(placement.endpoint.to_owned()),
        reason: Some(reason),
        observed_generation: generation,
        // As the next resync would set it, so that resync has nothing to write.
        empty_since: empty_since(old.members, old.empty_since.as_deref(), now),
        ..old.clone()
    };
    set_room_conditions(&mut status, generation, now);
    (status, announcement)
}

/// A placement that holds seats and is to be written down.
#[derive(Debug, Clone, Copy)]
pub struct Placed<'a> {
    pub fleet: &'a str,
    pub node: &'a str,
    /// The UID of the node's pod, recorded so a pod made anew under its name is told apart.
    pub pod_uid: Option<&'a str>,
    pub endpoint: &'a str,
    pub phase: RoomPhase,
    pub moving_from: Option<&'a str>,
}

/// A room staying on its healthy node: its members, rate and empty-room clock refreshed.
pub fn staying(
    old: &ChatRoomStatus,
    load: RoomLoad,
    endpoint: String,
    pod_uid: Option<&str>,
    generation: Option<i64>,
    now: Timestamp,
) -> ChatRoomStatus {
    let phase = match old.phase {
        RoomPhase::Overflow => RoomPhase::Overflow,
        _ => RoomPhase::Placed,
    };
    let mut status = ChatRoomStatus {
        phase,
        members: load.members,
        message_rate: reported_rate(old.message_rate, load.msg_rate),
        observed_generation: generation,
        endpoint: Some(endpoint),
        // A room placed before UIDs were recorded learns its pod's now.
        pod_uid: old.pod_uid.clone().or(pod_uid.map(str::to_owned)),
        ..old.clone()
    };
    if phase != old.phase {
        status.reason = Some("its node is healthy".to_owned());
    }
    status.empty_since = empty_since(load.members, old.empty_since.as_deref(), now);
    set_room_conditions(&mut status, generation, now);
    status
}

/// When the room became empty: kept while it stays empty, `now` if it just became so.
fn empty_since(members: u32, since: Option<&str>, now: Timestamp) -> Option<String> {
    match (members, since) {
        (0, Some(since)) => Some(since.to_owned()),
        (0, None) => Some(now.to_string()),
        _ => None,
    }
}

/// A room whose deletion is held up: its members, seats or history could not be released yet.
pub fn closing(old: &ChatRoomStatus, error: &impl std::fmt::Display) -> ChatRoomStatus {
    ChatRoomStatus {
        phase: RoomPhase::Closed,
        reason: Some(format!(
            "the room is being deleted; cleanup failed: {error}"
        )),
        ..old.clone()
    }
}

/// The rate shown in the status moves only when it changes by more than a tenth (or 0.5/s), so
/// a busy room's status is not rewritten, and the room reconciled again, on every heartbeat.
pub fn reported_rate(shown: f64, measured: f64) -> f64 {
    if (measured - shown).abs() <= (shown * 0.1).max(0.5) {
        shown
    } else {
        (measured * 100.0).round() / 100.0
    }
}

/// A fleet's `Ready` condition: true once `ready` of `wanted` nodes report.
pub fn fleet_ready(
    old: &[Condition],
    ready: u32,
    wanted: u32,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let all_ready = ready >= wanted;
    let (reason, message) = if all_ready {
        (
            condition::ALL_NODES_REPORTING,
            format!("{wanted} of {wanted} nodes ready and reporting"),
        )
    } else {
        (
            condition::NODES_MISSING,
            format!("{ready} of {wanted} nodes ready and reporting"),
        )
    };
    let mut conditions = old.to_vec();
    upsert(
        &mut conditions,
        condition::READY,
        all_ready,
        reason,
        &message,
        generation,
        now,
    );
    conditions.retain(|c| c.type_ == condition::READY || c.type_ == condition::AUTOSCALING);
    conditions
}

/// Removes a fleet's `Autoscaling` condition (autoscaling is off).
pub fn clear_autoscaling(conditions: &mut Vec<Condition>) {
    conditions.retain(|c| c.type_ != condition::AUTOSCALING);
}

/// A fleet's `Autoscaling` condition: `on` while the autoscaler can act, with what it did last
/// (`Grew`, `Draining`, `DrainCalledOff`, `Shrank`, `Stable`) or why it cannot (`InvalidBuffer`).
pub fn set_autoscaling(
    conditions: &mut Vec<Condition>,
    on: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    upsert(
        conditions,
        condition::AUTOSCALING,
        on,
        reason,
        message,
        generation,
        now,
    );
}

/// A fleet's `Ready` condition when its Redis (or its Secret) cannot be read.
pub fn fleet_unmeasured(
    old: &[Condition],
    why: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    // The outage's start stays put while it lasts, even if its message changes.
    let since = old
        .iter()
        .find(|c| {
            c.type_ == condition::READY
                && c.status == "False"
                && c.reason == condition::REDIS_UNAVAILABLE
        })
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    vec![Condition {
        type_: condition::READY.to_owned(),
        status: "False".to_owned(),
        reason: condition::REDIS_UNAVAILABLE.to_owned(),
        message: format!("cannot read the nodes' load reports: {why}"),
        observed_generation: generation,
        last_transition_time: since,
    }]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn find<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
        conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let mut conditions = Vec::new();
        let t0 = at("2026-01-01T00:00:00Z");
        let t1 = at("2026-01-01T00:05:00Z");
        upsert(&mut conditions, "Placed", true, "A", "first", Some(1), t0);
        upsert(&mut conditions, "Placed", true, "B", "second", Some(2), t1);
        let placed = find(&conditions, "Placed");
        assert_eq!(placed.last_transition_time, Time(t0));
        assert_eq!(
            (placed.reason.as_str(), placed.message.as_str()),
            ("B", "second")
        );
        assert_eq!(placed.observed_generation, Some(2));
        upsert(&mut conditions, "Placed", false, "C", "third", Some(2), t1);
        assert_eq!(find(&conditions, "Placed").last_transition_time, Time(t1));
        assert_eq!(conditions.len(), 1);
    }

    /// A room's first placement, on a node with free seats.
    fn first_placement() -> Placed<'static> {
        Placed {
            fleet: "chat",
            node: "chat-1",
            pod_uid: Some("uid-1"),
            endpoint: "ws://chat-1/v1/rooms/a/b/ws",
            phase: RoomPhase::Placed,
            moving_from: None,
        }
    }

    #[test]
    fn placing_moving_and_overflowing_each_say_so() {
        let now = at("2026-01-01T00:00:00Z");
        let old = ChatRoomStatus::default();
        let mut placement = first_placement();
        let (status, said) = placed(&old, &placement, Some(3), now);
        assert_eq!(status.node.as_deref(), Some("chat-1"));
        assert_eq!(status.endpoint.as_deref(), Some(placement.endpoint));
        assert_eq!(said, None, "a routine placement is in the status only");
        assert_eq!(status.reason.as_deref(), Some("the node had free seats"));
        assert_eq!(find(&status.conditions, condition::PLACED).status, "True");
        assert_eq!(
            find(&status.conditions, condition::OVERFLOW).status,
            "False"
        );

        placement.moving_from = Some("chat-0");
        let (status, said) = placed(&old, &placement, Some(3), now);
        assert_eq!(said.unwrap().reason, "Rescheduled");
        assert_eq!(status.reason.as_deref(), Some("moved from chat-0"));

        // A move that lands in Overflow is still a move.
        placement.phase = RoomPhase::Overflow;
        let (status, said) = placed(&old, &placement, Some(3), now);
        let said = said.unwrap();
        assert_eq!(said.reason, "Rescheduled");
        assert!(
            said.note.starts_with("moved from chat-0 to chat-1"),
            "{}",
            said.note
        );
        assert!(
            status
                .reason
                .as_deref()
                .unwrap()
                .starts_with("moved from chat-0;"),
            "{:?}",
            status.reason
        );
        assert_eq!(find(&status.conditions, condition::OVERFLOW).status, "True");

        placement.moving_from = None;
        let (status, said) = placed(&old, &placement, Some(3), now);
        assert_eq!(said.unwrap().reason, "Overflow");
        let overflow = find(&status.conditions, condition::OVERFLOW);
        assert_eq!(
            (overflow.status.as_str(), overflow.reason.as_str()),
            ("True", "FleetFull")
        );
    }

    /// The reconcile after a placement (the next resync) finds the status it would write
    /// already there, so a placement costs one status write.
    #[test]
    fn a_new_empty_room_stays_as_it_was_placed() {
        let placed_at = at("2026-01-01T00:00:00Z");
        let placement = first_placement();
        let (status, _) = placed(&ChatRoomStatus::default(), &placement, Some(1), placed_at);
        assert_eq!(status.empty_since, Some(placed_at.to_string()));

        let later = at("2026-01-01T00:00:30Z");
        let stays = staying(
            &status,
            RoomLoad::default(),
            placement.endpoint.to_owned(),
            placement.pod_uid,
            Some(1),
            later,
        );
        assert_eq!(stays, status);
    }

    #[test]
    fn a_waiting_room_loses_its_node_and_names_the_reason() {
        let now = at("2026-01-01T00:00:00Z");
        let old = ChatRoomStatus {
            phase: RoomPhase::Placed,
            node: Some("chat-0".into()),
            endpoint: Some("ws://x".into()),
            ..ChatRoomStatus::default()
        };
        let waiting = Waiting {
            reason: "FleetNotFound",
            message: "fleet chat does not exist".into(),
            retry: Duration::from_secs(30),
        };
        let status = pending(&old, &waiting, Some(1), now);
        assert_eq!(status.phase, RoomPhase::Pending);
        assert_eq!((status.node, status.endpoint), (None, None));
        let placed = find(&status.conditions, condition::PLACED);
        assert_eq!(
            (placed.status.as_str(), placed.reason.as_str()),
            ("False", "FleetNotFound")
        );
        assert_eq!(placed.message, "fleet chat does not exist");
    }

    #[test]
    fn a_staying_room_starts_and_keeps_its_empty_clock() {
        let t0 = at("2026-01-01T00:00:00Z");
        let t1 = at("2026-01-01T00:01:00Z");
        let old = ChatRoomStatus {
            phase: RoomPhase::Overflow,
            ..ChatRoomStatus::default()
        };
        let empty = RoomLoad {
            members: 0,
            msg_rate: 0.0,
        };
        let first = staying(&old, empty, "ws://e".into(), None, None, t0);
        assert_eq!(
            first.phase,
            RoomPhase::Overflow,
            "an overflowing room stays so"
        );
        assert_eq!(first.empty_since, Some(t0.to_string()));
        let later = staying(&first, empty, "ws://e".into(), None, None, t1);
        assert_eq!(later.empty_since, Some(t0.to_string()));
        let busy = RoomLoad {
            members: 2,
            msg_rate: 3.0,
        };
        let joined = staying(&later, busy, "ws://e".into(), None, None, t1);
        assert_eq!(
            (joined.empty_since, joined.members, joined.message_rate),
            (None, 2, 3.0)
        );
    }

    #[test]
    fn the_rate_moves_only_by_more_than_a_tenth() {
        assert_eq!(reported_rate(10.0, 10.9), 10.0);
        assert_eq!(reported_rate(10.0, 11.5), 11.5);
        assert_eq!(reported_rate(0.0, 0.4), 0.0);
        assert_eq!(reported_rate(0.0, 0.567), 0.57);
    }

    #[test]
    fn a_fleet_is_ready_once_every_node_reports() {
        let t0 = at("2026-01-01T00:00:00Z");
        let t1 = at("2026-01-01T00:01:00Z");
        let missing = fleet_ready(&[], 1, 3, Some(1), t0);
        let ready = find(&missing, condition::READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "NodesMissing")
        );
        assert_eq!(ready.message, "1 of 3 nodes ready and reporting");
        let still = fleet_ready(&missing, 2, 3, Some(1), t1);
        assert_eq!(
            find(&still, condition::READY).last_transition_time,
            Time(t0)
        );
        let all = fleet_ready(&still, 3, 3, Some(1), t1);
        assert_eq!(find(&all, condition::READY).status, "True");
        assert_eq!(find(&all, condition::READY).last_transition_time, Time(t1));

        let down = fleet_unmeasured(&all, "connection refused", Some(1), t0);
        let later = fleet_unmeasured(&down, "timed out", Some(1), t1);
        let ready = find(&later, condition::READY);
        assert_eq!(ready.reason, "RedisUnavailable");
        assert_eq!(
            ready.last_transition_time,
            Time(t0),
            "the outage's start stays put"
        );
    }
}
