//! Seats on nodes, read and reserved in Redis by one atomic script.
//!
//! A node's free seats are its user limit, minus its users, minus the seats still reserved for
//! rooms placed on it (a room's reservation shrinks as its members arrive there). The operator
//! reads them to decide and then reserves with a check in the same script, so two reconciles,
//! or two operator replicas, can never both take the last seats of a node: the loser gets
//! `Full` with the fresh count and decides again.

use chatnode::wire::RoomId;
use chatnode::wire::keys;
use chatnode::wire::load::{LoadReport, RoomLoad};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

/// KEYS: report, rooms, reserved. ARGV: mode (peek | reserve | force), room, seats.
/// Returns {outcome, free seats not counting this room's own reservation, message rate}; the
/// rate travels as a string because Redis truncates Lua numbers to integers.
const SEATS_SCRIPT: &str = r#"
local report = redis.call('GET', KEYS[1])
if not report then return {'gone', 0, '0'} end
local r = cjson.decode(report)
local present = {}
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do present[flat[i]] = cjson.decode(flat[i + 1]).members end
local held = 0
flat = redis.call('HGETALL', KEYS[3])
for i = 1, #flat, 2 do
  if flat[i] ~= ARGV[2] then
    local left = tonumber(flat[i + 1]) - (present[flat[i]] or 0)
    if left > 0 then held = held + left end
  end
end
local free = r.limits.max_node_users - r.users - held
local rate = tostring(r.msg_rate)
if r.draining then return {'draining', free, rate} end
if ARGV[1] == 'peek' then return {'ok', free, rate} end
if ARGV[1] == 'reserve' and free < tonumber(ARGV[3]) then return {'full', free, rate} end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return {'reserved', free, rate}
"#;

/// What the script found on a node, with the node's message rate when it has a report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeSeats {
    pub seats: Seats,
    pub msg_rate: f64,
}

/// The seat outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seats {
    /// No fresh load report: the node is dead or not started.
    Gone,
    /// The node is shutting down; place nothing on it.
    Draining { free: i64 },
    /// Peeked: this many seats are free.
    Free { free: i64 },
    /// Reserved; `free` seats were free before.
    Reserved { free: i64 },
    /// Not reserved: only `free` seats are left.
    Full { free: i64 },
}

/// Redis access for placement. Cheap to clone.
#[derive(Clone)]
pub struct SeatStore {
    conn: ConnectionManager,
    script: Script,
}

impl SeatStore {
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            conn,
            script: Script::new(SEATS_SCRIPT),
        }
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Free seats on `node`, not counting `room`'s own reservation there.
    pub async fn peek(&self, node: &str, room: &RoomId) -> redis::RedisResult<NodeSeats> {
        self.run(node, "peek", &room.to_string(), 0).await
    }

    /// Free seats on `node`, counting every reservation.
    pub async fn peek_node(&self, node: &str) -> redis::RedisResult<NodeSeats> {
        self.run(node, "peek", "", 0).await
    }

    /// Reserves `seats` for `room` on `node` if they are free.
    pub async fn reserve(
        &self,
        node: &str,
        room: &RoomId,
        seats: u32,
    ) -> redis::RedisResult<NodeSeats> {
        self.run(node, "reserve", &room.to_string(), seats).await
    }

    /// Reserves whatever is free: the overflow fallback, and a room staying where it is.
    pub async fn force(
        &self,
        node: &str,
        room: &RoomId,
        seats: u32,
    ) -> redis::RedisResult<NodeSeats> {
        self.run(node, "force", &room.to_string(), seats).await
    }

    /// Gives `room`'s seats on `node` back.
    pub async fn release(&self, node: &str, room: &RoomId) -> redis::RedisResult<()> {
        self.conn
            .clone()
            .hdel(keys::node_reserved(node), room.to_string())
            .await
    }

    /// The node's load report, if fresh.
    pub async fn report(&self, node: &str) -> redis::RedisResult<Option<LoadReport>> {
        let json: Option<String> = self.conn.clone().get(keys::node_report(node)).await?;
        Ok(json.and_then(|json| serde_json::from_str(&json).ok()))
    }

    /// How `room` is doing on `node`: zero members when it has none there.
    pub async fn room_load(&self, node: &str, room: &RoomId) -> redis::RedisResult<RoomLoad> {
        let json: Option<String> = self
            .conn
            .clone()
            .hget(keys::node_rooms(node), room.to_string())
            .await?;
        Ok(json
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default())
    }

    async fn run(
        &self,
        node: &str,
        mode: &str,
        room: &str,
        seats: u32,
    ) -> redis::RedisResult<NodeSeats> {
        let (outcome, free, rate): (String, i64, String) = self
            .script
            .key(keys::node_report(node))
            .key(keys::node_rooms(node))
            .key(keys::node_reserved(node))
            .arg(mode)
            .arg(room)
            .arg(seats)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let seats = match outcome.as_str() {
            "gone" => Seats::Gone,
            "draining" => Seats::Draining { free },
            "ok" => Seats::Free { free },
            "reserved" => Seats::Reserved { free },
            _ => Seats::Full { free },
        };
        Ok(NodeSeats {
            seats,
            msg_rate: rate.parse().unwrap_or(0.0),
        })
    }
}
