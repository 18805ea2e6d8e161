//! A closed room is final, against a real redis-server and a real Redis Cluster: the close is
//! the transcript's last entry, its retention is set once and never lengthened or shortened,
//! and no write path (joins and leaves flushed late, the heartbeat's refresh, a mute, a read,
//! a room task starting, a create, an append) brings any key of the room back.

use std::time::Duration;

use chatfleet_state::rooms::{MessageLog, RoomSettings};
use chatfleet_state::transcripts::TranscriptSettings;
use chatfleet_state::{FleetState, StateError};
use chatfleet_wire::RoomId;
use chatfleet_wire::frames::{Moderation, ModerationAction};
use chatfleet_wire::keys::RoomKeys;
use chatfleet_wire::transcript::{MemberEvent, TranscriptEntry};
use testkit::{Redis, RedisCluster};

const RETENTION: Duration = Duration::from_secs(40);

fn room() -> RoomId {
    "support/case-final".parse().unwrap()
}

fn left(user: &str) -> String {
    TranscriptEntry::Left(MemberEvent {
        user: user.into(),
        name: user.into(),
        role: chatfleet_wire::frames::Role::Customer,
        ts: 2,
        after: 1,
    })
    .to_json()
}

async fn ttl(state: &FleetState, key: &str) -> i64 {
    redis::cmd("TTL")
        .arg(key)
        .query_async(&mut state.redis.conn())
        .await
        .unwrap()
}

async fn exists(state: &FleetState, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(&mut state.redis.conn())
        .await
        .unwrap()
        == 1
}

fn closed<T: std::fmt::Debug>(result: Result<T, StateError>) -> bool {
    matches!(result, Err(StateError::RoomClosed))
}

async fn exercise(state: FleetState) {
    let settings = TranscriptSettings {
        max_entries: 1000,
        retention: RETENTION,
    };
    let rooms = state.rooms.clone().with_transcripts(settings);
    let log = MessageLog::new(rooms.clone(), 100);
    let keys = RoomKeys::new(&room());
    let created = RoomSettings {
        max_members: 5,
        created_ms: 1,
    };
    rooms.create(&room(), created).await.unwrap();
    log.append(&room(), r#","body":"hi"}"#, 0, None)
        .await
        .unwrap();
    rooms
        .record_transcript(&room(), &[left("ann")])
        .await
        .unwrap();

    assert!(rooms.close(&room(), "resolved").await.unwrap());
    let after_close = ttl(&state, &keys.transcript).await;
    assert!(
        (1..=40).contains(&after_close),
        "retention set: {after_close}"
    );
    // A second close (a retried DELETE) changes nothing.
    assert!(!rooms.close(&room(), "again").await.unwrap());

    // A leave a node recorded before it learned of the close, flushed a tick late, and the
    // heartbeat's refresh of a room still hosted: the retention stays as the close set it.
    assert_eq!(
        rooms
            .record_transcript(&room(), &[left("bob")])
            .await
            .unwrap(),
        1
    );
    rooms.refresh(&[room()]).await.unwrap();
    let now = ttl(&state, &keys.transcript).await;
    assert!(
        (1..=40).contains(&now),
        "the retention is never lengthened: {now}"
    );
    let entries = rooms.transcript(&room()).await.unwrap().unwrap();
    let transcript = chatfleet_wire::transcript::Transcript::assemble(
        room(),
        entries.iter().map(String::as_str),
    );
    let last = transcript.entries.last().unwrap();
    assert!(
        matches!(last, TranscriptEntry::Closed { reason, .. } if reason == "resolved"),
        "the first close stays the last entry: {transcript:?}"
    );
    // The message (a bare test frame the assembly skips), two leaves, the close.
    assert_eq!(entries.len(), 4, "{entries:?}");
    // Once the retention ran out, a late entry does not make the transcript again.
    let _: () = redis::cmd("DEL")
        .arg(&keys.transcript)
        .query_async(&mut state.redis.conn())
        .await
        .unwrap();
    assert_eq!(
        rooms
            .record_transcript(&room(), &[left("eve")])
            .await
            .unwrap(),
        0
    );
    assert!(!exists(&state, &keys.transcript).await);

    // Writes racing or following the close bring nothing back.
    let mute = Moderation {
        room: room(),
        user: "ann".into(),
        action: ModerationAction::Muted,
        reason: "wait".into(),
        until: Some(99),
        ts: 1,
    };
    assert!(closed(rooms.moderate(&room(), &mute, "x").await));
    let reads = [("ann".to_owned(), 1)].into();
    assert_eq!(rooms.record_reads(&room(), &reads, "x").await.unwrap(), 0);
    assert!(closed(rooms.position(&room(), 0).await));
    assert!(closed(rooms.position(&room(), 7).await));
    assert!(closed(rooms.create(&room(), created).await));
    assert!(closed(
        log.append(&room(), r#","body":"late"}"#, 0, None).await
    ));
    for key in keys.state() {
        assert!(!exists(&state, key).await, "{key} came back");
    }
}

#[tokio::test]
async fn a_closed_room_is_final_on_one_redis() {
    let redis = Redis::start().await;
    exercise(redis.state()).await;
}

#[tokio::test]
async fn a_closed_room_is_final_on_a_cluster() {
    let cluster = RedisCluster::start(3, 0).await;
    exercise(cluster.state()).await;
}
