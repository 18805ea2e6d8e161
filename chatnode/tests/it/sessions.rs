//! The per-user session limit, fleet-wide: exactly N of many concurrent joins succeed across
//! two nodes, a clean leave frees a slot at once, a killed node's slots expire, and are freed
//! sooner when a join finds the user at the limit with a gone process's slots.

use std::time::{Duration, Instant};

use chatfleet_wire::frames::{ErrorCode, ServerFrame};
use futures_util::future::join_all;

use crate::support::{Client, Node, Redis, assert_error, eventually};

const MAX: usize = 3;

async fn fleet_node(redis: &Redis, name: &str) -> Node {
    let max = MAX.to_string();
    Node::in_fleet(
        redis,
        name,
        &["--max-user-sessions", &max, "--session-ttl-seconds", "2"],
    )
    .await
}

/// Joins and returns the client if welcomed, or None after checking it got `session_limit`.
async fn try_join(url: String) -> Option<Client> {
    let mut client = Client::connect(&url).await;
    match client.recv().await {
        ServerFrame::Welcome(_) => Some(client),
        refused => {
            assert_error(&refused, ErrorCode::SessionLimit);
            let close = client.closed().await.expect("a close after the refusal");
            assert_eq!(u16::from(close.code), 1008);
            None
        }
    }
}

#[tokio::test]
async fn concurrent_joins_of_one_user_over_two_nodes_admit_exactly_the_limit() {
    let redis = Redis::start().await;
    let nodes = [
        fleet_node(&redis, "chat-0").await,
        fleet_node(&redis, "chat-1").await,
    ];
    for round in 0..3 {
        let user = format!("dana-{round}");
        let joins = (0..16).map(|i| {
            let node = &nodes[i % 2];
            try_join(node.ws_as(&format!("support/case-{i}"), &user, ""))
        });
        let admitted: Vec<Client> = join_all(joins).await.into_iter().flatten().collect();
        assert_eq!(admitted.len(), MAX, "round {round}");
    }
}

#[tokio::test]
async fn a_clean_leave_frees_a_slot_at_once() {
    let redis = Redis::start().await;
    let node = fleet_node(&redis, "chat-0").await;
    let mut held = Vec::new();
    for i in 0..MAX {
        held.push(
            try_join(node.ws_as(&format!("support/r{i}"), "eve", ""))
                .await
                .unwrap(),
        );
    }
    assert!(
        try_join(node.ws_as("support/r9", "eve", ""))
            .await
            .is_none()
    );
    held.pop().unwrap().leave().await;
    eventually("the freed slot to be usable", || async {
        try_join(node.ws_as("support/r9", "eve", ""))
            .await
            .is_some()
    })
    .await;
}

#[tokio::test]
async fn a_killed_nodes_sessions_expire_and_free_their_slots() {
    let redis = Redis::start().await;
    let doomed = fleet_node(&redis, "chat-0").await;
    let other = fleet_node(&redis, "chat-1").await;
    let mut held = Vec::new();
    for i in 0..MAX {
        held.push(
            try_join(doomed.ws_as(&format!("support/k{i}"), "finn", ""))
                .await
                .unwrap(),
        );
    }
    assert!(
        try_join(other.ws_as("support/k9", "finn", ""))
            .await
            .is_none()
    );
    // The slots outlive the node by the session TTL (2 s here), not forever.
    doomed.signal("KILL");
    eventually("the dead node's slots to expire", || async {
        try_join(other.ws_as("support/k9", "finn", ""))
            .await
            .is_some()
    })
    .await;
}

/// A killed node's slots are freed once its report expires (0.6 s here), long before their
/// own TTL (60 s) would free them; a node restarted under the same name is another process,
/// whose predecessor's slots go although a report under the name is fresh. A node that lives
/// keeps its slots, however long the others wait.
#[tokio::test]
async fn a_gone_processes_slots_are_freed_by_its_report_not_their_ttl() {
    let redis = Redis::start().await;
    let flags = ["--max-user-sessions", "3", "--session-ttl-seconds", "60"];
    let doomed = Node::in_fleet(&redis, "chat-0", &flags).await;
    let other = Node::in_fleet(&redis, "chat-1", &flags).await;
    let mut held = Vec::new();
    for i in 0..MAX {
        let url = doomed.ws_as(&format!("support/d{i}"), "finn", "");
        held.push(try_join(url).await.unwrap());
    }
    // Both nodes report for far longer than a report lives: nothing is freed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        try_join(other.ws_as("support/d9", "finn", ""))
            .await
            .is_none()
    );

    let killed = Instant::now();
    doomed.signal("KILL");
    eventually("the killed node's slots to be freed", || async {
        try_join(other.ws_as("support/d9", "finn", ""))
            .await
            .is_some()
    })
    .await;
    println!(
        "a killed node's slots freed {:.2} s after the kill (their TTL: 60 s)",
        killed.elapsed().as_secs_f64()
    );

    // chat-1 restarts: a report under its name stays fresh, written by the new process.
    let mut on_chat1 = Vec::new();
    for i in 0..MAX - 1 {
        let url = other.ws_as(&format!("support/r{i}"), "gwen", "");
        on_chat1.push(try_join(url).await.unwrap());
    }
    let third = Node::in_fleet(&redis, "chat-2", &flags).await;
    on_chat1.push(
        try_join(third.ws_as("support/r8", "gwen", ""))
            .await
            .unwrap(),
    );
    other.signal("KILL");
    let restarted = Node::in_fleet(&redis, "chat-1", &flags).await;
    eventually("the old chat-1's slots to be freed", || async {
        try_join(restarted.ws_as("support/r9", "gwen", ""))
            .await
            .is_some()
    })
    .await;
}

#[tokio::test]
async fn standalone_nodes_apply_the_limit_too() {
    let node = Node::start(&["--max-user-sessions", "1"]).await;
    let _first = try_join(node.ws_as("support/s", "gus", "")).await.unwrap();
    assert!(try_join(node.ws_as("support/s", "gus", "")).await.is_none());
    assert!(try_join(node.ws_as("support/s", "hal", "")).await.is_some());
}
