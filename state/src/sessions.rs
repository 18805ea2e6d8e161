//! The fleet-wide sessions-per-user limit. Each of a user's sessions holds a slot in the user's
//! sorted set, scored by when it expires (Redis's clock); its node pushes the expiry forward on
//! the heartbeat, so a dead node's slots free themselves, and a clean leave frees its slot at
//! once. Claiming is one script, so concurrent joins on different nodes never exceed the limit.

use std::time::Duration;

use chatfleet_wire::control::Control;
use chatfleet_wire::keys;
use redis::AsyncCommands;

use crate::{Redis, StateError, scripts};

/// Users' session slots. Cheap to clone.
#[derive(Clone)]
pub struct SessionSlots {
    redis: Redis,
}

impl SessionSlots {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    /// Claims one of `user`'s fleet-wide sessions; false when they hold `max` already.
    pub async fn claim(
        &self,
        user: &str,
        session: &str,
        max: u32,
        ttl: Duration,
    ) -> Result<bool, StateError> {
        let claimed: i64 = scripts::CLAIM_SESSION
            .key(keys::user_sessions(user))
            .arg(session)
            .arg(max)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut self.redis.conn())
            .await?;
        Ok(claimed == 1)
    }

    /// Keeps a node's sessions, given as (session id, user), alive for another `ttl`.
    pub async fn refresh(
        &self,
        sessions: &[(String, String)],
        ttl: Duration,
    ) -> Result<(), StateError> {
        if sessions.is_empty() {
            return Ok(());
        }
        let ttl_ms = ttl.as_millis() as u64;
        let mut conn = self.redis.conn();
        // Loads the script once so the pipeline can use EVALSHA.
        let _: String = scripts::REFRESH_SESSION
            .prepare_invoke()
            .load_async(&mut conn)
            .await?;
        let mut pipe = redis::pipe();
        for (session, user) in sessions {
            pipe.cmd("EVALSHA")
                .arg(scripts::REFRESH_SESSION.get_hash())
                .arg(1)
                .arg(keys::user_sessions(user))
                .arg(session)
                .arg(ttl_ms)
                .ignore();
        }
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// Frees a session at once (a clean leave).
    pub async fn release(&self, user: &str, session: &str) -> Result<(), StateError> {
        let _: () = self
            .redis
            .conn()
            .zrem(keys::user_sessions(user), session)
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

    /// Frees `user`'s slots (one session, or all) and tells every node to close them, in one
    /// round trip.
    pub async fn end(&self, user: &str, session: Option<&str>) -> Result<(), StateError> {
        let key = keys::user_sessions(user);
        let command = Control::EndSessions {
            user: user.to_owned(),
            session: session.map(str::to_owned),
        };
        let mut pipe = redis::pipe();
        match session {
            Some(id) => pipe.zrem(&key, id),
            None => pipe.del(&key),
        };
        pipe.publish(keys::control_channel(), command.to_json());
        let _: () = pipe.query_async(&mut self.redis.conn()).await?;
        Ok(())
    }
}
