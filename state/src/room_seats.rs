//! The fleet-wide members-per-room limit. A room's members may be on several nodes (a room
//! that outgrew its home node continues on others); each session in the room holds a seat in
//! the room's sorted set, claimed atomically against `max_members`, refreshed by its node on
//! the heartbeat and freed at its leave, exactly as a user's session slots are.

use std::collections::BTreeMap;
use std::time::Duration;

use chatfleet_wire::RoomId;
use chatfleet_wire::keys::RoomKeys;

use crate::slots::{self, Claim, Held, SlotKeys};
use crate::{Redis, StateError};

/// Rooms' seats. Cheap to clone.
#[derive(Clone)]
pub struct RoomSeats {
    redis: Redis,
}

impl RoomSeats {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    /// Claims a seat in `room` for `session`, if the room has fewer than `max` members.
    pub async fn claim(
        &self,
        room: &RoomId,
        session: &str,
        max: u32,
        ttl: Duration,
    ) -> Result<Claim, StateError> {
        slots::claim(&self.redis, &seat_slots(room), session, max, ttl).await
    }

    /// Keeps a node's seats, given as (session id, room, the room's most members), for
    /// another `ttl`, taking back seats lost while the node could not refresh them while the
    /// room has room; returns the sessions whose seat is gone for good.
    pub async fn refresh(
        &self,
        seats: &[(String, RoomId, u32)],
        ttl: Duration,
    ) -> Result<Vec<String>, StateError> {
        let mut by_room: BTreeMap<&RoomId, (u32, Vec<&str>)> = BTreeMap::new();
        for (session, room, max) in seats {
            let entry = by_room.entry(room).or_insert((*max, Vec::new()));
            entry.1.push(session);
        }
        let sets: Vec<Held> = by_room
            .into_iter()
            .map(|(room, (max, ids))| Held {
                keys: seat_slots(room),
                max,
                sessions: ids,
            })
            .collect();
        slots::refresh(&self.redis, &sets, ttl).await
    }

    /// Frees the room's seats held by processes that are gone (see [`slots::free_gone`]).
    pub async fn free_gone(&self, room: &RoomId) -> Result<usize, StateError> {
        slots::free_gone(&self.redis, &seat_slots(room)).await
    }

    /// Frees a seat at once, for good.
    pub async fn release(&self, room: &RoomId, session: &str) -> Result<(), StateError> {
        slots::release(&self.redis, &seat_slots(room), session).await
    }

    /// Members of the room across the fleet.
    pub async fn count(&self, room: &RoomId) -> Result<usize, StateError> {
        Ok(slots::count(&self.redis, &seat_slots(room)).await? as usize)
    }

    /// The sessions holding the room's seats. A session id begins with its node's name
    /// (`<node>/…`), so this also says which nodes the room's members are on.
    pub async fn holders(&self, room: &RoomId) -> Result<Vec<String>, StateError> {
        let live = slots::live(&self.redis, &seat_slots(room)).await?;
        Ok(live.into_iter().map(|(session, _)| session).collect())
    }
}

fn seat_slots(room: &RoomId) -> SlotKeys {
    let keys = RoomKeys::new(room);
    SlotKeys {
        live: keys.seats,
        released: keys.seats_released,
    }
}
