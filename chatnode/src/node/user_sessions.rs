//! The per-user session limit: a user holds at most N sessions at once, across every node of
//! the fleet (in Redis) or on this node (standalone).
//!
//! Each session claims a slot with an expiry that its node pushes forward on the heartbeat, so
//! the slots of a node that dies free themselves within the TTL; a clean leave frees its slot
//! at once. The claim is one Redis script, so concurrent joins on different nodes can never
//! exceed the limit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use chatfleet_state::sessions::Claim;
use chatfleet_wire::RoomId;

use super::admission::Refusal;
use crate::store::{Backend, StateError};

/// Attempts at freeing a slot in Redis, a second apart.
const RELEASE_ATTEMPTS: u32 = 10;

/// This node's live sessions and the limit they obey.
pub struct UserSessions {
    max: u32,
    ttl: Duration,
    /// Unique per process, so a restarted node never reuses a dead one's session ids.
    prefix: String,
    next: AtomicU64,
    backend: Backend,
    local: Mutex<Local>,
}

#[derive(Default)]
struct Local {
    /// session id → its user, and the token that ends it
    sessions: HashMap<String, (String, CancellationToken)>,
    /// session id → the room it holds a fleet-wide seat in
    seats: HashMap<String, RoomId>,
    /// user → sessions on this node
    per_user: HashMap<String, u32>,
}

/// A claimed slot; dropping it frees the slot.
pub struct SessionSlot {
    sessions: Arc<UserSessions>,
    id: String,
    user: String,
    ended: CancellationToken,
}

