//! A room's task: its life (start, the command loop, retirement), joins with their resume,
//! and delivery in id order, filling gaps from the log.

use super::*;

impl RoomTask {
    pub(super) fn id(&self) -> &RoomId {
        &self.handle.shared.id
    }

    pub(super) fn backend(&self) -> &Backend {
        &self.env.backend
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
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
    pub(super) async fn start(&mut self) -> Result<(), StateError> {
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

    /// Leaves the node's rooms; joins still queued get no answer and look the room up again.
    pub(super) fn retire(&mut self, rx: &mut mpsc::Receiver<Command>, refuse: Option<Refusal>) {
        (self.on_retire)(&self.handle);
        rx.close();
        while let Ok(command) = rx.try_recv() {
            if let (Command::Join(join), Some(refusal)) = (command, refuse) {
                let _ = join.1.send(Err(refusal));
            }
        }
    }

    pub(super) async fn handle(&mut self, command: Command) {
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

    pub(super) async fn join(&mut self, request: JoinRequest) -> Result<(), Refusal> {
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

    pub(super) fn advance_to(&mut self, id: u64) {
        self.last_id = id;
        self.handle.shared.last_id.store(id, Ordering::Release);
    }

    /// Delivers message `id`, first reading any earlier messages this room has not seen.
    pub(super) async fn deliver(&mut self, id: u64, frame: Utf8Bytes) {
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
    pub(super) async fn catch_up(&mut self, upto: Option<u64>) -> bool {
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
}
