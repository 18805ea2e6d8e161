//! Capped, expiring slots in one sorted set: member = session id, score = when (ms, Redis
//! clock) the slot expires unless its node refreshes it. A user's sessions
//! ([`crate::sessions`]) and a room's seats ([`crate::room_seats`]) are both slots: the same
//! three scripts claim, refresh and release them, so a dead node's slots free themselves and
//! concurrent claims on different nodes never exceed the cap.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chatfleet_wire::session_id::Holder;

use redis::AsyncCommands;

use crate::reports::LoadReports;
use crate::{Redis, StateError, scripts};

/// How long the record of a released slot lasts: longer than any slot lives
/// (`--session-ttl-seconds`, 30 by default), so a claim or a refresh that arrives late still
/// finds it.
pub const RELEASED_FOR: Duration = Duration::from_secs(600);

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Taken,
    /// The set holds as many slots as allowed.
    AtLimit,
    /// The session was released before its claim arrived: it must not take a slot.
    Released,
}

/// The two keys of one set of slots, in one slot of a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotKeys {
    /// Sorted set: session id → expiry (ms).
    pub live: String,
    /// Sorted set: released session id → when the record may go (ms).
    pub released: String,
}

pub async fn claim(
    redis: &Redis,
    keys: &SlotKeys,
    session: &str,
    max: u32,
    ttl: Duration,
) -> Result<Claim, StateError> {
    let claimed: i64 = scripts::CLAIM_SESSION
        .key(&keys.live)
        .key(&keys.released)
        .arg(session)
        .arg(max)
        .arg(ttl.as_millis() as u64)
        .invoke_async(&mut redis.conn())
        .await?;
    Ok(match claimed {
        1 => Claim::Taken,
        0 => Claim::AtLimit,
        _ => Claim::Released,
    })
}

/// One set's slots a node refreshes: the set, its cap, and the node's sessions in it.
pub struct Held<'a> {
    pub keys: SlotKeys,
    pub max: u32,
    pub sessions: Vec<&'a str>,
}

/// Keeps the given sessions of each set alive for another `ttl`, one script per set,
/// pipelined. A slot that expired or was freed without being released (Redis stalled, or its
/// node was believed gone) is taken back while its set has room. Returns the sessions whose
/// slot is gone for good (ended by an administrator, or its set filled up meanwhile): their
/// node must end them.
pub async fn refresh(
    redis: &Redis,
    sets: &[Held<'_>],
    ttl: Duration,
) -> Result<Vec<String>, StateError> {
    if sets.is_empty() {
        return Ok(Vec::new());
    }
    // Loads the script once so the pipeline can use EVALSHA.
    let _: String = scripts::REFRESH_SESSION
        .prepare_invoke()
        .load_async(&mut redis.conn())
        .await?;
    let gone: Vec<Vec<String>> = redis
        .pipeline_by_slot(
            sets,
            |held| held.keys.live.clone(),
            |pipe, held| {
                pipe.cmd("EVALSHA")
                    .arg(scripts::REFRESH_SESSION.get_hash())
                    .arg(2)
                    .arg(&held.keys.live)
                    .arg(&held.keys.released)
                    .arg(ttl.as_millis() as u64)
                    .arg(held.max)
                    .arg(&held.sessions);
            },
        )
        .await?;
    Ok(gone.into_iter().flatten().collect())
}

/// Frees a slot at once, for good: a claim for it that arrives later is refused.
pub async fn release(redis: &Redis, keys: &SlotKeys, session: &str) -> Result<(), StateError> {
    let _: i64 = scripts::RELEASE_SESSION
        .key(&keys.live)
        .key(&keys.released)
        .arg(session)
        .arg(RELEASED_FOR.as_millis() as u64)
        .invoke_async(&mut redis.conn())
        .await?;
    Ok(())
}

/// Frees the set's slots held by processes that are gone: their node's report has expired,
/// or it reports another boot (it restarted). A process whose node reports no boot (older than
/// boots) counts as alive. Returns how many slots were freed.
///
/// Only a caller that trusts the reports should call it: one that has reached Redis for a
/// while (after a Redis stall every node's report is missing until its next heartbeat).
pub async fn free_gone(redis: &Redis, keys: &SlotKeys) -> Result<usize, StateError> {
    let holders: BTreeSet<Holder> = live(redis, keys)
        .await?
        .iter()
        .filter_map(|(session, _)| Holder::of(session))
        .collect();
    if holders.is_empty() {
        return Ok(0);
    }
    let nodes: BTreeSet<&str> = holders.iter().map(|h| h.node.as_str()).collect();
    let reports = LoadReports::new(redis.clone());
    let mut boots = HashMap::new();
    for node in nodes {
        boots.insert(node, reports.report(node).await?.map(|r| r.boot));
    }
    let gone: Vec<String> = holders
        .iter()
        .filter(|holder| match &boots[holder.node.as_str()] {
            None => true,
            Some(boot) => !boot.is_empty() && *boot != holder.boot,
        })
        .map(Holder::prefix)
        .collect();
    if gone.is_empty() {
        return Ok(0);
    }
    let freed: usize = scripts::FREE_SLOTS
        .key(&keys.live)
        .arg(gone)
        .invoke_async(&mut redis.conn())
        .await?;
    Ok(freed)
}

/// How many live slots a set holds: one `ZCOUNT`, whatever the set's size.
pub async fn count(redis: &Redis, keys: &SlotKeys) -> Result<u64, StateError> {
    let mut conn = redis.conn();
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
    let now = seconds * 1000 + micros / 1000;
    Ok(conn.zcount(&keys.live, format!("({now}"), "+inf").await?)
}

/// The live slots of a set: (session id, expiry in ms of Redis's clock).
pub async fn live(redis: &Redis, keys: &SlotKeys) -> Result<Vec<(String, u64)>, StateError> {
    let mut conn = redis.conn();
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
    let now = seconds * 1000 + micros / 1000;
    let slots: Vec<(String, u64)> = conn
        .zrangebyscore_withscores(&keys.live, format!("({now}"), "+inf")
        .await?;
    Ok(slots)
}
