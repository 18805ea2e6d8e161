//! Redis under Sentinel: a primary, a replica and three sentinels, real processes. The primary
//! is killed while clients of two nodes chat; the nodes follow the master the sentinels name,
//! and chatting resumes by itself with nothing acknowledged lost or duplicated. Where the
//! replica was behind, the room begins a new epoch and resumes say they are incomplete.

use std::time::{Duration, Instant};

use chatfleet_wire::frames::Message;

use crate::support::{Client, Node, Redis, Sentinels};

/// How long the whole failover may take here: the sentinels need 1 s to call the primary
/// down, then agree and promote; the nodes ask them every 250 ms.
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);

async fn sentinel_node(sentinels: &Sentinels, name: &str) -> Node {
    Node::on_redis(&sentinels.url(), name, &[]).await
}

/// A primary with one replica, three sentinels watching it, and two nodes following them.
struct Fleet {
    primary: Redis,
    replica: Redis,
    sentinels: Sentinels,
    one: Node,
    two: Node,
}

impl Fleet {
    async fn start() -> Fleet {
        let primary = Redis::start().await;
        let replica = Redis::start_replica_of(&primary).await;
        let sentinels = Sentinels::start(&primary, 3).await;
        sentinels.ready(1).await;
        let one = sentinel_node(&sentinels, "chat-0").await;
        let two = sentinel_node(&sentinels, "chat-1").await;
        Fleet {
            primary,
            replica,
            sentinels,
            one,
            two,
        }
    }

    /// After the primary was killed, has `client` send `body` until it is accepted. Returns
    /// the accepted message, once the sentinels name the replica.
    async fn send_through_failover(&self, client: &mut Client, body: &str) -> Message {
        let killed = Instant::now();
        let (accepted, refusals) = client
            .say_until_accepted(body, &format!("k-{body}"), FAILOVER_LIMIT)
            .await;
        println!(
            "failover: chatting resumed {:?} after the primary was killed ({refusals} sends refused meanwhile)",
            killed.elapsed()
        );
        assert_eq!(self.sentinels.master_port().await, Some(self.replica.port));
        accepted
    }
}

/// Every message `client` receives until it has been quiet for 2 s.
async fn drain(client: &mut Client) -> Vec<(u64, String)> {
    client.messages_until_quiet(Duration::from_secs(2)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatting_resumes_by_itself_after_a_sentinel_failover() {
    let mut fleet = Fleet::start().await;
    let room = "support/failover";
    let (mut ann, _) = Client::join(&fleet.one.ws_as(room, "ann", "")).await;
    let (mut bob, _) = Client::join(&fleet.two.ws_as(room, "bob", "")).await;
    ann.say_as("before", "k-before").await;
    assert_eq!(ann.message().await.content.body, "before");
    assert_eq!(bob.message().await.content.body, "before");
    fleet.primary.replicated(1).await;

    fleet.primary.kill();
    let after = fleet.send_through_failover(&mut ann, "after").await;
    assert_eq!(after.id, 2);
    // Bob, on the other node, gets the message once, and nothing twice.
    assert_eq!(drain(&mut bob).await, [(2, "after".to_owned())]);
    // The history survived on the promoted replica: a newcomer reads both messages.
    let (mut cat, _) = Client::join(&fleet.two.ws_as(room, "cat", "&since=0")).await;
    let history: Vec<String> = drain(&mut cat).await.into_iter().map(|(_, b)| b).collect();
    assert_eq!(history, ["before", "after"]);
}

/// Asynchronous replication loses what the replica had not received when the primary died.
/// Members saw it; the room must not reuse its id, and a resume across the gap must not
/// claim to be complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_a_replica_that_was_behind_begins_a_new_epoch() {
    let mut fleet = Fleet::start().await;
    let room = "support/behind";
    let (mut ann, _) = Client::join(&fleet.one.ws_as(room, "ann", "")).await;
    let (mut bob, welcome) = Client::join(&fleet.two.ws_as(room, "bob", "")).await;
    ann.say_as("kept", "k-kept").await;
    assert_eq!(ann.message().await.content.body, "kept");
    assert_eq!(bob.message().await.id, 1);
    fleet.primary.replicated(1).await;

    // The replica loses its link (and cannot link again): the next message is acknowledged
    // and delivered, but never replicated.
    fleet.replica.cut_replication().await;
    ann.say_as("lost", "k-lost").await;
    assert_eq!(ann.message().await.id, 2);
    assert_eq!(bob.message().await.id, 2);
    fleet.primary.kill();
    fleet.replica.restore_replication().await;

    let after = fleet.send_through_failover(&mut ann, "after").await;
    assert_eq!(after.id, 3, "the id bob saw for `lost` is not given again");
    assert_eq!(drain(&mut bob).await, [(3, "after".to_owned())]);

    // Bob reconnects as a client does, from the last message he saw: the history he would
    // replay lost a message, so the resume is incomplete and names the new epoch.
    drop(bob);
    let resume = format!("&since=2&epoch={}", welcome.epoch);
    let (mut bob, again) = Client::join(&fleet.two.ws_as(room, "bob", &resume)).await;
    assert_ne!(again.epoch, welcome.epoch, "a gap begins a new epoch");
    let resumed = again.resume.expect("a resume");
    assert!(!resumed.complete, "{resumed:?}");
    let replayed: Vec<String> = drain(&mut bob).await.into_iter().map(|(_, b)| b).collect();
    assert_eq!(
        replayed,
        ["kept", "after"],
        "what the promoted replica retains"
    );
}
