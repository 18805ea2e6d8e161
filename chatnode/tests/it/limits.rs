//! Hard limits at admission and per connection: the refused client learns why, everyone else
//! carries on undisturbed.

use chatfleet_wire::frames::{ErrorCode, ServerFrame, close};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Client, Node, assert_error, eventually};

async fn metric(node: &Node, name: &str) -> f64 {
    let text = node.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

/// Asserts the refusal: an error frame with `code`, then a close.
async fn assert_refused(client: &mut Client, code: ErrorCode) {
    assert_error(&client.recv().await, code);
    let close = client.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), close::TRY_AGAIN_LATER);
    assert_eq!(close.reason.as_str(), code.as_str());
}

#[tokio::test]
async fn a_full_room_refuses_the_next_member_and_keeps_its_own() {
    let node = Node::start(&["--max-room-members", "2"]).await;
    let room = "support/small";
    let (mut ann, _) = Client::join(&node.ws_as(room, "ann", "")).await;
    let (mut bob, _) = Client::join(&node.ws_as(room, "bob", "")).await;
    let mut carl = Client::connect(&node.ws_as(room, "carl", "")).await;
    assert_refused(&mut carl, ErrorCode::RoomFull).await;

    // Another room on the same node is unaffected by this one being full.
    Client::join(&node.ws_as("support/other", "carl", "")).await;
    // The members carry on; nobody saw carl.
    ann.say("still here").await;
    assert_eq!(
        ann.recv_skip_presence().await,
        bob.recv_skip_presence().await
    );
    assert_eq!(
        metric(&node, "chatnode_refused_joins_total{reason=\"room_full\"}").await,
        1.0
    );
}

#[tokio::test]
async fn a_full_node_refuses_the_next_user_and_frees_seats_on_leave() {
    let node = Node::start(&["--max-node-users", "2"]).await;
    let (mut ann, _) = Client::join(&node.ws_as("a/one", "ann", "")).await;
    let (bob, _) = Client::join(&node.ws_as("a/two", "bob", "")).await;
    let mut carl = Client::connect(&node.ws_as("a/three", "carl", "")).await;
    assert_refused(&mut carl, ErrorCode::NodeFull).await;
    ann.say("unbothered").await;
    assert_eq!(ann.message().await.content.body, "unbothered");

    bob.leave().await;
    eventually("bob's seat is free", || async {
        metric(&node, "chatnode_connections").await == 1.0
    })
    .await;
    Client::join(&node.ws_as("a/three", "carl", "")).await;
}

#[tokio::test]
async fn oversize_malformed_and_binary_frames_get_errors_and_the_connection_stays() {
    let node = Node::start(&["--max-message-bytes", "64"]).await;
    let room = "support/strict";
    let (mut ann, _) = Client::join(&node.ws_as(room, "ann", "")).await;
    let (mut bob, _) = Client::join(&node.ws_as(room, "bob", "")).await;
    ann.recv().await; // bob's presence

    ann.say(&"x".repeat(65)).await;
    assert_error(&ann.recv().await, ErrorCode::MessageTooLarge);
    ann.send_raw(&"y".repeat(10_000)).await;
    assert_error(&ann.recv().await, ErrorCode::MessageTooLarge);
    for bad in [
        "{not json",
        r#"{"type":"shout","body":"hi"}"#,
        r#"{"type":"send"}"#,
        r#"{"type":"send","body":"  "}"#,
    ] {
        ann.send_raw(bad).await;
        assert_error(&ann.recv().await, ErrorCode::BadFrame);
    }
    let mut ws = ann.into_inner();
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    let mut ann = crate::support::Client::from_stream(ws);
    assert_error(&ann.recv().await, ErrorCode::BadFrame);

    // The same connection still chats, and bob only ever saw the valid message.
    ann.say(&"x".repeat(64)).await;
    assert_eq!(ann.message().await.id, 1);
    let message = bob.message().await;
    assert_eq!((message.id, message.content.body.len()), (1, 64));
}

