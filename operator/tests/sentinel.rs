//! The operator on a Redis run under Sentinel, real processes, laid out as charts deploy it
//! (the master and the sentinels each require a password): it places rooms through the
//! master the sentinels name, and places again, through the same handle, once they have
//! promoted the replica after the primary died.

use std::time::{Duration, Instant};

use chatfleet_state::seats::Seats;
use chatfleet_wire::RoomId;
use operator::decide::placement::Strategy;
use operator::fleet_redis::{FleetRedis, RedisHealth, RedisPool};
use operator::reconcile::placing::{Placer, Reserved};
use testkit::{Redis, Sentinels};

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
