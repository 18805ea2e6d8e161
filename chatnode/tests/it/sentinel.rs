//! Redis under Sentinel: a primary, a replica and three sentinels, real processes. The primary
//! is killed while clients of two nodes chat; the nodes follow the master the sentinels name,
//! and chatting resumes by itself with nothing acknowledged lost or duplicated.

use std::time::{Duration, Instant};

use chatfleet_wire::frames::{ErrorCode, ServerFrame};

use crate::support::{Client, Node, Redis, Sentinels, eventually};

/// How long the whole failover may take here: the sentinels need 1 s to call the primary
/// down, then agree and promote; the nodes ask them every 250 ms.
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);

async fn sentinel_node(sentinels: &Sentinels, name: &str) -> Node {
    let url = sentinels.url();
    let node = Node::start(&[
        "--redis-url",
        &url,
        "--node-name",
        name,
        "--heartbeat-ms",
        "200",
    ])
    .await;
    eventually("the node follows the master and is ready", || async {
        node.get("/readyz").await.status() == 200
    })
    .await;
    node
}

/// Each sentinel knows the replica and the other sentinels: a failover can be agreed.
async fn sentinels_ready(sentinels: &Sentinels) {
    for port in &sentinels.ports {
        let url = format!("redis://127.0.0.1:{port}");
        eventually("the sentinels know each other and the replica", || {
            let url = url.clone();
            let others = sentinels.ports.len() - 1;
            async move {
                let Ok(mut conn) = redis::Client::open(url)
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                else {
                    return false;
                };
                let peers: Vec<redis::Value> = redis::cmd("SENTINEL")
                    .arg("sentinels")
                    .arg("chat")
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
                    .arg("replicas")
                    .arg("chat")
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                peers.len() == others && replicas.len() == 1
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatting_resumes_by_itself_after_a_sentinel_failover() {
    let mut primary = Redis::start().await;
    let replica = Redis::start_replica_of(&primary).await;
    let sentinels = Sentinels::start(&primary, 3).await;
    sentinels_ready(&sentinels).await;
    let one = sentinel_node(&sentinels, "chat-0").await;
    let two = sentinel_node(&sentinels, "chat-1").await;
    let room = "support/failover";
    let (mut ann, _) = Client::join(&one.ws_as(room, "ann", "")).await;
    let (mut bob, _) = Client::join(&two.ws_as(room, "bob", "")).await;
    ann.say_as("before", "k-before").await;
    assert_eq!(ann.message().await.content.body, "before");
    assert_eq!(bob.message().await.content.body, "before");
    // Acknowledged and on the replica: asynchronous replication has caught up.
    let conn = primary.conn().await;
    eventually("the replica has what was acknowledged", || {
        let mut conn = conn.clone();
        async move {
            let copies: i64 = redis::cmd("WAIT")
                .arg(1)
                .arg(100)
                .query_async(&mut conn)
                .await
                .unwrap_or(0);
            copies == 1
        }
    })
    .await;
    drop(conn);

    primary.kill();
    let killed = Instant::now();
    // Ann retries the same send, as a client told `unavailable` or `unconfirmed` does.
    let mut refusals = 0;
    loop {
        assert!(
            killed.elapsed() < FAILOVER_LIMIT,
            "chatting did not resume within {FAILOVER_LIMIT:?} ({refusals} refusals)"
        );
        ann.say_as("after", "k-after").await;
        match tokio::time::timeout(Duration::from_secs(5), ann.recv_skip_presence()).await {
            Ok(ServerFrame::Message(m)) if m.content.body == "after" => break,
            Ok(ServerFrame::Error(error)) => {
                assert!(
                    matches!(error.code, ErrorCode::Unavailable | ErrorCode::Unconfirmed),
                    "{error:?}"
                );
                refusals += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => {}
        }
    }
    println!(
        "failover: chatting resumed {:?} after the primary was killed ({refusals} sends refused meanwhile)",
        killed.elapsed()
    );
    assert_eq!(sentinels.master_port().await, Some(replica.port));
    // Bob, on the other node, gets the message once, and nothing twice.
    let mut bodies = Vec::new();
    while let Ok(frame) =
        tokio::time::timeout(Duration::from_secs(2), bob.recv_skip_presence()).await
    {
        if let ServerFrame::Message(m) = frame {
            bodies.push(m.content.body);
        }
    }
    assert_eq!(bodies, ["after"]);
    // The history survived on the promoted replica: a newcomer reads both messages.
    let (mut cat, _) = Client::join(&two.ws_as(room, "cat", "&since=0")).await;
    let mut history = Vec::new();
    while let Ok(frame) =
        tokio::time::timeout(Duration::from_secs(2), cat.recv_skip_presence()).await
    {
        if let ServerFrame::Message(m) = frame {
            history.push(m.content.body);
        }
    }
    assert_eq!(history, ["before", "after"]);
}
