//! The `ChatRoom` reconciler: keeps each room on a live node of its fleet.
//!
//! It reads the room's fleet, the fleet's Ready pods (from the pod cache) and their seats in
//! Redis; decides with `crate::decide`; reserves atomically; and patches the status. A placed
//! room stays on its node until the node's report expires, its pod goes away or it drains;
//! then the room moves and its connected members get a `moved` frame. A finalizer closes the
//! room on its nodes and releases its seats and history before the object goes.

use std::sync::Arc;

use chatfleet_state::FleetState;
use chatfleet_state::reports::NodeSnapshot;
use chatfleet_state::rooms::RoomSettings;
use chatfleet_state::seats::Seats;
use chatfleet_wire::RoomId;
use chatfleet_wire::frames::ServerFrame;
use chatfleet_wire::room_id::RoomIdError;
use chatfleet_wire::urls::{transcript_path, ws_endpoint};
use chatfleet_wire::webhook::EventBody;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::placing::Reserved;
use super::pods::{fleet_pod_uid, fleet_pods, ready_pods};
use super::status::{self, Placed};
use super::{webhooks, writes};
use crate::context::Context;
use crate::crd::{CLOSE_REASON_ANNOTATION, ChatFleet, ChatRoom, RoomPhase};
use crate::decide::room::{self as decide, EmptyRoom, NodeEvidence, Verdict, Waiting};
use crate::error::{Error, Result};
use crate::fleet_redis::{FleetRedis, RedisHealth};
use crate::metrics::{ControllerLabel, ErrorLabel};

pub const FINALIZER: &str = "chatfleet.dev/room";
/// How often, at most, an empty placed room's settings are refreshed in Redis.
const SETTINGS_REFRESH: std::time::Duration = std::time::Duration::from_secs(300);
/// How soon a held placement is looked at again.
const HOLD_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Entry point for the controller.
pub async fn reconcile(room: Arc<ChatRoom>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics
        .reconciles
        .get_or_create(&ControllerLabel { controller: "room" })
        .inc();
    let namespace = room
        .namespace()
        .ok_or_else(|| Error::NoNamespace(room.name_any()))?;
    let key = format!("{namespace}/{}", room.name_any());
    let has_finalizer = room.finalizers().iter().any(|f| f == FINALIZER);
    let action = if room.meta().deletion_timestamp.is_some() {
        if !has_finalizer {
            // Our cleanup already ran; another finalizer holds the room.
            return Ok(Action::await_change());
        }
        if let Err(error) = cleanup(&room, &ctx).await {
            // A deletion that cannot finish says why in the room's status.
            let old = room.status.clone().unwrap_or_default();
            let closing = status::closing(&old, &error);
            if closing != old {
                let _ = writes::room_status(&room, &ctx, &closing, None).await;
            }
            return Err(error);
        }
        writes::remove_room_finalizer(&room, &ctx, FINALIZER).await?;
        Action::await_change()
    } else if has_finalizer {
        apply(&room, &ctx).await?
    } else {
        // Seats are reserved only once the room's deletion is sure to release them.
        let room = writes::add_room_finalizer(&room, &ctx, FINALIZER).await?;
        apply(&room, &ctx).await?
    };
    ctx.backoff.succeeded(&key);
    Ok(action)
}

