//! The fleet-wide sessions-per-user limit. Each of a user's sessions holds a slot in the user's
//! sorted set, scored by when it expires (Redis's clock); its node pushes the expiry forward on
//! the heartbeat, so a dead node's slots free themselves, and a clean leave frees its slot at
//! once. Claiming is one script, so concurrent joins on different nodes never exceed the limit.

use std::collections::BTreeMap;
use std::time::Duration;

use chatfleet_wire::control::Control;
use chatfleet_wire::keys;
use redis::AsyncCommands;

use crate::slots::{self, Held, SlotKeys};
use crate::{Redis, StateError, scripts};

pub use crate::slots::{Claim, RELEASED_FOR};

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
        slots::claim(&self.redis, &user_slots(user), session, max, ttl).await
    }

    /// Keeps a node's sessions, given as (session id, user), alive for another `ttl`, taking
    /// back, within `max` per user, slots lost while the node could not refresh them. Returns
    /// those whose slot is gone for good (ended by an administrator, or the user reached `max`
    /// meanwhile): the node must end them. One script per user, pipelined.
    pub async fn refresh(
        &self,
        sessions: &[(String, String)],
        max: u32,
        ttl: Duration,
    ) -> Result<Vec<String>, StateError> {
        let mut by_user: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (session, user) in sessions {
            by_user.entry(user).or_default().push(session);
        }
        let sets: Vec<Held> = by_user
            .into_iter()
            .map(|(user, ids)| Held {
                keys: user_slots(user),
                max,
                sessions: ids,
            })
            .collect();
        slots::refresh(&self.redis, &sets, ttl).await
    }

    /// Frees `user`'s slots held by processes that are gone (see [`slots::free_gone`]).
    pub async fn free_gone(&self, user: &str) -> Result<usize, StateError> {
        slots::free_gone(&self.redis, &user_slots(user)).await
    }

    /// Frees a session at once (a clean leave, or a join that gave up), for good: a claim for
    /// it that arrives later is refused.
    pub async fn release(&self, user: &str, session: &str) -> Result<(), StateError> {
        slots::release(&self.redis, &user_slots(user), session).await
    }

    /// `user`'s live sessions across the fleet: (session id, expiry in ms of Redis's clock).
    pub async fn list(&self, user: &str) -> Result<Vec<(String, u64)>, StateError> {
        slots::live(&self.redis, &user_slots(user)).await
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

/// A user's session slots.
fn user_slots(user: &str) -> SlotKeys {
    SlotKeys {
        live: keys::user_sessions(user),
        released: keys::user_released(user),
    }
}
