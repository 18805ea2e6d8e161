//! The fleet-wide sessions-per-user limit. Each of a user's sessions holds a slot in the user's
//! sorted set, scored by when it expires (Redis's clock); its node pushes the expiry forward on
//! the heartbeat, so a dead node's slots free themselves, and a clean leave frees its slot at
//! once. Claiming is one script, so concurrent joins on different nodes never exceed the limit.

use std::collections::BTreeMap;
use std::time::Duration;

use chatfleet_wire::control::Control;
use chatfleet_wire::keys;
use redis::AsyncCommands;

use crate::{Redis, StateError, scripts};

/// How long the record of a released or ended session lasts: longer than any session slot
/// lives (`--session-ttl-seconds`, 30 by default), so a claim or a refresh that arrives late
/// still finds it.
pub const RELEASED_FOR: Duration = Duration::from_secs(600);

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Taken,
    /// The user holds as many sessions as allowed.
    AtLimit,
    /// The session was released before its claim arrived: it must not take a slot.
    Released,
}

/// Users' session slots. Cheap to clone.
#[derive(Clone)]
pub struct SessionSlots {
    redis: Redis,
}

impl SessionSlots {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    /// Claims one of `user`'s fleet-wide sessions.
    pub async fn claim(
        &self,
        user: &str,
        session: &str,
        max: u32,
        ttl: Duration,
    ) -> Result<Claim, StateError> {
        let claimed: i64 = scripts::CLAIM_SESSION
            .key(keys::user_sessions(user))
            .key(keys::user_released(user))
            .arg(session)
            .arg(max)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut self.redis.conn())
            .await?;
        Ok(match claimed {
            1 => Claim::Taken,
            0 => Claim::AtLimit,
            _ => Claim::Released,
        })
    }

    /// Keeps a node's sessions, given as (session id, user), alive for another `ttl`, and
    /// returns those whose slot is gone (ended by an administrator, or expired while the node
    /// could not refresh it): the node must end them. One script per user, pipelined.
    pub async fn refresh(
        &self,
        sessions: &[(String, String)],
        ttl: Duration,
    ) -> Result<Vec<String>, StateError> {
        let mut by_user: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (session, user) in sessions {
            by_user.entry(user).or_default().push(session);
        }
        if by_user.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.redis.conn();
        // Loads the script once so the pipeline can use EVALSHA.
        let _: String = scripts::REFRESH_SESSION
            .prepare_invoke()
            .load_async(&mut conn)
            .await?;
        let by_user: Vec<(&str, Vec<&str>)> = by_user.into_iter().collect();
        let gone: Vec<Vec<String>> = self
            .redis
            .pipeline_by_slot(
                &by_user,
                |(user, _)| keys::user_sessions(user),
                |pipe, (user, ids)| {
                    pipe.cmd("EVALSHA")
                        .arg(scripts::REFRESH_SESSION.get_hash())
                        .arg(2)
                        .arg(keys::user_sessions(user))
                        .arg(keys::user_released(user))
                        .arg(ttl.as_millis() as u64)
                        .arg(ids);
                },
            )
            .await?;
        Ok(gone.into_iter().flatten().collect())
    }

    /// Frees a session at once (a clean leave, or a join that gave up), for good: a claim for
    /// it that arrives later is refused.
    pub async fn release(&self, user: &str, session: &str) -> Result<(), StateError> {
        let _: i64 = scripts::RELEASE_SESSION
            .key(keys::user_sessions(user))
            .key(keys::user_released(user))
            .arg(session)
            .arg(RELEASED_FOR.as_millis() as u64)
            .invoke_async(&mut self.redis.conn())
            .await?;
        Ok(())
    }

    /// `user`'s live sessions across the fleet: (session id, expiry in ms of Redis's clock).
    pub async fn list(&self, user: &str) -> Result<Vec<(String, u64)>, StateError> {
        let mut conn = self.redis.conn();
        let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
        let now = seconds * 1000 + micros / 1000;
        let sessions: Vec<(String, u64)> = conn
            .zrangebyscore_withscores(keys::user_sessions(user), format!("({now}"), "+inf")
            .await?;
        Ok(sessions)
    }

    /// Frees `user`'s slots (one session, or all) for good, then tells every node to close
    /// them (two calls: on a cluster the user's keys and the control channel are in different
    /// slots); the record that they ended lasts [`RELEASED_FOR`], so no refresh or
    /// late claim brings them back.
    pub async fn end(&self, user: &str, session: Option<&str>) -> Result<(), StateError> {
        let command = Control::EndSessions {
            user: user.to_owned(),
            session: session.map(str::to_owned),
        };
        let mut conn = self.redis.conn();
        let _: i64 = scripts::END_SESSIONS
            .key(keys::user_sessions(user))
            .key(keys::user_released(user))
            .arg(RELEASED_FOR.as_millis() as u64)
            .arg(session.unwrap_or(""))
            .invoke_async(&mut conn)
            .await?;
        // After the slots are freed for good, so no node that closes a session sees it claimed.
        let _: () = conn
            .publish(keys::control_channel(), command.to_json())
            .await?;
        Ok(())
    }
}
