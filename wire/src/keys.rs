//! Every Redis key and channel chatfleet uses. `docs/redis.md` describes each one.
//!
//! A room's keys share the hash tag `{namespace/name}`, so they live in one slot and the
//! append script can touch them together even on a Redis Cluster.

use crate::RoomId;

/// Prefix of every key, so a Redis shared with other software stays tidy.
pub const PREFIX: &str = "chatfleet";

/// Sorted set of node names, scored by the time (ms) of their last heartbeat. Readers list
/// nodes from here and treat a node as alive only while its [`node_report`] key exists.
pub fn node_index() -> String {
    format!("{PREFIX}:nodes")
}

/// String: the node's JSON [`LoadReport`](super::load::LoadReport), expiring after a few
/// missed heartbeats. A node's keys share the hash tag `{node}`, so the operator's
/// reservation script can read and write them together.
pub fn node_report(node: &str) -> String {
    format!("{PREFIX}:node:{{{node}}}")
}

/// Hash: room id → JSON [`RoomLoad`](super::load::RoomLoad) for every room with members on the
/// node; rewritten on every heartbeat and expiring with the report.
pub fn node_rooms(node: &str) -> String {
    format!("{PREFIX}:node:{{{node}}}:rooms")
}

/// Hash: room id → seats the operator reserved on the node for a room it placed there.
/// Written only by the operator's reservation script; the room's members on the node use up
/// its reservation as they arrive.
pub fn node_reserved(node: &str) -> String {
    format!("{PREFIX}:node:{{{node}}}:reserved")
}

/// Hash: room id → JSON list of [`RoomMember`](super::load::RoomMember)s connected to the
/// room on the node. Written by the heartbeat for rooms whose members changed, expiring with
/// the report.
pub fn node_members(node: &str) -> String {
    format!("{PREFIX}:node:{{{node}}}:members")
}

/// Pub/sub channel of fleet-wide [`Control`](super::control::Control) commands.
pub fn control_channel() -> String {
    format!("{PREFIX}:control")
}

/// Sorted set of one user's live sessions across the fleet: member = session id, score = the
/// time (ms, Redis clock) it expires unless its node refreshes it.
pub fn user_sessions(user: &str) -> String {
    format!("{PREFIX}:user:{{{user}}}:sessions")
}

/// Sorted set of one user's released sessions: member = session id, score = when (ms, Redis
/// clock) the record may go. A claim that reaches Redis after its release (its join already
/// refused and given up) finds the session here and is not taken.
pub fn user_released(user: &str) -> String {
    format!("{PREFIX}:user:{{{user}}}:released")
}

/// The keys and channel of one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomKeys {
    /// String counter: the id of the newest message.
    pub seq: String,
    /// Stream of the last messages; entry id `<message id>-0`, field `f` holds the frame.
    pub log: String,
    /// Hash of the room's settings (`max_members`, `created_ms`).
    pub meta: String,
    /// Hash: incarnation → when (ms) it was closed, for every closed incarnation of the name
    /// (`""` for a room without one), so stale tokens cannot reopen it and no write of a
    /// closed incarnation lands. The name itself is closed while its last incarnation is.
    pub closed: String,
    /// Pub/sub channel carrying every frame all members of the room must see.
    pub live: String,
    /// String: the log's epoch, a random name given when the room's state is (re)created.
    /// It changes whenever Redis lost the state (a restart without data, an eviction), so a
    /// client resuming from another epoch learns that history was lost.
    pub epoch: String,
    /// Sorted set of sends already appended: member = `<user>\n<client_id>`, score = the
    /// message id; a retried send finds its first id here (the last `history_len` only).
    pub sent: String,
    /// Hash: user → the message id the user has read up to (never decreases).
    pub reads: String,
    /// Hash: user → when (ms since the Unix epoch) the user's mute ends.
    pub muted: String,
    /// Hash: user → why a moderator removed the user; those users may not join again.
    pub removed: String,
    /// Sorted set of the room's seats across the fleet: member = session id, score = when
    /// (ms, Redis clock) the seat expires unless its node refreshes it. Caps the room at its
    /// `max_members` however many nodes its members are on.
    pub seats: String,
    /// Sorted set of released seats (session id → when the record may go), as
    /// [`user_released`] is for sessions.
    pub seats_released: String,
    /// Stream of the transcript of the room without an incarnation (field `f`: a JSON
    /// [`TranscriptEntry`](crate::transcript::TranscriptEntry)); an incarnation's is
    /// [`Self::transcript_of`]. Not part of [`Self::state`]: it outlives the room's close by
    /// the transcript retention.
    pub transcript: String,
}

