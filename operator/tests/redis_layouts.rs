//! The operator on the production layouts of Redis, real processes:
//!
//! - under Sentinel, laid out as charts deploy it (the master and the sentinels each require a
//!   password): it places rooms through the master the sentinels name, and places again,
//!   through the same handle, once they have promoted the replica after the primary died;
//! - on a Redis Cluster of three primaries: it reads reports and reserves seats on nodes whose
//!   keys live on different shards.

use std::time::{Duration, Instant};

use chatfleet_state::seats::Seats;
use chatfleet_wire::RoomId;
use operator::decide::placement::Strategy;
use operator::fleet_redis::{FleetRedis, RedisHealth, RedisPool};
use operator::reconcile::placing::{Placer, Reserved};
use testkit::{Redis, RedisCluster, Sentinels};

const NODES: [&str; 2] = ["chat-0", "chat-1"];

async fn place(placer: &Placer, fleet: &FleetRedis, room: &str) -> anyhow::Result<String> {
    let room: RoomId = room.parse()?;
    let candidates: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
    match placer
        .place(
            "support/chat",
            &fleet.seats,
            &room,
            &candidates,
            3,
            Strategy::LeastLoaded,
        )
        .await?
    {
        Some(Reserved::Fits(node)) => Ok(node),
        other => anyhow::bail!("not placed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_placed_through_the_master_the_sentinels_name_before_and_after_a_failover() {
    let mut primary = Redis::start_guarded("master-secret").await;
    let replica = Redis::start_replica_of(&primary).await;
    let sentinels = Sentinels::start_guarded(&primary, 3, Some("sentinel-secret")).await;
    sentinels.ready(1).await;
    for node in NODES {
        primary
            .write_report(&testkit::load_report(node, 0, 30, 0.0))
            .await;
    }

    let pool = RedisPool::new(Duration::from_secs(3600));
    let fleet = pool.for_url(&sentinels.url()).unwrap();
    let placer = Placer::default();
    testkit::eventually("the operator follows the master", || async {
        fleet.health().await != RedisHealth::Down
    })
    .await;
    let first = place(&placer, &fleet, "support/before").await.unwrap();
    primary.replicated(1).await;

    primary.kill();
    let killed = Instant::now();
    let second = loop {
        match place(&placer, &fleet, "support/after").await {
            Ok(node) => break node,
            Err(error) => {
                assert!(
                    killed.elapsed() < Duration::from_secs(30),
                    "still not placing 30 s after the primary died: {error}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    println!(
        "placing again {:?} after the primary died",
        killed.elapsed()
    );
    assert_eq!(sentinels.master_port().await, Some(replica.port));
    assert_ne!(
        first, second,
        "the reservation made before the failover survived it"
    );
    let kept = fleet.seats.peek_node(&first).await.unwrap();
    assert_eq!(kept.seats, Seats::Free { free: 27 }, "30 seats, 3 reserved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_placed_on_nodes_whose_keys_live_on_different_shards() {
    let cluster = RedisCluster::start(3, 0).await;
    let state = cluster.state();
    for node in NODES {
        let report = testkit::load_report(node, 0, 30, 0.0);
        state
            .reports
            .write(&report, &[], Duration::from_secs(60))
            .await
            .unwrap();
    }
    let shards = [
        cluster
            .primary_of(&chatfleet_wire::keys::node_report(NODES[0]))
            .await,
        cluster
            .primary_of(&chatfleet_wire::keys::node_report(NODES[1]))
            .await,
    ];
    assert_ne!(
        shards[0], shards[1],
        "the nodes' keys should be on two shards"
    );

    let pool = RedisPool::new(Duration::from_secs(3600));
    let fleet = pool.for_url(&cluster.url()).unwrap();
    let placer = Placer::default();
    let mut placed = Vec::new();
    for n in 0..4 {
        placed.push(
            place(&placer, &fleet, &format!("support/spread-{n}"))
                .await
                .unwrap(),
        );
    }
    placed.sort();
    assert_eq!(
        placed,
        ["chat-0", "chat-0", "chat-1", "chat-1"],
        "spread by load"
    );
    for node in NODES {
        let seats = fleet.seats.peek_node(node).await.unwrap();
        assert_eq!(
            seats.seats,
            Seats::Free { free: 24 },
            "{node}: 30 seats, 2 rooms of 3"
        );
    }
    let listed = fleet.reports.fleet().await.unwrap();
    assert_eq!(listed.len(), 2);
}
