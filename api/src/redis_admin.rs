//! [`RedisAdmin`]: the admin routes over a fleet's Redis. Reports and session slots are read
//! there, commands go out on the control channel to every node. A fleet node serves it, and so
//! does the operator for its default fleet.

use chatfleet_state::FleetState;
use chatfleet_state::webhooks::{DeadLetter, WebhookQueue};
use chatfleet_wire::control::Control;
use chatfleet_wire::frames::ServerFrame;

use crate::ApiError;
use crate::admin::{BroadcastRequest, FleetAdmin, FleetView, NodeView, SessionsView};

#[derive(Clone)]
pub struct RedisAdmin {
    state: FleetState,
    webhooks: WebhookQueue,
}

impl RedisAdmin {
    /// The admin routes of `fleet` (`namespace/name`, which names its webhook queue).
    pub fn new(state: FleetState, fleet: &str) -> Self {
        let webhooks = WebhookQueue::new(state.redis.clone(), fleet);
        Self { state, webhooks }
    }
}

impl FleetAdmin for RedisAdmin {
    async fn user_sessions(&self, user: &str) -> Result<SessionsView, ApiError> {
        let sessions = self.state.sessions.list(user).await?;
        Ok(SessionsView::new(user, sessions))
    }

    async fn end_sessions(&self, user: &str, session: Option<&str>) -> Result<(), ApiError> {
        Ok(self.state.sessions.end(user, session).await?)
    }

    async fn fleet(&self) -> Result<FleetView, ApiError> {
        let mut nodes = Vec::new();
        for (report, rooms) in self.state.reports.fleet().await? {
            let rosters = self.state.reports.rosters(&report.node).await?;
            nodes.push(NodeView::new(report, rooms, rosters));
        }
        Ok(FleetView { nodes })
    }

    async fn drain(&self, node: &str) -> Result<(), ApiError> {
        let command = Control::Drain {
            node: node.to_owned(),
        };
        Ok(self.state.control.publish(&command).await?)
    }

    async fn broadcast(&self, request: BroadcastRequest) -> Result<(), ApiError> {
        match request.room {
            Some(room) => {
                let frame = ServerFrame::system(&request.body).to_json();
                Ok(self.state.rooms.publish(&room, &frame).await?)
            }
            None => Ok(self
                .state
                .control
                .publish(&Control::Broadcast { body: request.body })
                .await?),
        }
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, ApiError> {
        Ok(self.webhooks.dead_letters(limit).await?)
    }
}
