//! SIGTERM: the node says it is draining, refuses new joins, sends its clients away with 1012
//! and exits by its deadline.

use std::time::Duration;

use chatfleet_wire::frames::{ErrorCode, ServerFrame, close};
use chatfleet_wire::keys;
use chatfleet_wire::load::LoadReport;
use redis::AsyncCommands;

use crate::support::{Client, Node, Redis, assert_error, eventually};

#[tokio::test]
async fn sigterm_drains_clients_and_exits_by_the_deadline() {
    let redis = Redis::start().await;
    let mut node = Node::start(&[
        "--redis-url",
        &redis.url(),
        "--node-name",
        "chat-2",
        "--drain-notice-ms",
        "1500",
        "--drain-seconds",
        "5",
    ])
    .await;
    let (mut ann, _) = Client::join(&node.ws_as("a/room", "ann", "")).await;
    let (mut bob, _) = Client::join(&node.ws_as("a/room", "bob", "")).await;
    let started = std::time::Instant::now();
    node.signal("TERM");

    // During the notice the node reports draining, fails readiness and refuses new joins.
    let mut conn = redis.conn().await;
    eventually("the report says draining", || {
        let mut conn = conn.clone();
        async move {
            let json: Option<String> = conn.get(keys::node_report("chat-2")).await.unwrap();
            json.is_some_and(|j| serde_json::from_str::<LoadReport>(&j).unwrap().draining)
        }
    })
    .await;
    assert_eq!(node.get("/readyz").await.status(), 503);
    let mut late = Client::connect(&node.ws_as("a/room", "carl", "")).await;
    assert_error(&late.recv().await, ErrorCode::Draining);

    // Then every client is told, and closed with 1012 so it reconnects elsewhere.
    for client in [&mut ann, &mut bob] {
        match client.recv_skip_presence().await {
            ServerFrame::Draining { .. } => {}
            other => panic!("expected draining, got {other:?}"),
        }
        let close = client.closed().await.expect("a close frame");
        assert_eq!(u16::from(close.code), close::SERVICE_RESTART);
    }
    let status = node
        .wait_exit(Duration::from_secs(6))
        .await
        .expect("exited by the deadline");
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(6));
    // A clean exit removes the report at once rather than waiting for it to expire.
    let json: Option<String> = conn.get(keys::node_report("chat-2")).await.unwrap();
    assert!(json.is_none());
}

#[tokio::test]
async fn a_standalone_node_with_no_clients_exits_promptly_on_sigterm() {
    let mut node = Node::start(&["--drain-notice-ms", "0"]).await;
    node.signal("TERM");
    let status = node
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exited");
    assert!(status.success());
}
