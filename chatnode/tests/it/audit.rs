//! The record audit: scripted support conversations in many rooms over three real nodes and a
//! real Redis, with everything that has broken the record before: closes, the same names opened
//! again (new incarnations), mutes racing closes, retried sends, a node stopped with SIGTERM and
//! one killed with SIGKILL; and, on Redis under Sentinel, a failover that loses writes. At the
//! end, for every room incarnation, the transcript, the history pages and the webhook stream
//! are compared with what the clients saw acknowledged: every acknowledged message exactly once
//! and in order, joins and leaves present, the close last, the retention as configured, no
//! entry of one incarnation in another, and every gap reported, never silent.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chatfleet_state::rooms::RoomSettings;
use chatfleet_wire::RoomId;
use chatfleet_wire::frames::{ErrorCode, Moderation, ModerationAction, ServerFrame, Welcome};
use chatfleet_wire::keys::RoomKeys;
use chatfleet_wire::transcript::{Transcript, TranscriptEntry};
use chatfleet_wire::webhook::EventBody;

use crate::support::{
    API_KEY, Client, Node, Redis, Sentinels, WebhookReceiver, assert_error, eventually,
    token_for_incarnation,
};

const HOOK_SECRET: &str = "audit-webhook-secret";
const RETENTION_SECONDS: u64 = 600;
const ROOMS: usize = 4;

/// One room incarnation as its clients saw it.
#[derive(Default)]
struct Seen {
    /// Acknowledged messages: id → body (a sender's own message coming back is its ack).
    acked: BTreeMap<u64, String>,
    /// Users who joined it.
    members: BTreeSet<String>,
}

/// A node of the audited fleet (a process, so it can be stopped and killed), ready when this
/// returns: drains at once, delivers every event (messages too) to `hook`, keeps transcripts
/// for the audited retention.
async fn start_node(url: &str, name: &str, hook: &str) -> Node {
    let args = [
        "--drain-notice-ms",
        "0",
        "--drain-seconds",
        "5",
        "--fleet",
        "support/audit",
        "--webhook-url",
        hook,
        "--webhook-allow-private-networks",
        "--webhook-secret",
        HOOK_SECRET,
        "--webhook-messages",
        "--webhook-retry-ms",
        "100",
        "--transcript-retention-seconds",
        "600",
    ];
    Node::on_redis(url, name, &args).await
}

fn room(n: usize) -> String {
    format!("support/audit-{n}")
}

/// Each room's customer and agent: one session each per room (the fleet allows three a user).
fn cust_of(n: usize) -> String {
    format!("cust-{n}")
}

fn agent_of(n: usize) -> String {
    format!("agent-{n}")
}

/// Joins one incarnation of `room` on `node` as `user`, resuming after `since` when given.
async fn join(
    node: &Node,
    room: &str,
    incarnation: &str,
    user: &str,
    since: Option<(u64, &str)>,
) -> (Client, Welcome) {
    let token = token_for_incarnation(room, incarnation, user);
    let resume = since.map_or(String::new(), |(id, epoch)| {
        format!("&since={id}&epoch={epoch}")
    });
    Client::join(&node.ws(room, &format!("token={token}{resume}"))).await
}

/// Sends `body` as `user` and waits for its ack (the message coming back to its sender);
/// records it. Other frames are skipped.
async fn say(client: &mut Client, seen: &mut Seen, user: &str, body: &str) -> u64 {
    client.say_as(body, &format!("k-{body}")).await;
    loop {
        match client.recv_skip_presence().await {
            ServerFrame::Message(m) if m.content.from == user && m.content.body == body => {
                assert!(
                    seen.acked.insert(m.id, body.to_owned()).is_none(),
                    "id {} acknowledged twice",
                    m.id
                );
                return m.id;
            }
            ServerFrame::Error(e) => panic!("`{body}` refused: {e:?}"),
            _ => {}
        }
    }
}

