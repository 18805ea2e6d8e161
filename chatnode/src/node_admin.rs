//! The admin routes as a node serves them: over the fleet's Redis in a fleet, over itself when
//! standalone.

use std::sync::Arc;

use crate::admin_api::{BroadcastRequest, FleetAdmin, FleetView, NodeView, SessionsView};
use crate::api::ApiError;
use crate::auth::unix_millis;
use crate::control;
use crate::hub::Hub;
use crate::store::{Backend, StoreError};
use crate::wire::control::Control;
use crate::wire::frames::ServerFrame;
use crate::wire::load::RoomLoad;

pub struct NodeAdmin {
    hub: Arc<Hub>,
}

impl NodeAdmin {
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }
}

fn unavailable(error: StoreError) -> ApiError {
    ApiError::unavailable(format!("Redis unreachable: {error}"))
}

impl FleetAdmin for NodeAdmin {
    async fn user_sessions(&self, user: &str) -> Result<SessionsView, ApiError> {
        match self.hub.backend() {
            Backend::Redis(redis) => {
                let sessions = redis.list_sessions(user).await.map_err(unavailable)?;
                Ok(SessionsView::new(user, sessions))
            }
            Backend::Memory(_) => {
                let local = self.hub.user_sessions().local_sessions(user);
                Ok(SessionsView::new(user, local.into_iter().map(|id| (id, 0))))
            }
        }
    }

    async fn end_sessions(&self, user: &str, session: Option<&str>) -> Result<(), ApiError> {
        match self.hub.backend() {
            Backend::Redis(redis) => redis.end_sessions(user, session).await.map_err(unavailable),
            Backend::Memory(_) => {
                let command = Control::EndSessions {
                    user: user.to_owned(),
                    session: session.map(str::to_owned),
                };
                control::apply(&self.hub, command).await;
                Ok(())
            }
        }
    }

    async fn fleet(&self) -> Result<FleetView, ApiError> {
        match self.hub.backend() {
            Backend::Redis(redis) => {
                let nodes = redis.fleet().await.map_err(unavailable)?;
                Ok(FleetView {
                    nodes: nodes
                        .into_iter()
                        .map(|(report, rooms)| NodeView::new(report, rooms))
                        .collect(),
                })
            }
            Backend::Memory(_) => {
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
        }
    }

    async fn drain(&self, node: &str) -> Result<(), ApiError> {
        let command = Control::Drain {
            node: node.to_owned(),
        };
        match self.hub.backend() {
            Backend::Redis(redis) => redis.publish_control(&command).await.map_err(unavailable),
            Backend::Memory(_) => {
                control::apply(&self.hub, command).await;
                Ok(())
            }
        }
    }

    async fn broadcast(&self, request: BroadcastRequest) -> Result<(), ApiError> {
        let frame = ServerFrame::System {
            body: request.body.clone(),
            ts: unix_millis(),
        }
        .to_json();
        match (self.hub.backend(), request.room) {
            (Backend::Redis(redis), Some(room)) => redis
                .publish_to_room(&room, &frame)
                .await
                .map_err(unavailable),
            (Backend::Redis(redis), None) => redis
                .publish_control(&Control::Broadcast { body: request.body })
                .await
                .map_err(unavailable),
            (Backend::Memory(_), Some(room)) => match self.hub.existing_room(&room) {
                Some(handle) => {
                    handle.broadcast(frame.into()).await;
                    Ok(())
                }
                None => Err(ApiError::not_found(&room)),
            },
            (Backend::Memory(_), None) => {
                control::apply(&self.hub, Control::Broadcast { body: request.body }).await;
                Ok(())
            }
        }
    }
}
