//! The standalone room directory: the room API served from this node's own rooms.
//!
//! It knows the rooms created through this node's API and the rooms with members here. A
//! fleet-wide directory, over every node, is the operator's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use chatfleet_api::ApiError;
use chatfleet_api::history::{self, HistoryQuery, HistoryView, MessageSource};
use chatfleet_api::rooms::{
    CreateRoom, CreatedRoom, Labels, RoomDirectory, RoomFilter, RoomView, TokenRequest, TokenView,
};
use chatfleet_api::tokens::mint_token_view;
use chatfleet_api::transcript::{self, TranscriptReader};
use chatfleet_state::rooms::{LoggedMessage, new_incarnation};
use chatfleet_wire::RoomId;
use chatfleet_wire::clock::unix_millis;
use chatfleet_wire::frames::{Moderation, ServerFrame};
use chatfleet_wire::urls::{transcript_path, ws_endpoint};
use chatfleet_wire::webhook::{EventBody, WebhookEvent};
use futures_util::StreamExt;

use crate::node::Hub;
use crate::store::{Backend, MemoryStore, RoomSettings, StateError};

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
        let handle = self.hub.rooms().get(room);
        let settings = backend.settings(room).await?;
        let known = handle.is_some()
            || settings.is_some()
            || self.created.lock().expect("lock").contains_key(room);
        if !known || backend.is_closed(room).await? {
            return Ok(None);
        }
        let node_limit = self.hub.limits().max_room_members;
        let max_members = settings
            .as_ref()
            .map_or(node_limit, |s| s.max_members.min(node_limit));
        let incarnation = settings.as_ref().map(|s| s.incarnation.clone());
        Ok(Some(RoomView {
            id: room.clone(),
            incarnation: incarnation.filter(|i| !i.is_empty()),
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

impl NodeDirectory {
    /// A room opened here is placed here too: both events at once.
    fn opened(&self, room: &RoomId, settings: &RoomSettings) {
        let opened = EventBody::RoomOpened {
            max_members: settings.max_members,
        };
        self.emit(room, &settings.incarnation, opened);
        let placed = EventBody::RoomPlaced {
            node: self.hub.node_name().to_owned(),
            endpoint: ws_endpoint(self.hub.advertise_url(), room),
        };
        self.emit(room, &settings.incarnation, placed);
    }

    /// An event about one incarnation of `room` (its identity: a name may be used again
    /// after a close, and each incarnation happens once).
    fn emit(&self, room: &RoomId, incarnation: &str, body: EventBody) {
        let ts = unix_millis();
        let event = WebhookEvent::in_incarnation(room.clone(), incarnation, ts, body, &[]);
        self.hub.webhooks().emit(event);
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
            incarnation: new_incarnation(),
        };
        let settings = backend.create_room(&room, settings).await?;
        if !existed {
            self.opened(&room, &settings);
        }
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
        ids.extend(self.hub.rooms().all().iter().map(|r| r.id().clone()));
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

    async fn close_room(&self, room: &RoomId, reason: &str) -> Result<(), ApiError> {
        if self.view(room).await?.is_none() {
            return Err(ApiError::not_found(room));
        }
        let frame = ServerFrame::Closed {
            room: room.clone(),
            reason: reason.to_owned(),
        }
        .to_json();
        let backend = self.hub.backend();
        // Closed already (a close racing this one): that close told everyone.
        if let Some(incarnation) = backend.close_room(room, "", reason).await? {
            let closed = EventBody::RoomClosed {
                reason: reason.to_owned(),
                transcript: transcript_path(room, &incarnation),
            };
            self.emit(room, &incarnation, closed);
        }
        self.created.lock().expect("lock").remove(room);
        if let Some(handle) = self.hub.rooms().get(room) {
            handle.close(frame.into());
        }
        Ok(())
    }

    async fn moderate(&self, room: &RoomId, moderation: Moderation) -> Result<(), ApiError> {
        let backend = self.hub.backend();
        if self.view(room).await?.is_none() {
            // A room that was closed says so (409), as a write to it would.
            if backend.is_closed(room).await? {
                return Err(StateError::RoomClosed.into());
            }
            return Err(ApiError::not_found(room));
        }
        let frame = ServerFrame::Moderation(moderation.clone()).to_json();
        backend.moderate(room, &moderation, &frame).await?;
        // In a fleet the live channel brings the frame to every node's room, this one's too.
        if !backend.relays()
            && let Some(handle) = self.hub.rooms().get(room)
        {
            handle.moderate(moderation, frame.into());
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
        let incarnation = self.hub.backend().settings(room).await?;
        let incarnation = incarnation.map(|s| s.incarnation).unwrap_or_default();
        mint_token_view(self.hub.tokens(), room, &incarnation, request, &endpoint)
    }

    async fn history(&self, room: &RoomId, query: HistoryQuery) -> Result<HistoryView, ApiError> {
        if self.view(room).await?.is_none() {
            return Err(ApiError::not_found(room));
        }
        Ok(history::read_page(self.hub.backend(), room, query).await?)
    }

    async fn transcript(
        &self,
        room: &RoomId,
        incarnation: Option<&str>,
    ) -> Result<TranscriptReader, ApiError> {
        let reader = match self.hub.backend() {
            Backend::Redis(redis) => {
                transcript::open_in_redis(&redis.state().rooms, room, incarnation).await?
            }
            Backend::Memory(memory) => memory_transcript(memory, room, incarnation),
        };
        reader.ok_or_else(|| ApiError::not_found(room))
    }
}

/// Entries of a standalone transcript copied per page.
const MEMORY_PAGE: usize = 2048;

/// A standalone room's transcript, read a page at a time under the room's lock, so a reader
/// never copies it whole.
fn memory_transcript(
    memory: &MemoryStore,
    room: &RoomId,
    incarnation: Option<&str>,
) -> Option<TranscriptReader> {
    let (found, first, next) = memory.transcript_page(room, incarnation, 0, MEMORY_PAGE)?;
    let more =
        (first.len() == MEMORY_PAGE).then(|| (memory.clone(), room.clone(), found.clone(), next));
    let rest = futures_util::stream::unfold(more, |state| async move {
        let (memory, room, incarnation, from) = state?;
        let (_, page, next) =
            memory.transcript_page(&room, Some(&incarnation), from, MEMORY_PAGE)?;
        let more = (page.len() == MEMORY_PAGE).then_some((memory, room, incarnation, next));
        Some((Ok(page), more))
    });
    Some(TranscriptReader {
        room: room.clone(),
        incarnation: (!found.is_empty()).then_some(found),
        pages: futures_util::stream::once(async { Ok(first) })
            .chain(rest)
            .boxed(),
    })
}

/// History pages read the node's log, in memory or in Redis.
impl MessageSource for Backend {
    async fn latest(&self, room: &RoomId) -> Result<(u64, Option<String>), StateError> {
        Backend::latest(self, room).await
    }

    async fn read_range(
        &self,
        room: &RoomId,
        after: u64,
        upto: u64,
    ) -> Result<Vec<LoggedMessage>, StateError> {
        let frames = Backend::read_range(self, room, after, upto).await?;
        Ok(frames
            .into_iter()
            .map(|(id, frame)| (id, frame.as_str().to_owned()))
            .collect())
    }
}
