//! The `ChatRoom` reconciler: keeps each room on a live node of its fleet.
//!
//! It reads the room's fleet, the fleet's Ready pods (from the pod cache) and their seats in
//! Redis; decides with [`placement::place`]; reserves atomically; and patches the status. A
//! placed room stays on its node until the node's report expires, its pod goes away or it
//! drains; then the room moves and its connected members get a `moved` frame. A finalizer
//! closes the room on its nodes and releases its seats and history before the object goes.

use std::sync::Arc;
use std::time::Duration;

use chatnode::directory::ws_endpoint;
use chatnode::store::RoomSettings;
use chatnode::wire::RoomId;
use chatnode::wire::frames::ServerFrame;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::context::Context;
use crate::crd::{ChatFleet, ChatRoom, ChatRoomStatus, PlacementStrategy, RoomPhase};
use crate::error::{Error, Result};
use crate::placement::{self, NodeLoad, Placement, Strategy};
use crate::redis_pool::FleetRedis;
use crate::seats::Seats;
use crate::workload::FLEET_LABEL;

pub const FINALIZER: &str = "chatfleet.dev/room";
/// Attempts at reserving before giving up for this reconcile (others may race for seats).
const RESERVE_ATTEMPTS: usize = 5;

/// Entry point for the controller.
pub async fn reconcile(room: Arc<ChatRoom>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics
        .reconciles
        .get_or_create(&crate::metrics::ControllerLabel { controller: "room" })
        .inc();
    let namespace = room
        .namespace()
        .ok_or_else(|| Error::NoNamespace(room.name_any()))?;
    let key = format!("{namespace}/{}", room.name_any());
    let api: Api<ChatRoom> = Api::namespaced(ctx.client.clone(), &namespace);
    let action = finalizer(&api, FINALIZER, room, |event| async {
        match event {
            Event::Apply(room) => apply(&room, &ctx).await,
            Event::Cleanup(room) => cleanup(&room, &ctx).await,
        }
    })
    .await
    .map_err(|error| match error {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })?;
    ctx.backoff.succeeded(&key);
    Ok(action)
}

/// Retry policy on errors: per room, doubling from one second.
pub fn error_policy(room: Arc<ChatRoom>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(room = %room.name_any(), %error, "room reconcile failed");
    ctx.metrics
        .errors
        .get_or_create(&crate::metrics::ErrorLabel {
            controller: "room",
            kind: error.kind(),
        })
        .inc();
    let key = format!(
        "{}/{}",
        room.namespace().unwrap_or_default(),
        room.name_any()
    );
    Action::requeue(ctx.backoff.failed(&key))
}

/// The room's id on the chat nodes: `namespace/name`.
pub fn room_id(room: &ChatRoom) -> Result<RoomId> {
    let id = format!(
        "{}/{}",
        room.namespace().unwrap_or_default(),
        room.name_any()
    );
    id.parse()
        .map_err(|e: chatnode::wire::room_id::RoomIdError| Error::BadRoomId(id, e.to_string()))
}

