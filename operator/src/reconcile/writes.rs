//! Everything the reconcilers write to Kubernetes: finalizers, status patches and Events.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::context::Context;
use crate::crd::{AutoscalingStatus, ChatFleet, ChatFleetStatus, ChatRoom, ChatRoomStatus};
use crate::error::Result;

/// Merge-patches a room's status, as a precondition on `version` when given (a stale cache then
/// fails with a conflict instead of overwriting a newer placement), and returns the new
/// resourceVersion. Fields that are `None` are sent as null, so a merge patch clears them.
pub async fn room_status(
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

/// Adds `finalizer` to a room and returns the room as the API server now has it: the same
/// pass goes on to place it, rather than waiting for the watch to bring the change back.
pub async fn add_room_finalizer(
    room: &ChatRoom,
    ctx: &Context,
    finalizer: &str,
) -> Result<ChatRoom> {
    let mut finalizers: Vec<&str> = room.finalizers().iter().map(String::as_str).collect();
    finalizers.push(finalizer);
    Ok(set_room_finalizers(room, ctx, &finalizers).await?)
}

/// Removes `finalizer` from a room being deleted. A room already gone is no error: the API
/// server deleted it once nothing held it.
pub async fn remove_room_finalizer(room: &ChatRoom, ctx: &Context, finalizer: &str) -> Result<()> {
    let finalizers: Vec<&str> = room
        .finalizers()
        .iter()
        .map(String::as_str)
        .filter(|f| *f != finalizer)
        .collect();
    match set_room_finalizers(room, ctx, &finalizers).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(response)) if response.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Replaces a room's finalizers, as a precondition on the resourceVersion it was read at, so
/// a concurrent change to the list conflicts instead of being overwritten.
async fn set_room_finalizers(
    room: &ChatRoom,
    ctx: &Context,
    finalizers: &[&str],
) -> kube::Result<ChatRoom> {
    let patch = json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": room.resource_version() }
    });
    Api::<ChatRoom>::namespaced(ctx.client.clone(), &room.namespace().unwrap_or_default())
        .patch(
            &room.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
}

/// Writes a fleet's status if it differs from the one it has.
pub async fn fleet_status(
    fleet: &ChatFleet,
    ctx: &Context,
    status: &ChatFleetStatus,
) -> Result<()> {
    if fleet.status.as_ref() != Some(status) {
        Api::<ChatFleet>::namespaced(ctx.client.clone(), &fleet.namespace().unwrap_or_default())
            .patch_status(
                &fleet.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await?;
    }
    Ok(())
}

/// Writes the autoscaler's part of a fleet's status alone, at once: an intent recorded before
/// it is acted on.
pub async fn fleet_autoscaling(
    fleet: &ChatFleet,
    ctx: &Context,
    autoscaling: &AutoscalingStatus,
) -> Result<()> {
    Api::<ChatFleet>::namespaced(ctx.client.clone(), &fleet.namespace().unwrap_or_default())
        .patch_status(
            &fleet.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "autoscaling": autoscaling } })),
        )
        .await?;
    Ok(())
}

/// Records an Event on a room. Best effort: a failure is logged, never fails the reconcile.
pub async fn room_event(
    room: &ChatRoom,
    ctx: &Context,
    type_: EventType,
    reason: &str,
    note: String,
) {
    publish_event(ctx, &room.object_ref(&()), type_, reason, note, "Place").await;
}

/// Records an Event on a fleet. Best effort, as [`room_event`].
pub async fn fleet_event(
    fleet: &ChatFleet,
    ctx: &Context,
    type_: EventType,
    reason: &str,
    note: String,
) {
    publish_event(ctx, &fleet.object_ref(&()), type_, reason, note, "Scale").await;
}

async fn publish_event(
    ctx: &Context,
    regarding: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
    action: &str,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder().publish(&event, regarding).await {
        tracing::warn!(%error, "cannot publish an event");
    }
}
