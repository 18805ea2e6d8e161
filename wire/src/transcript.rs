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
    pub fn position(&self) -> (u64, u8, u64) {
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
        let mut order = TranscriptOrder::new(usize::MAX);
        let mut entries = Vec::new();
        for json in recorded {
            entries.extend(order.push_json(json));
        }
        entries.extend(order.finish());
        Self {
            room,
            incarnation: None,
            messages: order.messages(),
            entries,
            complete: order.complete(),
            closed: order.closed(),
        }
    }
}

/// Puts recorded entries in transcript order as they are read, holding at most `window`
/// of them: a transcript can be streamed a page at a time in bounded memory. Entries arrive
/// nearly in order (messages in id order; joins and leaves a tick late), so a window of a few
/// thousand orders them exactly unless one was written more than `window` entries late, in
/// which case it comes out where it was read. The close, last in any order, is held to the
/// end. Counts what [`Transcript`] summarises as entries pass.
pub struct TranscriptOrder {
    window: usize,
    /// Entries held back, by position, then by arrival (stable among equals).
    held: std::collections::BTreeMap<((u64, u8, u64), u64), TranscriptEntry>,
    arrivals: u64,
    messages: u64,
    /// The id the next message must have for the transcript to be complete.
    next_id: u64,
    complete: bool,
    closed: bool,
}

impl TranscriptOrder {
    pub fn new(window: usize) -> Self {
        Self {
            window: window.max(1),
            held: Default::default(),
            arrivals: 0,
            messages: 0,
            next_id: 1,
            complete: true,
            closed: false,
        }
    }

    /// Takes one recorded entry (JSON; one that does not parse is skipped) and returns the
    /// entries now due, in order.
    pub fn push_json(&mut self, json: &str) -> Vec<TranscriptEntry> {
        match serde_json::from_str(json) {
            Ok(entry) => self.push(entry),
            Err(_) => Vec::new(),
        }
    }

    pub fn push(&mut self, entry: TranscriptEntry) -> Vec<TranscriptEntry> {
        self.arrivals += 1;
        self.held.insert((entry.position(), self.arrivals), entry);
        let mut due = Vec::new();
        // The close sorts last, so it is never the first of more than one held.
        while self.held.len() > self.window {
            if let Some((_, entry)) = self.held.pop_first() {
                due.push(self.count(entry));
            }
        }
        due
    }

    /// The entries still held, in order: the read is over.
    pub fn finish(&mut self) -> Vec<TranscriptEntry> {
        let held = std::mem::take(&mut self.held);
        held.into_values().map(|entry| self.count(entry)).collect()
    }

    fn count(&mut self, entry: TranscriptEntry) -> TranscriptEntry {
        match &entry {
            TranscriptEntry::Message(m) => {
                self.messages += 1;
                self.complete &= m.id == self.next_id;
                self.next_id = m.id + 1;
            }
            TranscriptEntry::Closed { .. } => self.closed = true,
            _ => {}
        }
        entry
    }

    /// Messages passed so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// False once a message was missing: ids did not run 1, 2, 3… (the transcript hit its
    /// size bound, or Redis lost part of the room).
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// Whether the close passed.
    pub fn closed(&self) -> bool {
        self.closed
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

    /// A window smaller than the transcript orders it the same, a page at a time.
    #[test]
    fn a_small_window_orders_as_the_whole_does() {
        let mut recorded = vec![joined("ann", 0)];
        for id in 1..=50 {
            recorded.push(message(id, "m"));
            if id % 7 == 0 {
                // Written a few entries late, as a node's tick does.
                recorded.insert(recorded.len() - 2, joined("dana", id - 3));
            }
        }
        let closed = TranscriptEntry::Closed {
            reason: "done".into(),
            ts: 1,
        };
        recorded.insert(10, closed.to_json());
        let whole = Transcript::assemble(room(), recorded.iter().map(String::as_str));
        let mut order = TranscriptOrder::new(4);
        let mut streamed = Vec::new();
        for json in &recorded {
            streamed.extend(order.push_json(json));
            assert!(order.held.len() <= 5, "bounded: the close and the window");
        }
        streamed.extend(order.finish());
        assert_eq!(streamed, whole.entries);
        assert!(order.complete() && order.closed() && order.messages() == 50);
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
