//! The WebSocket protocol: JSON text frames, one object per frame, told apart by `type`.
//!
//! `docs/protocol.md` shows an example of every frame. Message frames are encoded once per
//! message (see [`message_json`]) and the same bytes go to every member, into the history and
//! across Redis, so a resumed client receives exactly what a live one did.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::RoomId;

/// What a member is in a room; it decides what the member may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Agent,
    /// Reads the room but may not send.
    Observer,
}

impl Role {
    pub fn may_send(self) -> bool {
        !matches!(self, Role::Observer)
    }
}

/// A member of a room as the other members see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user: String,
    pub name: String,
    pub role: Role,
}

/// Bounds on the strings clients choose, enforced where they enter: the join (token or dev
/// auth), the room API, the send frame. Every member's name travels in every presence and
/// welcome frame, so it must stay small.
pub mod bounds {
    /// A user id: 1 to this many bytes.
    pub const USER_ID_BYTES: usize = 128;
    /// A display name: 1 to this many bytes.
    pub const DISPLAY_NAME_BYTES: usize = 128;
    /// A send's `client_id`: at most this many bytes.
    pub const CLIENT_ID_BYTES: usize = 128;
}

impl Member {
    /// Whether the user id and display name are within [`bounds`]; the reason when not.
    pub fn check_bounds(&self) -> Result<(), String> {
        let within = |s: &str, max: usize| !s.trim().is_empty() && s.len() <= max;
        if !within(&self.user, bounds::USER_ID_BYTES) {
            return Err(format!(
                "the user id must be 1 to {} bytes",
                bounds::USER_ID_BYTES
            ));
        }
        if !within(&self.name, bounds::DISPLAY_NAME_BYTES) {
            return Err(format!(
                "the display name must be 1 to {} bytes",
                bounds::DISPLAY_NAME_BYTES
            ));
        }
        Ok(())
    }
}

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Say something in the room. `client_id` is echoed back on the resulting `message` so the
    /// sender can match its own messages.
    Send {
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
    /// The member is typing. Ephemeral: shown to the others, never stored. Clients may send it
    /// on every keystroke; a node passes on at most one per [`TYPING_INTERVAL_MS`]. (A struct
    /// variant, empty, so that unknown fields are refused as for every other frame.)
    Typing {},
    /// The member has read the room up to message `up_to`. A read never moves back.
    Read { up_to: u64 },
}

/// Shortest gap, per connection, between two `typing` frames a node passes on; clients show
/// "is typing" for about twice this long after the last one.
pub const TYPING_INTERVAL_MS: u64 = 2_000;

/// Frames a node sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome(Welcome),
    Message(Message),
    Presence(Presence),
    Error(ErrorFrame),
    /// The room was closed; the node closes the connection after this frame.
    Closed {
        room: RoomId,
        reason: String,
    },
    /// The node is shutting down; reconnect (with `since`) to get a new node.
    Draining {
        reason: String,
    },
    /// The room now lives elsewhere; reconnect to `endpoint` with `since`.
    Moved {
        room: RoomId,
        endpoint: String,
        /// The node the room left. Only its members reconnect: members of a room spanning
        /// several nodes who are on another of them stay where they are.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
    },
    /// This node has no seat for you (it is full or draining), but the room goes on at
    /// `endpoint`, another node of the fleet: connect there with the same token. Sent instead
    /// of the welcome, then the node closes with 1013.
    Redirect {
        room: RoomId,
        endpoint: String,
        /// Why not here: `node_full` or `draining`.
        reason: ErrorCode,
    },
    /// A notice from the operators of the service (an admin broadcast), not from a member.
    System {
        body: String,
        /// Milliseconds since the Unix epoch.
        ts: u64,
    },
    /// Someone is typing (see [`ClientFrame::Typing`]); not sent to that user's own sessions.
    Typing {
        room: RoomId,
        user: String,
        name: String,
    },
    /// Members' read positions that moved: user → the id read up to. A room sends at most
    /// one per second, with every read since the last; apply each as a maximum.
    Read {
        room: RoomId,
        reads: BTreeMap<String, u64>,
    },
    /// A moderator acted on a member through the room API.
    Moderation(Moderation),
}

/// A moderator's action on a member, as every member of the room sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Moderation {
    pub room: RoomId,
    pub user: String,
    pub action: ModerationAction,
    pub reason: String,
    /// For `muted`: until when, in milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    /// Milliseconds since the Unix epoch, when the moderator acted.
    pub ts: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ModerationAction {
    /// The member's sends are refused with `muted` until `until`.
    Muted,
    /// A mute was lifted early.
    Unmuted,
    /// The member's sessions were closed, and the member may not join the room again.
    Removed,
}