/// What a drained or cut-off client does: reads to the end of its connection.
async fn until_closed(client: &mut Client) {
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), client.next()).await {}
}

/// Reads the whole retained history through the room API, three messages a page.
async fn history(node: &Node, room: &str) -> (Vec<(u64, String)>, bool) {
    let (mut since, mut epoch, mut messages, mut complete) = (0, None::<String>, Vec::new(), true);
    loop {
        let mut path = format!("/v1/rooms/{room}/history?since={since}&limit=3");
        if let Some(epoch) = &epoch {
            path.push_str(&format!("&epoch={epoch}"));
        }
        let (status, page) = node.call(API_KEY, reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 200, "{page}");
        complete &= page["complete"].as_bool().unwrap();
        epoch = page["epoch"].as_str().map(str::to_owned);
        for m in page["messages"].as_array().unwrap() {
            messages.push((
                m["id"].as_u64().unwrap(),
                m["body"].as_str().unwrap().to_owned(),
            ));
        }
        match page["next_since"].as_u64() {
            Some(next) => since = next,
            None => return (messages, complete),
        }
    }
}

async fn transcript(node: &Node, room: &str, incarnation: &str) -> Transcript {
    let path = format!("/v1/rooms/{room}/transcript?incarnation={incarnation}");
    let (status, body) = node.call(API_KEY, reqwest::Method::GET, &path, None).await;
    assert_eq!(status, 200, "{room} {incarnation}: {body}");
    serde_json::from_value(body).unwrap()
}

