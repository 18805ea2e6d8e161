//! Redis Cluster, real processes made with `redis-cli --cluster create`: rooms, sessions and
//! live channels spread over three primaries; a primary killed mid-chat while its replica
//! takes over; a room's slot moved to another primary while the room chats. Every member
//! receives every acknowledged message once, in order.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chatfleet_wire::RoomId;
use chatfleet_wire::frames::ErrorCode;
use chatfleet_wire::keys::RoomKeys;

use crate::support::{Client, Node, RedisCluster, assert_error};

/// How long a failover or a slot move may interrupt chatting here.
const INTERRUPTION_LIMIT: Duration = Duration::from_secs(30);
const QUIET: Duration = Duration::from_secs(2);

async fn cluster_nodes(cluster: &RedisCluster) -> (Node, Node) {
    let url = cluster.url();
    let args = ["--max-user-sessions", "3"];
    (
        Node::on_redis(&url, "chat-0", &args).await,
        Node::on_redis(&url, "chat-1", &args).await,
    )
}

fn seq_key(room: &str) -> String {
    RoomKeys::new(&room.parse::<RoomId>().unwrap()).seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_sessions_and_live_channels_work_across_the_shards() {
    let cluster = RedisCluster::start(3, 0).await;
    let (one, two) = cluster_nodes(&cluster).await;
    let rooms: Vec<String> = (0..6).map(|n| format!("support/spread-{n}")).collect();
    let mut shards = HashSet::new();
    for room in &rooms {
        shards.insert(cluster.primary_of(&seq_key(room)).await);
    }
    assert!(shards.len() > 1, "the rooms should span shards: {shards:?}");

    // Each room has a member on each node; a message reaches both, once.
    for room in &rooms {
        let (mut ann, _) = Client::join(&one.ws_as(room, "ann", "")).await;
        let (mut bob, _) = Client::join(&two.ws_as(room, "bob", "")).await;
        // One sender after the other, so the order is known.
        ann.say_as("hello", "k-1").await;
        assert_eq!(bob.message().await.content.body, "hello", "{room}");
        bob.say_as("hi", "k-2").await;
        let expected = [(1, "hello".to_owned()), (2, "hi".to_owned())];
        assert_eq!(
            ann.messages_until_quiet(QUIET / 4).await,
            expected,
            "{room}"
        );
        let rest = bob.messages_until_quiet(QUIET / 4).await;
        assert_eq!(rest, expected[1..], "{room}");
        // A newcomer on either node reads the history from the room's shard.
        let (mut cat, _) = Client::join(&one.ws_as(room, "cat", "&since=0")).await;
        assert_eq!(
            cat.messages_until_quiet(QUIET / 4).await,
            expected,
            "{room}"
        );
    }

    // The session limit holds across nodes: the user's keys share one slot.
    let mut held = Vec::new();
    for n in 0..3 {
        let node = if n % 2 == 0 { &one } else { &two };
        let (client, _) = Client::join(&node.ws_as("support/spread-0", "dana", "")).await;
        held.push(client);
    }
    let mut refused = Client::connect(&two.ws_as("support/spread-1", "dana", "")).await;
    assert_error(&refused.recv().await, ErrorCode::SessionLimit);

    // Both nodes' load reports are readable, each from its own slot.
    let fleet = cluster.state().reports.fleet().await.unwrap();
    let mut names: Vec<String> = fleet.into_iter().map(|(report, _)| report.node).collect();
    names.sort();
    assert_eq!(names, ["chat-0", "chat-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatting_resumes_after_a_primary_dies_and_its_replica_takes_over() {
    let mut cluster = RedisCluster::start(3, 1).await;
    let (one, two) = cluster_nodes(&cluster).await;
    let room = "support/failover";
    let (mut ann, _) = Client::join(&one.ws_as(room, "ann", "")).await;
    let (mut bob, _) = Client::join(&two.ws_as(room, "bob", "")).await;
    ann.say_as("before", "k-before").await;
    assert_eq!(ann.message().await.content.body, "before");
    assert_eq!(bob.message().await.content.body, "before");
    let primary = cluster.primary_of(&seq_key(room)).await;
    cluster.nodes[primary].as_ref().unwrap().replicated(1).await;

    cluster.kill(primary);
    let killed = Instant::now();
    let (after, refusals) = ann
        .say_until_accepted("after", "k-after", INTERRUPTION_LIMIT)
        .await;
    println!(
        "cluster failover: chatting resumed {:?} after the primary was killed ({refusals} sends refused meanwhile)",
        killed.elapsed()
    );
    assert_eq!(after.id, 2);
    assert_eq!(
        bob.messages_until_quiet(QUIET).await,
        [(2, "after".to_owned())]
    );
    let (mut cat, _) = Client::join(&two.ws_as(room, "cat", "&since=0")).await;
    let history: Vec<String> = cat
        .messages_until_quiet(QUIET)
        .await
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    assert_eq!(history, ["before", "after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_chats_on_while_its_slot_moves_to_another_primary() {
    let cluster = RedisCluster::start(3, 0).await;
    let (one, two) = cluster_nodes(&cluster).await;
    let room = "support/moving";
    let (mut ann, _) = Client::join(&one.ws_as(room, "ann", "")).await;
    let (mut bob, _) = Client::join(&two.ws_as(room, "bob", "")).await;
    let slot = cluster.slot_of(&seq_key(room)).await;
    let from = cluster.primary_of(&seq_key(room)).await;
    let to = (from + 1) % 3;

    const MESSAGES: usize = 40;
    let sender = tokio::spawn(async move {
        let mut refusals = 0;
        for n in 0..MESSAGES {
            let (_, refused) = ann
                .say_until_accepted(&format!("m-{n}"), &format!("k-{n}"), INTERRUPTION_LIMIT)
                .await;
            refusals += refused;
            // Under the rate limit of 10 a second.
            tokio::time::sleep(Duration::from_millis(110)).await;
        }
        (ann, refusals)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.move_slot(slot, to).await;
    assert_eq!(cluster.primary_of(&seq_key(room)).await, to);
    let (_ann, refusals) = sender.await.unwrap();
    println!("slot {slot} moved while the room chatted ({refusals} sends refused)");

    let received = bob.messages_until_quiet(QUIET).await;
    let bodies: Vec<String> = received.iter().map(|(_, body)| body.clone()).collect();
    let expected: Vec<String> = (0..MESSAGES).map(|n| format!("m-{n}")).collect();
    assert_eq!(bodies, expected, "every message once, in order");
    let ids: Vec<u64> = received.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (1..=MESSAGES as u64).collect::<Vec<_>>());
}
