//! Members of a room exchange messages, standalone and across two nodes sharing Redis.

use chatfleet_wire::frames::{PresenceEvent, Role, ServerFrame};

use crate::support::{Client, Node, Redis, token};

#[tokio::test]
async fn members_exchange_messages_and_see_each_other() {
    let node = Node::start(&[]).await;
    let (mut ann, welcome) = Client::join(&node.ws_as("support/case-1", "ann", "")).await;
    assert_eq!(welcome.room.to_string(), "support/case-1");
    assert_eq!(welcome.user.user, "ann");
    assert_eq!(welcome.node, "standalone");
    assert_eq!(welcome.last_id, 0);
    assert!(welcome.resume.is_none());

    let (mut bob, welcome) = Client::join(&node.ws_as("support/case-1", "bob", "")).await;
    let members: Vec<_> = welcome.members.iter().map(|m| m.user.as_str()).collect();
    assert_eq!(members, ["ann", "bob"]);
    match ann.recv().await {
        ServerFrame::Presence(p) => {
            assert_eq!(
                (p.event, p.user.as_str(), p.members),
                (PresenceEvent::Joined, "bob", 2)
            );
        }
        other => panic!("{other:?}"),
    }

    let client_id = ann.say("hello").await;
    for client in [&mut ann, &mut bob] {
        let message = client.message().await;
        assert_eq!(message.id, 1);
        assert_eq!(message.content.body, "hello");
        assert_eq!(message.content.from, "ann");
        assert_eq!(message.content.name, "ann name");
        assert_eq!(message.content.role, Role::Customer);
        assert_eq!(
            message.content.client_id.as_deref(),
            Some(client_id.as_str())
        );
        assert!(client_id.starts_with("c-hello"));
        assert!(message.content.ts > 0);
    }
    bob.say("hi ann").await;
    assert_eq!(ann.message().await.content.body, "hi ann");
    assert_eq!(bob.message().await.id, 2);

    bob.leave().await;
    match ann.recv().await {
        ServerFrame::Presence(p) => assert_eq!((p.event, p.members), (PresenceEvent::Left, 1)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn rooms_do_not_hear_each_other() {
    let node = Node::start(&[]).await;
    let (mut a, _) = Client::join(&node.ws_as("ns/room-a", "a", "")).await;
    let (mut b, _) = Client::join(&node.ws_as("ns/room-b", "b", "")).await;
    a.say("only for a").await;
    b.say("only for b").await;
    assert_eq!(a.message().await.content.body, "only for a");
    let message = b.message().await;
    assert_eq!(
        (message.id, message.content.body.as_str()),
        (1, "only for b")
    );
}

#[tokio::test]
async fn observers_read_but_may_not_send() {
    let node = Node::start(&[]).await;
    let room = "support/watched";
    let (mut agent, _) = Client::join(&node.ws_as(room, "agent", "")).await;
    let observer_url = node.ws(
        room,
        &format!("token={}", token(room, "boss", Role::Observer)),
    );
    let (mut observer, welcome) = Client::join(&observer_url).await;
    assert_eq!(welcome.user.role, Role::Observer);
    observer.say("can I?").await;
    crate::support::assert_error(
        &observer.recv().await,
        chatfleet_wire::frames::ErrorCode::ReadOnly,
    );
    agent.say("you may watch").await;
    assert_eq!(observer.message().await.content.body, "you may watch");
}

#[tokio::test]
async fn members_on_two_nodes_sharing_redis_chat_live() {
    let redis = Redis::start().await;
    let url = redis.url();
    let one = Node::start(&["--redis-url", &url, "--node-name", "chat-0"]).await;
    let two = Node::start(&["--redis-url", &url, "--node-name", "chat-1"]).await;
    let room = "support/split";
    let (mut ann, welcome) = Client::join(&one.ws_as(room, "ann", "")).await;
    assert_eq!(welcome.node, "chat-0");
    let (mut bob, welcome) = Client::join(&two.ws_as(room, "bob", "")).await;
    assert_eq!(welcome.node, "chat-1");

    for i in 0..5 {
        ann.say(&format!("a{i}")).await;
        bob.say(&format!("b{i}")).await;
    }
    // Both see the same ten messages, in the same order, with ids 1..=10.
    let mut seen_by_ann = Vec::new();
    let mut seen_by_bob = Vec::new();
    for _ in 0..10 {
        let m = ann.message().await;
        seen_by_ann.push((m.id, m.content.body));
        let m = bob.message().await;
        seen_by_bob.push((m.id, m.content.body));
    }
    assert_eq!(seen_by_ann, seen_by_bob);
    let ids: Vec<u64> = seen_by_ann.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (1..=10).collect::<Vec<_>>());
}