impl RoomKeys {
    pub fn new(room: &RoomId) -> Self {
        let base = format!("{PREFIX}:room:{{{room}}}");
        Self {
            seq: format!("{base}:seq"),
            log: format!("{base}:log"),
            meta: format!("{base}:meta"),
            closed: format!("{base}:closed"),
            live: format!("{base}:live"),
            epoch: format!("{base}:epoch"),
            sent: format!("{base}:sent"),
            reads: format!("{base}:reads"),
            muted: format!("{base}:muted"),
            removed: format!("{base}:removed"),
            transcript: format!("{base}:transcript"),
            seats: format!("{base}:seats"),
            seats_released: format!("{base}:seats:released"),
        }
    }

    /// The transcript of one incarnation of the room (`""`: the room without one). Each
    /// incarnation keeps its own, for its own retention.
    pub fn transcript_of(&self, incarnation: &str) -> String {
        if incarnation.is_empty() {
            self.transcript.clone()
        } else {
            format!("{}:{incarnation}", self.transcript)
        }
    }

    /// The keys that carry the room's shared state and expire together.
    pub fn state(&self) -> [&str; 8] {
        [
            &self.seq,
            &self.log,
            &self.meta,
            &self.epoch,
            &self.sent,
            &self.reads,
            &self.muted,
            &self.removed,
        ]
    }
}

/// The keys of one fleet's webhook queue, sharing the hash tag `{<fleet>}` so the claim
/// script can touch them together on a Redis Cluster. Named by fleet (`namespace/name`), so
/// fleets sharing a Redis never deliver each other's events with the wrong secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookKeys {
    /// Hash: job id → JSON job (the receiver's URL, the event, attempts so far).
    pub jobs: String,
    /// Sorted set: job id → when (ms, Redis clock) it is due: its next attempt, or the end of
    /// the lease of the node delivering it now.
    pub due: String,
    /// List of dead letters (newest first, capped): jobs that failed every attempt.
    pub dead: String,
}

impl WebhookKeys {
    pub fn new(fleet: &str) -> Self {
        let base = format!("{PREFIX}:webhooks:{{{fleet}}}");
        Self {
            jobs: format!("{base}:jobs"),
            due: format!("{base}:due"),
            dead: format!("{base}:dead"),
        }
    }
}

/// Field of a log entry that holds the frame.
pub const LOG_FIELD: &str = "f";

/// The stream entry id of message `id`.
pub fn log_entry_id(id: u64) -> String {
    format!("{id}-0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_keys_share_one_hash_tag() {
        let keys = RoomKeys::new(&"support/case-7".parse().unwrap());
        for key in [
            &keys.seq,
            &keys.log,
            &keys.meta,
            &keys.closed,
            &keys.live,
            &keys.epoch,
            &keys.sent,
            &keys.reads,
            &keys.muted,
            &keys.removed,
            &keys.transcript,
            &keys.seats,
            &keys.seats_released,
        ] {
            assert!(key.starts_with("chatfleet:room:{support/case-7}:"), "{key}");
        }
        assert_eq!(node_report("chat-0"), "chatfleet:node:{chat-0}");
        assert_eq!(node_rooms("chat-0"), "chatfleet:node:{chat-0}:rooms");
        assert_eq!(node_reserved("chat-0"), "chatfleet:node:{chat-0}:reserved");
        assert_eq!(node_members("chat-0"), "chatfleet:node:{chat-0}:members");
        assert_eq!(log_entry_id(12), "12-0");
        assert_eq!(user_sessions("ann"), "chatfleet:user:{ann}:sessions");
        assert_eq!(user_released("ann"), "chatfleet:user:{ann}:released");
        let hooks = WebhookKeys::new("support/chat");
        assert_eq!(hooks.jobs, "chatfleet:webhooks:{support/chat}:jobs");
        assert_eq!(hooks.due, "chatfleet:webhooks:{support/chat}:due");
        assert_eq!(hooks.dead, "chatfleet:webhooks:{support/chat}:dead");
    }
}
