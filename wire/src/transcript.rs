//! A room's transcript: every message and every join, leave and close, kept for a retention
//! after the room closes so a support tool can file the conversation.
//!
//! Nodes record entries as JSON in the room's transcript (a Redis stream in a fleet, memory
//! standalone): message frames exactly as members received them, and [`TranscriptEntry`]
//! events for the rest. Events record `after`, the newest message id their node had
//! delivered, so [`Transcript::assemble`] puts each one where its member saw it, whatever
//! the order in which nodes wrote them.

use serde::{Deserialize, Serialize};

use crate::RoomId;
use crate::frames::{Message, Role};

/// One line of a transcript. Encoded with a `type` field, as frames are: a message entry is
/// the `message` frame itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TranscriptEntry {
    Message(Message),
    /// A member's first session in the room on a node opened.
    Joined(MemberEvent),
    /// A member's last session in the room on a node ended.
    Left(MemberEvent),
    /// The room was closed: always the last entry, since a closed room takes no more.
    Closed {
        reason: String,
        /// Milliseconds since the Unix epoch.
        ts: u64,
    },
}

/// Who joined or left, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberEvent {
    pub user: String,
    pub name: String,
    pub role: Role,
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
    /// The newest message id the member's node had delivered: the event comes after it.
    pub after: u64,
}

impl TranscriptEntry {
    /// Where the entry goes: messages at their id; events after message `after`, among
    /// themselves by time (nodes record them a tick late, each on its own); the close last.
    fn position(&self) -> (u64, u8, u64) {
        match self {
            TranscriptEntry::Message(m) => (m.id, 0, 0),
            TranscriptEntry::Joined(e) | TranscriptEntry::Left(e) => (e.after, 1, e.ts),
            TranscriptEntry::Closed { .. } => (u64::MAX, 2, 0),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("transcript entries always encode")
    }
}

/// A room's transcript as the room API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Transcript {
    pub room: RoomId,
    /// Which room of that name (a name can be used again after a close): each keeps its own
    /// transcript.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<String>,
    /// Oldest first.
    pub entries: Vec<TranscriptEntry>,
    /// Messages in the transcript.
    pub messages: u64,
    /// False when a message is missing: ids do not run 1, 2, 3… without a gap (the
    /// transcript hit its size bound, or Redis lost part of the room).
    pub complete: bool,
    /// The room has been closed; the transcript will not grow.
    pub closed: bool,
}

impl Transcript {
    /// Orders the recorded entries (JSON, in the order they were written; entries that do not
    /// parse are skipped) into the transcript.
    pub fn assemble<'a>(room: RoomId, recorded: impl IntoIterator<Item = &'a str>) -> Self {
        let mut entries: Vec<TranscriptEntry> = recorded
            .into_iter()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect();
        // Stable: events after the same message at the same time keep their written order.
        entries.sort_by_key(TranscriptEntry::position);
        let ids: Vec<u64> = entries
            .iter()
            .filter_map(|e| match e {
                TranscriptEntry::Message(m) => Some(m.id),
                _ => None,
            })
            .collect();
        let complete = ids.iter().zip(1..).all(|(id, expected)| *id == expected);
        let closed = entries
            .iter()
            .any(|e| matches!(e, TranscriptEntry::Closed { .. }));
        Self {
            room,
            incarnation: None,
            messages: ids.len() as u64,
            entries,
            complete,
            closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{MessageContent, message_json, message_tail};

    fn room() -> RoomId {
        "support/case-7".parse().unwrap()
    }

    fn message(id: u64, body: &str) -> String {
        let content = MessageContent {
            room: room(),
            from: "ann".into(),
            name: "Ann".into(),
            role: Role::Customer,
            body: body.into(),
            ts: 1_000 + id,
            client_id: None,
        };
        message_json(id, &message_tail(&content))
    }

    fn joined(user: &str, after: u64) -> String {
        TranscriptEntry::Joined(MemberEvent {
            user: user.into(),
            name: user.into(),
            role: Role::Agent,
            ts: 5,
            after,
        })
        .to_json()
    }

    #[test]
    fn events_land_after_the_message_their_node_had_delivered() {
        // The node hosting dana wrote her join late, after message 2 was appended, and the
        // close was recorded by another writer before both.
        let recorded = [
            joined("ann", 0),
            message(1, "hello"),
            TranscriptEntry::Closed {
                reason: "resolved".into(),
                ts: 9,
            }
            .to_json(),
            message(2, "anyone?"),
            joined("dana", 1),
        ];
        let transcript = Transcript::assemble(room(), recorded.iter().map(String::as_str));
        let order: Vec<String> = transcript
            .entries
            .iter()
            .map(|e| match e {
                TranscriptEntry::Message(m) => m.content.body.clone(),
                TranscriptEntry::Joined(e) => format!("+{}", e.user),
                TranscriptEntry::Left(e) => format!("-{}", e.user),
                TranscriptEntry::Closed { reason, .. } => format!("closed: {reason}"),
            })
            .collect();
        assert_eq!(
            order,
            ["+ann", "hello", "+dana", "anyone?", "closed: resolved"]
        );
        assert!(transcript.complete);
        assert!(transcript.closed);
        assert_eq!(transcript.messages, 2);
    }

    #[test]
    fn a_missing_message_makes_it_incomplete() {
        let recorded = [message(2, "b"), message(3, "c"), "not json".to_owned()];
        let transcript = Transcript::assemble(room(), recorded.iter().map(String::as_str));
        assert_eq!(transcript.messages, 2);
        assert!(!transcript.complete);
        assert!(!transcript.closed);
    }
}