impl SessionSlot {
    /// Cancelled when an admin ends this session.
    pub fn ended(&self) -> &CancellationToken {
        &self.ended
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

impl UserSessions {
    pub fn new(node: &str, max: u32, ttl: Duration, backend: Backend) -> Arc<Self> {
        let boot = uuid::Uuid::new_v4().simple().to_string();
        Arc::new(Self {
            max: max.max(1),
            ttl,
            prefix: format!("{node}/{}", &boot[..8]),
            next: AtomicU64::new(0),
            backend,
            local: Mutex::default(),
        })
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Claims a slot for `user`, or says why not.
    pub async fn claim(self: &Arc<Self>, user: &str) -> Result<SessionSlot, Refusal> {
        let id = format!(
            "{}/{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let ended = CancellationToken::new();
        match &self.backend {
            Backend::Memory(_) => {
                let mut local = self.local.lock().expect("sessions lock");
                if local.per_user.get(user).copied().unwrap_or(0) >= self.max {
                    return Err(Refusal::SessionLimit);
                }
                local.add(&id, user, &ended);
            }
            Backend::Redis(redis) => {
                match redis
                    .state()
                    .sessions
                    .claim(user, &id, self.max, self.ttl)
                    .await
                {
                    Ok(Claim::Taken) => {}
                    Ok(Claim::AtLimit) => return Err(Refusal::SessionLimit),
                    Ok(Claim::Released) => return Err(Refusal::Unavailable),
                    Err(error) => {
                        // The claim may still run when Redis answers again: release it for
                        // good, so the refused join leaves no slot behind.
                        tracing::warn!(%error, "cannot claim a session slot");
                        self.release_in_redis(&id, user, None);
                        return Err(Refusal::Unavailable);
                    }
                }
                self.local
                    .lock()
                    .expect("sessions lock")
                    .add(&id, user, &ended);
            }
        }
        Ok(SessionSlot {
            sessions: self.clone(),
            id,
            user: user.to_owned(),
            ended,
        })
    }

    /// Takes the session's seat in `room`, fleet-wide: a room whose members are on several
    /// nodes still admits at most its `max_members` (`default_max` when it has no settings).
    /// Nothing to take standalone, where the room's task counts its members itself.
    pub async fn claim_room_seat(
        &self,
        slot: &SessionSlot,
        room: &RoomId,
        default_max: u32,
    ) -> Result<(), Refusal> {
        let Backend::Redis(redis) = &self.backend else {
            return Ok(());
        };
        let state = redis.state();
        let max = match state.rooms.settings(room).await {
            Ok(settings) => settings.map_or(default_max, |s| s.max_members),
            Err(_) => return Err(Refusal::Unavailable),
        };
        match state.room_seats.claim(room, &slot.id, max, self.ttl).await {
            Ok(Claim::Taken) => {
                let mut local = self.local.lock().expect("sessions lock");
                local.seats.insert(slot.id.clone(), room.clone());
                Ok(())
            }
            Ok(Claim::AtLimit) => Err(Refusal::RoomFull),
            Ok(Claim::Released) => Err(Refusal::Unavailable),
            Err(error) => {
                tracing::warn!(%error, "cannot claim a room seat");
                // It may still run when Redis answers: recorded, so the session's end frees it.
                let mut local = self.local.lock().expect("sessions lock");
                local.seats.insert(slot.id.clone(), room.clone());
                Err(Refusal::Unavailable)
            }
        }
    }

    /// Ends `user`'s sessions on this node (only `session` when given); returns how many.
    pub fn end(&self, user: &str, session: Option<&str>) -> usize {
        let local = self.local.lock().expect("sessions lock");
        let mut ended = 0;
        for (id, (owner, token)) in &local.sessions {
            if owner == user && session.is_none_or(|s| s == id) {
                token.cancel();
                ended += 1;
            }
        }
        ended
    }

    /// This node's sessions of `user`, by id (standalone: the whole truth).
    pub fn local_sessions(&self, user: &str) -> Vec<String> {
        let local = self.local.lock().expect("sessions lock");
        let mut ids: Vec<String> = local
            .sessions
            .iter()
            .filter(|(_, (owner, _))| owner == user)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Pushes the expiry of every session on this node forward; called by the heartbeat.
    /// Sessions whose slot is gone (ended elsewhere, or expired while this node could not
    /// refresh it) are ended here too, so a user never holds more than the limit.
    pub async fn refresh(&self) -> Result<(), StateError> {
        let Backend::Redis(redis) = &self.backend else {
            return Ok(());
        };
        let sessions: Vec<(String, String)> = {
            let local = self.local.lock().expect("sessions lock");
            local
                .sessions
                .iter()
                .map(|(id, (user, _))| (id.clone(), user.clone()))
                .collect()
        };
        let seats: Vec<(String, RoomId)> = {
            let local = self.local.lock().expect("sessions lock");
            local
                .seats
                .iter()
                .map(|(id, room)| (id.clone(), room.clone()))
                .collect()
        };
        let mut gone = redis.state().sessions.refresh(&sessions, self.ttl).await?;
        gone.extend(redis.state().room_seats.refresh(&seats, self.ttl).await?);
        let local = self.local.lock().expect("sessions lock");
        for id in gone {
            if let Some((user, ended)) = local.sessions.get(&id) {
                tracing::info!(%user, session = %id, "the session's slot is gone; ending it");
                ended.cancel();
            }
        }
        Ok(())
    }

    fn release(&self, id: &str, user: &str) {
        let seat = self.local.lock().expect("sessions lock").remove(id, user);
        self.release_in_redis(id, user, seat);
    }

    /// Frees the slot in Redis, retrying for a while: a slot whose claim may yet run (Redis
    /// stalled) must be released for good, or the user stays locked out until it expires.
    fn release_in_redis(&self, id: &str, user: &str, seat: Option<RoomId>) {
        if let Backend::Redis(redis) = &self.backend {
            let (redis, id, user) = (redis.clone(), id.to_owned(), user.to_owned());
            tokio::spawn(async move {
                for attempt in 1..=RELEASE_ATTEMPTS {
                    let state = redis.state();
                    let released = match &seat {
                        Some(room) => state.room_seats.release(room, &id).await,
                        None => Ok(()),
                    };
                    match released.and(state.sessions.release(&user, &id).await) {
                        Ok(()) => return,
                        Err(error) if attempt == RELEASE_ATTEMPTS => {
                            // The slot still expires by itself within the TTL.
                            tracing::warn!(%error, session = %id, "cannot free a session slot");
                        }
                        Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                    }
                }
            });
        }
    }
}

impl Local {
    fn add(&mut self, id: &str, user: &str, ended: &CancellationToken) {
        self.sessions
            .insert(id.to_owned(), (user.to_owned(), ended.clone()));
        *self.per_user.entry(user.to_owned()).or_default() += 1;
    }

    /// Forgets a session; returns the room it held a seat in.
    fn remove(&mut self, id: &str, user: &str) -> Option<RoomId> {
        let seat = self.seats.remove(id);
        if self.sessions.remove(id).is_some()
            && let Some(count) = self.per_user.get_mut(user)
        {
            *count -= 1;
            if *count == 0 {
                self.per_user.remove(user);
            }
        }
        seat
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.sessions.release(&self.id, &self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn standalone_limits_each_user_and_frees_slots_on_drop() {
        let backend = Backend::Memory(MemoryStore::with_history(10));
        let sessions = UserSessions::new("n", 2, Duration::from_secs(30), backend);
        let a = sessions.claim("ann").await.unwrap();
        let b = sessions.claim("ann").await.unwrap();
        assert!(matches!(
            sessions.claim("ann").await,
            Err(Refusal::SessionLimit)
        ));
        let _other = sessions.claim("bob").await.unwrap();
        drop(a);
        let _c = sessions.claim("ann").await.unwrap();
        assert_eq!(sessions.end("ann", Some(b.id())), 1);
        assert!(b.ended().is_cancelled());
        assert_eq!(sessions.end("ann", None), 2);
    }
}
