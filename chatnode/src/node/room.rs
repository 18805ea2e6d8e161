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

impl RoomHandle {
    /// Starts the room's task.
    pub fn spawn(id: RoomId, env: Arc<RoomEnv>, on_retire: OnRetire) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_LEN);
        let budget_cells = NonZeroU32::new(env.deliveries_per_second).unwrap_or(NonZeroU32::MAX);
        let shared = Arc::new(Shared {
            id,
            incarnation: OnceLock::new(),
            tx,
            lagged: AtomicBool::new(false),
            stale_members: AtomicBool::new(false),
            roster_changed: AtomicBool::new(false),
            muted: Mutex::default(),
            members: AtomicU32::new(0),
            max_members: AtomicU32::new(env.limits.max_room_members),
            last_id: AtomicU64::new(0),
            budget: RateLimiter::direct(Quota::per_second(budget_cells).allow_burst(budget_cells)),
            budget_cells,
        });
        let handle = Self { shared };
        let task = RoomTask {
            handle: handle.clone(),
            env,
            on_retire,
            members: HashMap::new(),
            last_id: 0,
            epoch: String::new(),
            book: None,
            pending_events: Vec::new(),
            fleet_members: 0,
            size_checked: None,
            membership_changes: 0,
            closed: false,
            superseded: false,
            empty_since: Some(Instant::now()),
        };
        tokio::spawn(task.run(rx));
        handle
    }

    pub fn id(&self) -> &RoomId {
        &self.shared.id
    }

    /// The room's incarnation (`""` before the task started, or for a room without one).
    pub fn incarnation(&self) -> &str {
        self.shared.incarnation.get().map_or("", String::as_str)
    }

    /// Sessions in the room on this node.
    pub fn members(&self) -> u32 {
        self.shared.members.load(Ordering::Relaxed)
    }

    /// The newest message id the room delivered.
    pub fn last_id(&self) -> u64 {
        self.shared.last_id.load(Ordering::Acquire)
    }

    pub fn max_members(&self) -> u32 {
        self.shared.max_members.load(Ordering::Relaxed)
    }

    /// Takes one message's deliveries from the room's budget; false when the room is over it.
    pub fn take_budget(&self) -> bool {
        let cost = self.members().clamp(1, self.shared.budget_cells.get());
        let cost = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        matches!(self.shared.budget.check_n(cost), Ok(Ok(())))
    }

    pub fn same(&self, other: &RoomHandle) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    pub async fn join(&self, request: JoinRequest) -> Result<Result<(), Refusal>, Gone> {
        let (reply, answer) = oneshot::channel();
        self.shared
            .tx
            .send(Command::Join(Box::new((request, reply))))
            .await
            .map_err(|_| Gone)?;
        answer.await.map_err(|_| Gone)
    }

    /// Removes a session; waits for queue space, since a lost leave would leak a seat.
    pub async fn leave(&self, conn: ConnId) {
        let _ = self.shared.tx.send(Command::Leave(conn)).await;
    }

    /// Hands a logged message to the room without waiting. A full queue marks the room as
    /// lagging instead, and the room reads what it missed from the log.
    pub fn deliver(&self, message: LoggedFrame) {
        if self
            .shared
            .tx
            .try_send(Command::Deliver(Box::new(message)))
            .is_err()
        {
            self.shared.lagged.store(true, Ordering::Release);
        }
    }

    /// Asks the room to read whatever the log has that it has not delivered.
    pub fn mark_lagged(&self) {
        self.shared.lagged.store(true, Ordering::Release);
    }

    /// The live channel was subscribed anew: whatever it carried meanwhile (messages, reads,
    /// moderation) is read again from Redis.
    pub fn resubscribed(&self) {
        self.shared.stale_members.store(true, Ordering::Release);
        self.mark_lagged();
    }

    /// Until when `user` is muted (ms since the Unix epoch), if a mute holds now.
    pub fn muted_until(&self, user: &str) -> Option<u64> {
        let muted = self.shared.muted.lock().expect("mute lock");
        let (_, until) = muted.as_ref()?.iter().find(|(muted, _)| muted == user)?;
        let until = *until;
        (until > unix_millis()).then_some(until)
    }

    /// Hands a `typing` frame from `user` to the room. Ephemeral: dropped if the queue is
    /// full, never retried.
    pub fn typing(&self, user: String, frame: Utf8Bytes) {
        let _ = self
            .shared
            .tx
            .try_send(Command::Typing(Box::new((user, frame))));
    }

    /// A member on this node read the room up to `up_to`.
    pub async fn read(&self, user: String, up_to: u64) {
        let _ = self
            .shared
            .tx
            .send(Command::Read(Box::new((user, up_to))))
            .await;
    }

    /// Read positions from the live channel, in the order the channel brought them. A full
    /// queue has the room read the member state again at its next tick instead.
    pub fn reads_arrived(&self, reads: BTreeMap<String, u64>) {
        if self
            .shared
            .tx
            .try_send(Command::Reads(Box::new(reads)))
            .is_err()
        {
            self.shared.stale_members.store(true, Ordering::Release);
        }
    }

    /// A moderator's action, in the order the live channel (or the API, standalone) brought
    /// it: a mute then an unmute end unmuted on every node. Never waits, since a wait per
    /// frame would reorder them (each would need a task of its own); a full queue has the room
    /// read the member state (its final form) again at its next tick.
    pub fn moderate(&self, moderation: Moderation, frame: Utf8Bytes) {
        let command = Command::Moderate(Box::new((moderation, frame)));
        if self.shared.tx.try_send(command).is_err() {
            self.shared.stale_members.store(true, Ordering::Release);
        }
    }

    /// The room's size read back from Redis; dropped by a busy room, which reads it again.
    fn room_size_is(&self, size: u32, changes: u32) {
        let _ = self.shared.tx.try_send(Command::RoomSize(size, changes));
    }

    /// A `presence` frame another node published: shown to everyone here.
    pub fn presence_elsewhere(&self, room_size: u32, frame: Utf8Bytes) {
        let command = Command::PresenceElsewhere(Box::new((room_size, frame)));
        if self.shared.tx.try_send(command).is_err() {
            // A busy room drops the notice; its members see the next one's count.
            tracing::debug!(room = %self.id(), "presence from another node dropped");
        }
    }

    /// Whether members came or went since the last call.
    pub fn take_roster_change(&self) -> bool {
        self.shared.roster_changed.swap(false, Ordering::AcqRel)
    }

    /// Who is in the room on this node, one entry per user. Err when the room is too busy to
    /// answer within `limit` (its queue full, or the answer late): a flooded room must not
    /// hold up whoever asks, such as the heartbeat.
    pub async fn roster(&self, limit: Duration) -> Result<Vec<RoomMember>, Busy> {
        let (reply, answer) = oneshot::channel();
        match self.shared.tx.try_send(Command::Roster(Box::new(reply))) {
            Ok(()) => {}
            // A retired room has nobody.
            Err(mpsc::error::TrySendError::Closed(_)) => return Ok(Vec::new()),
            Err(mpsc::error::TrySendError::Full(_)) => return Err(Busy),
        }
        match tokio::time::timeout(limit, answer).await {
            Ok(Ok(roster)) => Ok(roster),
            Ok(Err(_)) => Ok(Vec::new()),
            Err(_) => Err(Busy),
        }
    }

    /// Has the room write its pending joins, leaves and reads now, and waits for it (at
    /// most `limit`). False when the room did not answer in time.
    pub async fn flush(&self, limit: Duration) -> bool {
        let (done, flushed) = oneshot::channel();
        let asked = async {
            // A retired room flushed on its way out.
            if self
                .shared
                .tx
                .send(Command::Flush(Box::new(done)))
                .await
                .is_err()
            {
                return;
            }
            let _ = flushed.await;
        };
        tokio::time::timeout(limit, asked).await.is_ok()
    }

    /// Marks the roster changed again, so the next heartbeat asks for it once more.
    pub fn roster_unsent(&self) {
        self.shared.roster_changed.store(true, Ordering::Release);
    }

    /// The room was closed. In order with what came before it; a full queue has the room
    /// catch up from the log, which finds it closed and closes it the same way.
    pub fn close(&self, closed_frame: Utf8Bytes) {
        if self
            .shared
            .tx
            .try_send(Command::Close(Box::new(closed_frame)))
            .is_err()
        {
            self.mark_lagged();
        }
    }

    /// The room moved to another node. In order; a full queue waits for room in a task of
    /// its own (members must go, late rather than never).
    pub fn relocate(&self, moved_frame: Utf8Bytes) {
        if let Err(mpsc::error::TrySendError::Full(command)) = self
            .shared
            .tx
            .try_send(Command::Move(Box::new(moved_frame)))
        {
            let tx = self.shared.tx.clone();
            tokio::spawn(async move { tx.send(command).await });
        }
    }

    /// A notice from the live channel for every member, in order; dropped by a room whose
    /// queue is full (notices are not part of the record).
    pub fn notice(&self, frame: Utf8Bytes) {
        if self
            .shared
            .tx
            .try_send(Command::Broadcast(Box::new(frame)))
            .is_err()
        {
            tracing::debug!(room = %self.id(), "a notice was dropped by a busy room");
        }
    }

    /// A notice for every member from this node (an administrator's broadcast): waits for
    /// queue space.
    pub async fn broadcast(&self, frame: Utf8Bytes) {
        let _ = self
            .shared
            .tx
            .send(Command::Broadcast(Box::new(frame)))
            .await;
    }
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

