//! The standalone room directory: the room API served from this node's own rooms.
//!
//! It knows the rooms created through this node's API and the rooms with members here. A
//! fleet-wide directory, over every node, is the operator's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::api::{
    ApiError, CreateRoom, CreatedRoom, Labels, RoomDirectory, RoomFilter, RoomView, TokenRequest,
    TokenView, mint_token_view,
};
use crate::auth::unix_millis;
use crate::history::{self, HistoryQuery, HistoryView};
use crate::hub::Hub;
use crate::store::RoomSettings;
use crate::wire::RoomId;
use crate::wire::frames::ServerFrame;

const DEFAULT_NAMESPACE: &str = "default";

pub struct NodeDirectory {
    hub: Arc<Hub>,
    /// Rooms opened through this node's API, with their labels.
    created: Mutex<BTreeMap<RoomId, Labels>>,
}

impl NodeDirectory {
    pub fn new(hub: Arc<Hub>) -> Self {
        Self {
            hub,
            created: Mutex::default(),
        }
    }

    async fn view(&self, room: &RoomId) -> Result<Option<RoomView>, ApiError> {
        let backend = self.hub.backend();
        let handle = self.hub.existing_room(room);
        let settings = backend.settings(room).await?;
        let known = handle.is_some()
            || settings.is_some()
            || self.created.lock().expect("lock").contains_key(room);
        if !known || backend.is_closed(room).await? {
            return Ok(None);
        }
        let node_limit = self.hub.limits().max_room_members;
        let max_members = settings.map_or(node_limit, |s| s.max_members.min(node_limit));
        Ok(Some(RoomView {
            id: room.clone(),
            namespace: room.namespace().to_owned(),
            name: room.name().to_owned(),
            members: handle.map_or(0, |h| h.members()),
            max_members,
            node: self.hub.node_name().to_owned(),
            endpoint: ws_endpoint(self.hub.advertise_url(), room),
            fleet: None,
            labels: self
                .created
                .lock()
                .expect("lock")
                .get(room)
                .cloned()
                .unwrap_or_default(),
        }))
    }
}

/// The WebSocket URL of a room on a node.
pub fn ws_endpoint(advertise_url: &str, room: &RoomId) -> String {
    format!(
        "{advertise_url}/v1/rooms/{}/{}/ws",
        room.namespace(),
        room.name()
    )
}

/// The chat page's base URL for a node's advertised WebSocket URL.
pub fn http_base(advertise_url: &str) -> String {
    if let Some(rest) = advertise_url.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = advertise_url.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        advertise_url.to_owned()
    }
}

impl RoomDirectory for NodeDirectory {
    async fn create_room(&self, request: CreateRoom) -> Result<CreatedRoom, ApiError> {
        let name = request.room_name();
        let namespace = request
            .namespace
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let room = RoomId::new(&namespace, &name).map_err(|e| ApiError::invalid(e.to_string()))?;
        let limit = self.hub.limits().max_room_members;
        let max_members = request.max_members.unwrap_or(limit);
        if max_members == 0 || max_members > limit {
            return Err(ApiError::invalid(format!(
                "max_members must be between 1 and {limit}"
            )));
        }
        let backend = self.hub.backend();
        let existed = backend.settings(&room).await?.is_some();
        let settings = RoomSettings {
            max_members,
            created_ms: unix_millis(),
        };
        backend.create_room(&room, settings).await?;
        self.created
            .lock()
            .expect("lock")
            .entry(room.clone())
            .or_insert(request.labels);
        let view = self
            .view(&room)
            .await?
            .ok_or_else(|| ApiError::not_found(&room))?;
        Ok(CreatedRoom {
            room: view,
            created: !existed,
            tokens: Vec::new(),
        })
    }

    async fn list_rooms(&self, filter: &RoomFilter) -> Result<Vec<RoomView>, ApiError> {
        let mut ids: BTreeSet<RoomId> =
            self.created.lock().expect("lock").keys().cloned().collect();
        ids.extend(self.hub.rooms().iter().map(|r| r.id().clone()));
        let mut views = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(view) = self.view(&id).await?
                && filter.matches(None, &view.labels)
            {
                views.push(view);
            }
        }
        Ok(views)
    }

    async fn get_room(&self, room: &RoomId) -> Result<RoomView, ApiError> {
        self.view(room)
            .await?
            .ok_or_else(|| ApiError::not_found(room))
    }

    async fn close_room(&self, room: &RoomId) -> Result<(), ApiError> {
        if self.view(room).await?.is_none() {
            return Err(ApiError::not_found(room));
        }
        let frame = ServerFrame::Closed {
            room: room.clone(),
            reason: "closed through the room API".into(),
        }
        .to_json();
        self.hub.backend().close_room(room, &frame).await?;
        self.created.lock().expect("lock").remove(room);
        if let Some(handle) = self.hub.existing_room(room) {
            handle.close(frame.into()).await;
        }
        Ok(())
    }

    async fn mint_token(
        &self,
        room: &RoomId,
        request: TokenRequest,
    ) -> Result<TokenView, ApiError> {
        if self.view(room).await?.is_none() {
            return Err(ApiError::not_found(room));
        }
        let endpoint = ws_endpoint(self.hub.advertise_url(), room);
        mint_token_view(self.hub.tokens(), room, request, &endpoint)
    }

    async fn history(&self, room: &RoomId, query: HistoryQuery) -> Result<HistoryView, ApiError> {
        if self.view(room).await?.is_none() {
            return Err(ApiError::not_found(room));
        }
        Ok(history::read_page(self.hub.backend(), room, query).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_page_and_socket_urls_from_the_advertised_url() {
        let room: RoomId = "a/b".parse().unwrap();
        assert_eq!(ws_endpoint("ws://n:1", &room), "ws://n:1/v1/rooms/a/b/ws");
        assert_eq!(http_base("ws://n:1"), "http://n:1");
        assert_eq!(http_base("wss://chat.example"), "https://chat.example");
    }
}
