//! The room's handle: what the node, connections and the live channel hold to talk to a
//! room's task, cheaply cloned; commands go through its bounded queue, in order.

use super::*;

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
    pub(super) fn room_size_is(&self, size: u32, changes: u32) {
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