impl RoomTask {
    fn id(&self) -> &RoomId {
        &self.handle.shared.id
    }

    fn backend(&self) -> &Backend {
        &self.env.backend
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        // Rare, large steps are boxed: an idle room's task then holds only its loop.
        if let Err(error) = Box::pin(self.start()).await {
            tracing::warn!(room = %self.id(), %error, "room could not start");
            self.retire(&mut rx, Some(Refusal::Unavailable));
            return;
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = rx.recv() => match command {
                    Some(command) => {
                        self.handle(command).await;
                        // A closed room retires at once, so a new room given its name (a
                        // reused ChatRoom name) starts a fresh task instead of this one
                        // refusing joins until its next tick.
                        if (self.closed && self.members.is_empty()) || self.superseded {
                            break;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    if self.handle.shared.stale_members.swap(false, Ordering::AcqRel) {
                        Box::pin(self.reload_member_state()).await;
                    }
                    if self.handle.shared.lagged.swap(false, Ordering::AcqRel) {
                        Box::pin(self.catch_up(None)).await;
                    }
                    if self.book.as_ref().is_some_and(|b| !b.pending_reads.is_empty()) {
                        Box::pin(self.flush_reads()).await;
                    }
                    if !self.pending_events.is_empty() {
                        Box::pin(self.flush_events()).await;
                    }
                    self.resync_size();
                    let idle = self.empty_since.is_some_and(|t| t.elapsed() >= IDLE_GRACE);
                    if (idle || self.closed) && self.members.is_empty() && rx.is_empty() {
                        break;
                    }
                }
            }
        }
        if !self.pending_events.is_empty() {
            Box::pin(self.flush_events()).await;
        }
        self.retire(&mut rx, None);
    }

    /// Learns where the room's log stands and, in a fleet, subscribes to its live channel
    /// first, so no message falls between the two.
    async fn start(&mut self) -> Result<(), StateError> {
        if let Backend::Redis(redis) = self.backend()
            && !redis.sync_live(self.id()).await
        {
            return Err(StateError::LiveUnavailable);
        }
        let backend = self.backend().clone();
        match backend.position(self.id(), "", self.last_id).await {
            Ok((latest, epoch)) => {
                self.advance_to(latest);
                self.epoch = epoch;
            }
            // Joins are refused; nothing of the closed room is written again.
            Err(StateError::RoomClosed) => self.closed = true,
            Err(error) => return Err(error),
        }
        let settings = backend.settings(self.id()).await?;
        let incarnation = match (&settings, &backend) {
            (Some(settings), _) => settings.incarnation.clone(),
            (None, Backend::Memory(memory)) => memory.incarnation(self.id()).unwrap_or_default(),
            (None, Backend::Redis(_)) => String::new(),
        };
        let _ = self.handle.shared.incarnation.set(incarnation);
        let node_limit = self.env.limits.max_room_members;
        let max = match settings {
            Some(settings) => settings.max_members.min(node_limit),
            None => node_limit,
        };
        self.handle.shared.max_members.store(max, Ordering::Relaxed);
        let member_state = backend.member_state(self.id()).await?;
        self.set_member_state(member_state);
        Ok(())
    }

    fn book(&mut self) -> &mut MemberBook {
        self.book.get_or_insert_with(Box::default)
    }

    fn member_state(&self) -> Option<&MemberState> {
        self.book.as_ref().map(|b| &b.state)
    }

    /// Hands the mutes to the room's handle, where sends check them.
    fn share_mutes(&self) {
        let muted = self
            .member_state()
            .filter(|s| !s.muted.is_empty())
            .map(|s| s.muted.iter().map(|(u, t)| (u.clone(), *t)).collect());
        *self.handle.shared.muted.lock().expect("mute lock") = muted;
    }

    fn set_member_state(&mut self, state: MemberState) {
        if self.book.is_some() || state != MemberState::default() {
            self.book().state = state;
        }
        self.share_mutes();
    }

    /// Reads the member state again; on failure, tries at the next tick.
    async fn reload_member_state(&mut self) {
        match self.backend().clone().member_state(self.id()).await {
            Ok(fresh) => {
                if self.book.is_none() && fresh == MemberState::default() {
                    return;
                }
                let MemberState {
                    reads,
                    muted,
                    removed,
                } = fresh;
                let state = &mut self.book().state;
                state.muted = muted;
                state.removed = removed;
                self.share_mutes();
                // Positions only move up: those missed meanwhile are raised and told.
                self.apply_reads(&reads);
            }
            Err(_) => self
                .handle
                .shared
                .stale_members
                .store(true, Ordering::Release),
        }
    }

    /// Records this node's pending reads; in a fleet the live channel brings them back to
    /// every node hosting the room (this one too), standalone they go out at once.
    async fn flush_reads(&mut self) {
        let reads = std::mem::take(&mut self.book().pending_reads);
        let frame = ServerFrame::Read {
            room: self.id().clone(),
            reads: reads.clone(),
        }
        .to_json();
        let backend = self.backend().clone();
        let incarnation = self.handle.incarnation();
        match backend
            .record_reads(self.id(), incarnation, &reads, &frame)
            .await
        {
            Ok(_) if !backend.relays() => self.apply_reads(&reads),
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(room = %self.id(), %error, "cannot record reads; retrying");
                for (user, id) in reads {
                    self.queue_read(user, id);
                }
            }
        }
    }

