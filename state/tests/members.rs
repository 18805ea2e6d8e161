//! Member state against a real redis-server, and on a real Redis Cluster: read positions only
//! move up, moderation is recorded and published in one step, and closing drops it all.

use std::collections::BTreeMap;

use chatfleet_state::FleetState;
use chatfleet_state::subscription::{Event, Subscription};
use chatfleet_wire::RoomId;
use chatfleet_wire::frames::{Moderation, ModerationAction};
use chatfleet_wire::keys::RoomKeys;
use testkit::{Redis, RedisCluster};

fn room() -> RoomId {
    "support/case-r".parse().unwrap()
}

fn moderation(user: &str, action: ModerationAction) -> Moderation {
    Moderation {
        room: room(),
        user: user.into(),
        action,
        reason: format!("{action:?} {user}"),
        until: (action == ModerationAction::Muted).then_some(99),
        ts: 1,
    }
}

/// What the room's live channel carries next, as text.
async fn next_frame(subscription: &mut Subscription) -> String {
    let event = tokio::time::timeout(std::time::Duration::from_secs(5), subscription.next())
        .await
        .expect("a frame in time");
    match event {
        Some(Event::Message(message)) => {
            String::from_utf8(message.get_payload_bytes().to_vec()).unwrap()
        }
        Some(Event::Moved(channel)) => panic!("the channel {channel} moved"),
        None => panic!("the subscription ended"),
    }
}

async fn exercise(state: &FleetState) {
    let rooms = &state.rooms;
    let mut subscription = Subscription::open(&state.redis).await.unwrap();
    subscription
        .subscribe_room(&RoomKeys::new(&room()).live)
        .await
        .unwrap();

    let reads: BTreeMap<String, u64> = [("ann".into(), 3), ("bob".into(), 5)].into();
    assert_eq!(
        rooms
            .record_reads(&room(), "", &reads, "reads-1")
            .await
            .unwrap(),
        2
    );
    assert_eq!(next_frame(&mut subscription).await, "reads-1");
    // Bob's position may not move back; ann's moves on.
    let reads: BTreeMap<String, u64> = [("ann".into(), 4), ("bob".into(), 2)].into();
    assert_eq!(
        rooms
            .record_reads(&room(), "", &reads, "reads-2")
            .await
            .unwrap(),
        1
    );
    assert_eq!(next_frame(&mut subscription).await, "reads-2");
    // Nothing moved: nothing published (the next frame is the moderation's).
    let stale: BTreeMap<String, u64> = [("bob".into(), 5)].into();
    assert_eq!(
        rooms
            .record_reads(&room(), "", &stale, "reads-3")
            .await
            .unwrap(),
        0
    );

    for (user, action) in [
        ("dana", ModerationAction::Muted),
        ("eve", ModerationAction::Muted),
        ("eve", ModerationAction::Unmuted),
        ("fay", ModerationAction::Muted),
        ("fay", ModerationAction::Removed),
    ] {
        let frame = format!("{user}-{action:?}");
        rooms
            .moderate(&room(), &moderation(user, action), &frame)
            .await
            .unwrap();
        assert_eq!(next_frame(&mut subscription).await, frame);
    }
    let members = rooms.member_state(&room()).await.unwrap();
    assert_eq!(
        members.reads,
        [("ann".to_owned(), 4), ("bob".to_owned(), 5)].into()
    );
    assert_eq!(members.muted, [("dana".to_owned(), 99)].into());
    assert_eq!(
        members.removed,
        [("fay".to_owned(), "Removed fay".to_owned())].into()
    );

    rooms.close(&room(), "", "closed").await.unwrap();
    assert_eq!(
        rooms.member_state(&room()).await.unwrap(),
        Default::default()
    );
    let refused = rooms
        .moderate(&room(), &moderation("dana", ModerationAction::Muted), "x")
        .await;
    assert!(matches!(
        refused,
        Err(chatfleet_state::StateError::RoomClosed)
    ));
}

#[tokio::test]
async fn member_state_on_one_redis() {
    let redis = Redis::start().await;
    exercise(&redis.state()).await;
}

#[tokio::test]
async fn member_state_on_a_cluster() {
    let cluster = RedisCluster::start(3, 0).await;
    exercise(&cluster.state()).await;
}