async fn apply(room: &ChatRoom, ctx: &Context) -> Result<Action> {
    let id = room_id(room)?;
    let namespace = room.namespace().unwrap_or_default();
    let fleets: Api<ChatFleet> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(fleet) = fleets.get_opt(&room.spec.fleet).await? else {
        let reason = format!("fleet {} does not exist", room.spec.fleet);
        pending(room, ctx, "FleetNotFound", &reason).await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    let redis = ctx.redis.for_fleet(&ctx.client, &fleet).await?;
    let limit = fleet.spec.limits.members_per_room;
    let max_members = room.spec.max_members.unwrap_or(limit);
    if max_members > limit {
        let reason = format!("maxMembers {max_members} is above the fleet's limit of {limit}");
        pending(room, ctx, "MaxMembersAboveFleetLimit", &reason).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    if room.spec.expected_members > max_members {
        let reason = format!(
            "expectedMembers {} is above the room's limit of {max_members}",
            room.spec.expected_members
        );
        pending(room, ctx, "ExpectedAboveMaxMembers", &reason).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    let settings = RoomSettings {
        max_members,
        created_ms: Timestamp::now().as_millisecond() as u64,
    };

    let ready = ready_pods(&ctx.pods.state(), &namespace, &fleet.name_any());
    let old = room.status.clone().unwrap_or_default();
    // A placed room stays while its pod is Ready and its node reports and is not draining.
    if let Some(node) = old.node.as_deref()
        && ready.iter().any(|pod| pod == node)
    {
        let seats = redis
            .seats
            .force(node, &id, room.spec.expected_members)
            .await?;
        if matches!(seats.seats, Seats::Reserved { .. }) {
            // Keeps the room's settings alive while nobody has joined it yet.
            redis.rooms.create_room(&id, settings).await?;
            return stay(room, &fleet, &redis, &id, node, &ready, ctx).await;
        }
    }

    // Unplaced, or its node is gone or draining: choose one.
    let moving_from = old.node.clone();
    let mut version = room.resource_version();
    if let Some(from) = &moving_from {
        tracing::info!(room = %id, node = %from, "node is gone or draining; rescheduling");
        redis.seats.release(from, &id).await?;
        let mut status = old.clone();
        status.phase = RoomPhase::Rescheduling;
        status.reason = Some(format!("node {from} is gone or draining"));
        set_conditions(&mut status, room.meta().generation);
        version = patch_status(room, ctx, &status, version.as_deref()).await?;
        ctx.metrics.reschedules.inc();
    } else if room.status.is_none() {
        // A new ChatRoom may reuse the name of one deleted earlier: its tombstone goes.
        redis.rooms.reopen_room(&id).await?;
    }
    redis.rooms.create_room(&id, settings).await?;
    let started = std::time::Instant::now();
    let candidates: Vec<String> = ready
        .iter()
        .filter(|pod| Some(*pod) != moving_from.as_ref())
        .cloned()
        .collect();
    let Some((node, phase)) = choose_and_reserve(room, &fleet, &redis, &id, &candidates).await?
    else {
        let reason = if candidates.is_empty() {
            "no other node of the fleet is Ready"
        } else {
            "no Ready node has a fresh, non-draining load report"
        };
        pending(room, ctx, "NoCandidate", reason).await?;
        return Ok(Action::requeue(Duration::from_secs(5)));
    };
    ctx.metrics
        .placement_seconds
        .observe(started.elapsed().as_secs_f64());
    let placed = Placed {
        node: &node,
        phase,
        moving_from: moving_from.as_deref(),
        version: version.as_deref(),
    };
    let result = record_placement(room, &fleet, &redis, &id, placed, ctx).await;
    if result.is_err() {
        // Whatever failed, the seats must not stay held for a placement nobody recorded.
        let _ = redis.seats.release(&node, &id).await;
    }
    result
}

/// A placement that holds seats and still has to be written down.
struct Placed<'a> {
    node: &'a str,
    phase: RoomPhase,
    moving_from: Option<&'a str>,
    /// The room's resourceVersion the status patch must match.
    version: Option<&'a str>,
}

/// Writes the placement into the status (only if nobody changed the room meanwhile), then
/// tells members of a moved room where it went, and records an Event.
async fn record_placement(
    room: &ChatRoom,
    fleet: &ChatFleet,
    redis: &FleetRedis,
    id: &RoomId,
    placed: Placed<'_>,
    ctx: &Context,
) -> Result<Action> {
    let Placed {
        node,
        phase,
        moving_from,
        version,
    } = placed;
    let endpoint = endpoint(fleet, redis, node, id).await?;
    let (reason, event_reason, note) = match (phase, moving_from) {
        (RoomPhase::Overflow, _) => (
            "every node is full; placed on the node with the lowest message rate".to_owned(),
            "Overflow",
            format!(
                "every node of {} is full; placed on {node}, the quietest",
                fleet.name_any()
            ),
        ),
        (_, Some(from)) => (
            format!("moved from {from}"),
            "Rescheduled",
            format!("moved from {from} to {node}"),
        ),
        _ => (
            "the node had free seats".to_owned(),
            "Placed",
            format!("placed on {node}"),
        ),
    };
    let old = room.status.clone().unwrap_or_default();
    let mut status = ChatRoomStatus {
        phase,
        node: Some(node.to_owned()),
        endpoint: Some(endpoint.clone()),
        reason: Some(reason),
        observed_generation: room.meta().generation,
        ..old
    };
    set_conditions(&mut status, room.meta().generation);
    patch_status(room, ctx, &status, version).await?;
    tracing::info!(room = %id, %node, ?phase, "placed");
    if moving_from.is_some() {
        let moved = ServerFrame::Moved {
            room: id.clone(),
            endpoint,
        };
        redis.rooms.publish_to_room(id, &moved.to_json()).await?;
    }
    if phase == RoomPhase::Overflow {
        ctx.metrics.overflows.inc();
    }
    publish(room, ctx, EventType::Normal, event_reason, note).await;
    if phase == RoomPhase::Overflow {
        // The condition and a warning make an overflow visible in `kubectl describe`.
        publish(
            room,
            ctx,
            EventType::Warning,
            "FleetFull",
            "no node had room".into(),
        )
        .await;
    }
    Ok(Action::requeue(ctx.settings.room_resync))
}

/// Reads the candidates' seats, places, and reserves; retries when another reconcile took the
/// seats first. `None` when no candidate has a live report.
async fn choose_and_reserve(
    room: &ChatRoom,
    fleet: &ChatFleet,
    redis: &FleetRedis,
    id: &RoomId,
    candidates: &[String],
) -> Result<Option<(String, RoomPhase)>> {
    let mut nodes = Vec::with_capacity(candidates.len());
    for pod in candidates {
        let seats = redis.seats.peek(pod, id).await?;
        if let Seats::Free { free } = seats.seats {
            nodes.push(NodeLoad {
                name: pod.clone(),
                free_seats: free,
                msg_rate: seats.msg_rate,
            });
        }
    }
    let strategy = match fleet.spec.placement {
        PlacementStrategy::LeastLoaded => Strategy::LeastLoaded,
        PlacementStrategy::Packed => Strategy::Packed,
    };
    let expected = room.spec.expected_members;
    for _ in 0..RESERVE_ATTEMPTS {
        let (node, phase) = match placement::place(&nodes, expected, strategy) {
            Placement::Fits { node } => (node, RoomPhase::Placed),
            Placement::Overflow { node } => (node, RoomPhase::Overflow),
            Placement::NoCandidate => return Ok(None),
        };
        let outcome = if phase == RoomPhase::Overflow {
            redis.seats.force(&node, id, expected).await?
        } else {
            redis.seats.reserve(&node, id, expected).await?
        };
        match outcome.seats {
            Seats::Reserved { .. } => return Ok(Some((node, phase))),
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
        "no reservation for {id} after {RESERVE_ATTEMPTS} attempts"
    )))
}

/// The room stays on its healthy node: refresh members, rate and the empty-room clock.
async fn stay(
    room: &ChatRoom,
    fleet: &ChatFleet,
    redis: &FleetRedis,
    id: &RoomId,
    node: &str,
    ready: &[String],
    ctx: &Context,
) -> Result<Action> {
    let load = redis.seats.room_load(node, id).await?;
    let old = room.status.clone().unwrap_or_default();
    let phase = match old.phase {
        RoomPhase::Overflow => RoomPhase::Overflow,
        _ => RoomPhase::Placed,
    };
    let mut status = ChatRoomStatus {
        phase,
        members: load.members,
        message_rate: reported_rate(old.message_rate, load.msg_rate),
        observed_generation: room.meta().generation,
        endpoint: Some(endpoint(fleet, redis, node, id).await?),
        ..old.clone()
    };
    if phase != old.phase {
        status.reason = Some("its node is healthy".to_owned());
    }
    let now = Timestamp::now();
    status.empty_since = match (load.members, &old.empty_since) {
        (0, Some(since)) => Some(since.clone()),
        (0, None) => Some(now.to_string()),
        _ => None,
    };
    set_conditions(&mut status, room.meta().generation);
    if status != old {
        patch_status(room, ctx, &status, room.resource_version().as_deref()).await?;
    }
    let mut next = ctx.settings.room_resync;
    if let (Some(ttl), Some(since)) = (room.spec.ttl_seconds_after_empty, &status.empty_since) {
        let since: Timestamp = since.parse().unwrap_or(now);
        let empty_for = now.duration_since(since).as_secs().max(0) as u64;
        if empty_for >= u64::from(ttl) {
            // Members left behind on another node (after a move) still count.
            if members_anywhere(redis, ready, id).await? > 0 {
                return Ok(Action::requeue(next));
            }
            tracing::info!(room = %id, empty_for, "empty past its TTL; deleting");
            let api: Api<ChatRoom> =
                Api::namespaced(ctx.client.clone(), &room.namespace().unwrap_or_default());
            api.delete(&room.name_any(), &DeleteParams::default())
                .await?;
            return Ok(Action::await_change());
        }
        next = next.min(Duration::from_secs(u64::from(ttl) - empty_for));
    }
    Ok(Action::requeue(next))
}

/// The rate shown in the status moves only when it changes by more than a tenth (or 0.5/s), so
/// a busy room's status is not rewritten, and the room reconciled again, on every heartbeat.
fn reported_rate(shown: f64, measured: f64) -> f64 {
    if (measured - shown).abs() <= (shown * 0.1).max(0.5) {
        shown
    } else {
        (measured * 100.0).round() / 100.0
    }
}

/// Members of the room on any Ready node of the fleet.
async fn members_anywhere(redis: &FleetRedis, ready: &[String], id: &RoomId) -> Result<u32> {
    let mut members = 0;
    for pod in ready {
        members += redis.seats.room_load(pod, id).await?.members;
    }
    Ok(members)
}

/// Finalizer: tell members the room is closed, drop its history and give back its seats.
async fn cleanup(room: &ChatRoom, ctx: &Context) -> Result<Action> {
    let id = room_id(room)?;
    let fleets: Api<ChatFleet> =
        Api::namespaced(ctx.client.clone(), &room.namespace().unwrap_or_default());
    let fleet = fleets.get_opt(&room.spec.fleet).await?;
    let Some(fleet) = fleet.filter(|f| f.meta().deletion_timestamp.is_none()) else {
        // The fleet, its nodes and its Redis are going or gone: nobody is left to tell.
        return Ok(Action::await_change());
    };
    let redis = ctx.redis.for_fleet(&ctx.client, &fleet).await?;
    if let Some(status) = &room.status {
        let closing = ChatRoomStatus {
            phase: RoomPhase::Closed,
            reason: Some("the room is being deleted".to_owned()),
            ..status.clone()
        };
        // Best effort: the room is going either way.
        let _ = patch_status(room, ctx, &closing, None).await;
    }
    let closed = ServerFrame::Closed {
        room: id.clone(),
        reason: "the room was deleted".to_owned(),
    };
    redis.rooms.close_room(&id, &closed.to_json()).await?;
    if let Some(node) = room.status.as_ref().and_then(|s| s.node.as_deref()) {
        redis.seats.release(node, &id).await?;
    }
    tracing::info!(room = %id, "closed");
    publish(
        room,
        ctx,
        EventType::Normal,
        "Closed",
        "members were told; seats and history released".into(),
    )
    .await;
    Ok(Action::await_change())
}

/// The fleet's pods that are Ready and not being deleted, by name.
pub fn ready_pods(pods: &[Arc<Pod>], namespace: &str, fleet: &str) -> Vec<String> {
    let mut ready: Vec<String> = pods
        .iter()
        .filter(|pod| pod.namespace().as_deref() == Some(namespace))
        .filter(|pod| pod.labels().get(FLEET_LABEL).map(String::as_str) == Some(fleet))
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| {
            pod.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|conditions| {
                    conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
        })
        .map(|pod| pod.name_any())
        .collect();
    ready.sort();
    ready
}

/// The room's WebSocket URL: the fleet's public template when set, else the node's own
/// advertised address.
async fn endpoint(
    fleet: &ChatFleet,
    redis: &FleetRedis,
    node: &str,
    id: &RoomId,
) -> Result<String> {
    let base = match &fleet.spec.public_endpoint {
        Some(template) => template
            .replace("{pod}", node)
            .replace("{namespace}", &fleet.namespace().unwrap_or_default())
            .replace("{fleet}", &fleet.name_any()),
        None => match redis.seats.report(node).await? {
            Some(report) => report.advertise_url,
            None => crate::workload::pod_url(
                &fleet.name_any(),
                &fleet.namespace().unwrap_or_default(),
                node,
            ),
        },
    };
    Ok(ws_endpoint(base.trim_end_matches('/'), id))
}

async fn pending(room: &ChatRoom, ctx: &Context, reason: &str, message: &str) -> Result<()> {
    let old = room.status.clone().unwrap_or_default();
    let mut status = ChatRoomStatus {
        phase: RoomPhase::Pending,
        node: None,
        endpoint: None,
        reason: Some(message.to_owned()),
        observed_generation: room.meta().generation,
        ..old.clone()
    };
    set_conditions(&mut status, room.meta().generation);
    if let Some(placed) = status.conditions.iter_mut().find(|c| c.type_ == "Placed") {
        placed.reason = reason.to_owned();
    }
    if status != old {
        tracing::info!(room = %room.name_any(), reason, message, "pending");
        patch_status(room, ctx, &status, room.resource_version().as_deref()).await?;
        publish(room, ctx, EventType::Warning, reason, message.to_owned()).await;
    }
    Ok(())
}

/// The `Placed` and `Overflow` conditions follow the phase; a condition's transition time
/// changes only when its status does, so rewriting the status never moves time forward.
fn set_conditions(status: &mut ChatRoomStatus, generation: Option<i64>) {
    let placed = matches!(status.phase, RoomPhase::Placed | RoomPhase::Overflow);
    let overflow = status.phase == RoomPhase::Overflow;
    let reason = status.reason.clone().unwrap_or_default();
    let placed_reason = match status.phase {
        RoomPhase::Placed => "NodeHadRoom",
        RoomPhase::Overflow => "Overflow",
        RoomPhase::Rescheduling => "Rescheduling",
        RoomPhase::Closed => "Closed",
        RoomPhase::Pending => "NoCandidate",
    };
    upsert(
        &mut status.conditions,
        "Placed",
        placed,
        placed_reason,
        &reason,
        generation,
    );
    let overflow_reason = if overflow { "FleetFull" } else { "NodeHadRoom" };
    upsert(
        &mut status.conditions,
        "Overflow",
        overflow,
        overflow_reason,
        &reason,
        generation,
    );
}

fn upsert(
    conditions: &mut Vec<Condition>,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let status = if value { "True" } else { "False" }.to_owned();
    let old = conditions.iter().position(|c| c.type_ == type_);
    let since = match old {
        Some(i) if conditions[i].status == status => conditions[i].last_transition_time.clone(),
        _ => Time(Timestamp::now()),
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

/// Merge-patches the status, as a precondition on `version` when given (a stale cache then
/// fails with a conflict instead of overwriting a newer placement), and returns the new
/// resourceVersion. Fields that are `None` are sent as null, so a merge patch clears them.
async fn patch_status(
    room: &ChatRoom,
    ctx: &Context,
    status: &ChatRoomStatus,
    version: Option<&str>,
) -> Result<Option<String>> {
    let api: Api<ChatRoom> =
        Api::namespaced(ctx.client.clone(), &room.namespace().unwrap_or_default());
    let mut body = serde_json::to_value(status).expect("statuses serialize");
    for field in ["node", "endpoint", "reason", "emptySince"] {
        body.as_object_mut()
            .expect("a status is an object")
            .entry(field)
            .or_insert(serde_json::Value::Null);
    }
    let mut patch = json!({ "status": body });
    if let Some(version) = version {
        patch["metadata"] = json!({ "resourceVersion": version });
    }
    let updated = api
        .patch_status(
            &room.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(updated.resource_version())
}

/// Events are best effort: a failure is logged, never fails the reconcile.
async fn publish(room: &ChatRoom, ctx: &Context, type_: EventType, reason: &str, note: String) {
    let event = KubeEvent {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Place".to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder().publish(&event, &room.object_ref(&())).await {
        tracing::warn!(%error, "cannot publish an event");
    }
}