    /// Records the joins and leaves since the last tick; on failure, tries at the next one.
    async fn flush_events(&mut self) {
        let events = std::mem::take(&mut self.pending_events);
        let backend = self.backend().clone();
        let incarnation = self.handle.incarnation();
        if let Err(error) = backend
            .record_transcript(self.id(), incarnation, &events)
            .await
        {
            tracing::debug!(room = %self.id(), %error, "cannot record joins and leaves; retrying");
            let newer = std::mem::replace(&mut self.pending_events, events);
            self.pending_events.extend(newer);
        }
    }

    /// Notes that `member`'s first session here opened (`joined`) or its last one closed, for
    /// the transcript and the webhooks.
    fn member_event(&mut self, joined: bool, member: &Member) {
        if self.members.values().any(|j| j.member.user == member.user) {
            return;
        }
        let ts = unix_millis();
        let webhooks = &self.env.webhooks;
        if webhooks.is_on() {
            let change = MemberChange {
                user: member.user.clone(),
                name: member.name.clone(),
                role: member.role,
                node: self.env.node_name.clone(),
            };
            let body = if joined {
                EventBody::MemberJoined(change)
            } else {
                EventBody::MemberLeft(change)
            };
            // A user joins a room on a node at most once per millisecond: its first session.
            let identity = [self.env.node_name.as_str(), &member.user, &ts.to_string()];
            let incarnation = self.handle.incarnation();
            let room = self.id().clone();
            let event = WebhookEvent::in_incarnation(room, incarnation, ts, body, &identity);
            webhooks.emit(event);
        }
        if self.closed {
            // The close is the transcript's last entry and ended everyone's presence.
            return;
        }
        let event = MemberEvent {
            user: member.user.clone(),
            name: member.name.clone(),
            role: member.role,
            ts,
            after: self.last_id,
        };
        let entry = if joined {
            TranscriptEntry::Joined(event)
        } else {
            TranscriptEntry::Left(event)
        };
        self.pending_events.push(entry.to_json());
    }

    /// Keeps a read for the next tick's flush (the highest per user).
    fn queue_read(&mut self, user: String, id: u64) {
        let pending = self.book().pending_reads.entry(user).or_default();
        *pending = (*pending).max(id);
    }

    /// Raises read positions and tells the members the ones that moved.
    fn apply_reads(&mut self, reads: &BTreeMap<String, u64>) {
        let moved = self.book().state.merge_reads(reads);
        if moved.is_empty() {
            return;
        }
        let frame = ServerFrame::Read {
            room: self.id().clone(),
            reads: moved,
        };
        self.fan_out_to(&frame.to_json().into(), |_, _| true);
    }

    /// Applies a moderator's action: the room sees its frame, and a removed member's sessions
    /// are told why and closed.
    fn moderate(&mut self, moderation: Moderation, frame: Utf8Bytes) {
        self.book().state.apply(&moderation);
        self.share_mutes();
        self.fan_out_to(&frame, |_, _| true);
        if moderation.action != ModerationAction::Removed {
            return;
        }
        let error = WsFrame::from(Utf8Bytes::from(
            ServerFrame::error(
                ErrorCode::Removed,
                format!("a moderator removed you: {}", moderation.reason),
            )
            .to_json(),
        ));
        let removed: Vec<ConnId> = self
            .members
            .iter()
            .filter(|(_, joined)| joined.member.user == moderation.user)
            .map(|(conn, joined)| {
                joined.outbox.push_replay(error.clone());
                joined.outbox.close(close::POLICY, "removed");
                *conn
            })
            .collect();
        self.remove(removed);
    }

