//! The node: its seat count, its rooms, its drain state and the load it reports.
//!
//! Connections take a seat from the hub before they join a room; the seat count is the node's
//! user count. Rooms live in the hub's [`RoomRegistry`] while they have a task running.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatfleet_wire::RoomId;
use chatfleet_wire::clock::unix_millis;
use chatfleet_wire::load::{Limits, LoadReport};
use chatfleet_wire::token::TokenKeys;
use chatfleet_wire::urls::ws_endpoint;
use tokio_util::sync::CancellationToken;

use super::admission::{NodeState, Refusal, admit_to_node};
use super::rate::RateWindow;
use super::registry::RoomRegistry;
use super::room::{ConnId, RoomEnv};
use super::user_sessions::UserSessions;
use crate::fleet::redirect::Redirects;
use crate::metrics::Metrics;
use crate::store::Backend;
use crate::webhooks::Webhooks;

/// The node's drain states (`Hub::drain_state`).
const SERVING: u8 = 0;
const DRAINING: u8 = 1;
const STOPPING: u8 = 2;

/// Settings the hub needs from the configuration.
#[derive(Debug, Clone)]
pub struct HubSettings {
    pub node_name: String,
    /// The fleet (`namespace/name`): names its webhook queue.
    pub fleet: String,
    pub advertise_url: String,
    pub limits: Limits,
    /// Deliveries per second one room may cause.
    pub room_deliveries_per_second: u32,
    /// Sessions one user may hold at once, fleet-wide.
    pub max_user_sessions: u32,
    /// How long a session's slot outlives the node's last refresh.
    pub session_ttl: Duration,
    /// How long a node's load report lives: within it, every live node reports again.
    pub report_ttl: Duration,
}

pub struct Hub {
    settings: HubSettings,
    backend: Backend,
    tokens: TokenKeys,
    metrics: Arc<Metrics>,
    rooms: Arc<RoomRegistry>,
    users: AtomicU32,
    /// Serving, draining (an administrator's or the autoscaler's drain, which can be called
    /// off) or stopping (SIGTERM: for good), in one atomic so a call-off never races a stop.
    drain_state: AtomicU8,
    /// Wakes the heartbeat for a report outside its rhythm (a drain begun or called off).
    report_wanted: tokio::sync::Notify,
    drain: CancellationToken,
    next_conn: AtomicU64,
    messages_in: AtomicU64,
    rate: Mutex<(Instant, RateWindow)>,
    user_sessions: Arc<UserSessions>,
    webhooks: Webhooks,
    redirects: Redirects,
}

/// A session's place on the node; dropping it frees the place.
pub struct Seat {
    hub: Arc<Hub>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.hub.users.fetch_sub(1, Ordering::AcqRel);
        self.hub.metrics.connections.dec();
    }
}

impl Hub {
    pub fn new(
        settings: HubSettings,
        backend: Backend,
        tokens: TokenKeys,
        metrics: Arc<Metrics>,
        webhooks: Webhooks,
    ) -> Arc<Self> {
        let user_sessions = UserSessions::new(
            &settings.node_name,
            settings.max_user_sessions,
            settings.session_ttl,
            settings.report_ttl,
            backend.clone(),
        );
        let rooms = RoomRegistry::new(RoomEnv {
            backend: backend.clone(),
            webhooks: webhooks.clone(),
            node_name: settings.node_name.clone(),
            limits: settings.limits,
            deliveries_per_second: settings.room_deliveries_per_second,
            metrics: metrics.clone(),
        });
        Arc::new(Self {
            settings,
            backend,
            tokens,
            metrics,
            rooms,
            users: AtomicU32::new(0),
            drain_state: AtomicU8::new(SERVING),
            report_wanted: tokio::sync::Notify::new(),
            drain: CancellationToken::new(),
            next_conn: AtomicU64::new(1),
            messages_in: AtomicU64::new(0),
            rate: Mutex::new((Instant::now(), RateWindow::default())),
            user_sessions,
            webhooks,
            redirects: Redirects::default(),
        })
    }

    /// Where a client this node has no seat for can join `room` instead: the room's endpoint on
    /// the fleet's emptiest other node. None standalone, or when no node has a seat.
    pub async fn redirect(&self, room: &RoomId) -> Option<String> {
        let Backend::Redis(redis) = &self.backend else {
            return None;
        };
        let base = self
            .redirects
            .target(redis.state(), self.node_name())
            .await?;
        Some(ws_endpoint(&base, room))
    }

    /// The fleet this node belongs to (`namespace/name`).
    pub fn fleet(&self) -> &str {
        &self.settings.fleet
    }

    /// Where the node's webhook events go.
    pub fn webhooks(&self) -> &Webhooks {
        &self.webhooks
    }

