//! Where a room's shared state lives: its message log (ids, history) and its settings.
//!
//! Standalone nodes keep it in memory; fleet nodes keep it in Redis, so a client that
//! reconnects to another node finds the same history and the same message ids.

mod fleet;
mod memory;

pub use chatfleet_state::StateError;
pub use chatfleet_state::rooms::RoomSettings;
use std::collections::BTreeMap;

use chatfleet_state::members::MemberState;
use chatfleet_wire::RoomId;
use chatfleet_wire::frames::Moderation;
use tokio_tungstenite::tungstenite::Utf8Bytes;

pub use self::fleet::{FleetStore, LiveSync};
pub use self::memory::{MemoryStore, Retention};

/// A message as the node hands it around: its id and its encoded frame, shared by every
/// member's queue without copying.
pub type LoggedFrame = (u64, Utf8Bytes);

/// What an append did (see `chatfleet_state::rooms::Appended`).
#[derive(Debug, Clone)]
pub struct Appended {
    pub id: u64,
    /// None when the send was a retry of one already appended.
    pub frame: Option<Utf8Bytes>,
    pub epoch: String,
    /// This append began a new epoch: Redis had lost messages of the room.
    pub renewed: bool,
}

/// The log behind every room of this node: in memory standalone, the fleet's Redis otherwise.
#[derive(Clone)]
pub enum Backend {
    Memory(MemoryStore),
    Redis(FleetStore),
}

impl Backend {
    /// False while shared state cannot be reached; joins are refused then.
    pub fn is_ready(&self) -> bool {
        match self {
            Backend::Memory(_) => true,
            Backend::Redis(r) => r.is_ready(),
        }
    }

    /// A room task started on `room` (standalone: keep its log).
    pub fn hosting(&self, room: &RoomId) {
        if let Backend::Memory(m) = self {
            m.hosting(room);
        }
    }

    /// `room`'s task retired (standalone: its log goes after the retention).
    pub fn released(&self, room: &RoomId) {
        if let Backend::Memory(m) = self {
            m.released(room);
        }
    }

    /// Appends a message. `floor` is the newest id this node has delivered in the room: ids
    /// stay above it even if Redis lost the room's state. `dedup` (`<user>\n<client_id>`)
    /// makes a retried send append nothing and return the first one's id.
    pub async fn append(
        &self,
        room: &RoomId,
        incarnation: &str,
        tail: &str,
        floor: u64,
        dedup: Option<&str>,
    ) -> Result<Appended, StateError> {
        match self {
            Backend::Memory(m) => m.append(room, tail, dedup),
            Backend::Redis(r) => {
                let appended = r
                    .log()
                    .append(room, incarnation, tail, floor, dedup)
                    .await?;
                Ok(Appended {
                    id: appended.id,
                    frame: appended.frame.map(Utf8Bytes::from),
                    epoch: appended.epoch,
                    renewed: appended.renewed,
                })
            }
        }
    }

    /// The newest message id and the log's epoch, read together. `floor` is the newest id
    /// the caller delivered: Redis found behind it lost messages and begins a new epoch (the
    /// memory log never loses part of a room). `StateError::RoomClosed` for a closed room.
    pub async fn position(
        &self,
        room: &RoomId,
        incarnation: &str,
        floor: u64,
    ) -> Result<(u64, String), StateError> {
        match self {
            Backend::Memory(m) => m.position(room, incarnation),
            Backend::Redis(r) => r.state().rooms.position(room, incarnation, floor).await,
        }
    }

    /// The newest message id (0 when there is none) and the log's epoch (None while the room
    /// has none), writing nothing.
    pub async fn latest(&self, room: &RoomId) -> Result<(u64, Option<String>), StateError> {
        match self {
            Backend::Memory(m) => Ok(m.latest(room)),
            Backend::Redis(r) => r.state().rooms.latest(room).await,
        }
    }

    /// Retained messages with `after < id <= upto`, oldest first.
    pub async fn read_range(
        &self,
        room: &RoomId,
        after: u64,
        upto: u64,
    ) -> Result<Vec<LoggedFrame>, StateError> {
        match self {
            Backend::Memory(m) => Ok(m.read_range(room, after, upto)),
            Backend::Redis(r) => {
                let frames = r.state().rooms.read_range(room, after, upto).await?;
                Ok(frames.into_iter().map(|(id, f)| (id, f.into())).collect())
            }
        }
    }

