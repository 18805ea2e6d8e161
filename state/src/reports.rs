//! Load reports: what each node tells the fleet about itself on every heartbeat, and the load
//! of each room it hosts. Both expire with the report, so a dead node disappears by itself.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chatfleet_wire::RoomId;
use chatfleet_wire::keys;
use chatfleet_wire::load::{LoadReport, RoomLoad, RoomMember};
use redis::AsyncCommands;

use crate::{Redis, StateError};

/// A node's report and the load of each room on it.
pub type NodeLoad = (LoadReport, Vec<(RoomId, RoomLoad)>);

/// One node as the operator keeps rooms placed on it: its report, the load of each of its
/// rooms and the seats reserved for rooms placed there, read together in one round trip (the
/// node's keys share a hash tag). Every placed room's periodic check reads this, shared, rather
/// than Redis, so Redis works per node, not per room.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSnapshot {
    /// None once the report expired: the node is gone.
    pub report: Option<LoadReport>,
    /// Room id → its load on the node.
    pub rooms: HashMap<String, RoomLoad>,
    /// Room id → the seats the operator reserved for it on the node.
    pub reserved: HashMap<String, u32>,
}

impl NodeSnapshot {
    /// How `room` is doing on the node: zero members when it has none there.
    pub fn room_load(&self, room: &RoomId) -> RoomLoad {
        self.rooms
            .get(&room.to_string())
            .copied()
            .unwrap_or_default()
    }

    /// Seats still reserved for rooms placed on the node, as the seats script counts them
    /// (`scripts/seats.lua`): a reservation shrinks as the room's members arrive.
    pub fn held_seats(&self) -> i64 {
        self.reserved
            .iter()
            .map(|(room, &seats)| {
                let present = self.rooms.get(room).map_or(0, |load| load.members);
                (i64::from(seats) - i64::from(present)).max(0)
            })
            .sum()
    }

    /// The node's free seats as the seats script counts them: its user limit, less its
    /// users, less [`Self::held_seats`]. None when the node is gone.
    pub fn free_seats(&self) -> Option<i64> {
        Some(self.report.as_ref()?.free_seats_beside(self.held_seats()))
    }
}

#[derive(Clone)]
pub struct LoadReports {
    redis: Redis,
}

impl LoadReports {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    /// Writes a node's report and the load of each room it hosts, both expiring after `ttl`,
    /// and indexes the node. The node's keys in one transaction, so readers never see a report
    /// without its rooms; the index (in another slot) after.
    pub async fn write(
        &self,
        report: &LoadReport,
        rooms: &[(RoomId, RoomLoad)],
        ttl: Duration,
    ) -> Result<(), StateError> {
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
        let mut conn = self.redis.conn();
        let _: () = pipe.query_async(&mut conn).await?;
        let _: () = conn
            .zadd(keys::node_index(), &report.node, report.ts_ms)
            .await?;
        Ok(())
    }

    /// Updates a node's rosters: `set` for rooms whose members changed, `gone` for rooms it no
    /// longer has members in; `fresh` first drops whatever a previous process of that name left.
    /// The rosters expire after `ttl`, with the report.
    pub async fn write_rosters(
        &self,
        node: &str,
        fresh: bool,
        set: &[(RoomId, Vec<RoomMember>)],
        gone: &[RoomId],
        ttl: Duration,
    ) -> Result<(), StateError> {
        let key = keys::node_members(node);
        let mut pipe = redis::pipe();
        pipe.atomic();
        if fresh {
            pipe.del(&key).ignore();
        }
        if !set.is_empty() {
            let fields: Vec<(String, String)> = set
                .iter()
                .map(|(room, members)| {
                    let json = serde_json::to_string(members).expect("rosters serialize");
                    (room.to_string(), json)
                })
                .collect();
            pipe.hset_multiple(&key, &fields).ignore();
        }
        if !gone.is_empty() {
            let rooms: Vec<String> = gone.iter().map(ToString::to_string).collect();
            pipe.hdel(&key, rooms).ignore();
        }
        pipe.pexpire(&key, ttl.as_millis() as i64).ignore();
        let _: () = pipe.query_async(&mut self.redis.conn()).await?;
        Ok(())
    }

