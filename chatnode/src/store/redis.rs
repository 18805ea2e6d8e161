//! Room logs, room settings and load reports in Redis, shared by every node of a fleet.
//!
//! Each operation is one round trip; appending is one script, so the message id, the history
//! entry and the live publication happen atomically and in the same order on every node.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use tokio::sync::{mpsc, oneshot};

use super::{LoggedFrame, RoomSettings, StoreError};
use crate::auth::MAX_TOKEN_TTL;
use crate::wire::RoomId;
use crate::wire::control::Control;
use crate::wire::frames::MESSAGE_PREFIX;
use crate::wire::keys::{self, LOG_FIELD, RoomKeys};
use crate::wire::load::{LoadReport, RoomLoad};

/// Assigns the next id, stores the frame in the capped log and publishes it, atomically.
/// KEYS: seq, log, closed. ARGV: prefix, tail, history length, live channel, ttl seconds,
/// floor (the newest id the calling node has delivered). Returns the id, or -1 when the room
/// was closed.
/// KEYS: the user's sessions. ARGV: session id, most sessions, ttl ms. Drops expired sessions,
/// then adds this one if the user is under the limit. 1 when claimed, 0 when at the limit.
const CLAIM_SESSION_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1])
   and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#;

/// KEYS: the user's sessions. ARGV: session id, ttl ms. Pushes the session's expiry forward.
const REFRESH_SESSION_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;

const APPEND_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local id = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[6])
if id == 1 then
  -- The counter was lost (evicted) while the log survived: continue after the log.
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if #last > 0 then
    floor = math.max(floor, tonumber(string.match(last[1][1], '^(%d+)')))
  end
end
if id <= floor then
  -- Redis lost the room's state (restart, eviction): ids never go backwards.
  id = floor + 1
  redis.call('SET', KEYS[1], id)
end
local frame = ARGV[1] .. id .. ARGV[2]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], id .. '-0', 'f', frame)
redis.call('PUBLISH', ARGV[4], frame)
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return id
"#;

/// A request to the live-channel subscriber (see `crate::live`).
#[derive(Debug)]
pub struct LiveSync {
    pub room: RoomId,
    /// Answered once the subscription matches the hub's rooms; `false` when Redis is down.
    pub done: Option<oneshot::Sender<bool>>,
}

/// The fleet's shared state in Redis.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    conn: ConnectionManager,
    append: Script,
    claim_session: Script,
    refresh_session: Script,
    history_len: usize,
    room_ttl: Duration,
    /// The last heartbeat reached Redis.
    heartbeat_ok: AtomicBool,
    /// The live-channel subscription is connected.
    live_ok: AtomicBool,
    live: mpsc::UnboundedSender<LiveSync>,
}

impl RedisStore {
    /// Prepares a store without waiting for Redis: a node starts, and reports not ready, while
    /// Redis is down. Returns the receiver that `crate::live::run` serves.
    pub fn new(
        url: &str,
        history_len: usize,
        room_ttl: Duration,
    ) -> Result<(Self, mpsc::UnboundedReceiver<LiveSync>), redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = client.get_connection_manager_lazy(config)?;
        let (live, live_rx) = mpsc::unbounded_channel();
        let store = Self {
            inner: Arc::new(Inner {
                client,
                conn,
                append: Script::new(APPEND_SCRIPT),
                claim_session: Script::new(CLAIM_SESSION_SCRIPT),
                refresh_session: Script::new(REFRESH_SESSION_SCRIPT),
                history_len: history_len.max(1),
                room_ttl,
                heartbeat_ok: AtomicBool::new(false),
                live_ok: AtomicBool::new(false),
                live,
            }),
        };
        Ok((store, live_rx))
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    pub fn client(&self) -> &redis::Client {
        &self.inner.client
    }

    pub fn is_ready(&self) -> bool {
        self.inner.heartbeat_ok.load(Ordering::Acquire)
            && self.inner.live_ok.load(Ordering::Acquire)
    }

    pub fn set_live_ok(&self, ok: bool) {
        self.inner.live_ok.store(ok, Ordering::Release);
    }

    pub fn set_heartbeat_ok(&self, ok: bool) {
        self.inner.heartbeat_ok.store(ok, Ordering::Release);
    }

    /// Asks the subscriber to make the room's live subscription match the hub, and waits.
    pub async fn sync_live(&self, room: &RoomId) -> bool {
        let (done, rx) = oneshot::channel();
        let sent = self.inner.live.send(LiveSync {
            room: room.clone(),
            done: Some(done),
        });
        sent.is_ok() && rx.await.unwrap_or(false)
    }

    /// Like [`sync_live`](Self::sync_live), without waiting.
    pub fn sync_live_later(&self, room: &RoomId) {
        let _ = self.inner.live.send(LiveSync {
            room: room.clone(),
            done: None,
        });
    }