    pub async fn settings(&self, room: &RoomId) -> Result<Option<RoomSettings>, StateError> {
        match self {
            Backend::Memory(m) => Ok(m.settings(room)),
            Backend::Redis(r) => r.state().rooms.settings(room).await,
        }
    }

    /// Records a room's settings; an existing room keeps the ones it has.
    pub async fn create_room(
        &self,
        room: &RoomId,
        settings: RoomSettings,
    ) -> Result<RoomSettings, StateError> {
        match self {
            Backend::Memory(m) => m.create_room(room, settings),
            Backend::Redis(r) => r.state().rooms.create(room, settings).await,
        }
    }

    /// Whether the room, as it is now, is closed.
    pub async fn is_closed(&self, room: &RoomId) -> Result<bool, StateError> {
        match self {
            Backend::Memory(m) => Ok(m.is_closed(room)),
            Backend::Redis(r) => r.state().rooms.is_closed(room, "").await,
        }
    }

    /// The room's read positions, mutes and removals.
    pub async fn member_state(&self, room: &RoomId) -> Result<MemberState, StateError> {
        match self {
            Backend::Memory(m) => Ok(m.member_state(room)),
            Backend::Redis(r) => r.state().rooms.member_state(room).await,
        }
    }

    /// Whether frames for a room's members travel through the backend (Redis's live channel,
    /// which brings them back to this node too) rather than straight to the local room.
    pub fn relays(&self) -> bool {
        matches!(self, Backend::Redis(_))
    }

    /// Raises read positions and, in a fleet, publishes `frame` to the room's nodes.
    pub async fn record_reads(
        &self,
        room: &RoomId,
        incarnation: &str,
        reads: &BTreeMap<String, u64>,
        frame: &str,
    ) -> Result<u32, StateError> {
        match self {
            Backend::Memory(m) => Ok(m.record_reads(room, incarnation, reads)),
            Backend::Redis(r) => {
                let rooms = &r.state().rooms;
                rooms.record_reads(room, incarnation, reads, frame).await
            }
        }
    }

    /// Records a moderator's action and, in a fleet, publishes `frame` to the room's nodes.
    pub async fn moderate(
        &self,
        room: &RoomId,
        moderation: &Moderation,
        frame: &str,
    ) -> Result<(), StateError> {
        match self {
            Backend::Memory(m) => m.moderate(room, moderation),
            Backend::Redis(r) => r.state().rooms.moderate(room, moderation, frame).await,
        }
    }

    /// Publishes an ephemeral frame (`typing`) to the room's nodes; nothing standalone.
    pub async fn publish(&self, room: &RoomId, frame: &str) -> Result<(), StateError> {
        match self {
            Backend::Memory(_) => Ok(()),
            Backend::Redis(r) => r.state().rooms.publish(room, frame).await,
        }
    }

    /// Closes an incarnation of the room for good (`""`: the room as it is now), drops its
    /// history and records the close in its transcript. In Redis this also tells every node
    /// hosting the room, with a `closed` frame carrying `reason`, through its live channel.
    /// Returns the incarnation closed; None when it was closed already.
    pub async fn close_room(
        &self,
        room: &RoomId,
        incarnation: &str,
        reason: &str,
    ) -> Result<Option<String>, StateError> {
        match self {
            Backend::Memory(m) => Ok(m.close_room(room, incarnation, reason)),
            Backend::Redis(r) => r.state().rooms.close(room, incarnation, reason).await,
        }
    }

    /// Records joins and leaves (JSON transcript entries) in an incarnation's transcript.
    pub async fn record_transcript(
        &self,
        room: &RoomId,
        incarnation: &str,
        entries: &[String],
    ) -> Result<(), StateError> {
        match self {
            Backend::Memory(m) => {
                m.record_transcript(room, incarnation, entries);
                Ok(())
            }
            Backend::Redis(r) => {
                let rooms = &r.state().rooms;
                rooms
                    .record_transcript(room, incarnation, entries)
                    .await
                    .map(drop)
            }
        }
    }
}
