//! Webhooks against a real HTTP receiver: every room and member event arrives signed, a 500
//! is retried with the same id, a receiver that never answers 200 fills the dead letters, and
//! an event queued in Redis survives the death of the node that queued it.

use std::collections::BTreeMap;
use std::time::Duration;

use chatfleet_wire::keys::WebhookKeys;
use chatfleet_wire::webhook::EventBody;
use serde_json::json;

use crate::support::{
    ADMIN_KEY, API_KEY, Client, Delivery, Node, Redis, WebhookReceiver, eventually, in_process,
};

const HOOK_SECRET: &str = "test-webhook-secret";

/// `type` of each distinct event accepted, counted.
fn kinds(deliveries: &[Delivery]) -> BTreeMap<&'static str, usize> {
    let mut seen = BTreeMap::<&str, Vec<&str>>::new();
    for delivery in deliveries {
        let ids = seen.entry(delivery.event.body.kind()).or_default();
        if !ids.contains(&delivery.event.id.as_str()) {
            ids.push(&delivery.event.id);
        }
    }
    seen.into_iter()
        .map(|(kind, ids)| (kind, ids.len()))
        .collect()
}

fn is_member(delivery: &Delivery, kind: &str, user: &str) -> bool {
    match &delivery.event.body {
        EventBody::MemberJoined(m) if kind == "member.joined" => m.user == user,
        EventBody::MemberLeft(m) if kind == "member.left" => m.user == user,
        _ => false,
    }
}

