//! The node's subscription to the live channels of the rooms it hosts (fleet mode only).
//!
//! One task owns the subscription. It subscribes exactly to the rooms the hub has, routes
//! each frame to its room, and whenever the subscription may have missed messages (a
//! reconnect, a Sentinel failover, a room's slot moving to another shard of a cluster)
//! subscribes anew and has every room catch up from its log, so no message is lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chatfleet_state::subscription::{Event, Subscription};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use chatfleet_wire::RoomId;
use chatfleet_wire::control::Control;
use chatfleet_wire::frames::{FrameHeader, ServerFrame};
use chatfleet_wire::keys::{self, RoomKeys};

use crate::node::Hub;
use crate::store::{FleetStore, LiveSync};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub async fn run(
    hub: Arc<Hub>,
    store: FleetStore,
    mut requests: mpsc::UnboundedReceiver<LiveSync>,
    stop: CancellationToken,
) {
    let mut backoff = MIN_BACKOFF;
    let mut master = store.state().redis.master_changes();
    while !stop.is_cancelled() {
        match Subscription::open(&store.state().redis).await {
            Ok(subscription) => {
                backoff = MIN_BACKOFF;
                serve(&hub, &store, subscription, &mut requests, &stop).await;
                store.set_live_ok(false);
                // Redis went away: the command connection may be as dead as this one. Ready
                // again only once a heartbeat has gone through it.
                store.set_heartbeat_ok(false);
                hub.metrics().backend_up.set(0);
                if !stop.is_cancelled() {
                    tracing::warn!("lost the live-channel connection to Redis; reconnecting");
                }
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "cannot reach Redis for live channels");
            }
        }
        // Wait before retrying, answering requests meanwhile: nothing can be subscribed now.
        // A new master (Sentinel) is worth trying at once.
        let retry = tokio::time::sleep(backoff);
        tokio::pin!(retry);
        let mut new_master = false;
        loop {
            tokio::select! {
                _ = &mut retry => break,
                Ok(()) = master.changed() => {
                    new_master = true;
                    break;
                }
                _ = stop.cancelled() => return,
                request = requests.recv() => match request {
                    Some(request) => answer(request, false),
                    None => return,
                },
            }
        }
        backoff = if new_master {
            MIN_BACKOFF
        } else {
            (backoff * 2).min(MAX_BACKOFF)
        };
    }
}

async fn serve(
    hub: &Arc<Hub>,
    store: &FleetStore,
    mut subscription: Subscription,
    requests: &mut mpsc::UnboundedReceiver<LiveSync>,
    stop: &CancellationToken,
) {
    let mut subscribed = HashSet::new();
    if subscription
        .subscribe(&keys::control_channel())
        .await
        .is_err()
    {
        return;
    }
    for room in hub.rooms().all() {
        if subscription
            .subscribe_room(&RoomKeys::new(room.id()).live)
            .await
            .is_err()
        {
            return;
        }
        subscribed.insert(room.id().clone());
    }
    store.set_live_ok(true);
    hub.metrics().backend_up.set(1);
    tracing::info!(rooms = subscribed.len(), "live channels subscribed");
    // Whatever was published while we were away is in the logs and the member state.
    for room in hub.rooms().all() {
        room.resubscribed();
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            event = subscription.next() => match event {
                Some(Event::Message(message)) => route(hub, &message),
                Some(Event::Moved(channel)) => {
                    if !follow_moved(hub, &mut subscription, &channel).await {
                        return;
                    }
                }
                None => return,
            },
            request = requests.recv() => {
                let Some(request) = request else { return };
                let ok = sync(hub, &mut subscription, &mut subscribed, &request.room).await;
                answer(request, ok);
                if !ok {
                    return;
                }
            }
        }
    }
}

/// Subscribes or unsubscribes so the connection follows the hub's rooms.
async fn sync(
    hub: &Hub,
    subscription: &mut Subscription,
    subscribed: &mut HashSet<RoomId>,
    room: &RoomId,
) -> bool {
    let channel = RoomKeys::new(room).live;
    let wanted = hub.rooms().hosts(room);
    let has = subscribed.contains(room);
    if wanted && !has {
        if subscription.subscribe_room(&channel).await.is_err() {
            return false;
        }
        subscribed.insert(room.clone());
    } else if !wanted && has {
        if subscription.unsubscribe_room(&channel).await.is_err() {
            return false;
        }
        subscribed.remove(room);
    }
    true
}

