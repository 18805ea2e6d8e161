//! The session and admin routes against real nodes sharing a real Redis: ending a user's
//! sessions wherever they are, broadcasts reaching every node, the fleet view (with who is in
//! each room on each node), draining, and
//! the two key scopes. A standalone node serves the same routes over itself.

use std::time::Instant;

use chatfleet_wire::frames::{ErrorCode, Role, ServerFrame, close};
use reqwest::Method;
use serde_json::json;

use crate::support::{ADMIN_KEY, API_KEY, Client, Node, Redis, assert_error, eventually};

async fn fleet_node(redis: &Redis, name: &str) -> Node {
    Node::in_fleet(redis, name, &[]).await
}

async fn join(node: &Node, room: &str, user: &str) -> Client {
    Client::join(&node.ws_as(room, user, "")).await.0
}

/// The next frame that is not presence: must be a `system` notice; returns its body.
async fn system_notice(client: &mut Client) -> String {
    match client.recv_skip_presence().await {
        ServerFrame::System { body, .. } => body,
        other => panic!("expected a system notice, got {other:?}"),
    }
}

/// The client was told its session ended and was closed with 1008.
async fn assert_ended(client: &mut Client) {
    let frame = client.recv_skip_presence().await;
    assert_error(&frame, ErrorCode::SessionEnded);
    let close = client.closed().await.expect("a close after session_ended");
    assert_eq!(u16::from(close.code), close::POLICY);
}

/// The client still works: what it says comes back to it.
async fn assert_still_talking(client: &mut Client, body: &str) {
    client.say(body).await;
    assert_eq!(client.message().await.content.body, body);
}

