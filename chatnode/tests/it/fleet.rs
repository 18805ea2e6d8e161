//! Fleet mode: the load report in Redis, its expiry when a node dies, and a Redis outage under
//! connected clients.

use std::time::Duration;

use chatfleet_wire::frames::{ErrorCode, ServerFrame};
use chatfleet_wire::keys;
use chatfleet_wire::load::LoadReport;
use redis::AsyncCommands;

use crate::support::{Client, Node, Redis, assert_error, eventually};

async fn report(redis: &Redis, node: &str) -> Option<LoadReport> {
    let json: Option<String> = redis
        .conn()
        .await
        .get(keys::node_report(node))
        .await
        .unwrap();
    json.map(|j| serde_json::from_str(&j).unwrap())
}

#[tokio::test]
async fn the_load_report_counts_users_and_rooms_and_expires_when_the_node_dies() {
    let redis = Redis::start().await;
    let mut node = Node::start(&[
        "--redis-url",
        &redis.url(),
        "--node-name",
        "chat-7",
        "--advertise-url",
        "ws://chat-7.chat:8080",
        "--max-node-users",
        "50",
        "--heartbeat-ms",
        "200",
    ])
    .await;
    let (mut ann, _) = Client::join(&node.ws_as("a/one", "ann", "")).await;
    let (_bob, _) = Client::join(&node.ws_as("a/one", "bob", "")).await;
    let (_carl, _) = Client::join(&node.ws_as("a/two", "carl", "")).await;
    for i in 0..5 {
        ann.say(&format!("m{i}")).await;
    }
    eventually(
        "the report shows 3 users in 2 rooms and some traffic",
        || async {
            report(&redis, "chat-7")
                .await
                .is_some_and(|r| r.users == 3 && r.rooms == 2 && r.msg_rate > 0.0)
        },
    )
    .await;
    let r = report(&redis, "chat-7").await.unwrap();
    assert_eq!(r.advertise_url, "ws://chat-7.chat:8080");
    assert_eq!(r.limits.max_node_users, 50);
    assert_eq!(r.limits.max_room_members, 300);
    assert!(!r.draining);
    assert_eq!(r.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(r.free_seats(), 47);
    let indexed: Vec<String> = redis
        .conn()
        .await
        .zrange(keys::node_index(), 0, -1)
        .await
        .unwrap();
    assert_eq!(indexed, ["chat-7"]);

    node.signal("KILL");
    node.wait_exit(Duration::from_secs(5))
        .await
        .expect("killed");
    // Three missed heartbeats of 200 ms, and the report is gone.
    eventually("the report expires", || async {
        report(&redis, "chat-7").await.is_none()
    })
    .await;
}

#[tokio::test]
async fn a_redis_outage_keeps_clients_connected_and_heals_by_itself() {
    let mut redis = Redis::start().await;
    let node = Node::start(&["--redis-url", &redis.url(), "--heartbeat-ms", "200"]).await;
    assert_eq!(node.get("/readyz").await.status(), 200);
    let room = "support/outage";
    let (mut ann, _) = Client::join(&node.ws_as(room, "ann", "")).await;
    let (mut bob, _) = Client::join(&node.ws_as(room, "bob", "")).await;
    ann.say("before").await;
    assert_eq!(bob.message().await.content.body, "before");
    assert_eq!(ann.message().await.content.body, "before");

    redis.kill();
    eventually("the node reports not ready", || async {
        node.get("/readyz").await.status() == 503
    })
    .await;
    assert_eq!(
        node.get("/healthz").await.status(),
        200,
        "liveness does not depend on Redis"
    );
    // Connected clients stay; a message that cannot be logged is refused, not lost silently.
    ann.say("during").await;
    match ann.recv_skip_presence().await {
        ServerFrame::Error(e) => assert_eq!(e.code, ErrorCode::Unavailable),
        ServerFrame::Message(m) => panic!("a message was accepted without Redis: {m:?}"),
        other => panic!("{other:?}"),
    }
    // New joins are refused with `unavailable`.
    let mut carl = Client::connect(&node.ws_as(room, "carl", "")).await;
    assert_error(&carl.recv().await, ErrorCode::Unavailable);

    redis.restart().await;
    eventually("the node is ready again", || async {
        node.get("/readyz").await.status() == 200
    })
    .await;
    // The same connections chat again (Redis restarted empty, so ids start over).
    ann.say("after").await;
    assert_eq!(bob.message().await.content.body, "after");
    assert_eq!(ann.message().await.content.body, "after");
    Client::join(&node.ws_as(room, "carl", "")).await;
}

#[tokio::test]
async fn a_node_starts_without_redis_and_becomes_ready_when_it_appears() {
    let port = crate::support::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let node = Node::start(&["--redis-url", &url, "--heartbeat-ms", "200"]).await;
    assert_eq!(node.get("/readyz").await.status(), 503);
    assert_eq!(node.get("/healthz").await.status(), 200);
    let _redis = Redis::start_on(port).await;
    eventually("the node is ready once Redis is up", || async {
        node.get("/readyz").await.status() == 200
    })
    .await;
    let (mut ann, _) = Client::join(&node.ws_as("a/late", "ann", "")).await;
    ann.say("hello").await;
    assert_eq!(ann.message().await.id, 1);
}

/// The operator moves a room by publishing `moved` on its live channel, naming the node the
/// room left: members there get the frame and a 1012 close; members already on the new node,
/// and members of the spanning room on a third node, stay.
#[tokio::test]
async fn a_moved_frame_sends_the_left_nodes_members_to_the_new_node() {
    let redis = Redis::start().await;
    let old = Node::start(&["--redis-url", &redis.url(), "--node-name", "chat-0"]).await;
    let new = Node::start(&["--redis-url", &redis.url(), "--node-name", "chat-1"]).await;
    let third = Node::start(&["--redis-url", &redis.url(), "--node-name", "chat-2"]).await;
    let room = "support/case-9";
    let (mut leaving, _) = Client::join(&old.ws_as(room, "alice", "")).await;
    let (mut staying, _) = Client::join(&new.ws_as(room, "bob", "")).await;
    let (mut elsewhere, _) = Client::join(&third.ws_as(room, "carol", "")).await;
    let endpoint = new.ws(room, "");
    let endpoint = endpoint.trim_end_matches('?').to_owned();
    let moved = ServerFrame::Moved {
        room: room.parse().unwrap(),
        endpoint: endpoint.clone(),
        from: Some("chat-0".into()),
    };
    let _: () = redis
        .conn()
        .await
        .publish(
            keys::RoomKeys::new(&room.parse().unwrap()).live,
            moved.to_json(),
        )
        .await
        .unwrap();

    match leaving.recv_skip_presence().await {
        ServerFrame::Moved { endpoint: to, .. } => assert_eq!(to, endpoint),
        other => panic!("expected moved, got {other:?}"),
    }
    let close = leaving.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1012);
    // Bob, already on the new node, and Carol, on the third, keep chatting: each gets the
    // other's message and no `moved`.
    staying.say("still here").await;
    assert_eq!(staying.message().await.content.body, "still here");
    assert_eq!(elsewhere.message().await.content.body, "still here");
    elsewhere.say("me too").await;
    assert_eq!(elsewhere.message().await.content.body, "me too");
    assert_eq!(staying.message().await.content.body, "me too");
}
