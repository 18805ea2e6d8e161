//! Carries out fleet-wide [`Control`] commands on this node. They arrive over Redis in a fleet
//! (see `live.rs`) or straight from the admin API on a standalone node.

use std::sync::Arc;

use crate::auth::unix_millis;
use crate::hub::Hub;
use crate::wire::control::Control;
use crate::wire::frames::ServerFrame;

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
        Control::Broadcast { body } => {
            let frame = system_frame(&body);
            for room in hub.rooms() {
                room.broadcast(frame.clone().into()).await;
            }
        }
    }
}

/// The JSON of a `system` notice, stamped now.
pub fn system_frame(body: &str) -> String {
    ServerFrame::System {
        body: body.to_owned(),
        ts: unix_millis(),
    }
    .to_json()
}