/// Subscribes again to a room channel whose slot moved to another shard (the subscription
/// goes to the slot's new owner), and has the room read what was published meanwhile.
async fn follow_moved(hub: &Hub, subscription: &mut Subscription, channel: &str) -> bool {
    let Some(room) = room_of_channel(channel) else {
        return true;
    };
    tracing::info!(%room, "the room's slot moved to another shard; subscribing there");
    if subscription.subscribe_room(channel).await.is_err() {
        return false;
    }
    if let Some(handle) = hub.rooms().get(&room) {
        handle.resubscribed();
    }
    true
}

fn answer(request: LiveSync, ok: bool) {
    if let Some(done) = request.done {
        let _ = done.send(ok);
    }
}

/// Hands a frame from a live channel to the room it belongs to, and a control command to
/// the node.
fn route(hub: &Arc<Hub>, message: &redis::Msg) {
    if message.get_channel_name() == keys::control_channel() {
        match serde_json::from_slice::<Control>(message.get_payload_bytes()) {
            Ok(command) => {
                if let Some(body) = super::control::apply_now(hub, command) {
                    let hub = hub.clone();
                    tokio::spawn(async move { super::control::broadcast(&hub, &body).await });
                }
            }
            Err(error) => tracing::warn!(%error, "ignored a malformed control command"),
        }
        return;
    }
    let Some(room) = room_of_channel(message.get_channel_name()) else {
        return;
    };
    let Some(handle) = hub.rooms().get(&room) else {
        return;
    };
    let Ok(json) = std::str::from_utf8(message.get_payload_bytes()) else {
        return;
    };
    let Ok(header) = serde_json::from_str::<FrameHeader>(json) else {
        tracing::warn!(%room, "ignored a malformed frame on a live channel");
        return;
    };
    let frame = Utf8Bytes::from(json.to_owned());
    // Every frame goes into the room's queue here, in the channel's order, never through a
    // task of its own: a mute then an unmute, or a message then the close, stay in order.
    match (header.kind.as_str(), header.id) {
        ("message", Some(id)) => handle.deliver((id, frame)),
        ("closed", _) => handle.close(frame),
        ("typing", _) => {
            if let Ok(ServerFrame::Typing { user, .. }) = serde_json::from_str(json) {
                handle.typing(user, frame);
            }
        }
        ("read", _) => {
            if let Ok(ServerFrame::Read { reads, .. }) = serde_json::from_str(json) {
                handle.reads_arrived(reads);
            }
        }
        ("moderation", _) => {
            if let Ok(ServerFrame::Moderation(moderation)) = serde_json::from_str(json) {
                handle.moderate(moderation, frame);
            }
        }
        ("presence", _) => {
            // This node told its own members directly; only other nodes' presence is news.
            if let Ok(ServerFrame::Presence(presence)) = serde_json::from_str(json)
                && presence.node.as_deref() != Some(hub.node_name())
            {
                handle.presence_elsewhere(presence.members as u32, frame);
            }
        }
        ("moved", _) => {
            // Only the node the room left sends its members to the new one: members on the
            // new node, or on another node of a room spanning several, stay.
            if leaves_here(json, hub.node_name(), hub.advertise_url()) {
                handle.relocate(frame);
            }
        }
        _ => handle.notice(frame),
    }
}

/// Whether a `moved` frame sends this node's members away: it names this node as the one
/// the room left. A frame naming none (from operators before spanning rooms) sends away the
/// members of every node it does not point at.
fn leaves_here(json: &str, node: &str, advertise_url: &str) -> bool {
    match serde_json::from_str::<ServerFrame>(json) {
        Ok(ServerFrame::Moved {
            from: Some(from), ..
        }) => from == node,
        Ok(ServerFrame::Moved { endpoint, .. }) => {
            !endpoint.starts_with(&format!("{advertise_url}/"))
        }
        _ => false,
    }
}

/// `chatfleet:room:{ns/name}:live` → `ns/name`.
fn room_of_channel(channel: &str) -> Option<RoomId> {
    let start = channel.find('{')? + 1;
    let end = channel[start..].find('}')? + start;
    channel[start..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_room_back_from_its_channel_name() {
        let room: RoomId = "support/case-3".parse().unwrap();
        assert_eq!(room_of_channel(&RoomKeys::new(&room).live), Some(room));
        assert_eq!(room_of_channel("chatfleet:other"), None);
    }
}