/// Retry policy on errors: per room, doubling from one second.
pub fn error_policy(room: Arc<ChatRoom>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(room = %room.name_any(), %error, "room reconcile failed");
    ctx.metrics
        .errors
        .get_or_create(&ErrorLabel {
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
        .map_err(|e: RoomIdError| Error::BadRoomId(id, e.to_string()))
}

async fn apply(room: &ChatRoom, ctx: &Context) -> Result<Action> {
    let id = room_id(room)?;
    let namespace = room.namespace().unwrap_or_default();
    let Some(fleet) = ctx.fleet(&namespace, &room.spec.fleet).await? else {
        return wait(room, ctx, Waiting::fleet_not_found(&room.spec.fleet)).await;
    };
    let redis = ctx.redis.for_fleet(&ctx.client, &fleet).await?;
    let max_members = match decide::max_members(&room.spec, fleet.spec.limits.members_per_room) {
        Ok(max_members) => max_members,
        Err(waiting) => return wait(room, ctx, waiting).await,
    };
    // The ChatRoom's UID is the room's incarnation: a ChatRoom deleted and applied again
    // under its name is another room, with its own transcript, and old tokens do not join it.
    let settings = RoomSettings {
        max_members,
        created_ms: Timestamp::now().as_millisecond() as u64,
        incarnation: room.uid().unwrap_or_default(),
    };

    let pods = ctx.pods.state();
    let ready = ready_pods(&pods, &namespace, &fleet.name_any());
    // A placed room stays while its node is alive, and holds its node while that cannot be
    // told (a Redis outage); it moves only when its node is known to be gone or draining.
    if let Some(node) = room.status.as_ref().and_then(|s| s.node.as_deref()) {
        let pod_uid = fleet_pod_uid(&pods, &namespace, &fleet.name_any(), node);
        let recorded_uid = room.status.as_ref().and_then(|s| s.pod_uid.as_deref());
        let pod_exists = decide::same_pod(recorded_uid, pod_uid.as_deref());
        // The node's snapshot, shared by every room on it: a room whose reservation is right
        // costs Redis nothing here.
        let snapshot = if pod_exists {
            match redis.node(node).await {
                Ok(snapshot) => Some(snapshot),
                Err(error) => {
                    tracing::warn!(room = %id, %error, "cannot read the room's node");
                    None
                }
            }
        } else {
            None
        };
        let seats = match &snapshot {
            Some(snapshot) => {
                let expected = decide::home_seats(
                    room.spec.expected_members,
                    fleet.spec.limits.users_per_node,
                );
                let (seats, write) = decide::seats_on(snapshot, &id.to_string(), expected);
                if write {
                    match redis.seats.force(node, &id, expected).await {
                        Ok(written) => {
                            redis.noted_reservation(node, &id, expected).await;
                            Some(written.seats)
                        }
                        Err(error) => {
                            tracing::warn!(room = %id, %error, "cannot reserve the room's seats");
                            None
                        }
                    }
                } else {
                    Some(seats)
                }
            }
            None => None,
        };
        // Redis's health matters only when the seats say nothing or that the node is gone;
        // asking it then (and only then) also records an outage for the grace period.
        let mut health = if pod_exists && matches!(seats, None | Some(Seats::Gone)) {
            redis.health().await
        } else {
            RedisHealth::Up
        };
        if seats == Some(Seats::Gone)
            && health == RedisHealth::Up
            && !any_report(&redis, &pods, &namespace, &fleet).await?
        {
            // Every node's report vanished at once: Redis lost its data, the nodes did not.
            health = RedisHealth::Recovering;
        }
        let evidence = NodeEvidence {
            pod_exists,
            seats,
            redis: health,
        };
        match decide::judge(evidence) {
            Verdict::Keep => {
                let snapshot = snapshot.expect("a kept room's node was read");
                // Keeps the room's settings alive while nobody has joined it yet (its nodes
                // keep them alive once someone has): every few minutes is enough, and brings
                // them back soon after a Redis that lost its data.
                let every = (ctx.settings.room_ttl / 8).min(SETTINGS_REFRESH);
                if snapshot.room_load(&id).members == 0 && redis.settings_due(&id, every) {
                    redis.rooms.create(&id, settings).await?;
                }
                let here = Here {
                    node,
                    pod_uid: pod_uid.as_deref(),
                    snapshot: &snapshot,
                };
                return stay(room, &fleet, &redis, &id, here, &ready, ctx).await;
            }
            Verdict::Hold(why) => {
                tracing::info!(room = %id, %node, why, "holding the placement");
                return Ok(Action::requeue(HOLD_RETRY));
            }
            Verdict::Move => {}
        }
    }

    // Unplaced, or its node is gone or draining: choose one.
    let old = room.status.clone().unwrap_or_default();
    let moving_from = old.node.clone();
    let mut version = room.resource_version();
    if let Some(from) = &moving_from {
        tracing::info!(room = %id, node = %from, "node is gone or draining; rescheduling");
        redis.seats.release(from, &id).await?;
        let status = status::rescheduling(&old, from, room.meta().generation, Timestamp::now());
        version = writes::room_status(room, ctx, &status, version.as_deref()).await?;
        ctx.metrics.reschedules.inc();
    } else if room.status.is_none() {
        // A new ChatRoom may reuse the name of one deleted earlier: it is a new incarnation
        // (its UID), which the create below opens; the closed one stays closed.
        let opened = EventBody::RoomOpened { max_members };
        webhooks::queue(&fleet, &redis, room, opened, &[]).await?;
    }
    redis.rooms.create(&id, settings).await?;
    let started = std::time::Instant::now();
    let candidates = decide::candidates(&ready, moving_from.as_deref());
    let fleet_key = format!("{namespace}/{}", fleet.name_any());
    let home_seats =
        decide::home_seats(room.spec.expected_members, fleet.spec.limits.users_per_node);
    let placed = ctx
        .placer
        .place(
            &fleet_key,
            &redis.seats,
            &id,
            &candidates,
            home_seats,
            decide::strategy(fleet.spec.placement),
        )
        .await?
        .map(|reserved| match reserved {
            Reserved::Fits(node) => (node, RoomPhase::Placed),
            Reserved::Overflow(node) => (node, RoomPhase::Overflow),
        });
    let Some((node, phase)) = placed else {
        if moving_from.is_some() {
            // It stays Rescheduling, still naming the node it left, so its members are told
            // with `moved` once it lands somewhere.
            return Ok(Action::requeue(Waiting::no_candidate(&candidates).retry));
        }
        return wait(room, ctx, Waiting::no_candidate(&candidates)).await;
    };
    ctx.metrics
        .placement_seconds
        .observe(started.elapsed().as_secs_f64());
    // The node's snapshot counts the new reservation before its next read.
    redis.noted_reservation(&node, &id, home_seats).await;
    let result = async {
        let endpoint = endpoint(&fleet, &redis, &node, &id).await?;
        let pod_uid = fleet_pod_uid(&pods, &namespace, &fleet.name_any(), &node);
        let placement = Placed {
            fleet: &fleet.name_any(),
            node: &node,
            pod_uid: pod_uid.as_deref(),
            endpoint: &endpoint,
            phase,
            moving_from: moving_from.as_deref(),
        };
        record_placement(room, &fleet, &redis, &placement, version.as_deref(), ctx).await
    }
    .await;
    if result.is_err() {
        // Whatever failed, the seats must not stay held for a placement nobody recorded.
        let _ = redis.seats.release(&node, &id).await;
    }
    result
}

/// Writes the placement into the status (only if nobody changed the room meanwhile), then
/// tells members of a moved room where it went, and records an Event.
async fn record_placement(
    room: &ChatRoom,
    fleet: &ChatFleet,
    redis: &FleetState,
    placement: &Placed<'_>,
    version: Option<&str>,
    ctx: &Context,
) -> Result<Action> {
    let id = &room_id(room)?;
    let (node, endpoint) = (placement.node.to_owned(), placement.endpoint.to_owned());
    let event = match placement.moving_from {
        Some(from) => EventBody::RoomMoved {
            from: from.to_owned(),
            to: node,
            endpoint,
        },
        None => EventBody::RoomPlaced { node, endpoint },
    };
    // The version the placement is written over makes each placement its own event.
    let identity = [placement.node, version.unwrap_or_default()];
    webhooks::queue(fleet, redis, room, event, &identity).await?;
    let old = room.status.clone().unwrap_or_default();
    let (status, announcement) =
        status::placed(&old, placement, room.meta().generation, Timestamp::now());
    writes::room_status(room, ctx, &status, version).await?;
    let (node, phase) = (placement.node, placement.phase);
    tracing::info!(room = %id, %node, ?phase, "placed");
    if placement.moving_from.is_some() {
        let moved = ServerFrame::Moved {
            room: id.clone(),
            endpoint: placement.endpoint.to_owned(),
            from: placement.moving_from.map(str::to_owned),
        };
        redis.rooms.publish(id, &moved.to_json()).await?;
    }
    if phase == RoomPhase::Overflow {
        ctx.metrics.overflows.inc();
    }
    if let Some(announcement) = announcement {
        writes::room_event(
            room,
            ctx,
            EventType::Normal,
            announcement.reason,
            announcement.note,
        )
        .await;
    }
    if phase == RoomPhase::Overflow {
        // The condition and a warning make an overflow visible in `kubectl describe`.
        writes::room_event(
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

/// The node a placed room is on, the UID of its pod now, and its snapshot.
#[derive(Clone, Copy)]
struct Here<'a> {
    node: &'a str,
    pod_uid: Option<&'a str>,
    snapshot: &'a NodeSnapshot,
}

/// The room stays on its healthy node: refresh members, rate and the empty-room clock.
async fn stay(
    room: &ChatRoom,
    fleet: &ChatFleet,
    redis: &FleetRedis,
    id: &RoomId,
    Here {
        node,
        pod_uid,
        snapshot,
    }: Here<'_>,
    ready: &[String],
    ctx: &Context,
) -> Result<Action> {
    let mut load = snapshot.room_load(id);
    // A room's members may be on several nodes: their snapshots count them all.
    load.members = members_anywhere(redis, ready, id).await?.max(load.members);
    let old = room.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let advertised = snapshot.report.as_ref().map(|r| r.advertise_url.clone());
    let endpoint = endpoint_from(fleet, node, id, advertised);
    let status = status::staying(&old, load, endpoint, pod_uid, room.meta().generation, now);
    if status != old {
        writes::room_status(room, ctx, &status, room.resource_version().as_deref()).await?;
    }
    let resync = ctx.settings.room_resync;
    match decide::empty_room(
        room.spec.ttl_seconds_after_empty,
        status.empty_since.as_deref(),
        now,
        resync,
    ) {
        EmptyRoom::Recheck(next) => Ok(Action::requeue(next)),
        EmptyRoom::Expired { empty_for } => {
            // Members left behind on another node (after a move) still count.
            if members_anywhere(redis, ready, id).await? > 0 {
                return Ok(Action::requeue(resync));
            }
            tracing::info!(room = %id, empty_for, "empty past its TTL; deleting");
            let api: Api<ChatRoom> =
                Api::namespaced(ctx.client.clone(), &room.namespace().unwrap_or_default());
            api.delete(&room.name_any(), &DeleteParams::default())
                .await?;
            Ok(Action::await_change())
        }
    }
}

/// Whether any pod of the fleet has a fresh load report.
async fn any_report(
    redis: &FleetRedis,
    pods: &[Arc<k8s_openapi::api::core::v1::Pod>],
    namespace: &str,
    fleet: &ChatFleet,
) -> Result<bool> {
    for pod in fleet_pods(pods, namespace, &fleet.name_any()) {
        if redis.reports.report(&pod).await?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Members of the room on any Ready node of the fleet, from the nodes' snapshots.
async fn members_anywhere(redis: &FleetRedis, ready: &[String], id: &RoomId) -> Result<u32> {
    let mut members = 0u32;
    for pod in ready {
        members = members.saturating_add(redis.node(pod).await?.room_load(id).members);
    }
    Ok(members)
}

/// Finalizer: tell members the room is closed, drop its history and give back its seats.
async fn cleanup(room: &ChatRoom, ctx: &Context) -> Result<Action> {
    let id = room_id(room)?;
    let namespace = room.namespace().unwrap_or_default();
    let fleet = ctx.fleet(&namespace, &room.spec.fleet).await?;
    let Some(fleet) = fleet.filter(|f| f.meta().deletion_timestamp.is_none()) else {
        // The fleet, its nodes and its Redis are going or gone: nobody is left to tell.
        return Ok(Action::await_change());
    };
    let redis = ctx.redis.for_fleet(&ctx.client, &fleet).await?;
    let reason = room
        .annotations()
        .get(CLOSE_REASON_ANNOTATION)
        .cloned()
        .unwrap_or_else(|| "the room was deleted".to_owned());
    let incarnation = room.uid().unwrap_or_default();
    let closed = EventBody::RoomClosed {
        reason: reason.clone(),
        transcript: transcript_path(&id, &incarnation),
    };
    webhooks::queue(&fleet, &redis, room, closed, &[]).await?;
    redis.rooms.close(&id, &incarnation, &reason).await?;
    redis.forget_room(&id);
    if let Some(node) = room.status.as_ref().and_then(|s| s.node.as_deref()) {
        redis.seats.release(node, &id).await?;
    }
    tracing::info!(room = %id, "closed");
    writes::room_event(
        room,
        ctx,
        EventType::Normal,
        "Closed",
        "members were told; seats and history released".into(),
    )
    .await;
    Ok(Action::await_change())
}

/// The room's WebSocket URL on `node`.
async fn endpoint(
    fleet: &ChatFleet,
    redis: &FleetState,
    node: &str,
    id: &RoomId,
) -> Result<String> {
    let advertised = match fleet.spec.public_endpoint {
        Some(_) => None,
        None => redis.reports.report(node).await?.map(|r| r.advertise_url),
    };
    Ok(endpoint_from(fleet, node, id, advertised))
}

/// The room's WebSocket URL on `node`, from the fleet's template or what the node advertises.
fn endpoint_from(fleet: &ChatFleet, node: &str, id: &RoomId, advertised: Option<String>) -> String {
    let template = fleet.spec.public_endpoint.as_deref();
    let namespace = fleet.namespace().unwrap_or_default();
    let base = decide::node_base_url(template, &fleet.name_any(), &namespace, node, advertised);
    ws_endpoint(&base, id)
}

/// Records why the room waits (once: only when the status changes), and when to look again.
async fn wait(room: &ChatRoom, ctx: &Context, waiting: Waiting) -> Result<Action> {
    let old = room.status.clone().unwrap_or_default();
    let status = status::pending(&old, &waiting, room.meta().generation, Timestamp::now());
    if status != old {
        tracing::info!(room = %room.name_any(), reason = waiting.reason, message = %waiting.message, "pending");
        writes::room_status(room, ctx, &status, room.resource_version().as_deref()).await?;
        writes::room_event(
            room,
            ctx,
            EventType::Warning,
            waiting.reason,
            waiting.message,
        )
        .await;
    }
    Ok(Action::requeue(waiting.retry))
}