    /// Who is connected to `room` on `node`, as its heartbeat last wrote it.
    pub async fn roster(&self, node: &str, room: &RoomId) -> Result<Vec<RoomMember>, StateError> {
        let json: Option<String> = self
            .redis
            .conn()
            .hget(keys::node_members(node), room.to_string())
            .await?;
        Ok(json
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default())
    }

    /// Who is connected to each room on `node`, as its heartbeat last wrote it.
    pub async fn rosters(
        &self,
        node: &str,
    ) -> Result<BTreeMap<RoomId, Vec<RoomMember>>, StateError> {
        let fields: Vec<(String, String)> =
            self.redis.conn().hgetall(keys::node_members(node)).await?;
        Ok(fields
            .into_iter()
            .filter_map(|(room, json)| {
                Some((room.parse().ok()?, serde_json::from_str(&json).ok()?))
            })
            .collect())
    }

    /// Removes a node's report at its clean exit, so placement forgets it at once.
    pub async fn remove(&self, node: &str) -> Result<(), StateError> {
        let mut conn = self.redis.conn();
        let _: () = conn
            .del(&[
                keys::node_report(node),
                keys::node_rooms(node),
                keys::node_members(node),
            ])
            .await?;
        let _: () = conn.zrem(keys::node_index(), node).await?;
        Ok(())
    }

    /// The node's load report, if fresh.
    pub async fn report(&self, node: &str) -> Result<Option<LoadReport>, StateError> {
        let json: Option<String> = self.redis.conn().get(keys::node_report(node)).await?;
        Ok(json.and_then(|json| serde_json::from_str(&json).ok()))
    }

    /// `node`'s report, room loads and reservations, in one round trip.
    pub async fn snapshot(&self, node: &str) -> Result<NodeSnapshot, StateError> {
        let (report, rooms, reserved): (
            Option<String>,
            HashMap<String, String>,
            HashMap<String, u32>,
        ) = redis::pipe()
            .get(keys::node_report(node))
            .hgetall(keys::node_rooms(node))
            .hgetall(keys::node_reserved(node))
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(NodeSnapshot {
            report: report.and_then(|json| serde_json::from_str(&json).ok()),
            rooms: rooms
                .into_iter()
                .filter_map(|(room, json)| Some((room, serde_json::from_str(&json).ok()?)))
                .collect(),
            reserved,
        })
    }

    /// How `room` is doing on `node`: zero members when it has none there.
    pub async fn room_load(&self, node: &str, room: &RoomId) -> Result<RoomLoad, StateError> {
        let json: Option<String> = self
            .redis
            .conn()
            .hget(keys::node_rooms(node), room.to_string())
            .await?;
        Ok(json
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default())
    }

    /// Every node with a fresh report: one read of the index, then the reports pipelined.
    pub async fn reports(&self) -> Result<Vec<LoadReport>, StateError> {
        let names: Vec<String> = self.redis.conn().zrange(keys::node_index(), 0, -1).await?;
        let found: Vec<Option<String>> = self
            .redis
            .query_each_by_slot(
                &names,
                |name| keys::node_report(name),
                |_| {},
                |pipe, name| {
                    pipe.get(keys::node_report(name));
                },
            )
            .await?;
        Ok(found
            .into_iter()
            .flatten()
            .filter_map(|json| serde_json::from_str(&json).ok())
            .collect())
    }

    /// Every node with a fresh report, with the load of each of its rooms.
    pub async fn fleet(&self) -> Result<Vec<NodeLoad>, StateError> {
        let mut conn = self.redis.conn();
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
}