/// First frame on every accepted connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub room: RoomId,
    pub user: Member,
    pub members: Vec<Member>,
    /// The node serving this connection.
    pub node: String,
    /// Id of the newest message in the room when the client joined (0: none yet). Replayed
    /// messages, if any, follow the welcome; live ones have larger ids.
    pub last_id: u64,
    /// The room log's epoch. Ids only compare within one epoch: resume with `since` and this
    /// `epoch`; a resume from another epoch (the room's history was lost meanwhile) replays
    /// what the new epoch retains and says `complete: false`.
    #[serde(default)]
    pub epoch: String,
    /// Present when the client asked to resume with `since`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
    /// Every member's read position (user → the id read up to), the joining user's included.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reads: BTreeMap<String, u64>,
    /// Set while the joining user is muted: until when (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted_until: Option<u64>,
}

/// How a resume went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub since: u64,
    /// How many missed messages follow the welcome.
    pub replayed: u64,
    /// False when messages after `since` had already left the retained history: the client
    /// missed `first_replayed_id - since - 1` messages it can no longer get.
    pub complete: bool,
}

/// A chat message. `id` increases by one per message in a room, across the whole fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    pub id: u64,
    #[serde(flatten)]
    pub content: MessageContent,
}

/// Everything in a message but its id, which only the room's log assigns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageContent {
    pub room: RoomId,
    pub from: String,
    pub name: String,
    pub role: Role,
    pub body: String,
    /// Milliseconds since the Unix epoch, when the node accepted the message.
    pub ts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// Someone joined or left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub event: PresenceEvent,
    pub user: String,
    pub name: String,
    pub role: Role,
    /// Members in the room after the change: across the fleet when its members are on
    /// several nodes.
    pub members: usize,
    /// The node the member is on (in a fleet, where a room's members may be on several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceEvent {
    Joined,
    Left,
}

/// Something went wrong. Whether the connection stays open depends on the code; see
/// [`ErrorCode::closes_connection`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    pub message: String,
}

/// Stable error codes: clients branch on these, never on the message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not valid JSON or not a known client frame.
    BadFrame,
    /// The message body is larger than the node accepts.
    MessageTooLarge,
    /// The connection sends faster than its rate limit.
    RateLimited,
    /// The member may not send (an observer).
    ReadOnly,
    /// The room has as many members as it may.
    RoomFull,
    /// The node has as many users as it may.
    NodeFull,
    /// The room was closed and cannot be joined.
    RoomClosed,
    /// The node is shutting down.
    Draining,
    /// The node cannot reach its shared state (Redis); retry shortly.
    Unavailable,
    /// The user already holds as many sessions as the fleet allows.
    SessionLimit,
    /// The client read too slowly and its outbound queue overflowed.
    SlowConsumer,
    /// An administrator ended the session.
    SessionEnded,
    /// The node could not learn whether a send was appended (Redis stalled mid-request): it
    /// may or may not appear. Retry with the same `client_id`; the message is appended once.
    Unconfirmed,
    /// A moderator muted the member: sends are refused until the mute ends.
    Muted,
    /// A moderator removed the member from the room; it may not join again.
    Removed,
}

