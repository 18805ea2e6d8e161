//! What a room keeps about its members beyond presence: how far each has read, who is muted
//! until when, and who was removed. Read positions come from the members themselves (through
//! their nodes); mutes and removals from moderators (through the room API).
//!
//! Each change is written and published on the room's live channel in one step, so every
//! node hosting the room applies it; a room task that starts later reads [`MemberState`].

use std::collections::{BTreeMap, HashMap};

use chatfleet_wire::RoomId;
use chatfleet_wire::frames::{Moderation, ModerationAction};
use chatfleet_wire::keys::RoomKeys;

use crate::rooms::RoomStore;
use crate::{StateError, scripts};

/// A room's member state, as a room task starts from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberState {
    /// User → the message id read up to.
    pub reads: BTreeMap<String, u64>,
    /// User → when the mute ends (ms since the Unix epoch); ended mutes may linger.
    pub muted: HashMap<String, u64>,
    /// User → why they were removed.
    pub removed: HashMap<String, String>,
}

impl MemberState {
    /// Applies a moderation to the state.
    pub fn apply(&mut self, moderation: &Moderation) {
        let user = moderation.user.clone();
        match moderation.action {
            ModerationAction::Muted => {
                self.muted.insert(user, moderation.until.unwrap_or(0));
            }
            ModerationAction::Unmuted => {
                self.muted.remove(&user);
            }
            ModerationAction::Removed => {
                self.muted.remove(&user);
                self.removed.insert(user, moderation.reason.clone());
            }
        }
    }

    /// Raises read positions to those in `reads`; returns the ones that moved.
    pub fn merge_reads(&mut self, reads: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        let mut moved = BTreeMap::new();
        for (user, &id) in reads {
            let at = self.reads.entry(user.clone()).or_default();
            if id > *at {
                *at = id;
                moved.insert(user.clone(), id);
            }
        }
        moved
    }
}

impl RoomStore {
    /// The room's read positions, mutes and removals, read in one round trip.
    pub async fn member_state(&self, room: &RoomId) -> Result<MemberState, StateError> {
        let keys = RoomKeys::new(room);
        let (reads, muted, removed): (BTreeMap<String, u64>, HashMap<String, u64>, _) =
            redis::pipe()
                .hgetall(&keys.reads)
                .hgetall(&keys.muted)
                .hgetall(&keys.removed)
                .query_async(&mut self.redis.conn())
                .await?;
        Ok(MemberState {
            reads,
            muted,
            removed,
        })
    }

    /// Raises members' read positions and publishes `frame` (a `read` frame with them) to the
    /// room's nodes if any moved. Returns how many moved.
    pub async fn record_reads(
        &self,
        room: &RoomId,
        incarnation: &str,
        reads: &BTreeMap<String, u64>,
        frame: &str,
    ) -> Result<u32, StateError> {
        let keys = RoomKeys::new(room);
        let mut invocation = scripts::READS.key(&keys.reads);
        invocation.key(&keys.closed).key(&keys.meta);
        invocation
            .arg(self.ttl_seconds())
            .arg(&keys.live)
            .arg(frame)
            .arg(self.redis.room_publish_command())
            .arg(incarnation);
        for (user, id) in reads {
            invocation.arg(user).arg(id);
        }
        Ok(invocation.invoke_async(&mut self.redis.conn()).await?)
    }

    /// Records a moderator's action and publishes `frame` (its `moderation` frame) to the
    /// room's nodes, in one script. Refused for a closed room, atomically: a mute racing the
    /// close leaves nothing behind. Moderators act on the room as it is now.
    pub async fn moderate(
        &self,
        room: &RoomId,
        moderation: &Moderation,
        frame: &str,
    ) -> Result<(), StateError> {
        let keys = RoomKeys::new(room);
        let (action, detail) = match moderation.action {
            ModerationAction::Muted => ("muted", moderation.until.unwrap_or(0).to_string()),
            ModerationAction::Unmuted => ("unmuted", String::new()),
            ModerationAction::Removed => ("removed", moderation.reason.clone()),
        };
        let done: i64 = scripts::MODERATE
            .key(&keys.muted)
            .key(&keys.removed)
            .key(&keys.closed)
            .key(&keys.meta)
            .arg(action)
            .arg(&moderation.user)
            .arg(detail)
            .arg(self.ttl_seconds())
            .arg(&keys.live)
            .arg(frame)
            .arg(self.redis.room_publish_command())
            .arg("")
            .invoke_async(&mut self.redis.conn())
            .await?;
        if done < 0 {
            return Err(StateError::RoomClosed);
        }
        Ok(())
    }
}
