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

/// A room's settings, set when it is created (through the room API or by the operator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomSettings {
    pub max_members: u32,
    pub created_ms: u64,
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
    /// lost messages, and moves up to it in a new epoch. Refused for a closed room, whose keys
    /// stay gone.
    pub async fn position(&self, room: &RoomId, floor: u64) -> Result<(u64, String), StateError> {
        let keys = RoomKeys::new(room);
        let (id, epoch, closed): (u64, String, u8) = scripts::POSITION
            .key(&keys.seq)
            .key(&keys.epoch)
            .key(&keys.log)
            .key(&keys.closed)
            .arg(new_epoch())
            .arg(self.ttl_seconds())
            .arg(floor)
            .invoke_async(&mut self.redis.conn())
            .await?;
        if closed == 1 {
            return Err(StateError::RoomClosed);
        }
        Ok((id, epoch))
    }

    /// The newest message id (0 when there is none).
    pub async fn latest_id(&self, room: &RoomId) -> Result<u64, StateError> {
        let id: Option<u64> = self.redis.conn().get(RoomKeys::new(room).seq).await?;
        Ok(id.unwrap_or(0))
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
        let (max_members, created_ms): (Option<u32>, Option<u64>) = redis::cmd("HMGET")
            .arg(RoomKeys::new(room).meta)
            .arg("max_members")
            .arg("created_ms")
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(max_members.map(|max_members| RoomSettings {
            max_members,
            created_ms: created_ms.unwrap_or(0),
        }))
    }

    /// Records a room's settings; an existing room keeps the ones it has. Refused for a room
    /// that was closed, atomically: a create racing a close never brings the room back.
    pub async fn create(
        &self,
        room: &RoomId,
        settings: RoomSettings,
    ) -> Result<RoomSettings, StateError> {
        let keys = RoomKeys::new(room);
        let (max_members, created_ms): (i64, u64) = scripts::CREATE_ROOM
            .key(&keys.meta)
            .key(&keys.closed)
            .arg(settings.max_members)
            .arg(settings.created_ms)
            .arg(self.ttl_seconds())
            .invoke_async(&mut self.redis.conn())
            .await?;
        if max_members < 0 {
            return Err(StateError::RoomClosed);
        }
        Ok(RoomSettings {
            max_members: u32::try_from(max_members).unwrap_or(settings.max_members),
            created_ms,
        })
    }

    pub async fn is_closed(&self, room: &RoomId) -> Result<bool, StateError> {
        Ok(self.redis.conn().exists(RoomKeys::new(room).closed).await?)
    }

    /// Lifts a closed room's tombstone: only for a new room deliberately given an old name
    /// (the operator does this when a new ChatRoom reuses a deleted one's name). The old
    /// room's transcript goes with it, so the new room's starts empty.
    pub async fn reopen(&self, room: &RoomId) -> Result<(), StateError> {
        let keys = RoomKeys::new(room);
        let _: () = self
            .redis
            .conn()
            .del(&[keys.closed, keys.transcript])
            .await?;
        Ok(())
    }

    /// Closes the room for good, once, in one script: a closed mark for as long as a token for
    /// the room could live, the room's state dropped, the close recorded as its transcript's
    /// last entry (kept for the retention from now on, a retention no later write changes) and
    /// a `closed` frame carrying `reason` to every node hosting it. Returns false when the room
    /// was closed already (nothing changes then).
    pub async fn close(&self, room: &RoomId, reason: &str) -> Result<bool, StateError> {
        let keys = RoomKeys::new(room);
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
        invocation.key(&keys.transcript).key(keys.state().to_vec());
        let closed: u8 = invocation
            .arg(MAX_TOKEN_TTL.as_secs())
            .arg(entry)
            .arg(self.transcripts.retention.as_secs().max(1))
            .arg(&keys.live)
            .arg(closed_frame)
            .arg(self.redis.room_publish_command())
            .invoke_async(&mut self.redis.conn())
            .await?;
        Ok(closed == 1)
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

    /// Extends the life of the shared state of rooms a node hosts, and of their transcripts
    /// while they are open (a closed room's transcript keeps the retention its close set).
    pub async fn refresh(&self, rooms: &[RoomId]) -> Result<(), StateError> {
        if rooms.is_empty() {
            return Ok(());
        }
        let ttl = self.ttl_seconds();
        let _: Vec<i64> = self
            .redis
            .query_each_by_slot(
                rooms,
                |room| RoomKeys::new(room).seq,
                // Loaded in the same round trip, so a restarted Redis runs it all the same.
                |pipe| {
                    pipe.load_script(&scripts::REFRESH_ROOM).ignore();
                },
                |pipe, room| {
                    let keys = RoomKeys::new(room);
                    let mut invocation = scripts::REFRESH_ROOM.key(&keys.closed);
                    invocation
                        .key(&keys.transcript)
                        .key(keys.state().to_vec())
                        .arg(ttl);
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
            .key(&keys.transcript)
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
