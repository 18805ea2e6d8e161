//! A room: one task per room that owns its members and fans messages out to them.
//!
//! Everything that changes a room goes through its command queue, so a room needs no locks and
//! rooms never wait on each other. Messages carry ids from the room's log; the task delivers
//! them strictly in id order, filling any gap from the log, so every member sees the same
//! sequence with nothing missing and nothing twice, whichever node the message came through.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use chatfleet_state::members::MemberState;
use chatfleet_wire::RoomId;
use chatfleet_wire::clock::unix_millis;
use chatfleet_wire::frames::{
    ErrorCode, Member, Moderation, ModerationAction, Presence, PresenceEvent, Resume, ServerFrame,
    Welcome, close,
};
use chatfleet_wire::load::{Limits, RoomMember};
use chatfleet_wire::transcript::{MemberEvent, TranscriptEntry};
use chatfleet_wire::webhook::{EventBody, MemberChange, WebhookEvent};

use super::admission::{Refusal, admit_to_room};
use super::outbox::{Outbox, WsFrame};
use crate::fleet::elsewhere::Elsewhere;
use crate::metrics::Metrics;
use crate::store::{Backend, LoggedFrame, StateError};
use crate::webhooks::Webhooks;

/// Identifies one WebSocket session on this node.
pub type ConnId = u64;

/// Commands a room's queue holds before it is considered lagging.
const QUEUE_LEN: usize = 1024;
/// How often a room checks whether it lags or may retire.
const TICK: Duration = Duration::from_secs(1);
/// How long an empty room stays, so a quick reconnect does not rebuild it.
const IDLE_GRACE: Duration = Duration::from_secs(30);
/// How often a room with members on other nodes reads its fleet-wide size back from its seats
/// in Redis: counts learned from presence drift when members leave on two nodes at once, or
/// when a busy room drops a notice.
const SIZE_RESYNC: Duration = Duration::from_secs(5);

/// What every room of a node shares: where its log is, the node's limits and metrics. A room
/// gets this, not the whole node.
pub struct RoomEnv {
    pub backend: Backend,
    pub webhooks: Webhooks,
    pub node_name: String,
    pub limits: Limits,
    /// Deliveries per second one room may cause.
    pub deliveries_per_second: u32,
    pub metrics: Arc<Metrics>,
}

/// Muted users and when (ms since the Unix epoch) each mute ends.
type Mutes = Box<[(String, u64)]>;

/// Called once when a room's task ends, so whoever keeps the node's rooms drops this one.
pub type OnRetire = Arc<dyn Fn(&RoomHandle) + Send + Sync>;

/// A session asking to join.
#[derive(Clone)]
pub struct JoinRequest {
    pub conn: ConnId,
    pub member: Member,
    pub outbox: Outbox,
    /// Resume after this message id.
    pub since: Option<u64>,
    /// The epoch `since` belongs to, when the client knows it.
    pub epoch: Option<String>,
    /// The room incarnation the client's token names, if any: a token of an earlier room of
    /// this name does not join this one.
    pub incarnation: Option<String>,
    /// The room beyond this node (in a fleet): its members elsewhere and its size.
    pub elsewhere: Elsewhere,
}

/// Boxed payloads keep a command at 16 bytes: a room's queue preallocates a block of 32
/// commands, and a node may hold thousands of rooms of three.
enum Command {
    Join(Box<(JoinRequest, oneshot::Sender<Result<(), Refusal>>)>),
    Leave(ConnId),
    Deliver(Box<LoggedFrame>),
    /// The room was closed: send this frame to everyone, then close them.
    Close(Box<Utf8Bytes>),
    /// A frame for every member, outside the message sequence (system notices).
    Broadcast(Box<Utf8Bytes>),
    /// The room moved to another node: send this `moved` frame to everyone, then close them
    /// with 1012 so they reconnect to its endpoint.
    Move(Box<Utf8Bytes>),
    /// A `typing` frame: for every member but that user's own sessions.
    Typing(Box<(String, Utf8Bytes)>),
    /// A member here read up to an id: recorded, and told to the room at the next tick.
    Read(Box<(String, u64)>),
    /// Read positions a node of the fleet published (this one's included). Boxed although a
    /// map is on the heap already: unboxed, its 24 bytes would widen every command.
    #[allow(clippy::box_collection)]
    Reads(Box<BTreeMap<String, u64>>),
    /// A moderator acted on a member: apply it and show its frame to everyone.
    Moderate(Box<(Moderation, Utf8Bytes)>),
    /// Who is here, for the admin page.
    Roster(Box<oneshot::Sender<Vec<RoomMember>>>),
    /// A member joined or left on another node: the room's size now, and the frame.
    PresenceElsewhere(Box<(u32, Utf8Bytes)>),
    /// The room's fleet-wide size, as its seats in Redis counted it, and the membership
    /// changes the room had seen when the read began.
    RoomSize(u32, u32),
    /// Write what waits for the next tick (joins, leaves, reads) now; answer when done. A
    /// stopping node asks, so nothing the room knew dies with it.
    Flush(Box<oneshot::Sender<()>>),
}

