//! The conversation record at its edges, on real nodes: moderation applies in the order it was
//! given on every node, a close tells the webhooks who was present and ends the transcript, a
//! resume from beyond the room's end is told incomplete, and a send retried after
//! `unconfirmed` has its `message` event.

use std::time::Duration;

use chatfleet_wire::frames::{ErrorCode, Moderation, ModerationAction, ServerFrame};
use chatfleet_wire::transcript::TranscriptEntry;
use chatfleet_wire::webhook::EventBody;
use serde_json::json;

use crate::support::{
    API_KEY, Client, Node, Redis, WebhookReceiver, assert_error, eventually, in_process,
    token_for_incarnation,
};

const HOOK_SECRET: &str = "test-webhook-secret";

fn moderation(room: &str, user: &str, action: ModerationAction) -> Moderation {
    Moderation {
        room: room.parse().unwrap(),
        user: user.into(),
        action,
        reason: "test".into(),
        until: (action == ModerationAction::Muted).then_some(u64::MAX / 2),
        ts: 1,
    }
}

/// A mute and an unmute published back to back reach the node in one read of its live
/// channel; handled each in a task of its own, the newest task ran first and the member
/// ended muted. In the room's queue they apply in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mute_then_an_unmute_ends_unmuted_on_every_node() {
    let redis = Redis::start().await;
    let node = Node::in_fleet(&redis, "chat-0", &[]).await;
    let room = "support/case-order";
    let (mut ann, _) = Client::join(&node.ws_as(room, "ann", "")).await;
    let state = redis.state();
    // Redis learns the script first, so each pair below goes out as two EVALSHAs in order.
    let id = room.parse().unwrap();
    let warm = moderation(room, "nobody", ModerationAction::Unmuted);
    let warm_frame = ServerFrame::Moderation(warm.clone()).to_json();
    state.rooms.moderate(&id, &warm, &warm_frame).await.unwrap();
    let _ = ann.recv_skip_presence().await;
    for round in 0..10 {
        let mute = moderation(room, "ann", ModerationAction::Muted);
        let unmute = moderation(room, "ann", ModerationAction::Unmuted);
        let (mute_frame, unmute_frame) = (
            ServerFrame::Moderation(mute.clone()).to_json(),
            ServerFrame::Moderation(unmute.clone()).to_json(),
        );
        // One connection, both at once: pipelined, published in this order.
        let (muted, unmuted) = tokio::join!(
            state.rooms.moderate(&id, &mute, &mute_frame),
            state.rooms.moderate(&id, &unmute, &unmute_frame)
        );
        muted.unwrap();
        unmuted.unwrap();
        // Ann sees both, in order, then may speak.
        for want in [ModerationAction::Muted, ModerationAction::Unmuted] {
            match ann.recv_skip_presence().await {
                ServerFrame::Moderation(m) => assert_eq!(m.action, want, "round {round}"),
                other => panic!("round {round}: a moderation frame, got {other:?}"),
            }
        }
        let body = format!("after round {round}");
        ann.say(&body).await;
        match ann.recv_skip_presence().await {
            ServerFrame::Message(m) => assert_eq!(m.content.body, body),
            other => panic!("round {round}: ann was left muted: {other:?}"),
        }
    }
}

