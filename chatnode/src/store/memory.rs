//! In-memory room logs for a standalone node.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio_tungstenite::tungstenite::Utf8Bytes;

use chatfleet_wire::RoomId;
use chatfleet_wire::frames::message_json;

use super::{LoggedFrame, RoomSettings, StateError};

#[derive(Debug, Default)]
struct RoomLog {
    latest_id: u64,
    /// The last `history_len` messages, oldest first.
    frames: VecDeque<LoggedFrame>,
    settings: Option<RoomSettings>,
    closed: bool,
}

/// Room logs behind one lock per room, so rooms do not contend with each other.
#[derive(Clone)]
pub struct MemoryStore {
    rooms: Arc<Mutex<HashMap<RoomId, Arc<Mutex<RoomLog>>>>>,
    history_len: usize,
}

impl MemoryStore {
    pub fn new(history_len: usize) -> Self {
        Self {
            rooms: Arc::default(),
            history_len: history_len.max(1),
        }
    }

    fn room(&self, room: &RoomId) -> Arc<Mutex<RoomLog>> {
        let mut rooms = self.rooms.lock().expect("room map lock");
        rooms.entry(room.clone()).or_default().clone()
    }

    fn existing(&self, room: &RoomId) -> Option<Arc<Mutex<RoomLog>>> {
        self.rooms.lock().expect("room map lock").get(room).cloned()
    }

    pub fn append(&self, room: &RoomId, tail: &str) -> Result<LoggedFrame, StateError> {
        let log = self.room(room);
        let mut log = log.lock().expect("room log lock");
        if log.closed {
            return Err(StateError::RoomClosed);
        }
        log.latest_id += 1;
        let id = log.latest_id;
        let frame = Utf8Bytes::from(message_json(id, tail));
        if log.frames.len() == self.history_len {
            log.frames.pop_front();
        }
        log.frames.push_back((id, frame.clone()));
        Ok((id, frame))
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
        if log.closed {
            return Err(StateError::RoomClosed);
        }
        Ok(*log.settings.get_or_insert(settings))
    }

    pub fn is_closed(&self, room: &RoomId) -> bool {
        self.existing(room)
            .is_some_and(|log| log.lock().expect("room log lock").closed)
    }

    pub fn close_room(&self, room: &RoomId) {
        let log = self.room(room);
        let mut log = log.lock().expect("room log lock");
        log.closed = true;
        log.frames.clear();
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
        let store = MemoryStore::new(3);
        for expected in 1..=5 {
            let (id, frame) = store.append(&room(), r#","body":"x"}"#).unwrap();
            assert_eq!(id, expected);
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
        let store = MemoryStore::new(3);
        store.append(&room(), "}").unwrap();
        store.close_room(&room());
        assert!(store.is_closed(&room()));
        assert!(matches!(
            store.append(&room(), "}"),
            Err(StateError::RoomClosed)
        ));
        assert!(store.read_range(&room(), 0, 10).is_empty());
    }
}
