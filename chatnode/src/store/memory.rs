//! In-memory room logs for a standalone node, bounded so a node can run for months.
//!
//! A room's log is kept while a room task runs on it and for a retention (`--room-ttl-seconds`,
//! as Redis keeps a fleet's rooms) after its task retires. Two bounds, because what they hold
//! is promised differently:
//!
//! - **History** (`--memory-history-mb`) is a convenience: past its bound the history of retired
//!   rooms goes first (longest retired first), then the oldest messages of the room being
//!   written. Shedding history keeps the room: its ids, epoch, closed mark, removals and
//!   transcript stay, so a resume is told incomplete and a removed user stays out.
//! - **Transcripts** (`--memory-transcripts-mb`) are the record: a closed room keeps its
//!   transcript for the transcript retention and its closed mark for as long as a token could
//!   name it, whatever the memory pressure. Past this bound the node opens no new room (joins
//!   and the room API answer `unavailable`) until retentions run out; open rooms go on.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatfleet_state::members::MemberState;
use chatfleet_state::rooms::{new_epoch, new_incarnation};
use chatfleet_state::transcripts::TranscriptSettings;
use chatfleet_wire::RoomId;
use chatfleet_wire::frames::{Moderation, message_json};
use chatfleet_wire::token::MAX_TOKEN_TTL;
use chatfleet_wire::transcript::TranscriptEntry;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{Appended, LoggedFrame, RoomSettings, StateError};

#[derive(Debug)]
struct RoomLog {
    /// Which room of that name this is: a room forgotten and opened again is another one,
    /// and tokens minted for this one do not join it.
    incarnation: String,
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
    /// The transcript's entries (JSON), oldest first, and their bytes.
    transcript: VecDeque<String>,
    transcript_bytes: usize,
    /// Entries dropped from the transcript's front so far: entry `n` of all it ever held is at
    /// `n - transcript_dropped`, so a reader's place survives drops.
    transcript_dropped: u64,
}

impl Default for RoomLog {
    fn default() -> Self {
        Self {
            incarnation: new_incarnation(),
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
            transcript: VecDeque::new(),
            transcript_bytes: 0,
            transcript_dropped: 0,
        }
    }
}

impl RoomLog {
    /// Whether this log is of `incarnation` (`""`: whichever it is).
    fn is(&self, incarnation: &str) -> bool {
        incarnation.is_empty() || incarnation == self.incarnation
    }

    /// The room's settings, with its incarnation.
    fn settings(&self) -> Option<RoomSettings> {
        self.settings.as_ref().map(|s| RoomSettings {
            incarnation: self.incarnation.clone(),
            ..s.clone()
        })
    }

    fn pop_oldest(&mut self) -> usize {
        let freed = self.frames.pop_front().map_or(0, |(_, f)| f.len());
        self.bytes -= freed;
        freed
    }

    /// Drops the history (not the transcript); returns the bytes freed.
    fn clear_history(&mut self) -> usize {
        let freed = self.bytes;
        self.frames.clear();
        self.bytes = 0;
        freed
    }

    fn clear_transcript(&mut self) -> usize {
        self.transcript_dropped += self.transcript.len() as u64;
        let freed = self.transcript_bytes;
        self.transcript.clear();
        self.transcript_bytes = 0;
        freed
    }

    /// Records one transcript entry, keeping at most `max` (`max` > 0); returns the bytes
    /// added less those freed.
    fn record(&mut self, entry: String, max: usize) -> isize {
        let mut delta = entry.len() as isize;
        self.transcript_bytes += entry.len();
        self.transcript.push_back(entry);
        while self.transcript.len() > max {
            delta -= self.pop_oldest_entry() as isize;
        }
        delta
    }