    /// Leaves the node's rooms; joins still queued get no answer and look the room up again.
    fn retire(&mut self, rx: &mut mpsc::Receiver<Command>, refuse: Option<Refusal>) {
        (self.on_retire)(&self.handle);
        rx.close();
        while let Ok(command) = rx.try_recv() {
            if let (Command::Join(join), Some(refusal)) = (command, refuse) {
                let _ = join.1.send(Err(refusal));
            }
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Join(join) => {
                let (request, reply) = *join;
                let result = Box::pin(self.join(request)).await;
                if self.superseded {
                    // Unanswered: the join looks the room up again, in a new task.
                    drop(reply);
                } else {
                    let _ = reply.send(result);
                }
            }
            Command::Leave(conn) => self.remove(vec![conn]),
            Command::Deliver(message) => {
                let (id, frame) = *message;
                self.deliver(id, frame).await;
            }
            Command::Close(frame) => self.close(*frame),
            Command::Broadcast(frame) => self.fan_out(&frame, 0).await,
            Command::Move(frame) => self.send_away(*frame),
            Command::Typing(typing) => {
                let (user, frame) = *typing;
                self.fan_out_to(&frame, |_, joined| joined.member.user != user);
            }
            Command::Read(read) => {
                let (user, up_to) = *read;
                let known = self.member_state().and_then(|s| s.reads.get(&user));
                if known.is_some_and(|&at| at >= up_to) {
                    return;
                }
                self.queue_read(user, up_to);
            }
            Command::Reads(reads) => self.apply_reads(&reads),
            Command::Moderate(moderation) => {
                let (moderation, frame) = *moderation;
                self.moderate(moderation, frame);
            }
            Command::Roster(reply) => {
                let _ = reply.send(self.roster());
            }
            Command::Flush(done) => {
                if self
                    .book
                    .as_ref()
                    .is_some_and(|b| !b.pending_reads.is_empty())
                {
                    Box::pin(self.flush_reads()).await;
                }
                if !self.pending_events.is_empty() {
                    Box::pin(self.flush_events()).await;
                }
                let _ = done.send(());
            }
            Command::PresenceElsewhere(presence) => {
                let (room_size, frame) = *presence;
                self.fleet_members = room_size;
                self.membership_changes = self.membership_changes.wrapping_add(1);
                self.spans();
                self.fan_out(&frame, 0).await;
            }
            Command::RoomSize(size, changes) => {
                if changes != self.membership_changes {
                    return;
                }
                let here = self.members.len() as u32;
                self.fleet_members = size.max(here);
                if size <= here {
                    // Nobody elsewhere now: presence tells when someone joins there.
                    self.size_checked = None;
                }
            }
        }
    }

    async fn join(&mut self, request: JoinRequest) -> Result<(), Refusal> {
        if self.closed {
            // The name may have been opened again since (a new incarnation): not this room.
            let still_closed = self
                .backend()
                .is_closed(self.id())
                .await
                .map_err(|_| Refusal::Unavailable)?;
            if !still_closed {
                self.superseded = true;
            }
            return Err(Refusal::RoomClosed);
        }
        // A token minted for an earlier room of this name (closed, its name used again):
        // that room is closed, and this one is not the token's.
        let room_incarnation = self.handle.incarnation();
        if request
            .incarnation
            .as_deref()
            .is_some_and(|token| !room_incarnation.is_empty() && token != room_incarnation)
        {
            return Err(Refusal::RoomClosed);
        }
        if self
            .member_state()
            .is_some_and(|s| s.removed.contains_key(&request.member.user))
        {
            return Err(Refusal::Removed);
        }
        // In a fleet the session already holds one of the room's fleet-wide seats (its members
        // may be on several nodes); standalone the room counts its own.
        if !self.backend().relays() {
            admit_to_room(self.members.len() as u32, self.handle.max_members())?;
        }

        // A `since` beyond what the room delivered may be a message another node appended
        // that has not reached this one yet: catch up from the log first.
        if request.since.is_some_and(|since| since > self.last_id) {
            Box::pin(self.catch_up(None)).await;
        }
        // A resume from another epoch: the history it counted from is gone. Replay what this
        // epoch retains and say the resume is incomplete. A `since` past the log's newest id
        // can only be an earlier epoch's (Redis restarted empty), whatever epoch it names.
        let other_epoch = request.epoch.as_ref().is_some_and(|e| *e != self.epoch)
            || request.since.is_some_and(|since| since > self.last_id);
        let (resume, replay) = match request.since {
            Some(asked) => {
                let since = if other_epoch { 0 } else { asked };
                let replay = self
                    .backend()
                    .read_range(self.id(), since, self.last_id)
                    .await
                    .map_err(|_| Refusal::Unavailable)?;
                let complete = !other_epoch
                    && (since >= self.last_id
                        || replay.first().is_some_and(|(id, _)| *id == since + 1));
                let resume = Resume {
                    since: asked,
                    replayed: replay.len() as u64,
                    complete,
                };
                (Some(resume), replay)
            }
            None => (None, Vec::new()),
        };

        let mut members: Vec<Member> = self.members.values().map(|j| j.member.clone()).collect();
        members.push(request.member.clone());
        members.extend(request.elsewhere.members.iter().cloned());
        members.sort_by(|a, b| a.user.cmp(&b.user));
        members.dedup_by(|a, b| a.user == b.user);
        let welcome = ServerFrame::Welcome(Welcome {
            room: self.id().clone(),
            user: request.member.clone(),
            members,
            node: self.env.node_name.clone(),
            last_id: self.last_id,
            epoch: self.epoch.clone(),
            resume,
            reads: self
                .member_state()
                .map(|s| s.reads.clone())
                .unwrap_or_default(),
            muted_until: self.handle.muted_until(&request.member.user),
        });
        request.outbox.push_replay(welcome.to_json().into());
        for (_, frame) in replay {
            request.outbox.push_replay(frame.into());
        }

        // Within one epoch the client has seen up to `since` (perhaps beyond what this room
        // delivered yet); across epochs its ids mean nothing here.
        let seen_upto = match request.since {
            Some(since) if !other_epoch => since.max(self.last_id),
            _ => self.last_id,
        };
        let member = request.member.clone();
        self.member_event(true, &member);
        self.members.insert(
            request.conn,
            Joined {
                member: request.member,
                outbox: request.outbox,
                seen_upto,
            },
        );
        self.members_changed();
        self.fleet_members = request.elsewhere.room_size;
        if self.fleet_members > self.members.len() as u32 {
            self.spans();
        }
        let presence = self.presence(PresenceEvent::Joined, &member);
        self.fan_out_except(&presence, request.conn);
        self.tell_other_nodes(&presence);
        Ok(())
    }

