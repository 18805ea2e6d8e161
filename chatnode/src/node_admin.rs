//! The admin routes' backends: [`RedisAdmin`] commands a whole fleet through its Redis (a
//! fleet node serves it, and so does the operator); [`NodeAdmin`] is what a node serves, that
//! over Redis in a fleet and over itself when standalone.

use std::sync::Arc;

use crate::admin_api::{BroadcastRequest, FleetAdmin, FleetView, NodeView, SessionsView};
use crate::api::ApiError;
use crate::control::{self, system_frame};
use crate::hub::Hub;
use crate::store::{Backend, RedisStore};
use crate::wire::control::Control;
use crate::wire::load::RoomLoad;

/// A fleet, commanded through its Redis: reports and session slots are read there, commands go
/// out on the control channel to every node.
#[derive(Clone)]
pub struct RedisAdmin {
    redis: RedisStore,
}

impl RedisAdmin {
    pub fn new(redis: RedisStore) -> Self {
        Self { redis }
    }
}

impl FleetAdmin for RedisAdmin {
    async fn user_sessions(&self, user: &str) -> Result<SessionsView, ApiError> {
        let sessions = self.redis.list_sessions(user).await?;
        Ok(SessionsView::new(user, sessions))
    }

    async fn end_sessions(&self, user: &str, session: Option<&str>) -> Result<(), ApiError> {
        Ok(self.redis.end_sessions(user, session).await?)
    }

    async fn fleet(&self) -> Result<FleetView, ApiError> {
        let nodes = self.redis.fleet().await?;
        Ok(FleetView {
            nodes: nodes
                .into_iter()
                .map(|(report, rooms)| NodeView::new(report, rooms))
                .collect(),
        })
    }

    async fn drain(&self, node: &str) -> Result<(), ApiError> {
        let command = Control::Drain {
            node: node.to_owned(),
        };
        Ok(self.redis.publish_control(&command).await?)
    }

    async fn broadcast(&self, request: BroadcastRequest) -> Result<(), ApiError> {
        match request.room {
            Some(room) => Ok(self
                .redis
                .publish_to_room(&room, &system_frame(&request.body))
                .await?),
            None => Ok(self
                .redis
                .publish_control(&Control::Broadcast { body: request.body })
                .await?),
        }
    }
}

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
            Backend::Redis(redis) => Some(RedisAdmin::new(redis.clone())),
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
        let rooms = self
            .hub
            .rooms()
            .iter()
            .filter(|room| room.members() > 0)
            .map(|room| {
                let load = RoomLoad {
                    members: room.members(),
                    msg_rate: 0.0,
                };
                (room.id().clone(), load)
            })
            .collect();
        Ok(FleetView {
            nodes: vec![NodeView::new(report, rooms)],
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
            Some(room) => match self.hub.existing_room(&room) {
                Some(handle) => {
                    handle.broadcast(system_frame(&request.body).into()).await;
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
}
