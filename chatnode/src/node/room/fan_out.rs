//! Sending to members: fan-out of messages and notices, removals (a slow consumer included),
//! and everyone at once on a move or a close.

use super::*;

impl RoomTask {
    /// Sends `frame` to every member; `id` is the message id (0 for frames outside the
    /// message sequence). Members that overflow are removed.
    ///
    /// Each member costs a socket write, so a room of 300 spends milliseconds here: every
    /// write draws on tokio's cooperative budget, and a busy room yields its thread to the
    /// other rooms' tasks as the budget runs out instead of holding it for a whole fan-out.
    pub(super) async fn fan_out(&mut self, frame: &Utf8Bytes, id: u64) {
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

    pub(super) fn fan_out_except(&mut self, frame: &Utf8Bytes, except: ConnId) {
        self.fan_out_to(frame, |conn, _| conn != except);
    }

    /// Sends a frame outside the message sequence to the members `to` picks.
    pub(super) fn fan_out_to(&mut self, frame: &Utf8Bytes, to: impl Fn(ConnId, &Joined) -> bool) {
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
    pub(super) fn remove(&mut self, mut conns: Vec<ConnId>) {
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
    pub(super) fn send_away(&mut self, frame: Utf8Bytes) {
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
    pub(super) fn close(&mut self, frame: Utf8Bytes) {
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
