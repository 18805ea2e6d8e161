//! A room's retained history as the room API returns it: one page of messages after an id,
//! read from the same log clients resume from (memory standalone, the room's Redis stream in a
//! fleet). Shared by the node's directory and the operator's.

use std::future::Future;

use chatfleet_state::StateError;
use chatfleet_state::rooms::{LoggedMessage, RoomStore};
use chatfleet_wire::RoomId;
use chatfleet_wire::frames::{Message, ServerFrame};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A room's message log, as history pages read it.
pub trait MessageSource: Sync {
    /// The newest message id (0 when there is none) and the log's epoch (None while the room
    /// has none), read together and without writing anything.
    fn latest(
        &self,
        room: &RoomId,
    ) -> impl Future<Output = Result<(u64, Option<String>), StateError>> + Send;
    /// Retained messages with `after < id <= upto`, oldest first.
    fn read_range(
        &self,
        room: &RoomId,
        after: u64,
        upto: u64,
    ) -> impl Future<Output = Result<Vec<LoggedMessage>, StateError>> + Send;
}

impl MessageSource for RoomStore {
    async fn latest(&self, room: &RoomId) -> Result<(u64, Option<String>), StateError> {
        RoomStore::latest(self, room).await
    }

    async fn read_range(
        &self,
        room: &RoomId,
        after: u64,
        upto: u64,
    ) -> Result<Vec<LoggedMessage>, StateError> {
        RoomStore::read_range(self, room, after, upto).await
    }
}

/// Messages per page unless the caller asks for fewer.
pub const DEFAULT_PAGE: u32 = 100;
/// The largest page (the default retained history is 1,000 messages).
pub const MAX_PAGE: u32 = 1000;

/// `?since=&epoch=&limit=` of `GET /v1/rooms/{namespace}/{room}/history`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Return messages with a larger id (0: from the oldest retained).
    #[serde(default)]
    pub since: u64,
    /// The epoch `since` was counted in (the `epoch` of the page it came from, or of a
    /// `welcome`). Another epoch's ids mean nothing here: the page then starts from the oldest
    /// retained message and says `complete: false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// At most this many (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One page of a room's history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct HistoryView {
    pub room: RoomId,
    pub messages: Vec<Message>,
    /// The newest message id in the room (0: none yet).
    pub last_id: u64,
    /// The log's epoch: ids compare only within it. Pass it back with `since`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// False whenever a message between `since` and the page's end is missing: it left the
    /// retained history, Redis lost it (a new epoch), or `since` came from another epoch or
    /// from beyond the room's last id (it can only be an earlier epoch's). Never true over a
    /// gap.
    pub complete: bool,
    /// Pass as `since` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_since: Option<u64>,
}

/// Reads one page of `room`'s history.
pub async fn read_page(
    log: &impl MessageSource,
    room: &RoomId,
    query: HistoryQuery,
) -> Result<HistoryView, StateError> {
    let limit = u64::from(query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE));
    let (last_id, epoch) = log.latest(room).await?;
    // A `since` of another epoch, or past the room's end (only an earlier epoch's can be),
    // counts from nothing here: the page starts at the oldest kept and is incomplete.
    let other_epoch = query
        .epoch
        .as_ref()
        .is_some_and(|asked| Some(asked) != epoch.as_ref());
    let foreign = other_epoch || query.since > last_id;
    let since = if foreign { 0 } else { query.since };
    let upto = last_id.min(since.saturating_add(limit));
    let frames = log.read_range(room, since, upto).await?;
    let messages: Vec<Message> = frames
        .iter()
        .filter_map(|(_, json)| match serde_json::from_str(json) {
            Ok(ServerFrame::Message(message)) => Some(message),
            _ => None,
        })
        .collect();
    let mut view = page(room, since, upto, last_id, messages);
    view.complete &= !foreign;
    view.epoch = epoch;
    Ok(view)
}

/// Assembles a page from what the log held in `(since, upto]`. When older messages were
/// trimmed the range starts inside the gap, so a page may hold fewer than `limit` messages and
/// still have a next one.
fn page(room: &RoomId, since: u64, upto: u64, last_id: u64, messages: Vec<Message>) -> HistoryView {
    // Complete only with every id of the range present: the log's ids only increase, so that
    // is a count, and a gap at the start, in the middle or at the end shows in it.
    let complete = messages.len() as u64 == upto.saturating_sub(since)
        && messages.iter().zip(since + 1..).all(|(m, id)| m.id == id);
    HistoryView {
        room: room.clone(),
        messages,
        last_id,
        epoch: None,
        complete,
        next_since: (upto < last_id).then_some(upto),
    }
}

#[cfg(test)]
mod tests {
    use chatfleet_wire::frames::{MessageContent, Role, message_json, message_tail};

    use super::*;