    /// Drops the transcript's oldest entry; returns the bytes freed.
    fn pop_oldest_entry(&mut self) -> usize {
        let freed = self.transcript.pop_front().map_or(0, |e| {
            self.transcript_dropped += 1;
            e.len()
        });
        self.transcript_bytes -= freed;
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
    /// Bytes of history over all rooms.
    pub max_bytes: usize,
    /// Bytes of transcripts over all rooms: past it no new room opens.
    pub max_transcript_bytes: usize,
    pub transcripts: TranscriptSettings,
}

/// Room logs behind one lock per room, so rooms do not contend with each other. Locks are
/// taken map first, then a log, never the other way round.
#[derive(Clone)]
pub struct MemoryStore {
    rooms: Arc<Mutex<HashMap<RoomId, Arc<Mutex<RoomLog>>>>>,
    retention: Retention,
    /// Bytes of history over all logs.
    bytes: Arc<AtomicUsize>,
    /// Bytes of transcripts over all logs.
    transcript_bytes: Arc<AtomicUsize>,
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
            transcript_bytes: Arc::default(),
        }
    }

    /// A store keeping `history_len` messages per room, for tests.
    pub fn with_history(history_len: usize) -> Self {
        Self::new(Retention {
            history_len,
            after_retire: Duration::from_secs(86_400),
            max_bytes: usize::MAX,
            max_transcript_bytes: usize::MAX,
            transcripts: TranscriptSettings::default(),
        })
    }

    /// Counts transcript bytes added (or, negative, freed).
    fn add_transcript_bytes(&self, delta: isize) {
        if delta >= 0 {
            self.transcript_bytes
                .fetch_add(delta as usize, Ordering::Relaxed);
        } else {
            self.transcript_bytes
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    fn room(&self, room: &RoomId) -> Arc<Mutex<RoomLog>> {
        let mut rooms = self.rooms.lock().expect("room map lock");
        rooms.entry(room.clone()).or_default().clone()
    }

    /// A room's log, made if it has none, unless the transcripts are at their bound: the
    /// record of rooms already kept comes before new rooms.
    fn open(&self, room: &RoomId) -> Result<Arc<Mutex<RoomLog>>, StateError> {
        let mut rooms = self.rooms.lock().expect("room map lock");
        if let Some(log) = rooms.get(room) {
            return Ok(log.clone());
        }
        if self.retention.transcripts.enabled()
            && self.transcript_bytes() >= self.retention.max_transcript_bytes
        {
            tracing::warn!(%room, bytes = self.transcript_bytes(), "transcript memory is full; not opening a room");
            return Err(StateError::Full);
        }
        Ok(rooms.entry(room.clone()).or_default().clone())
    }

    fn existing(&self, room: &RoomId) -> Option<Arc<Mutex<RoomLog>>> {
        self.rooms.lock().expect("room map lock").get(room).cloned()
    }

    /// Bytes of history held over all rooms.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Bytes of transcripts held over all rooms.
    pub fn transcript_bytes(&self) -> usize {
        self.transcript_bytes.load(Ordering::Relaxed)
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
            let transcripts = self.retention.transcripts;
            if transcripts.enabled() {
                self.add_transcript_bytes(log.record(frame.to_string(), transcripts.max_entries));
            }
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

    /// The newest id and the epoch of `room`'s log (a new log when it has none); refused for
    /// a closed room, for another incarnation than the log's, and for a new room while the
    /// transcripts are at their bound.
    pub fn position(&self, room: &RoomId, incarnation: &str) -> Result<(u64, String), StateError> {
        let log = self.open(room)?;
        let log = log.lock().expect("room log lock");
        if log.closed_at.is_some() || !log.is(incarnation) {
            return Err(StateError::RoomClosed);
        }
        Ok((log.latest_id, log.epoch.clone()))
    }

    /// Frees history until under the byte bound: the history of retired rooms first (the
    /// rooms themselves stay, with their ids, closed marks and transcripts), then the oldest
    /// messages of `writing` (keeping its newest). Transcripts are never shed.
    fn shed(&self, writing: &Arc<Mutex<RoomLog>>) {
        let rooms = self.rooms.lock().expect("room map lock");
        let mut retired: Vec<(Instant, Arc<Mutex<RoomLog>>)> = rooms
            .values()
            .filter_map(|log| {
                let since = {
                    let held = log.lock().expect("room log lock");
                    (held.bytes > 0).then_some(held.idle_since).flatten()
                };
                since.map(|since| (since, log.clone()))
            })
            .collect();
        drop(rooms);
        retired.sort_by_key(|(since, _)| *since);
        for (_, log) in retired {
            if self.bytes() <= self.retention.max_bytes {
                return;
            }
            let freed = log.lock().expect("room log lock").clear_history();
            self.bytes.fetch_sub(freed, Ordering::Relaxed);
        }
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

    /// Forgets the logs of rooms retired longer than the retention, the transcripts of rooms
    /// closed longer than the transcript retention and the tombstones of rooms closed longer
    /// than a token lives. Called on the heartbeat.
    pub fn sweep(&self) {
        let (mut freed, mut freed_transcripts) = (0, 0);
        let transcript_retention = self.retention.transcripts.retention;
        self.rooms.lock().expect("room map lock").retain(|_, log| {
            let mut log = log.lock().expect("room log lock");
            if log
                .closed_at
                .is_some_and(|c| c.elapsed() >= transcript_retention)
            {
                freed_transcripts += log.clear_transcript();
            }
            let expired = match (log.closed_at, log.idle_since) {
                (Some(closed), _) => closed.elapsed() >= MAX_TOKEN_TTL.max(transcript_retention),
                (None, Some(idle)) => idle.elapsed() >= self.retention.after_retire,
                (None, None) => false,
            };
            if expired {
                freed += log.clear_history();
                freed_transcripts += log.clear_transcript();
            }
            !expired
        });
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
        self.transcript_bytes
            .fetch_sub(freed_transcripts, Ordering::Relaxed);
    }

    /// Rooms with a log or a tombstone.
    pub fn rooms(&self) -> usize {
        self.rooms.lock().expect("room map lock").len()
    }

    /// The newest id and the epoch of `room`'s log, if it has one.
    pub fn latest(&self, room: &RoomId) -> (u64, Option<String>) {
        self.existing(room).map_or((0, None), |log| {
            let log = log.lock().expect("room log lock");
            (log.latest_id, Some(log.epoch.clone()))
        })
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
            .and_then(|log| log.lock().expect("room log lock").settings())
    }

    /// The incarnation of `room`'s log, if it has one.
    pub fn incarnation(&self, room: &RoomId) -> Option<String> {
        self.existing(room)
            .map(|log| log.lock().expect("room log lock").incarnation.clone())
    }

    pub fn create_room(
        &self,
        room: &RoomId,
        settings: RoomSettings,
    ) -> Result<RoomSettings, StateError> {
        let log = self.open(room)?;
        let mut log = log.lock().expect("room log lock");
        if log.closed_at.is_some() {
            return Err(StateError::RoomClosed);
        }
        if log.idle_since.is_none() {
            // Opened through the API with no task yet: the retention runs from now.
            log.idle_since = Some(Instant::now());
        }
        log.settings.get_or_insert(settings);
        Ok(log.settings().expect("just set"))
    }

    pub fn is_closed(&self, room: &RoomId) -> bool {
        self.existing(room)
            .is_some_and(|log| log.lock().expect("room log lock").closed_at.is_some())
    }

    /// Marks the room closed, drops its history and records the close in its transcript.
    /// Returns the incarnation closed; None when it was closed already, or is not the room's
    /// (`incarnation` names another; `""` names the room's).
    pub fn close_room(&self, room: &RoomId, incarnation: &str, reason: &str) -> Option<String> {
        let log = self.room(room);
        let mut log = log.lock().expect("room log lock");
        if log.closed_at.is_some() || !log.is(incarnation) {
            return None;
        }
        log.closed_at = Some(Instant::now());
        log.members = MemberState::default();
        let freed = log.clear_history();
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
        let transcripts = self.retention.transcripts;
        if transcripts.enabled() {
            let closed = TranscriptEntry::Closed {
                reason: reason.to_owned(),
                ts: chatfleet_wire::clock::unix_millis(),
            };
            self.add_transcript_bytes(log.record(closed.to_json(), transcripts.max_entries));
        }
        Some(log.incarnation.clone())
    }

    /// Records joins and leaves in the room's transcript.
    pub fn record_transcript(&self, room: &RoomId, incarnation: &str, entries: &[String]) {
        let transcripts = self.retention.transcripts;
        if !transcripts.enabled() {
            return;
        }
        let log = self.room(room);
        let mut log = log.lock().expect("room log lock");
        if !log.is(incarnation) {
            return;
        }
        // Nodes stop recording once they know the room closed: these came before the close
        // (the transcript orders them before it), unless its retention already ran out.
        if log.closed_at.is_some() && log.transcript.is_empty() {
            return;
        }
        for entry in entries {
            self.add_transcript_bytes(log.record(entry.clone(), transcripts.max_entries));
        }
    }

    /// Up to `count` of one incarnation's transcript entries (None: the room's) from entry
    /// `from` (counting every entry the transcript ever held), with the incarnation and where
    /// the next page starts; None when it has none.
    pub fn transcript_page(
        &self,
        room: &RoomId,
        incarnation: Option<&str>,
        from: u64,
        count: usize,
    ) -> Option<(String, Vec<String>, u64)> {
        let log = self.existing(room)?;
        let log = log.lock().expect("room log lock");
        if !log.is(incarnation.unwrap_or_default()) || log.transcript.is_empty() {
            return None;
        }
        let skip = from.saturating_sub(log.transcript_dropped) as usize;
        let page: Vec<String> = log
            .transcript
            .iter()
            .skip(skip)
            .take(count)
            .cloned()
            .collect();
        let next = log.transcript_dropped + (skip + page.len()) as u64;
        Some((log.incarnation.clone(), page, next))
    }

    /// One incarnation's transcript entries (None: the room's), with its incarnation; None
    /// when it has none.
    #[cfg(test)]
    pub fn transcript(
        &self,
        room: &RoomId,
        incarnation: Option<&str>,
    ) -> Option<(String, Vec<String>)> {
        let log = self.existing(room)?;
        let log = log.lock().expect("room log lock");
        let entries = log.transcript.iter().cloned().collect();
        (log.is(incarnation.unwrap_or_default()) && !log.transcript.is_empty())
            .then(|| (log.incarnation.clone(), entries))
    }

    pub fn member_state(&self, room: &RoomId) -> MemberState {
        self.existing(room)
            .map(|log| log.lock().expect("room log lock").members.clone())
            .unwrap_or_default()
    }

    /// Raises read positions; returns how many moved (none in a closed room).
    pub fn record_reads(
        &self,
        room: &RoomId,
        incarnation: &str,
        reads: &BTreeMap<String, u64>,
    ) -> u32 {
        let log = self.room(room);
        let mut log = log.lock().expect("room log lock");
        if log.closed_at.is_some() || !log.is(incarnation) {
            return 0;
        }
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
        assert_eq!(store.latest(&room()).0, 5);
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
        store.close_room(&room(), "", "done");
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
            max_transcript_bytes: usize::MAX,
            transcripts: NO_TRANSCRIPTS,
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
        assert_eq!(store.latest(&room()).0, 0);
        assert_eq!(store.latest(&other).0, 1);
        assert_eq!(store.bytes(), store.read_range(&other, 0, 1)[0].1.len());
    }

    #[test]
    fn history_over_the_byte_bound_sheds_retired_rooms_first_then_the_oldest() {
        let one = store_frame_len();
        let store = MemoryStore::new(Retention {
            history_len: 100,
            after_retire: Duration::from_secs(3600),
            max_bytes: one * 4,
            max_transcript_bytes: usize::MAX,
            transcripts: NO_TRANSCRIPTS,
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
        assert!(
            store.read_range(&old, 0, 2).is_empty(),
            "the retired room's history went first"
        );
        assert_eq!(
            store.latest(&old).0,
            2,
            "the room itself stays, ids and all"
        );
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

    /// For the tests of the history's bounds.
    const NO_TRANSCRIPTS: TranscriptSettings = TranscriptSettings {
        max_entries: 0,
        retention: Duration::ZERO,
    };

    #[test]
    fn a_closed_rooms_transcript_outlives_its_history_for_the_retention() {
        let store = MemoryStore::new(Retention {
            history_len: 1,
            after_retire: Duration::ZERO,
            max_bytes: usize::MAX,
            max_transcript_bytes: usize::MAX,
            transcripts: TranscriptSettings {
                max_entries: 3,
                retention: Duration::from_secs(3600),
            },
        });
        store.record_transcript(&room(), "", &["{\"type\":\"joined\"}".to_owned()]);
        for body in ["a", "b"] {
            store.append(&room(), &tail(body), None).unwrap();
        }
        store.close_room(&room(), "", "resolved");
        store.sweep();
        let (_, entries) = store
            .transcript(&room(), None)
            .expect("kept after the close");
        assert_eq!(entries.len(), 3, "the bound drops the oldest: {entries:?}");
        assert!(entries[0].contains("\"body\":\"a\""), "{entries:?}");
        assert!(entries[2].contains("resolved"), "{entries:?}");
        assert!(store.read_range(&room(), 0, 2).is_empty(), "history went");
        let held: usize = entries.iter().map(String::len).sum();
        assert_eq!(store.transcript_bytes(), held, "counted as transcripts");
        assert_eq!(store.bytes(), 0, "no history is held");
    }

    /// Memory pressure sheds history, never the record: a closed room keeps its closed mark,
    /// transcript and removals, so a still-valid token cannot reopen it and a removed user
    /// stays out. Past the transcripts' bound no new room opens.
    #[test]
    fn memory_pressure_keeps_closed_rooms_and_transcripts() {
        let one = store_frame_len();
        let store = MemoryStore::new(Retention {
            history_len: 100,
            after_retire: Duration::from_secs(3600),
            max_bytes: one * 2,
            max_transcript_bytes: one * 12,
            transcripts: TranscriptSettings {
                max_entries: 100,
                retention: Duration::from_secs(3600),
            },
        });
        let closed: RoomId = "a/closed".parse().unwrap();
        store.hosting(&closed);
        store.append(&closed, &tail("x"), None).unwrap();
        let removal = Moderation {
            room: closed.clone(),
            user: "eve".into(),
            action: chatfleet_wire::frames::ModerationAction::Removed,
            reason: "abuse".into(),
            until: None,
            ts: 1,
        };
        store.moderate(&closed, &removal).unwrap();
        store.close_room(&closed, "", "resolved");
        store.released(&closed);
        store.hosting(&room());
        for _ in 0..5 {
            store.append(&room(), &tail("x"), None).unwrap();
        }
        assert!(store.bytes() <= one * 2, "history stays in its bound");
        assert!(store.is_closed(&closed), "the closed mark stays");
        let (_, kept) = store
            .transcript(&closed, None)
            .expect("the transcript stays");
        assert!(kept.last().unwrap().contains("resolved"), "{kept:?}");
        assert!(matches!(
            store.create_room(
                &closed,
                RoomSettings {
                    max_members: 5,
                    created_ms: 1,
                    incarnation: String::new(),
                }
            ),
            Err(StateError::RoomClosed)
        ));
        // Past the transcripts' bound rooms already open go on; a new one does not open.
        while store.transcript_bytes() < one * 12 {
            store.append(&room(), &tail("x"), None).unwrap();
        }
        store.append(&room(), &tail("x"), None).unwrap();
        let new: RoomId = "a/new".parse().unwrap();
        assert!(matches!(store.position(&new, ""), Err(StateError::Full)));
        assert!(store.transcript(&closed, None).is_some());
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
        assert_eq!(store.latest(&room()).0, 4);
    }

    #[test]
    fn a_forgotten_room_comes_back_in_a_new_epoch() {
        let store = MemoryStore::new(Retention {
            history_len: 10,
            after_retire: Duration::ZERO,
            max_bytes: usize::MAX,
            max_transcript_bytes: usize::MAX,
            transcripts: NO_TRANSCRIPTS,
        });
        store.hosting(&room());
        let before = store.append(&room(), &tail("x"), None).unwrap().epoch;
        assert_eq!(store.position(&room(), "").unwrap(), (1, before.clone()));
        store.released(&room());
        store.sweep();
        let (latest, after) = store.position(&room(), "").unwrap();
        assert_eq!(latest, 0);
        assert_ne!(after, before);
    }
}
