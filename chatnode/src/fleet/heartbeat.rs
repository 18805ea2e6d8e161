//! The heartbeat: samples the node's message rate and, in a fleet, writes the load report
//! and keeps the shared state of hosted rooms alive. Its success decides readiness.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use chatfleet_wire::RoomId;
use chatfleet_wire::load::RoomLoad;

use chatfleet_state::FleetState;
use futures_util::future::join_all;

use crate::node::Hub;
use crate::node::rate::RateWindow;
use crate::node::room::{Busy, RoomHandle};
use crate::store::Backend;

/// Refresh the TTLs of hosted rooms' state once every this many heartbeats.
const ROOM_REFRESH_EVERY: u64 = 10;

pub async fn run(hub: Arc<Hub>, every: Duration, report_ttl: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beats: u64 = 0;
    let mut was_ok = true;
    let mut room_rates = RoomRates::default();
    let mut rosters = Rosters::default();
    let mut last_session_refresh: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            _ = hub.report_wanted() => {}
        }
        let rate = hub.sample_rate();
        let redis = match hub.backend() {
            Backend::Redis(redis) => redis,
            Backend::Memory(memory) => {
                memory.sweep();
                hub.metrics().backend_up.set(1);
                hub.metrics().history_bytes.set(memory.bytes() as i64);
                continue;
            }
        };
        let report = hub.load_report(rate);
        let rooms = room_rates.sample(&hub);
        let result = redis
            .state()
            .reports
            .write(&report, &rooms, report_ttl)
            .await;
        let ok = result.is_ok();
        redis.set_heartbeat_ok(ok);
        match (was_ok, result) {
            (true, Err(error)) => tracing::warn!(%error, "cannot write the load report; not ready"),
            (false, Ok(())) => tracing::info!("load report written again; ready"),
            _ => {}
        }
        was_ok = ok;
        if ok {
            rosters.write(&hub, redis.state(), report_ttl).await;
        }
        if ok
            && sessions_due(&hub, every, &mut last_session_refresh)
            && let Err(error) = hub.user_sessions().refresh().await
        {
            tracing::warn!(%error, "cannot refresh session slots");
        }
        if ok && beats.is_multiple_of(ROOM_REFRESH_EVERY) {
            let rooms: Vec<_> = hub
                .rooms()
                .all()
                .iter()
                .map(|r| (r.id().clone(), r.incarnation().to_owned()))
                .collect();
            if let Err(error) = redis.state().rooms.refresh(&rooms).await {
                tracing::warn!(%error, "cannot refresh room TTLs");
            }
        }
        beats += 1;
    }
}

/// Session slots are refreshed three times per TTL (at least every heartbeat), so one missed
/// refresh never frees a live session's slot.
fn sessions_due(hub: &Hub, every: Duration, last: &mut Option<Instant>) -> bool {
    let period = (hub.user_sessions().ttl() / 3).max(every);
    if last.is_some_and(|at| at.elapsed() + every / 2 < period) {
        return false;
    }
    *last = Some(Instant::now());
    true
}

/// Writes one report at once, outside the rhythm: at start and when draining begins.
pub async fn report_now(hub: &Hub, report_ttl: Duration) {
    if let Backend::Redis(redis) = hub.backend() {
        let report = hub.load_report(hub.sample_rate());
        let rooms = RoomRates::default().sample(hub);
        let ok = redis
            .state()
            .reports
            .write(&report, &rooms, report_ttl)
            .await
            .is_ok();
        redis.set_heartbeat_ok(ok);
    }
}

/// How long the heartbeat waits for a room's roster.
const ROSTER_WAIT: Duration = Duration::from_millis(50);

/// The node's rosters in Redis: written for rooms whose members changed, dropped for rooms
/// it no longer hosts, and all rewritten after a failed write.
struct Rosters {
    /// The next write starts over: drop what is there and write every room.
    full: bool,
    /// Rooms with a roster in Redis.
    written: HashSet<RoomId>,
}

impl Default for Rosters {
    fn default() -> Self {
        // The first write replaces whatever a previous process of this name left.
        Self {
            full: true,
            written: HashSet::new(),
        }
    }
}

impl Rosters {
    async fn write(&mut self, hub: &Hub, state: &FleetState, ttl: Duration) {
        let rooms = hub.rooms().all();
        let changed: Vec<&RoomHandle> = rooms
            .iter()
            .filter(|room| room.take_roster_change() || self.full)
            .collect();
        let answers = join_all(changed.iter().map(|room| room.roster(ROSTER_WAIT))).await;
        let (mut set, mut gone) = (Vec::new(), Vec::new());
        for (room, answer) in changed.iter().zip(answers) {
            match answer {
                Ok(roster) if roster.is_empty() => gone.push(room.id().clone()),
                Ok(roster) => set.push((room.id().clone(), roster)),
                Err(Busy) => room.roster_unsent(),
            }
        }
        let hosted: HashSet<&RoomId> = rooms.iter().map(|room| room.id()).collect();
        gone.extend(
            self.written
                .iter()
                .filter(|room| !hosted.contains(room))
                .cloned(),
        );
        let node = hub.node_name();
        match state
            .reports
            .write_rosters(node, self.full, &set, &gone, ttl)
            .await
        {
            Ok(()) => {
                self.full = false;
                for room in &gone {
                    self.written.remove(room);
                }
                self.written.extend(set.into_iter().map(|(room, _)| room));
            }
            Err(error) => {
                tracing::debug!(%error, "cannot write rosters; rewriting them all next time");
                self.full = true;
                self.written.clear();
            }
        }
    }
}

/// Each hosted room's message rate, sampled from its message ids (which count its messages
/// fleet-wide) once per heartbeat.
#[derive(Default)]
struct RoomRates {
    start: Option<Instant>,
    windows: HashMap<RoomId, RateWindow>,
}

impl RoomRates {
    /// The load of every room with members here; forgets rooms this node no longer hosts.
    fn sample(&mut self, hub: &Hub) -> Vec<(RoomId, RoomLoad)> {
        let at = self.start.get_or_insert_with(Instant::now).elapsed();
        let rooms = hub.rooms().all();
        let hosted: HashSet<&RoomId> = rooms.iter().map(|room| room.id()).collect();
        self.windows.retain(|id, _| hosted.contains(id));
        rooms
            .iter()
            .filter(|room| room.members() > 0)
            .map(|room| {
                let window = self.windows.entry(room.id().clone()).or_default();
                window.record(at, room.last_id());
                let load = RoomLoad {
                    members: room.members(),
                    msg_rate: window.per_second(),
                };
                (room.id().clone(), load)
            })
            .collect()
    }
}