/// The checks every incarnation's record must pass.
async fn audit(
    node: &Node,
    redis_state: &chatfleet_state::FleetState,
    receiver: &WebhookReceiver,
    room: &str,
    incarnation: &str,
    seen: &Seen,
) {
    let record = transcript(node, room, incarnation).await;
    assert_eq!(record.incarnation.as_deref(), Some(incarnation));
    let messages: Vec<(u64, String)> = record
        .entries
        .iter()
        .filter_map(|e| match e {
            TranscriptEntry::Message(m) => Some((m.id, m.content.body.clone())),
            _ => None,
        })
        .collect();
    let acked: Vec<(u64, String)> = seen.acked.clone().into_iter().collect();
    assert_eq!(
        messages, acked,
        "{room} {incarnation}: every ack once, in order"
    );
    assert!(record.complete, "{room} {incarnation}: nothing missing");
    assert!(
        matches!(record.entries.last(), Some(TranscriptEntry::Closed { .. })),
        "{room} {incarnation}: the close is last"
    );
    let joined: BTreeSet<String> = record
        .entries
        .iter()
        .filter_map(|e| match e {
            TranscriptEntry::Joined(e) => Some(e.user.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(joined, seen.members, "{room} {incarnation}: every join");
    // Bodies carry their incarnation: nothing of another one is in this record.
    let prefix = format!("{incarnation}:");
    assert!(messages.iter().all(|(_, b)| b.starts_with(&prefix)));

    let key = RoomKeys::new(&room.parse().unwrap()).transcript_of(incarnation);
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut redis_state.redis.conn())
        .await
        .unwrap();
    assert!(
        (1..=RETENTION_SECONDS as i64).contains(&ttl),
        "{room} {incarnation}: retention {ttl}"
    );

    // The webhook stream: one message event per acknowledged id, of this incarnation, and a
    // join for every member.
    let events = || {
        receiver
            .accepted()
            .into_iter()
            .filter(|d| {
                d.event.room.to_string() == room
                    && d.event.incarnation.as_deref() == Some(incarnation)
            })
            .collect::<Vec<_>>()
    };
    eventually(
        &format!("{room} {incarnation}: every message event"),
        || async {
            let ids: BTreeSet<u64> = events()
                .iter()
                .filter_map(|d| match &d.event.body {
                    EventBody::Message(m) => Some(m.id),
                    _ => None,
                })
                .collect();
            ids == seen.acked.keys().copied().collect()
        },
    )
    .await;
    let mut event_ids: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let mut joins = BTreeSet::new();
    for delivery in events() {
        match &delivery.event.body {
            EventBody::Message(m) => {
                assert_eq!(seen.acked.get(&m.id), Some(&m.content.body));
                event_ids.entry(m.id).or_default().insert(delivery.event.id);
            }
            EventBody::MemberJoined(change) => {
                joins.insert(change.user.clone());
            }
            _ => {}
        }
    }
    assert!(
        event_ids.values().all(|ids| ids.len() == 1),
        "{room} {incarnation}: one event id per message: {event_ids:?}"
    );
    assert_eq!(
        joins, seen.members,
        "{room} {incarnation}: member.joined for each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_is_complete_final_and_trustworthy() {
    let redis = Redis::start().await;
    let mut state = redis.state();
    // The closer (the operator) keeps the fleet's transcript settings, as the nodes do.
    state.rooms =
        state
            .rooms
            .clone()
            .with_transcripts(chatfleet_state::transcripts::TranscriptSettings {
                max_entries: 100_000,
                retention: Duration::from_secs(RETENTION_SECONDS),
            });
    let receiver = WebhookReceiver::start(HOOK_SECRET).await;
    let hook = receiver.url();
    let url = redis.url();
    let n0 = start_node(&url, "chat-0", &hook).await;
    let mut n1 = start_node(&url, "chat-1", &hook).await;
    let ids: Vec<RoomId> = (0..ROOMS).map(|n| room(n).parse().unwrap()).collect();
    let open = |incarnation: String| RoomSettings {
        max_members: 10,
        created_ms: 1,
        incarnation,
    };
    let inc = |phase: &str, n: usize| format!("{phase}{n}");
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();

    // First incarnations: a customer on chat-0, an agent on chat-1, talking; one send retried.
    let mut customers = Vec::new();
    let mut agents = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let a = inc("a", n);
        state.rooms.create(id, open(a.clone())).await.unwrap();
        let seen = seen.entry(a.clone()).or_default();
        let (cust, _) = join(&n0, &room(n), &a, &cust_of(n), None).await;
        let (agent, welcome) = join(&n1, &room(n), &a, &agent_of(n), None).await;
        seen.members.extend([cust_of(n), agent_of(n)]);
        customers.push(cust);
        agents.push((agent, welcome.epoch));
    }
    for round in 0..3 {
        for n in 0..ROOMS {
            let a = inc("a", n);
            let seen = seen.get_mut(&a).unwrap();
            say(
                &mut customers[n],
                seen,
                &cust_of(n),
                &format!("{a}:c{round}"),
            )
            .await;
            say(
                &mut agents[n].0,
                seen,
                &agent_of(n),
                &format!("{a}:a{round}"),
            )
            .await;
        }
    }
    for (n, customer) in customers.iter_mut().enumerate() {
        // A send retried with its client id (its ack thought lost) is stored once.
        let a = inc("a", n);
        let body = format!("{a}:retried");
        let seen = seen.get_mut(&a).unwrap();
        say(customer, seen, &cust_of(n), &body).await;
        customer.say_as(&body, &format!("k-{body}")).await;
    }

    // chat-1 stops (a rolling update): its agents are sent away and resume on chat-0.
    n1.signal("TERM");
    n1.wait_exit(Duration::from_secs(10))
        .await
        .expect("chat-1 exited");
    for n in 0..ROOMS {
        let a = inc("a", n);
        let (mut old, epoch) = agents.remove(0);
        until_closed(&mut old).await;
        let last = *seen[&a].acked.keys().last().unwrap();
        let (mut agent, welcome) =
            join(&n0, &room(n), &a, &agent_of(n), Some((last, &epoch))).await;
        assert!(
            welcome.resume.unwrap().complete,
            "nothing was lost in the drain"
        );
        let seen = seen.get_mut(&a).unwrap();
        say(&mut agent, seen, &agent_of(n), &format!("{a}:after-drain")).await;
        agents.push((agent, welcome.epoch));
    }
    // Every page of the history, as a support tool pages it, before the close.
    for n in 0..ROOMS {
        let a = inc("a", n);
        let (pages, complete) = history(&n0, &room(n)).await;
        let acked: Vec<(u64, String)> = seen[&a].acked.clone().into_iter().collect();
        assert_eq!(pages, acked, "{a}: the history pages hold every ack once");
        assert!(complete);
    }
    // Close every room; in half of them a mute races the close.
    let mut closes = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let a = inc("a", n);
        let state = state.clone();
        let id = id.clone();
        closes.push(tokio::spawn(async move {
            let mute = Moderation {
                room: id.clone(),
                user: cust_of(n),
                action: ModerationAction::Muted,
                reason: "racing".into(),
                until: Some(u64::MAX / 2),
                ts: 1,
            };
            let frame = ServerFrame::Moderation(mute.clone()).to_json();
            if n % 2 == 0 {
                let (muted, closed) = tokio::join!(
                    state.rooms.moderate(&id, &mute, &frame),
                    state.rooms.close(&id, &a, "resolved")
                );
                let _ = muted;
                closed.unwrap();
            } else {
                state.rooms.close(&id, &a, "resolved").await.unwrap();
            }
        }));
    }
    for close in closes {
        close.await.unwrap();
    }
    for client in customers
        .iter_mut()
        .chain(agents.iter_mut().map(|(c, _)| c))
    {
        until_closed(client).await;
    }
    for id in &ids {
        let keys = RoomKeys::new(id);
        for key in keys.state() {
            let exists: bool = redis::cmd("EXISTS")
                .arg(key)
                .query_async(&mut state.redis.conn())
                .await
                .unwrap();
            assert!(!exists, "{key} outlived the close (a mute racing it?)");
        }
    }

    // The same names again: second incarnations, on chat-0 and a new chat-2. The first
    // incarnations' tokens are refused.
    let n2 = start_node(&url, "chat-2", &hook).await;
    let mut customers = Vec::new();
    let mut agents = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let b = inc("b", n);
        state.rooms.create(id, open(b.clone())).await.unwrap();
        let token = token_for_incarnation(&room(n), &inc("a", n), &cust_of(n));
        let mut stale = Client::connect(&n0.ws(&room(n), &format!("token={token}"))).await;
        assert_error(&stale.recv().await, ErrorCode::RoomClosed);
        let seen = seen.entry(b.clone()).or_default();
        let (cust, _) = join(&n0, &room(n), &b, &cust_of(n), None).await;
        let (agent, welcome) = join(&n2, &room(n), &b, &agent_of(n), None).await;
        assert_eq!(welcome.last_id, 0, "a new incarnation starts empty");
        seen.members.extend([cust_of(n), agent_of(n)]);
        customers.push(cust);
        agents.push((agent, welcome.epoch));
    }
    for round in 0..2 {
        for n in 0..ROOMS {
            let b = inc("b", n);
            let seen = seen.get_mut(&b).unwrap();
            say(
                &mut customers[n],
                seen,
                &cust_of(n),
                &format!("{b}:c{round}"),
            )
            .await;
            say(
                &mut agents[n].0,
                seen,
                &agent_of(n),
                &format!("{b}:a{round}"),
            )
            .await;
        }
    }
    // chat-2 dies mid-conversation: its agents resume on chat-0, nothing acknowledged lost.
    let mut n2 = n2;
    n2.signal("KILL");
    n2.wait_exit(Duration::from_secs(5)).await;
    for (n, customer) in customers.iter_mut().enumerate() {
        let b = inc("b", n);
        let (mut old, epoch) = agents.remove(0);
        until_closed(&mut old).await;
        let last = *seen[&b].acked.keys().last().unwrap();
        let (mut agent, welcome) =
            join(&n0, &room(n), &b, &agent_of(n), Some((last, &epoch))).await;
        assert!(welcome.resume.unwrap().complete);
        let seen = seen.get_mut(&b).unwrap();
        say(&mut agent, seen, &agent_of(n), &format!("{b}:after-kill")).await;
        say(customer, seen, &cust_of(n), &format!("{b}:last")).await;
        agents.push((agent, welcome.epoch));
    }
    for (n, id) in ids.iter().enumerate() {
        state.rooms.close(id, &inc("b", n), "solved").await.unwrap();
    }

    // The audit: every incarnation's record against what its clients saw.
    for n in 0..ROOMS {
        for phase in ["a", "b"] {
            let incarnation = inc(phase, n);
            audit(
                &n0,
                &state,
                &receiver,
                &room(n),
                &incarnation,
                &seen[&incarnation],
            )
            .await;
        }
    }
    // Leaves: chat-1 stopped cleanly, so its agents' leaves are in the first transcripts.
    for n in 0..ROOMS {
        let record = transcript(&n0, &room(n), &inc("a", n)).await;
        let left_on_drain = record
            .entries
            .iter()
            .any(|e| matches!(e, TranscriptEntry::Left(e) if e.user == agent_of(n)));
        assert!(
            left_on_drain,
            "{}: the drained agent's leave: {:?}",
            inc("a", n),
            record.entries
        );
    }
}

