//! Carries out fleet-wide [`Control`] commands on this node. They arrive over Redis in a fleet
//! (see `live.rs`) or straight from the admin API on a standalone node.

use std::sync::Arc;

use chatfleet_wire::control::Control;
use chatfleet_wire::frames::ServerFrame;

use crate::node::Hub;

pub async fn apply(hub: &Arc<Hub>, command: Control) {
    match command {
        Control::EndSessions { user, session } => {
            let ended = hub.user_sessions().end(&user, session.as_deref());
            if ended > 0 {
                tracing::info!(%user, ended, "sessions ended by an administrator");
            }
        }
        Control::Drain { node } if node == hub.node_name() => {
            // The next heartbeat reports draining; the operator then moves the rooms.
            tracing::info!("draining at an administrator's request");
            hub.start_drain();
        }
        Control::Drain { .. } => {}
        Control::Undrain { node } if node == hub.node_name() => {
            if hub.stop_drain() {
                tracing::info!("drain called off; taking new members again");
            }
        }
        Control::Undrain { .. } => {}
        Control::Broadcast { body } => {
            let frame = ServerFrame::system(&body).to_json();
            for room in hub.rooms().all() {
                room.broadcast(frame.clone().into()).await;
            }
        }
    }
}
