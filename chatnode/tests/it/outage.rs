//! Redis stalls, restarts and outages under real clients, nodes and redis-servers: nothing
//! acknowledged is lost, nothing is duplicated, and where history was lost the client is told.

use std::collections::BTreeMap;
use std::time::Duration;

use chatfleet_wire::frames::{ErrorCode, ServerFrame, Welcome};
use serde_json::Value;

use crate::support::{API_KEY, Client, Node, PATIENCE, Redis, assert_error, eventually};

/// How many live sessions `user` holds across the fleet, and the answer they came in.
async fn sessions(node: &Node, user: &str) -> (u64, Value) {
    let path = format!("/v1/users/{user}/sessions");
    let (status, body) = node.call(API_KEY, reqwest::Method::GET, &path, None).await;
    assert_eq!(status, 200, "{body}");
    (body["count"].as_u64().expect("a count"), body)
}

async fn ready(node: &Node) {
    eventually("the node is ready", || async {
        node.get("/readyz").await.status() == 200
    })
    .await;
}

/// Reads messages until `want` distinct client ids arrived, then a little longer for
/// duplicates; returns how often each client id arrived.
async fn tally(client: &mut Client, want: usize) -> BTreeMap<String, usize> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let settle = if seen.len() >= want {
            Duration::from_millis(500)
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        match tokio::time::timeout(settle, client.next()).await {
            Ok(Some(Ok(ServerFrame::Message(m)))) => {
                *seen
                    .entry(m.content.client_id.unwrap_or_default())
                    .or_default() += 1;
            }
            Ok(Some(Ok(_))) => {}
            _ => return seen,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_sends_retried_with_their_client_id_arrive_once() {
    let redis = Redis::start().await;
    let one = Node::in_fleet(&redis, "chat-0", &[]).await;
    let two = Node::in_fleet(&redis, "chat-1", &[]).await;
    let room = "support/frozen";
    let (mut ann, _) = Client::join(&one.ws_as(room, "ann", "")).await;
    let (mut bob, _) = Client::join(&two.ws_as(room, "bob", "")).await;
    // A first message, so Redis already knows the append script: a frozen Redis then holds the
    // appends themselves, which run when it resumes.
    ann.say("warm-up").await;
    assert_eq!(bob.message().await.content.body, "warm-up");
    assert_eq!(ann.message().await.content.body, "warm-up");

    redis.pause();
    let mut answers = Vec::new();
    for k in 0..3 {
        ann.say_as(&format!("m{k}"), &format!("k{k}")).await;
        match ann.recv_skip_presence().await {
            ServerFrame::Error(e) => answers.push(e.code),
            other => panic!("a send to a frozen Redis was answered with {other:?}"),
        }
    }
    // The first send reached Redis and waits there: its outcome is unknown, and the client is
    // told so. Later ones find the node not ready and are not sent at all.
    assert_eq!(answers[0], ErrorCode::Unconfirmed, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|c| matches!(c, ErrorCode::Unconfirmed | ErrorCode::Unavailable))
    );
    redis.resume();
    ready(&one).await;
    // Retried as told: the same client ids.
    for k in 0..3 {
        ann.say_as(&format!("m{k}"), &format!("k{k}")).await;
    }
    let at_bob = tally(&mut bob, 3).await;
    let at_ann = tally(&mut ann, 3).await;
    for (who, seen) in [("bob", &at_bob), ("ann", &at_ann)] {
        let lost = (0..3)
            .filter(|k| !seen.contains_key(&format!("k{k}")))
            .count();
        let duplicated: usize = seen.values().map(|n| n.saturating_sub(1)).sum();
        println!(
            "{who}: sent 3, acknowledged after retry 3, received {}, lost {lost}, duplicated {duplicated}",
            seen.len()
        );
        assert_eq!((lost, duplicated), (0, 0), "{who}: {seen:?}");
    }
}

#[tokio::test]
async fn a_resume_across_a_redis_that_lost_its_data_says_it_is_incomplete() {
    let mut redis = Redis::start().await;
    let room = "support/forgotten";
    let first = Node::in_fleet(&redis, "chat-0", &[]).await;
    let (mut x, _) = Client::join(&first.ws_as(room, "x", "")).await;
    let (mut y, welcome): (Client, Welcome) = Client::join(&first.ws_as(room, "y", "")).await;
    for i in 1..=5 {
        y.say(&format!("old {i}")).await;
    }
    let mut last = 0;
    for _ in 1..=5 {
        last = x.message().await.id;
    }
    assert_eq!(last, 5);
    let epoch = welcome.epoch.clone();
    assert!(!epoch.is_empty());
    x.leave().await;
    drop(y);
    drop(first); // the room's node dies
    redis.restart().await; // and Redis comes back empty

    let second = Node::in_fleet(&redis, "chat-1", &[]).await;
    ready(&second).await;
    let (mut y, _) = Client::join(&second.ws_as(room, "y", "")).await;
    for i in 1..=6 {
        y.say(&format!("new {i}")).await;
        y.message().await;
    }
    let resume = format!("&since={last}&epoch={epoch}");
    let (mut x, welcome) = Client::join(&second.ws_as(room, "x", &resume)).await;
    assert_ne!(welcome.epoch, epoch, "the room's log is in a new epoch");
    let resume = welcome.resume.expect("a resume");
    assert!(!resume.complete, "history was lost, and the client is told");
    assert_eq!(resume.replayed, 6);
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(x.message().await.content.body);
    }
    assert_eq!(got, (1..=6).map(|i| format!("new {i}")).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_refused_during_a_freeze_leave_no_slot_behind() {
    let redis = Redis::start().await;
    // A slow heartbeat, so the node still takes joins for a moment after Redis freezes.
    let url = redis.url();
    let node = Node::start(&[
        "--redis-url",
        &url,
        "--max-user-sessions",
        "3",
        "--heartbeat-ms",
        "1000",
    ])
    .await;
    ready(&node).await;
    let room = "support/locked";
    // One session first, so Redis already knows the claim script: a frozen Redis then
    // receives the claims themselves, which run when it resumes.
    let (first, _) = Client::join(&node.ws_as(room, "dana", "")).await;
    first.leave().await;
    eventually("the first session's slot is freed", || async {
        sessions(&node, "dana").await.0 == 0
    })
    .await;
    redis.pause();
    let joins = (0..3).map(|_| {
        let url = node.ws_as(room, "dana", "");
        tokio::spawn(async move {
            let mut client = Client::connect(&url).await;
            client.recv().await
        })
    });
    for answer in futures_util::future::join_all(joins).await {
        assert_error(&answer.unwrap(), ErrorCode::Unavailable);
    }
    redis.resume();
    ready(&node).await;
    // No phantom slot: the user gets all three sessions at once.
    let mut held = Vec::new();
    for _ in 0..3 {
        let (client, _) = Client::join(&node.ws_as(room, "dana", "")).await;
        held.push(client);
    }
    let (count, body) = sessions(&node, "dana").await;
    assert_eq!(count, 3, "{body}");
}

/// Redis frozen for twice the session TTL under a room with members on two nodes: the nodes
/// lived all along and nobody could take a seat meanwhile, so every session goes on (each node
/// takes its seats back when Redis returns) rather than end. The room's seats are one set both
/// nodes refresh: the second refresh after the thaw used to find the set there but its own
/// seats expired, and end those sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_outlive_a_redis_stall_longer_than_their_ttl() {
    let redis = Redis::start().await;
    let flags = ["--max-user-sessions", "3", "--session-ttl-seconds", "2"];
    let nodes = [
        Node::in_fleet(&redis, "chat-0", &flags).await,
        Node::in_fleet(&redis, "chat-1", &flags).await,
    ];
    let room = "support/stall";
    let (mut dana, _) = Client::join(&nodes[0].ws_as(room, "dana", "")).await;
    let (mut erin, _) = Client::join(&nodes[1].ws_as(room, "erin", "")).await;
    redis.pause();
    tokio::time::sleep(Duration::from_secs(4)).await;
    redis.resume();
    for node in &nodes {
        ready(node).await;
    }
    // Past a few refreshes (every TTL / 3) after the thaw.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Each says something, the other hears it.
    let (said, _) = dana
        .say_until_accepted("dana is still here", "dana-1", Duration::from_secs(10))
        .await;
    assert_eq!(erin.message().await.id, said.id);
    let (said, _) = erin
        .say_until_accepted("erin too", "erin-1", Duration::from_secs(10))
        .await;
    assert_eq!(dana.message().await.id, said.id);
    for user in ["dana", "erin"] {
        let (count, listed) = sessions(&nodes[0], user).await;
        assert_eq!(count, 1, "{listed}");
    }
    let seats = redis
        .state()
        .room_seats
        .count(&room.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(seats, 2, "both members hold their seats again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_frozen_past_the_session_ttl_cannot_push_a_user_over_the_limit() {
    let redis = Redis::start().await;
    let flags = ["--max-user-sessions", "3", "--session-ttl-seconds", "2"];
    let frozen = Node::in_fleet(&redis, "chat-0", &flags).await;
    let other = Node::in_fleet(&redis, "chat-1", &flags).await;
    let room = "support/limit";
    let mut old = Vec::new();
    for _ in 0..3 {
        let (client, _) = Client::join(&frozen.ws_as(room, "dana", "")).await;
        old.push(client);
    }
    frozen.signal("STOP");
    tokio::time::sleep(Duration::from_secs(3)).await; // past the 2 s TTL: the slots expire
    let mut new = Vec::new();
    for _ in 0..3 {
        let (client, _) = Client::join(&other.ws_as(room, "dana", "")).await;
        new.push(client);
    }
    frozen.signal("CONT");
    // The frozen node's refresh finds its slots gone and ends those sessions.
    for client in &mut old {
        assert_error(&client.recv_skip_presence().await, ErrorCode::SessionEnded);
    }
    let (count, body) = sessions(&other, "dana").await;
    assert_eq!(count, 3, "{body}");
    assert!(
        body["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["node"] == "chat-1"),
        "{body}"
    );
}

#[tokio::test]
async fn a_reused_room_name_takes_joins_at_once() {
    let redis = Redis::start().await;
    let node = Node::in_fleet(&redis, "chat-0", &[]).await;
    let room = "support/reused";
    let (mut ann, _) = Client::join(&node.ws_as(room, "ann", "")).await;
    let state = redis.state();
    let id = room.parse().unwrap();
    state.rooms.close(&id, "", "deleted").await.unwrap();
    assert!(matches!(
        ann.recv_skip_presence().await,
        ServerFrame::Closed { .. }
    ));
    // A new room takes the name (the operator opens a new incarnation, the new ChatRoom's
    // UID) and is joined right away.
    let settings = chatfleet_state::rooms::RoomSettings {
        max_members: 300,
        created_ms: 1,
        incarnation: "second-room".into(),
    };
    state.rooms.create(&id, settings).await.unwrap();
    let mut bob = Client::connect(&node.ws_as(room, "bob", "")).await;
    match bob.recv().await {
        ServerFrame::Welcome(_) => {}
        other => panic!("the reused room refused its first join: {other:?}"),
    }
}