    /// The room has members on other nodes: its size is read back from Redis from now on.
    fn spans(&mut self) {
        if self.size_checked.is_none() && self.backend().relays() {
            self.size_checked = Some(Instant::now());
        }
    }

    /// Every SIZE_RESYNC, a room with members elsewhere reads its size from its seats, in a
    /// task of its own so a stalled Redis never holds the room.
    fn resync_size(&mut self) {
        let Some(checked) = self.size_checked else {
            return;
        };
        if checked.elapsed() < SIZE_RESYNC {
            return;
        }
        let Backend::Redis(redis) = self.backend() else {
            return;
        };
        let state = redis.state().clone();
        self.size_checked = Some(Instant::now());
        let handle = self.handle.clone();
        let changes = self.membership_changes;
        tokio::spawn(async move {
            match state.room_seats.count(handle.id()).await {
                Ok(size) => handle.room_size_is(u32::try_from(size).unwrap_or(u32::MAX), changes),
                Err(error) => {
                    tracing::debug!(room = %handle.id(), %error, "cannot read the room's size")
                }
            }
        });
    }

    /// A `presence` frame counting the room's members, fleet-wide in a fleet.
    fn presence(&mut self, event: PresenceEvent, member: &Member) -> Utf8Bytes {
        let here = self.members.len() as u32;
        let relays = self.backend().relays();
        self.fleet_members = if relays {
            self.fleet_members.max(here)
        } else {
            here
        };
        ServerFrame::Presence(Presence {
            event,
            user: member.user.clone(),
            name: member.name.clone(),
            role: member.role,
            members: self.fleet_members as usize,
            node: relays.then(|| self.env.node_name.clone()),
        })
        .to_json()
        .into()
    }

    /// In a fleet, publishes a presence frame for the room's members on other nodes (this
    /// node's were told directly, and ignore its echo).
    fn tell_other_nodes(&self, presence: &Utf8Bytes) {
        if !self.backend().relays() {
            return;
        }
        let (backend, room, frame) = (self.backend().clone(), self.id().clone(), presence.clone());
        tokio::spawn(async move {
            if let Err(error) = backend.publish(&room, frame.as_str()).await {
                tracing::debug!(%room, %error, "cannot tell other nodes of a presence");
            }
        });
    }

    /// One entry per user, with their sessions here, sorted by user.
    fn roster(&self) -> Vec<RoomMember> {
        let mut by_user: BTreeMap<&str, RoomMember> = BTreeMap::new();
        for joined in self.members.values() {
            let member = &joined.member;
            by_user
                .entry(&member.user)
                .or_insert_with(|| RoomMember {
                    user: member.user.clone(),
                    name: member.name.clone(),
                    role: member.role,
                    sessions: 0,
                })
                .sessions += 1;
        }
        by_user.into_values().collect()
    }

    fn members_changed(&mut self) {
        self.handle
            .shared
            .roster_changed
            .store(true, Ordering::Release);
        let count = self.members.len() as u32;
        self.handle.shared.members.store(count, Ordering::Relaxed);
        self.empty_since = (count == 0).then(Instant::now);
        self.membership_changes = self.membership_changes.wrapping_add(1);
    }

    fn advance_to(&mut self, id: u64) {
        self.last_id = id;
        self.handle.shared.last_id.store(id, Ordering::Release);
    }

    /// Delivers message `id`, first reading any earlier messages this room has not seen.
    async fn deliver(&mut self, id: u64, frame: Utf8Bytes) {
        if id <= self.last_id {
            return; // already delivered, through the other path
        }
        if id > self.last_id + 1 && !Box::pin(self.catch_up(Some(id - 1))).await {
            // The log is unreachable: keep order, let the tick retry from the log.
            self.handle.mark_lagged();
            return;
        }
        self.advance_to(id);
        self.fan_out(&frame, id).await;
    }

    /// Delivers what the log holds after `last_id` (up to `upto`, or its end). False when the
    /// log could not be read.
    async fn catch_up(&mut self, upto: Option<u64>) -> bool {
        let backend = self.backend().clone();
        let upto = match upto {
            Some(upto) => upto,
            None => match backend
                .position(self.id(), self.handle.incarnation(), self.last_id)
                .await
            {
                Ok((latest, epoch)) => {
                    if epoch != self.epoch {
                        tracing::warn!(room = %self.id(), old = %self.epoch, new = %epoch, "the room's log began a new epoch: its history was lost");
                        self.epoch = epoch;
                    }
                    latest
                }
                Err(StateError::RoomClosed) => {
                    // The `closed` frame went by while the room lagged: close it now.
                    let closed = ServerFrame::Closed {
                        room: self.id().clone(),
                        reason: "the room was closed".into(),
                    };
                    self.close(closed.to_json().into());
                    return true;
                }
                Err(_) => {
                    self.handle.mark_lagged();
                    return false;
                }
            },
        };
        if upto <= self.last_id {
            return true;
        }
        match backend.read_range(self.id(), self.last_id, upto).await {
            Ok(missed) => {
                if missed.first().is_some_and(|(id, _)| *id > self.last_id + 1) {
                    tracing::warn!(room = %self.id(), from = self.last_id + 1, "messages left the history before delivery");
                }
                for (id, frame) in missed {
                    self.fan_out(&frame, id).await;
                }
                // Ids beyond the retained history cannot be delivered; move past them.
                self.advance_to(upto);
                true
            }
            Err(_) => false,
        }
    }