#[tokio::test]
async fn a_client_over_its_rate_is_told_to_slow_down() {
    let node = Node::start(&["--rate-per-second", "1", "--rate-burst", "3"]).await;
    let (mut ann, _) = Client::join(&node.ws_as("a/fast", "ann", "")).await;
    for i in 0..4 {
        ann.say(&format!("m{i}")).await;
    }
    let mut delivered = 0;
    let mut limited = 0;
    for _ in 0..4 {
        match ann.recv().await {
            ServerFrame::Message(_) => delivered += 1,
            ServerFrame::Error(e) if e.code == ErrorCode::RateLimited => limited += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((delivered, limited), (3, 1));
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_the_room_goes_on() {
    let node = Node::start(&[
        "--outbound-queue-bytes",
        "8192",
        "--rate-per-second",
        "100000",
        "--rate-burst",
        "100000",
    ])
    .await;
    let room = "support/slow";
    // The slow client joins and then never reads again.
    let (slow, _) = Client::join(&node.ws_as(room, "slow", "")).await;
    let (mut ann, _) = Client::join(&node.ws_as(room, "ann", "")).await;
    let body = "z".repeat(4000);
    let mut heard_left = false;
    // ann reads each of her messages, so only the slow client falls behind.
    let mut ann_says = async |ann: &mut Client, body: &str| {
        ann.say(body).await;
        loop {
            match ann.recv().await {
                ServerFrame::Presence(p) if p.user == "slow" => heard_left = true,
                ServerFrame::Message(m) if m.content.body == body => return,
                other => panic!("{other:?}"),
            }
        }
    };
    let mut sent = 0;
    while metric(&node, "chatnode_slow_consumers_total").await == 0.0 {
        for _ in 0..100 {
            ann_says(&mut ann, &body).await;
            sent += 1;
        }
        assert!(sent < 20_000, "the slow client was never cut off");
    }
    // It reads again: every frame it gets is whole, the last is the `slow_consumer` error,
    // then a close frame asking it to come back (and resume with `since`).
    let mut slow = slow;
    let mut last = None;
    let close = loop {
        match slow.next().await {
            Some(Ok(frame)) => last = Some(frame),
            Some(Err(close)) => break close.expect("a close frame with a code"),
            None => panic!("cut without a close frame; last frame {last:?}"),
        }
    };
    match last {
        Some(ServerFrame::Error(error)) => assert_eq!(error.code, ErrorCode::SlowConsumer),
        other => panic!("expected the slow_consumer error last, got {other:?}"),
    }
    assert_eq!(u16::from(close.code), close::TRY_AGAIN_LATER);
    assert_eq!(close.reason.as_str(), "slow_consumer");
    // The room goes on: ann heard that the slow client left, and her messages still flow.
    ann_says(&mut ann, "after").await;
    assert!(heard_left);
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_reaped() {
    let node = Node::start(&["--ping-seconds", "1"]).await;
    let (silent, _) = Client::join(&node.ws_as("a/quiet", "ghost", "")).await;
    assert_eq!(metric(&node, "chatnode_connections").await, 1.0);
    // Never polled again: tungstenite answers pings only while reading.
    eventually("the silent client is reaped", || async {
        metric(&node, "chatnode_connections").await == 0.0
    })
    .await;
    drop(silent);
}

#[tokio::test]
async fn a_client_that_ignores_rate_limits_is_disconnected() {
    let node = Node::start(&["--rate-per-second", "1", "--rate-burst", "1"]).await;
    let room = "a/flood";
    let (mut flooder, _) = Client::join(&node.ws_as(room, "flooder", "")).await;
    let (mut bystander, _) = Client::join(&node.ws_as(room, "bystander", "")).await;
    for i in 0..20 {
        flooder.say(&format!("spam {i}")).await;
    }
    let close = flooder.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), close::POLICY);
    assert_eq!(close.reason.as_str(), "flooding");
    // The bystander got the one message within the limit, then saw the flooder leave.
    assert_eq!(bystander.message().await.content.body, "spam 0");
    match bystander.recv().await {
        ServerFrame::Presence(p) => assert_eq!((p.user.as_str(), p.members), ("flooder", 1)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_room_over_its_delivery_budget_is_rate_limited() {
    // Two members: each message costs two deliveries, so a budget of 4 allows two messages.
    let node = Node::start(&["--room-deliveries-per-second", "4"]).await;
    let room = "a/budget";
    let (mut ann, _) = Client::join(&node.ws_as(room, "ann", "")).await;
    let (_bob, _) = Client::join(&node.ws_as(room, "bob", "")).await;
    ann.recv().await; // bob's presence
    for i in 0..3 {
        ann.say(&format!("m{i}")).await;
    }
    let mut delivered = 0;
    let mut limited = 0;
    for _ in 0..3 {
        match ann.recv().await {
            ServerFrame::Message(_) => delivered += 1,
            ServerFrame::Error(e) if e.code == ErrorCode::RateLimited => {
                assert!(e.message.contains("room"), "{e:?}");
                limited += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((delivered, limited), (2, 1));
}
