//! A room's shared state: its settings, its tombstone, its live channel and its message log.
//!
//! A room's keys share one hash tag (see `chatfleet_wire::keys::RoomKeys`), so every
//! multi-key change below touches one slot.

use std::time::Duration;

use chatfleet_wire::RoomId;
use chatfleet_wire::frames::{MESSAGE_PREFIX, ServerFrame, message_json};
use chatfleet_wire::keys::{self, LOG_FIELD, RoomKeys};
use chatfleet_wire::token::MAX_TOKEN_TTL;
use chatfleet_wire::transcript::TranscriptEntry;
use redis::AsyncCommands;

use crate::transcripts::TranscriptSettings;
use crate::{Redis, StateError, scripts};

/// A message as the log holds it: its id and its encoded frame.
pub type LoggedMessage = (u64, String);

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub id: u64,
    /// The encoded frame; None when the send was a retry of one already appended (`id` is
    /// then the first one's).
    pub frame: Option<String>,
    /// The log's epoch.
    pub epoch: String,
    /// This append began the epoch: the room's state was new, or Redis had lost messages.
    pub renewed: bool,
}

/// A new, random epoch name.
pub fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A new incarnation id, for a room opened without one (by a node's room API; the operator
/// uses the ChatRoom's UID).
pub fn new_incarnation() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether `incarnation` can name a room's incarnation: what UIDs and [`new_incarnation`]
/// produce (it becomes part of a Redis key and a URL).
pub fn is_incarnation(incarnation: &str) -> bool {
    (1..=64).contains(&incarnation.len())
        && incarnation
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A room's settings, set when it is created (through the room API or by the operator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSettings {
    pub max_members: u32,
    pub created_ms: u64,
    /// Which room of that name this is (`""` for a room opened without one): a name used
    /// again after a close is another room, with its own transcript and tokens.
    pub incarnation: String,
}

/// Rooms' state in Redis. Cheap to clone.
#[derive(Clone)]
pub struct RoomStore {
    pub(crate) redis: Redis,
    /// How long a room's state lives without a node refreshing it.
    ttl: Duration,
    transcripts: TranscriptSettings,
}

impl RoomStore {
    pub fn new(redis: Redis, ttl: Duration) -> Self {
        Self {
            redis,
            ttl,
            transcripts: TranscriptSettings::default(),
        }
    }

    pub fn with_transcripts(self, transcripts: TranscriptSettings) -> Self {
        Self {
            transcripts,
            ..self
        }
    }

    pub fn transcripts(&self) -> TranscriptSettings {
        self.transcripts
    }

    pub(crate) fn ttl_seconds(&self) -> u64 {
        self.ttl.as_secs().max(1)
    }

    /// The newest message id and the log's epoch, read together; a room without an epoch
    /// gets one. `floor` is the newest id the caller has delivered: a log found behind it
    /// lost messages, and moves up to it in a new epoch. Refused for a closed room (that
    /// incarnation of it), whose keys stay gone.
    pub async fn position(
        &self,
        room: &RoomId,
        incarnation: &str,
        floor: u64,
    ) -> Result<(u64, String), StateError> {
        let keys = RoomKeys::new(room);
        let (id, epoch, closed): (u64, String, u8) = scripts::POSITION
            .key(&keys.seq)
            .key(&keys.epoch)
            .key(&keys.log)
            .key(&keys.closed)
            .key(&keys.meta)
            .arg(new_epoch())
            .arg(self.ttl_seconds())
            .arg(floor)
            .arg(incarnation)
            .invoke_async(&mut self.redis.conn())
            .await?;
        if closed == 1 {
            return Err(StateError::RoomClosed);
        }
        Ok((id, epoch))
    }

    /// The newest message id and the log's epoch (None while the room has none), read
    /// together, writing nothing.
    pub async fn latest(&self, room: &RoomId) -> Result<(u64, Option<String>), StateError> {
        let keys = RoomKeys::new(room);
        let (id, epoch): (Option<u64>, Option<String>) = redis::cmd("MGET")
            .arg(&keys.seq)
            .arg(&keys.epoch)
            .query_async(&mut self.redis.conn())
            .await?;
        Ok((id.unwrap_or(0), epoch))
    }

    /// Retained messages with `after < id <= upto`, oldest first.
    pub async fn read_range(
        &self,
        room: &RoomId,
        after: u64,
        upto: u64,
    ) -> Result<Vec<LoggedMessage>, StateError> {
        if upto <= after {
            return Ok(Vec::new());
        }
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(RoomKeys::new(room).log)
            .arg(keys::log_entry_id(after + 1))
            .arg(keys::log_entry_id(upto))
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|(entry_id, fields)| {
                let id = entry_id.split('-').next()?.parse().ok()?;
                let (_, frame) = fields.into_iter().find(|(f, _)| f == LOG_FIELD)?;
                Some((id, frame))
            })
            .collect())
    }

    pub async fn settings(&self, room: &RoomId) -> Result<Option<RoomSettings>, StateError> {
        let (max_members, created_ms, incarnation): (Option<u32>, Option<u64>, Option<String>) =
            redis::cmd("HMGET")
                .arg(RoomKeys::new(room).meta)
                .arg("max_members")
                .arg("created_ms")
                .arg("incarnation")
                .query_async(&mut self.redis.conn())
                .await?;
        Ok(max_members.map(|max_members| RoomSettings {
            max_members,
            created_ms: created_ms.unwrap_or(0),
            incarnation: incarnation.unwrap_or_default(),
        }))
    }

    /// Records a room's settings; an existing room keeps the ones it has. Refused for a room
    /// (an incarnation) that was closed, atomically: a create racing a close never brings the
    /// room back. A new incarnation of a closed name opens. A room already live without
    /// settings (joined before it was created) keeps no incarnation: the answer says which.
    pub async fn create(
        &self,
        room: &RoomId,
        settings: RoomSettings,
    ) -> Result<RoomSettings, StateError> {
        let keys = RoomKeys::new(room);
        let (max_members, created_ms, incarnation): (i64, u64, String) = scripts::CREATE_ROOM
            .key(&keys.meta)
            .key(&keys.closed)
            .key(&keys.epoch)
            .arg(settings.max_members)
            .arg(settings.created_ms)
            .arg(self.ttl_seconds())
            .arg(&settings.incarnation)
            .invoke_async(&mut self.redis.conn())
            .await?;
        if max_members < 0 {
            return Err(StateError::RoomClosed);
        }
        Ok(RoomSettings {
            max_members: u32::try_from(max_members).unwrap_or(settings.max_members),
            created_ms,
            incarnation,
        })
    }

    /// Whether the room is closed: its current incarnation, with `incarnation` empty (the name
    /// is closed while its last incarnation is and no later one opened), or the one named.
    pub async fn is_closed(&self, room: &RoomId, incarnation: &str) -> Result<bool, StateError> {
        let keys = RoomKeys::new(room);
        let closed: u8 = scripts::CLOSED
            .key(&keys.closed)
            .key(&keys.meta)
            .arg(incarnation)
            .invoke_async(&mut self.redis.conn())
            .await?;
        Ok(closed == 1)
    }

    /// The incarnation a room name stands for now: the open room's, or else the one closed
    /// last; `""` for a room without one.
    pub async fn current_incarnation(&self, room: &RoomId) -> Result<String, StateError> {
        let keys = RoomKeys::new(room);
        Ok(scripts::INCARNATION
            .key(&keys.meta)
            .key(&keys.closed)
            .invoke_async(&mut self.redis.conn())
            .await?)
    }

    /// Closes one incarnation of the room for good, once, in one script (`""`: the room as it
    /// is now): a closed mark for as long as a token for the room could live, the close
    /// recorded as its transcript's last entry (kept for the retention from now on, a
    /// retention no later write changes), and, for the current incarnation, the room's state
    /// dropped and a `closed` frame carrying `reason` to every node hosting it. Returns the
    /// incarnation closed, or None when it was closed already (nothing changes then).
    pub async fn close(
        &self,
        room: &RoomId,
        incarnation: &str,
        reason: &str,
    ) -> Result<Option<String>, StateError> {
        let keys = RoomKeys::new(room);
        let incarnation = match incarnation {
            "" => self
                .redis
                .conn()
                .hget::<_, _, Option<String>>(&keys.meta, "incarnation")
                .await?
                .unwrap_or_default(),
            named => named.to_owned(),
        };
        let closed_frame = ServerFrame::Closed {
            room: room.clone(),
            reason: reason.to_owned(),
        }
        .to_json();
        let entry = if self.transcripts.enabled() {
            TranscriptEntry::Closed {
                reason: reason.to_owned(),
                ts: chatfleet_wire::clock::unix_millis(),
            }
            .to_json()
        } else {
            String::new()
        };
        let mut invocation = scripts::CLOSE.key(&keys.closed);
        invocation
            .key(keys.transcript_of(&incarnation))
            .key(&keys.meta)
            .key(keys.state().to_vec());
        let closed: u8 = invocation
            .arg(MAX_TOKEN_TTL.as_secs())
            .arg(entry)
            .arg(self.transcripts.retention.as_secs().max(1))
            .arg(&keys.live)
            .arg(closed_frame)
            .arg(self.redis.room_publish_command())
            .arg(&incarnation)
            .invoke_async(&mut self.redis.conn())
            .await?;
        Ok((closed == 1).then_some(incarnation))
    }

    /// Publishes a frame every member of the room must see, on whichever node they are
    /// (`moved`, system notices).
    pub async fn publish(&self, room: &RoomId, frame: &str) -> Result<(), StateError> {
        let _: () = redis::cmd(self.redis.room_publish_command())
            .arg(RoomKeys::new(room).live)
            .arg(frame)
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(())
    }

    /// Extends the life of the shared state of rooms a node hosts (each with its
    /// incarnation), and of their transcripts while they are open (a closed room's transcript
    /// keeps the retention its close set).
    pub async fn refresh(&self, rooms: &[(RoomId, String)]) -> Result<(), StateError> {
        if rooms.is_empty() {
            return Ok(());
        }
        let ttl = self.ttl_seconds();
        let _: Vec<i64> = self
            .redis
            .query_each_by_slot(
                rooms,
                |(room, _)| RoomKeys::new(room).seq,
                // Loaded in the same round trip, so a restarted Redis runs it all the same.
                |pipe| {
                    pipe.load_script(&scripts::REFRESH_ROOM).ignore();
                },
                |pipe, (room, incarnation)| {
                    let keys = RoomKeys::new(room);
                    let mut invocation = scripts::REFRESH_ROOM.key(&keys.closed);
                    invocation
                        .key(&keys.meta)
                        .key(keys.transcript_of(incarnation))
                        .key(keys.state().to_vec())
                        .arg(ttl)
                        .arg(incarnation);
                    pipe.invoke_script(&invocation);
                },
            )
            .await?;
        Ok(())
    }
}