    /// Sends `frame` to every member; `id` is the message id (0 for frames outside the
    /// message sequence). Members that overflow are removed.
    ///
    /// Each member costs a socket write, so a room of 300 spends milliseconds here: every
    /// write draws on tokio's cooperative budget, and a busy room yields its thread to the
    /// other rooms' tasks as the budget runs out instead of holding it for a whole fan-out.
    async fn fan_out(&mut self, frame: &Utf8Bytes, id: u64) {
        let started = Instant::now();
        // Encoded once; every member's socket gets the same bytes.
        let frame = WsFrame::from(frame.clone());
        let mut overflowed = Vec::new();
        let mut sent = 0u64;
        for (conn, joined) in &self.members {
            if id != 0 && id <= joined.seen_upto {
                continue;
            }
            match joined.outbox.push(frame.clone()) {
                Ok(()) => sent += 1,
                Err(_) => overflowed.push(*conn),
            }
            tokio::task::consume_budget().await;
        }
        let metrics = &self.env.metrics;
        metrics.messages_out.inc_by(sent);
        metrics
            .fanout_seconds
            .observe(started.elapsed().as_secs_f64());
        if !overflowed.is_empty() {
            metrics.slow_consumers.inc_by(overflowed.len() as u64);
            self.remove(overflowed);
        }
    }

    fn fan_out_except(&mut self, frame: &Utf8Bytes, except: ConnId) {
        self.fan_out_to(frame, |conn, _| conn != except);
    }

    /// Sends a frame outside the message sequence to the members `to` picks.
    fn fan_out_to(&mut self, frame: &Utf8Bytes, to: impl Fn(ConnId, &Joined) -> bool) {
        let frame = WsFrame::from(frame.clone());
        let mut overflowed = Vec::new();
        for (conn, joined) in &self.members {
            if to(*conn, joined) && joined.outbox.push(frame.clone()).is_err() {
                overflowed.push(*conn);
            }
        }
        if !overflowed.is_empty() {
            self.env
                .metrics
                .slow_consumers
                .inc_by(overflowed.len() as u64);
            self.remove(overflowed);
        }
    }

    /// Removes members and tells the others, which may overflow further members in turn.
    fn remove(&mut self, mut conns: Vec<ConnId>) {
        while let Some(conn) = conns.pop() {
            let Some(left) = self.members.remove(&conn) else {
                continue;
            };
            self.member_event(false, &left.member);
            self.members_changed();
            self.fleet_members = self.fleet_members.saturating_sub(1);
            let presence = self.presence(PresenceEvent::Left, &left.member);
            self.tell_other_nodes(&presence);
            let presence = WsFrame::from(presence);
            for (other, joined) in &self.members {
                if joined.outbox.push(presence.clone()).is_err() && !conns.contains(other) {
                    conns.push(*other);
                }
            }
        }
    }

    /// Everyone reconnects elsewhere; the room itself stays open (it lives on another node).
    /// The transcript shows them leaving here (and joining where they reconnect).
    fn send_away(&mut self, frame: Utf8Bytes) {
        let frame = WsFrame::from(frame);
        let conns: Vec<ConnId> = self.members.keys().copied().collect();
        for conn in conns {
            if let Some(joined) = self.members.remove(&conn) {
                joined.outbox.push_replay(frame.clone());
                joined.outbox.close(close::SERVICE_RESTART, "moved");
                self.member_event(false, &joined.member);
            }
        }
        self.members_changed();
    }