async fn session_count(node: &Node, user: &str) -> u64 {
    let (status, body) = node
        .call(
            API_KEY,
            Method::GET,
            &format!("/v1/users/{user}/sessions"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["count"].as_u64().unwrap()
}

#[tokio::test]
async fn ending_a_users_sessions_closes_them_on_every_node() {
    let redis = Redis::start().await;
    let nodes = [
        fleet_node(&redis, "chat-0").await,
        fleet_node(&redis, "chat-1").await,
    ];
    let mut dana_a = join(&nodes[0], "support/a", "dana").await;
    let mut dana_b = join(&nodes[1], "support/b", "dana").await;
    let mut bob = join(&nodes[0], "support/a", "bob").await;

    let (status, body) = nodes[1]
        .call(API_KEY, Method::GET, "/v1/users/dana/sessions", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 2);
    let mut holders: Vec<&str> = body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["node"].as_str().unwrap())
        .collect();
    holders.sort();
    assert_eq!(holders, ["chat-0", "chat-1"]);

    let (status, _) = nodes[1]
        .call(API_KEY, Method::DELETE, "/v1/users/dana/sessions", None)
        .await;
    assert_eq!(status, 202);
    assert_ended(&mut dana_a).await;
    assert_ended(&mut dana_b).await;
    assert_eq!(session_count(&nodes[0], "dana").await, 0);

    // Nobody else was touched, and dana may come back.
    assert_still_talking(&mut bob, "still here").await;
    let mut dana_again = join(&nodes[0], "support/a", "dana").await;
    assert_still_talking(&mut dana_again, "back").await;
}

#[tokio::test]
async fn ending_one_session_leaves_the_users_others() {
    let redis = Redis::start().await;
    let nodes = [
        fleet_node(&redis, "chat-0").await,
        fleet_node(&redis, "chat-1").await,
    ];
    let mut kept = join(&nodes[0], "support/a", "erin").await;
    let mut ended = join(&nodes[1], "support/b", "erin").await;

    let (_, body) = nodes[0]
        .call(API_KEY, Method::GET, "/v1/users/erin/sessions", None)
        .await;
    let on_chat_1 = body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["node"] == "chat-1")
        .expect("a session on chat-1")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/users/erin/sessions/{}", urlencode(&on_chat_1));
    let (status, _) = nodes[0].call(API_KEY, Method::DELETE, &path, None).await;
    assert_eq!(status, 202);
    assert_ended(&mut ended).await;
    assert_still_talking(&mut kept, "one left").await;
    assert_eq!(session_count(&nodes[0], "erin").await, 1);

    let (status, body) = nodes[0]
        .call(
            API_KEY,
            Method::DELETE,
            "/v1/users/erin/sessions/chat-9%2F1",
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
}

fn urlencode(segment: &str) -> String {
    segment.replace('%', "%25").replace('/', "%2F")
}

#[tokio::test]
async fn a_broadcast_reaches_every_room_on_every_node() {
    let redis = Redis::start().await;
    let nodes = [
        fleet_node(&redis, "chat-0").await,
        fleet_node(&redis, "chat-1").await,
    ];
    let mut clients = vec![
        join(&nodes[0], "support/a", "ann").await,
        join(&nodes[1], "support/a", "al").await,
        join(&nodes[1], "support/b", "bea").await,
    ];

    let sent = Instant::now();
    let (status, _) = nodes[0]
        .call(
            ADMIN_KEY,
            Method::POST,
            "/v1/admin/broadcast",
            Some(json!({"body": "maintenance at 18:00 UTC"})),
        )
        .await;
    assert_eq!(status, 202);
    for client in &mut clients {
        assert_eq!(system_notice(client).await, "maintenance at 18:00 UTC");
    }
    // Reported, not asserted: timings belong to benchmarks.
    eprintln!(
        "broadcast reached 3 clients on 2 nodes in {:?}",
        sent.elapsed()
    );

    // To one room only: support/b hears it, support/a does not.
    let (status, _) = nodes[0]
        .call(
            ADMIN_KEY,
            Method::POST,
            "/v1/admin/broadcast",
            Some(json!({"body": "an agent is on the way", "room": "support/b"})),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        system_notice(&mut clients[2]).await,
        "an agent is on the way"
    );
    assert_still_talking(&mut clients[1], "nothing for us").await;
}

#[tokio::test]
async fn the_fleet_view_shows_every_node_with_its_rooms() {
    let redis = Redis::start().await;
    let nodes = [
        fleet_node(&redis, "chat-0").await,
        fleet_node(&redis, "chat-1").await,
    ];
    let _clients = [
        join(&nodes[0], "support/a", "ann").await,
        join(&nodes[0], "support/a", "bob").await,
        join(&nodes[1], "support/b", "cy").await,
    ];
    eventually("both nodes to report their rooms", || async {
        let (status, body) = nodes[1]
            .call(ADMIN_KEY, Method::GET, "/v1/admin/fleet", None)
            .await;
        assert_eq!(status, 200);
        let find = |name: &str| {
            body["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["node"] == name)
                .cloned()
        };
        let (Some(zero), Some(one)) = (find("chat-0"), find("chat-1")) else {
            return false;
        };
        let person = |user: &str| {
            json!({"user": user, "name": format!("{user} name"), "role": "customer", "sessions": 1})
        };
        zero["users"] == 2
            && zero["rooms"]
                == json!([{"room": "support/a", "members": 2, "msg_rate": 0.0,
                           "people": [person("ann"), person("bob")]}])
            && one["rooms"][0]["people"] == json!([person("cy")])
            && one["users"] == 1
            && one["free_seats"] == one["max_users"].as_u64().unwrap() - 1
            && one["rooms"][0]["room"] == "support/b"
    })
    .await;
}

/// Whether `node` reports draining, as the fleet admin API on `admin` lists it; None when it
/// is not listed.
async fn reports_draining(admin: &Node, node: &str) -> Option<bool> {
    let (_, body) = admin
        .call(ADMIN_KEY, Method::GET, "/v1/admin/fleet", None)
        .await;
    body["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["node"] == node)
        .and_then(|n| n["draining"].as_bool())
}

#[tokio::test]
async fn draining_a_node_sends_new_joins_elsewhere_keeps_its_members_and_can_be_called_off() {
    let redis = Redis::start().await;
    let nodes = [
        fleet_node(&redis, "chat-0").await,
        fleet_node(&redis, "chat-1").await,
    ];
    let mut member = join(&nodes[1], "support/a", "ann").await;

    let (status, _) = nodes[0]
        .call(
            ADMIN_KEY,
            Method::POST,
            "/v1/admin/nodes/chat-1/drain",
            None,
        )
        .await;
    assert_eq!(status, 202);
    eventually("chat-1 to report draining", || async {
        reports_draining(&nodes[0], "chat-1").await == Some(true)
    })
    .await;
    // A new member is sent to the node that still takes members, where the room goes on.
    let mut late = Client::connect(&nodes[1].ws_as("support/a", "late", "")).await;
    match late.recv().await {
        ServerFrame::Redirect {
            endpoint, reason, ..
        } => {
            assert_eq!(reason, ErrorCode::Draining);
            assert!(
                endpoint.starts_with(&format!("ws://{}/", nodes[0].addr)),
                "{endpoint}"
            );
            let token = format!(
                "token={}",
                testkit::token("support/a", "late", Role::Customer)
            );
            let (_joined, welcome) = Client::join(&format!("{endpoint}?{token}")).await;
            assert_eq!(welcome.node, "chat-0");
        }
        other => panic!("expected a redirect, got {other:?}"),
    }
    // Members stay until the operator moves the room; chat-0 is untouched.
    assert_still_talking(&mut member, "still served").await;
    let mut elsewhere = join(&nodes[0], "support/c", "cy").await;
    assert_still_talking(&mut elsewhere, "fine here").await;

    // The autoscaler calls the drain off: chat-1 takes new members again.
    let undrain = chatfleet_wire::control::Control::Undrain {
        node: "chat-1".into(),
    };
    let _: () = redis::AsyncCommands::publish(
        &mut redis.conn().await,
        chatfleet_wire::keys::control_channel(),
        undrain.to_json(),
    )
    .await
    .unwrap();
    eventually("chat-1 to take members again", || async {
        reports_draining(&nodes[0], "chat-1").await == Some(false)
    })
    .await;
    let (_back, welcome) = Client::join(&nodes[1].ws_as("support/a", "back", "")).await;
    assert_eq!(welcome.node, "chat-1");

    let (status, body) = nodes[0]
        .call(
            ADMIN_KEY,
            Method::POST,
            "/v1/admin/nodes/chat-7/drain",
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn admin_routes_need_an_admin_key() {
    let node = Node::start(&[]).await;
    let (status, body) = node.call("", Method::GET, "/v1/admin/fleet", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, body) = node
        .call(API_KEY, Method::GET, "/v1/admin/fleet", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, body) = node
        .call(
            API_KEY,
            Method::POST,
            "/v1/admin/broadcast",
            Some(json!({"body": "hi"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, _) = node
        .call(ADMIN_KEY, Method::GET, "/v1/admin/fleet", None)
        .await;
    assert_eq!(status, 200);

    // The user routes take a room key; an admin key may do whatever a room key may.
    let (status, _) = node
        .call("", Method::GET, "/v1/users/x/sessions", None)
        .await;
    assert_eq!(status, 401);
    for key in [API_KEY, ADMIN_KEY] {
        let (status, _) = node
            .call(key, Method::GET, "/v1/users/x/sessions", None)
            .await;
        assert_eq!(status, 200);
        let (status, _) = node.call(key, Method::GET, "/v1/rooms", None).await;
        assert_eq!(status, 200);
    }

    // Bad broadcasts get a JSON error and send nothing.
    for bad in [json!({"body": ""}), json!({"body": "x".repeat(5000)})] {
        let (status, body) = node
            .call(ADMIN_KEY, Method::POST, "/v1/admin/broadcast", Some(bad))
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("invalid_request"))
        );
    }
    let (status, body) = node
        .call(
            ADMIN_KEY,
            Method::POST,
            "/v1/admin/broadcast",
            Some(json!({"text": "hi"})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
}

#[tokio::test]
async fn a_standalone_node_serves_the_same_routes_over_itself() {
    let node = Node::start(&[]).await;
    let mut first = join(&node, "support/a", "dana").await;
    let mut second = join(&node, "support/b", "dana").await;
    let mut other = join(&node, "support/a", "bob").await;
    assert_eq!(session_count(&node, "dana").await, 2);

    let (status, _) = node
        .call(
            ADMIN_KEY,
            Method::POST,
            "/v1/admin/broadcast",
            Some(json!({"body": "hello all"})),
        )
        .await;
    assert_eq!(status, 202);
    for client in [&mut first, &mut second, &mut other] {
        assert_eq!(system_notice(client).await, "hello all");
    }

    let (_, body) = node
        .call(ADMIN_KEY, Method::GET, "/v1/admin/fleet", None)
        .await;
    assert_eq!(body["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(body["nodes"][0]["users"], 3);
    let rooms = &body["nodes"][0]["rooms"];
    let room_a = rooms
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == "support/a");
    let people: Vec<&str> = room_a.unwrap()["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["user"].as_str().unwrap())
        .collect();
    assert_eq!(people, ["bob", "dana"], "who is in the room, by user");

    let (status, _) = node
        .call(API_KEY, Method::DELETE, "/v1/users/dana/sessions", None)
        .await;
    assert_eq!(status, 202);
    assert_ended(&mut first).await;
    assert_ended(&mut second).await;
    assert_still_talking(&mut other, "still here").await;
    eventually("dana's slots to be free", || async {
        session_count(&node, "dana").await == 0
    })
    .await;
}
