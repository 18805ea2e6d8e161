//! In-memory room logs for a standalone node, bounded so a node can run for months.
//!
//! A room's log is kept while a room task runs on it and for a retention (`--room-ttl-seconds`,
//! as Redis keeps a fleet's rooms) after its task retires; a closed room keeps only its
//! tombstone, for as long as a token could name it. All logs together hold at most
//! `--memory-history-mb` of frames: past that, the history of retired rooms goes first
//! (longest retired first), then the oldest messages of the room being written.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatfleet_state::members::MemberState;
use chatfleet_state::rooms::new_epoch;
use chatfleet_wire::RoomId;
use chatfleet_wire::frames::{Moderation, message_json};
use chatfleet_wire::token::MAX_TOKEN_TTL;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{Appended, LoggedFrame, RoomSettings, StateError};

#[derive(Debug)]
struct RoomLog {
    /// A new name for each life of the log: a forgotten room comes back in a new epoch.
    epoch: String,
    latest_id: u64,
    /// Sends appended with a client id (`<user>\n<client_id>` → id), the newest
    /// `history_len`, oldest first in `sent_order`.
    sent: HashMap<String, u64>,
    sent_order: VecDeque<(u64, String)>,
    /// The last `history_len` messages, oldest first.
    frames: VecDeque<LoggedFrame>,
    /// Bytes of `frames`.
    bytes: usize,
    settings: Option<RoomSettings>,
    /// When its room task retired; None while one runs (or never ran).
    idle_since: Option<Instant>,
    /// When the room was closed.
    closed_at: Option<Instant>,
    /// Read positions, mutes and removals.
    members: MemberState,
}

impl Default for RoomLog {
    fn default() -> Self {
        Self {
            epoch: new_epoch(),
            latest_id: 0,
            sent: HashMap::new(),
            sent_order: VecDeque::new(),
            frames: VecDeque::new(),
            bytes: 0,
            settings: None,
            idle_since: None,
            closed_at: None,
            members: MemberState::default(),
        }
    }
}

impl RoomLog {
    fn pop_oldest(&mut self) -> usize {
        let freed = self.frames.pop_front().map_or(0, |(_, f)| f.len());
        self.bytes -= freed;
        freed
    }

    fn clear(&mut self) -> usize {
        let freed = self.bytes;
        self.frames.clear();
        self.bytes = 0;
        freed
    }
}

/// How much history a standalone node keeps.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Messages per room.
    pub history_len: usize,
    /// How long a retired room's log outlives its task.
    pub after_retire: Duration,
    /// Bytes of frames over all rooms.
    pub max_bytes: usize,
}

/// Room logs behind one lock per room, so rooms do not contend with each other. Locks are
/// taken map first, then a log, never the other way round.
#[derive(Clone)]
pub struct MemoryStore {
    rooms: Arc<Mutex<HashMap<RoomId, Arc<Mutex<RoomLog>>>>>,
    retention: Retention,
    /// Bytes of frames over all logs.
    bytes: Arc<AtomicUsize>,
}

impl MemoryStore {
    pub fn new(retention: Retention) -> Self {
        Self {
            rooms: Arc::default(),
            retention: Retention {
                history_len: retention.history_len.max(1),
                ..retention
            },
            bytes: Arc::default(),
        }
    }

    /// A store keeping `history_len` messages per room, for tests.
    pub fn with_history(history_len: usize) -> Self {
        Self::new(Retention {
            history_len,
            after_retire: Duration::from_secs(86_400),
            max_bytes: usize::MAX,
        })
    }

    fn room(&self, room: &RoomId) -> Arc<Mutex<RoomLog>> {
        let mut rooms = self.rooms.lock().expect("room map lock");
        rooms.entry(room.clone()).or_default().clone()
    }

    fn existing(&self, room: &RoomId) -> Option<Arc<Mutex<RoomLog>>> {
        self.rooms.lock().expect("room map lock").get(room).cloned()
    }