#[tokio::test]
async fn a_standalone_node_delivers_every_event_signed_and_retries_failures() {
    let receiver = WebhookReceiver::start(HOOK_SECRET).await;
    let broken = WebhookReceiver::start(HOOK_SECRET).await;
    broken.set_failing(true);
    // The first three attempts fail: their events must come again, with the same ids.
    receiver.fail_next(3);
    let (url, broken_url) = (receiver.url(), broken.url());
    let node = in_process(&[
        "--webhook-url",
        &url,
        "--webhook-url",
        &broken_url,
        "--webhook-allow-private-networks",
        "--webhook-secret",
        HOOK_SECRET,
        "--webhook-messages",
        "--webhook-retry-ms",
        "100",
        "--webhook-max-attempts",
        "3",
    ])
    .await;
    let room = "support/case-wh";
    let (status, body) = node
        .call(
            API_KEY,
            reqwest::Method::POST,
            "/v1/rooms",
            Some(json!({"namespace": "support", "name": "case-wh"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (mut ann, _) = Client::join(&node.ws_as(room, "ann", "")).await;
    let (dana, _) = Client::join(&node.ws_as(room, "dana", "")).await;
    ann.say("my order is stuck").await;
    let said = ann.message().await;
    dana.leave().await;
    ann.leave().await;
    let path = format!("/v1/rooms/{room}?reason=solved");
    let (status, body) = node
        .call(API_KEY, reqwest::Method::DELETE, &path, None)
        .await;
    assert_eq!(status, 204, "{body}");

    let expected: BTreeMap<&str, usize> = [
        ("room.opened", 1),
        ("room.placed", 1),
        ("member.joined", 2),
        ("message", 1),
        ("member.left", 2),
        ("room.closed", 1),
    ]
    .into();
    eventually("every event accepted", || async {
        kinds(&receiver.accepted()) == expected
    })
    .await;
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 8, "each event accepted once: {accepted:#?}");
    let closed = receiver
        .wait_for("room.closed", |d| d.event.body.kind() == "room.closed")
        .await;
    let all = receiver.deliveries();
    assert!(all.iter().all(|d| d.signed), "every delivery verifies");
    assert!(all.iter().all(|d| d.id_header == d.event.id));
    assert!(all.iter().all(|d| d.event.room.to_string() == room));

    // The three refused deliveries came again with the same id and the same body.
    let refused: Vec<&Delivery> = all.iter().filter(|d| d.status == 500).collect();
    assert_eq!(refused.len(), 3, "{all:#?}");
    for failed in refused {
        let again = accepted
            .iter()
            .find(|d| d.event.id == failed.event.id)
            .unwrap_or_else(|| panic!("{} was not retried", failed.event.id));
        assert_eq!(again.body, failed.body);
    }

    // The message event is the message as members got it; the close links the transcript,
    // which answers.
    let message = accepted
        .iter()
        .find_map(|d| match &d.event.body {
            EventBody::Message(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(message, said);
    let EventBody::RoomClosed { reason, transcript } = &closed.event.body else {
        unreachable!()
    };
    assert_eq!(reason, "solved");
    let (status, _) = node
        .call(API_KEY, reqwest::Method::GET, transcript, None)
        .await;
    assert_eq!(status, 200, "{transcript} answers");

    // The receiver that always fails: every event ends as a dead letter after 3 attempts.
    let letters = |limit: &'static str| {
        let node = &node;
        async move {
            let path = format!("/v1/admin/webhooks/dead-letters?limit={limit}");
            node.call(ADMIN_KEY, reqwest::Method::GET, &path, None)
                .await
        }
    };
    eventually(
        "every event to the broken receiver is a dead letter",
        || async {
            let (_, body) = letters("100").await;
            body["dead_letters"]
                .as_array()
                .is_some_and(|l| l.len() == 8)
        },
    )
    .await;
    let (_, body) = letters("100").await;
    for letter in body["dead_letters"].as_array().unwrap() {
        assert_eq!(letter["url"], broken_url.as_str());
        assert_eq!(letter["attempts"], 3);
        assert!(
            letter["error"].as_str().unwrap().contains("500"),
            "{letter}"
        );
        assert!(letter["event"]["type"].is_string(), "{letter}");
    }
    assert_eq!(broken.deliveries().len(), 8 * 3, "three attempts each");
    let (status, _) = letters("0").await;
    assert_eq!(status, 422, "a limit out of range is refused");
    let (status, _) = node
        .call(
            API_KEY,
            reqwest::Method::GET,
            "/v1/admin/webhooks/dead-letters",
            None,
        )
        .await;
    assert_eq!(status, 403, "dead letters need the admin key");

    let metrics = node.get("/metrics").await.text().await.unwrap();
    for line in [
        "chatnode_webhook_deliveries_total{outcome=\"retried\"}",
        "chatnode_webhook_deliveries_total{outcome=\"dead\"} 8",
        "chatnode_webhook_deliveries_total{outcome=\"delivered\"} 8",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn an_event_in_redis_survives_the_death_of_the_node_that_queued_it() {
    let redis = Redis::start().await;
    let receiver = WebhookReceiver::start(HOOK_SECRET).await;
    receiver.set_failing(true);
    let url = receiver.url();
    let hooks = [
        "--fleet",
        "support/chat",
        "--webhook-url",
        &url,
        "--webhook-allow-private-networks",
        "--webhook-secret",
        HOOK_SECRET,
        "--webhook-retry-ms",
        "200",
        "--webhook-timeout-seconds",
        "1",
    ];
    let mut first = Node::in_fleet(&redis, "chat-0", &hooks).await;
    let room = "support/case-wk";
    let (_ann, _) = Client::join(&first.ws_as(room, "ann", "")).await;
    // The join is queued in Redis, and the receiver refuses it.
    eventually("the receiver refused ann's join", || async {
        receiver
            .deliveries()
            .iter()
            .any(|d| is_member(d, "member.joined", "ann"))
    })
    .await;
    let due = WebhookKeys::new("support/chat").due;
    let queued: u64 = redis::cmd("ZCARD")
        .arg(&due)
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    assert_eq!(queued, 1, "the join waits in Redis");

    first.signal("KILL");
    first
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("killed");
    let refused = receiver.deliveries().len();
    receiver.set_failing(false);
    // A node started after the death delivers it: the event outlived its node.
    let _second = Node::in_fleet(&redis, "chat-1", &hooks).await;
    let delivered = receiver
        .wait_for("ann's join, delivered by the other node", |d| {
            is_member(d, "member.joined", "ann")
        })
        .await;
    let EventBody::MemberJoined(change) = &delivered.event.body else {
        unreachable!()
    };
    assert_eq!(
        change.node, "chat-0",
        "the event names the node it happened on"
    );
    assert!(delivered.signed);
    let first_try = &receiver.deliveries()[0];
    assert_eq!(
        first_try.event.id, delivered.event.id,
        "the same event, the same id"
    );
    assert!(receiver.deliveries().len() > refused);
    eventually("the queue empties", || async {
        let left: u64 = redis::cmd("ZCARD")
            .arg(&due)
            .query_async(&mut redis.conn().await)
            .await
            .unwrap();
        left == 0
    })
    .await;
}

/// What the deliverer will not do, on a real node with real receivers: post a 4xx-refused
/// event again (a dead letter after one attempt), retry before the receiver's `Retry-After`,
/// post to a URL that is not one of the fleet's receivers (a job written into Redis by someone
/// else, or a receiver removed since), or post to a name resolving inside the cluster without
/// `--webhook-allow-private-networks`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deliverer_keeps_to_its_receivers_and_their_answers() {
    let redis = Redis::start().await;
    let receiver = WebhookReceiver::start(HOOK_SECRET).await;
    let stranger = WebhookReceiver::start(HOOK_SECRET).await;
    let url = receiver.url();
    let hooks = [
        "--fleet",
        "support/chat",
        "--webhook-url",
        &url,
        "--webhook-allow-private-networks",
        "--webhook-secret",
        HOOK_SECRET,
        "--webhook-retry-ms",
        "100",
    ];
    let node = Node::in_fleet(&redis, "chat-0", &hooks).await;
    let letters = || async {
        let path = "/v1/admin/webhooks/dead-letters?limit=100";
        let (_, body) = node.call(ADMIN_KEY, reqwest::Method::GET, path, None).await;
        body["dead_letters"].as_array().cloned().unwrap_or_default()
    };

    // A 404 is final: one attempt, then a dead letter.
    receiver.answer_next(1, 404, None);
    let room = "support/case-policy";
    let (ann, _) = Client::join(&node.ws_as(room, "ann", "")).await;
    eventually("the refused join is a dead letter", || async {
        letters()
            .await
            .iter()
            .any(|l| l["error"].as_str().unwrap().contains("404"))
    })
    .await;
    let refused = letters().await;
    assert_eq!(refused[0]["attempts"], 1, "{refused:?}");
    assert_eq!(receiver.deliveries().len(), 1, "never posted again");

    // A 429 asking for 2 s: the retry waits for it, though the node's own delay is 100 ms.
    receiver.answer_next(1, 429, Some(2));
    ann.leave().await;
    let retried = receiver
        .wait_for("the leave, after the 429", |d| {
            d.event.body.kind() == "member.left"
        })
        .await;
    let first = receiver
        .deliveries()
        .into_iter()
        .find(|d| d.status == 429)
        .expect("the 429");
    let waited = retried.at - first.at;
    println!("retry after a 429 with Retry-After: 2 came {waited:?} later");
    assert!(waited >= Duration::from_millis(1900), "{waited:?}");

    // A job naming a URL that is not the fleet's receiver: never posted, a dead letter.
    let queue =
        chatfleet_state::webhooks::WebhookQueue::new(redis.state().redis.clone(), "support/chat");
    let forged = r#"{"id":"evt_forged","ts":1,"room":"support/x","type":"room.opened","data":{"max_members":1}}"#;
    let job = chatfleet_state::webhooks::Job::new("evt_forged", &stranger.url(), forged.into());
    queue.enqueue(&[job]).await.unwrap();
    eventually("the foreign job is a dead letter", || async {
        letters().await.iter().any(|l| {
            l["url"] == stranger.url().as_str()
                && l["error"]
                    .as_str()
                    .unwrap()
                    .contains("not one of the fleet's")
        })
    })
    .await;
    assert!(stranger.deliveries().is_empty(), "nothing reached it");
}

/// Without `--webhook-allow-private-networks` a receiver whose name resolves to loopback is
/// never posted to: its events are dead letters at once, saying why.
#[tokio::test]
async fn a_receiver_inside_the_cluster_needs_private_networks_allowed() {
    let receiver = WebhookReceiver::start(HOOK_SECRET).await;
    let url = receiver.url().replace("127.0.0.1", "localhost");
    let node = in_process(&["--webhook-url", &url, "--webhook-secret", HOOK_SECRET]).await;
    let (_ann, _) = Client::join(&node.ws_as("support/case-ssrf", "ann", "")).await;
    eventually("the join is a dead letter", || async {
        let path = "/v1/admin/webhooks/dead-letters";
        let (_, body) = node.call(ADMIN_KEY, reqwest::Method::GET, path, None).await;
        body["dead_letters"].as_array().is_some_and(|l| {
            l.iter().any(|l| {
                l["error"]
                    .as_str()
                    .unwrap()
                    .contains("not a public address")
                    && l["attempts"] == 1
            })
        })
    })
    .await;
    assert!(receiver.deliveries().is_empty(), "nothing was posted");
}
