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
use chatfleet_wire::transcript::{MemberEvent, Transcript, TranscriptEntry};
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

fn settings(incarnation: &str) -> RoomSettings {
    RoomSettings {
        max_members: 5,
        created_ms: 1,
        incarnation: incarnation.into(),
    }
}

async fn exercise(state: FleetState) {
    let retention = TranscriptSettings {
        max_entries: 1000,
        retention: RETENTION,
    };
    let rooms = state.rooms.clone().with_transcripts(retention);
    let log = MessageLog::new(rooms.clone(), 100);
    let keys = RoomKeys::new(&room());
    let first = keys.transcript_of("inc-1");
    rooms.create(&room(), settings("inc-1")).await.unwrap();
    let hi = r#","body":"hi"}"#;
    log.append(&room(), "inc-1", hi, 0, None).await.unwrap();
    rooms
        .record_transcript(&room(), "inc-1", &[left("ann")])
        .await
        .unwrap();

    let closed_now = rooms.close(&room(), "", "resolved").await.unwrap();
    assert_eq!(closed_now.as_deref(), Some("inc-1"), "the current one");
    let after_close = ttl(&state, &first).await;
    assert!(
        (1..=40).contains(&after_close),
        "retention set: {after_close}"
    );
    // A second close (a retried DELETE) changes nothing.
    assert_eq!(rooms.close(&room(), "inc-1", "again").await.unwrap(), None);

    // A leave a node recorded before it learned of the close, flushed a tick late, and the
    // heartbeat's refresh of a room still hosted: the retention stays as the close set it.
    let late = [left("bob")];
    let recorded = rooms.record_transcript(&room(), "inc-1", &late).await;
    assert_eq!(recorded.unwrap(), 1);
    rooms
        .refresh(&[(room(), "inc-1".to_owned())])
        .await
        .unwrap();
    let now = ttl(&state, &first).await;
    assert!(
        (1..=40).contains(&now),
        "the retention is never lengthened: {now}"
    );
    let (incarnation, entries) = rooms.transcript(&room(), None).await.unwrap().unwrap();
    assert_eq!(
        incarnation, "inc-1",
        "the name stands for the one closed last"
    );
    let transcript = Transcript::assemble(room(), entries.iter().map(String::as_str));
    let last = transcript.entries.last().unwrap();
    assert!(
        matches!(last, TranscriptEntry::Closed { reason, .. } if reason == "resolved"),
        "the first close stays the last entry: {transcript:?}"
    );
    // The message (a bare test frame the assembly skips), two leaves, the close.
    assert_eq!(entries.len(), 4, "{entries:?}");

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
    let read = rooms.record_reads(&room(), "inc-1", &reads, "x").await;
    assert_eq!(read.unwrap(), 0);
    assert!(closed(rooms.position(&room(), "", 0).await));
    assert!(closed(rooms.position(&room(), "inc-1", 7).await));
    assert!(closed(rooms.create(&room(), settings("inc-1")).await));
    assert!(closed(rooms.create(&room(), settings("")).await));
    assert!(closed(log.append(&room(), "inc-1", hi, 0, None).await));
    assert!(closed(log.append(&room(), "", hi, 0, None).await));
    for key in keys.state() {
        assert!(!exists(&state, key).await, "{key} came back");
    }
    assert!(rooms.is_closed(&room(), "").await.unwrap());

    // The name used again (a ChatRoom applied anew): a new incarnation opens, the old one
    // stays closed and keeps its own transcript and retention.
    rooms.create(&room(), settings("inc-2")).await.unwrap();
    assert!(!rooms.is_closed(&room(), "").await.unwrap());
    assert!(rooms.is_closed(&room(), "inc-1").await.unwrap());
    assert!(closed(log.append(&room(), "inc-1", hi, 0, None).await));
    assert!(closed(rooms.position(&room(), "inc-1", 0).await));
    assert_eq!(rooms.transcript(&room(), None).await.unwrap(), None);
    log.append(&room(), "inc-2", hi, 0, None).await.unwrap();
    let (incarnation, entries) = rooms.transcript(&room(), None).await.unwrap().unwrap();
    assert_eq!((incarnation.as_str(), entries.len()), ("inc-2", 1));
    let (_, old) = rooms
        .transcript(&room(), Some("inc-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(old.len(), 4, "the first room's record is its own: {old:?}");
    rooms
        .refresh(&[(room(), "inc-2".to_owned())])
        .await
        .unwrap();
    let now = ttl(&state, &first).await;
    assert!(
        (1..=40).contains(&now),
        "the new room's refresh leaves the old transcript: {now}"
    );
    let closed_now = rooms.close(&room(), "", "done").await.unwrap();
    assert_eq!(closed_now.as_deref(), Some("inc-2"));
    let (incarnation, _) = rooms.transcript(&room(), None).await.unwrap().unwrap();
    assert_eq!(incarnation, "inc-2", "the one closed last");

    // Once a retention ran out, a late entry does not make the transcript again.
    let _: () = redis::cmd("DEL")
        .arg(&first)
        .query_async(&mut state.redis.conn())
        .await
        .unwrap();
    let late = [left("eve")];
    let recorded = rooms.record_transcript(&room(), "inc-1", &late).await;
    assert_eq!(recorded.unwrap(), 0);
    assert!(!exists(&state, &first).await);
}

/// A room closed before incarnations has a plain string mark: it stays closed to everything
/// of the room without one, and a new incarnation (a ChatRoom applied again) still opens.
async fn a_mark_from_before_incarnations(state: FleetState) {
    let rooms = state.rooms.clone();
    let keys = RoomKeys::new(&room());
    let _: () = redis::cmd("SET")
        .arg(&keys.closed)
        .arg(1)
        .arg("EX")
        .arg(600)
        .query_async(&mut state.redis.conn())
        .await
        .unwrap();
    assert!(rooms.is_closed(&room(), "").await.unwrap());
    assert!(closed(rooms.position(&room(), "", 0).await));
    assert!(closed(rooms.create(&room(), settings("")).await));
    assert_eq!(rooms.close(&room(), "", "again").await.unwrap(), None);
    assert_eq!(rooms.current_incarnation(&room()).await.unwrap(), "");
    let log = MessageLog::new(rooms.clone(), 10);
    assert!(closed(log.append(&room(), "", "}", 0, None).await));
    rooms.create(&room(), settings("inc-9")).await.unwrap();
    assert!(!rooms.is_closed(&room(), "").await.unwrap());
    assert!(rooms.is_closed(&room(), "").await.is_ok());
    log.append(&room(), "inc-9", "}", 0, None).await.unwrap();
    assert!(
        ttl(&state, &keys.closed).await > 0,
        "the old mark keeps its expiry"
    );
}

#[tokio::test]
async fn a_mark_from_before_incarnations_on_one_redis() {
    let redis = Redis::start().await;
    a_mark_from_before_incarnations(redis.state()).await;
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
