//! The webhook queue against a real redis-server and a real Redis Cluster: a job queued
//! twice is one job, a claim leases it from other deliverers until the lease ends, retries
//! keep attempts, and buried jobs become dead letters.

use std::time::Duration;

use chatfleet_state::FleetState;
use chatfleet_state::webhooks::{DeadLetter, Job, WebhookQueue};
use testkit::{Redis, RedisCluster};

async fn exercise(state: &FleetState) {
    let queue = WebhookQueue::new(state.redis.clone(), "support/chat");
    let other_fleet = WebhookQueue::new(state.redis.clone(), "support/other");
    let first = Job::new(
        "evt_1",
        "http://hooks.example/a",
        "{\"id\":\"evt_1\"}".into(),
    );
    let second = Job::new(
        "evt_2",
        "http://hooks.example/a",
        "{\"id\":\"evt_2\"}".into(),
    );
    assert_eq!(
        queue
            .enqueue(&[first.clone(), second.clone()])
            .await
            .unwrap(),
        2
    );
    // The same event reported again is not queued twice.
    assert_eq!(
        queue.enqueue(std::slice::from_ref(&first)).await.unwrap(),
        0
    );
    assert_eq!(queue.pending().await.unwrap(), 2);
    assert!(
        other_fleet
            .claim(10, Duration::from_secs(5))
            .await
            .unwrap()
            .is_empty()
    );

    // One deliverer claims both; another finds nothing while the lease lasts.
    let lease = Duration::from_millis(300);
    let mut claimed = queue.claim(10, lease).await.unwrap();
    claimed.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(claimed, vec![first.clone(), second.clone()]);
    assert!(queue.claim(10, lease).await.unwrap().is_empty());

    // The first is delivered; the second's deliverer dies: it comes back after the lease.
    queue.complete(&first).await.unwrap();
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    let again = queue.claim(10, lease).await.unwrap();
    assert_eq!(again, vec![second.clone()]);

    // A failed attempt is counted and due again after its delay, not before.
    let failed = Job {
        attempts: 1,
        ..second.clone()
    };
    queue
        .retry(&failed, Duration::from_millis(400))
        .await
        .unwrap();
    assert!(queue.claim(10, lease).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let retried = queue.claim(10, lease).await.unwrap();
    assert_eq!(retried, vec![failed.clone()]);

    // A retry of a job another node delivered meanwhile does not bring it back.
    queue.complete(&failed).await.unwrap();
    queue.retry(&failed, Duration::ZERO).await.unwrap();
    assert_eq!(queue.pending().await.unwrap(), 0);

    // Given up: a dead letter, readable, and out of the queue.
    let third = Job::new("evt_3", "http://hooks.example/b", "{}".into());
    queue.enqueue(std::slice::from_ref(&third)).await.unwrap();
    let letter = DeadLetter {
        job: Job {
            attempts: 12,
            ..third
        },
        error: "HTTP 500".into(),
        ts: 7,
    };
    queue.bury(&letter).await.unwrap();
    assert_eq!(queue.dead_letters(10).await.unwrap(), vec![letter]);
    assert_eq!(queue.pending().await.unwrap(), 0);
    assert!(queue.claim(10, lease).await.unwrap().is_empty());
    assert!(other_fleet.dead_letters(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn webhook_queue_on_one_redis() {
    let redis = Redis::start().await;
    exercise(&redis.state()).await;
}

#[tokio::test]
async fn webhook_queue_on_a_cluster() {
    let cluster = RedisCluster::start(3, 0).await;
    exercise(&cluster.state()).await;
}
