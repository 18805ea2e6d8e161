//! The reservation script against a real redis-server, under real concurrency.

use std::collections::HashMap;
use std::sync::Arc;

use chatfleet_state::seats::{SeatStore, Seats};
use chatfleet_wire::RoomId;
use chatfleet_wire::keys;
use chatfleet_wire::load::{LoadReport, RoomLoad};
use redis::AsyncCommands;
use testkit::Redis;

async fn store(redis: &Redis) -> SeatStore {
    redis.state().seats
}

/// Writes a node's load report as a chat node's heartbeat would.
async fn report(redis: &Redis, node: &str, users: u32, limit: u32, draining: bool) {
    let report = LoadReport {
        draining,
        ..testkit::load_report(node, users, limit, 0.0)
    };
    redis.write_report(&report).await;
}

fn room(n: usize) -> RoomId {
    format!("support/room-{n}").parse().unwrap()
}

/// What `peek_many` finds on each of `nodes`, for `room`.
async fn peek_all(seats: &SeatStore, nodes: &[String], room: &RoomId) -> Vec<Seats> {
    let found = seats.peek_many(nodes, room).await.unwrap();
    found.into_iter().map(|n| n.seats).collect()
}

#[tokio::test]
async fn concurrent_reservations_never_oversubscribe_a_node() {
    let redis = Redis::start().await;
    let nodes = ["chat-0", "chat-1", "chat-2"];
    for node in nodes {
        report(&redis, node, 1, 11, false).await;
    }
    let seats = Arc::new(store(&redis).await);
    // 90 rooms of 3 race for 3 nodes with 10 free seats each: 3 rooms fit on each.
    let mut tasks = Vec::new();
    for n in 0..90 {
        let seats = seats.clone();
        tasks.push(tokio::spawn(async move {
            let node = nodes[n % nodes.len()];
            let outcome = seats.reserve(node, &room(n), 3).await.unwrap().seats;
            (node, outcome)
        }));
    }
    let mut reserved: HashMap<&str, u32> = HashMap::new();
    for task in tasks {
        let (node, outcome) = task.await.unwrap();
        match outcome {
            Seats::Reserved { free } => {
                assert!(free >= 3, "reserved with only {free} free");
                *reserved.entry(node).or_default() += 1;
            }
            Seats::Full { free } => assert!(free < 3, "refused with {free} free"),
            other => panic!("unexpected {other:?}"),
        }
    }
    for node in nodes {
        assert_eq!(reserved.get(node), Some(&3), "{node}: {reserved:?}");
        let left = seats.peek_node(node).await.unwrap().seats;
        assert_eq!(left, Seats::Free { free: 1 });
    }
}

#[tokio::test]
async fn reservations_shrink_as_members_arrive_and_release_gives_seats_back() {
    let redis = Redis::start().await;
    report(&redis, "chat-0", 0, 10, false).await;
    let seats = store(&redis).await;
    assert!(matches!(
        seats.reserve("chat-0", &room(1), 4).await.unwrap().seats,
        Seats::Reserved { free: 10 }
    ));
    assert_eq!(
        seats.peek_node("chat-0").await.unwrap().seats,
        Seats::Free { free: 6 }
    );
    // Three of the four arrive: the node counts them as users, the reservation holds one.
    report(&redis, "chat-0", 3, 10, false).await;
    let load = RoomLoad {
        members: 3,
        msg_rate: 0.0,
    };
    let _: () = redis
        .conn()
        .await
        .hset(
            keys::node_rooms("chat-0"),
            room(1).to_string(),
            serde_json::to_string(&load).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        seats.peek_node("chat-0").await.unwrap().seats,
        Seats::Free { free: 6 }
    );
    // The room does not count against itself when it is checked again.
    assert_eq!(
        peek_all(&seats, &["chat-0".to_owned()], &room(1)).await[0],
        Seats::Free { free: 7 }
    );
    seats.release("chat-0", &room(1)).await.unwrap();
    assert_eq!(
        seats.peek_node("chat-0").await.unwrap().seats,
        Seats::Free { free: 7 }
    );
}

#[tokio::test]
async fn dead_and_draining_nodes_take_nothing_but_force_overflows() {
    let redis = Redis::start().await;
    report(&redis, "full", 10, 10, false).await;
    report(&redis, "leaving", 0, 10, true).await;
    let seats = store(&redis).await;
    assert_eq!(
        seats.reserve("gone", &room(1), 2).await.unwrap().seats,
        Seats::Gone
    );
    assert_eq!(
        seats.reserve("leaving", &room(1), 2).await.unwrap().seats,
        Seats::Draining { free: 10 }
    );
    assert_eq!(
        seats.reserve("full", &room(1), 2).await.unwrap().seats,
        Seats::Full { free: 0 }
    );
    assert_eq!(
        seats.force("full", &room(1), 2).await.unwrap().seats,
        Seats::Reserved { free: 0 }
    );
    assert_eq!(
        seats.peek_node("full").await.unwrap().seats,
        Seats::Free { free: -2 }
    );
}