    pub async fn append(
        &self,
        room: &RoomId,
        tail: &str,
        floor: u64,
    ) -> Result<LoggedFrame, StoreError> {
        let keys = RoomKeys::new(room);
        let id: i64 = self
            .inner
            .append
            .key(&keys.seq)
            .key(&keys.log)
            .key(&keys.closed)
            .arg(MESSAGE_PREFIX)
            .arg(tail)
            .arg(self.inner.history_len)
            .arg(&keys.live)
            .arg(self.inner.room_ttl.as_secs().max(1))
            .arg(floor)
            .invoke_async(&mut self.conn())
            .await?;
        if id < 0 {
            return Err(StoreError::RoomClosed);
        }
        let id = id as u64;
        Ok((id, crate::wire::frames::message_json(id, tail).into()))
    }

    pub async fn latest_id(&self, room: &RoomId) -> Result<u64, StoreError> {
        let id: Option<u64> = self.conn().get(RoomKeys::new(room).seq).await?;
        Ok(id.unwrap_or(0))
    }

    pub async fn read_range(
        &self,
        room: &RoomId,
        after: u64,
        upto: u64,
    ) -> Result<Vec<LoggedFrame>, StoreError> {
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(RoomKeys::new(room).log)
            .arg(keys::log_entry_id(after + 1))
            .arg(keys::log_entry_id(upto))
            .query_async(&mut self.conn())
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|(entry_id, fields)| {
                let id = entry_id.split('-').next()?.parse().ok()?;
                let (_, frame) = fields.into_iter().find(|(f, _)| f == LOG_FIELD)?;
                Some((id, Utf8Bytes::from(frame)))
            })
            .collect())
    }

    pub async fn settings(&self, room: &RoomId) -> Result<Option<RoomSettings>, StoreError> {
        let (max_members, created_ms): (Option<u32>, Option<u64>) = redis::cmd("HMGET")
            .arg(RoomKeys::new(room).meta)
            .arg("max_members")
            .arg("created_ms")
            .query_async(&mut self.conn())
            .await?;
        Ok(max_members.map(|max_members| RoomSettings {
            max_members,
            created_ms: created_ms.unwrap_or(0),
        }))
    }

    pub async fn create_room(
        &self,
        room: &RoomId,
        settings: RoomSettings,
    ) -> Result<RoomSettings, StoreError> {
        let keys = RoomKeys::new(room);
        if self.is_closed(room).await? {
            return Err(StoreError::RoomClosed);
        }
        let _: () = redis::pipe()
            .atomic()
            .hset_nx(&keys.meta, "max_members", settings.max_members)
            .hset_nx(&keys.meta, "created_ms", settings.created_ms)
            .expire(&keys.meta, self.inner.room_ttl.as_secs() as i64)
            .query_async(&mut self.conn())
            .await?;
        Ok(self.settings(room).await?.unwrap_or(settings))
    }

    /// Claims one of `user`'s fleet-wide sessions; false when they hold `max` already.
    pub async fn claim_session(
        &self,
        user: &str,
        session: &str,
        max: u32,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let claimed: i64 = self
            .inner
            .claim_session
            .key(keys::user_sessions(user))
            .arg(session)
            .arg(max)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(claimed == 1)
    }

    /// Keeps this node's sessions alive for another `ttl`.
    pub async fn refresh_sessions(
        &self,
        sessions: &[(String, String)],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        if sessions.is_empty() {
            return Ok(());
        }
        let ttl_ms = ttl.as_millis() as u64;
        // Loads the script once so the pipeline can use EVALSHA.
        let _: () = self
            .inner
            .refresh_session
            .prepare_invoke()
            .load_async(&mut self.conn())
            .await
            .map(|_: String| ())?;
        let mut pipe = redis::pipe();
        for (session, user) in sessions {
            pipe.cmd("EVALSHA")
                .arg(self.inner.refresh_session.get_hash())
                .arg(1)
                .arg(keys::user_sessions(user))
                .arg(session)
                .arg(ttl_ms)
                .ignore();
        }
        let _: () = pipe.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// Frees a session at once (a clean leave).
    pub async fn release_session(&self, user: &str, session: &str) -> Result<(), StoreError> {
        let _: () = self.conn().zrem(keys::user_sessions(user), session).await?;
        Ok(())
    }

    /// `user`'s live sessions across the fleet: (session id, expiry in ms of Redis's clock).
    pub async fn list_sessions(&self, user: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let mut conn = self.conn();
        let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
        let now = seconds * 1000 + micros / 1000;
        let sessions: Vec<(String, u64)> = conn
            .zrangebyscore_withscores(keys::user_sessions(user), format!("({now}"), "+inf")
            .await?;
        Ok(sessions)
    }

    /// Frees `user`'s slots (one session, or all) and tells every node to close them.
    pub async fn end_sessions(&self, user: &str, session: Option<&str>) -> Result<(), StoreError> {
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
        let _: () = pipe.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// Publishes a command for every node.
    pub async fn publish_control(&self, command: &Control) -> Result<(), StoreError> {
        let _: () = self
            .conn()
            .publish(keys::control_channel(), command.to_json())
            .await?;
        Ok(())
    }

    /// Every node with a fresh report, with the load of each of its rooms.
    pub async fn fleet(&self) -> Result<Vec<(LoadReport, Vec<(RoomId, RoomLoad)>)>, StoreError> {
        let mut conn = self.conn();
        let names: Vec<String> = conn.zrange(keys::node_index(), 0, -1).await?;
        let mut nodes = Vec::new();
        for name in names {
            let Some(json): Option<String> = conn.get(keys::node_report(&name)).await? else {
                continue;
            };
            let Ok(report) = serde_json::from_str::<LoadReport>(&json) else {
                continue;
            };
            let fields: Vec<(String, String)> = conn.hgetall(keys::node_rooms(&name)).await?;
            let mut rooms: Vec<(RoomId, RoomLoad)> = fields
                .into_iter()
                .filter_map(|(room, load)| {
                    Some((room.parse().ok()?, serde_json::from_str(&load).ok()?))
                })
                .collect();
            rooms.sort_by(|a, b| a.0.cmp(&b.0));
            nodes.push((report, rooms));
        }
        Ok(nodes)
    }

    /// Lifts a closed room's tombstone: only for a new room deliberately given an old name
    /// (the operator does this when a new ChatRoom reuses a deleted one's name).
    pub async fn reopen_room(&self, room: &RoomId) -> Result<(), StoreError> {
        let _: () = self.conn().del(RoomKeys::new(room).closed).await?;
        Ok(())
    }

    pub async fn is_closed(&self, room: &RoomId) -> Result<bool, StoreError> {
        Ok(self.conn().exists(RoomKeys::new(room).closed).await?)
    }

    /// Leaves a tombstone for as long as a token for the room could live, drops the room's
    /// state and tells every node hosting it.
    pub async fn close_room(&self, room: &RoomId, closed_frame: &str) -> Result<(), StoreError> {
        let keys = RoomKeys::new(room);
        let _: () = redis::pipe()
            .atomic()
            .set_ex(&keys.closed, 1, MAX_TOKEN_TTL.as_secs())
            .del(keys.state().to_vec())
            .publish(&keys.live, closed_frame)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Publishes a frame every member of the room must see, on whichever node they are
    /// (`moved`, system notices).
    pub async fn publish_to_room(&self, room: &RoomId, frame: &str) -> Result<(), StoreError> {
        let _: () = self.conn().publish(RoomKeys::new(room).live, frame).await?;
        Ok(())
    }

    /// Writes the node's load report and the load of each room it hosts, both expiring after
    /// `ttl`, and indexes the node. One transaction, so readers never see a report without
    /// its rooms.
    pub async fn write_report(
        &self,
        report: &LoadReport,
        rooms: &[(RoomId, RoomLoad)],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(report).expect("load reports serialize");
        let ttl_ms = ttl.as_millis() as u64;
        let rooms_key = keys::node_rooms(&report.node);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .set_options(
                keys::node_report(&report.node),
                json,
                redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(ttl_ms)),
            )
            .zadd(keys::node_index(), &report.node, report.ts_ms)
            .del(&rooms_key);
        if !rooms.is_empty() {
            let fields: Vec<(String, String)> = rooms
                .iter()
                .map(|(room, load)| {
                    let load = serde_json::to_string(load).expect("room loads serialize");
                    (room.to_string(), load)
                })
                .collect();
            pipe.hset_multiple(&rooms_key, &fields)
                .pexpire(&rooms_key, ttl_ms as i64);
        }
        let _: () = pipe.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// Removes the node's report at a clean exit, so placement forgets it at once.
    pub async fn remove_report(&self, node: &str) -> Result<(), StoreError> {
        let _: () = redis::pipe()
            .del(&[keys::node_report(node), keys::node_rooms(node)])
            .zrem(keys::node_index(), node)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Extends the life of the shared state of rooms this node hosts.
    pub async fn refresh_rooms(&self, rooms: &[RoomId]) -> Result<(), StoreError> {
        if rooms.is_empty() {
            return Ok(());
        }
        let ttl = self.inner.room_ttl.as_secs() as i64;
        let mut pipe = redis::pipe();
        for room in rooms {
            for key in RoomKeys::new(room).state() {
                pipe.expire(key, ttl).ignore();
            }
        }
        let _: () = pipe.query_async(&mut self.conn()).await?;
        Ok(())
    }
}
