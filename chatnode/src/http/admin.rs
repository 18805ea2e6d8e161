//! The admin routes as a node serves them: over the fleet's Redis in a fleet
//! ([`RedisAdmin`], the same code the operator uses), over itself when standalone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chatfleet_api::ApiError;
use chatfleet_api::admin::{BroadcastRequest, FleetAdmin, FleetView, NodeView, SessionsView};
use chatfleet_api::redis_admin::RedisAdmin;
use chatfleet_state::webhooks::DeadLetter;
use chatfleet_wire::control::Control;
use chatfleet_wire::frames::ServerFrame;
use chatfleet_wire::load::RoomLoad;

use crate::fleet::control;
use crate::node::Hub;
use crate::store::Backend;

/// How long the admin view waits for one room's roster.
const ROSTER_WAIT: Duration = Duration::from_millis(200);

/// The admin routes as a node serves them.
pub struct NodeAdmin {
    hub: Arc<Hub>,
}

impl NodeAdmin {
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }

    /// The fleet's Redis, or None standalone.
    fn fleet_redis(&self) -> Option<RedisAdmin> {
        match self.hub.backend() {
            Backend::Redis(redis) => Some(RedisAdmin::new(redis.state().clone(), self.hub.fleet())),
            Backend::Memory(_) => None,
        }
    }
}

impl FleetAdmin for NodeAdmin {
    async fn user_sessions(&self, user: &str) -> Result<SessionsView, ApiError> {
        if let Some(fleet) = self.fleet_redis() {
            return fleet.user_sessions(user).await;
        }
        let local = self.hub.user_sessions().local_sessions(user);
        Ok(SessionsView::new(user, local.into_iter().map(|id| (id, 0))))
    }

    async fn end_sessions(&self, user: &str, session: Option<&str>) -> Result<(), ApiError> {
        if let Some(fleet) = self.fleet_redis() {
            return fleet.end_sessions(user, session).await;
        }
        let command = Control::EndSessions {
            user: user.to_owned(),
            session: session.map(str::to_owned),
        };
        control::apply(&self.hub, command).await;
        Ok(())
    }

    async fn fleet(&self) -> Result<FleetView, ApiError> {
        if let Some(fleet) = self.fleet_redis() {
            return fleet.fleet().await;
        }
        let report = self.hub.load_report(self.hub.sample_rate());
        let hosted = self.hub.rooms().all();
        let mut rooms = Vec::new();
        let mut rosters = BTreeMap::new();
        for room in hosted.iter().filter(|room| room.members() > 0) {
            let load = RoomLoad {
                members: room.members(),
                msg_rate: 0.0,
            };
            rooms.push((room.id().clone(), load));
            // A room too busy to answer at once is listed without its people this time.
            if let Ok(roster) = room.roster(ROSTER_WAIT).await {
                rosters.insert(room.id().clone(), roster);
            }
        }
        Ok(FleetView {
            nodes: vec![NodeView::new(report, rooms, rosters)],
        })
    }

    async fn drain(&self, node: &str) -> Result<(), ApiError> {
        if let Some(fleet) = self.fleet_redis() {
            return fleet.drain(node).await;
        }
        let command = Control::Drain {
            node: node.to_owned(),
        };
        control::apply(&self.hub, command).await;
        Ok(())
    }

    async fn broadcast(&self, request: BroadcastRequest) -> Result<(), ApiError> {
        if let Some(fleet) = self.fleet_redis() {
            return fleet.broadcast(request).await;
        }
        match request.room {
            Some(room) => match self.hub.rooms().get(&room) {
                Some(handle) => {
                    let frame = ServerFrame::system(&request.body).to_json();
                    handle.broadcast(frame.into()).await;
                    Ok(())
                }
                None => Err(ApiError::not_found(&room)),
            },
            None => {
                control::apply(&self.hub, Control::Broadcast { body: request.body }).await;
                Ok(())
            }
        }
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, ApiError> {
        if let Some(fleet) = self.fleet_redis() {
            return fleet.dead_letters(limit).await;
        }
        Ok(self.hub.webhooks().dead_letters(limit).await?)
    }
}