    /// Bytes of history held over all rooms.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn append(
        &self,
        room: &RoomId,
        tail: &str,
        dedup: Option<&str>,
    ) -> Result<Appended, StateError> {
        let log = self.room(room);
        let (id, frame, epoch) = {
            let mut log = log.lock().expect("room log lock");
            if log.closed_at.is_some() {
                return Err(StateError::RoomClosed);
            }
            if let Some(first) = dedup.and_then(|key| log.sent.get(key)) {
                return Ok(Appended {
                    id: *first,
                    frame: None,
                    epoch: log.epoch.clone(),
                    renewed: false,
                });
            }
            log.latest_id += 1;
            let id = log.latest_id;
            let frame = Utf8Bytes::from(message_json(id, tail));
            let mut freed = 0;
            if log.frames.len() == self.retention.history_len {
                freed = log.pop_oldest();
            }
            log.bytes += frame.len();
            log.frames.push_back((id, frame.clone()));
            self.bytes.fetch_add(frame.len(), Ordering::Relaxed);
            self.bytes.fetch_sub(freed, Ordering::Relaxed);
            if let Some(key) = dedup {
                log.sent.insert(key.to_owned(), id);
                log.sent_order.push_back((id, key.to_owned()));
                if log.sent_order.len() > self.retention.history_len
                    && let Some((_, old)) = log.sent_order.pop_front()
                {
                    log.sent.remove(&old);
                }
            }
            (id, frame, log.epoch.clone())
        };
        if self.bytes() > self.retention.max_bytes {
            self.shed(&log);
        }
        Ok(Appended {
            id,
            frame: Some(frame),
            epoch,
            // A forgotten room comes back in a new epoch, but never midway: its room task
            // learns the epoch when it starts.
            renewed: false,
        })
    }

    /// The newest id and the epoch of `room`'s log (a new log when it has none).
    pub fn position(&self, room: &RoomId) -> (u64, String) {
        let log = self.room(room);
        let log = log.lock().expect("room log lock");
        (log.latest_id, log.epoch.clone())
    }

    /// Frees history until under the byte bound: retired rooms first, then the oldest
    /// messages of `writing` (keeping its newest).
    fn shed(&self, writing: &Arc<Mutex<RoomLog>>) {
        let mut rooms = self.rooms.lock().expect("room map lock");
        let mut retired: Vec<(Instant, RoomId)> = rooms
            .iter()
            .filter_map(|(id, log)| {
                let log = log.lock().expect("room log lock");
                (log.bytes > 0)
                    .then_some(log.idle_since)
                    .flatten()
                    .map(|since| (since, id.clone()))
            })
            .collect();
        retired.sort();
        for (_, id) in retired {
            if self.bytes() <= self.retention.max_bytes {
                return;
            }
            if let Some(log) = rooms.remove(&id) {
                let freed = log.lock().expect("room log lock").clear();
                self.bytes.fetch_sub(freed, Ordering::Relaxed);
            }
        }
        drop(rooms);
        let mut log = writing.lock().expect("room log lock");
        while self.bytes() > self.retention.max_bytes && log.frames.len() > 1 {
            let freed = log.pop_oldest();
            self.bytes.fetch_sub(freed, Ordering::Relaxed);
        }
    }

    /// A room task runs on `room`: keep its log.
    pub fn hosting(&self, room: &RoomId) {
        self.room(room).lock().expect("room log lock").idle_since = None;
    }

    /// `room`'s task retired: its log goes after the retention.
    pub fn released(&self, room: &RoomId) {
        if let Some(log) = self.existing(room) {
            log.lock().expect("room log lock").idle_since = Some(Instant::now());
        }
    }

    /// Forgets the logs of rooms retired longer than the retention and the tombstones of
    /// rooms closed longer than a token lives. Called on the heartbeat.
    pub fn sweep(&self) {
        let mut freed = 0;
        self.rooms.lock().expect("room map lock").retain(|_, log| {
            let mut log = log.lock().expect("room log lock");
            let expired = match (log.closed_at, log.idle_since) {
                (Some(closed), _) => closed.elapsed() >= MAX_TOKEN_TTL,
                (None, Some(idle)) => idle.elapsed() >= self.retention.after_retire,
                (None, None) => false,
            };
            if expired {
                freed += log.clear();
            }
            !expired
        });
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
    }

    /// Rooms with a log or a tombstone.
    pub fn rooms(&self) -> usize {
        self.rooms.lock().expect("room map lock").len()
    }

    pub fn latest_id(&self, room: &RoomId) -> u64 {
        self.existing(room)
            .map(|log| log.lock().expect("room log lock").latest_id)
            .unwrap_or(0)
    }

    pub fn read_range(&self, room: &RoomId, after: u64, upto: u64) -> Vec<LoggedFrame> {
        let Some(log) = self.existing(room) else {
            return Vec::new();
        };
        let log = log.lock().expect("room log lock");
        log.frames
            .iter()
            .filter(|(id, _)| *id > after && *id <= upto)
            .cloned()
            .collect()
    }

    pub fn settings(&self, room: &RoomId) -> Option<RoomSettings> {
        self.existing(room)
            .and_then(|log| log.lock().expect("room log lock").settings)
    }

    pub fn create_room(
        &self,
        room: &RoomId,
        settings: RoomSettings,
    ) -> Result<RoomSettings, StateError> {
        let log = self.room(room);
        let mut log = log.lock().expect("room log lock");
        if log.closed_at.is_some() {
            return Err(StateError::RoomClosed);
        }
        if log.idle_since.is_none() {
            // Opened through the API with no task yet: the retention runs from now.
            log.idle_since = Some(Instant::now());
        }
        Ok(*log.settings.get_or_insert(settings))
    }

    pub fn is_closed(&self, room: &RoomId) -> bool {
        self.existing(room)
            .is_some_and(|log| log.lock().expect("room log lock").closed_at.is_some())
    }

    pub fn close_room(&self, room: &RoomId) {
        let log = self.room(room);
        let mut log = log.lock().expect("room log lock");
        log.closed_at = Some(Instant::now());
        log.members = MemberState::default();
        let freed = log.clear();
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
    }

    pub fn member_state(&self, room: &RoomId) -> MemberState {
        self.existing(room)
            .map(|log| log.lock().expect("room log lock").members.clone())
            .unwrap_or_default()
    }

    /// Raises read positions; returns how many moved.
    pub fn record_reads(&self, room: &RoomId, reads: &BTreeMap<String, u64>) -> u32 {
        let log = self.room(room);
        let mut log = log.lock().expect("room log lock");
        log.members.merge_reads(reads).len() as u32
    }

    pub fn moderate(&self, room: &RoomId, moderation: &Moderation) -> Result<(), StateError> {
        let log = self.room(room);
        let mut log = log.lock().expect("room log lock");
        if log.closed_at.is_some() {
            return Err(StateError::RoomClosed);
        }
        log.members.apply(moderation);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> RoomId {
        "a/b".parse().unwrap()
    }

    #[test]
    fn ids_increase_by_one_and_history_is_capped() {
        let store = MemoryStore::with_history(3);
        for expected in 1..=5 {
            let appended = store.append(&room(), r#","body":"x"}"#, None).unwrap();
            assert_eq!(appended.id, expected);
            let frame = appended.frame.unwrap();
            assert!(frame.as_str().contains(&format!("\"id\":{expected},")));
        }
        assert_eq!(store.latest_id(&room()), 5);
        let ids: Vec<u64> = store
            .read_range(&room(), 0, 5)
            .iter()
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(ids, vec![3, 4, 5]);
        let ids: Vec<u64> = store
            .read_range(&room(), 3, 4)
            .iter()
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(ids, vec![4]);
    }

    #[test]
    fn a_closed_room_takes_no_messages() {
        let store = MemoryStore::with_history(3);
        store.append(&room(), "}", None).unwrap();
        store.close_room(&room());
        assert!(store.is_closed(&room()));
        assert!(matches!(
            store.append(&room(), "}", None),
            Err(StateError::RoomClosed)
        ));
        assert!(store.read_range(&room(), 0, 10).is_empty());
    }

    fn tail(body: &str) -> String {
        format!(r#","body":"{body}"}}"#)
    }

    #[test]
    fn a_retired_rooms_log_is_forgotten_after_the_retention() {
        let store = MemoryStore::new(Retention {
            history_len: 10,
            after_retire: Duration::ZERO,
            max_bytes: usize::MAX,
        });
        let other: RoomId = "a/other".parse().unwrap();
        store.hosting(&room());
        store.hosting(&other);
        store.append(&room(), &tail("x"), None).unwrap();
        store.append(&other, &tail("y"), None).unwrap();
        store.sweep();
        assert_eq!(store.rooms(), 2, "hosted rooms stay");
        store.released(&room());
        store.sweep();
        assert_eq!(store.rooms(), 1);
        assert_eq!(store.latest_id(&room()), 0);
        assert_eq!(store.latest_id(&other), 1);
        assert_eq!(store.bytes(), store.read_range(&other, 0, 1)[0].1.len());
    }

    #[test]
    fn history_over_the_byte_bound_sheds_retired_rooms_first_then_the_oldest() {
        let one = store_frame_len();
        let store = MemoryStore::new(Retention {
            history_len: 100,
            after_retire: Duration::from_secs(3600),
            max_bytes: one * 4,
        });
        let old: RoomId = "a/old".parse().unwrap();
        store.hosting(&old);
        store.append(&old, &tail("x"), None).unwrap();
        store.append(&old, &tail("x"), None).unwrap();
        store.released(&old);
        store.hosting(&room());
        for _ in 0..3 {
            store.append(&room(), &tail("x"), None).unwrap();
        }
        assert_eq!(store.latest_id(&old), 0, "the retired room went first");
        assert_eq!(store.read_range(&room(), 0, 3).len(), 3);
        for _ in 0..3 {
            store.append(&room(), &tail("x"), None).unwrap();
        }
        assert!(store.bytes() <= one * 4);
        let ids: Vec<u64> = store
            .read_range(&room(), 0, 6)
            .iter()
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(ids, [3, 4, 5, 6], "then the writing room's oldest");
    }

    /// The size of one test frame (ids 1 to 9).
    fn store_frame_len() -> usize {
        message_json(1, &tail("x")).len()
    }

    #[test]
    fn a_retried_send_is_appended_once_and_gets_its_first_id() {
        let store = MemoryStore::with_history(2);
        let first = store.append(&room(), &tail("x"), Some("ann\nk1")).unwrap();
        let again = store.append(&room(), &tail("x"), Some("ann\nk1")).unwrap();
        assert_eq!((again.id, again.frame.is_none()), (first.id, true));
        let other = store.append(&room(), &tail("x"), Some("bob\nk1")).unwrap();
        assert!(
            other.frame.is_some(),
            "another sender's client id is another send"
        );
        // Past the retained history the key is forgotten with the message.
        store.append(&room(), &tail("x"), Some("ann\nk2")).unwrap();
        let late = store.append(&room(), &tail("x"), Some("ann\nk1")).unwrap();
        assert!(late.frame.is_some());
        assert_eq!(store.latest_id(&room()), 4);
    }

    #[test]
    fn a_forgotten_room_comes_back_in_a_new_epoch() {
        let store = MemoryStore::new(Retention {
            history_len: 10,
            after_retire: Duration::ZERO,
            max_bytes: usize::MAX,
        });
        store.hosting(&room());
        let before = store.append(&room(), &tail("x"), None).unwrap().epoch;
        assert_eq!(store.position(&room()), (1, before.clone()));
        store.released(&room());
        store.sweep();
        let (latest, after) = store.position(&room());
        assert_eq!(latest, 0);
        assert_ne!(after, before);
    }
}