/// A Sentinel failover to a replica that missed writes: the messages it lost were
/// acknowledged, so the record must say it has a gap (the transcript incomplete, the history
/// page incomplete), and still hold every other acknowledged message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_failover_leaves_a_gap_that_every_record_reports() {
    let mut primary = Redis::start().await;
    let replica = Redis::start_replica_of(&primary).await;
    let sentinels = Sentinels::start(&primary, 3).await;
    sentinels.ready(1).await;
    let node = Node::on_redis(&sentinels.url(), "chat-0", &[]).await;
    let room = "support/audit-failover";
    let id: RoomId = room.parse().unwrap();
    let state = chatfleet_state::FleetState::new(
        chatfleet_state::Redis::open(
            &primary.url(),
            chatfleet_state::ConnectionSettings::OPERATOR,
        )
        .unwrap(),
        Duration::from_secs(86_400),
    );
    let settings = RoomSettings {
        max_members: 10,
        created_ms: 1,
        incarnation: "f1".into(),
    };
    state.rooms.create(&id, settings).await.unwrap();
    let mut seen = Seen::default();
    let (mut ann, welcome) = join(&node, room, "f1", "ann", None).await;
    say(&mut ann, &mut seen, "ann", "f1:kept").await;
    primary.replicated(1).await;

    // The replica is cut off: the next message is acknowledged, then lost with the primary.
    replica.cut_replication().await;
    let lost = say(&mut ann, &mut seen, "ann", "f1:lost").await;
    primary.kill();
    replica.restore_replication().await;
    let (after, _) = ann
        .say_until_accepted("f1:after", "k-f1:after", Duration::from_secs(30))
        .await;
    assert!(after.id > lost, "no id is given twice");

    // The transcript, read from the promoted replica, lacks the lost message: it says so.
    let record = transcript(&node, room, "f1").await;
    let bodies: Vec<String> = record
        .entries
        .iter()
        .filter_map(|e| match e {
            TranscriptEntry::Message(m) => Some(m.content.body.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(bodies, ["f1:kept", "f1:after"]);
    assert!(!record.complete, "the gap is reported, not silent");
    // History paged from where a client was, in the epoch it knew: incomplete too.
    let path = format!("/v1/rooms/{room}/history?since=1&epoch={}", welcome.epoch);
    let (status, page) = node.call(API_KEY, reqwest::Method::GET, &path, None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["complete"], false, "{page}");
    assert_ne!(
        page["epoch"],
        welcome.epoch.as_str(),
        "a gap began a new epoch"
    );
}
