//! Where a room's shared state lives: its message log (ids, history) and its settings.
//!
//! Standalone nodes keep it in memory; fleet nodes keep it in Redis, so a client that
//! reconnects to another node finds the same history and the same message ids.

mod memory;
pub mod redis;

use axum::extract::ws::Utf8Bytes;

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;
use crate::wire::RoomId;

/// A message as the log holds it: its id and its encoded frame.
pub type LoggedFrame = (u64, Utf8Bytes);

/// A room's settings, set when it is created through the room API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomSettings {
    pub max_members: u32,
    pub created_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("the room's live channel could not be subscribed")]
    LiveUnavailable,
    #[error("the room was closed")]
    RoomClosed,
}

/// The log behind every room of this node.
#[derive(Clone)]
pub enum Backend {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl Backend {
    /// False while shared state cannot be reached; joins are refused then.
    pub fn is_ready(&self) -> bool {
        match self {
            Backend::Memory(_) => true,
            Backend::Redis(r) => r.is_ready(),
        }
    }

    /// Appends a message, returning its id and frame. `floor` is the newest id this node has
    /// delivered in the room: ids stay above it even if Redis lost the room's state.
    pub async fn append(
        &self,
        room: &RoomId,
        tail: &str,
        floor: u64,
    ) -> Result<LoggedFrame, StoreError> {
        match self {
            Backend::Memory(m) => m.append(room, tail),
            Backend::Redis(r) => r.append(room, tail, floor).await,
        }
    }

    /// The newest message id (0 when there is none).
    pub async fn latest_id(&self, room: &RoomId) -> Result<u64, StoreError> {
        match self {
            Backend::Memory(m) => Ok(m.latest_id(room)),
            Backend::Redis(r) => r.latest_id(room).await,
        }
    }

    /// Retained messages with `after < id <= upto`, oldest first.
    pub async fn read_range(
        &self,
        room: &RoomId,
        after: u64,
        upto: u64,
    ) -> Result<Vec<LoggedFrame>, StoreError> {
        if upto <= after {
            return Ok(Vec::new());
        }
        match self {
            Backend::Memory(m) => Ok(m.read_range(room, after, upto)),
            Backend::Redis(r) => r.read_range(room, after, upto).await,
        }
    }

    pub async fn settings(&self, room: &RoomId) -> Result<Option<RoomSettings>, StoreError> {
        match self {
            Backend::Memory(m) => Ok(m.settings(room)),
            Backend::Redis(r) => r.settings(room).await,
        }
    }

    /// Records a room's settings; an existing room keeps the ones it has.
    pub async fn create_room(
        &self,
        room: &RoomId,
        settings: RoomSettings,
    ) -> Result<RoomSettings, StoreError> {
        match self {
            Backend::Memory(m) => m.create_room(room, settings),
            Backend::Redis(r) => r.create_room(room, settings).await,
        }
    }

    pub async fn is_closed(&self, room: &RoomId) -> Result<bool, StoreError> {
        match self {
            Backend::Memory(m) => Ok(m.is_closed(room)),
            Backend::Redis(r) => r.is_closed(room).await,
        }
    }

    /// Marks the room closed for good and drops its history. In Redis this also tells every
    /// node hosting the room, through its live channel.
    pub async fn close_room(&self, room: &RoomId, closed_frame: &str) -> Result<(), StoreError> {
        match self {
            Backend::Memory(m) => {
                m.close_room(room);
                Ok(())
            }
            Backend::Redis(r) => r.close_room(room, closed_frame).await,
        }
    }
}