/// Closing a room with members present: a `member.left` for each, the close as the
/// transcript's last entry, and a mute afterwards refused as `room_closed` (409).
#[tokio::test]
async fn a_close_tells_who_was_present_and_ends_the_transcript() {
    let receiver = WebhookReceiver::start(HOOK_SECRET).await;
    let url = receiver.url();
    let node = in_process(&[
        "--webhook-url",
        &url,
        "--webhook-allow-private-networks",
        "--webhook-secret",
        HOOK_SECRET,
        "--webhook-retry-ms",
        "100",
    ])
    .await;
    let room = "support/case-present";
    let (status, body) = node
        .call(
            API_KEY,
            reqwest::Method::POST,
            "/v1/rooms",
            Some(json!({"namespace": "support", "name": "case-present"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (mut ann, _) = Client::join(&node.ws_as(room, "ann", "")).await;
    let (dana, _) = Client::join(&node.ws_as(room, "dana", "")).await;
    // A second session of ann's: one user, one leave.
    let (ann_again, _) = Client::join(&node.ws_as(room, "ann", "")).await;
    ann.say("still there?").await;
    let _ = ann.message().await;
    let path = format!("/v1/rooms/{room}?reason=solved");
    let (status, body) = node
        .call(API_KEY, reqwest::Method::DELETE, &path, None)
        .await;
    assert_eq!(status, 204, "{body}");

    for user in ["ann", "dana"] {
        receiver
            .wait_for(
                &format!("{user} left"),
                |d| matches!(&d.event.body, EventBody::MemberLeft(c) if c.user == user),
            )
            .await;
    }
    let closed = receiver
        .wait_for("room.closed", |d| d.event.body.kind() == "room.closed")
        .await;
    // Wait past the room's one-second flush: late leaves must not land after the close.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lefts = receiver
        .accepted()
        .iter()
        .filter(|d| d.event.body.kind() == "member.left")
        .map(|d| d.event.id.clone())
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(lefts.len(), 2, "one leave per user present");
    let EventBody::RoomClosed { transcript, .. } = &closed.event.body else {
        unreachable!()
    };
    let (status, body) = node
        .call(API_KEY, reqwest::Method::GET, transcript, None)
        .await;
    assert_eq!(status, 200, "{body}");
    let entries: Vec<TranscriptEntry> = serde_json::from_value(body["entries"].clone()).unwrap();
    assert!(
        matches!(entries.last(), Some(TranscriptEntry::Closed { reason, .. }) if reason == "solved"),
        "the close is last: {entries:?}"
    );
    // Two joins, the message, the close: the leaves of the members present came after the
    // close and are not in it (the close ended their presence).
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| match e {
            TranscriptEntry::Message(_) => "message",
            TranscriptEntry::Joined(_) => "joined",
            TranscriptEntry::Left(_) => "left",
            TranscriptEntry::Closed { .. } => "closed",
        })
        .collect();
    assert_eq!(
        kinds,
        ["joined", "joined", "message", "closed"],
        "{entries:?}"
    );

    let (status, body) = node
        .call(
            API_KEY,
            reqwest::Method::POST,
            &format!("/v1/rooms/{room}/members/ann/mute"),
            Some(json!({"seconds": 60, "reason": "late"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "room_closed", "{body}");
    drop((dana, ann_again));
}

/// Redis restarted empty under a room: a client resuming with `since=5` and no epoch is past
/// the room's end, so its ids are an earlier conversation's. Told incomplete, it gets what
/// is kept from the start: ids 4 and 5 of the new conversation are not skipped.
#[tokio::test]
async fn a_resume_past_the_room_end_is_incomplete_and_starts_from_what_is_kept() {
    let node = in_process(&[]).await;
    let room = "support/case-beyond";
    let (mut ann, _) = Client::join(&node.ws_as(room, "ann", "")).await;
    for body in ["one", "two", "three"] {
        ann.say(body).await;
        let _ = ann.message().await;
    }
    let (mut back, welcome) = Client::join(&node.ws_as(room, "bob", "&since=5")).await;
    let resume = welcome.resume.expect("a resume");
    assert!(!resume.complete, "{resume:?}");
    assert_eq!(resume.replayed, 3);
    let ids: Vec<u64> = back
        .messages_until_quiet(Duration::from_millis(300))
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, [1, 2, 3]);
}

/// A send whose append Redis ran while the node could not hear back is `unconfirmed`: no
/// event was emitted for it. Its retry (the same client id) finds it stored and emits the
/// event then, from the stored message: one event for the message, with its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_retried_after_unconfirmed_has_its_message_event() {
    let receiver = WebhookReceiver::start(HOOK_SECRET).await;
    let url = receiver.url();
    let redis = Redis::start().await;
    let node = Node::in_fleet(
        &redis,
        "chat-0",
        &[
            "--webhook-url",
            &url,
            "--webhook-allow-private-networks",
            "--webhook-secret",
            HOOK_SECRET,
            "--webhook-messages",
            "--webhook-retry-ms",
            "100",
        ],
    )
    .await;
    let room = "support/case-retried";
    let (mut ann, _) = Client::join(&node.ws_as(room, "ann", "")).await;
    ann.say("warm-up").await;
    let _ = ann.message().await;

    redis.pause();
    ann.say_as("is this stored?", "k-1").await;
    match ann.recv_skip_presence().await {
        ServerFrame::Error(e) => assert_eq!(e.code, ErrorCode::Unconfirmed, "{e:?}"),
        other => panic!("a send to a frozen Redis was answered with {other:?}"),
    }
    redis.resume();
    let (message, _) = ann
        .say_until_accepted("is this stored?", "k-1", Duration::from_secs(20))
        .await;
    let delivered = receiver
        .wait_for(
            "the retried message's event",
            |d| matches!(&d.event.body, EventBody::Message(m) if m.id == message.id),
        )
        .await;
    let EventBody::Message(event) = &delivered.event.body else {
        unreachable!()
    };
    assert_eq!(event, &message, "the event is the stored message");
    // Sent again (a client unsure of its ack): still one event id for the message.
    ann.say_as("is this stored?", "k-1").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    eventually("no second event for the message", || async {
        let ids: std::collections::BTreeSet<String> = receiver
            .accepted()
            .iter()
            .filter(|d| matches!(&d.event.body, EventBody::Message(m) if m.id == message.id))
            .map(|d| d.event.id.clone())
            .collect();
        ids.len() == 1
    })
    .await;
}

/// SIGTERM mid-conversation (a rolling update, an autoscaler drain): the node drains and
/// exits at once, before its rooms' next tick. The members' joins and leaves (written a tick
/// late) are in the transcript all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_writes_the_last_joins_and_leaves() {
    let redis = Redis::start().await;
    let mut node = Node::start(&[
        "--redis-url",
        &redis.url(),
        "--node-name",
        "chat-0",
        "--drain-notice-ms",
        "0",
        "--drain-seconds",
        "5",
    ])
    .await;
    let room = "support/case-sigterm";
    let (mut ann, _) = Client::join(&node.ws_as(room, "ann", "")).await;
    let (dana, _) = Client::join(&node.ws_as(room, "dana", "")).await;
    ann.say("help").await;
    let _ = ann.message().await;
    node.signal("TERM");
    let status = node
        .wait_exit(Duration::from_secs(8))
        .await
        .expect("exited by the deadline");
    assert!(status.success(), "{status:?}");
    drop((ann, dana));

    let id = room.parse().unwrap();
    let (_, recorded) = redis
        .state()
        .rooms
        .transcript(&id, None)
        .await
        .unwrap()
        .unwrap();
    let transcript =
        chatfleet_wire::transcript::Transcript::assemble(id, recorded.iter().map(String::as_str));
    let mut events: Vec<(String, &str)> = transcript
        .entries
        .iter()
        .filter_map(|e| match e {
            TranscriptEntry::Joined(e) => Some((e.user.clone(), "joined")),
            TranscriptEntry::Left(e) => Some((e.user.clone(), "left")),
            _ => None,
        })
        .collect();
    events.sort();
    let want = [
        ("ann", "joined"),
        ("ann", "left"),
        ("dana", "joined"),
        ("dana", "left"),
    ]
    .map(|(u, k)| (u.to_owned(), k));
    assert_eq!(events, want, "{transcript:?}");
}

/// A ChatRoom deleted and applied again under its name is another room (its UID, the
/// incarnation): the first one's tokens (a removed user's among them) do not join the second,
/// and each keeps its own transcript, readable by incarnation after the name was reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_name_is_another_room_with_its_own_record() {
    let redis = Redis::start().await;
    let node = Node::in_fleet(&redis, "chat-0", &[]).await;
    let room = "support/case-reused";
    let id: chatfleet_wire::RoomId = room.parse().unwrap();
    let state = redis.state();
    let open = |incarnation: &str| chatfleet_state::rooms::RoomSettings {
        max_members: 10,
        created_ms: 1,
        incarnation: incarnation.into(),
    };
    state.rooms.create(&id, open("uid-1")).await.unwrap();
    let first = |user: &str| {
        node.ws(
            room,
            &format!("token={}", token_for_incarnation(room, "uid-1", user)),
        )
    };
    let (mut ann, _) = Client::join(&first("ann")).await;
    ann.say("first room").await;
    let _ = ann.message().await;
    state.rooms.close(&id, "uid-1", "deleted").await.unwrap();
    assert!(matches!(
        ann.recv_skip_presence().await,
        ServerFrame::Closed { .. }
    ));

    // Applied again: a new UID. The first room's tokens are refused, the second's join.
    state.rooms.create(&id, open("uid-2")).await.unwrap();
    let mut stale = Client::connect(&first("eve")).await;
    assert_error(&stale.recv().await, ErrorCode::RoomClosed);
    let second = node.ws(
        room,
        &format!("token={}", token_for_incarnation(room, "uid-2", "bob")),
    );
    let (mut bob, welcome) = Client::join(&second).await;
    assert_eq!(welcome.last_id, 0, "a new room starts empty");
    bob.say("second room").await;
    assert_eq!(bob.message().await.content.body, "second room");

    let bodies = |transcript: &serde_json::Value| -> Vec<String> {
        transcript["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "message" || e["type"] == "closed")
            .map(|e| {
                e["body"]
                    .as_str()
                    .or(e["reason"].as_str())
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let path = format!("/v1/rooms/{room}/transcript?incarnation=uid-1");
    let (status, old) = node.call(API_KEY, reqwest::Method::GET, &path, None).await;
    assert_eq!(status, 200, "{old}");
    assert_eq!(old["incarnation"], "uid-1");
    assert_eq!(bodies(&old), ["first room", "deleted"]);
    eventually("the second room's transcript", || async {
        let path = format!("/v1/rooms/{room}/transcript");
        let (status, new) = node.call(API_KEY, reqwest::Method::GET, &path, None).await;
        status == 200 && new["incarnation"] == "uid-2" && bodies(&new) == ["second room"]
    })
    .await;
    let path = format!("/v1/rooms/{room}/transcript?incarnation=no/such");
    let (status, _) = node.call(API_KEY, reqwest::Method::GET, &path, None).await;
    assert_eq!(status, 400, "an incarnation is letters, digits and dashes");
}

/// A long transcript streams: its answer is chunked (never assembled whole in memory), read
/// from Redis a page at a time, and comes out in the order and with the summary the whole
/// would have, in JSON and in text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_transcript_streams_in_order() {
    let redis = Redis::start().await;
    let node = Node::in_fleet(&redis, "chat-0", &[]).await;
    let room = "support/case-long";
    let id: chatfleet_wire::RoomId = room.parse().unwrap();
    let state = redis.state();
    let log = chatfleet_state::rooms::MessageLog::new(state.rooms.clone(), 100);
    const MESSAGES: u64 = 5_000;
    for n in 1..=MESSAGES {
        let content = chatfleet_wire::frames::MessageContent {
            room: id.clone(),
            from: "ann".into(),
            name: "Ann".into(),
            role: chatfleet_wire::frames::Role::Customer,
            body: format!("line {n}"),
            ts: n,
            client_id: None,
        };
        let tail = chatfleet_wire::frames::message_tail(&content);
        log.append(&id, "", &tail, 0, None).await.unwrap();
    }
    state.rooms.close(&id, "", "long enough").await.unwrap();

    let response = reqwest::Client::new()
        .get(node.http(&format!("/v1/rooms/{room}/transcript")))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.content_length().is_none(),
        "streamed, not buffered"
    );
    let transcript: chatfleet_wire::transcript::Transcript = response.json().await.unwrap();
    assert_eq!(transcript.messages, MESSAGES);
    assert!(
        transcript.complete && transcript.closed,
        "{:?}",
        transcript.entries.last()
    );
    let ids: Vec<u64> = transcript
        .entries
        .iter()
        .filter_map(|e| match e {
            TranscriptEntry::Message(m) => Some(m.id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, (1..=MESSAGES).collect::<Vec<_>>());
    assert!(matches!(
        transcript.entries.last(),
        Some(TranscriptEntry::Closed { .. })
    ));

    let path = format!("/v1/rooms/{room}/transcript?format=text");
    let text = reqwest::Client::new()
        .get(node.http(&path))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len() as u64,
        1 + MESSAGES + 1,
        "header, messages, close"
    );
    assert!(
        lines[1].ends_with("[customer ann] Ann: line 1"),
        "{}",
        lines[1]
    );
    assert!(lines[MESSAGES as usize].ends_with("Ann: line 5000"));
    assert!(
        lines
            .last()
            .unwrap()
            .ends_with("The room was closed: long enough")
    );
}
