//! Webhook events: what a support tool's receiver gets when a room opens, is placed, moves or
//! closes, and when members join, leave or (optionally) send. `docs/webhooks.md` documents
//! every event and how to verify a delivery.
//!
//! Each delivery is one event as its JSON body, signed with HMAC-SHA256 over
//! `"<timestamp>.<body>"` in [`SIGNATURE_HEADER`] (`t=<unix seconds>,v1=<hex>`), the scheme
//! Stripe's receivers already know. Delivery is at least once: a receiver deduplicates by
//! [`WebhookEvent::id`], which stays the same across every retry of one event.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::RoomId;
use crate::frames::{Message, Role};

/// Header carrying `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub const SIGNATURE_HEADER: &str = "chatfleet-signature";
/// Header repeating the event's id, so a receiver can deduplicate before parsing.
pub const EVENT_ID_HEADER: &str = "chatfleet-event-id";
/// Header repeating the event's type.
pub const EVENT_TYPE_HEADER: &str = "chatfleet-event-type";
/// How old a signature's timestamp may be before [`verify`] refuses it, against replays.
pub const DEFAULT_TOLERANCE_SECONDS: u64 = 300;

/// One event, as its receiver gets it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// Unique per event and the same on every retry of it: `evt_` and 32 hex digits.
    pub id: String,
    /// Milliseconds since the Unix epoch, when the event happened.
    pub ts: u64,
    pub room: RoomId,
    /// The room's incarnation: which room of that name (a name can be used again after a
    /// close). Absent for rooms without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<String>,
    /// The event's `type` and its `data`.
    #[serde(flatten)]
    pub body: EventBody,
}

/// What happened: `type` names it, `data` describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum EventBody {
    /// A room was opened (a ChatRoom created, or the room API's open).
    #[serde(rename = "room.opened")]
    RoomOpened { max_members: u32 },
    /// A room got its node.
    #[serde(rename = "room.placed")]
    RoomPlaced { node: String, endpoint: String },
    /// A room's node died or drained and the room went to another; its members were sent a
    /// `moved` frame.
    #[serde(rename = "room.moved")]
    RoomMoved {
        from: String,
        to: String,
        endpoint: String,
    },
    /// A room was closed. `transcript` is the room API path of its transcript, readable for
    /// the retention.
    #[serde(rename = "room.closed")]
    RoomClosed { reason: String, transcript: String },
    /// A member's first session in the room on a node opened.
    #[serde(rename = "member.joined")]
    MemberJoined(MemberChange),
    /// A member's last session in the room on a node ended.
    #[serde(rename = "member.left")]
    MemberLeft(MemberChange),
    /// A message, exactly as members received it (only when message events are turned on).
    #[serde(rename = "message")]
    Message(Message),
}

/// Who joined or left, on which node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberChange {
    pub user: String,
    pub name: String,
    pub role: Role,
    pub node: String,
}

impl EventBody {
    /// The event's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::RoomOpened { .. } => "room.opened",
            EventBody::RoomPlaced { .. } => "room.placed",
            EventBody::RoomMoved { .. } => "room.moved",
            EventBody::RoomClosed { .. } => "room.closed",
            EventBody::MemberJoined(_) => "member.joined",
            EventBody::MemberLeft(_) => "member.left",
            EventBody::Message(_) => "message",
        }
    }
}

impl WebhookEvent {
    /// An event whose id derives from `identity`: whatever makes this occurrence unique (the
    /// ChatRoom's UID and the placement's version, a member's node and time, a message id).
    /// The same occurrence reported twice (a retried reconcile, a retried write) therefore
    /// gets the same id, and its receiver sees one event.
    pub fn new(room: RoomId, ts: u64, body: EventBody, identity: &[&str]) -> Self {
        Self::derive(room, None, ts, body, identity)
    }

    /// An event of one incarnation of the room: the incarnation is part of its identity, so
    /// the same occurrence in two rooms of one name never shares an id.
    pub fn in_incarnation(
        room: RoomId,
        incarnation: &str,
        ts: u64,
        body: EventBody,
        identity: &[&str],
    ) -> Self {
        let incarnation = (!incarnation.is_empty()).then(|| incarnation.to_owned());
        Self::derive(room, incarnation, ts, body, identity)
    }

