//! Rooms' transcripts in Redis: the append script records every message (see
//! `scripts/append.lua`), nodes record joins and leaves here, and closing a room records the
//! close and keeps the transcript for the retention.

use std::time::Duration;

use chatfleet_wire::RoomId;
use chatfleet_wire::keys::{LOG_FIELD, RoomKeys};

use crate::rooms::RoomStore;
use crate::{StateError, scripts};

/// What a fleet keeps of its rooms' conversations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TranscriptSettings {
    /// Entries a transcript holds at most (0: keep no transcripts). Past it the oldest go,
    /// and the transcript says it is incomplete.
    pub max_entries: usize,
    /// How long a closed room's transcript stays readable.
    pub retention: Duration,
}

impl Default for TranscriptSettings {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            retention: Duration::from_secs(7 * 86_400),
        }
    }
}

impl TranscriptSettings {
    pub fn enabled(&self) -> bool {
        self.max_entries > 0
    }
}

/// Entries read per round trip, so a long transcript does not stall Redis.
const PAGE: usize = 5_000;

impl RoomStore {
    /// Records joins and leaves (JSON `TranscriptEntry`s), in order, in one round trip. Nodes
    /// stop recording once they learn a room closed, so entries reaching a closed room came
    /// before the close: they are kept (the transcript orders them before it) without
    /// touching the retention the close set. Returns the entries recorded.
    pub async fn record_transcript(
        &self,
        room: &RoomId,
        incarnation: &str,
        entries: &[String],
    ) -> Result<usize, StateError> {
        let settings = self.transcripts();
        if !settings.enabled() || entries.is_empty() {
            return Ok(0);
        }
        let keys = RoomKeys::new(room);
        let recorded: usize = scripts::TRANSCRIPT
            .key(keys.transcript_of(incarnation))
            .key(&keys.closed)
            .key(&keys.meta)
            .arg(settings.max_entries)
            .arg(self.ttl_seconds())
            .arg(incarnation)
            .arg(entries)
            .invoke_async(&mut self.redis.conn())
            .await?;
        Ok(recorded)
    }

    /// The recorded entries of one incarnation's transcript (None: the incarnation the name
    /// stands for now, see [`RoomStore::current_incarnation`]) in the order they were written,
    /// with that incarnation; None when it has none (unknown, never used, or closed longer ago
    /// than the retention).
    pub async fn transcript(
        &self,
        room: &RoomId,
        incarnation: Option<&str>,
    ) -> Result<Option<(String, Vec<String>)>, StateError> {
        let incarnation = match incarnation {
            Some(named) => named.to_owned(),
            None => self.current_incarnation(room).await?,
        };
        let key = RoomKeys::new(room).transcript_of(&incarnation);
        let mut entries = Vec::new();
        let mut start = "-".to_owned();
        loop {
            let page = self.transcript_page(&key, &start, PAGE).await?;
            let full = page.len() == PAGE;
            if let Some((last, _)) = page.last() {
                start = format!("({last}");
            }
            entries.extend(page.into_iter().map(|(_, json)| json));
            if !full {
                break;
            }
        }
        Ok((!entries.is_empty()).then_some((incarnation, entries)))
    }

    /// Up to `count` entries of the transcript stream `key` from `start` (an XRANGE bound):
    /// (entry id, JSON), in the order written.
    pub async fn transcript_page(
        &self,
        key: &str,
        start: &str,
        count: usize,
    ) -> Result<Vec<(String, String)>, StateError> {
        let page: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(key)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(page
            .into_iter()
            .filter_map(|(id, fields)| {
                let json = fields.into_iter().find(|(f, _)| f == LOG_FIELD)?.1;
                Some((id, json))
            })
            .collect())
    }
}
