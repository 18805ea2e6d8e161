//! Carries out fleet-wide [`Control`] commands on this node. They arrive over Redis in a fleet
//! (see `live.rs`) or straight from the admin API on a standalone node.

use std::sync::Arc;

use chatfleet_wire::control::Control;
use chatfleet_wire::frames::ServerFrame;

use crate::node::Hub;

/// Carries out `command`, a broadcast to every room included.
pub async fn apply(hub: &Arc<Hub>, command: Control) {
    if let Some(body) = apply_now(hub, command) {
        broadcast(hub, &body).await;
    }
}

/// Carries out every command but a broadcast at once, so commands take effect in the order
/// they came (a drain and its calling off, published back to back, must not swap); returns a
/// broadcast's body for the caller to send, which takes a while.
pub fn apply_now(hub: &Hub, command: Control) -> Option<String> {
    match command {
        Control::EndSessions { user, session } => {
            let ended = hub.user_sessions().end(&user, session.as_deref());
            if ended > 0 {
                tracing::info!(%user, ended, "sessions ended by an administrator");
            }
        }
        Control::Drain { node } if node == hub.node_name() => {
            // A report at once says draining; the operator then moves the rooms.
            // Said again every second by the autoscaler while the drain lasts.
            if !hub.is_draining() {
                tracing::info!("draining at an administrator's or the autoscaler's request");
                hub.start_drain();
                hub.report_soon();
            }
        }
        Control::Drain { .. } => {}
        Control::Undrain { node } if node == hub.node_name() => {
            if hub.stop_drain() {
                tracing::info!("drain called off; taking new members again");
                hub.report_soon();
            }
        }
        Control::Undrain { .. } => {}
        Control::Broadcast { body } => return Some(body),
    }
    None
}

/// Sends a `system` notice to every room on this node.
pub async fn broadcast(hub: &Hub, body: &str) {
    let frame = ServerFrame::system(body).to_json();
    for room in hub.rooms().all() {
        room.broadcast(frame.clone().into()).await;
    }
}
