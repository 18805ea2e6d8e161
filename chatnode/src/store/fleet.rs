//! The node's side of the fleet's Redis: the shared state it reads and writes (through
//! `chatfleet_state`), the link to its live-channel subscriber, and whether both are healthy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatfleet_state::rooms::MessageLog;
use chatfleet_state::transcripts::TranscriptSettings;
use chatfleet_state::{ConnectionSettings, FleetState, Redis, RedisTls};
use chatfleet_wire::RoomId;
use tokio::sync::{mpsc, oneshot};

/// A request to the live-channel subscriber (`crate::fleet::live`).
#[derive(Debug)]
pub struct LiveSync {
    pub room: RoomId,
    /// Answered once the subscription matches the node's rooms; `false` when Redis is down.
    pub done: Option<oneshot::Sender<bool>>,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct FleetStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: FleetState,
    log: MessageLog,
    /// The last heartbeat reached Redis.
    heartbeat_ok: AtomicBool,
    /// Since when every heartbeat has reached Redis; none while they fail.
    steady_since: Mutex<Option<Instant>>,
    /// The live-channel subscription is connected.
    live_ok: AtomicBool,
    live: mpsc::UnboundedSender<LiveSync>,
}

impl FleetStore {
    /// Prepares the store without waiting for Redis: a node starts, and reports not ready,
    /// while Redis is down. Returns the receiver that `crate::fleet::live::run` serves.
    pub fn new(
        url: &str,
        tls: &RedisTls,
        history_len: usize,
        room_ttl: Duration,
        transcripts: TranscriptSettings,
    ) -> Result<(Self, mpsc::UnboundedReceiver<LiveSync>), redis::RedisError> {
        let redis = Redis::open_with_tls(url, ConnectionSettings::NODE, tls)?;
        let state = FleetState::new(redis, room_ttl).with_transcripts(transcripts);
        let log = MessageLog::new(state.rooms.clone(), history_len);
        let (live, live_rx) = mpsc::unbounded_channel();
        let store = Self {
            inner: Arc::new(Inner {
                state,
                log,
                heartbeat_ok: AtomicBool::new(false),
                steady_since: Mutex::new(None),
                live_ok: AtomicBool::new(false),
                live,
            }),
        };
        Ok((store, live_rx))
    }

    /// The fleet's shared state.
    pub fn state(&self) -> &FleetState {
        &self.inner.state
    }

    /// Where this node appends its rooms' messages.
    pub fn log(&self) -> &MessageLog {
        &self.inner.log
    }

    pub fn is_ready(&self) -> bool {
        self.inner.heartbeat_ok.load(Ordering::Acquire)
            && self.inner.live_ok.load(Ordering::Acquire)
    }

    pub fn set_live_ok(&self, ok: bool) {
        self.inner.live_ok.store(ok, Ordering::Release);
    }

    pub fn set_heartbeat_ok(&self, ok: bool) {
        self.inner.heartbeat_ok.store(ok, Ordering::Release);
        let mut since = self.inner.steady_since.lock().expect("steady lock");
        match (ok, *since) {
            (true, None) => *since = Some(Instant::now()),
            (false, _) => *since = None,
            (true, Some(_)) => {}
        }
    }

    /// Whether this node's heartbeats have reached Redis for `grace` at least: only then do
    /// other nodes' reports say who is gone (after a Redis stall, every node's report is
    /// missing until that node's next heartbeat).
    pub fn steady_for(&self, grace: Duration) -> bool {
        let since = self.inner.steady_since.lock().expect("steady lock");
        since.is_some_and(|at| at.elapsed() >= grace)
    }

    /// Asks the subscriber to make the room's live subscription match the node, and waits.
    pub async fn sync_live(&self, room: &RoomId) -> bool {
        let (done, rx) = oneshot::channel();
        let sent = self.inner.live.send(LiveSync {
            room: room.clone(),
            done: Some(done),
        });
        sent.is_ok() && rx.await.unwrap_or(false)
    }

    /// Like [`sync_live`](Self::sync_live), without waiting.
    pub fn sync_live_later(&self, room: &RoomId) {
        let _ = self.inner.live.send(LiveSync {
            room: room.clone(),
            done: None,
        });
    }
}