    /// Everyone present is told and closed; each leaves (a `member.left` webhook per user).
    /// Their leaves are not transcript entries: the close, the transcript's last entry, ends
    /// everyone's presence. Entries from before it still go out with the room's last flush.
    fn close(&mut self, frame: Utf8Bytes) {
        self.closed = true;
        let frame = WsFrame::from(frame);
        let conns: Vec<ConnId> = self.members.keys().copied().collect();
        for conn in conns {
            if let Some(joined) = self.members.remove(&conn) {
                joined.outbox.push_replay(frame.clone());
                joined.outbox.close(close::NORMAL, "room closed");
                self.member_event(false, &joined.member);
            }
        }
        self.members_changed();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chatfleet_wire::frames::{MessageContent, Role, message_tail};

    use super::*;
    use crate::node::outbox::{Outbound, OutboxReceiver, outbox};
    use crate::store::MemoryStore;

    fn room_id() -> RoomId {
        "support/case-1".parse().unwrap()
    }

    /// A room on a standalone node whose log holds at most `history_len` messages.
    fn room(history_len: usize) -> (RoomHandle, Backend) {
        let backend = Backend::Memory(MemoryStore::with_history(history_len));
        (room_on(&backend), backend)
    }

    /// A room task over `backend`, as another node or a restarted one would start it.
    fn room_on(backend: &Backend) -> RoomHandle {
        let env = Arc::new(RoomEnv {
            backend: backend.clone(),
            webhooks: Webhooks::off(),
            node_name: "test".into(),
            limits: Limits::default(),
            deliveries_per_second: 10_000,
            metrics: Arc::new(Metrics::new()),
        });
        RoomHandle::spawn(room_id(), env, Arc::new(|_: &RoomHandle| {}))
    }

    /// Appends to the log without telling the room, as another node's message would be.
    async fn append(backend: &Backend, body: &str) -> LoggedFrame {
        let content = MessageContent {
            room: room_id(),
            from: "ann".into(),
            name: "Ann".into(),
            role: Role::Customer,
            body: body.into(),
            ts: 1,
            client_id: None,
        };
        let appended = backend
            .append(&room_id(), "", &message_tail(&content), 0, None)
            .await
            .unwrap();
        (appended.id, appended.frame.unwrap())
    }

    /// A join request and the queue it fills.
    fn request(conn: ConnId, since: Option<u64>) -> JoinRequest {
        let (out, _) = outbox(1 << 20);
        let member = Member {
            user: format!("user-{conn}"),
            name: "U".into(),
            role: Role::Agent,
        };
        JoinRequest {
            conn,
            member,
            outbox: out,
            since,
            epoch: None,
            incarnation: None,
            elsewhere: Elsewhere::default(),
        }
    }

    async fn join_with(room: &RoomHandle, request: JoinRequest) -> OutboxReceiver {
        let (out, queue) = outbox(1 << 20);
        let request = JoinRequest {
            outbox: out,
            ..request
        };
        room.join(request).await.unwrap().unwrap();
        queue
    }

    async fn join(room: &RoomHandle, conn: ConnId, since: Option<u64>) -> OutboxReceiver {
        join_with(room, request(conn, since)).await
    }

    async fn next(queue: &mut OutboxReceiver) -> ServerFrame {
        let item = tokio::time::timeout(Duration::from_secs(5), queue.recv())
            .await
            .expect("a frame in time");
        match item {
            Outbound::Frame(frame) => serde_json::from_str(frame.payload_text()).unwrap(),
            Outbound::Close(code, reason) => panic!("closed with {code} {reason}"),
        }
    }

    /// The ids of the next `n` message frames, skipping presence.
    async fn message_ids(queue: &mut OutboxReceiver, n: usize) -> Vec<u64> {
        let mut ids = Vec::new();
        while ids.len() < n {
            match next(queue).await {
                ServerFrame::Message(message) => ids.push(message.id),
                ServerFrame::Presence(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        ids
    }

    #[tokio::test]
    async fn delivers_in_id_order_reading_a_gap_from_the_log() {
        let (room, backend) = room(100);
        let mut queue = join(&room, 1, None).await;
        assert!(matches!(next(&mut queue).await, ServerFrame::Welcome(_)));
        let _first = append(&backend, "one").await;
        let _second = append(&backend, "two").await;
        let third = append(&backend, "three").await;
        // Only the third arrives live: the first two come from the log, before it.
        room.deliver(third);
        assert_eq!(message_ids(&mut queue, 3).await, [1, 2, 3]);
        assert_eq!(room.last_id(), 3);
    }

    #[tokio::test]
    async fn a_message_that_arrives_twice_is_delivered_once() {
        let (room, backend) = room(100);
        let mut queue = join(&room, 1, None).await;
        assert!(matches!(next(&mut queue).await, ServerFrame::Welcome(_)));
        let first = append(&backend, "one").await;
        let second = append(&backend, "two").await;
        // Once straight from the sender, once more over the live channel.
        room.deliver(first.clone());
        room.deliver(first);
        room.deliver(second.clone());
        room.deliver(second);
        assert_eq!(message_ids(&mut queue, 2).await, [1, 2]);
        let late = append(&backend, "three").await;
        room.deliver(late);
        assert_eq!(
            message_ids(&mut queue, 1).await,
            [3],
            "no duplicate in between"
        );
    }

    #[tokio::test]
    async fn a_resume_replays_what_was_missed_and_says_whether_it_is_complete() {
        let (room, backend) = room(3);
        // The room learns where the log stands when it starts: at the first join.
        let mut first = join(&room, 1, None).await;
        assert!(matches!(next(&mut first).await, ServerFrame::Welcome(_)));
        for body in ["a", "b", "c", "d", "e"] {
            let logged = append(&backend, body).await;
            room.deliver(logged);
        }
        assert_eq!(message_ids(&mut first, 5).await, [1, 2, 3, 4, 5]);

        let mut back = join(&room, 2, Some(3)).await;
        let ServerFrame::Welcome(welcome) = next(&mut back).await else {
            panic!("a welcome first");
        };
        let resume = welcome.resume.unwrap();
        assert_eq!(
            (welcome.last_id, resume.replayed, resume.complete),
            (5, 2, true)
        );
        assert_eq!(message_ids(&mut back, 2).await, [4, 5]);

        // Only the last three are retained: a resume from 0 misses 1 and 2, and says so.
        let mut late = join(&room, 3, Some(0)).await;
        let ServerFrame::Welcome(welcome) = next(&mut late).await else {
            panic!("a welcome first");
        };
        let resume = welcome.resume.unwrap();
        assert_eq!((resume.replayed, resume.complete), (3, false));
        assert_eq!(message_ids(&mut late, 3).await, [3, 4, 5]);
    }

    #[tokio::test]
    async fn a_resume_from_another_epoch_replays_this_one_and_is_incomplete() {
        let (room, backend) = room(100);
        let mut first = join(&room, 1, None).await;
        let ServerFrame::Welcome(welcome) = next(&mut first).await else {
            panic!("a welcome first");
        };
        for body in ["a", "b"] {
            let logged = append(&backend, body).await;
            room.deliver(logged);
        }
        assert_eq!(message_ids(&mut first, 2).await, [1, 2]);

        let same = JoinRequest {
            epoch: Some(welcome.epoch.clone()),
            ..request(2, Some(1))
        };
        let mut back = join_with(&room, same).await;
        let ServerFrame::Welcome(again) = next(&mut back).await else {
            panic!("a welcome first");
        };
        let resume = again.resume.unwrap();
        assert_eq!((resume.replayed, resume.complete), (1, true));
        assert_eq!(message_ids(&mut back, 1).await, [2]);

        // A client that counted ids in a lost epoch, even far beyond this one's.
        let stale = JoinRequest {
            epoch: Some("lost".into()),
            ..request(3, Some(7))
        };
        let mut stale = join_with(&room, stale).await;
        let ServerFrame::Welcome(welcome) = next(&mut stale).await else {
            panic!("a welcome first");
        };
        let resume = welcome.resume.unwrap();
        assert_eq!(
            (resume.since, resume.replayed, resume.complete),
            (7, 2, false)
        );
        assert_eq!(message_ids(&mut stale, 2).await, [1, 2]);
        let third = append(&backend, "c").await;
        room.deliver(third);
        assert_eq!(
            message_ids(&mut stale, 1).await,
            [3],
            "live messages follow"
        );
    }

    fn member(user: &str) -> Member {
        Member {
            user: user.into(),
            name: user.to_uppercase(),
            role: Role::Agent,
        }
    }

    /// A join request from `user`.
    fn request_as(conn: ConnId, user: &str) -> JoinRequest {
        JoinRequest {
            member: member(user),
            ..request(conn, None)
        }
    }

    async fn join_as(room: &RoomHandle, conn: ConnId, user: &str) -> OutboxReceiver {
        let mut queue = join_with(room, request_as(conn, user)).await;
        assert!(matches!(next(&mut queue).await, ServerFrame::Welcome(_)));
        queue
    }

    /// The next frame that is not presence.
    async fn next_notice(queue: &mut OutboxReceiver) -> ServerFrame {
        loop {
            match next(queue).await {
                ServerFrame::Presence(_) => {}
                other => return other,
            }
        }
    }

    #[tokio::test]
    async fn typing_reaches_the_others_but_not_the_typists_own_sessions() {
        let (room, _) = room(100);
        let mut dana_phone = join_as(&room, 1, "dana").await;
        let mut dana_laptop = join_as(&room, 2, "dana").await;
        let mut ann = join_as(&room, 3, "ann").await;
        let typing = ServerFrame::Typing {
            room: room_id(),
            user: "dana".into(),
            name: "DANA".into(),
        };
        room.typing("dana".into(), typing.to_json().into());
        assert_eq!(next_notice(&mut ann).await, typing);
        // A frame after it shows dana's sessions got nothing before it.
        let closed = ServerFrame::Closed {
            room: room_id(),
            reason: "done".into(),
        };
        room.close(closed.to_json().into());
        assert_eq!(next_notice(&mut dana_phone).await, closed);
        assert_eq!(next_notice(&mut dana_laptop).await, closed);
    }

    #[tokio::test]
    async fn reads_are_told_once_per_tick_never_move_back_and_greet_newcomers() {
        let (room, backend) = room(100);
        let mut ann = join_as(&room, 1, "ann").await;
        for body in ["a", "b", "c"] {
            room.deliver(append(&backend, body).await);
        }
        assert_eq!(message_ids(&mut ann, 3).await, [1, 2, 3]);
        room.read("dana".into(), 1).await;
        room.read("dana".into(), 3).await;
        room.read("ann".into(), 2).await;
        room.read("dana".into(), 2).await;
        let ServerFrame::Read { reads, .. } = next_notice(&mut ann).await else {
            panic!("a read frame");
        };
        assert_eq!(reads, [("ann".into(), 2), ("dana".into(), 3)].into());
        // Already known: nothing to tell.
        room.read("dana".into(), 3).await;
        let mut bob = join_with(&room, request(9, None)).await;
        let ServerFrame::Welcome(welcome) = next(&mut bob).await else {
            panic!("a welcome first");
        };
        assert_eq!(
            welcome.reads,
            [("ann".into(), 2), ("dana".into(), 3)].into()
        );
        let closed = ServerFrame::Closed {
            room: room_id(),
            reason: "done".into(),
        };
        tokio::time::sleep(TICK * 2).await;
        room.close(closed.to_json().into());
        assert_eq!(next_notice(&mut ann).await, closed, "no second read frame");
    }

    #[tokio::test]
    async fn a_removed_member_is_told_closed_and_refused_again_and_a_mute_holds() {
        let (room, backend) = room(100);
        let mut dana = join_as(&room, 1, "dana").await;
        let mut ann = join_as(&room, 2, "ann").await;
        let muted = Moderation {
            room: room_id(),
            user: "ann".into(),
            action: ModerationAction::Muted,
            reason: "cool down".into(),
            until: Some(unix_millis() + 60_000),
            ts: unix_millis(),
        };
        backend.moderate(&room_id(), &muted, "").await.unwrap();
        let frame = ServerFrame::Moderation(muted.clone());
        room.moderate(muted.clone(), frame.to_json().into());
        assert_eq!(next_notice(&mut dana).await, frame);
        assert_eq!(
            next_notice(&mut ann).await,
            frame,
            "the muted member sees it too"
        );
        assert!(room.muted_until("ann").is_some());
        assert_eq!(room.muted_until("dana"), None);

        let removed = Moderation {
            user: "dana".into(),
            action: ModerationAction::Removed,
            reason: "abuse".into(),
            until: None,
            ..muted
        };
        backend.moderate(&room_id(), &removed, "").await.unwrap();
        let frame = ServerFrame::Moderation(removed.clone());
        room.moderate(removed, frame.to_json().into());
        assert_eq!(next_notice(&mut ann).await, frame);
        let ServerFrame::Presence(left) = next(&mut ann).await else {
            panic!("dana left");
        };
        assert_eq!(
            (left.event, left.user.as_str()),
            (PresenceEvent::Left, "dana")
        );
        assert!(matches!(next(&mut dana).await, ServerFrame::Moderation(_)));
        let ServerFrame::Error(error) = next(&mut dana).await else {
            panic!("an error frame");
        };
        assert_eq!(error.code, ErrorCode::Removed);
        assert!(matches!(
            tokio::time::timeout(Duration::from_secs(5), dana.recv()).await,
            Ok(Outbound::Close(close::POLICY, _))
        ));
        let again = room.join(request_as(3, "dana")).await.unwrap();
        assert_eq!(again.err(), Some(Refusal::Removed));

        // A room task started later (another node, a restart) knows both from the store.
        let later = room_on(&backend);
        let mut ann_again = join_with(&later, request_as(4, "ann")).await;
        let ServerFrame::Welcome(welcome) = next(&mut ann_again).await else {
            panic!("a welcome first");
        };
        assert_eq!(welcome.muted_until, muted.until);
        let dana_later = later.join(request_as(5, "dana")).await.unwrap();
        assert_eq!(dana_later.err(), Some(Refusal::Removed));
    }

    #[tokio::test]
    async fn after_a_resubscription_the_room_tells_reads_it_missed() {
        let (room, backend) = room(100);
        let mut ann = join_as(&room, 1, "ann").await;
        room.deliver(append(&backend, "a").await);
        assert_eq!(message_ids(&mut ann, 1).await, [1]);
        // Another node recorded bob's read while this room's live channel was down.
        let missed: BTreeMap<String, u64> = [("bob".into(), 1)].into();
        backend
            .record_reads(&room_id(), "", &missed, "")
            .await
            .unwrap();
        room.resubscribed();
        let ServerFrame::Read { reads, .. } = next_notice(&mut ann).await else {
            panic!("a read frame");
        };
        assert_eq!(reads, missed);
    }
}
