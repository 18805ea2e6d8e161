//! The heartbeat: samples the node's message rate and, in a fleet, writes the load report
//! and keeps the shared state of hosted rooms alive. Its success decides readiness.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::store::Backend;

/// Refresh the TTLs of hosted rooms' state once every this many heartbeats.
const ROOM_REFRESH_EVERY: u64 = 10;

pub async fn run(hub: Arc<Hub>, every: Duration, report_ttl: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beats: u64 = 0;
    let mut was_ok = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let rate = hub.sample_rate();
        let Backend::Redis(redis) = hub.backend() else {
            hub.metrics().backend_up.set(1);
            continue;
        };
        let report = hub.load_report(rate);
        let result = redis.write_report(&report, report_ttl).await;
        let ok = result.is_ok();
        redis.set_heartbeat_ok(ok);
        match (was_ok, result) {
            (true, Err(error)) => tracing::warn!(%error, "cannot write the load report; not ready"),
            (false, Ok(())) => tracing::info!("load report written again; ready"),
            _ => {}
        }
        was_ok = ok;
        if ok && beats.is_multiple_of(ROOM_REFRESH_EVERY) {
            let rooms: Vec<_> = hub.rooms().iter().map(|r| r.id().clone()).collect();
            if let Err(error) = redis.refresh_rooms(&rooms).await {
                tracing::warn!(%error, "cannot refresh room TTLs");
            }
        }
        beats += 1;
    }
}

/// Writes one report at once, outside the rhythm: at start and when draining begins.
pub async fn report_now(hub: &Hub, report_ttl: Duration) {
    if let Backend::Redis(redis) = hub.backend() {
        let report = hub.load_report(hub.sample_rate());
        let ok = redis.write_report(&report, report_ttl).await.is_ok();
        redis.set_heartbeat_ok(ok);
    }
}
