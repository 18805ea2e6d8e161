//! The room events the operator sees (opened, placed, moved, closed), queued in the fleet's
//! Redis for its nodes to deliver (`chatnode`'s webhooks deliver them, signed).
//!
//! An event is queued before the status that records it is written, and its id derives from
//! the ChatRoom's UID and what makes the occurrence unique: a reconcile retried after a failed
//! write queues the same event again, which the queue takes once.

use chatfleet_state::FleetState;
use chatfleet_state::webhooks::{Job, WebhookQueue};
use chatfleet_wire::clock::unix_millis;
use chatfleet_wire::webhook::{EventBody, WebhookEvent};
use kube::ResourceExt;

use super::room::room_id;
use crate::crd::{ChatFleet, ChatRoom};
use crate::error::Result;

/// Queues `body` about `room` for every receiver of `fleet`; nothing when it has none.
pub async fn queue(
    fleet: &ChatFleet,
    redis: &FleetState,
    room: &ChatRoom,
    body: EventBody,
    identity: &[&str],
) -> Result<()> {
    let Some(hooks) = &fleet.spec.webhooks else {
        return Ok(());
    };
    let uid = room.uid().unwrap_or_default();
    let parts: Vec<&str> = std::iter::once(uid.as_str())
        .chain(identity.iter().copied())
        .collect();
    // The room's incarnation is its ChatRoom's UID: a name applied again is another room.
    let event = WebhookEvent::in_incarnation(room_id(room)?, &uid, unix_millis(), body, &parts);
    let json = event.to_json();
    let jobs: Vec<Job> = hooks
        .urls
        .iter()
        .map(|url| Job::new(&event.id, url, json.clone()))
        .collect();
    let fleet_key = format!(
        "{}/{}",
        fleet.namespace().unwrap_or_default(),
        fleet.name_any()
    );
    WebhookQueue::new(redis.redis.clone(), &fleet_key)
        .enqueue(&jobs)
        .await?;
    Ok(())
}