#[tokio::test]
async fn many_nodes_are_peeked_at_once_in_their_order_even_after_redis_forgot_the_script() {
    let redis = Redis::start().await;
    report(&redis, "chat-0", 4, 10, false).await;
    report(&redis, "chat-1", 0, 10, true).await;
    report(&redis, "chat-2", 1, 10, false).await;
    let seats = store(&redis).await;
    // A reservation of the room itself does not count against it; another room's does.
    seats.reserve("chat-2", &room(1), 3).await.unwrap();
    seats.reserve("chat-0", &room(2), 2).await.unwrap();
    let nodes: Vec<String> = ["chat-2", "gone", "chat-1", "chat-0"]
        .map(String::from)
        .into();
    let expected = [
        Seats::Free { free: 9 },
        Seats::Gone,
        Seats::Draining { free: 10 },
        Seats::Free { free: 4 },
    ];
    assert_eq!(peek_all(&seats, &nodes, &room(1)).await, expected);
    // As after a restart or a failover: the server has no scripts cached.
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    assert_eq!(peek_all(&seats, &nodes, &room(1)).await, expected);
    assert!(peek_all(&seats, &[], &room(1)).await.is_empty());
}

/// The contract between the crates: a real node's heartbeat is what the script reads.
#[tokio::test]
async fn a_real_nodes_members_fill_the_reservation_of_their_room() {
    let redis = Redis::start().await;
    let node = testkit::Node::start(&[
        "--redis-url",
        &redis.url(),
        "--node-name",
        "chat-7",
        "--max-node-users",
        "10",
        "--heartbeat-ms",
        "100",
    ])
    .await;
    let seats = store(&redis).await;
    let id: RoomId = "support/case-1".parse().unwrap();
    let ready = async {
        while seats.peek_node("chat-7").await.unwrap().seats == Seats::Gone {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(testkit::PATIENCE, ready)
        .await
        .unwrap();
    assert!(matches!(
        seats.reserve("chat-7", &id, 4).await.unwrap().seats,
        Seats::Reserved { free: 10 }
    ));
    let (_alice, _) = testkit::Client::join(&node.ws_as("support/case-1", "alice", "")).await;
    let (_bob, _) = testkit::Client::join(&node.ws_as("support/case-1", "bob", "")).await;
    // Two users are on the node and two seats are still held for the room's others.
    let filled = async {
        loop {
            let load = redis
                .state()
                .reports
                .room_load("chat-7", &id)
                .await
                .unwrap();
            let free = seats.peek_node("chat-7").await.unwrap().seats;
            if load.members == 2 && free == (Seats::Free { free: 6 }) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(testkit::PATIENCE, filled)
        .await
        .expect("the node's heartbeat should report both members and shrink the reservation");
}

/// The operator counts a node's free seats from its snapshot as the seats script does: the
/// same number for the same report, room loads and reservations.
#[tokio::test]
async fn a_snapshot_counts_free_seats_as_the_script_does() {
    let redis = Redis::start().await;
    report(&redis, "chat-0", 7, 100, false).await;
    let rooms = [("support/a", 2u32), ("support/b", 5), ("support/c", 0)];
    let mut conn = redis.conn().await;
    for (room, members) in rooms {
        let load = format!(r#"{{"members":{members},"msg_rate":0.0}}"#);
        let _: () = conn
            .hset(keys::node_rooms("chat-0"), room, load)
            .await
            .unwrap();
    }
    for (room, seats) in [("support/a", 10u32), ("support/b", 3), ("support/d", 4)] {
        let _: () = conn
            .hset(keys::node_reserved("chat-0"), room, seats)
            .await
            .unwrap();
    }
    let state = redis.state();
    let Seats::Free { free } = state.seats.peek_node("chat-0").await.unwrap().seats else {
        panic!("a live node");
    };
    let snapshot = state.reports.snapshot("chat-0").await.unwrap();
    // 100 - 7 users - (10 - 2) - 0 (b has more members than seats) - 4.
    assert_eq!(snapshot.free_seats(), Some(free));
    assert_eq!(free, 81);
    assert_eq!(snapshot.room_load(&"support/b".parse().unwrap()).members, 5);
    assert!(
        state
            .reports
            .snapshot("chat-9")
            .await
            .unwrap()
            .free_seats()
            .is_none()
    );
}
