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
