//! The room API on a standalone node: API key, create, list, get, mint tokens, close.

use chatfleet_api::history::HistoryView;
use chatfleet_api::rooms::{CreatedRoom, RoomList, RoomView, TokenView};
use chatfleet_wire::frames::{Role, ServerFrame, close};
use serde_json::{Value, json};

use crate::support::{API_KEY, Client, Node, in_process};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn call(
    node: &Node,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    node.call(API_KEY, method, path, body).await
}

#[tokio::test]
async fn the_api_needs_its_key() {
    let node = in_process(&[]).await;
    for key in [None, Some("wrong")] {
        let mut request = client().get(node.http("/v1/rooms"));
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
}

#[tokio::test]
async fn open_a_room_invite_people_and_close_it() {
    let node = in_process(&[]).await;
    let (status, body) = call(
        &node,
        reqwest::Method::POST,
        "/v1/rooms",
        Some(json!({"namespace": "support", "name": "case-9", "max_members": 5})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let created: CreatedRoom = serde_json::from_value(body).unwrap();
    assert!(created.created);
    assert_eq!(created.room.max_members, 5);
    assert_eq!(
        created.room.endpoint,
        format!("ws://{}/v1/rooms/support/case-9/ws", node.addr)
    );

    // Creating it again is idempotent.
    let (status, body) = call(
        &node,
        reqwest::Method::POST,
        "/v1/rooms",
        Some(json!({"namespace": "support", "name": "case-9"})),
    )
    .await;
    assert_eq!(status, 200);
    assert!(!serde_json::from_value::<CreatedRoom>(body).unwrap().created);

    // A generated name.
    let (status, body) = call(&node, reqwest::Method::POST, "/v1/rooms", Some(json!({}))).await;
    assert_eq!(status, 201);
    let generated: CreatedRoom = serde_json::from_value(body).unwrap();
    assert_eq!(generated.room.namespace, "default");
    assert!(generated.room.name.starts_with("room-"));

    let (status, body) = call(
        &node,
        reqwest::Method::POST,
        "/v1/rooms/support/case-9/tokens",
        Some(json!({"user": "cust-1", "name": "Dana", "role": "customer"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let customer: TokenView = serde_json::from_value(body).unwrap();
    assert!(
        customer
            .chat_url
            .starts_with(&format!("http://{}/?room=support/case-9&token=", node.addr))
    );
    let (_, body) = call(
        &node,
        reqwest::Method::POST,
        "/v1/rooms/support/case-9/tokens",
        Some(json!({"user": "agent-1", "role": "agent"})),
    )
    .await;
    let agent: TokenView = serde_json::from_value(body).unwrap();

    let (mut dana, welcome) = Client::join(&customer.ws_url).await;
    assert_eq!(
        (welcome.user.name.as_str(), welcome.user.role),
        ("Dana", Role::Customer)
    );
    let (mut agent_ws, _) = Client::join(&agent.ws_url).await;
    dana.say("help!").await;
    assert_eq!(agent_ws.message().await.content.body, "help!");
    assert_eq!(dana.message().await.content.body, "help!");

    let (status, body) = call(
        &node,
        reqwest::Method::GET,
        "/v1/rooms/support/case-9",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let view: RoomView = serde_json::from_value(body).unwrap();
    assert_eq!(view.members, 2);
    let (_, body) = call(&node, reqwest::Method::GET, "/v1/rooms", None).await;
    let list: RoomList = serde_json::from_value(body).unwrap();
    let names: Vec<String> = list.rooms.iter().map(|r| r.id.to_string()).collect();
    assert!(
        names.contains(&"support/case-9".to_owned()) && names.len() == 2,
        "{names:?}"
    );

    let (status, _) = call(
        &node,
        reqwest::Method::DELETE,
        "/v1/rooms/support/case-9",
        None,
    )
    .await;
    assert_eq!(status, 204);
    for member in [&mut dana, &mut agent_ws] {
        match member.recv_skip_presence().await {
            ServerFrame::Closed { room, .. } => assert_eq!(room.to_string(), "support/case-9"),
            other => panic!("expected closed, got {other:?}"),
        }
        assert_eq!(
            u16::from(member.closed().await.unwrap().code),
            close::NORMAL
        );
    }
    // Gone from the API, and a stale token cannot reopen it.
    let (status, body) = call(
        &node,
        reqwest::Method::GET,
        "/v1/rooms/support/case-9",
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let mut stale = Client::connect(&customer.ws_url).await;
    crate::support::assert_error(
        &stale.recv().await,
        chatfleet_wire::frames::ErrorCode::RoomClosed,
    );
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let node = in_process(&["--max-room-members", "10"]).await;
    let cases = [
        (
            reqwest::Method::POST,
            "/v1/rooms",
            json!({"name": "Bad_Name"}),
            422,
            "invalid_request",
        ),
        (
            reqwest::Method::POST,
            "/v1/rooms",
            json!({"max_members": 11}),
            422,
            "invalid_request",
        ),
        (
            reqwest::Method::POST,
            "/v1/rooms",
            json!({"surprise": true}),
            422,
            "bad_request",
        ),
        (
            reqwest::Method::POST,
            "/v1/rooms/default/nowhere/tokens",
            json!({"user": "u"}),
            404,
            "not_found",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (got, body) = call(&node, method, path, Some(body)).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
    }
    let response = client()
        .post(node.http("/v1/rooms"))
        .header("x-api-key", API_KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
}

/// A support tool opens a session in one call: a room and a token for each participant; a
/// retry with the same Idempotency-Key finds the same room.
#[tokio::test]
async fn one_call_opens_a_room_with_tokens_and_retries_find_it() {
    let node = in_process(&[]).await;
    let open = || async {
        let response = client()
            .post(node.http("/v1/rooms"))
            .header("x-api-key", API_KEY)
            .header("idempotency-key", "ticket-4711")
            .json(&json!({"namespace": "support", "participants": [
                {"user": "cust-1", "name": "Dana", "role": "customer"},
                {"user": "agent-7", "role": "agent"}]}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<CreatedRoom>().await.unwrap())
    };
    let (status, first) = open().await;
    assert_eq!(status, 201);
    assert_eq!(first.tokens.len(), 2);
    assert_eq!(first.tokens[1].user, "agent-7");

    let (status, again) = open().await;
    assert_eq!(status, 200);
    assert!(!again.created);
    assert_eq!(
        again.room.id, first.room.id,
        "the same key names the same room"
    );

    // The tokens work: the customer joins the room.
    let (_dana, welcome) = crate::support::Client::join(&first.tokens[0].ws_url).await;
    assert_eq!(welcome.room, first.room.id);
}

/// Messages sent on one node, read back as history pages from another node sharing the Redis.
#[tokio::test]
async fn history_pages_through_a_rooms_messages_from_any_node() {
    let redis = crate::support::Redis::start().await;
    let first = Node::in_fleet(&redis, "chat-0", &[]).await;
    let second = Node::in_fleet(&redis, "chat-1", &[]).await;
    let (status, _) = call(
        &first,
        reqwest::Method::POST,
        "/v1/rooms",
        Some(json!({"namespace": "support", "name": "case-h"})),
    )
    .await;
    assert_eq!(status, 201);
    let (mut ann, _) = Client::join(&first.ws_as("support/case-h", "ann", "")).await;
    for i in 1..=5 {
        ann.say(&format!("m{i}")).await;
        assert_eq!(ann.message().await.id, i);
    }

    let page = |since: u64, limit: u64| {
        let path = format!("/v1/rooms/support/case-h/history?since={since}&limit={limit}");
        let node = &second;
        async move { call(node, reqwest::Method::GET, &path, None).await }
    };
    let (status, body) = page(0, 2).await;
    assert_eq!(status, 200, "{body}");
    let view: HistoryView = serde_json::from_value(body).unwrap();
    let bodies: Vec<&str> = view
        .messages
        .iter()
        .map(|m| m.content.body.as_str())
        .collect();
    assert_eq!(bodies, ["m1", "m2"]);
    assert_eq!(
        (view.last_id, view.next_since, view.complete),
        (5, Some(2), true)
    );
    let (_, body) = page(2, 100).await;
    let view: HistoryView = serde_json::from_value(body).unwrap();
    let ids: Vec<u64> = view.messages.iter().map(|m| m.id).collect();
    assert_eq!((ids, view.next_since), (vec![3, 4, 5], None));

    let (status, body) = call(
        &second,
        reqwest::Method::GET,
        "/v1/rooms/support/case-h/history?limit=lots",
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, body) = call(
        &second,
        reqwest::Method::GET,
        "/v1/rooms/support/nowhere/history",
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_get_json_errors() {
    let node = in_process(&[]).await;
    let (status, body) = call(&node, reqwest::Method::GET, "/v1/nothing-here", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("no_route"))
    );
    let (status, body) = call(&node, reqwest::Method::PUT, "/v1/rooms", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
}

#[tokio::test]
async fn rooms_can_be_listed_by_label() {
    let node = in_process(&[]).await;
    for (name, ticket) in [("case-a", "4711"), ("case-b", "4712")] {
        let (status, body) = call(
            &node,
            reqwest::Method::POST,
            "/v1/rooms",
            Some(json!({"namespace": "support", "name": name, "labels": {"ticket": ticket}})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["labels"]["ticket"], ticket);
    }
    let names = |body: Value| -> Vec<String> {
        let list: RoomList = serde_json::from_value(body).unwrap();
        list.rooms.into_iter().map(|r| r.name).collect()
    };
    let (status, body) = call(
        &node,
        reqwest::Method::GET,
        "/v1/rooms?label=ticket=4712",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(names(body), ["case-b"]);
    let (_, body) = call(&node, reqwest::Method::GET, "/v1/rooms", None).await;
    assert_eq!(names(body), ["case-a", "case-b"]);
    // A standalone node belongs to no fleet.
    let (_, body) = call(&node, reqwest::Method::GET, "/v1/rooms?fleet=chat", None).await;
    assert!(names(body).is_empty());

    let (status, body) = call(&node, reqwest::Method::GET, "/v1/rooms?label=ticket", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_request"))
    );
    let (status, body) = call(
        &node,
        reqwest::Method::POST,
        "/v1/rooms",
        Some(json!({"labels": {"": "x"}})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_request"))
    );
}
