//! The per-user session limit: a user holds at most N sessions at once, across every node of
//! the fleet (in Redis) or on this node (standalone).
//!
//! Each session claims a slot with an expiry that its node pushes forward on the heartbeat, so
//! the slots of a node that dies free themselves within the TTL, or at once when a join finds
//! its limit reached with a dead process's slots among the holders (a session id names its
//! process, and the node's report its boot); a clean leave frees its slot at once. The claim is one Redis script, so concurrent joins on different nodes can never
//! exceed the limit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use chatfleet_state::sessions::Claim;
use chatfleet_wire::RoomId;
use chatfleet_wire::session_id::Holder;

use super::admission::Refusal;
use crate::store::{Backend, FleetStore, StateError};

/// Attempts at freeing a slot in Redis, a second apart.
const RELEASE_ATTEMPTS: u32 = 10;

/// This node's live sessions and the limit they obey.
pub struct UserSessions {
    max: u32,
    ttl: Duration,
    /// How long this node's heartbeats must have reached Redis before it frees the slots of
    /// processes whose reports are missing: a report's lifetime, within which every live node
    /// has reported again after a Redis stall.
    trust_reports_after: Duration,
    /// This process, which every session id names: a restarted node never reuses a dead
    /// one's ids, and others can tell this process's slots from a dead one's.
    holder: Holder,
    next: AtomicU64,
    backend: Backend,
    local: Mutex<Local>,
    /// When each full set (a user's, a room's) was last searched for a gone process's slots.
    searched: GoneSearches,
}

#[derive(Default)]
struct Local {
    /// session id → its user, and the token that ends it
    sessions: HashMap<String, (String, CancellationToken)>,
    /// session id → the room it holds a fleet-wide seat in, and the room's most members
    seats: HashMap<String, (RoomId, u32)>,
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
    pub fn new(
        node: &str,
        max: u32,
        ttl: Duration,
        report_ttl: Duration,
        backend: Backend,
    ) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            ttl,
            trust_reports_after: report_ttl,
            holder: Holder::new_boot(node),
            next: AtomicU64::new(0),
            backend,
            local: Mutex::default(),
            searched: GoneSearches::default(),
        })
    }

    /// This process's boot id, which its load report carries.
    pub fn boot(&self) -> &str {
        &self.holder.boot
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Claims a slot for `user`, or says why not.
    pub async fn claim(self: &Arc<Self>, user: &str) -> Result<SessionSlot, Refusal> {
        let id = self
            .holder
            .session(self.next.fetch_add(1, Ordering::Relaxed));
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
                let sessions = &redis.state().sessions;
                let mut claim = sessions.claim(user, &id, self.max, self.ttl).await;
                // At the limit with slots of a dead process among them: free those, try again.
                if matches!(claim, Ok(Claim::AtLimit))
                    && self.may_search_gone(redis, &format!("user {user}"))
                    && sessions.free_gone(user).await.is_ok_and(|freed| freed > 0)
                {
                    claim = sessions.claim(user, &id, self.max, self.ttl).await;
                }
                match claim {
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
        let seats = &state.room_seats;
        let mut claim = seats.claim(room, &slot.id, max, self.ttl).await;
        // A room full of a dead node's seats: free them and try again, rather than make its
        // members wait out the seats' TTL.
        if matches!(claim, Ok(Claim::AtLimit))
            && self.may_search_gone(redis, &format!("room {room}"))
            && seats.free_gone(room).await.is_ok_and(|freed| freed > 0)
        {
            claim = seats.claim(room, &slot.id, max, self.ttl).await;
        }
        match claim {
            Ok(Claim::Taken) => {
                let mut local = self.local.lock().expect("sessions lock");
                local.seats.insert(slot.id.clone(), (room.clone(), max));
                Ok(())
            }
            Ok(Claim::AtLimit) => Err(Refusal::RoomFull),
            Ok(Claim::Released) => Err(Refusal::Unavailable),
            Err(error) => {
                tracing::warn!(%error, "cannot claim a room seat");
                // It may still run when Redis answers: recorded, so the session's end frees it.
                let mut local = self.local.lock().expect("sessions lock");
                local.seats.insert(slot.id.clone(), (room.clone(), max));
                Err(Refusal::Unavailable)
            }
        }
    }

    /// Whether a full `set` may be searched for a gone process's slots now: only once this
    /// node's heartbeats have reached Redis for a report's lifetime (so the reports say who is
    /// gone), and at most every [`GoneSearches::EVERY`].
    fn may_search_gone(&self, redis: &FleetStore, set: &str) -> bool {
        redis.steady_for(self.trust_reports_after) && self.searched.due(set)
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
    /// Slots lost while this node could not reach Redis are taken back while the limit has
    /// room. Sessions whose slot is gone for good (an administrator ended them, or the user or
    /// room filled up meanwhile) are ended here, so nobody is ever over a limit.
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
        let seats: Vec<(String, RoomId, u32)> = {
            let local = self.local.lock().expect("sessions lock");
            local
                .seats
                .iter()
                .map(|(id, (room, max))| (id.clone(), room.clone(), *max))
                .collect()
        };
        let state = redis.state();
        let mut gone = state
            .sessions
            .refresh(&sessions, self.max, self.ttl)
            .await?;
        gone.extend(state.room_seats.refresh(&seats, self.ttl).await?);
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

/// Searching a full set for a gone process's slots reads the whole set and the reports of its
/// holders' nodes: a storm of joins to a full room does it at most every
/// [`GoneSearches::EVERY`] per set and node, not once per refused join.
#[derive(Default)]
struct GoneSearches(Mutex<HashMap<String, Instant>>);

impl GoneSearches {
    const EVERY: Duration = Duration::from_millis(250);

    /// Whether `set` may be searched now; if so, notes that it is.
    fn due(&self, set: &str) -> bool {
        let mut searched = self.0.lock().expect("searches lock");
        if searched
            .get(set)
            .is_some_and(|at| at.elapsed() < Self::EVERY)
        {
            return false;
        }
        if searched.len() >= 1024 {
            searched.retain(|_, at| at.elapsed() < Self::EVERY);
        }
        searched.insert(set.to_owned(), Instant::now());
        true
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
        let seat = self.seats.remove(id).map(|(room, _)| room);
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
        let ttl = Duration::from_secs(30);
        let sessions = UserSessions::new("n", 2, ttl, ttl, backend);
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
