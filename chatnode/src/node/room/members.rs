//! What a room knows of its members: who is here (the roster, presence, the fleet-wide
//! size of a room spanning nodes), read positions, mutes and removals.

use super::*;

impl RoomTask {
    pub(super) fn book(&mut self) -> &mut MemberBook {
        self.book.get_or_insert_with(Box::default)
    }

    pub(super) fn member_state(&self) -> Option<&MemberState> {
        self.book.as_ref().map(|b| &b.state)
    }

    /// Hands the mutes to the room's handle, where sends check them.
    pub(super) fn share_mutes(&self) {
        let muted = self
            .member_state()
            .filter(|s| !s.muted.is_empty())
            .map(|s| s.muted.iter().map(|(u, t)| (u.clone(), *t)).collect());
        *self.handle.shared.muted.lock().expect("mute lock") = muted;
    }

    pub(super) fn set_member_state(&mut self, state: MemberState) {
        if self.book.is_some() || state != MemberState::default() {
            self.book().state = state;
        }
        self.share_mutes();
    }

    /// Reads the member state again; on failure, tries at the next tick.
    pub(super) async fn reload_member_state(&mut self) {
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

    /// Keeps a read for the next tick's flush (the highest per user).
    pub(super) fn queue_read(&mut self, user: String, id: u64) {
        let pending = self.book().pending_reads.entry(user).or_default();
        *pending = (*pending).max(id);
    }

    /// Raises read positions and tells the members the ones that moved.
    pub(super) fn apply_reads(&mut self, reads: &BTreeMap<String, u64>) {
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
    pub(super) fn moderate(&mut self, moderation: Moderation, frame: Utf8Bytes) {
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

    /// The room has members on other nodes: its size is read back from Redis from now on.
    pub(super) fn spans(&mut self) {
        if self.size_checked.is_none() && self.backend().relays() {
            self.size_checked = Some(Instant::now());
        }
    }

    /// Every SIZE_RESYNC, a room with members elsewhere reads its size from its seats, in a
    /// task of its own so a stalled Redis never holds the room.
    pub(super) fn resync_size(&mut self) {
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
    pub(super) fn presence(&mut self, event: PresenceEvent, member: &Member) -> Utf8Bytes {
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
    pub(super) fn tell_other_nodes(&self, presence: &Utf8Bytes) {
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
    pub(super) fn roster(&self) -> Vec<RoomMember> {
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

    pub(super) fn members_changed(&mut self) {
        self.handle
            .shared
            .roster_changed
            .store(true, Ordering::Release);
        let count = self.members.len() as u32;
        self.handle.shared.members.store(count, Ordering::Relaxed);
        self.empty_since = (count == 0).then(Instant::now);
        self.membership_changes = self.membership_changes.wrapping_add(1);
    }
}
