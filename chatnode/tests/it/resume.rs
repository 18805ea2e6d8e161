//! A client that reconnects with `since` gets every message it missed, in order and once,
//! then the live ones; and learns when history no longer reaches back far enough.

use crate::support::{Client, Node, Redis};

/// Ann and bob chat; bob drops after message 2; ann sends 3..=5; bob returns to `back_on`.
async fn miss_and_resume(first: &Node, back_on: &Node) {
    let room = "support/resume";
    let (mut ann, _) = Client::join(&first.ws_as(room, "ann", "")).await;
    let (mut bob, _) = Client::join(&first.ws_as(room, "bob", "")).await;
    ann.say("m1").await;
    ann.say("m2").await;
    let mut last_seen = 0;
    for _ in 0..2 {
        last_seen = bob.message().await.id;
    }
    assert_eq!(last_seen, 2);
    bob.leave().await;
    for body in ["m3", "m4", "m5"] {
        ann.say(body).await;
    }
    // Make sure all three are logged before bob comes back.
    let mut ann_ids = Vec::new();
    while ann_ids.len() < 5 {
        ann_ids.push(ann.message().await.id);
    }

    let (mut bob, welcome) =
        Client::join(&back_on.ws_as(room, "bob", &format!("&since={last_seen}"))).await;
    let resume = welcome.resume.expect("a resume report");
    assert_eq!(
        (resume.since, resume.replayed, resume.complete),
        (2, 3, true)
    );
    assert_eq!(welcome.last_id, 5);
    let replayed: Vec<(u64, String)> = {
        let mut out = Vec::new();
        for _ in 0..3 {
            let m = bob.message().await;
            out.push((m.id, m.content.body));
        }
        out
    };
    assert_eq!(
        replayed,
        [(3, "m3".into()), (4, "m4".into()), (5, "m5".into())]
    );

    // Then live messages, with nothing replayed twice.
    ann.say("m6").await;
    let live = bob.message().await;
    assert_eq!((live.id, live.content.body.as_str()), (6, "m6"));
}

#[tokio::test]
async fn resume_on_the_same_standalone_node() {
    let node = Node::start(&[]).await;
    miss_and_resume(&node, &node).await;
}

#[tokio::test]
async fn resume_on_the_same_node_through_redis() {
    let redis = Redis::start().await;
    let node = Node::start(&["--redis-url", &redis.url()]).await;
    miss_and_resume(&node, &node).await;
}

#[tokio::test]
async fn resume_on_another_node_sharing_the_redis() {
    let redis = Redis::start().await;
    let one = Node::start(&["--redis-url", &redis.url(), "--node-name", "chat-0"]).await;
    let two = Node::start(&["--redis-url", &redis.url(), "--node-name", "chat-1"]).await;
    miss_and_resume(&one, &two).await;
}

#[tokio::test]
async fn a_resume_past_the_retained_history_says_it_is_incomplete() {
    for redis in [None, Some(Redis::start().await)] {
        let mut args: Vec<String> = [
            "--history-len",
            "3",
            "--rate-per-second",
            "10000",
            "--rate-burst",
            "10000",
        ]
        .map(String::from)
        .to_vec();
        if let Some(redis) = &redis {
            args.extend(["--redis-url".to_owned(), redis.url()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let node = Node::start(&args).await;
        let room = "support/long";
        let (mut ann, _) = Client::join(&node.ws_as(room, "ann", "")).await;
        // Redis trims approximately, in whole blocks: send well past any block size.
        let total = if redis.is_some() { 250 } else { 10 };
        for i in 1..=total {
            ann.say(&format!("m{i}")).await;
            assert_eq!(ann.message().await.id, i);
        }
        let (mut bob, welcome) = Client::join(&node.ws_as(room, "bob", "&since=1")).await;
        let resume = welcome.resume.expect("a resume report");
        assert!(!resume.complete, "{resume:?}");
        assert!(
            resume.replayed >= 3 && resume.replayed < total - 1,
            "{resume:?}"
        );
        // What is replayed is the newest part of the history, in order, ending at the last.
        let mut last = 0;
        for _ in 0..resume.replayed {
            let id = bob.message().await.id;
            assert!(id > last);
            last = id;
        }
        assert_eq!(last, total);
        // A client already up to date resumes completely with nothing to replay.
        let (_, welcome) =
            Client::join(&node.ws_as(room, "carl", &format!("&since={total}"))).await;
        let resume = welcome.resume.unwrap();
        assert_eq!((resume.replayed, resume.complete), (0, true));
    }
}