    /// A log that keeps the last `history_len` of `count` messages, as a trimmed stream does.
    struct Trimmed {
        latest: u64,
        frames: Vec<LoggedMessage>,
    }

    impl MessageSource for Trimmed {
        async fn latest(&self, _: &RoomId) -> Result<(u64, Option<String>), StateError> {
            Ok((self.latest, Some("e1".into())))
        }

        async fn read_range(
            &self,
            _: &RoomId,
            after: u64,
            upto: u64,
        ) -> Result<Vec<LoggedMessage>, StateError> {
            let within = |(id, _): &&LoggedMessage| *id > after && *id <= upto;
            Ok(self.frames.iter().filter(within).cloned().collect())
        }
    }

    fn tail(room: &RoomId, body: &str) -> String {
        let content = MessageContent {
            room: room.clone(),
            from: "ann".into(),
            name: "Ann".into(),
            role: Role::Customer,
            body: body.into(),
            ts: 1,
            client_id: None,
        };
        message_tail(&content)
    }

    async fn room_with(history_len: usize, count: u64) -> (Trimmed, RoomId) {
        let room: RoomId = "support/a".parse().unwrap();
        let first = (count + 1).saturating_sub(history_len as u64).max(1);
        let frames = (first..=count)
            .map(|i| (i, message_json(i, &tail(&room, &format!("m{i}")))))
            .collect();
        (
            Trimmed {
                latest: count,
                frames,
            },
            room,
        )
    }

    fn ids(view: &HistoryView) -> Vec<u64> {
        view.messages.iter().map(|m| m.id).collect()
    }

    #[tokio::test]
    async fn pages_through_the_history_in_order() {
        let (backend, room) = room_with(100, 5).await;
        let first = read_page(
            &backend,
            &room,
            HistoryQuery {
                since: 0,
                epoch: None,
                limit: Some(2),
            },
        )
        .await
        .unwrap();
        assert_eq!(ids(&first), [1, 2]);
        assert_eq!(first.messages[1].content.body, "m2");
        assert!(first.complete);
        assert_eq!((first.last_id, first.next_since), (5, Some(2)));
        let last = read_page(
            &backend,
            &room,
            HistoryQuery {
                since: 2,
                epoch: Some("e1".into()),
                limit: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(ids(&last), [3, 4, 5]);
        assert_eq!(last.next_since, None);
        let empty = read_page(
            &backend,
            &room,
            HistoryQuery {
                since: 5,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(empty.messages.is_empty() && empty.complete);
    }

    #[tokio::test]
    async fn says_when_older_messages_are_gone() {
        let (backend, room) = room_with(3, 10).await;
        let view = read_page(&backend, &room, HistoryQuery::default())
            .await
            .unwrap();
        assert_eq!(ids(&view), [8, 9, 10]);
        assert!(!view.complete);
    }

    fn after(since: u64, epoch: Option<&str>) -> HistoryQuery {
        HistoryQuery {
            since,
            epoch: epoch.map(str::to_owned),
            limit: None,
        }
    }

    /// A lossy failover left ids 1564–1568, then 1629: the page says so.
    #[tokio::test]
    async fn a_gap_inside_the_page_is_told() {
        let room: RoomId = "support/a".parse().unwrap();
        let frames = (1564..=1568)
            .chain([1629])
            .map(|i| (i, message_json(i, &tail(&room, &format!("m{i}")))))
            .collect();
        let backend = Trimmed {
            latest: 1629,
            frames,
        };
        let view = read_page(&backend, &room, after(1563, None)).await.unwrap();
        assert_eq!(ids(&view), [1564, 1565, 1566, 1567, 1568, 1629]);
        assert!(!view.complete, "ids 1569-1628 are missing");
        assert_eq!(view.epoch.as_deref(), Some("e1"));
        // A page that ends before the gap is whole.
        let mut whole = after(1563, Some("e1"));
        whole.limit = Some(5);
        assert!(read_page(&backend, &room, whole).await.unwrap().complete);
    }

    /// A `since` past the room's end, or of another epoch, starts from what is kept and is
    /// incomplete: Redis restarted empty, and ids 4 and 5 are a new conversation's.
    #[tokio::test]
    async fn a_since_from_another_epoch_is_answered_from_the_start() {
        let (backend, room) = room_with(100, 6).await;
        let beyond = read_page(&backend, &room, after(9, None)).await.unwrap();
        assert_eq!(ids(&beyond), [1, 2, 3, 4, 5, 6]);
        assert!(!beyond.complete);
        let other = read_page(&backend, &room, after(3, Some("old")))
            .await
            .unwrap();
        assert_eq!(ids(&other), [1, 2, 3, 4, 5, 6]);
        assert!(!other.complete);
        let same = read_page(&backend, &room, after(3, Some("e1")))
            .await
            .unwrap();
        assert_eq!(ids(&same), [4, 5, 6]);
        assert!(same.complete);
    }
}