    /// The per-user session limit.
    pub fn user_sessions(&self) -> &Arc<UserSessions> {
        &self.user_sessions
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn tokens(&self) -> &TokenKeys {
        &self.tokens
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The metrics, to share with tasks outside the node.
    pub fn metrics_handle(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    pub fn limits(&self) -> Limits {
        self.settings.limits
    }

    pub fn node_name(&self) -> &str {
        &self.settings.node_name
    }

    pub fn advertise_url(&self) -> &str {
        &self.settings.advertise_url
    }

    pub fn users(&self) -> u32 {
        self.users.load(Ordering::Acquire)
    }

    pub fn is_draining(&self) -> bool {
        self.drain_state.load(Ordering::Acquire) != SERVING
    }

    /// Ready for new joins: not draining and, in a fleet, Redis reachable.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.backend.is_ready()
    }

    /// Cancelled when the node starts draining; sessions listen for it.
    pub fn drain_token(&self) -> CancellationToken {
        self.drain.clone()
    }

    /// Starts the drain: refuse new joins from now on.
    pub fn start_drain(&self) {
        let _ = self.drain_state.compare_exchange(
            SERVING,
            DRAINING,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Asks the heartbeat to report at once, so the operator sees a change of state within
    /// its next pass rather than a heartbeat later.
    pub fn report_soon(&self) {
        self.report_wanted.notify_one();
    }

    /// Resolves when a report is wanted outside the heartbeat's rhythm.
    pub async fn report_wanted(&self) {
        self.report_wanted.notified().await;
    }

    /// Starts the drain of a process that is stopping (SIGTERM): for good.
    pub fn start_final_drain(&self) {
        self.drain_state.store(STOPPING, Ordering::Release);
    }

    /// Calls off an administrator's or the autoscaler's drain: take new joins again. A node
    /// that is stopping stays drained. Returns whether the node takes joins again.
    pub fn stop_drain(&self) -> bool {
        self.drain_state
            .compare_exchange(DRAINING, SERVING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Has every room write its pending transcript entries and reads now, within `limit`:
    /// a stopping node's last joins and leaves are part of the record. Returns the rooms that
    /// did not finish in time.
    pub async fn flush_rooms(&self, limit: Duration) -> usize {
        let rooms = self.rooms().all();
        let flushed =
            futures_util::future::join_all(rooms.iter().map(|room| room.flush(limit))).await;
        flushed.into_iter().filter(|done| !done).count()
    }

    /// Tells every session to go (they send `draining` and close with 1012).
    pub fn send_everyone_away(&self) {
        self.drain.cancel();
    }

    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Takes a seat if the admission rules allow, atomically with respect to other joins.
    pub fn take_seat(self: &Arc<Self>) -> Result<Seat, Refusal> {
        let result = self
            .users
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |users| {
                let state = NodeState {
                    users,
                    max_users: self.settings.limits.max_node_users,
                    draining: self.is_draining(),
                    backend_ready: self.backend.is_ready(),
                };
                admit_to_node(state).ok().map(|()| users + 1)
            });
        match result {
            Ok(_) => {
                self.metrics.connections.inc();
                Ok(Seat { hub: self.clone() })
            }
            // Recompute the reason the update refused.
            Err(users) => Err(admit_to_node(NodeState {
                users,
                max_users: self.settings.limits.max_node_users,
                draining: self.is_draining(),
                backend_ready: self.backend.is_ready(),
            })
            .err()
            .unwrap_or(Refusal::Unavailable)),
        }
    }

    /// The rooms with a task on this node.
    pub fn rooms(&self) -> &RoomRegistry {
        &self.rooms
    }

    /// Counts a message accepted from a client.
    pub fn count_message_in(&self) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        self.metrics.messages_in.inc();
    }

    /// Samples the message counter; called once per heartbeat.
    pub fn sample_rate(&self) -> f64 {
        let mut rate = self.rate.lock().expect("rate lock");
        let (start, window) = &mut *rate;
        window.record(start.elapsed(), self.messages_in.load(Ordering::Relaxed));
        window.per_second()
    }

    /// The load report for this moment, with the rate from the last sample.
    pub fn load_report(&self, msg_rate: f64) -> LoadReport {
        let rooms = self.rooms.all();
        LoadReport {
            node: self.settings.node_name.clone(),
            advertise_url: self.settings.advertise_url.clone(),
            users: self.users(),
            rooms: rooms.iter().filter(|r| r.members() > 0).count() as u32,
            msg_rate,
            limits: self.settings.limits,
            draining: self.is_draining(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ts_ms: unix_millis(),
            boot: self.user_sessions.boot().to_owned(),
        }
    }
}
