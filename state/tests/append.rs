//! The append script against a real redis-server: ids, dedup, and the TTLs it keeps on a
//! room's keys while refreshing them only now and then.

use std::time::Duration;

use chatfleet_state::rooms::MessageLog;
use chatfleet_wire::RoomId;
use chatfleet_wire::keys::RoomKeys;
use redis::AsyncCommands;
use testkit::Redis;

const TTL: Duration = Duration::from_secs(3600);

fn room() -> RoomId {
    "support/case-1".parse().unwrap()
}

async fn log(redis: &Redis) -> MessageLog {
    let mut state = redis.state();
    state.rooms = chatfleet_state::rooms::RoomStore::new(state.redis.clone(), TTL);
    MessageLog::new(state.rooms, 100)
}

async fn ttl(redis: &Redis, key: &str) -> i64 {
    redis.conn().await.ttl(key).await.unwrap()
}

#[tokio::test]
async fn every_key_of_a_room_expires_and_gets_its_ttl_back_once_it_ran_down() {
    let redis = Redis::start().await;
    let log = log(&redis).await;
    let keys = RoomKeys::new(&room());
    let first = log
        .append(&room(), "", r#","body":"one"}"#, 0, None)
        .await
        .unwrap();
    assert_eq!(first.id, 1);
    for key in [&keys.seq, &keys.log, &keys.epoch] {
        let left = ttl(&redis, key).await;
        assert!(left > 3500 && left <= 3600, "{key}: {left}");
    }
    // A dedup set made by a later send expires too, though the counter's TTL is fresh.
    log.append(&room(), "", r#","body":"two"}"#, 0, Some("ann\nc-1"))
        .await
        .unwrap();
    let left = ttl(&redis, &keys.sent).await;
    assert!(left > 3500 && left <= 3600, "sent: {left}");

    // Within the slack, a send does not touch the TTLs...
    let mut conn = redis.conn().await;
    for key in [&keys.seq, &keys.log, &keys.epoch] {
        let _: () = conn.expire(key, 3590).await.unwrap();
    }
    log.append(&room(), "", r#","body":"three"}"#, 0, None)
        .await
        .unwrap();
    assert!(
        ttl(&redis, &keys.log).await <= 3590,
        "not refreshed within the slack"
    );
    // ...once they ran down past it, the next send gives every key its full TTL back.
    for key in [&keys.seq, &keys.log, &keys.epoch] {
        let _: () = conn.expire(key, 100).await.unwrap();
    }
    log.append(&room(), "", r#","body":"four"}"#, 0, None)
        .await
        .unwrap();
    for key in [&keys.seq, &keys.log, &keys.epoch] {
        let left = ttl(&redis, key).await;
        assert!(left > 3500, "{key} refreshed: {left}");
    }
}

#[tokio::test]
async fn a_retried_send_gets_its_first_id_and_the_dedup_set_stays_bounded() {
    let redis = Redis::start().await;
    let log = log(&redis).await;
    let keys = RoomKeys::new(&room());
    let first = log
        .append(&room(), "", r#","body":"hi"}"#, 0, Some("ann\nretry"))
        .await
        .unwrap();
    let again = log
        .append(&room(), "", r#","body":"hi"}"#, 0, Some("ann\nretry"))
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
    assert!(again.frame.is_none(), "a duplicate is not delivered again");
    for n in 0..300 {
        let dedup = format!("ann\nc-{n}");
        log.append(&room(), "", r#","body":"x"}"#, 0, Some(&dedup))
            .await
            .unwrap();
    }
    let kept: usize = redis.conn().await.zcard(&keys.sent).await.unwrap();
    // History is 100 messages; trimming every 64 ids keeps at most 100 + 64 entries.
    assert!(kept <= 164, "dedup entries kept: {kept}");
    assert!(kept >= 100, "recent sends still deduplicate: {kept}");
}

/// Redis lost messages a node delivered (a failover to a replica that was behind): ids go on
/// above what the node delivered, and the log begins a new epoch, whether the node notices
/// on its next read of the log's position or on its next append.
#[tokio::test]
async fn a_log_behind_what_a_node_delivered_moves_up_in_a_new_epoch() {
    let redis = Redis::start().await;
    let log = log(&redis).await;
    let keys = RoomKeys::new(&room());
    let tail = r#","body":"x"}"#;
    for _ in 0..3 {
        log.append(&room(), "", tail, 0, None).await.unwrap();
    }
    let (latest, epoch) = log.rooms().position(&room(), "", 3).await.unwrap();
    assert_eq!(latest, 3);
    let caught_up = log.append(&room(), "", tail, 3, None).await.unwrap();
    assert_eq!((caught_up.id, caught_up.renewed), (4, false));
    assert_eq!(caught_up.epoch, epoch, "nothing lost, same epoch");

    // The log kept ids 1 and 2 only, as a replica promoted too early would.
    let mut conn = redis.conn().await;
    let _: () = conn.set(&keys.seq, 2).await.unwrap();
    let _: () = redis::cmd("XTRIM")
        .arg(&keys.log)
        .arg("MAXLEN")
        .arg(2)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (latest, noticed) = log.rooms().position(&room(), "", 4).await.unwrap();
    assert_eq!(latest, 4, "ids never go backwards");
    assert_ne!(noticed, epoch, "a gap begins a new epoch");
    let next = log.append(&room(), "", tail, 4, None).await.unwrap();
    assert_eq!((next.id, next.renewed, &next.epoch), (5, false, &noticed));

    // The same loss met first by an append.
    let _: () = conn.set(&keys.seq, 2).await.unwrap();
    let appended = log.append(&room(), "", tail, 5, None).await.unwrap();
    assert_eq!(appended.id, 6);
    assert!(appended.renewed);
    assert_ne!(appended.epoch, noticed);

    // The counter alone was evicted while the log survived: nothing was lost.
    let _: () = conn.del(&keys.seq).await.unwrap();
    let (latest, same) = log.rooms().position(&room(), "", 6).await.unwrap();
    assert_eq!((latest, &same), (6, &appended.epoch));
}
