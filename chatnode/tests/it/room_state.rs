//! Typing, read state and moderation: across two real nodes sharing a real Redis, and on a
//! standalone node, through real WebSocket clients and the room API.

use chatfleet_wire::frames::{ErrorCode, ModerationAction, ServerFrame, close};
use serde_json::json;

use crate::support::{API_KEY, Client, Node, Redis, assert_error, in_process};

/// Frames until the next message (not included), skipping presence, and that message's body.
async fn until_message(client: &mut Client) -> (Vec<ServerFrame>, String) {
    let mut before = Vec::new();
    loop {
        match client.recv_skip_presence().await {
            ServerFrame::Message(message) => return (before, message.content.body),
            other => before.push(other),
        }
    }
}

fn typing_from(frames: &[ServerFrame]) -> Vec<&str> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Typing { user, .. } => Some(user.as_str()),
            _ => None,
        })
        .collect()
}

/// Calls the room API of `node` with the room key.
async fn api(
    node: &Node,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    node.call(API_KEY, method, path, body).await
}

#[tokio::test]
async fn typing_and_reads_cross_nodes_and_greet_a_newcomer() {
    let redis = Redis::start().await;
    let first = Node::in_fleet(&redis, "chat-0", &[]).await;
    let second = Node::in_fleet(&redis, "chat-1", &[]).await;
    let room = "support/case-t";
    let (mut ann, _) = Client::join(&first.ws_as(room, "ann", "")).await;
    let (mut bob, _) = Client::join(&second.ws_as(room, "bob", "")).await;

    // Two typing frames at once: the node passes on one.
    ann.send_raw(r#"{"type":"typing"}"#).await;
    ann.send_raw(r#"{"type":"typing"}"#).await;
    let typing = bob.recv_skip_presence().await;
    assert_eq!(
        typing,
        ServerFrame::Typing {
            room: room.parse().unwrap(),
            user: "ann".into(),
            name: "ann name".into(),
        }
    );
    ann.say("one").await;
    let (before, body) = until_message(&mut bob).await;
    assert_eq!((typing_from(&before), body.as_str()), (vec![], "one"));
    bob.say("two").await;
    // Ann's own typing never came back to her, before or after her message.
    let (before, _) = until_message(&mut ann).await;
    assert!(typing_from(&before).is_empty(), "{before:?}");
    let (before, body) = until_message(&mut ann).await;
    assert_eq!((typing_from(&before), body.as_str()), (vec![], "two"));
    let (_, body) = until_message(&mut bob).await;
    assert_eq!(body, "two");

    // Bob read both; a read beyond what he was delivered counts as up to the newest.
    bob.send_raw(r#"{"type":"read","up_to":999}"#).await;
    let read = ann.recv_skip_presence().await;
    let ServerFrame::Read { reads, .. } = read else {
        panic!("a read frame, got {read:?}");
    };
    assert_eq!(reads, [("bob".to_owned(), 2)].into());
    // Bob's node tells him too: his other devices mark the room read.
    let ServerFrame::Read { reads, .. } = bob.recv_skip_presence().await else {
        panic!("a read frame");
    };
    assert_eq!(reads, [("bob".to_owned(), 2)].into());

    // A newcomer on the other node learns every read position in its welcome.
    let (_carl, welcome) = Client::join(&first.ws_as(room, "carl", "")).await;
    assert_eq!(welcome.reads, [("bob".to_owned(), 2)].into());
    // Reads never move back.
    bob.send_raw(r#"{"type":"read","up_to":1}"#).await;
    ann.say("three").await;
    let (before, body) = until_message(&mut ann).await;
    assert_eq!(body, "three");
    assert!(
        !before.iter().any(|f| matches!(f, ServerFrame::Read { .. })),
        "{before:?}"
    );
}

#[tokio::test]
async fn moderation_through_the_room_api_reaches_every_node() {
    let redis = Redis::start().await;
    let first = Node::in_fleet(&redis, "chat-0", &[]).await;
    let second = Node::in_fleet(&redis, "chat-1", &[]).await;
    let (status, body) = api(
        &first,
        reqwest::Method::POST,
        "/v1/rooms",
        Some(json!({"namespace": "support", "name": "case-m"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let room = "support/case-m";
    let (mut ann, _) = Client::join(&first.ws_as(room, "ann", "")).await;
    let (mut dana, _) = Client::join(&second.ws_as(room, "dana", "")).await;

    let (status, body) = api(
        &first,
        reqwest::Method::POST,
        "/v1/rooms/support/case-m/members/dana/mute",
        Some(json!({"seconds": 60, "reason": "cool down"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["action"], "muted");
    for client in [&mut ann, &mut dana] {
        let ServerFrame::Moderation(seen) = client.recv_skip_presence().await else {
            panic!("a moderation frame");
        };
        assert_eq!(
            (seen.user.as_str(), seen.action, seen.reason.as_str()),
            ("dana", ModerationAction::Muted, "cool down")
        );
    }
    dana.say("let me speak").await;
    assert_error(&dana.recv_skip_presence().await, ErrorCode::Muted);
    // The mute follows her to a new session, on the other node.
    let (mut dana_again, welcome) = Client::join(&first.ws_as(room, "dana", "")).await;
    assert!(welcome.muted_until.is_some());
    dana_again.say("still me").await;
    assert_error(&dana_again.recv_skip_presence().await, ErrorCode::Muted);
    dana_again.leave().await;

    let (status, _) = api(
        &first,
        reqwest::Method::DELETE,
        "/v1/rooms/support/case-m/members/dana/mute",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(matches!(
        dana.recv_skip_presence().await,
        ServerFrame::Moderation(m) if m.action == ModerationAction::Unmuted
    ));
    dana.say("thanks").await;
    assert_eq!(dana.message().await.content.body, "thanks");

    let (status, _) = api(
        &first,
        reqwest::Method::DELETE,
        "/v1/rooms/support/case-m/members/dana?reason=abuse",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(matches!(
        dana.recv_skip_presence().await,
        ServerFrame::Moderation(m) if m.action == ModerationAction::Removed && m.reason == "abuse"
    ));
    assert_error(&dana.recv_skip_presence().await, ErrorCode::Removed);
    assert_eq!(
        dana.closed().await.map(|c| u16::from(c.code)),
        Some(close::POLICY)
    );
    let mut back = Client::connect(&second.ws_as(room, "dana", "")).await;
    assert_error(&back.recv().await, ErrorCode::Removed);

    let (status, _) = api(
        &first,
        reqwest::Method::DELETE,
        "/v1/rooms/support/case-m?reason=case%20solved",
        None,
    )
    .await;
    assert_eq!(status, 204);
    loop {
        match ann.recv_skip_presence().await {
            ServerFrame::Closed { reason, .. } => {
                assert_eq!(reason, "case solved");
                break;
            }
            ServerFrame::Message(_) | ServerFrame::Moderation(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn moderation_on_a_standalone_node_and_its_bad_requests() {
    let node = in_process(&[]).await;
    let (status, _) = api(
        &node,
        reqwest::Method::POST,
        "/v1/rooms",
        Some(json!({"namespace": "support", "name": "case-s"})),
    )
    .await;
    assert_eq!(status, 201);
    let (mut eve, _) = Client::join(&node.ws_as("support/case-s", "eve", "")).await;
    let (status, body) = api(
        &node,
        reqwest::Method::POST,
        "/v1/rooms/support/case-s/members/eve/mute",
        Some(json!({"seconds": 30})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(matches!(
        eve.recv_skip_presence().await,
        ServerFrame::Moderation(m) if m.reason == "muted by a moderator"
    ));
    eve.say("hello?").await;
    assert_error(&eve.recv_skip_presence().await, ErrorCode::Muted);

    for (method, path, body, status, code) in [
        (
            reqwest::Method::POST,
            "/v1/rooms/support/case-s/members/eve/mute",
            Some(json!({"seconds": 0})),
            422,
            "invalid_request",
        ),
        (
            reqwest::Method::POST,
            "/v1/rooms/support/case-s/members/eve/mute",
            Some(json!({"seconds": 10, "why": "x"})),
            422,
            "bad_request",
        ),
        (
            reqwest::Method::POST,
            "/v1/rooms/support/nowhere/members/eve/mute",
            Some(json!({"seconds": 10})),
            404,
            "not_found",
        ),
        (
            reqwest::Method::DELETE,
            &format!(
                "/v1/rooms/support/case-s/members/eve?reason={}",
                "x".repeat(600)
            ),
            None,
            422,
            "invalid_request",
        ),
    ] {
        let (got, body) = api(&node, method, path, body).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
    }
    // Nothing above removed eve: she is still in the room.
    let (status, _) = api(
        &node,
        reqwest::Method::DELETE,
        "/v1/rooms/support/case-s",
        None,
    )
    .await;
    assert_eq!(status, 204);
    loop {
        if let ServerFrame::Closed { reason, .. } = eve.recv_skip_presence().await {
            assert_eq!(reason, "closed through the room API");
            break;
        }
    }
}
