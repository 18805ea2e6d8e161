//! Placement under concurrency, against a real redis-server: rooms placed at once spread
//! exactly as rooms placed one after another do.

use std::sync::Arc;

use chatfleet_wire::RoomId;
use operator::decide::placement::Strategy;
use operator::reconcile::placing::{Placer, Reserved};
use testkit::Redis;

const NODES: [&str; 3] = ["chat-0", "chat-1", "chat-2"];

/// Places `rooms` rooms of 3 on three empty nodes of 30 seats, `concurrently` or one by one,
/// and returns how many landed on each node.
async fn place_all(rooms: usize, concurrently: bool) -> Vec<usize> {
    let redis = Redis::start().await;
    for node in NODES {
        redis
            .write_report(&testkit::load_report(node, 0, 30, 0.0))
            .await;
    }
    let seats = redis.state().seats;
    let placer = Arc::new(Placer::default());
    let candidates: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
    let place = |n: usize| {
        let (placer, seats, candidates) = (placer.clone(), seats.clone(), candidates.clone());
        async move {
            let room: RoomId = format!("support/room-{n}").parse().unwrap();
            let placed = placer
                .place(
                    "support/chat",
                    &seats,
                    &room,
                    &candidates,
                    3,
                    Strategy::LeastLoaded,
                )
                .await
                .unwrap();
            match placed {
                Some(Reserved::Fits(node)) => node,
                other => panic!("room {n}: {other:?}"),
            }
        }
    };
    let nodes: Vec<String> = if concurrently {
        let tasks: Vec<_> = (0..rooms).map(|n| tokio::spawn(place(n))).collect();
        let mut nodes = Vec::new();
        for task in tasks {
            nodes.push(task.await.unwrap());
        }
        nodes
    } else {
        let mut nodes = Vec::new();
        for n in 0..rooms {
            nodes.push(place(n).await);
        }
        nodes
    };
    NODES
        .iter()
        .map(|node| nodes.iter().filter(|n| n == node).count())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_placements_spread_as_sequential_ones_do() {
    for rooms in [2, 3, 7, 30] {
        let sequential = place_all(rooms, false).await;
        for round in 0..5 {
            let concurrent = place_all(rooms, true).await;
            assert_eq!(
                concurrent, sequential,
                "{rooms} rooms at once, round {round}: {concurrent:?}, one by one: {sequential:?}"
            );
        }
    }
}
