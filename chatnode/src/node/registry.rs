//! The rooms of this node: one task per room while it has members or a grace period to run,
//! found by id. A room asks to be forgotten when its task ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use chatfleet_wire::RoomId;

use super::admission::Refusal;
use super::room::{JoinRequest, OnRetire, RoomEnv, RoomHandle};
use crate::store::Backend;

pub struct RoomRegistry {
    env: Arc<RoomEnv>,
    /// Hands a retiring room back to this registry (weakly: rooms never keep it alive).
    on_retire: OnRetire,
    rooms: Mutex<HashMap<RoomId, RoomHandle>>,
}

impl RoomRegistry {
    pub fn new(env: RoomEnv) -> Arc<Self> {
        Arc::new_cyclic(|registry: &Weak<Self>| {
            let registry = registry.clone();
            Self {
                env: Arc::new(env),
                on_retire: Arc::new(move |handle: &RoomHandle| {
                    if let Some(registry) = registry.upgrade() {
                        registry.forget(handle);
                    }
                }),
                rooms: Mutex::default(),
            }
        })
    }

    /// What the node's rooms share.
    pub fn env(&self) -> &RoomEnv {
        &self.env
    }

    /// The room's handle, starting its task if none runs.
    pub fn get_or_start(&self, id: &RoomId) -> RoomHandle {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        if let Some(handle) = rooms.get(id) {
            return handle.clone();
        }
        self.env.backend.hosting(id);
        let handle = RoomHandle::spawn(id.clone(), self.env.clone(), self.on_retire.clone());
        rooms.insert(id.clone(), handle.clone());
        self.env.metrics.rooms.set(rooms.len() as i64);
        handle
    }

    /// The room's handle if its task runs.
    pub fn get(&self, id: &RoomId) -> Option<RoomHandle> {
        self.rooms.lock().expect("rooms lock").get(id).cloned()
    }

    pub fn all(&self) -> Vec<RoomHandle> {
        self.rooms
            .lock()
            .expect("rooms lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn hosts(&self, id: &RoomId) -> bool {
        self.rooms.lock().expect("rooms lock").contains_key(id)
    }

    /// Joins a room, looking it up again if its task retired in between.
    pub async fn join(&self, id: &RoomId, request: JoinRequest) -> Result<RoomHandle, Refusal> {
        for _ in 0..3 {
            let room = self.get_or_start(id);
            match room.join(request.clone()).await {
                Ok(Ok(())) => return Ok(room),
                Ok(Err(refusal)) => return Err(refusal),
                Err(_gone) => continue,
            }
        }
        Err(Refusal::Unavailable)
    }

    /// Removes a retiring room, unless a newer task already took its place, and lets the
    /// live channels follow.
    fn forget(&self, handle: &RoomHandle) {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        if rooms.get(handle.id()).is_some_and(|h| h.same(handle)) {
            rooms.remove(handle.id());
            self.env.backend.released(handle.id());
        }
        self.env.metrics.rooms.set(rooms.len() as i64);
        drop(rooms);
        if let Backend::Redis(redis) = &self.env.backend {
            redis.sync_live_later(handle.id());
        }
    }
}