impl ErrorCode {
    /// Codes sent when a join is refused or a session ended; the node closes afterwards.
    pub fn closes_connection(self) -> bool {
        !matches!(
            self,
            ErrorCode::BadFrame
                | ErrorCode::MessageTooLarge
                | ErrorCode::RateLimited
                | ErrorCode::ReadOnly
                | ErrorCode::Unavailable
                | ErrorCode::Unconfirmed
                | ErrorCode::Muted
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ReadOnly => "read_only",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::NodeFull => "node_full",
            ErrorCode::RoomClosed => "room_closed",
            ErrorCode::Draining => "draining",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::SessionLimit => "session_limit",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::SessionEnded => "session_ended",
            ErrorCode::Unconfirmed => "unconfirmed",
            ErrorCode::Muted => "muted",
            ErrorCode::Removed => "removed",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes the node uses.
pub mod close {
    /// Normal closure: the room was closed (or the client closed normally).
    pub const NORMAL: u16 = 1000;
    /// The client broke the WebSocket protocol (a bad frame, opcode, fragment or close).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame was not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The client broke the chat protocol or a policy (flooding, an ended session).
    pub const POLICY: u16 = 1008;
    /// A frame or message above the node's hard limit.
    pub const TOO_BIG: u16 = 1009;
    /// The node failed unexpectedly.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The node restarts (drain): reconnect, possibly elsewhere.
    pub const SERVICE_RESTART: u16 = 1012;
    /// Refused for capacity or unavailability: try again later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The client stopped answering pings or reading its messages.
    pub const GOING_AWAY: u16 = 1001;
}

/// The prefix every encoded message frame starts with, up to its id.
pub const MESSAGE_PREFIX: &str = r#"{"type":"message","id":"#;

/// The part of a message frame after its id: `,"room":...}`. The Redis log splices
/// `MESSAGE_PREFIX + id + tail` inside one script, so the id is assigned and the frame encoded
/// exactly once, fleet-wide.
pub fn message_tail(content: &MessageContent) -> String {
    let json = serde_json::to_string(content).expect("a message always serializes");
    // `{"room":...}` becomes `,"room":...}`.
    format!(",{}", &json[1..])
}

/// The complete JSON of a message frame.
pub fn message_json(id: u64, tail: &str) -> String {
    let mut out = String::with_capacity(MESSAGE_PREFIX.len() + 20 + tail.len());
    out.push_str(MESSAGE_PREFIX);
    out.push_str(&id.to_string());
    out.push_str(tail);
    out
}

impl ServerFrame {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error(ErrorFrame {
            code,
            message: message.into(),
        })
    }

    /// A `system` notice stamped now.
    pub fn system(body: &str) -> Self {
        ServerFrame::System {
            body: body.to_owned(),
            ts: crate::clock::unix_millis(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }
}

/// Reads only what a node needs to route a frame it got from another node over Redis.
#[derive(Debug, Deserialize)]
pub struct FrameHeader {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub id: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> MessageContent {
        MessageContent {
            room: "support/case-1".parse().unwrap(),
            from: "u1".into(),
            name: "Ann \"the\" agent".into(),
            role: Role::Agent,
            body: "hello, {world}".into(),
            ts: 1_700_000_000_000,
            client_id: Some("c-1".into()),
        }
    }

    #[test]
    fn spliced_message_json_is_a_valid_message_frame() {
        let json = message_json(42, &message_tail(&content()));
        let frame: ServerFrame = serde_json::from_str(&json).unwrap();
        assert_eq!(
            frame,
            ServerFrame::Message(Message {
                id: 42,
                content: content()
            })
        );
        let header: FrameHeader = serde_json::from_str(&json).unwrap();
        assert_eq!((header.kind.as_str(), header.id), ("message", Some(42)));
    }

    #[test]
    fn client_frames_reject_unknown_types_and_fields() {
        let ok: ClientFrame = serde_json::from_str(r#"{"type":"send","body":"hi"}"#).unwrap();
        assert_eq!(
            ok,
            ClientFrame::Send {
                body: "hi".into(),
                client_id: None
            }
        );
        for bad in [
            r#"{"type":"shout","body":"hi"}"#,
            r#"{"type":"send"}"#,
            r#"{"type":"send","body":"hi","extra":1}"#,
            r#"["send"]"#,
            r#"{"type":"read"}"#,
            r#"{"type":"read","up_to":-1}"#,
            r#"{"type":"typing","body":"x"}"#,
            "not json",
        ] {
            assert!(serde_json::from_str::<ClientFrame>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn typing_read_and_moderation_frames_have_a_stable_shape() {
        let typing: ClientFrame = serde_json::from_str(r#"{"type":"typing"}"#).unwrap();
        assert_eq!(typing, ClientFrame::Typing {});
        let read: ClientFrame = serde_json::from_str(r#"{"type":"read","up_to":7}"#).unwrap();
        assert_eq!(read, ClientFrame::Read { up_to: 7 });
        let room: RoomId = "support/case-1".parse().unwrap();
        let reads = ServerFrame::Read {
            room: room.clone(),
            reads: [("dana".to_owned(), 7)].into(),
        };
        assert_eq!(
            reads.to_json(),
            r#"{"type":"read","room":"support/case-1","reads":{"dana":7}}"#
        );
        let muted = ServerFrame::Moderation(Moderation {
            room,
            user: "dana".into(),
            action: ModerationAction::Muted,
            reason: "calm down".into(),
            until: Some(5),
            ts: 1,
        });
        assert_eq!(
            muted.to_json(),
            r#"{"type":"moderation","room":"support/case-1","user":"dana","action":"muted","reason":"calm down","until":5,"ts":1}"#
        );
        assert_eq!(
            serde_json::from_str::<ServerFrame>(&muted.to_json()).unwrap(),
            muted
        );
    }

    #[test]
    fn error_codes_serialize_as_their_stable_names() {
        for code in [
            ErrorCode::BadFrame,
            ErrorCode::MessageTooLarge,
            ErrorCode::RateLimited,
            ErrorCode::ReadOnly,
            ErrorCode::RoomFull,
            ErrorCode::NodeFull,
            ErrorCode::RoomClosed,
            ErrorCode::Draining,
            ErrorCode::Unavailable,
            ErrorCode::SessionLimit,
            ErrorCode::SlowConsumer,
            ErrorCode::SessionEnded,
            ErrorCode::Unconfirmed,
            ErrorCode::Muted,
            ErrorCode::Removed,
        ] {
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
    }
}