    fn derive(
        room: RoomId,
        incarnation: Option<String>,
        ts: u64,
        body: EventBody,
        identity: &[&str],
    ) -> Self {
        let mut hash = Sha256::new();
        hash.update(body.kind());
        hash.update([0]);
        hash.update(room.namespace());
        hash.update("/");
        hash.update(room.name());
        if let Some(incarnation) = &incarnation {
            hash.update([1]);
            hash.update(incarnation);
        }
        for part in identity {
            hash.update([0]);
            hash.update(part);
        }
        let digest = hash.finalize();
        Self {
            id: format!("evt_{}", hex(&digest[..16])),
            ts,
            room,
            incarnation,
            body,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("webhook events always encode")
    }
}

/// The [`SIGNATURE_HEADER`] value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", hex(&mac(secret, timestamp, body)))
}

/// Why a delivery's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is not `t=<seconds>,v1=<hex>`")]
    Malformed,
    #[error("the signature's timestamp is more than {0} s away from now")]
    Stale(u64),
    #[error("no v1 signature matches the body")]
    Mismatch,
}

/// Checks a delivery as a receiver should: the header's HMAC over `"<t>.<body>"` with the
/// fleet's secret, and `t` within `tolerance` seconds of `now` (unix seconds). Several `v1`
/// entries may appear (while a secret is rotated); one match is enough.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: u64,
    tolerance: u64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<u64>().ok(),
            Some(("v1", s)) => signatures.push(s),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now.abs_diff(timestamp) > tolerance {
        return Err(SignatureError::Stale(tolerance));
    }
    let matches = |candidate: &str| {
        let Some(bytes) = unhex(candidate) else {
            return false;
        };
        keyed(secret, timestamp, body).verify_slice(&bytes).is_ok()
    };
    if signatures.into_iter().any(matches) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn keyed(secret: &[u8], timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> Vec<u8> {
    keyed(secret, timestamp, body)
        .finalize()
        .into_bytes()
        .to_vec()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> RoomId {
        "support/case-7".parse().unwrap()
    }

    #[test]
    fn events_encode_with_type_and_data() {
        let event = WebhookEvent::new(
            room(),
            1_700_000_000_000,
            EventBody::RoomClosed {
                reason: "solved".into(),
                transcript: "/v1/rooms/support/case-7/transcript".into(),
            },
            &["uid-1"],
        );
        let json: serde_json::Value = serde_json::from_str(&event.to_json()).unwrap();
        assert_eq!(json["type"], "room.closed");
        assert_eq!(json["room"], "support/case-7");
        assert_eq!(json["data"]["reason"], "solved");
        assert_eq!(json["ts"], 1_700_000_000_000u64);
        assert!(
            event.id.starts_with("evt_") && event.id.len() == 36,
            "{}",
            event.id
        );
        let back: WebhookEvent = serde_json::from_str(&event.to_json()).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn the_same_occurrence_gets_the_same_id_and_others_do_not() {
        let opened = |identity: &[&str]| {
            WebhookEvent::new(
                room(),
                1,
                EventBody::RoomOpened { max_members: 3 },
                identity,
            )
            .id
        };
        assert_eq!(opened(&["uid-1"]), opened(&["uid-1"]));
        assert_ne!(opened(&["uid-1"]), opened(&["uid-2"]));
        // Parts are separated: ["ab", "c"] is not ["a", "bc"].
        assert_ne!(opened(&["ab", "c"]), opened(&["a", "bc"]));
        let left = WebhookEvent::new(
            room(),
            1,
            EventBody::MemberLeft(MemberChange {
                user: "ann".into(),
                name: "Ann".into(),
                role: Role::Agent,
                node: "chat-0".into(),
            }),
            &["uid-1"],
        );
        assert_ne!(left.id, opened(&["uid-1"]), "the type is part of the id");
    }

    #[test]
    fn a_signature_verifies_and_tampering_does_not() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(b"secret", 1_700_000_000, body);
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(verify(b"secret", &header, body, 1_700_000_010, 300), Ok(()));
        assert_eq!(
            verify(b"other", &header, body, 1_700_000_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"secret", &header, br#"{"id":"evt_2"}"#, 1_700_000_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"secret", &header, body, 1_700_000_400, 300),
            Err(SignatureError::Stale(300))
        );
        assert_eq!(
            verify(b"secret", "v1=abcd", body, 1_700_000_000, 300),
            Err(SignatureError::Malformed)
        );
        // A rotated secret: either signature may match.
        let rotated = format!("{header},v1={}", hex(&mac(b"new", 1_700_000_000, body)));
        assert_eq!(verify(b"new", &rotated, body, 1_700_000_000, 300), Ok(()));
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // RFC 4231 test case 2's key and a body, computed independently with
        // `printf '1.{}' | openssl dgst -sha256 -hmac Jefe`.
        assert_eq!(
            sign(b"Jefe", 1, b"{}"),
            "t=1,v1=dc7943cccf20f64327d263db5e2aca27c2b8175e8e6e7ea04f482091bf456b0f"
        );
    }
}
