//! The room's share of the record: joins and leaves for the transcript and the webhooks, and
//! read positions, written once per tick (and at once when the node stops).

use super::*;

impl RoomTask {
    /// Records this node's pending reads; in a fleet the live channel brings them back to
    /// every node hosting the room (this one too), standalone they go out at once.
    pub(super) async fn flush_reads(&mut self) {
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
    pub(super) async fn flush_events(&mut self) {
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
    pub(super) fn member_event(&mut self, joined: bool, member: &Member) {
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
}