/// Appends to rooms' message logs: what a node does with every message it accepts.
#[derive(Clone)]
pub struct MessageLog {
    rooms: RoomStore,
    /// Messages each room's log retains (approximately: the stream is trimmed with `~`).
    history_len: usize,
}

impl MessageLog {
    pub fn new(rooms: RoomStore, history_len: usize) -> Self {
        Self {
            rooms,
            history_len: history_len.max(1),
        }
    }

    /// The rooms whose logs this appends to.
    pub fn rooms(&self) -> &RoomStore {
        &self.rooms
    }

    /// Appends a message. `floor` is the newest id the caller has delivered in the room: ids
    /// stay above it even if Redis lost the room's state. `dedup` (the sender and its
    /// `client_id`) makes a retried send a no-op that returns the first one's id.
    pub async fn append(
        &self,
        room: &RoomId,
        incarnation: &str,
        tail: &str,
        floor: u64,
        dedup: Option<&str>,
    ) -> Result<Appended, StateError> {
        let keys = RoomKeys::new(room);
        let (id, duplicate, epoch, renewed): (i64, i64, String, i64) = scripts::APPEND
            .key(&keys.seq)
            .key(&keys.log)
            .key(&keys.closed)
            .key(&keys.sent)
            .key(&keys.epoch)
            .key(keys.transcript_of(incarnation))
            .key(&keys.meta)
            .arg(MESSAGE_PREFIX)
            .arg(tail)
            .arg(self.history_len)
            .arg(&keys.live)
            .arg(self.rooms.ttl_seconds())
            .arg(floor)
            .arg(dedup.unwrap_or(""))
            .arg(new_epoch())
            .arg(self.rooms.redis.room_publish_command())
            .arg(self.rooms.transcripts.max_entries)
            .arg(incarnation)
            .invoke_async(&mut self.rooms.redis.conn())
            .await?;
        if id < 0 {
            return Err(StateError::RoomClosed);
        }
        let id = id as u64;
        let frame = (duplicate == 0).then(|| message_json(id, tail));
        Ok(Appended {
            id,
            frame,
            epoch,
            renewed: renewed == 1,
        })
    }
}