/// The room did not answer in time.
#[derive(Debug)]
pub struct Busy;

/// The room's task is gone (it retired); look the room up again.
#[derive(Debug)]
pub struct Gone;

/// A cheap, cloneable way to talk to a room's task.
#[derive(Clone)]
pub struct RoomHandle {
    shared: Arc<Shared>,
}

struct Shared {
    id: RoomId,
    /// Which room of that name this is (`""` for a room without one); set when the task
    /// starts, before any join.
    incarnation: OnceLock<String>,
    tx: mpsc::Sender<Command>,
    /// Set when a live delivery found the queue full; the task then catches up from the log.
    lagged: AtomicBool,
    /// Set when the live channel may have missed member-state changes (reads, moderation);
    /// the task then reads them again.
    stale_members: AtomicBool,
    /// Set when members came or went since the heartbeat last asked for the roster.
    roster_changed: AtomicBool,
    /// Muted users → when their mute ends (ms since the Unix epoch): sends check it. None
    /// while nobody is muted, as in most rooms, to keep an idle room small; a few at most
    /// otherwise, so a slice searched in order.
    muted: Mutex<Option<Mutes>>,
    members: AtomicU32,
    max_members: AtomicU32,
    /// The newest message id the room delivered, for appends to stay above.
    last_id: AtomicU64,
    /// The room's delivery budget; a message costs one cell per member.
    budget: DefaultDirectRateLimiter,
    budget_cells: NonZeroU32,
}

struct Joined {
    member: Member,
    outbox: Outbox,
    /// Messages up to this id were already replayed or seen elsewhere; skip them live.
    seen_upto: u64,
}

/// What a room knows of its members beyond who is here.
#[derive(Default)]
struct MemberBook {
    /// As the room's shared state has it.
    state: MemberState,
    /// Reads by members here not yet recorded: written and told once per tick.
    pending_reads: BTreeMap<String, u64>,
}

struct RoomTask {
    handle: RoomHandle,
    env: Arc<RoomEnv>,
    on_retire: OnRetire,
    members: HashMap<ConnId, Joined>,
    /// The newest message id delivered to members.
    last_id: u64,
    /// The log's epoch: ids compare only within it.
    epoch: String,
    /// Read positions, mutes and removals; None until the room has any, as most idle rooms
    /// never do (8 bytes then instead of about 150).
    book: Option<Box<MemberBook>>,
    /// Joins and leaves (JSON transcript entries) not yet recorded: written once per tick.
    pending_events: Vec<String>,
    /// Sessions in the room across the fleet, as last learned (a join here, a presence from
    /// another node); this node's alone standalone.
    fleet_members: u32,
    /// When `fleet_members` was last read back from Redis; None while the room is not known
    /// to have members on other nodes (most rooms never do).
    size_checked: Option<Instant>,
    /// Joins, leaves and presence from other nodes seen (wrapping): a size read that began
    /// before the latest of them is older than what the room knows, and is dropped.
    membership_changes: u32,
    closed: bool,
    /// The room was closed and its name opened again: a new incarnation, which a new task
    /// serves. This one answers no more joins (they look the room up again) and retires.
    superseded: bool,
    empty_since: Option<Instant>,
}

mod fan_out;
mod handle;
mod members;
mod record;
mod task;
#[cfg(test)]
mod tests;
