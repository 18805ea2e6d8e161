//! Session slots and room seats against a real redis-server: the slots of a process that is
//! gone are freed at once, and a live node takes back what it lost while Redis stalled.

use std::time::Duration;

use chatfleet_state::sessions::Claim;
use chatfleet_wire::RoomId;
use chatfleet_wire::keys;
use chatfleet_wire::session_id::Holder;
use redis::AsyncCommands;
use testkit::Redis;

const TTL: Duration = Duration::from_secs(60);

/// `node`'s report as a process with `boot` writes it.
async fn report(redis: &Redis, holder: &Holder) {
    let report = chatfleet_wire::load::LoadReport {
        boot: holder.boot.clone(),
        ..testkit::load_report(&holder.node, 1, 300, 0.0)
    };
    redis.write_report(&report).await;
}

#[tokio::test]
async fn the_seats_of_a_gone_process_are_freed_and_a_live_ones_kept() {
    let redis = Redis::start().await;
    let seats = redis.state().room_seats;
    let room: RoomId = "support/full".parse().unwrap();
    let alive = Holder::new_boot("chat-0");
    let dead = Holder::new_boot("chat-1"); // its node no longer reports
    let restarted = Holder::new_boot("chat-2"); // its node reports another boot now
    let unknown = "chat-3-legacy-id"; // not a process-named id: kept
    report(&redis, &alive).await;
    report(&redis, &Holder::new_boot("chat-2")).await;
    for session in [
        alive.session(0),
        dead.session(0),
        dead.session(1),
        restarted.session(0),
        unknown.to_owned(),
    ] {
        assert_eq!(
            seats.claim(&room, &session, 5, TTL).await.unwrap(),
            Claim::Taken
        );
    }
    assert_eq!(
        seats.claim(&room, &alive.session(1), 5, TTL).await.unwrap(),
        Claim::AtLimit
    );

    assert_eq!(seats.free_gone(&room).await.unwrap(), 3);
    let mut held = seats.holders(&room).await.unwrap();
    held.sort();
    assert_eq!(held, vec![alive.session(0), unknown.to_owned()]);
    // Nothing else is gone: a second pass frees nothing.
    assert_eq!(seats.free_gone(&room).await.unwrap(), 0);
}

#[tokio::test]
async fn a_refresh_takes_back_lost_slots_while_the_limit_has_room() {
    let redis = Redis::start().await;
    let sessions = redis.state().sessions;
    let node = Holder::new_boot("chat-0");
    let other = Holder::new_boot("chat-1");
    let (kept, lost, ended, crowded) = (
        node.session(0),
        node.session(1),
        node.session(2),
        node.session(3),
    );
    for session in [&kept, &lost, &ended, &crowded] {
        assert_eq!(
            sessions.claim("dana", session, 4, TTL).await.unwrap(),
            Claim::Taken
        );
    }
    // While the node could not reach Redis: two of its slots were freed (believed gone, or
    // expired), an administrator ended one, and another node's sessions took two free slots.
    let key = keys::user_sessions("dana");
    let mut conn = redis.conn().await;
    let _: () = conn.zrem(&key, &[&lost, &crowded]).await.unwrap();
    sessions.end("dana", Some(&ended)).await.unwrap();
    for n in 0..2 {
        assert_eq!(
            sessions
                .claim("dana", &other.session(n), 4, TTL)
                .await
                .unwrap(),
            Claim::Taken
        );
    }

    let all: Vec<(String, String)> = [&kept, &lost, &ended, &crowded]
        .iter()
        .map(|s| (s.to_string(), "dana".to_owned()))
        .collect();
    let gone = sessions.refresh(&all, 4, TTL).await.unwrap();
    // The ended one is gone for good; of the two lost, one fits again beside the other node's
    // sessions, the other does not: the limit is never passed.
    assert_eq!(gone, vec![ended.clone(), crowded.clone()]);
    let mut live: Vec<String> = sessions
        .list("dana")
        .await
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    live.sort();
    let mut expected = vec![kept, lost, other.session(0), other.session(1)];
    expected.sort();
    assert_eq!(live, expected);
}
